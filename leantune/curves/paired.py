"""Paired steps along a learning curve: each size against the next smaller one and against the
zero-shot model, over the same test units with seeds averaged (``leantune.evaluation.compare``).

A curve's sizes are evaluated on one seeded test subset, so every step is a paired comparison: the
interval says whether adding data changed the metric at all, which the per-size means ± seed spread
cannot. Runs evaluated before per-unit results were written are left out (and counted).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..evaluation.units import PER_UNIT_FILE
from ..io import atomic_path, write_json


@dataclass
class Step:
    """One size of the curve, compared with a smaller size (or zero-shot)."""

    size: int
    seeds: int
    value: float  # seed-averaged metric over the shared test units
    against: int  # the size it is compared with (0 = zero-shot)
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    mde: float  # paired minimum detectable difference at 80% power
    seed_se: float | None


@dataclass
class PairedSteps:
    metric: str
    n_units: int
    n_clusters: int
    previous: list[Step]  # each size against the next smaller one
    zero_shot: list[Step]  # each size against zero-shot (empty without a zero-shot run)
    left_out: list[str] = field(default_factory=list)  # runs without per-unit results

    def to_dict(self) -> dict:
        return {"metric": self.metric, "n_units": self.n_units, "n_clusters": self.n_clusters,
                "previous": [asdict(s) for s in self.previous], "zero_shot": [asdict(s) for s in self.zero_shot],
                "left_out": list(self.left_out)}

    def to_markdown(self) -> str:
        m = self.metric
        zero = {s.size: s for s in self.zero_shot}
        lines = [f"| size | seeds | {m} | Δ vs previous size | 95% CI | p | seed SE | MDE | Δ vs zero-shot | 95% CI |",
                 "| ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
        for s in self.previous:
            z = zero.get(s.size)
            against = "zero-shot" if s.against == 0 else f"n={s.against}"
            lines.append(
                f"| {s.size} | {s.seeds} | {s.value:.4f} | {s.diff:+.4f} (vs {against}) | [{s.ci_low:+.4f}, {s.ci_high:+.4f}] | "
                f"{_p(s.p_value)} | {'–' if s.seed_se is None else f'{s.seed_se:.4f}'} | {s.mde:.4f} | " + (f"{z.diff:+.4f} | [{z.ci_low:+.4f}, {z.ci_high:+.4f}]" if z else " | ") + " |")
        unit = "test units" if self.n_units == self.n_clusters else f"test units in {self.n_clusters} resampled groups"
        lines += ["", f"Paired over the same {self.n_units} {unit}, seeds averaged inside each of the bootstrap resamples; "
                      "p: paired permutation test; seed SE: standard error of the step from the spread over training seeds "
                      "(not inside the interval); MDE: the smallest step these units could detect at 80% power."]
        if self.left_out:
            lines.append(f"Left out (no {PER_UNIT_FILE}, evaluated before per-unit results): {', '.join(self.left_out)}.")
        return "\n".join(lines) + "\n"

    def write(self, out: Path) -> dict[str, Path]:
        out = Path(out)
        write_json(out / "steps.json", self.to_dict())
        with atomic_path(out / "steps.md") as tmp:
            Path(tmp).write_text(f"# Paired steps along the curve ({self.metric})\n\n" + self.to_markdown())
        return {"steps_md": out / "steps.md", "steps_json": out / "steps.json"}


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _name(size: int) -> str:
    return "zero-shot" if size == 0 else f"n={size}"


def _run_evaluations(out, rows: list[dict]):
    """(row, its per-unit results as an ``Evaluation`` or None, run folder name) for every evaluated run of the curve in ``out``."""
    from ..evaluation.compare import load_evaluation
    from .runner import run_dir

    for r in rows:
        if not r.get("metrics"):
            continue
        folder = run_dir(Path(out), r["size"], r["seed"])
        ev = None
        if (folder / PER_UNIT_FILE).is_file():
            ev = load_evaluation(folder, name=_name(r["size"]))
            ev.seed = int(r["seed"] or 0)
        yield r, ev, folder.name


def paired_steps(out, rows: list[dict], metric: str, n_boot: int = 10000, seed: int = 0) -> PairedSteps | None:
    """Each evaluated size of the curve in ``out`` against the next smaller one and against zero-shot.

    ``rows`` are the curve's run results (``run_curve(...).rows``); ``metric`` is any metric
    ``leantune.evaluation.compare`` reads from per-unit rows (attribute ``accuracy`` and micro
    ``f1``, recommendation ``recall@20`` ...). ``None`` when fewer than two sizes have per-unit results.
    """
    from ..evaluation.compare import compare

    by_size: dict[int, list] = {}
    left_out = []
    for r, ev, folder in _run_evaluations(out, rows):
        if ev is None:
            left_out.append(folder)
        else:
            by_size.setdefault(int(r["size"]), []).append(ev)
    sizes = sorted(by_size)
    if len(sizes) < 2:
        return None

    def step(size: int, against: int):
        c = compare(by_size[against] + by_size[size], baseline=_name(against), metric=metric, n_boot=n_boot,
                    n_perm=n_boot, seed=seed)
        r = c.row(_name(size))
        se = r.seed_se_diff
        return c, Step(size, r.n_seeds, r.value, against, r.diff, r.ci_low, r.ci_high, r.p_value, r.mde_paired,
                       None if se is None or not math.isfinite(se) else se)

    previous, zero_shot, n_units, n_clusters = [], [], 0, 0
    for prev, size in zip(sizes, sizes[1:]):
        c, s = step(size, prev)
        n_units, n_clusters = c.n_units, c.n_clusters
        previous.append(s)
        if 0 in by_size:
            zero_shot.append(s if prev == 0 else step(size, 0)[1])
    return PairedSteps(metric, n_units, n_clusters, previous, zero_shot, left_out)


def unit_draws(out, rows: list[dict], metric: str, n_boot: int = 1000, seed: int = 0) -> tuple[np.ndarray | None, str]:
    """(draws, why not): the ``metric`` of every trained run of the curve in ``out`` (rows with size > 0
    and the metric, in ``rows``' order) in ``n_boot`` bootstrap resamples of the shared test units
    (shape (n_boot, runs)), for a saturation interval that covers the test set's sampling; ``None`` and
    the reason when some run has no per-unit results or they cannot give the metric."""
    from ..errors import LeantuneError
    from ..evaluation.compare import resampled_metric

    trained = [r for r in rows if r["size"] > 0 and metric in (r.get("metrics") or {})]
    if not trained:
        return None, "no trained runs"
    evaluations, missing = [], []
    for _, ev, folder in _run_evaluations(out, trained):
        if ev is None:
            missing.append(folder)
        else:
            evaluations.append(ev)
    if missing:
        return None, f"no {PER_UNIT_FILE} in {', '.join(missing)}"
    try:
        _, draws = resampled_metric(evaluations, metric, n_boot=n_boot, seed=seed)
    except LeantuneError as exc:
        return None, str(exc)
    return draws, ""
