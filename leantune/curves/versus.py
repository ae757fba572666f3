"""Two learning curves against each other, size by size (``leantune compare-curves``).

Two curves evaluated on the same test units (two models, or two selection methods, with the same
``--eval-limit`` and ``--eval-seed``) can be set against each other at every size both measured: each
size is a paired comparison (``leantune.evaluation.compare``) of curve B's runs there against curve
A's, seeds averaged, with its interval over the test units and, where both sides ran two or more
seeds, the units + seeds interval. The table and plot answer "does B beat A, at which sizes, and does
the gap close with more data" in one go, instead of one ``leantune compare`` per size. Each size's
interval is its own question; they are not adjusted for the number of sizes.

The runs are read from each curve folder's ``runs/size<N>[-seed<S>]/per_unit.jsonl`` (what ``leantune
curve`` writes), so a curve still being filled contributes the runs it has finished.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import LeantuneError, ParameterError
from ..evaluation.units import PER_UNIT_FILE
from ..io import atomic_path, write_json
from .paired import _p

VERSUS_FILE = "curves"  # curves.md / curves.json / curves.png in the output folder
_RUN = re.compile(r"size(\d+)(?:-seed(\d+))?$")


@dataclass
class SizeGap:
    """Curve B against curve A at one size."""

    size: int  # 0: zero-shot
    seeds_a: int
    seeds_b: int
    value_a: float  # seeds averaged over the shared test units
    value_b: float
    diff: float  # B − A
    ci_low: float  # over the test units
    ci_high: float
    p_value: float
    mde: float  # paired, over the test units, at the comparison's power
    total_low: float | None = None  # units + seeds (None with fewer than 2 seeds on either side)
    total_high: float | None = None
    mde_total: float | None = None

    def clear(self) -> bool:
        """The widest interval drawn (units + seeds where there is one) excludes zero."""
        low, high = (self.total_low, self.total_high) if self.total_low is not None else (self.ci_low, self.ci_high)
        return low > 0 or high < 0


@dataclass
class CurveGap:
    """``compare_curves``' result: B − A at each size both curves measured."""

    metric: str
    name_a: str
    name_b: str
    folder_a: str
    folder_b: str
    n_units: int
    n_clusters: int
    alpha: float
    gaps: list[SizeGap]
    only_a: list[int] = field(default_factory=list)  # sizes only curve A measured (per-unit results)
    only_b: list[int] = field(default_factory=list)
    command: str = ""  # how it was made (the CLI fills it in), printed in the report

    def to_dict(self) -> dict:
        """JSON-ready dictionary (``from_dict`` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CurveGap:
        """The inverse of ``to_dict``."""
        return cls(**{**data, "gaps": [SizeGap(**g) for g in data["gaps"]]})

    def summary(self) -> str:
        """One line: at how many sizes B − A is clear of zero, and the gap at the first and last size."""
        trained = [g for g in self.gaps if g.size > 0] or self.gaps
        clear = [g for g in trained if g.clear()]
        first, last = trained[0], trained[-1]
        line = (f"{self.name_b} − {self.name_a} ({self.metric}): clear of zero at {len(clear)} of {len(trained)} "
                f"size(s); {first.diff:+.3f} at {first.size:,}")
        if last is not first:
            line += f", {last.diff:+.3f} at {last.size:,}"
        return line

    def to_markdown(self) -> str:
        """A row per size: both curves' values, B − A with its unit interval and, where seeds allow, the
        units + seeds interval, p and the minimum detectable differences."""
        level = round(100 * (1 - self.alpha))
        a, b = self.name_a, self.name_b
        lines = [f"| size | seeds {a} / {b} | {a} | {b} | {b} − {a} | {level}% CI (units) | {level}% CI (units + seeds) | p | "
                 "MDE (units) | MDE (units + seeds) |",
                 "| ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: |"]
        for g in self.gaps:
            bold = "**" if g.clear() else ""
            total = "–" if g.total_low is None else f"[{g.total_low:+.3f}, {g.total_high:+.3f}]"
            lines.append(f"| {'zero-shot' if g.size == 0 else f'{g.size:,}'} | {g.seeds_a} / {g.seeds_b} | {g.value_a:.3f} | "
                         f"{g.value_b:.3f} | {bold}{g.diff:+.3f}{bold} | [{g.ci_low:+.3f}, {g.ci_high:+.3f}] | {total} | "
                         f"{_p(g.p_value)} | {g.mde:.3f} | {'–' if g.mde_total is None else f'{g.mde_total:.3f}'} |")
        unit = "test units" if self.n_units == self.n_clusters else f"test units in {self.n_clusters:,} resampled groups"
        lines += ["", f"{a}: `{self.folder_a}`; {b}: `{self.folder_b}`. Each size pairs the two curves' runs over the same "
                      f"{self.n_units:,} {unit}, seeds averaged (`leantune compare` at that size); units + seeds: "
                      "Δ ± t·sqrt(unit SE² + seed SE²), where both sides ran 2 or more seeds; MDE: the smallest difference "
                      "detectable at 80% power. Bold: the widest interval drawn excludes zero. Each size's interval is "
                      "its own, not adjusted for the number of sizes.", "", self.summary() + "."]
        for name, sizes in ((a, self.only_a), (b, self.only_b)):
            if sizes:
                lines.append(f"Only {name} measured (left out): {', '.join(f'{s:,}' for s in sizes)}.")
        if self.command:
            lines += ["", f"Reproduce: `{self.command}`"]
        return "\n".join(lines) + "\n"

    def write(self, out) -> dict[str, Path]:
        """``curves.md``, ``curves.json`` and ``curves.png`` in folder ``out``."""
        from .plots import plot_curve_gap

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / f"{VERSUS_FILE}.json", self.to_dict())
        with atomic_path(out / f"{VERSUS_FILE}.md") as tmp:
            Path(tmp).write_text(f"# {self.name_b} against {self.name_a}, size by size ({self.metric})\n\n" + self.to_markdown())
        png = plot_curve_gap(self, out / f"{VERSUS_FILE}.png")
        return {"md": out / f"{VERSUS_FILE}.md", "json": out / f"{VERSUS_FILE}.json", "png": png}


def curve_evaluations(folder, name: str) -> dict[int, list]:
    """{size: [Evaluation named ``name``, one per seed]} of the curve in ``folder`` (its
    ``runs/size<N>[-seed<S>]`` with per-unit results); a folder with no such run is an error naming it."""
    from ..evaluation.compare import load_evaluation

    folder = Path(folder)
    if not (folder / "runs").is_dir():
        raise LeantuneError(f"{folder}: no runs/ folder (give a curve folder: the one `leantune curve --out` names)")
    out: dict[int, list] = {}
    for run in sorted((folder / "runs").iterdir()):
        m = _RUN.match(run.name)
        if m is None or not (run / PER_UNIT_FILE).is_file():
            continue
        ev = load_evaluation(run, name=name)
        ev.seed = int(m.group(2) or 0)
        out.setdefault(int(m.group(1)), []).append(ev)
    if not out:
        raise LeantuneError(f"{folder}: no run with {PER_UNIT_FILE} under runs/ (evaluate the curve first)")
    return out


def compare_curves(folder_a, folder_b, metric: str, names: tuple[str, str] = ("A", "B"), sizes=None,
                   n_boot: int = 10000, seed: int = 0, alpha: float = 0.05, power: float = 0.8) -> CurveGap:
    """Curve B (``folder_b``) against curve A (``folder_a``) at every size both measured (or the given
    ``sizes``): each a paired ``compare`` of B's runs there (seeds) against A's, over the same test units.
    ``metric`` is any metric ``compare`` reads from per-unit rows (attribute ``f1``, ``recall@20`` ...)."""
    from ..evaluation.compare import compare
    from ..paths import display_path

    name_a, name_b = names
    if name_a == name_b:
        raise ParameterError("names", f"{name_a!r} and {name_b!r}", "the two curves need different names")
    runs_a, runs_b = curve_evaluations(folder_a, name_a), curve_evaluations(folder_b, name_b)
    shared = sorted(set(runs_a) & set(runs_b))
    if sizes is not None:
        missing = [s for s in sizes if s not in shared]
        if missing:
            raise ParameterError("sizes", ",".join(map(str, missing)), "not measured by both curves "
                                 f"(both have: {', '.join(map(str, shared)) or 'none'})")
        shared = sorted(set(sizes))
    if not shared:
        raise LeantuneError(f"no size measured by both curves ({name_a}: {', '.join(map(str, sorted(runs_a)))}; "
                            f"{name_b}: {', '.join(map(str, sorted(runs_b)))})")
    gaps, n_units, n_clusters = [], 0, 0
    for size in shared:
        try:
            c = compare(runs_a[size] + runs_b[size], baseline=name_a, metric=metric, n_boot=n_boot, n_perm=n_boot,
                        seed=seed, alpha=alpha, power=power)
        except LeantuneError as exc:
            raise LeantuneError(f"size {size}: {exc}") from None
        r = c.row(name_b)
        n_units, n_clusters = c.n_units, c.n_clusters
        gaps.append(SizeGap(size, len(runs_a[size]), len(runs_b[size]), c.baseline_value, r.value, r.diff, r.ci_low,
                            r.ci_high, r.p_value, r.mde_paired, r.ci_total_low, r.ci_total_high,
                            None if r.mde_total is None or not math.isfinite(r.mde_total) else r.mde_total))
    return CurveGap(metric, name_a, name_b, display_path(folder_a), display_path(folder_b), n_units, n_clusters, alpha,
                    gaps, sorted(set(runs_a) - set(runs_b)), sorted(set(runs_b) - set(runs_a)))


def read_curve_gap(folder) -> CurveGap:
    """The comparison ``CurveGap.write`` saved in ``folder``."""
    from ..io import read_json

    return CurveGap.from_dict(read_json(Path(folder) / f"{VERSUS_FILE}.json"))
