"""Per-attribute learning curves with intervals (Oliver & Wang's Figure 1, with the test set's noise drawn).

A curve's runs are all evaluated on the same test questions, so each attribute's curve comes from the
runs' per-question rows cut to that attribute: at every size the metric over the attribute's questions,
seeds averaged, with a percentile bootstrap interval over the test products (every resample draws the
same products for every run, so the sizes stay paired), and the last step (the largest size against the
next smaller one) with its paired interval: whether that attribute still gains from more data. With a
hundred test products an attribute holds a few dozen questions, so most intervals are wide; the table
says so rather than drawing bare lines.

Reading "these attributes still gain" off a dozen intervals is a selection: the steps whose interval
excludes zero are redrawn at the false-coverage-rate adjusted level 1 − α·R/m (Benjamini & Yekutieli
2005; R steps flagged of m), as ``compare --by attribute`` does, and only those that stay clear of zero
count as gaining. The adjusted bounds sit far in the bootstrap's tails (α·R/m/2 of the resamples), so
they are drawn from enough resamples to leave ``TAIL_DRAWS`` beyond each bound.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..io import atomic_path, write_json

BREAKDOWN_FILE = "per_attribute"  # .md and .json in the curve folder, beside per_attribute.png
TAIL_DRAWS = 50  # resamples beyond each bound of a selection-adjusted interval (sets how many are drawn)


@dataclass
class GroupPoint:
    size: int  # 0: zero-shot
    seeds: int
    value: float  # seeds averaged
    ci_low: float
    ci_high: float


@dataclass
class GroupStep:
    size: int
    against: int
    diff: float
    ci_low: float
    ci_high: float
    adj_low: float | None = None  # at the selection-adjusted level (``BreakdownCurves.adj_alpha``), for flagged steps only
    adj_high: float | None = None

    def flagged(self) -> bool:
        """The (unadjusted) interval excludes zero, either way."""
        return self.ci_low > 0 or self.ci_high < 0

    def clear(self) -> bool:
        """Still excludes zero at the selection-adjusted level."""
        return self.adj_low is not None and (self.adj_low > 0 or self.adj_high < 0)


@dataclass
class GroupCurve:
    group: str
    units: int  # test questions of the group
    valued: int | None  # of them, those with a gold value (None: the rows do not say)
    points: list[GroupPoint]
    last_step: GroupStep | None  # the largest size against the next smaller one (None with one size)


@dataclass
class BreakdownCurves:
    by: str
    metric: str
    n_boot: int
    alpha: float
    groups: list[GroupCurve]  # most test questions first
    n_groups: int  # groups in the test questions (``groups`` holds the ``top`` of them)
    left_out: list[str] = field(default_factory=list)  # runs without per-unit results
    adj_alpha: float | None = None  # α·R/m: the level of the flagged last steps' adjusted intervals (None: no step)
    adj_boot: int | None = None  # the resamples those are drawn from (enough for TAIL_DRAWS in each tail)

    def to_dict(self) -> dict:
        """JSON-ready dictionary (``from_dict`` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BreakdownCurves:
        """The inverse of ``to_dict``."""
        groups = [GroupCurve(g["group"], g["units"], g["valued"], [GroupPoint(**p) for p in g["points"]],
                             None if g["last_step"] is None else GroupStep(**g["last_step"])) for g in data["groups"]]
        return cls(data["by"], data["metric"], data["n_boot"], data["alpha"], groups, data["n_groups"], list(data["left_out"]),
                   data.get("adj_alpha"), data.get("adj_boot"))

    def gaining(self, adjusted: bool = True) -> list[str]:
        """The groups whose last step's interval lies above zero (still gaining from more data): at the
        selection-adjusted level ``adj_alpha`` unless not ``adjusted`` (or the curves predate it)."""
        adjusted = adjusted and self.adj_alpha is not None
        return [g.group for g in self.groups if g.last_step
                and (g.last_step.clear() and g.last_step.adj_low > 0 if adjusted else g.last_step.ci_low > 0)]

    def flagged(self) -> list[str]:
        """The groups whose last step's unadjusted interval excludes zero (the selection)."""
        return [g.group for g in self.groups if g.last_step and g.last_step.flagged()]

    def _adjusted_level(self) -> str:
        return f"{100 * (1 - self.adj_alpha):.2f}%"

    def summary(self) -> str:
        """One line for the curve's printed summary: how many groups' last step clears zero."""
        step = next((g.last_step for g in self.groups if g.last_step), None)
        if step is None:
            return f"per {self.by}: one size only, no step ({BREAKDOWN_FILE}.md)"
        raw, gaining = self.gaining(adjusted=False), self.gaining()
        line = (f"per {self.by}: the last step ({step.against:,} → {step.size:,}) has an interval above zero for "
                f"{len(raw)} of the {len(self.groups)} {self.by}s with the most test questions"
                + (f" ({', '.join(raw)})" if raw else ""))
        if raw:
            line += (f", {len(gaining)} of them at the selection-adjusted level {self._adjusted_level()}"
                     + (f" ({', '.join(gaining)})" if gaining else ""))
        return line + f"; each size with its interval in {BREAKDOWN_FILE}.md"

    def to_markdown(self) -> str:
        """A row per group: each size's value with its interval, and the last step with its paired interval."""
        level = round(100 * (1 - self.alpha))
        sizes = sorted({p.size for g in self.groups for p in g.points})
        step = next((g.last_step for g in self.groups if g.last_step), None)
        head = [self.by, "test questions (with a value)", *("zero-shot" if s == 0 else f"{s:,}" for s in sizes)]
        adjusted = step is not None and self.adj_alpha is not None and bool(self.flagged())
        if step:
            head.append(f"last step {step.against:,} → {step.size:,} [{level}% CI]")
        if adjusted:
            head.append(f"flagged step at {self._adjusted_level()}")
        lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---|" * (len(head) - 2)]
        for g in self.groups:
            at = {p.size: p for p in g.points}
            cells = [g.group, f"{g.units}" + ("" if g.valued is None else f" ({g.valued})")]
            cells += [f"{at[s].value:.3f} [{at[s].ci_low:.2f}, {at[s].ci_high:.2f}]" if s in at else "–" for s in sizes]
            s = g.last_step
            if step:
                bold = "**" if s is not None and s.clear() else ""
                cells.append("–" if s is None else f"{bold}{s.diff:+.3f}{bold} [{s.ci_low:+.3f}, {s.ci_high:+.3f}]")
            if adjusted:
                cells.append(f"[{s.adj_low:+.3f}, {s.adj_high:+.3f}]" if s is not None and s.adj_low is not None else "–")
            lines.append("| " + " | ".join(cells) + " |")
        shown = f"the {len(self.groups)} {self.by}s with the most test questions, of {self.n_groups}"
        lines += ["", f"{self.metric} per {self.by} ({shown}), seeds averaged, with {level}% percentile intervals over the "
                      f"test products ({self.n_boot} bootstrap resamples drawing the same products for every run, so the "
                      "sizes stay paired). The training seeds' spread is not inside the intervals, and the sizes' intervals "
                      f"are not adjusted for the {len(self.groups)} {self.by}s shown."]
        if step:
            raw, flagged, gaining = self.gaining(adjusted=False), self.flagged(), self.gaining()
            text = (f"Last step {step.against:,} → {step.size:,}: {len(raw)} of {len(self.groups)} {self.by}s gain with "
                    f"an interval above zero" + (f" ({', '.join(raw)})" if raw else ""))
            if flagged and self.adj_alpha is not None:
                text += (f". Picking them out of {len(self.groups)} is a selection, so the {len(flagged)} step(s) whose interval "
                         f"excludes zero are redrawn at the false-coverage-rate adjusted level 1 − α·R/m = {self._adjusted_level()} "
                         f"(Benjamini & Yekutieli 2005; R = {len(flagged)} of m = {len(self.groups)}"
                         + (f"; {self.adj_boot:,} resamples" if self.adj_boot else "") + f"): {len(gaining)} still gain"
                         + (f" ({', '.join(gaining)})" if gaining else "")
                         + ". Bold: a last step clear of zero at that level.")
            else:
                text += (f"; the others' intervals hold zero (or lie below it), which with so few questions an {self.by} "
                         "needs large steps to escape.")
            lines.append(text)
        if self.left_out:
            lines.append(f"Left out (no per-unit results): {', '.join(self.left_out)}.")
        return "\n".join(lines) + "\n"

    def write(self, out) -> dict[str, Path]:
        """``per_attribute.md`` and ``per_attribute.json`` in curve folder ``out``."""
        out = Path(out)
        write_json(out / f"{BREAKDOWN_FILE}.json", self.to_dict())
        with atomic_path(out / f"{BREAKDOWN_FILE}.md") as tmp:
            Path(tmp).write_text(f"# Per-{self.by} learning curves ({self.metric})\n\n" + self.to_markdown())
        return {"breakdown_md": out / f"{BREAKDOWN_FILE}.md", "breakdown_json": out / f"{BREAKDOWN_FILE}.json"}


def breakdown_curves(out, rows: list[dict], metric: str, by: str = "attribute", top: int = 12, n_boot: int = 1000,
                     seed: int = 0, alpha: float = 0.05, tail_draws: int = TAIL_DRAWS) -> tuple[BreakdownCurves | None, str]:
    """(curves, why not): the ``top`` groups' curves (``by="attribute"``: the attributes with the most
    test questions) of the curve in ``out`` from its runs' per-question rows, or None and the reason when
    no run has them, the units have no such group or the runs were not evaluated on the same questions.
    The flagged last steps' selection-adjusted intervals are drawn from enough resamples (at least
    ``n_boot``) to leave ``tail_draws`` beyond each bound."""
    from ..errors import LeantuneError
    from ..evaluation.compare import resampled_metric
    from ..evaluation.compare_groups import unit_group
    from .paired import _run_evaluations

    if top < 1:
        raise LeantuneError(f"top {top}: need at least 1 group")
    if tail_draws < 0:
        raise LeantuneError(f"tail_draws {tail_draws}: need 0 or more")
    runs, left_out = [], []
    for r, ev, folder in _run_evaluations(out, rows):
        if ev is None:
            left_out.append(folder)
        else:
            runs.append((int(r["size"]), ev))
    if not runs:
        return None, "no run has per-unit results"
    members: dict[str, set[str]] = {}
    valued: dict[str, int] | None = {}
    for row in runs[0][1].rows:
        group = unit_group(row["unit"], by)
        if group is None:
            return None, f"unit {row['unit']!r} has no {by}"
        members.setdefault(group, set()).add(row["unit"])
        if valued is not None and "valued" in row:
            valued[group] = valued.get(group, 0) + int(row["valued"])
        else:
            valued = None
    chosen = sorted(members, key=lambda g: (-len(members[g]), g))[:top]
    sizes = sorted({size for size, _ in runs})
    index = {s: [i for i, (size, _) in enumerate(runs) if size == s] for s in sizes}
    q = [alpha / 2, 1 - alpha / 2]
    cuts = {group: [replace(ev, rows=[row for row in ev.rows if row["unit"] in members[group]]) for _, ev in runs]
            for group in chosen}

    def step_draws(draws: np.ndarray) -> np.ndarray:  # the last step in each resample, seeds averaged
        return draws[:, index[sizes[-1]]].mean(axis=1) - draws[:, index[sizes[-2]]].mean(axis=1)

    curves = []
    for group in chosen:
        try:
            observed, draws = resampled_metric(cuts[group], metric, n_boot=n_boot, seed=seed)
        except LeantuneError as exc:
            return None, str(exc)
        points = []
        for s in sizes:
            low, high = np.quantile(draws[:, index[s]].mean(axis=1), q)
            points.append(GroupPoint(s, len(index[s]), float(observed[index[s]].mean()), float(low), float(high)))
        last = None
        if len(sizes) > 1:
            low, high = np.quantile(step_draws(draws), q)
            last = GroupStep(sizes[-1], sizes[-2], points[-1].value - points[-2].value, float(low), float(high))
        curves.append(GroupCurve(group, len(members[group]), None if valued is None else valued.get(group, 0), points, last))
    adj_alpha, adj_boot = None, None
    if len(sizes) > 1:  # the flagged steps redrawn at the false-coverage-rate adjusted level α·R/m
        flagged = [g for g in curves if g.last_step.flagged()]
        adj_alpha = alpha * len(flagged) / len(curves) if flagged else alpha
        # Enough resamples that each adjusted tail holds tail_draws of them (1,000 leave a handful there).
        adj_boot = max(n_boot, math.ceil(2 * tail_draws / adj_alpha))
        for g in flagged:
            _, draws = resampled_metric(cuts[g.group], metric, n_boot=adj_boot, seed=seed)
            low, high = np.quantile(step_draws(draws), [adj_alpha / 2, 1 - adj_alpha / 2])
            g.last_step.adj_low, g.last_step.adj_high = float(low), float(high)
    return BreakdownCurves(by, metric, n_boot, alpha, curves, len(members), left_out, adj_alpha, adj_boot), ""


def read_breakdown_curves(folder) -> BreakdownCurves:
    """The per-attribute curves ``BreakdownCurves.write`` saved in curve folder ``folder``."""
    from ..io import read_json

    return BreakdownCurves.from_dict(read_json(Path(folder) / f"{BREAKDOWN_FILE}.json"))
