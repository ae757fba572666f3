"""What the search calls to train one configuration: the trial-runner protocol and a synthetic runner.

A runner trains ``params`` in ``out_dir`` up to ``fraction`` of the full schedule and leaves a
checkpoint there; called again on the same folder with ``fraction=None`` it continues to the end
(no retraining). The search only ever talks to this protocol, so the tests and the benchmark can
use the fast synthetic runner and the CLI the real fine-tuning one (``finetune_runner.py``).
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import LeantuneError
from ..io import read_json, read_loss_history, write_json

# Statuses a run can end in. 'paused' = stopped at the requested fraction with a resumable checkpoint.
OK_STATUSES = ("paused", "finished", "early_stopped")


@dataclass
class RunResult:
    score: float  # validation score, higher is better (the task's metric, or exp(-valid loss))
    status: str  # 'paused' | 'finished' | 'early_stopped' | 'diverged' | 'error'
    steps: int  # optimizer steps done in this folder so far (cumulative over pause/continue)
    total_steps: int  # steps of the full schedule
    tokens: int = 0  # training tokens seen so far (cumulative)
    history: list[dict] = field(default_factory=list)  # [{epoch, step, train_loss, valid_loss}]
    valid_loss: float | None = None
    test_score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    wall_s: float = 0.0


class TrialRunner(Protocol):
    """Trains one configuration. A runner may also define ``preflight()``: ``EarlySearch`` calls it
    once, before the study is opened, to refuse settings that would fail every trial."""

    metric: str  # the name of ``score`` (for progress lines and the report)

    def run(self, params: dict[str, Any], out_dir: Path, fraction: float | None, test: bool = False) -> RunResult:
        """Train to ``fraction`` of the schedule (None: to the end, continuing a checkpoint in ``out_dir``)."""
        ...


def _finite(x) -> bool:
    return x is None or (isinstance(x, (int, float)) and math.isfinite(x))


def failure_reason(result: RunResult, final: bool = True) -> str | None:
    """Why a run counts as failed (NaN/inf loss, divergence, an error, and at the end of its schedule
    a score of 0 or no parseable answer), or None. At an early point (``final`` False) a score of 0
    is only a low score: a short schedule may still be learning the answer format."""
    if result.status == "error":
        return result.reason or "error"
    if result.status == "diverged":
        return f"diverged: {result.reason}" if result.reason else "diverged"
    for row in result.history:
        for key in ("train_loss", "valid_loss"):
            if not _finite(row.get(key)):
                return f"{key} {row.get(key)} at step {row.get('step')}"
    if not _finite(result.valid_loss):
        return f"valid_loss {result.valid_loss}"
    if not _finite(result.score):
        return f"score {result.score}"
    if not final and result.status not in ("finished", "early_stopped"):
        return None
    if result.metrics.get("invalid_rate") == 1.0:
        return "no parseable answer (invalid_rate 1.0)"
    if result.score <= 0:
        return "score 0 (no usable output)"
    return None


def safe_run(runner: TrialRunner, params: dict, out_dir: Path, fraction: float | None, test: bool = False) -> RunResult:
    """Run, turning any crash of the training code into a failed result so the study goes on.

    User errors (bad settings) still stop the study: every other trial would hit them too.
    """
    start = time.perf_counter()
    try:
        return runner.run(params, out_dir, fraction, test=test)
    except LeantuneError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken trial must not crash the study
        import traceback

        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "error.txt").write_text(traceback.format_exc())
        return RunResult(score=0.0, status="error", steps=0, total_steps=0, reason=f"{type(exc).__name__}: {exc}"[:300],
                         wall_s=time.perf_counter() - start)


@dataclass
class SyntheticRunner:
    """A simulated LoRA fine-tune: instant, deterministic, with the failure modes of the real thing.

    The score curve is ``A * (1 - exp(-k * progress))`` with ``progress`` the area under the LR
    schedule, so a small learning rate learns slowly but may end higher, and too many epochs
    over-fit: early ranks predict final ranks well but not perfectly. ``lr * alpha`` above a
    threshold diverges (NaN loss, earlier the further above), a band below it produces a model that
    scores 0. Checkpoints are a JSON state file, so pausing/continuing is checked like the real runner.
    """

    train_size: int = 256
    seed: int = 0
    noise: float = 0.01  # std of the evaluation noise, in score units
    step_seconds: float = 0.0  # sleep per simulated step (to exercise concurrency and heartbeats)
    tokens_per_example: int = 100
    instability: float = 0.1  # lr * alpha above this diverges; 0.6x..1x of it scores 0
    metric: str = "synthetic_score"
    collect_garbage: bool = False

    def total_steps(self, params: dict) -> int:
        if params.get("max_steps"):
            return int(params["max_steps"])
        per_epoch = math.ceil(self.train_size / int(params.get("batch_size", 8)))
        return per_epoch * int(params.get("epochs", 1))

    def _lr_area(self, params: dict, step: int, total: int) -> float:
        """Sum of the LR multiplier (linear warm-up, then linear decay) over the first ``step`` steps."""
        warm = int(total * float(params.get("warmup_ratio", 0.0)))
        area = 0.0
        for i in range(step):
            area += (i + 1) / max(1, warm) if i < warm else max(0.0, (total - i) / max(1, total - warm))
        return area

    def _score(self, params: dict, step: int, total: int) -> float:
        lr, alpha, r = float(params["lr"]), float(params.get("alpha", 16)), float(params.get("r", 8))
        dropout = float(params.get("dropout", 0.0))
        steps_per_epoch = self.total_steps({**params, "epochs": 1, "max_steps": None})
        # Asymptote: rank helps a little, dropout helps a little, the LoRA scale alpha/r too far off hurts.
        asymptote = 0.55 + 0.04 * math.log2(r / 4) + 0.1 * dropout - 0.03 * abs(math.log2(alpha / r / 2))
        rate = lr * math.sqrt(alpha / 16) * 150
        quality = asymptote * (1 - math.exp(-rate * self._lr_area(params, step, total)))
        overfit = 0.04 * (1 - 3 * dropout) * max(0.0, step / steps_per_epoch - 2)
        return max(0.0, quality - overfit)

    def _noise(self, params: dict, step: int) -> float:
        key = json.dumps([sorted(params.items()), self.seed, step], default=str)
        rng = random.Random(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16))
        return rng.gauss(0.0, self.noise)

    def run(self, params: dict[str, Any], out_dir: Path, fraction: float | None, test: bool = False) -> RunResult:
        start = time.perf_counter()
        out_dir = Path(out_dir)
        state_path = out_dir / "synthetic_state.json"
        total = self.total_steps(params)
        state = read_json(state_path) if state_path.exists() else {"params": params, "steps": 0, "segments": [], "history": []}
        state["history"] = read_loss_history(state["history"], str(state_path))
        if state["params"] != params:
            raise LeantuneError(f"{state_path}: checkpoint was trained with other hyperparameters")
        target = total if fraction is None else max(1, min(total, math.ceil(fraction * total)))
        done = state["steps"]
        steps_per_epoch = self.total_steps({**params, "epochs": 1, "max_steps": None})
        u = float(params["lr"]) * float(params.get("alpha", 16)) / (1 + 2 * float(params.get("warmup_ratio", 0.0)))
        diverge_at = math.ceil(total * (self.instability / u) ** 2) if u > self.instability else None
        status, reason = ("paused" if target < total else "finished"), ""
        if target > done:
            for step in range(done + 1, target + 1):
                if self.step_seconds:
                    time.sleep(self.step_seconds)
                if diverge_at is not None and step >= diverge_at:
                    state["history"].append({"epoch": step / steps_per_epoch, "step": step, "train_loss": float("nan"), "valid_loss": float("nan")})
                    target, status, reason = step, "diverged", f"loss nan at step {step}"
                    break
                if step % steps_per_epoch == 0 or step == target:
                    quality = self._score(params, step, total)
                    state["history"].append({"epoch": step / steps_per_epoch, "step": step,
                                             "train_loss": 2.5 - 2.2 * quality, "valid_loss": 2.5 - 2.0 * quality})
            state["segments"].append([done, target])
            state["steps"] = target
            write_json(state_path, state)
        score = self._score(params, target, total) + self._noise(params, target)
        if self.instability * 0.6 < u <= self.instability:
            score = 0.0  # trains without NaN, but the outputs are unusable
        # A run that trains at all keeps a small positive score (like a base model answering a few right).
        score = 0.0 if status == "diverged" or score == 0.0 else min(1.0, max(1e-3, score))
        test_score = None
        if test:
            test_score = 0.0 if score == 0 else min(1.0, max(1e-3, self._score(params, target, total) + self._noise(params, -target)))
        history = state["history"]
        return RunResult(
            score=score, status=status, steps=target, total_steps=total,
            tokens=target * int(params.get("batch_size", 8)) * self.tokens_per_example, history=list(history),
            valid_loss=history[-1]["valid_loss"] if history else None, test_score=test_score, reason=reason,
            wall_s=time.perf_counter() - start,
        )
