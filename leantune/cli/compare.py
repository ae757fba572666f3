"""``leantune compare`` (paired comparison of evaluation runs) and ``leantune power`` (test-set sizing)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .app import app, invocation

COMPARE_HELP = """Paired statistical comparison of evaluation runs on the same test units.

Each RUN is a run folder (with eval/per_unit.jsonl), an evaluation folder (with per_unit.jsonl) or a glob of them (quote it). Runs are grouped by method (settings.method in run.json, else --name, else the folder name); several runs of a method are its seeds and are averaged. Every run must have been evaluated on the identical units (same --test-users and --eval-seed), or, with --shared-units, is paired over the units all runs share.

For each method against the baseline: the difference, a 95% paired bootstrap interval over units (over products for attribute metrics), a two-sided paired permutation p-value, the spread from units and from seeds, and the minimum detectable effect at 80% power.

Writes OUT/comparison.md, OUT/comparison.json and OUT/forest.png. With --by attribute (attribute evaluations), the same comparison also runs within each attribute's questions, with Benjamini-Hochberg adjusted p-values (q) over all attributes and, where both sides ran 2 or more seeds, each attribute's units + seeds interval (for the attributes q picks out, redrawn at the false-coverage-rate adjusted level 1 - alpha*R/m their selection calls for), into OUT/by-attribute.md, .json and .png.

Example: leantune compare 'runs/run-games-*-b256-s*' --baseline random --metric recall@20 --with-base --out runs/compare-b256

Example: leantune compare runs/eval-a runs/eval-b --name a --name b --baseline a --metric f1 --by attribute --out runs/compare-ab
"""

POWER_HELP = """Minimum detectable effect of a test set: the smallest absolute difference of a 0/1-like per-unit metric (rate --rate) that two unpaired runs on --units units tell apart from zero (two-sided --alpha) with probability --power. Paired comparisons of correlated runs detect less; use this to size --test-users conservatively.

With --pilot DIR (a folder `leantune compare` wrote, with at least 2 seeds per method) it plans seeds instead: for each method of the pilot, the smallest difference the units + seeds interval would detect with each number of seeds in --seeds (per method and baseline), on the same test units. Where even many seeds stay above the difference worth finding, more test units are needed, not more seeds (the floor is the paired MDE over units).

Example: leantune power --rate 0.015 --units 2000

Example: leantune power --pilot benchmarks/results/sft-pruning/b200-f1 --seeds 3,5,10,20
"""


@app.command("compare", help=COMPARE_HELP)
def compare_cmd(
    runs: List[str] = typer.Argument(..., help="Run folders, evaluation folders or globs (quoted) of them."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Method every other method is compared to (default: 'random' if present, else the first method)."),
    metric: str = typer.Option("recall@20", "--metric", help="Per-unit column to compare (e.g. recall@20, ndcg@10, hits@20, correct), or micro f1/precision/recall for attribute runs."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for comparison.md/.json and forest.png (default: runs/compare-<metric>)."),
    with_base: bool = typer.Option(False, "--with-base", help="Add the base model's evaluation recorded in the first run's run.json as method 'base'."),
    names: List[str] = typer.Option([], "--name", help="Method name of each run, in order (repeat once per run after glob expansion; default: from run.json)."),
    boot: int = typer.Option(10000, "--boot", help="Bootstrap resamples for the confidence interval."),
    perm: int = typer.Option(10000, "--perm", help="Random permutations for the p-value (exact enumeration when 2^clusters is smaller)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap and permutation draws (same seed, same numbers)."),
    alpha: float = typer.Option(0.05, "--alpha", help="Two-sided significance level (the interval is 1-alpha)."),
    power: float = typer.Option(0.8, "--power", help="Power of the minimum detectable effect."),
    shared_units: bool = typer.Option(False, "--shared-units", help="Pair over the units every run was evaluated on (e.g. a run on 100 of the test products against one on all 500) instead of refusing runs on different units; how many units each run lost is printed and written."),
    deterministic: List[str] = typer.Option([], "--deterministic", help="A method no training seed varies (e.g. zero-shot with greedy decoding), given as one run: its seed spread is taken as 0, so rows against it get the units + seeds interval from the other method's seeds alone (repeat per method)."),
    by: Optional[str] = typer.Option(None, "--by", help="Also compare within each group of units: 'attribute' (attribute evaluations: each attribute's questions), with Benjamini-Hochberg adjusted p-values over the groups; writes OUT/by-attribute.md/.json/.png."),
) -> None:
    from ..errors import LeantuneError
    from ..evaluation.compare import base_evaluation, compare, expand_paths, load_evaluation
    from ..evaluation.compare_groups import compare_by_group

    paths = expand_paths(runs)
    if names and len(names) != len(paths):
        raise LeantuneError(f"--name given {len(names)} times for {len(paths)} runs ({', '.join(map(str, paths))}); give one per run or none")
    evaluations = [load_evaluation(p, name=names[i] if names else None) for i, p in enumerate(paths)]
    if with_base:
        evaluations.append(base_evaluation(_run_folder(paths[0])))
    kwargs = dict(baseline=baseline, metric=metric, n_boot=boot, n_perm=perm, seed=seed, alpha=alpha, power=power, shared=shared_units,
                  deterministic=deterministic)
    grouped = compare_by_group(evaluations, by=by, **kwargs) if by is not None else None
    result = grouped.overall if grouped is not None else compare(evaluations, **kwargs)
    folder = out or Path("runs") / f"compare-{metric}"
    files = list(result.write(folder).values())
    if grouped is not None:
        files += list(grouped.write(folder).values())
        typer.echo(grouped.to_markdown())
    typer.echo(result.to_markdown())
    typer.echo("wrote " + ", ".join(str(p) for p in files))


CURVES_HELP = """Two learning curves against each other, size by size: curve B (second folder) minus curve A (first).

Each folder is a curve folder (the --out of `leantune curve`); both must have been evaluated on the same test units (the same --eval-limit and --eval-seed), e.g. two models or two selection methods on one task. At every size both curves measured (or those given with --sizes), B's runs (its seeds) are set against A's, paired over the test units with seeds averaged, as `leantune compare` does: the difference, its interval over the test units, where both sides ran 2 or more seeds the units + seeds interval, p and the minimum detectable differences. A curve still being filled contributes the runs it has finished.

Writes OUT/curves.md, OUT/curves.json and OUT/curves.png (both curves on top, B - A with its interval below).

Example: leantune compare-curves runs/curve-smollm2 runs/curve-gemma --name smollm2 --name gemma3 --metric f1 --out runs/curve-gemma-vs-smollm2
"""


@app.command("compare-curves", help=CURVES_HELP,
             short_help="Two learning curves size by size: B - A with paired intervals at every size both measured.")
def compare_curves_cmd(
    ctx: typer.Context,
    curve_a: Path = typer.Argument(..., help="Curve folder A (the reference)."),
    curve_b: Path = typer.Argument(..., help="Curve folder B (compared with A)."),
    names: List[str] = typer.Option([], "--name", help="Names of A and B, in order (give both or none; default: the folders' names)."),
    metric: str = typer.Option("f1", "--metric", help="Per-unit metric: micro f1/precision/recall or accuracy for attribute curves, recall@20, ndcg@10 ... for recommendation."),
    sizes: Optional[str] = typer.Option(None, "--sizes", help="Comma-separated sizes to compare (default: every size both measured; 0 is zero-shot)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for curves.md/.json/.png (default: runs/curves-<B>-vs-<A>-<metric>)."),
    boot: int = typer.Option(10000, "--boot", help="Bootstrap resamples (and permutations) at each size."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap and permutation draws."),
    alpha: float = typer.Option(0.05, "--alpha", help="Two-sided significance level (intervals are 1-alpha)."),
    power: float = typer.Option(0.8, "--power", help="Power of the minimum detectable differences."),
) -> None:
    from ..curves.versus import compare_curves
    from ..errors import LeantuneError
    from ..paths import display_path

    if names and len(names) != 2:
        raise LeantuneError(f"--name given {len(names)} times: give it twice (A, then B) or not at all")
    pair = (names[0], names[1]) if names else (curve_a.name, curve_b.name)
    wanted = None
    if sizes is not None:
        try:
            wanted = [int(x) for x in sizes.split(",") if x.strip()]
        except ValueError:
            raise LeantuneError(f"--sizes {sizes!r}: expected comma-separated integers, e.g. 400,1600") from None
    gap = compare_curves(curve_a, curve_b, metric, names=pair, sizes=wanted, n_boot=boot, seed=seed, alpha=alpha, power=power)
    folder = out or Path("runs") / f"curves-{pair[1]}-vs-{pair[0]}-{metric}"
    gap.command = invocation(ctx)
    files = gap.write(folder)
    typer.echo(gap.to_markdown())
    typer.echo("wrote " + ", ".join(display_path(p) for p in files.values()))


def _run_folder(path: Path) -> Path:
    """The run folder of a path given to compare (a run folder, or its eval/ subfolder)."""
    if (path / "run.json").is_file() or not (path.parent / "run.json").is_file():
        return path
    return path.parent


@app.command("power", help=POWER_HELP,
             short_help="Minimum detectable effect of a test set (--units, --rate): size test sets before training.")
def power_cmd(
    rate: Optional[float] = typer.Option(None, "--rate", help="Baseline rate of the metric (e.g. recall@20 = 0.015)."),
    units: Optional[int] = typer.Option(None, "--units", help="Test units per run."),
    alpha: float = typer.Option(0.05, "--alpha", help="Two-sided significance level."),
    power: float = typer.Option(0.8, "--power", help="Probability of detecting an effect of the reported size."),
    sd: Optional[float] = typer.Option(None, "--sd", help="Per-unit standard deviation (default: sqrt(rate*(1-rate)), a 0/1 metric)."),
    pilot: Optional[Path] = typer.Option(None, "--pilot", help="A comparison folder (comparison.json from `leantune compare`) to plan seeds from; its own alpha and power are used."),
    seeds: str = typer.Option("3,5,10,20", "--seeds", help="With --pilot: comma-separated seed counts per method to plan for."),
) -> None:
    from ..errors import LeantuneError
    from ..evaluation.compare import minimum_detectable_effect

    if pilot is not None:
        _plan_seeds(pilot, seeds)
        return
    if rate is None or units is None:
        raise LeantuneError("give --rate and --units (test-set sizing), or --pilot DIR (seed planning from a comparison)")
    mde = minimum_detectable_effect(rate, units, alpha=alpha, power=power, per_unit_sd=sd)
    rel = f" ({100 * mde / rate:.1f}% relative)" if rate else ""
    typer.echo(f"minimum detectable effect: {mde:.4f} absolute{rel}")
    typer.echo(f"with {units} units a difference smaller than {mde:.4f} cannot be told apart from zero at "
               f"{100 * power:g}% power (two-sided alpha {alpha:g}, two unpaired runs)")


def _plan_seeds(pilot: Path, seeds_text: str) -> None:
    from ..errors import LeantuneError
    from ..evaluation.compare import read_comparison, seed_plan_markdown
    from ..paths import display_path

    try:
        seeds = [int(x) for x in seeds_text.split(",") if x.strip()]
    except ValueError:
        raise LeantuneError(f"--seeds {seeds_text!r}: expected comma-separated integers, e.g. 3,5,10") from None
    if not (Path(pilot) / "comparison.json").is_file():
        raise LeantuneError(f"--pilot {pilot}: no comparison.json (give a folder written by `leantune compare`)")
    cmp = read_comparison(pilot)
    table, s = seed_plan_markdown(cmp, seeds), cmp.settings
    typer.echo(f"pilot {display_path(pilot)}: {cmp.metric} vs {cmp.baseline}, {cmp.n_units} units; smallest difference the units + seeds "
               f"interval detects at {100 * s['power']:g}% power (two-sided alpha {s['alpha']:g}) with N seeds per method and baseline")
    typer.echo("")
    typer.echo(table, nl=False)
