"""From finished curve runs to a table, a fit, a saturation point and the zero-shot gain."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_path, json_safe, write_json
from .fit import bootstrap_saturation, fit_curve

TABLE_FIELDS = ("size", "seed", "method", "status", "train_steps", "tokens_seen", "train_s", "eval_s", "wall_s", "machine", "threads")


@dataclass
class CurveAnalysis:
    metric: str
    zero_shot: float | None
    by_size: dict  # size -> {"mean", "std", "min", "max", "n"} and, with per-unit results, "ci_low", "ci_high"
    fit: dict | None
    saturation: dict | None
    gain_at: dict  # size -> {"measured": mean - zero-shot | None, "fitted": fit(size) - zero-shot | None}
    note: str = ""

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def table_rows(rows: list[dict], metric_keys: list[str]) -> list[dict]:
    out = []
    for r in sorted(rows, key=lambda r: (r["size"], -1 if r["seed"] is None else r["seed"])):
        train = r.get("train") or {}
        row = {
            "size": r["size"], "seed": "" if r["seed"] is None else r["seed"], "method": r.get("method", ""),
            "status": r.get("status", ""), "train_steps": train.get("steps", ""), "tokens_seen": train.get("tokens_seen", ""),
            "train_s": _round(train.get("wall_s")), "eval_s": _round(r.get("eval_s")), "wall_s": _round(r.get("wall_s")),
            "machine": r.get("machine", ""), "threads": r.get("threads", ""),  # "" for runs made before they were recorded
        }
        row.update({k: r["metrics"].get(k, "") for k in metric_keys})
        out.append(row)
    return out


def machines(rows: list[dict]) -> str:
    """Where a curve's runs ran, for the line beside its timings: each machine with its run count (and
    torch threads), then the runs made before runs recorded their machine."""
    from collections import Counter

    made = Counter((r["machine"], r.get("threads")) for r in rows if r.get("machine"))
    parts = [f"{m}, {t} thread{'s' if t != 1 else ''} ({n} run{'s' if n != 1 else ''})"
             for (m, t), n in sorted(made.items(), key=lambda kv: -kv[1])]
    unknown = sum(1 for r in rows if not r.get("machine"))
    if unknown:
        parts.append(f"{unknown} run{'s' if unknown != 1 else ''} made before runs recorded their machine")
    return "; ".join(parts)


def _round(v):
    return "" if v is None else round(float(v), 1)


def metric_keys(rows: list[dict]) -> list[str]:
    keys: list[str] = []
    for r in rows:
        for k in r["metrics"]:
            if k not in keys:
                keys.append(k)
    return keys


def analyse(
    rows: list[dict], metric: str, gain_threshold: float = 0.01, bootstrap: int = 1000, gain_sizes=(200,), seed: int = 0,
    ceiling: float | None = 1.0, unit_draws=None,
) -> CurveAnalysis:
    """Per-size summary, fit, saturation point and zero-shot gain of a curve's ``rows``. With
    ``unit_draws`` (``paired.unit_draws``: the trained runs' ``metric`` in bootstrap resamples of the
    test units) the saturation interval resamples the test units as well as the seeds, and each trained
    size gets a 95% interval over the test units for its seed mean (``ci_low``, ``ci_high``)."""
    zero = [r["metrics"][metric] for r in rows if r["size"] == 0 and metric in r["metrics"]]
    zero_shot = float(zero[0]) if zero else None
    trained = [r for r in rows if r["size"] > 0 and metric in r["metrics"]]
    by_size = {}
    for size in sorted({r["size"] for r in rows}):
        vals = np.array([r["metrics"][metric] for r in rows if r["size"] == size and metric in r["metrics"]], dtype=float)
        if len(vals):
            by_size[size] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                             "min": float(vals.min()), "max": float(vals.max()), "n": int(len(vals))}
    fit = saturation = None
    note = ""
    if trained:
        sizes = [r["size"] for r in trained]
        values = [r["metrics"][metric] for r in trained]
        seeds = [r["seed"] for r in trained]
        fittable = {size for size, value in zip(sizes, values) if np.isfinite(value)}  # fit_curve drops non-finite values
        if len(fittable) > 1:
            fitted = fit_curve(sizes, values, ceiling=ceiling)
            fit = fitted.as_dict()
            saturation = bootstrap_saturation(sizes, values, seeds, gain_threshold, bootstrap, rng=np.random.default_rng(seed), fit=fitted,
                                              ceiling=ceiling, unit_draws=unit_draws).as_dict()
        else:  # a flat line through one size would claim saturation at any size
            note = (f"one trained size ({next(iter(fittable))}): no fit and no saturation point (they need two sizes > 0 or more)"
                    if fittable else f"no trained run has a finite {metric}: nothing to fit")
        if unit_draws is not None:  # (checked above: one column per trained run) each size's seeds averaged in every resample
            draws, run_sizes = np.asarray(unit_draws, dtype=np.float64), np.array(sizes)
            for size in sorted(set(sizes)):
                low, high = np.quantile(draws[:, run_sizes == size].mean(axis=1), [0.025, 0.975])
                by_size[size].update(ci_low=float(low), ci_high=float(high))
    else:
        note = "no trained runs: nothing to fit"
    gain_at = {}
    for size in gain_sizes:
        measured = by_size.get(size, {}).get("mean")
        entry = {"measured": None, "fitted": None}
        if zero_shot is not None:
            if measured is not None:
                entry["measured"] = measured - zero_shot
            if fit is not None:
                from .fit import CurveFit

                entry["fitted"] = float(CurveFit(**fit).predict(size)) - zero_shot
        gain_at[size] = entry
    return CurveAnalysis(metric, zero_shot, by_size, fit, saturation, gain_at, note)


def write_table(out: Path, rows: list[dict], analysis: CurveAnalysis, settings: dict) -> tuple[Path, Path]:
    keys = metric_keys(rows)
    table = table_rows(rows, keys)
    csv_path = out / "results.csv"
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*TABLE_FIELDS, *keys])
        writer.writeheader()
        writer.writerows(table)
    json_path = out / "results.json"
    write_json(json_path, json_safe({"settings": settings, "analysis": analysis.as_dict(), "runs": table}))
    return csv_path, json_path


def describe(analysis: CurveAnalysis) -> list[str]:
    """Human-readable lines: per-size means, fit, saturation and the zero-shot gain."""
    m = analysis.metric
    lines = []
    if analysis.zero_shot is not None:
        lines.append(f"zero-shot {m}: {analysis.zero_shot:.4f}")
    for size, s in analysis.by_size.items():
        if size:
            ci = f"; 95% CI over test units [{s['ci_low']:.4f}, {s['ci_high']:.4f}]" if "ci_low" in s else ""
            lines.append(f"  n={size:>6}: {m} {s['mean']:.4f} ± {s['std']:.4f} (min {s['min']:.4f}, max {s['max']:.4f}, {s['n']} seed{'s' if s['n'] != 1 else ''}{ci})")
    if analysis.fit:
        f = analysis.fit
        if f["kind"] == "power":
            p = f["params"]
            lines.append(f"fit: {m}(n) = {p['a']:.4f} - {p['b']:.4f} * n^(-{p['c']:.4f})  (rmse {f['rmse']:.4f}, {f['n_points']} points)")
        else:
            p = f["params"]
            lines.append(f"fit: fell back to log-linear {m}(n) = {p['a']:.4f} + {p['s']:.4f} * log2(n)  (reason: {f['fallback_reason']})")
    if analysis.saturation:
        s = analysis.saturation
        where = "beyond the largest size (extrapolated)" if s["beyond_data"] else "within the measured sizes"
        lines.append(
            f"saturation (gain per doubling < {s['threshold']}): n* = {_fmt(s['point'])}, {int(s['level'] * 100)}% bootstrap "
            f"interval [{_fmt(s['low'])}, {_fmt(s['high'])}] over {s['bootstrap']} resamples of {s.get('over', 'seeds')} "
            f"({s['bootstrap_power']} power-law fits, {s['bootstrap_infinite']} never saturate); {where}"
            + (_single_seed_note(analysis.by_size) if s.get("over", "seeds") == "seeds" else "")
        )
    for size, g in analysis.gain_at.items():
        parts = []
        if g["measured"] is not None:
            parts.append(f"measured {g['measured']:+.4f}")
        if g["fitted"] is not None:
            trained = [n for n in analysis.by_size if n > 0]
            inside = bool(trained) and min(trained) <= size <= max(trained)
            parts.append(f"fitted {g['fitted']:+.4f}" + ("" if inside else " (extrapolated)"))
        if parts:
            lines.append(f"gain at n={size} over zero-shot: " + ", ".join(parts))
    if analysis.note:
        lines.append(analysis.note)
    return lines


def _single_seed_note(by_size: dict) -> str:
    single = [n for n, s in by_size.items() if n and s["n"] < 2]
    if not single:
        return ""
    if len(single) == len([n for n in by_size if n]):
        return "; one seed per size, so the interval is degenerate"
    return f"; size(s) {', '.join(map(str, single))} have one seed and add no spread"


def _fmt(v) -> str:
    v = float(v)
    return "inf" if math.isinf(v) else f"{v:.0f}"
