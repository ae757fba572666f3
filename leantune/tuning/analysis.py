"""Read a finished (or running) search back from its Optuna storage, and measure how well it ranked.

Everything comes from the two studies' trials and user attrs, so the report can be written from
any machine that reaches the storage, while workers are still running or long after.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import ParameterError
from .runner import OK_STATUSES
from .study import FINAL_SUFFIX, make_storage


@dataclass
class TrialRecord:
    number: int
    params: dict
    baseline: bool
    status: str  # 'ok' | 'failed' (phase 1)
    fail_reason: str | None
    early_score: float
    early_status: str  # the runner's status at the early point ('paused' when it can be continued)
    early_steps: int
    total_steps: int
    early_tokens: int
    history: list[dict]  # the longest history available (the continued run's if there is one)
    retry_of: int | None = None
    role: str | None = None  # phase 2: 'top_k' | 'all' | 'baseline' | None (not continued)
    final_status: str | None = None
    final_reason: str | None = None
    final_score: float | None = None
    test_score: float | None = None
    final_steps: int | None = None
    final_tokens: int | None = None
    checkpoint: str | None = None  # the run folder, relative to the study's work dir
    early_wall_s: float = 0.0  # seconds the phase-1 run took when it was measured
    final_wall_s: float = 0.0  # seconds its continuation took (0: not continued)

    @property
    def failed(self) -> bool:
        return self.status == "failed" or self.final_status == "failed"

    @property
    def reason(self) -> str | None:
        return self.fail_reason or self.final_reason


@dataclass
class SearchRecords:
    study: str
    metric: str
    settings: dict
    trials: list[TrialRecord]
    lost: list[int] = field(default_factory=list)  # trials failed by a dead worker (retried elsewhere)
    running: int = 0

    def by_number(self, number: int) -> TrialRecord:
        return next(t for t in self.trials if t.number == number)

    @property
    def baseline(self) -> TrialRecord | None:
        return next((t for t in self.trials if t.baseline), None)

    @property
    def continued(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.final_status is not None]

    def best(self) -> TrialRecord | None:
        """The trial chosen by the search: the best *validation* score at the end (test stays held out)."""
        done = [t for t in self.continued if t.final_status == "ok"]
        return max(done, key=lambda t: (t.final_score, -t.number)) if done else None

    def compute(self) -> dict[str, int]:
        phase1 = sum(t.early_steps for t in self.trials)
        phase2 = sum(max(0, t.final_steps - t.early_steps) for t in self.continued if t.final_steps is not None)
        return {
            "phase1_steps": phase1,
            "phase2_steps": phase2,
            "total_steps": phase1 + phase2,
            "full_fidelity_steps": sum(t.total_steps for t in self.trials),  # every trial trained to the end
            "phase1_tokens": sum(t.early_tokens for t in self.trials),
            "phase2_tokens": sum(max(0, (t.final_tokens or 0) - t.early_tokens) for t in self.continued),
        }


def rank_agreement(early: Sequence[float], final: Sequence[float], k: int) -> dict:
    """Spearman and Kendall correlation of two score lists, and the overlap of their top-k (higher is better)."""
    from scipy.stats import kendalltau, spearmanr

    n = len(early)
    out = {"n": n, "k": min(k, n), "spearman": None, "kendall": None, "topk_overlap": None}
    if n == 0:
        return out
    order_early = sorted(range(n), key=lambda i: (-early[i], i))[:k]
    order_final = sorted(range(n), key=lambda i: (-final[i], i))[:k]
    out["topk_overlap"] = len(set(order_early) & set(order_final))
    if n >= 3 and len(set(early)) > 1 and len(set(final)) > 1:
        out["spearman"] = float(spearmanr(early, final).statistic)
        out["kendall"] = float(kendalltau(early, final).statistic)
    return out


def agreement_interval(early: Sequence[float], final: Sequence[float], k: int, n_boot: int = 2000, seed: int = 0,
                       level: float = 0.95) -> dict:
    """``rank_agreement`` with percentile bootstrap intervals over trials (trials resampled with
    replacement; resamples with fewer than 3 distinct trials or tied scores are skipped)."""
    import numpy as np

    out = rank_agreement(early, final, k)
    n = len(early)
    if out["spearman"] is None or n_boot < 1:
        return {**out, "spearman_ci": None, "kendall_ci": None, "topk_overlap_ci": None}
    rng = np.random.default_rng(seed)
    early, final = np.asarray(early, dtype=float), np.asarray(final, dtype=float)
    draws = {"spearman": [], "kendall": [], "topk_overlap": []}
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        if len(set(idx.tolist())) < 3:
            continue
        r = rank_agreement(early[idx].tolist(), final[idx].tolist(), k)
        for key in draws:
            if r[key] is not None and not (isinstance(r[key], float) and math.isnan(r[key])):
                draws[key].append(r[key])
    tail = (1 - level) / 2 * 100
    for key, values in draws.items():
        out[f"{key}_ci"] = [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))] if values else None
    out["n_boot"] = n_boot
    return out


def early_epochs(epochs: float, early_steps: float, total_steps: float) -> float | None:
    """Epochs trained at an early point: ``epochs`` x ``early_steps`` / ``total_steps`` of a schedule of
    ``epochs`` epochs in ``total_steps`` steps; None without a schedule (``total_steps`` 0)."""
    return epochs * early_steps / total_steps if total_steps else None


def early_epoch_span(points: Sequence[tuple[float, float, float]]) -> tuple[float, float] | None:
    """Where early points lie in epochs, from ``(epochs, early_steps, total_steps)`` per trial or recipe: the
    lowest and highest, or None when fewer than two or all the same to one decimal. A fraction of each one's
    own schedule is then not equal compute: a longer schedule is scored after more epochs."""
    done = [d for d in (early_epochs(*point) for point in points) if d is not None]
    if len(done) < 2 or round(min(done), 1) == round(max(done), 1):
        return None
    return min(done), max(done)


def score_at_fraction(trial: "TrialRecord", fraction: float) -> float | None:
    """exp(-validation loss) at the last validation at or before ``fraction`` of the trial's schedule
    (from its training history); None when there was none."""
    total = trial.final_steps or trial.total_steps
    rows = [r for r in trial.history if r.get("step") is not None and r["step"] <= fraction * total
            and isinstance(r.get("valid_loss"), (int, float)) and math.isfinite(r["valid_loss"])]
    return math.exp(-rows[-1]["valid_loss"]) if rows else None


FRACTIONS = (0.1, 0.2, 0.3, 0.5)


def ranking_by_fraction(records: "SearchRecords", k: int, fractions: Sequence[float] = FRACTIONS, n_boot: int = 2000) -> list[dict]:
    """When does the ranking settle? For each fraction of the schedule, the rank agreement (with
    bootstrap intervals) between the validation loss there and the final score, over the trials
    continued to the end. Meaningful with ``--validate-all`` and validations inside the schedule
    (``eval_every``); the early point the search itself uses is ``early_vs_final``."""
    done = [t for t in records.continued if t.final_score is not None and t.final_status != "failed"]
    out = []
    for f in fractions:
        pairs = [(s, t.final_score) for t in done if (s := score_at_fraction(t, f)) is not None]
        row = agreement_interval([p[0] for p in pairs], [p[1] for p in pairs], k, n_boot=n_boot)
        out.append({"fraction": f, **row})
    return out


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def load_records(study_name: str, storage_url: str) -> SearchRecords:
    import optuna
    from optuna.trial import TrialState

    if storage_url.startswith("sqlite:///"):
        path = Path(storage_url[len("sqlite:///"):])
        if not path.exists():
            raise ParameterError("storage", storage_url, f"no such SQLite file {path}")
    storage = make_storage(storage_url, heartbeat_interval=None)
    names = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if study_name not in names:
        known = ", ".join(sorted(n for n in names if not n.endswith(FINAL_SUFFIX))) or "none"
        raise ParameterError("study", repr(study_name), f"not in {storage_url} (studies there: {known})")
    study = optuna.load_study(study_name=study_name, storage=storage)
    settings = study.user_attrs.get("leantune", {})
    records, lost, running = [], [], 0
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING:
            running += 1
        if t.state == TrialState.FAIL and t.user_attrs.get("status") != "surplus":
            lost.append(t.number)
        if t.state != TrialState.COMPLETE:
            continue
        a, early = t.user_attrs, t.user_attrs.get("early", {})
        records.append(TrialRecord(
            number=t.number, params=dict(t.params), baseline=bool(a.get("baseline")), status=a.get("status", "ok"),
            fail_reason=a.get("fail_reason"), early_score=float(t.value), early_status=early.get("status", ""),
            early_steps=int(early.get("steps", 0)), total_steps=int(early.get("total_steps", 0)),
            early_tokens=int(early.get("tokens", 0)), history=list(early.get("history", [])), retry_of=a.get("retry_of"),
            checkpoint=a.get("checkpoint"), early_wall_s=float(early.get("wall_s") or 0.0),
        ))
    if study_name + FINAL_SUFFIX in names:
        final = optuna.load_study(study_name=study_name + FINAL_SUFFIX, storage=storage)
        by_number = {r.number: r for r in records}
        for t in final.get_trials(deepcopy=False):
            if t.state == TrialState.RUNNING:
                running += 1
            rec = by_number.get(t.user_attrs.get("source_trial"))
            if t.state != TrialState.COMPLETE or rec is None:
                continue
            a, fin = t.user_attrs, t.user_attrs.get("final", {})
            rec.role, rec.final_status, rec.final_reason = a.get("role"), a.get("status"), a.get("fail_reason")
            rec.final_score, rec.test_score = float(t.value), _num(fin.get("test_score"))
            rec.final_steps, rec.final_tokens = int(fin.get("steps", 0)), int(fin.get("tokens", 0))
            rec.total_steps = int(fin.get("total_steps") or rec.total_steps)
            rec.final_wall_s = float(fin.get("wall_s") or 0.0)
            if fin.get("history"):
                rec.history = list(fin["history"])
    return SearchRecords(study=study_name, metric=settings.get("metric", "score"), settings=settings,
                         trials=sorted(records, key=lambda r: r.number), lost=lost, running=running)


def early_vs_final(records: SearchRecords, k: int) -> dict:
    """Rank agreement over the trials that have both an early and a final validation score."""
    pairs = [(t.early_score, t.final_score) for t in records.continued if t.final_score is not None]
    out = agreement_interval([p[0] for p in pairs], [p[1] for p in pairs], k)
    # Only when every resumable trial was continued do these figures say how early ranks predict final ones.
    out["all_continued"] = bool(pairs) and all(t.final_status is not None for t in records.trials if t.early_status in OK_STATUSES)
    return out
