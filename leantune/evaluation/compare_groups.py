"""Paired comparison per group of test units: for attribute extraction, per attribute.

``compare_by_group(evaluations, by="attribute")`` cuts every run to the questions of one attribute
at a time and runs ``compare`` on each cut, so every attribute gets the same paired statistics as
the whole test set (difference to the baseline, bootstrap interval, permutation p-value, paired
minimum detectable effect). Many attributes mean many tests: beside each p-value stands its
Benjamini–Hochberg adjusted value (``q``, over every attribute and method of the table), which is
the one to read before calling any single attribute's difference real.

Within one attribute a product holds one question, so the resampled unit is the question; the
overall comparison (all attributes) still resamples whole products.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from ..errors import LeantuneError, ParameterError
from ..io import atomic_path, read_json, write_json
from .compare import Comparison, Evaluation, _ci, _f, compare, shared_units

GROUPINGS = ("attribute",)
GROUP_FILE = "by-{by}"  # .md, .json and .png written beside comparison.*


def _check_by(by: str) -> None:
    if by not in GROUPINGS:
        raise ParameterError("by", repr(by), f"choose one of {', '.join(GROUPINGS)}")


def unit_group(unit: str, by: str) -> str | None:
    """The group of test unit ``unit`` (``by="attribute"``: the attribute of a '<product>::<attribute>'
    question id); None when the unit has no such group."""
    _check_by(by)
    from ..tasks.attributes_data import QUESTION_SEP

    _, sep, attribute = unit.partition(QUESTION_SEP)
    return attribute if sep and attribute else None


@dataclass
class GroupedComparison:
    """``compare`` over all units (``overall``) and within each group of units (``groups``, largest first),
    with Benjamini–Hochberg adjusted p-values ``q_values[group][method]`` over the whole table, and for
    attribute units ``valued[group]``: the questions with a gold value (what F1's recall counts)."""

    by: str
    overall: Comparison
    groups: dict[str, Comparison]
    q_values: dict[str, dict[str, float]]
    valued: dict[str, int] | None = None

    @property
    def methods(self) -> list[str]:
        return [r.name for r in self.overall.rows]

    def to_dict(self) -> dict:
        """JSON-ready dictionary (``from_dict`` reads it back)."""
        return {"by": self.by, "overall": self.overall.to_dict(),
                "groups": {k: c.to_dict() for k, c in self.groups.items()}, "q_values": self.q_values, "valued": self.valued}

    @classmethod
    def from_dict(cls, data: dict) -> GroupedComparison:
        """The inverse of ``to_dict``."""
        return cls(by=data["by"], overall=Comparison.from_dict(data["overall"]),
                   groups={k: Comparison.from_dict(c) for k, c in data["groups"].items()}, q_values=data["q_values"],
                   valued=data.get("valued"))

    def significant(self, method: str, alpha: float | None = None) -> list[str]:
        """The groups where ``method`` differs from the baseline at false-discovery rate ``alpha``
        (default: the comparison's α), largest group first."""
        alpha = self.overall.settings["alpha"] if alpha is None else alpha
        return [g for g in self.groups if self.q_values[g][method] < alpha]

    def selection_alpha(self) -> tuple[float, int, int]:
        """(α·R/m, R, m): the level at which intervals of the groups ``significant`` picks out are drawn so
        that they stay honest after the selection (Benjamini & Yekutieli's false-coverage-rate adjustment,
        2005), with R the tests flagged at q < α over the whole table and m the table's tests; α when none is."""
        alpha = self.overall.settings["alpha"]
        m = sum(len(v) for v in self.q_values.values())
        r = sum(q < alpha for v in self.q_values.values() for q in v.values())
        return (alpha * r / m if r else alpha), r, m

    def seeds_interval(self, method: str, group: str, adjusted: bool = True) -> tuple[float, float] | None:
        """``method``'s units + seeds interval within ``group`` (Δ ± t·sqrt(unit SE² + seed SE²), as
        ``compare`` draws it), at the selection-adjusted level ``selection_alpha`` unless not ``adjusted``;
        None when either side ran fewer than 2 seeds."""
        from .compare import _with_seeds

        c = self.groups[group]
        r = c.row(method)
        if r.ci_total_low is None:
            return None
        if not adjusted:
            return r.ci_total_low, r.ci_total_high
        s = self.overall.settings
        _, low, high, _ = _with_seeds(r.diff, r.unit_se, c.groups[method], c.groups[c.baseline],
                                      self.selection_alpha()[0], s["power"])
        return low, high

    def beyond_seeds(self, method: str, groups: Sequence[str] | None = None, adjusted: bool = True) -> list[str]:
        """Of ``groups`` (default: every group), those where ``method``'s units + seeds interval excludes
        zero, at the selection-adjusted level (``seeds_interval``) unless not ``adjusted``; empty when either
        side ran fewer than 2 seeds (no such interval)."""
        out = []
        for g in self.groups if groups is None else groups:
            ci = self.seeds_interval(method, g, adjusted)
            if ci is not None and (ci[0] > 0 or ci[1] < 0):
                out.append(g)
        return out

    def to_markdown(self) -> str:
        """One table per method against the baseline: a row per group, then the overall row."""
        o, s = self.overall, self.overall.settings
        level = round(100 * (1 - s["alpha"]))
        lines = []
        valued = self.valued
        any_seeded = False
        for name in self.methods:
            # Both sides with ≥ 2 seeds: each group's units + seeds interval too (compare computes it per group).
            seeded = o.row(name).ci_total_low is not None
            any_seeded |= seeded
            lines += [f"### {name} vs {o.baseline}, per {self.by}", "",
                      f"| {self.by} | units |{' with a value |' if valued else ''} {o.baseline} {o.metric} | {name} {o.metric} | Δ | "
                      f"{level}% CI | p | q (BH) | paired MDE |{f' {level}% CI units + seeds |' if seeded else ''}",
                      f"|---|---:|{'---:|' if valued else ''}---:|---:|---:|---|---:|---:|---:|{'---|' if seeded else ''}"]
            for group, c in [*self.groups.items(), (f"**all {self.by}s**", o)]:
                r = c.row(name)
                q = self.q_values[group][name] if group in self.q_values else None
                mark = "**" if q is not None and q < s["alpha"] else ""
                n_valued = f" {valued.get(group, sum(valued.values()))} |" if valued else ""
                total = f" {_ci(r.ci_total_low, r.ci_total_high)} |" if seeded else ""
                lines.append(f"| {group} | {c.n_units} |{n_valued} {_f(c.baseline_value)} | {_f(r.value)} | {mark}{_f(r.diff, sign=True)}{mark} | "
                             f"{_ci(r.ci_low, r.ci_high)} | {r.p_value:.3g} | "
                             f"{'' if q is None else f'{q:.3g}'} | {_f(r.mde_paired)} |{total}")
            sig = self.significant(name)
            lines += ["", f"{len(sig)} of {len(self.groups)} {self.by}s differ at a false-discovery rate of {s['alpha']:g} "
                          f"(bold: q < {s['alpha']:g})."]
            if seeded and sig:
                held = self.beyond_seeds(name, sig)
                a_sel, n_sel, n_tests = self.selection_alpha()
                cis = "; ".join(f"{g} {_ci(*self.seeds_interval(name, g))}" for g in sig)
                lines.append(f"Of those, {len(held)} {'keeps' if len(held) == 1 else 'keep'} a units + seeds interval clear of zero"
                             + (f" ({', '.join(held)})" if held else "")
                             + f" when the interval is drawn at the level their selection calls for, {100 * (1 - a_sel):.2f}% "
                             f"(false-coverage-rate adjusted: 1 − α·{n_sel}/{n_tests}, {n_sel} of the table's {n_tests} tests "
                             f"flagged): {cis}.")
            lines.append("")
        lines += [
            f"Each {self.by}'s row is `leantune compare` on that {self.by}'s units alone: Δ = {o.metric} of the method "
            f"minus the baseline's (seeds averaged), a paired bootstrap interval ({s['n_boot']} resamples, seed {s['seed']}), "
            "a two-sided paired permutation p and the paired minimum detectable effect at "
            f"{round(100 * s['power'])}% power; q: Benjamini–Hochberg adjusted p over all "
            f"{sum(len(v) for v in self.q_values.values())} tests of this file. A group with few units shows only "
            "large differences (its MDE says how large; 0 where no unit's answer differs)"
            + ("; recall counts only the questions with a gold value and precision only those answered with a value, "
               "so an attribute with few of them is measured on those few" if valued else "") + ". The last row is the comparison over all units.",
        ]
        if any_seeded:
            lines += [
                "",
                f"CI units + seeds (where both sides ran 2 or more seeds): Δ ± t·sqrt(unit SE² + seed SE²) within the {self.by}, "
                "as in `comparison.md`; the p, q and interval before it hold the training runs fixed, so they say where *these* "
                f"runs differ, and this one whether the difference outlasts the seed spread. The column is not adjusted for the "
                f"{len(self.groups)} {self.by}s; the sentence under each table redraws it, for the {self.by}s that q picks out, "
                "at the false-coverage-rate adjusted level 1 − α·R/m (Benjamini & Yekutieli 2005; R tests flagged of m), "
                "which is the one to read.",
            ]
        return "\n".join(lines) + "\n"

    def write(self, out_dir) -> dict[str, Path]:
        """Write ``by-<by>.md``, ``by-<by>.json`` and ``by-<by>.png`` into ``out_dir``; return their paths."""
        from .forest import grouped_forest_plot

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = GROUP_FILE.format(by=self.by)
        files = {"markdown": out / f"{stem}.md", "json": out / f"{stem}.json", "plot": out / f"{stem}.png"}
        o = self.overall
        with atomic_path(files["markdown"]) as tmp:
            tmp.write_text(f"# Paired comparison per {self.by}: {o.metric} vs {o.baseline}\n\n" + self.to_markdown())
        write_json(files["json"], self.to_dict())
        grouped_forest_plot(self, files["plot"])
        return files


def read_grouped_comparison(folder, by: str = "attribute") -> GroupedComparison:
    """The grouped comparison that ``GroupedComparison.write`` saved in ``folder``."""
    return GroupedComparison.from_dict(read_json(Path(folder) / f"{GROUP_FILE.format(by=by)}.json"))


def compare_by_group(evaluations: Sequence[Evaluation], by: str = "attribute", baseline: str | None = None,
                     metric: str = "f1", n_boot: int = 10000, n_perm: int = 10000, seed: int = 0,
                     alpha: float = 0.05, power: float = 0.8, shared: bool = False,
                     deterministic: Sequence[str] = ()) -> GroupedComparison:
    """``compare`` over all units and within each group of units (see the module docstring).

    ``by="attribute"`` needs attribute evaluations (units are '<product>::<attribute>' question ids).
    The same arguments as ``compare``; ``seed`` gives every group the same bootstrap and permutation
    streams, so re-running gives identical numbers.
    """
    from scipy.stats import false_discovery_control

    evaluations = list(evaluations)
    if not evaluations:
        raise LeantuneError("nothing to compare: no evaluations given")
    _check_by(by)
    dropped: dict[str, int] = {}
    if shared:
        evaluations, dropped = shared_units(evaluations)
    # Groups from the first run, before any resampling; the overall compare checks that every run has its units.
    members: dict[str, set[str]] = {}
    valued: dict[str, int] | None = {}
    for row in evaluations[0].rows:
        group = unit_group(row["unit"], by)
        if group is None:
            raise LeantuneError(f"{evaluations[0].label}: unit {row['unit']!r} has no {by} (per-{by} comparison needs attribute "
                                "evaluations, whose units are '<product>::<attribute>' questions)")
        members.setdefault(group, set()).add(row["unit"])
        if valued is not None and "valued" not in row:
            valued = None  # not attribute rows: no gold-value count
        elif valued is not None:
            valued[group] = valued.get(group, 0) + int(row["valued"])
    kwargs = dict(baseline=baseline, metric=metric, n_boot=n_boot, n_perm=n_perm, seed=seed, alpha=alpha, power=power,
                  deterministic=deterministic)
    overall = compare(evaluations, **kwargs)
    if dropped:
        overall.settings["dropped_units"] = dropped
    groups = {}
    for group in sorted(members, key=lambda g: (-len(members[g]), g)):
        cut = [replace(ev, rows=[r for r in ev.rows if r["unit"] in members[group]]) for ev in evaluations]
        groups[group] = compare(cut, **kwargs)
    keys = [(g, r.name) for g, c in groups.items() for r in c.rows]
    q = false_discovery_control([groups[g].row(m).p_value for g, m in keys], method="bh") if keys else []
    q_values: dict[str, dict[str, float]] = {g: {} for g in groups}
    for (g, m), value in zip(keys, q):
        q_values[g][m] = float(value)
    return GroupedComparison(by=by, overall=overall, groups=groups, q_values=q_values,
                             valued=None if valued is None else {g: valued[g] for g in groups})
