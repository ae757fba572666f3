"""Forest plot of a paired comparison: one row per method, its difference to the baseline and the CI."""
from __future__ import annotations

from pathlib import Path


SEEDS_STYLE = dict(color="tab:purple", alpha=0.3, zorder=1)  # the units + seeds interval, drawn under the units one


def _seeds_bar(ax, r, y, linewidth: float, label: str | None = None) -> bool:
    """Draw row ``r``'s units + seeds interval at height ``y`` when it has one; True if drawn."""
    if r.ci_total_low is None:
        return False
    ax.hlines(y, r.ci_total_low, r.ci_total_high, linewidth=linewidth, label=label, **SEEDS_STYLE)
    return True


def forest_plot(comparison, path) -> Path:
    """Write a PNG forest plot of ``comparison`` (``leantune.evaluation.compare.Comparison``) to ``path``.

    One row per non-baseline method: the point is the difference to the baseline, the bar its
    paired bootstrap interval; a wide light bar under it (in the legend) the units + seeds interval where
    both sides ran 2 or more seeds; a vertical line marks zero (no difference).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import save_figure

    path = Path(path)
    rows = list(comparison.rows)
    level = round(100 * (1 - comparison.settings.get("alpha", 0.05)))
    fig, ax = plt.subplots(figsize=(7.0, 1.2 + 0.45 * max(len(rows), 1)))
    try:
        ys = list(range(len(rows)))[::-1]  # first method on top
        seeded = False
        for y, r in zip(ys, rows):
            seeded |= _seeds_bar(ax, r, y, linewidth=8, label=None if seeded else f"units + seeds ({level}% CI)")
            significant = r.ci_low > 0 or r.ci_high < 0
            color = "tab:blue" if significant else "tab:gray"
            ax.errorbar([r.diff], [y], xerr=[[r.diff - r.ci_low], [r.ci_high - r.diff]], fmt="o", color=color,
                        ecolor=color, capsize=4, markersize=6)
        if seeded:
            ax.legend(loc="best", fontsize=7)
        ax.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_yticks(ys)
        ax.set_yticklabels([f"{r.name} ({r.n_seeds} seed{'s' if r.n_seeds != 1 else ''})" for r in rows])
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_xlabel(f"Δ {comparison.metric} vs {comparison.baseline} ({level}% paired bootstrap CI)")
        units = f"{comparison.n_units} units"
        if comparison.n_clusters != comparison.n_units:
            units += f", {comparison.n_clusters} clusters"
        ax.set_title(f"{comparison.metric}: methods vs {comparison.baseline} "
                     f"({comparison.baseline_value:.4f}), {units}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        save_figure(fig, path)
    finally:
        plt.close(fig)  # also when drawing failed
    return path


def grouped_forest_plot(grouped, path) -> Path:
    """Write a PNG forest plot of ``grouped`` (``leantune.evaluation.compare_groups.GroupedComparison``):
    one panel per method against the baseline, one row per group (largest on top) and the overall
    difference as a shaded band. Blue: the group's adjusted q is below α; gray: it is not. A wide light bar
    under a row (in the legend): its units + seeds interval, where both sides ran 2 or more seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import save_figure

    path = Path(path)
    o = grouped.overall
    alpha = o.settings.get("alpha", 0.05)
    level = round(100 * (1 - alpha))
    methods, groups = grouped.methods, list(grouped.groups)
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods) + 2.0, 1.2 + 0.24 * max(len(groups), 1)),
                             sharey=True, squeeze=False)
    try:
        ys = list(range(len(groups)))[::-1]  # largest group on top
        for ax, name in zip(axes[0], methods):
            seeded = False
            total = o.row(name)
            ax.axvspan(total.ci_low, total.ci_high, color="tab:orange", alpha=0.15, label=f"all {grouped.by}s ({level}% CI)")
            ax.axvline(total.diff, color="tab:orange", linewidth=1.0)
            for y, group in zip(ys, groups):
                r = grouped.groups[group].row(name)
                seeded |= _seeds_bar(ax, r, y, linewidth=4, label=None if seeded else f"units + seeds ({level}% CI)")
                color = "tab:blue" if grouped.q_values[group][name] < alpha else "tab:gray"
                ax.errorbar([r.diff], [y], xerr=[[r.diff - r.ci_low], [r.ci_high - r.diff]], fmt="o", color=color,
                            ecolor=color, capsize=2, markersize=3, linewidth=0.8)
            ax.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
            ax.set_title(f"{name} − {o.baseline}", fontsize=9)
            ax.set_xlabel(f"Δ {o.metric}", fontsize=8)
            ax.grid(axis="x", alpha=0.3)
            ax.tick_params(labelsize=7)
            ax.legend(loc="lower left", fontsize=7)
        axes[0][0].set_yticks(ys)
        axes[0][0].set_yticklabels([f"{g} ({grouped.groups[g].n_units})" for g in groups])
        axes[0][0].set_ylim(-0.7, len(groups) - 0.3)
        fig.suptitle(f"{o.metric} per {grouped.by} vs {o.baseline}: paired {level}% CI; blue where the "
                     f"Benjamini–Hochberg q < {alpha:g}", fontsize=9)
        fig.tight_layout()
        save_figure(fig, path)
    finally:
        plt.close(fig)  # also when drawing failed
    return path
