"""Paired statistical comparison of evaluation runs over the same test units.

Every evaluation writes ``per_unit.jsonl`` (see ``leantune.evaluation.units``): one row per test
unit with the unit's id, its cluster (the group resampled as a whole) and metric columns. Runs
evaluated on the same units can be compared *paired*: unit by unit, which removes the spread of
unit difficulty from the comparison.

``compare(evaluations)`` groups runs by method name (several seeds per method), picks a baseline
and reports, for every other method, the difference of the metric to the baseline with

* a 95% paired bootstrap interval over clusters (every resample draws the same clusters for all
  runs of all methods, and seeds are averaged inside each resample);
* a two-sided paired permutation p-value (per cluster, the method's and the baseline's
  seed-averaged data are swapped at random; exact enumeration when the clusters are few);
* the spread from the units (``unit_se``, bootstrap SD of the difference) and, separately, from the
  training seeds (``seed_sd`` per method, ``seed_se_diff``);
* the minimum detectable effect at 80% power: paired (from the observed per-cluster differences),
  the same with the seed spread added (``mde_total``: what these seeds *and* test units could tell
  apart from zero), and a planning figure that needs only the baseline (unpaired, conservative).

Mean-type metrics are the mean of a numeric column over units. Micro metrics ``f1``,
``precision`` and ``recall`` of attribute rows (those with an ``outcome``) come from the outcome
counts: P = VC/(NV+VC+VW), R = VC/(VN+VC+VW), F1 = 2PR/(P+R), 0 where undefined.
"""
from __future__ import annotations

import glob
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import DataError, LeantuneError, ParameterError
from ..io import read_json, read_jsonl, write_json
from ..paths import display_path
from .units import PER_UNIT_FILE

MICRO_METRICS = ("f1", "precision", "recall")
# Task metric names whose per-unit column has another name (attribute accuracy = mean of ``correct``).
COLUMN_ALIASES = {"accuracy": "correct"}
OUTCOMES = ("NN", "NV", "VN", "VC", "VW")
_CHUNK_CELLS = 2_000_000  # resample-matrix cells per chunk (bounds memory for many clusters)
_TIE_TOL = 1e-9


# --------------------------------------------------------------------------- loading


@dataclass
class Evaluation:
    """One evaluation run: its per-unit rows, method name and seed."""

    path: Path  # the folder holding per_unit.jsonl
    name: str
    seed: int
    rows: list[dict] = field(repr=False)
    label: str = ""  # how the run is named in messages (the path the user gave)

    @property
    def units(self) -> list[str]:
        return [r["unit"] for r in self.rows]


def _per_unit_folder(path: Path) -> Path:
    if path.is_file() and path.name == PER_UNIT_FILE:
        return path.parent
    for folder in (path, path / "eval"):
        if (folder / PER_UNIT_FILE).is_file():
            return folder
    raise DataError(path, f"no {PER_UNIT_FILE} here or in {path / 'eval'} (not an evaluation or run folder, "
                          "or evaluated before per-unit results were written)")


def _nearest_run_json(folder: Path) -> dict | None:
    for candidate in (folder / "run.json", folder.parent / "run.json"):
        if candidate.is_file():
            record = read_json(candidate)
            if not isinstance(record, dict):
                raise DataError(candidate, "expected a JSON object")
            return record
    return None


def _curve_run_settings(folder: Path) -> dict | None:
    """A learning-curve run folder (``result.json`` with size, seed and method): its method and seed;
    the zero-shot run is named "zero-shot"."""
    file = folder / "result.json"
    if not file.is_file():
        return None
    record = read_json(file)
    if not isinstance(record, dict) or not {"size", "seed", "method"} <= set(record):
        return None
    return {"method": "zero-shot" if record["size"] == 0 else record["method"], "seed": record["seed"]}


def _evaluation_settings(folder: Path) -> dict | None:
    """An evaluation folder's ``metrics.json`` settings (``attributes evaluate``), or None."""
    file = folder / "metrics.json"
    if not file.is_file():
        return None
    record = read_json(file)
    settings = record.get("settings") if isinstance(record, dict) else None
    return settings if isinstance(settings, dict) else None


def load_evaluation(path, name: str | None = None) -> Evaluation:
    """Read an evaluation: ``path`` is a folder with ``per_unit.jsonl`` or a run folder with ``eval/per_unit.jsonl``.

    The method name is ``name`` if given, else ``settings["method"]`` of the nearest ``run.json``
    (next to ``per_unit.jsonl`` or one folder up), else the method of a learning-curve run's
    ``result.json`` ("zero-shot" for size 0), else the folder's name. The seed comes from the first of
    those files found, else from an evaluation folder's ``metrics.json`` settings (``attributes
    evaluate``: ``train_seed``, the seed that trained its adapter, before the evaluation's own
    ``seed``), else 0. A missing or malformed file raises a
    ``LeantuneError`` naming it.
    """
    path = Path(path)
    folder = _per_unit_folder(path)
    file = folder / PER_UNIT_FILE
    rows = read_jsonl(file)
    if not rows:
        raise DataError(file, "no units")
    seen = set()
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict) or "unit" not in row:
            raise DataError(file, "expected an object with a 'unit' field", i)
        row["unit"] = str(row["unit"])
        row["cluster"] = str(row.get("cluster", row["unit"]))
        if row["unit"] in seen:
            raise DataError(file, f"unit {row['unit']!r} appears twice", i)
        seen.add(row["unit"])
    record = _nearest_run_json(folder)
    if record is not None:
        settings = record.get("settings") or {}
    else:
        settings = _curve_run_settings(folder) or _evaluation_settings(folder) or {}
    if not isinstance(settings, dict):
        settings = {}
    if name is None:
        name = settings.get("method") or (path.name or path.resolve().name)
    try:
        seed = int(settings.get("train_seed", settings.get("seed", 0)) or 0)
    except (TypeError, ValueError):
        seed = 0
    return Evaluation(path=folder, name=str(name), seed=seed, rows=rows, label=str(path))


def base_evaluation(run_path) -> Evaluation:
    """The base (not fine-tuned) model's evaluation recorded by a run's ``evaluate_base`` stage, named "base"."""
    run_path = Path(run_path)
    file = run_path / "run.json"
    record = read_json(file)
    stage = (record.get("stages") or {}).get("evaluate_base") or {}
    out_dir = (stage.get("outputs") or {}).get("out_dir")
    if stage.get("status") != "finished" or not out_dir:
        raise DataError(file, "no finished evaluate_base stage with an out_dir (run it with `leantune run --base`)")
    evaluation = load_evaluation(out_dir, name="base")
    evaluation.label = f"{run_path} (base)"
    return evaluation


def expand_paths(patterns: Iterable[str]) -> list[Path]:
    """Expand shell-style globs (existing paths pass as they are); a pattern matching nothing is an error."""
    found: list[Path] = []
    for pattern in patterns:
        pattern = str(pattern)
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise LeantuneError(f"{pattern}: matches no file or folder")
            found.extend(Path(m) for m in matches)
        else:
            if not Path(pattern).exists():
                raise LeantuneError(f"{pattern}: no such file or folder")
            found.append(Path(pattern))
    unique, seen = [], set()
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


# --------------------------------------------------------------------------- planning


def _z(alpha: float, power: float) -> float:
    from scipy.stats import norm

    if not 0 < alpha < 1:
        raise LeantuneError(f"alpha {alpha}: must be between 0 and 1")
    if not 0 < power < 1:
        raise LeantuneError(f"power {power}: must be between 0 and 1")
    return float(norm.ppf(1 - alpha / 2) + norm.ppf(power))


def minimum_detectable_effect(baseline_rate: float, n_units: int, alpha: float = 0.05, power: float = 0.8,
                              per_unit_sd: float | None = None) -> float:
    """Smallest absolute difference of a per-unit mean that a two-sided test at ``alpha`` detects with ``power``.

    Unpaired two-sample normal approximation for two runs on ``n_units`` units each:
    ``(z_{1-alpha/2} + z_power) * sd * sqrt(2 / n_units)`` with ``sd = sqrt(p (1 - p))`` for a 0/1-like
    metric with rate ``baseline_rate`` unless ``per_unit_sd`` is given. Paired comparisons of
    correlated runs detect less; this figure sizes a test set conservatively.
    """
    if n_units < 1:
        raise LeantuneError(f"units {n_units}: need at least one")
    if per_unit_sd is None:
        if not 0 <= baseline_rate <= 1:
            raise LeantuneError(f"rate {baseline_rate}: must be between 0 and 1 (or give a per-unit SD)")
        per_unit_sd = math.sqrt(baseline_rate * (1 - baseline_rate))
    elif per_unit_sd < 0:
        raise LeantuneError(f"per-unit SD {per_unit_sd}: must be >= 0")
    return _z(alpha, power) * per_unit_sd * math.sqrt(2.0 / n_units)


# --------------------------------------------------------------------------- metric data


def _micro(tp, pred, gold, metric: str):
    """Micro precision/recall/F1 from totals (arrays of the same shape); 0 where undefined."""
    tp, pred, gold = (np.asarray(a, dtype=float) for a in (tp, pred, gold))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(pred > 0, tp / np.where(pred > 0, pred, 1), 0.0)
        r = np.where(gold > 0, tp / np.where(gold > 0, gold, 1), 0.0)
        if metric == "precision":
            return p
        if metric == "recall":
            return r
        s = p + r
        return np.where(s > 0, 2 * p * r / np.where(s > 0, s, 1), 0.0)


class _Metric:
    """How per-unit rows become per-cluster totals (k columns) and totals become the metric."""

    def __init__(self, name: str, micro: bool):
        self.name, self.micro = name, micro

    @property
    def kind(self) -> str:
        return "micro" if self.micro else "mean"

    def unit_columns(self, ev: Evaluation, order: Sequence[int]) -> np.ndarray:
        """(n_units, k) per-unit contributions in the aligned order."""
        rows = [ev.rows[i] for i in order]
        if self.micro:
            out = np.zeros((len(rows), 3))
            for j, row in enumerate(rows):
                o = row.get("outcome")
                if o not in OUTCOMES:
                    raise DataError(ev.path / PER_UNIT_FILE, f"unit {row['unit']!r}: outcome {o!r} is not one of {', '.join(OUTCOMES)}")
                out[j] = (o == "VC", o in ("NV", "VC", "VW"), o in ("VN", "VC", "VW"))
            return out
        vals = np.empty(len(rows))
        for j, row in enumerate(rows):
            v = row.get(self.name)
            if isinstance(v, bool):
                v = int(v)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise DataError(ev.path / PER_UNIT_FILE, f"unit {row['unit']!r}: {self.name} is {v!r}, expected a finite number")
            vals[j] = v
        return np.stack([vals, np.ones(len(rows))], axis=1)

    def stat(self, totals: np.ndarray) -> np.ndarray:
        """Metric from totals (..., k)."""
        if self.micro:
            return _micro(totals[..., 0], totals[..., 1], totals[..., 2], self.name)
        return totals[..., 0] / totals[..., 1]


def _resolve_metric(metric: str, evaluations: Sequence[Evaluation]) -> _Metric:
    first = evaluations[0].rows
    has_outcome = all("outcome" in r for ev in evaluations for r in ev.rows)
    if metric in MICRO_METRICS and has_outcome:
        return _Metric(metric, micro=True)
    numeric = [k for k, v in first[0].items() if k not in ("unit", "cluster") and isinstance(v, (int, float))]
    if metric not in numeric and COLUMN_ALIASES.get(metric) in numeric:
        metric = COLUMN_ALIASES[metric]
    if metric not in numeric or not all(metric in r for ev in evaluations for r in ev.rows):
        available = numeric + (list(MICRO_METRICS) if has_outcome else [])
        raise LeantuneError(f"metric {metric!r} is not in every per-unit row; available: {', '.join(available) or 'none'}")
    return _Metric(metric, micro=False)


# --------------------------------------------------------------------------- results


@dataclass
class GroupSummary:
    """One method: its runs (seeds), each run's metric and the seed-averaged value."""

    name: str
    seeds: list[int]
    values: list[float]
    value: float
    seed_sd: float | None
    paths: list[str]


@dataclass
class ComparisonRow:
    """One method against the baseline."""

    name: str
    n_seeds: int
    value: float
    diff: float
    rel: float | None
    ci_low: float
    ci_high: float
    p_value: float
    p_exact: bool
    unit_se: float
    seed_sd: float | None
    seed_se_diff: float | None
    mde_paired: float
    mde_paired_rel: float | None
    mde_planning: float
    mde_planning_rel: float | None
    # Δ ± t·sqrt(unit SE² + seed SE²), Welch–Satterthwaite df: test-unit sampling *and* training
    # randomness; None with fewer than 2 seeds on either side.
    ci_total_low: float | None = None
    ci_total_high: float | None = None
    # (t_{1-α/2,df} + t_{power,df})·sqrt(unit SE² + seed SE²): the smallest Δ these test units *and* these
    # seeds detect at ``power``; it falls towards ``mde_paired`` as seeds are added. None as above.
    mde_total: float | None = None


@dataclass
class Comparison:
    """The result of ``compare``: per-method rows against ``baseline`` plus the settings used."""

    metric: str
    metric_kind: str  # "mean" or "micro"
    baseline: str
    baseline_value: float
    n_units: int
    n_clusters: int
    groups: dict[str, GroupSummary]
    rows: list[ComparisonRow]
    mde_planning: float
    mde_planning_rel: float | None
    settings: dict

    def row(self, name: str) -> ComparisonRow:
        """The row of method ``name``."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    @classmethod
    def from_dict(cls, data: dict) -> Comparison:
        """The inverse of ``to_dict``. A file written before ``mde_total`` existed gets it from the
        figures it holds (unit SE, both groups' seed spreads, α and power)."""
        groups = {k: GroupSummary(**g) for k, g in data["groups"].items()}
        rows = [ComparisonRow(**r) for r in data["rows"]]
        s = data["settings"]
        for r, raw in zip(rows, data["rows"]):
            if "mde_total" not in raw:
                r.mde_total = _with_seeds(r.diff, r.unit_se, groups[r.name], groups[data["baseline"]], s["alpha"], s["power"])[3]
        return cls(**{**data, "groups": groups, "rows": rows})

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return {
            "metric": self.metric, "metric_kind": self.metric_kind, "baseline": self.baseline,
            "baseline_value": self.baseline_value, "n_units": self.n_units, "n_clusters": self.n_clusters,
            "groups": {k: asdict(g) for k, g in self.groups.items()},
            "rows": [asdict(r) for r in self.rows],
            "mde_planning": self.mde_planning, "mde_planning_rel": self.mde_planning_rel,
            "settings": dict(self.settings),
        }

    def to_markdown(self) -> str:
        """A markdown table (one row per method) with a line on units, baseline, resamples and the MDE."""
        s = self.settings
        level = round(100 * (1 - s["alpha"]))
        base = self.groups[self.baseline]
        lines = [
            f"| method | seeds | {self.metric} | Δ vs {self.baseline} | relative | {level}% CI | p | unit SE | seed SE | MDE | {level}% CI units + seeds | MDE units + seeds |",
            "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|",
            f"| {self.baseline} (baseline) | {len(base.seeds)} | {_f(base.value)} | | | | | | | | | |",
        ]
        for r in self.rows:
            p = f"{r.p_value:.4g}"
            lines.append(
                f"| {r.name} | {r.n_seeds} | {_f(r.value)} | {_f(r.diff, sign=True)} | {_pct(r.rel)} | "
                f"{_ci(r.ci_low, r.ci_high)} | {p} | {_f(r.unit_se)} | "
                f"{_f(r.seed_se_diff) if r.seed_se_diff is not None else '–'} | {_f(r.mde_paired)} | "
                + f"{_ci(r.ci_total_low, r.ci_total_high)} | "
                + (f"{_f(r.mde_total)} |" if r.mde_total is not None else "– |")
            )
        units = f"{self.n_units} units" + (f" in {self.n_clusters} clusters" if self.n_clusters != self.n_units else "")
        kind = "micro-averaged over units" if self.metric_kind == "micro" else "mean over units"
        lines += [
            "",
            f"{units}; baseline `{self.baseline}` {self.metric} = {_f(self.baseline_value)} ({kind}, averaged over "
            f"{len(base.seeds)} seed(s)). CI: paired bootstrap over {'clusters' if self.n_clusters != self.n_units else 'units'} "
            f"({s['n_boot']} resamples, seed {s['seed']}); p: two-sided paired permutation test "
            f"({'exact, all sign swaps' if self.rows and all(r.p_exact for r in self.rows) else str(s['n_perm']) + ' random swaps'}). "
            "Unit SE: bootstrap SD of Δ (test-unit sampling); seed SE: SE of Δ from the spread over training seeds "
            "(– with fewer than 2 seeds per method); MDE: paired minimum detectable Δ at "
            f"{round(100 * s['power'])}% power, two-sided α = {s['alpha']:g}. CI units + seeds: Δ ± t·sqrt(unit SE² + seed SE²) "
            "(Welch–Satterthwaite degrees of freedom), the interval to read when training seeds vary as much as test units; "
            "MDE units + seeds: the smallest Δ that interval detects at the same power with these seeds (it shrinks "
            "towards the paired MDE as seeds are added).",
            "",
            *([f"Declared deterministic (one run, seed spread 0): {', '.join(s['deterministic'])}; a row against it "
               "has a units + seeds interval from the other method's seeds alone.", ""] if s.get("deterministic") else []),
            *([f"Paired over the {self.n_units} units every run shares; units left out: "
               + ", ".join(f"{n} of {label}" for label, n in s["dropped_units"].items()) + ".", ""] if "dropped_units" in s else []),
            f"With {self.n_units} units a difference smaller than {_f(self.mde_planning)} ({_pct(self.mde_planning_rel, sign=False)} relative) "
            f"cannot be told apart from zero at {round(100 * s['power'])}% power (two unpaired runs, from the baseline's "
            "per-unit spread; paired runs detect the smaller MDE in the table).",
        ]
        return "\n".join(lines) + "\n"

    def write(self, out_dir) -> dict[str, Path]:
        """Write ``comparison.md``, ``comparison.json`` and ``forest.png`` into ``out_dir``; return their paths."""
        from ..io import atomic_path
        from .forest import forest_plot

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {"markdown": out / "comparison.md", "json": out / "comparison.json", "plot": out / "forest.png"}
        with atomic_path(files["markdown"]) as tmp:
            tmp.write_text(f"# Paired comparison: {self.metric} vs {self.baseline}\n\n" + self.to_markdown())
        write_json(files["json"], self.to_dict())
        forest_plot(self, files["plot"])
        return files


def read_comparison(folder) -> Comparison:
    """The comparison that ``Comparison.write`` saved in ``folder`` (its ``comparison.json``)."""
    return Comparison.from_dict(read_json(Path(folder) / "comparison.json"))


def _f(x: float | None, sign: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.4f}" if sign else f"{x:.4f}"


def _ci(low: float | None, high: float | None) -> str:
    """An interval as a table cell, '[low, high]' with signs; '–' where there is none."""
    return "–" if low is None else f"[{_f(low, sign=True)}, {_f(high, sign=True)}]"


def _pct(x: float | None, sign: bool = True) -> str:
    if x is None:
        return "–"
    return f"{100 * x:+.1f}%" if sign else f"{100 * x:.1f}%"


# --------------------------------------------------------------------------- comparison


def _check_same_units(evaluations: Sequence[Evaluation]) -> None:
    ref = evaluations[0]
    ref_units = set(ref.units)
    ref_clusters = {r["unit"]: r["cluster"] for r in ref.rows}
    for ev in evaluations[1:]:
        units = set(ev.units)
        if units != ref_units:
            raise LeantuneError(
                f"{ref.label} ({len(ref_units)} units) and {ev.label} ({len(units)} units) were evaluated on different "
                f"units ({len(ref_units ^ units)} not shared); evaluate them on the same test users (the same `--test-users` and `--eval-seed` of `leantune run` or `evaluate`), "
                "or pair over the units they share (`--shared-units`)"
            )
        for r in ev.rows:
            if ref_clusters[r["unit"]] != r["cluster"]:
                raise LeantuneError(
                    f"{ref.label} and {ev.label} put unit {r['unit']!r} in different clusters "
                    f"({ref_clusters[r['unit']]!r} vs {r['cluster']!r})"
                )


def _resample_chunks(n_clusters: int, n: int, rng: np.random.Generator):
    """Yield (chunk, n_clusters) count matrices: how often each cluster is drawn in each bootstrap resample."""
    size = max(1, _CHUNK_CELLS // max(n_clusters, 1))
    done = 0
    while done < n:
        b = min(size, n - done)
        idx = rng.integers(0, n_clusters, size=(b, n_clusters))
        flat = (idx + (np.arange(b) * n_clusters)[:, None]).ravel()
        yield np.bincount(flat, minlength=b * n_clusters).reshape(b, n_clusters).astype(float)
        done += b


def _swap_chunks(n_clusters: int, n_perm: int, rng: np.random.Generator):
    """Yield (exact, (chunk, n_clusters) 0/1 swap masks): all 2**n assignments when that is ≤ n_perm, else random."""
    if n_clusters < 63 and 2 ** n_clusters <= n_perm:
        total = 2 ** n_clusters
        size = max(1, _CHUNK_CELLS // max(n_clusters, 1))
        bits = np.arange(n_clusters, dtype=np.int64)
        for start in range(0, total, size):
            codes = np.arange(start, min(start + size, total), dtype=np.int64)
            yield True, ((codes[:, None] >> bits) & 1).astype(float)
        return
    size = max(1, _CHUNK_CELLS // max(n_clusters, 1))
    done = 0
    while done < n_perm:
        b = min(size, n_perm - done)
        yield False, rng.integers(0, 2, size=(b, n_clusters)).astype(float)
        done += b


def _cluster_totals(evaluations: Sequence[Evaluation], m: _Metric) -> tuple[int, np.ndarray]:
    """(units, (runs, clusters, k) totals): every run aligned to the first run's unit order, its
    per-unit columns summed per cluster (clusters in order of first appearance)."""
    ref_units = evaluations[0].units
    position = {u: i for i, u in enumerate(ref_units)}
    clusters = [r["cluster"] for r in evaluations[0].rows]
    cluster_ids = {c: i for i, c in enumerate(dict.fromkeys(clusters))}
    cl = np.array([cluster_ids[c] for c in clusters])
    n_units, n_clusters = len(ref_units), len(cluster_ids)
    totals = []
    for ev in evaluations:
        order = [0] * n_units
        for i, r in enumerate(ev.rows):
            order[position[r["unit"]]] = i
        u = m.unit_columns(ev, order)  # (N, k)
        totals.append(np.stack([np.bincount(cl, weights=u[:, j], minlength=n_clusters) for j in range(u.shape[1])], axis=1))
    return n_units, np.stack(totals)


def resampled_metric(evaluations: Sequence[Evaluation], metric: str, n_boot: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(observed, draws): each run's ``metric`` (shape (runs,)) and its value in ``n_boot`` bootstrap
    resamples of the test clusters (shape (n_boot, runs)), every resample drawing the same clusters for
    all runs -- for statistics of several runs at once that must stay paired over the test units (a
    learning curve's fit, say). Runs must cover the same units; micro metrics are recomputed from each
    resample's totals."""
    evaluations = list(evaluations)
    if not evaluations:
        raise LeantuneError("nothing to resample: no evaluations given")
    if n_boot < 1:
        raise LeantuneError(f"bootstrap resamples {n_boot}: need at least 1")
    _check_same_units(evaluations)
    m = _resolve_metric(metric, evaluations)
    _, totals = _cluster_totals(evaluations, m)  # (R, C, k)
    observed = m.stat(totals.sum(axis=1))
    rng = np.random.default_rng([seed, 2])
    draws = np.concatenate([m.stat(np.einsum("bc,rck->brk", w, totals)) for w in _resample_chunks(totals.shape[1], n_boot, rng)])
    return observed, draws


def shared_units(evaluations: Sequence[Evaluation]) -> tuple[list[Evaluation], dict[str, int]]:
    """Every evaluation cut to the units all of them were evaluated on (in the first one's order), and
    how many units each one lost, by run folder as reports write it (``display_path``). E.g. a run on 100 of the test products against one on all
    500 pairs over those 100 products. No shared unit at all is refused."""
    common = set(evaluations[0].units)
    for ev in evaluations[1:]:
        common &= set(ev.units)
    if not common:
        raise LeantuneError("the runs share no test unit: " + ", ".join(f"{ev.label} ({len(ev.rows)} units)" for ev in evaluations))
    cut = [replace(ev, rows=[r for r in ev.rows if r["unit"] in common]) for ev in evaluations]
    return cut, {display_path(ev.path): len(ev.rows) - len(common) for ev in evaluations}


def compare(evaluations: Sequence[Evaluation], baseline: str | None = None, metric: str = "recall@20",
            n_boot: int = 10000, n_perm: int = 10000, seed: int = 0, alpha: float = 0.05,
            power: float = 0.8, shared: bool = False, deterministic: Sequence[str] = ()) -> Comparison:
    """Paired comparison of methods (groups of runs by name, one run per seed) against a baseline method.

    All evaluations must cover the identical set of units (rows are aligned by unit id), unless
    ``shared``: then each is cut to the units all of them share (``shared_units``) and the units
    each one lost are recorded in ``settings["dropped_units"]``. The baseline defaults to "random"
    when present, else the first method. ``deterministic`` names methods that no training seed
    varies (e.g. zero-shot with greedy decoding): each is given as one run, and its seed spread is
    taken as 0, so its rows get the units + seeds interval from the other side's seeds alone. See the
    module docstring for the statistics; the same ``seed`` gives identical numbers.
    """
    evaluations = list(evaluations)
    if not evaluations:
        raise LeantuneError("nothing to compare: no evaluations given")
    dropped: dict[str, int] = {}
    if shared:
        evaluations, dropped = shared_units(evaluations)
    if n_boot < 2:
        raise LeantuneError(f"bootstrap resamples {n_boot}: need at least 2")
    if n_perm < 1:
        raise LeantuneError(f"permutations {n_perm}: need at least 1")
    z = _z(alpha, power)
    groups_evs: dict[str, list[Evaluation]] = {}
    for ev in evaluations:
        groups_evs.setdefault(ev.name, []).append(ev)
    if len(groups_evs) < 2:
        raise LeantuneError(f"only one method ({next(iter(groups_evs))}) among {len(evaluations)} run(s): "
                            "need at least two methods to compare (give the runs names, or add the base model)")
    if baseline is None:
        baseline = "random" if "random" in groups_evs else next(iter(groups_evs))
    elif baseline not in groups_evs:
        raise LeantuneError(f"baseline {baseline!r} is not among the methods: {', '.join(groups_evs)}")
    deterministic = _check_deterministic(deterministic, groups_evs)
    _check_same_units(evaluations)
    m = _resolve_metric(metric, evaluations)
    n_units, per_run = _cluster_totals(evaluations, m)
    n_clusters = per_run.shape[1]

    # Per group: (R, C, k) per-seed cluster totals.
    cluster_data: dict[str, np.ndarray] = {}
    for name in groups_evs:
        cluster_data[name] = per_run[[i for i, ev in enumerate(evaluations) if ev.name == name]]

    # Observed values.
    groups: dict[str, GroupSummary] = {}
    for name, evs in groups_evs.items():
        per_seed = m.stat(cluster_data[name].sum(axis=1))  # (R,)
        values = [float(v) for v in per_seed]
        sd = float(np.std(per_seed, ddof=1)) if len(values) > 1 else (0.0 if name in deterministic else None)
        groups[name] = GroupSummary(name=name, seeds=[ev.seed for ev in evs], values=values,
                                    value=float(np.mean(per_seed)), seed_sd=sd, paths=[display_path(ev.path) for ev in evs])
    names = list(groups_evs)
    others = [n for n in names if n != baseline]

    # Bootstrap: the same cluster draws for every run of every method.
    boot_rng = np.random.default_rng([seed, 0])
    boot = {name: [] for name in names}
    for w in _resample_chunks(n_clusters, n_boot, boot_rng):
        for name in names:
            totals = np.einsum("bc,rck->brk", w, cluster_data[name])
            boot[name].append(m.stat(totals).mean(axis=1))
    boot = {k: np.concatenate(v) for k, v in boot.items()}

    # Permutation: swap the method's and the baseline's seed-averaged cluster data.
    mean_c = {name: cluster_data[name].mean(axis=0) for name in names}  # (C, k)
    b_tot = mean_c[baseline].sum(axis=0)
    t_obs, exceed, n_drawn, exact = {}, {}, 0, False
    for name in others:
        t_obs[name] = float(m.stat(mean_c[name].sum(axis=0)) - m.stat(b_tot))
        exceed[name] = 0
    perm_rng = np.random.default_rng([seed, 1])
    for exact, mask in _swap_chunks(n_clusters, n_perm, perm_rng):
        n_drawn += mask.shape[0]
        for name in others:
            delta = mean_c[baseline] - mean_c[name]
            shift = mask @ delta  # (P, k)
            t = m.stat(mean_c[name].sum(axis=0) + shift) - m.stat(b_tot - shift)
            tol = _TIE_TOL * max(1.0, abs(t_obs[name]))
            exceed[name] += int(np.count_nonzero(np.abs(t) >= abs(t_obs[name]) - tol))

    # Planning MDE (unpaired): (z + z) * sqrt(se_b² + se_m²), with se_x the SE of one run's value from
    # its per-unit spread; the table-level figure assumes the method spreads like the baseline.
    def run_se(name: str) -> float:
        if m.micro:
            return float(np.std(boot[name], ddof=1))
        variances = [_cluster_var(cluster_data[name][r], groups[name].values[r], n_units)
                     for r in range(cluster_data[name].shape[0])]
        return math.sqrt(float(np.mean(variances)) / n_units)

    base_value = groups[baseline].value
    se_b = run_se(baseline)
    se_m = {name: run_se(name) for name in others}
    mde_planning = z * math.sqrt(2.0) * se_b
    if se_b == 0.0 and others:  # a baseline without any spread (e.g. no hits at all) says nothing alone
        mde_planning = max(z * se_m[name] for name in others)

    rows = []
    b_group = groups[baseline]
    for name in others:
        g = groups[name]
        diff = g.value - b_group.value
        d_boot = boot[name] - boot[baseline]
        lo, hi = np.quantile(d_boot, [alpha / 2, 1 - alpha / 2])
        unit_se = float(np.std(d_boot, ddof=1))
        if m.micro:
            mde_paired = z * unit_se
        else:
            d_c = mean_c[name] - mean_c[baseline]  # (C, 2): summed differences, unit counts
            var = _cluster_var(np.stack([d_c[:, 0], mean_c[name][:, 1]], axis=1), diff, n_units)
            mde_paired = z * math.sqrt(var / n_units)
        seed_se, total_low, total_high, mde_total = _with_seeds(diff, unit_se, g, b_group, alpha, power)
        p = exceed[name] / n_drawn if exact else (1 + exceed[name]) / (1 + n_drawn)
        rows.append(ComparisonRow(
            name=name, n_seeds=len(g.values), value=g.value, diff=diff, rel=_rel(diff, b_group.value),
            ci_low=float(lo), ci_high=float(hi), p_value=float(min(1.0, p)), p_exact=exact, unit_se=unit_se,
            seed_sd=g.seed_sd, seed_se_diff=seed_se, mde_paired=float(mde_paired),
            mde_paired_rel=_rel(mde_paired, b_group.value), mde_planning=z * math.sqrt(se_b ** 2 + se_m[name] ** 2),
            mde_planning_rel=_rel(z * math.sqrt(se_b ** 2 + se_m[name] ** 2), b_group.value),
            ci_total_low=total_low, ci_total_high=total_high, mde_total=mde_total,
        ))
    return Comparison(
        metric=metric, metric_kind=m.kind, baseline=baseline, baseline_value=base_value, n_units=n_units,
        n_clusters=n_clusters, groups=groups, rows=rows, mde_planning=mde_planning,
        mde_planning_rel=_rel(mde_planning, base_value),
        settings={"n_boot": n_boot, "n_perm": n_perm, "seed": seed, "alpha": alpha, "power": power,
                  **({"dropped_units": dropped} if shared else {}),
                  **({"deterministic": deterministic} if deterministic else {})},
    )


def _check_deterministic(names: Sequence[str], groups_evs: dict[str, list]) -> list[str]:
    """The methods declared deterministic, checked: each is among the methods and given as one run."""
    names = sorted(set(names))
    for name in names:
        if name not in groups_evs:
            raise ParameterError("deterministic", repr(name), f"not among the methods: {', '.join(groups_evs)}")
        if len(groups_evs[name]) != 1:
            raise ParameterError("deterministic", repr(name), f"{len(groups_evs[name])} runs given; a method no seed varies is "
                                 "compared from one run (several would measure a seed spread instead)")
    return names


def _with_seeds(diff: float, unit_se: float, g: GroupSummary, b: GroupSummary, alpha: float, power: float,
                n: int | None = None):
    """What training seeds add to a row: the seed SE of Δ, the units + seeds interval and its MDE
    (``_seed_terms``), with the groups' own seed counts or, for planning, ``n`` seeds on each side.
    All None unless both sides have a seed spread (≥ 2 seeds)."""
    if g.seed_sd is None or b.seed_sd is None:
        return None, None, None, None
    return _seed_terms(diff, unit_se, g.seed_sd, n or len(g.values), b.seed_sd, n or len(b.values), alpha, power)


def _seed_terms(diff: float, unit_se: float, sd_m: float, n_m: int, sd_b: float, n_b: int, alpha: float, power: float):
    """Seed SE of Δ = sqrt(sd_m²/n_m + sd_b²/n_b); the interval Δ ± t_{1-α/2}·sqrt(unit SE² + seed SE²) and
    its MDE (t_{1-α/2} + t_power)·sqrt(…), degrees of freedom by Welch–Satterthwaite (the unit part, from
    thousands of units, counts as exact)."""
    var_m, var_b = sd_m ** 2 / n_m, sd_b ** 2 / n_b
    low, high, mde, _ = _t_interval(diff, unit_se, [(var_m, n_m - 1), (var_b, n_b - 1)], alpha, power)
    return math.sqrt(var_m + var_b), low, high, mde


def _t_interval(diff: float, unit_se: float, parts: list[tuple[float, int]], alpha: float, power: float):
    """Δ ± t_{1-α/2,df}·sqrt(unit SE² + Σ var) and the MDE (t_{1-α/2,df} + t_{power,df})·sqrt(…), where
    ``parts`` are (variance of Δ's seed part, its degrees of freedom) and df comes from
    Welch–Satterthwaite (the unit part, from many units, counts as exact). Returns (low, high, mde, df)."""
    from scipy.stats import t as student_t

    total_var = unit_se ** 2 + sum(v for v, _ in parts)
    denom = sum(v ** 2 / k for v, k in parts if v)
    df = total_var ** 2 / denom if denom > 0 else math.inf
    se = math.sqrt(total_var)
    half = float(student_t.ppf(1 - alpha / 2, df)) * se
    mde = float(student_t.ppf(1 - alpha / 2, df) + student_t.ppf(power, df)) * se
    return diff - half, diff + half, mde, df


def seed_paired(comparison: Comparison, name: str, n: int | None = None) -> dict | None:
    """Method ``name`` against the baseline with the seed spread taken *paired by seed*.

    For designs in which seed s of the method and seed s of the baseline share whatever the seed fixes
    (in a tuning study, the pool and the sampler's first proposals; in training, the data order and the
    initialisation), the seeds are blocks: what varies from seed to seed is the per-seed difference
    Δ_s = method_s − baseline_s, not each side on its own (``ci_total_*`` treats the two sides as
    independent, which misstates the spread when a seed moves both the same way, or opposite ways).
    Returns ``per_seed`` {seed: Δ_s}, ``seed_se`` = sd(Δ_s)/√n, the interval Δ ± t·sqrt(unit SE² +
    seed_se²) with n − 1 degrees of freedom for the seed part (Welch–Satterthwaite), its MDE at the
    comparison's power, and ``df``. The unit SE is the paired bootstrap SD of the seed-averaged Δ, which
    already holds some of the per-seed spread, so the interval errs on the wide side. None unless the
    method and the baseline ran the same seeds, at least 2.

    ``n`` plans: the same figures as if ``n`` seeds had run with the spread of Δ_s seen here (for the
    MDE of a larger study; the unit SE is kept, so the MDE falls towards the paired MDE over units)."""
    if n is not None and (not isinstance(n, int) or n < 2):
        raise LeantuneError(f"seeds {n!r}: give a seed count of at least 2 (a seed spread needs two runs)")
    g, b = comparison.groups[name], comparison.groups[comparison.baseline]
    if sorted(g.seeds) != sorted(b.seeds) or len(set(g.seeds)) != len(g.seeds) or len(g.seeds) < 2:
        return None
    base = dict(zip(b.seeds, b.values))
    per_seed = {s: v - base[s] for s, v in zip(g.seeds, g.values)}
    n, row, s = n or len(per_seed), comparison.row(name), comparison.settings
    seed_se = float(np.std(list(per_seed.values()), ddof=1)) / math.sqrt(n)
    low, high, mde, df = _t_interval(row.diff, row.unit_se, [(seed_se ** 2, n - 1)], s["alpha"], s["power"])
    return {"per_seed": per_seed, "seed_se": seed_se, "low": low, "high": high, "mde": mde, "df": df, "n": n}


def seed_plan(comparison: Comparison, seeds: Sequence[int]) -> dict[str, list[float | None]]:
    """For each method of ``comparison`` (a pilot), the *MDE units + seeds* it would have with ``n``
    seeds per method and baseline, for each ``n`` in ``seeds``, on the same test units: the pilot's unit
    SE and seed SDs, with the seed part divided by ``n`` (as ``compare`` computes ``mde_total``). None
    for a method whose pilot lacks a seed spread on either side (fewer than 2 seeds). The pilot's unit SE
    is kept as it is; averaging more seeds usually lowers it a little, so the figures err on the large side.
    Read them against the size of difference worth finding: where even many seeds stay above it, only
    more test units help (the floor is the paired MDE over units, ``mde_paired``)."""
    bad = [n for n in seeds if not isinstance(n, int) or n < 2]
    if bad or not seeds:
        raise LeantuneError(f"seeds {list(seeds)}: give seed counts of at least 2 (a seed spread needs two runs)")
    s, base = comparison.settings, comparison.groups[comparison.baseline]
    return {r.name: [_with_seeds(r.diff, r.unit_se, comparison.groups[r.name], base, s["alpha"], s["power"], n=n)[3]
                     for n in seeds] for r in comparison.rows}


def seed_plan_markdown(comparison: Comparison, seeds: Sequence[int]) -> str:
    """``seed_plan`` as a markdown table (one row per method: pilot seeds, Δ, the MDE at each seed count,
    and the floor ``mde_paired``), with a note when a method has no seed spread to plan from."""
    plan = seed_plan(comparison, seeds)
    lines = ["| method | pilot seeds | Δ (pilot) | " + " | ".join(f"{n} seeds" for n in seeds) + " | floor: paired MDE over units |",
             "|---|---:|---:|" + "---:|" * len(seeds) + "---:|"]
    for r in comparison.rows:
        cells = " | ".join("–" if v is None else f"{v:.4f}" for v in plan[r.name])
        lines.append(f"| {r.name} | {r.n_seeds} | {r.diff:+.4f} | {cells} | {r.mde_paired:.4f} |")
    if any(v is None for vs in plan.values() for v in vs):
        lines += ["", "–: the pilot has fewer than 2 seeds on that side, so no seed spread to plan from."]
    return "\n".join(lines) + "\n"


def _cluster_var(totals: np.ndarray, mean: float, n_units: int) -> float:
    """Per-unit variance for a ratio mean over clusters: n * Var(mean), cluster-robust.

    ``totals`` (C, 2) holds per-cluster sums and unit counts. With one unit per cluster this is the
    sample variance (ddof 1) of the unit values.
    """
    c = totals.shape[0]
    if c < 2:
        return 0.0
    resid = totals[:, 0] - mean * totals[:, 1]
    return float(c / (c - 1) * np.sum(resid ** 2) / n_units)


def _rel(x: float, base: float) -> float | None:
    return None if base == 0 else float(x / base)


def mean_interval(values: Sequence[float], alpha: float = 0.05, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of per-unit ``values`` with a percentile bootstrap interval (1 − alpha)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise LeantuneError("no units to average")
    rng = np.random.default_rng(seed)
    means = np.concatenate([counts @ x / x.size for counts in _resample_chunks(x.size, n_boot, rng)])
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(x.mean()), float(low), float(high)


def metric_interval(evaluation: Evaluation, metric: str, alpha: float = 0.05, n_boot: int = 10_000,
                    seed: int = 0) -> tuple[float, float, float]:
    """(value, low, high): one run's ``metric`` with a percentile bootstrap interval (1 − alpha) over
    its clusters (a product's questions are drawn together), for setting a result beside a
    published figure; micro metrics (F1, precision, recall) are recomputed from each resample's
    totals, as ``compare`` does for differences."""
    if not evaluation.rows:
        raise LeantuneError(f"{evaluation.label or evaluation.path}: no units")
    m = _resolve_metric(metric, [evaluation])
    totals = _cluster_totals([evaluation], m)[1][0]  # (clusters, k)
    value = float(m.stat(totals.sum(axis=0)))
    rng = np.random.default_rng(seed)
    draws = np.concatenate([m.stat(counts @ totals) for counts in _resample_chunks(len(totals), n_boot, rng)])
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return value, float(low), float(high)
