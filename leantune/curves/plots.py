"""PNG plots of a learning curve (matplotlib, no display needed)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..io import save_figure


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    return save_figure(fig, path, dpi=120, tight=True)


def _label_sizes(ax, sizes) -> None:
    """Ticks at the measured sizes (a log axis alone labels only powers of ten)."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.set_xticks(list(sizes))
    ax.set_xticklabels([str(s) for s in sizes], fontsize=8)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _step_floor(trained: list[dict]) -> tuple[int, int] | None:
    """(largest size, steps) of the smallest sizes that all trained the same number of steps, when
    more than one did: there the curve varies the data at a fixed compute budget."""
    steps = {}
    for r in trained:
        steps.setdefault(r["size"], set()).add((r.get("train") or {}).get("steps"))
    sizes = sorted(steps)
    first = steps[sizes[0]]
    if len(first) != 1 or None in first:
        return None
    same = [n for n in sizes if steps[n] == first]
    contiguous = [n for i, n in enumerate(same) if n == sizes[i]]
    return (contiguous[-1], next(iter(first))) if len(contiguous) > 1 else None


def plot_curve(rows: list[dict], analysis, path: Path, title: str = "", subtitle: str = "", baselines: dict | None = None) -> Path:
    """Metric vs training size: every seed, the mean with its min-max band and (where the analysis has
    them) its 95% interval over the test units, the fit and n*; the zero-shot line and any ``baselines``
    ({label: value}, e.g. answering "n/a" everywhere) as flat lines."""
    from .fit import CurveFit

    plt = _plt()
    metric = analysis.metric
    fig, ax = plt.subplots(figsize=(7, 4.5))
    trained = [r for r in rows if r["size"] > 0 and metric in r["metrics"]]
    if trained:
        ax.scatter([r["size"] for r in trained], [r["metrics"][metric] for r in trained], s=14, alpha=0.5, color="C0", label="runs (one per seed)")
        sizes = sorted(s for s in analysis.by_size if s > 0)
        mean = [analysis.by_size[s]["mean"] for s in sizes]
        ax.plot(sizes, mean, "o-", color="C0", label="mean over seeds")
        ax.fill_between(sizes, [analysis.by_size[s]["min"] for s in sizes], [analysis.by_size[s]["max"] for s in sizes], color="C0", alpha=0.15, label="seed range")
        ci = [s for s in sizes if "ci_low" in analysis.by_size[s]]
        if ci:
            mid = np.array([analysis.by_size[s]["mean"] for s in ci])
            bars = [mid - [analysis.by_size[s]["ci_low"] for s in ci], [analysis.by_size[s]["ci_high"] for s in ci] - mid]
            ax.errorbar(ci, mid, yerr=np.clip(bars, 0, None), fmt="none", ecolor="C0", capsize=3, lw=1,
                        label="95% CI over test units (seeds averaged)")
        if analysis.fit:
            fit = CurveFit(**analysis.fit)
            grid = np.geomspace(min(sizes), max(sizes) * 2, 200)
            ax.plot(grid, fit.predict(grid), "--", color="C1", label=f"fit ({fit.kind})")
        sat = analysis.saturation
        if sat and math.isfinite(sat["point"]) and min(sizes) / 2 <= sat["point"] <= max(sizes) * 2:
            ax.axvline(sat["point"], color="C2", ls=":", label=f"saturation n*≈{sat['point']:.0f}")
        floor = _step_floor(trained)
        if floor:
            ax.axvspan(min(sizes) / 1.15, floor[0] * 1.15, color="gray", alpha=0.08,
                       label=f"same {floor[1]} optimizer steps: data varies, compute does not")
        ax.set_xscale("log")
        _label_sizes(ax, sizes)
    if analysis.zero_shot is not None:
        ax.axhline(analysis.zero_shot, color="gray", ls="--", label=f"zero-shot {analysis.zero_shot:.3f}")
    for i, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, color=f"C{4 + i}", ls=":", label=f"{name} {value:.3f}")
    ax.set_xlabel("training units (log scale)")
    ax.set_ylabel(metric)
    title = title or f"{metric} vs training size"
    ax.set_title(f"{title}\n{subtitle}" if subtitle else title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_breakdown(rows: list[dict], prefix: str, path: Path, top: int = 12, support_prefix: str | None = None, title: str = "") -> Path | None:
    """One line per breakdown key (e.g. per attribute): mean over seeds vs size; the ``top`` most frequent."""
    keys = sorted({k for r in rows for k in r["metrics"] if k.startswith(prefix)})
    if not keys:
        return None
    if support_prefix:
        support = {k: max((r["metrics"].get(support_prefix + k[len(prefix):], 0) for r in rows), default=0) for k in keys}
        keys = sorted(keys, key=lambda k: -support[k])[:top]
    else:
        keys = keys[:top]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    sizes = sorted({r["size"] for r in rows})
    # Size 0 (zero-shot) sits at the left edge of a symlog axis.
    for i, key in enumerate(keys):
        ys = [np.nanmean([r["metrics"].get(key, np.nan) for r in rows if r["size"] == s]) for s in sizes]
        ax.plot(sizes, ys, "o-", ms=3, color=plt.cm.tab20(i % 20), label=key[len(prefix):])
    ax.set_xscale("symlog", linthresh=max(1, min((s for s in sizes if s > 0), default=1)))
    _label_sizes(ax, sizes)
    ax.set_xlabel("training units (symlog; 0 = zero-shot)")
    ax.set_ylabel(prefix.rstrip("/").replace("_", " "))
    ax.set_title(title or f"{prefix.rstrip('/')} vs training size (top {len(keys)} by support)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    return _save(fig, path)


def plot_breakdown_bands(curves, path: Path, title: str = "", ncols: int = 4) -> Path:
    """One panel per group of ``curves`` (``BreakdownCurves``, e.g. per attribute): the seed-averaged
    metric at each size with its interval over the test products as a band, zero-shot at the left edge
    of a symlog axis; each panel names its test questions and its last step with that step's interval."""
    plt = _plt()
    n = len(curves.groups)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, 2.7 * nrows + 0.8), sharex=True, sharey=True, squeeze=False,
                             layout="constrained")
    level = round(100 * (1 - curves.alpha))
    gaining = set(curves.gaining())
    for ax, g in zip(axes.flat, curves.groups):
        xs = [p.size for p in g.points]
        ax.fill_between(xs, [p.ci_low for p in g.points], [p.ci_high for p in g.points], color="C0", alpha=0.2, lw=0)
        ax.plot(xs, [p.value for p in g.points], "o-", ms=3, color="C0")
        s = g.last_step
        step = "" if s is None else f"\nlast step {s.diff:+.2f} [{s.ci_low:+.2f}, {s.ci_high:+.2f}]"
        ax.set_title(f"{g.group} ({g.units} q.){step}", fontsize=8, color="C2" if g.group in gaining else "black")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    sizes = sorted({p.size for g in curves.groups for p in g.points})
    for ax in axes.flat:
        ax.set_xscale("symlog", linthresh=max(1, min((x for x in sizes if x > 0), default=1)))
        _label_sizes(ax, sizes)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel(curves.metric, fontsize=8)
    fig.suptitle((title + "\n" if title else "") + f"band: {level}% interval over the test products (seeds averaged); "
                 "green title: last step above zero after adjusting for the selection", fontsize=9)
    fig.supxlabel("training units (symlog; 0 = zero-shot)", fontsize=8)
    return _save(fig, path)


def plot_curve_gap(gap, path: Path) -> Path:
    """Two curves against each other (``CurveGap``): both curves' seed-averaged values at the sizes both
    measured (top), and B − A with its interval at each size (bottom; units + seeds where both sides ran
    2 or more seeds, else over the test units), zero-shot at the left edge of a symlog axis."""
    plt = _plt()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=[3, 2], layout="constrained")
    xs = [g.size for g in gap.gaps]
    top.plot(xs, [g.value_a for g in gap.gaps], "o-", ms=4, color="C0", label=gap.name_a)
    top.plot(xs, [g.value_b for g in gap.gaps], "s-", ms=4, color="C1", label=gap.name_b)
    top.set_ylabel(gap.metric)
    top.grid(alpha=0.3)
    top.legend(fontsize=8, loc="best")
    level = round(100 * (1 - gap.alpha))
    for g in gap.gaps:
        low, high = (g.total_low, g.total_high) if g.total_low is not None else (g.ci_low, g.ci_high)
        color = "C2" if g.clear() else "0.4"
        bottom.errorbar([g.size], [g.diff], yerr=[[g.diff - low], [high - g.diff]], fmt="o", ms=4, capsize=3, color=color)
    bottom.axhline(0, color="black", lw=0.8)
    bottom.set_ylabel(f"{gap.name_b} − {gap.name_a}")
    bottom.grid(alpha=0.3)
    linthresh = max(1, min((x for x in xs if x > 0), default=1))
    for ax in (top, bottom):
        ax.set_xscale("symlog", linthresh=linthresh)
        ax.set_xlim(-0.3 * linthresh if min(xs) == 0 else 0.8 * min(xs), 1.3 * max(xs))  # no empty negative side
        _label_sizes(ax, xs)
    bottom.tick_params(axis="x", labelrotation=45)
    bottom.set_xlabel("training units (symlog; 0 = zero-shot)")
    fig.suptitle(f"{gap.name_b} against {gap.name_a} ({gap.metric}), paired over {gap.n_units:,} test units\n"
                 f"bars: {level}% interval (units + seeds where both ran 2+ seeds); green: excludes zero", fontsize=9)
    return _save(fig, path)
