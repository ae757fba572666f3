"""How rough are the per-attribute curves' selection-adjusted intervals? (``leantune.curves.breakdown``)

The last steps picked out by their 95% interval are redrawn at the false-coverage-rate level 1 − α·R/m,
whose bounds sit in the outer fraction of a percent of the bootstrap resamples. This redraws them for
a committed curve over several bootstrap seeds, once from the 95% intervals' own resamples (1,000: a
handful beyond each bound) and once from as many as ``breakdown_curves`` draws by default (50 beyond each
bound), and prints how far each adjusted bound moves with the seed. Reads only committed per-question
rows; trains nothing.

    python3 benchmarks/bench_breakdown_tails.py --report curve-question-gemma3-270m --seeds 0 1 2 3 4 5
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import time
from pathlib import Path

from _common import RESULTS, ROOT  # first: puts the repo on sys.path, the hub offline

from leantune.curves import breakdown_curves  # noqa: E402
from leantune.curves.breakdown import TAIL_DRAWS  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", default="curve-question-gemma3-270m",
                   help="a bench_curve.py report: its name in benchmarks/results, or the path of its .json")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5], help="bootstrap seeds")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--out", default=None, help="markdown file to write (default: print only)")
    args = p.parse_args()
    path = Path(args.report) if args.report.endswith(".json") else RESULTS / f"{args.report}.json"
    if not path.is_file():
        raise SystemExit(f"--report {args.report}: no file {path}")
    report = json.loads(path.read_text())
    work = shlex.split(report["command"])
    folder = ROOT / work[work.index("--work") + 1]
    rows = report["runs"]
    table: dict[str, dict[int, dict[int, tuple[float, float]]]] = {}
    boots, levels = {}, set()
    t0 = time.perf_counter()
    for tail in (0, TAIL_DRAWS):
        for seed in args.seeds:
            curves, why = breakdown_curves(folder, rows, "f1", n_boot=args.n_boot, seed=seed, tail_draws=tail)
            if curves is None:
                raise SystemExit(f"--report {args.report}: no per-attribute curves ({why})")
            boots[tail] = curves.adj_boot
            levels.add(round(100 * (1 - curves.adj_alpha), 2))
            for g in curves.groups:
                if g.last_step and g.last_step.adj_low is not None:
                    table.setdefault(g.group, {}).setdefault(tail, {})[seed] = (g.last_step.adj_low, g.last_step.adj_high)
    lines = [f"# Selection-adjusted per-attribute intervals over bootstrap seeds: {args.report}", "",
             f"Reproduce: `python3 benchmarks/bench_breakdown_tails.py --report {args.report} --seeds {' '.join(map(str, args.seeds))}"
             + (f" --out {Path(args.out).as_posix()}`" if args.out else "`"), "",
             f"Last step {curves.groups[0].last_step.against:,} → {curves.groups[0].last_step.size:,}; adjusted level "
             f"{' / '.join(f'{x:.2f}%' for x in sorted(levels))} (1 − α·R/m; more than one where the seeds flag different "
             "numbers of steps). Each cell: the lowest and highest bound "
             f"over bootstrap seeds {', '.join(map(str, args.seeds))}. {time.perf_counter() - t0:.1f} s in all "
             f"(load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}, shared with other jobs).", "",
             "| attribute | resamples | lower bound (min … max) | upper bound (min … max) | seeds where the lower bound > 0 |",
             "|---|---:|---|---|---:|"]
    for group, by_tail in table.items():
        for tail, by_seed in by_tail.items():
            lows = [v[0] for v in by_seed.values()]
            highs = [v[1] for v in by_seed.values()]
            lines.append(f"| {group} | {boots[tail]:,} | {min(lows):+.3f} … {max(lows):+.3f} | {min(highs):+.3f} … {max(highs):+.3f} "
                         f"| {sum(x > 0 for x in lows)} of {len(lows)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


if __name__ == "__main__":
    main()
