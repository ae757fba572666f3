"""Compare learning curves of different selection methods at equal subset sizes.

Reads the ``benchmarks/results/<name>.json`` files that ``bench_curve.py`` writes (one per method)
and writes a markdown table (per size, each method's mean ± seed spread of the chosen metrics, and
the difference to the first curve; blanks where a curve did not measure a size) and a plot with one
panel per metric, one line per method. Means ± seed spread only, no paired interval: it is kept for
the early reports whose runs wrote no per-unit results (``curve-random``, ``curve-effort``). For curves
that have them, ``leantune compare-curves CURVE_A CURVE_B`` gives each size's paired difference with
its intervals and minimum detectable difference.

    python3 benchmarks/compare_curves.py curve-random curve-effort --name curve-random-vs-effort
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

from _common import RESULTS  # first: puts the repo on sys.path, the hub offline

from leantune.io import atomic_path, read_json  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("curves", nargs="+", help="result names in benchmarks/results (without .json); the first is the reference")
    p.add_argument("--metrics", default="accuracy,f1,valued_accuracy,na_accuracy")
    p.add_argument("--name", default="curve-compare", help="output stem: benchmarks/results/<name>.md")
    return p.parse_args(argv)


def per_size(runs: list[dict], metric: str) -> dict[int, np.ndarray]:
    out: dict[int, list[float]] = {}
    for r in runs:
        if r.get("metrics") and metric in r["metrics"]:
            out.setdefault(int(r["size"]), []).append(float(r["metrics"][metric]))
    return {n: np.asarray(v) for n, v in out.items()}


def cell(values: np.ndarray | None) -> str:
    if values is None:
        return ""
    if len(values) == 1:
        return f"{values[0]:.3f} (1)"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f} ({len(values)})"


def compare(curves: dict[str, dict], metrics: list[str]) -> list[str]:
    names = list(curves)
    ref = names[0]
    lines = []
    for metric in metrics:
        tables = {n: per_size(curves[n]["runs"], metric) for n in names}
        sizes = sorted(set().union(*(t.keys() for t in tables.values())))
        header = ["size", *[f"{n} ({curves[n]['settings']['method']})" for n in names], *[f"{n} − {ref}" for n in names[1:]]]
        lines += [f"### {metric} (mean ± seed std (seeds))", "", "| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
        for n in sizes:
            row = [str(n), *[cell(tables[name].get(n)) for name in names]]
            for name in names[1:]:
                a, b = tables[ref].get(n), tables[name].get(n)
                row.append("" if a is None or b is None else f"{b.mean() - a.mean():+.3f}")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return lines


def plot(curves: dict[str, dict], metrics: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        all_sizes = set()
        for i, (name, data) in enumerate(curves.items()):
            table = per_size(data["runs"], metric)
            sizes = sorted(n for n in table if n > 0)
            all_sizes.update(sizes)
            mean = [table[n].mean() for n in sizes]
            ax.plot(sizes, mean, "o-", color=f"C{i}", label=f"{data['settings']['method']}")
            ax.fill_between(sizes, [table[n].min() for n in sizes], [table[n].max() for n in sizes], color=f"C{i}", alpha=0.15)
            if 0 in table and i == 0:
                ax.axhline(table[0].mean(), color="gray", ls="--", label="zero-shot")
        ax.set_xscale("log")
        ax.set_xticks(sorted(all_sizes))
        ax.set_xticklabels([str(n) for n in sorted(all_sizes)], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("training products (log scale)")
        ax.set_title(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("mean over seeds; band = seed range", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv=None) -> None:
    args = parse_args(argv)
    curves = {}
    for name in args.curves:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            raise SystemExit(f"{path}: no such curve result (run benchmarks/bench_curve.py --name {name} first)")
        curves[name] = read_json(path)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    command = "python3 benchmarks/compare_curves.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    lines = [f"# {args.name}: learning curves compared at equal sizes", "", f"Reproduce: `{command}`", ""]
    for name, data in curves.items():
        lines.append(f"- `{name}`: method {data['settings']['method']}, `{data['command']}`")
    lines += ["", "Size 0 is the zero-shot base model (one evaluation, no seed).", "", *compare(curves, metrics)]
    png = plot(curves, metrics, RESULTS / f"{args.name}.png")
    lines.append(f"Plot: `{png.name}`.")
    out = RESULTS / f"{args.name}.md"
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
