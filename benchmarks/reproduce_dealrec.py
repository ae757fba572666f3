"""DEALRec vs Random vs the baselines vs all data, at reduced scale, with paired intervals (TIGER on Games).

    python3 benchmarks/reproduce_dealrec.py --recommender tiger                 # fill the grid, then report
    python3 benchmarks/reproduce_dealrec.py --recommender tiger --report-only   # tables from finished cells
    python3 benchmarks/reproduce_dealrec.py --recommender tiger --list          # cells: done / running / to do

The grid is a list of cells, each cached in its own folder under --work: one *scores* cell per seed
(every score any method needs, computed once: influence on the trained SASRec surrogate, TIGER
effort of a one-epoch warm-up TIGER, GraNd, EL2N, surrogate embeddings), one *train* cell per
(variant, seed) (select from that seed's scores exactly as ``leantune prune`` would, train TIGER
with ``leantune run --recommender tiger``'s recipe, evaluate on all test users, write per-user
results), the full-data model (trained to convergence by validation early stopping), and the
most-popular sanity rows. A finished cell is never recomputed; an interrupted one resumes (TIGER
training restarts from its last finished epoch, scoring from its last finished chunk). Two
processes can fill one grid (one per core): each claims a cell with a lock file before working on
it, and a lock left by a dead process is taken over. ``--max-cells``/``--max-minutes`` end a sitting.

The report (``--out``, default ``benchmarks/results/dealrec/``) is written from whatever is finished
and lists what is missing: ``main.md`` (methods × R/N@10/20, paired ``leantune compare`` intervals
against Random and against all data, cost per stage), ``ablations.md`` (no coverage, λ, budget,
influence on the reference's single layer, influence at the reference's damping 0.25), ``lambda.png``/``budget.png`` and ``*.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from _common import ROOT, machine_summary  # first: puts the repo on sys.path, the hub offline

from leantune.errors import LeantuneError  # noqa: E402
from leantune.io import read_json, write_json  # noqa: E402

KS = (10, 20)
METRICS = [f"{m}@{k}" for k in KS for m in ("recall", "ndcg")]
MAIN_METHODS = ("random", "dealrec", "influence", "effort", "grand", "el2n", "ccs", "tfdcon", "kcenter")
# A control, not a pruning method: random samples drawn with probability proportional to their target
# item's training-period count, to tell a method's gain from a shift towards popular targets.
CONTROLS = ("random-popular",)
LAMBDAS = (0.0, 0.1, 0.5, 1.0, 2.0)  # 0.3 is the default (the dealrec row)
BUDGET_SHARES = {256: "0.5%", 512: "1%", 1024: "2%", 2048: "4%"}
GRID_SCORERS = ("influence", "tiger_effort", "grand", "el2n", "embedding")
# Influence variants for the ablations: scores cell -> (DEALRec row name, influence options). Every other
# score of such a row comes from the seed's main scores cell.
INFLUENCE_VARIANTS = {
    "scores-ref": ("dealrec-reflayer", {"influence_params": "reference"}),  # the reference's single layer
    # the reference's effective damping (LiSSA damp 0.01, scale 25 solves (H + 0.25·I)^-1) instead of the
    # Lanczos-chosen λ = 2·|λ_min|; CG converges there on the full Hessian (reference-facts, #15)
    "scores-damp": ("dealrec-damp0.25", {"influence_damping": 0.25}),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--recommender", choices=("tiger", "bigrec"), default="tiger")
    p.add_argument("--data", default="games")
    p.add_argument("--budget", type=int, default=1024, help="samples kept by every main-table method (Games: 2%%)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="main table (the issue asks >= 5)")
    p.add_argument("--ablation-seeds", type=int, nargs="+", default=[0, 1, 2], help="ablations (>= 3)")
    p.add_argument("--lam", type=float, default=0.3, help="effort weight λ of DEALRec (reference Games run: 0.3)")
    p.add_argument("--grid", choices=("main", "ablations", "all"), default="all")
    p.add_argument("--test-users", type=int, default=0, help="seeded test users (0 = all 8,696)")
    p.add_argument("--surrogate-dir", type=Path, default=Path("runs/surrogate-games"),
                   help="the SASRec surrogate `leantune surrogate train --data games` wrote (its defaults)")
    p.add_argument("--ids", type=Path, default=Path("runs/tiger-games"), help="semantic-ID folder (built there if missing)")
    p.add_argument("--full-epochs", type=int, default=150,
                   help="epoch cap of the all-data model (validation-loss early stopping, patience 3, ends it; a higher cap extends a capped run)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of this process (run one process per core)")
    p.add_argument("--work", type=Path, default=None, help="cell cache (default $LEANTUNE_HOME/reproduce-dealrec/<data>-tiger)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dealrec")
    p.add_argument("--order", choices=("grid", "full-first"), default="grid",
                   help="full-first: a second process starts with the long all-data model")
    p.add_argument("--max-cells", type=int, default=0, help="stop after this many cells (0 = no limit)")
    p.add_argument("--max-minutes", type=float, default=0, help="start no new cell after this many minutes (0 = no limit)")
    p.add_argument("--report-only", action="store_true", help="write the report from finished cells and stop")
    p.add_argument("--list", action="store_true", help="print every cell's state and stop")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- cells
@dataclass
class Cell:
    name: str
    kind: str  # scores | train | full | popular
    seed: int = 0
    method: str = ""  # pruning method (train cells)
    budget: int = 0
    lam: float = 0.3
    selector: str | None = None
    influence_from: str = "scores"  # scores | a key of INFLUENCE_VARIANTS
    table: str = "main"  # main | ablations
    needs: list[str] = field(default_factory=list)

    def folder(self, work: Path) -> Path:
        return work / "cells" / self.name


def grid_cells(args) -> list[Cell]:
    """Every cell in the order a process takes them: the main table seed by seed (after each round
    every method has one more seed), then the ablations seed by seed."""
    main, abl = args.grid in ("main", "all"), args.grid in ("ablations", "all")
    cells: list[Cell] = [Cell("popular", "popular")]
    if main:
        cells.append(Cell("full-s0", "full", 0))
    scored: set[int] = set()

    def scores(s: int) -> None:
        if s not in scored:
            cells.append(Cell(f"scores-s{s}", "scores", s))
            scored.add(s)

    for s in (args.seeds if main else []):
        scores(s)
        for m in MAIN_METHODS + CONTROLS:
            cells.append(Cell(f"{m}-b{args.budget}-s{s}", "train", s, m, args.budget, args.lam, needs=[f"scores-s{s}"]))
    for s in (args.ablation_seeds if abl else []):
        scores(s)
        extra = [Cell(f"dealrec-topk-b{args.budget}-s{s}", "train", s, "dealrec", args.budget, args.lam, "topk", table="ablations")]
        extra += [Cell(f"dealrec-lam{lam:g}-b{args.budget}-s{s}", "train", s, "dealrec", args.budget, lam, table="ablations")
                  for lam in LAMBDAS]
        for b in BUDGET_SHARES:
            if b != args.budget:
                extra += [Cell(f"{m}-b{b}-s{s}", "train", s, m, b, args.lam, table="ablations") for m in ("dealrec", "random")]
        for variant, (row, _) in INFLUENCE_VARIANTS.items():
            cells.append(Cell(f"{variant}-s{s}", "scores", s, "influence", influence_from=variant))
            extra.append(Cell(f"{row}-b{args.budget}-s{s}", "train", s, "dealrec", args.budget, args.lam,
                              influence_from=variant, table="ablations"))
        for c in extra:
            c.needs = [f"scores-s{s}"] + ([f"{c.influence_from}-s{s}"] if c.influence_from != "scores" else [])
        cells += extra
    if args.order == "full-first":
        cells.sort(key=lambda c: c.kind != "full")
    return cells


def is_done(cell: Cell, work: Path) -> bool:
    return (cell.folder(work) / "cell.json").is_file()


class Claim:
    """A lock file per cell, so that two processes never work on one cell; a dead owner's lock is taken."""

    def __init__(self, folder: Path):
        self.path = folder / ".claim"
        self.held = False

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._stale():
                    return False
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
            self.held = True
            return True
        return False

    def _stale(self) -> bool:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return time.time() - self.path.stat().st_mtime > 60 if self.path.exists() else True
        if owner.get("host") != socket.gethostname():
            return False  # another machine's process: cannot tell, leave it
        try:
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError):
            return False
        return False

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


# --------------------------------------------------------------------------- work
def register_grid_method() -> None:
    """Every score any grid method reads, computed once per seed (a benchmark-only method)."""
    from leantune.pruning import METHODS, Method

    if "dealrec-grid-scores" not in METHODS:
        METHODS.register("dealrec-grid-scores")(Method(
            "dealrec-grid-scores", GRID_SCORERS, "coverage", lambda c: {"influence": 1.0, "tiger_effort": c.lam},
            "benchmark: all scores of the reproduction grid"))


def scorer_options(args, cell: Cell) -> dict:
    opts = {"tiger_ids": str(args.ids), "tiger_preset": "small", "tiger_warmup_epochs": 1,
            "surrogate_dir": str(args.surrogate_dir), "device": "cpu"}
    if cell.influence_from != "scores":
        opts = {"surrogate_dir": str(args.surrogate_dir), "device": "cpu", **INFLUENCE_VARIANTS[cell.influence_from][1]}
    return opts


def run_scores(ds, args, cell: Cell, work: Path) -> dict:
    from leantune.pruning import prune

    register_grid_method()
    method = "dealrec-grid-scores" if cell.influence_from == "scores" else "influence"
    t0 = time.perf_counter()
    res = prune(ds, args.budget, method, cell.folder(work) / "prune", seed=cell.seed, lam=args.lam,
                options=scorer_options(args, cell), progress=False)
    stages = {k: v["compute_seconds"] for k, v in res.record["timings"]["scoring"].items()}
    return {"wall_s": round(time.perf_counter() - t0, 1), "scoring_s": stages}


def load_scores(work: Path, cell: Cell) -> dict:
    from leantune.pruning import load_selection
    from leantune.scoring.scorefile import read_scores

    scores = read_scores(load_selection(work / "cells" / f"scores-s{cell.seed}" / "prune").scores_path)
    if cell.influence_from != "scores":
        variant = f"{cell.influence_from}-s{cell.seed}"
        ref = read_scores(load_selection(work / "cells" / variant / "prune").scores_path)
        if not np.array_equal(ref["sample_id"], scores["sample_id"]):
            raise LeantuneError(f"{variant}: scored other samples than scores-s{cell.seed}")
        scores = {**scores, "influence": ref["influence"]}
    return scores


def select(ds, cell: Cell, scores: dict) -> list[int]:
    """What ``leantune prune --recommender tiger --seed S`` selects from these scores."""
    from leantune.models.popularity import MostPopular
    from leantune.pruning import PruneConfig, build_selector

    if cell.method == "random-popular":
        counts = MostPopular.fit(ds).counts
        by_id = {s.sample_id: s for s in ds.train_samples}
        weight = np.array([counts[by_id[int(i)].targets[0]] for i in scores["sample_id"]], dtype=float)
        chosen = np.random.default_rng([cell.seed, 2]).choice(len(weight), cell.budget, replace=False, p=weight / weight.sum())
        return sorted(int(i) for i in scores["sample_id"][chosen])

    cfg = PruneConfig(budget=cell.budget, method=cell.method, seed=cell.seed, lam=cell.lam, selector=cell.selector,
                      recommender="tiger")
    cfg.validate()
    chosen = np.asarray(build_selector(cfg).select(scores, cell.budget, np.random.default_rng([cell.seed, 2])))
    if len(np.unique(chosen)) != cell.budget:
        raise AssertionError(f"{cell.name}: selector returned {len(np.unique(chosen))} distinct samples, not {cell.budget}")
    return sorted(int(i) for i in scores["sample_id"][chosen])


def train_config(args, cell: Cell):
    from leantune.models.tiger import tiger_config
    from leantune.pipelines.tiger import TigerRunConfig

    if cell.kind == "full":  # all data, to convergence: validation loss every epoch, patience 3
        return tiger_config("small", max_epochs=args.full_epochs, eval_every_steps=1, val_users=1000,
                            val_metric="loss", patience=3)
    return TigerRunConfig(budget=cell.budget, preset="small").tiger_config()


def run_train(ds, sids, args, cell: Cell, work: Path) -> dict:
    from leantune.evaluation.units import write_per_unit
    from leantune.evaluation.tiger import evaluate_tiger
    from leantune.train.tiger import train_tiger

    folder = cell.folder(work)
    timings = {}
    sample_ids = None
    if cell.kind == "train":
        t0 = time.perf_counter()
        sample_ids = select(ds, cell, load_scores(work, cell))
        timings["select_s"] = round(time.perf_counter() - t0, 2)
        write_json(folder / "selection.json", {"sample_ids": sample_ids, "method": cell.method, "seed": cell.seed,
                                               "budget": cell.budget, "lam": cell.lam, "selector": cell.selector})
    run = train_tiger(ds, sids, sample_ids, folder / "model", train_config(args, cell), seed=cell.seed, progress=False)
    timings["train_s"] = run.wall_s
    ev = evaluate_tiger(ds, sids, folder / "model", users=args.test_users, seed=0, ks=KS, progress=False)
    write_per_unit(folder / "eval", ev.pop("per_unit"))
    timings["eval_s"] = ev["wall_s"]
    return {"samples": run.n_samples, "epochs": run.epochs, "best_epoch": run.best_epoch, "stopped": run.stopped,
            "steps": run.steps, "test_users": ev["users"], "metrics": ev["metrics"], **timings}


def run_popular(ds, args, cell: Cell, work: Path) -> dict:
    """Most-popular over the training period and over the validation period, on the evaluated users."""
    from leantune.data.units import seeded_sample
    from leantune.evaluation.units import mean_ranking_metrics, ranking_unit_rows, write_per_unit
    from leantune.models.popularity import MostPopular

    samples = seeded_sample(list(ds.samples("test")), args.test_users or None, 0, name="users")
    out = {}
    for period in ("train", "valid"):
        top = MostPopular.fit(ds, period=period).ranking(max(KS))
        rows = ranking_unit_rows([s.sample_id for s in samples], [top] * len(samples), [s.targets for s in samples], KS)
        write_per_unit(cell.folder(work) / period / "eval", rows)
        out[period] = mean_ranking_metrics(rows, KS)
    return {"metrics": out, "test_users": len(samples)}


def run_cell(ds, sids, args, cell: Cell, work: Path) -> dict:
    if cell.kind == "scores":
        return run_scores(ds, args, cell, work)
    if cell.kind == "popular":
        return run_popular(ds, args, cell, work)
    return run_train(ds, sids, args, cell, work)


def fill(args, cells: list[Cell], work: Path) -> None:
    import torch

    from leantune.data import load_dataset
    from leantune.train.rqvae import build_semantic_ids

    torch.set_num_threads(args.threads)
    ds = load_dataset(args.data)
    sids = None
    began, ran = time.monotonic(), 0
    while True:
        todo = [c for c in cells if not is_done(c, work)]
        ready = [c for c in todo if all(is_done(d, work) for c_name in c.needs for d in cells if d.name == c_name)]
        progressed = False
        for cell in ready:
            if args.max_cells and ran >= args.max_cells or args.max_minutes and time.monotonic() - began > 60 * args.max_minutes:
                print(f"stopping: {ran} cell(s) run in this sitting (--max-cells/--max-minutes)", flush=True)
                return
            claim = Claim(cell.folder(work))
            if not claim.acquire():
                continue
            try:
                if is_done(cell, work):  # finished by another process between the listing and the claim
                    continue
                if sids is None and cell.kind in ("train", "full"):
                    sids = build_semantic_ids(ds, args.ids, seed=0)
                print(f"[{time.strftime('%H:%M:%S')}] {cell.name} ...", flush=True)
                t0 = time.perf_counter()
                record = run_cell(ds, sids, args, cell, work)
                record.update(name=cell.name, kind=cell.kind, seed=cell.seed, method=cell.method, budget=cell.budget,
                              lam=cell.lam, selector=cell.selector, influence_from=cell.influence_from, table=cell.table,
                              cell_wall_s=round(time.perf_counter() - t0, 1), threads=args.threads,
                              load_at_end=os.getloadavg()[0])
                write_json(cell.folder(work) / "cell.json", record)
                metrics = record.get("metrics", {})
                shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
                print(f"[{time.strftime('%H:%M:%S')}] {cell.name} done in {record['cell_wall_s']:.0f} s  {shown}", flush=True)
                ran += 1
                progressed = True
            finally:
                claim.release()
            break  # re-list: another process may have finished cells meanwhile
        if not progressed:
            if not todo:
                return
            if not any(Claim(c.folder(work)).path.exists() for c in todo):
                raise LeantuneError("cells left that no process works on and none ready: " + ", ".join(c.name for c in todo[:5]))
            time.sleep(20)  # the rest waits on cells another process holds


# --------------------------------------------------------------------------- report
def finished(cells, work) -> dict[str, dict]:
    return {c.name: read_json(c.folder(work) / "cell.json") for c in cells if is_done(c, work)}


def evaluations(cells, work, done, row_name, seeds=None, sanity=False) -> list:
    """``leantune compare`` inputs: one Evaluation per finished cell, named by its table row (only
    ``seeds`` when given: an ablation compares variants over the same seeds)."""
    from leantune.evaluation.compare import load_evaluation

    evs = []
    for c in cells:
        if c.name not in done:
            continue
        if c.kind == "popular" and sanity:
            for period, label in (("train", "popular (training period)"), ("valid", "popular (recent: validation period)")):
                evs.append(load_evaluation(c.folder(work) / period / "eval", name=label))
        elif c.kind in ("train", "full") and (seeds is None or c.seed in seeds):
            name = row_name(c)
            if name:
                ev = load_evaluation(c.folder(work) / "eval", name=name)
                ev.seed = c.seed
                evs.append(ev)
    return evs


def main_row(budget):
    return lambda c: "all data" if c.kind == "full" else (c.method if c.table == "main" and c.budget == budget else None)


def compare_block(evs, baseline, metric):
    from leantune.evaluation.compare import compare

    names = {e.name for e in evs}
    if baseline not in names or len(names) < 2:
        return None
    return compare(evs, baseline=baseline, metric=metric)


def selection_profile(args, cells, work, done) -> list[str]:
    """What each method keeps: history length, target popularity (all-time and recent), distinct targets."""
    from leantune.data import load_dataset

    rows = [c for c in cells if c.kind == "train" and c.table == "main" and c.name in done]
    if not rows:
        return []
    ds = load_dataset(args.data)
    stats = {}
    for c in rows:
        stats.setdefault(c.method, []).append(_profile(ds, read_json(c.folder(work) / "selection.json")["sample_ids"]))
    fmt = lambda values: " | ".join(f"{v:.1f}" if i < 3 else f"{v:.0f}" for i, v in enumerate(values))  # noqa: E731
    lines = ["## What each method keeps (mean over seeds)", "",
             "| selection | history length | target's training count | target's validation-period count | distinct targets |",
             "|---|---:|---:|---:|---:|",
             f"| all training samples | {fmt(_profile(ds, [s.sample_id for s in ds.train_samples]))} |"]
    for m in MAIN_METHODS + CONTROLS:
        if m in stats:
            lines.append(f"| {m} | {fmt(np.mean(stats[m], axis=0))} |")
    lines += ["", "A training sample's target is the last item of the user's training sequence; counts are interactions "
              "in the training period and in the validation period (the recent popularity that wins on this split).", ""]
    return lines


def popularity_link(args, cells, work, done) -> list[str]:
    """Across every finished model at the main budget: does the selection's target popularity predict R@20?"""
    from scipy.stats import spearmanr

    from leantune.data import load_dataset

    rows = [c for c in cells if c.kind == "train" and c.budget == args.budget and c.name in done]
    if len(rows) < 4:
        return []
    ds = load_dataset(args.data)
    points = []
    for c in rows:
        prof = _profile(ds, read_json(c.folder(work) / "selection.json")["sample_ids"])
        points.append((c, prof[2], prof[1], done[c.name]["metrics"]["recall@20"]))
    rho_recent = spearmanr([p[1] for p in points], [p[3] for p in points]).statistic
    rho_train = spearmanr([p[2] for p in points], [p[3] for p in points]).statistic
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    methods = sorted({p[0].method if p[0].table == "main" else "ablation" for p in points})
    for i, m in enumerate(methods):
        sel = [p for p in points if (p[0].method if p[0].table == "main" else "ablation") == m]
        ax.scatter([p[1] for p in sel], [p[3] for p in sel], label=m, s=22, marker="os^vD<>"[i % 7], alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("mean validation-period count of the selected samples' targets")
    ax.set_ylabel("TIGER R@20 on all test users")
    ax.set_title(f"{len(points)} models at budget {args.budget}: Spearman {rho_recent:.2f}", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(args.out / "popularity.png", dpi=120)
    plt.close(fig)
    return ["## Does target popularity explain the differences?", "",
            f"Across all {len(points)} finished models at budget {args.budget} (main methods, controls and λ/coverage "
            f"ablations, every seed), R@20 against the mean recent (validation-period) count of the selected samples' "
            f"targets: Spearman {rho_recent:.2f}; against their training-period count: {rho_train:.2f}. "
            "Plot: `popularity.png`.", ""]


def _profile(ds, sample_ids) -> list[float]:
    """History length, the targets' training- and validation-period counts, distinct targets."""
    from leantune.models.popularity import target_popularity

    by_id = ds._cache.setdefault("by_id", {s.sample_id: s for s in ds.train_samples})
    samples = [by_id[i] for i in sample_ids]
    pop = target_popularity(ds, sample_ids)
    return [float(np.mean([len(s.history) for s in samples])), pop["train"], pop["recent"],
            float(len({s.targets[0] for s in samples}))]


def summary_table(cmps: dict) -> list[str]:
    """One row per method: seed-averaged R/N@10/20, and Δ R@20 / N@20 against Random and against all data."""
    any_cmp = next(iter(cmps.values()), None)
    if any_cmp is None:
        return ["No method has a finished comparison yet.", ""]

    def delta(metric, baseline, name):
        cmp = cmps.get((metric, baseline))
        if cmp is None or name == baseline or name not in cmp.groups:
            return ""
        r = cmp.row(name)
        return f"{r.diff:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}]" + (" *" if r.ci_low > 0 or r.ci_high < 0 else "")

    def seed_se(name):
        cmp = cmps.get(("recall@20", "random"))
        if cmp is None or name == "random" or name not in cmp.groups or cmp.row(name).seed_se_diff is None:
            return ""
        return f"{cmp.row(name).seed_se_diff:.4f}"

    names = list(any_cmp.groups)
    known = ("all data", *MAIN_METHODS, *CONTROLS)
    order = [n for n in known if n in names] + [n for n in names if n not in known]
    lines = ["## Main table", "",
             "| method | seeds | R@10 | N@10 | R@20 | N@20 | Δ R@20 vs random [95% CI] | seed SE | Δ N@20 vs random | "
             "Δ R@20 vs random-popular | Δ R@20 vs all data |",
             "|---|---:|---:|---:|---:|---:|---|---:|---|---|---|"]
    for name in order:
        vals = [cmps[(m, "random")].groups[name].value if (m, "random") in cmps and name in cmps[(m, "random")].groups else float("nan")
                for m in METRICS]
        seeds = len(any_cmp.groups[name].seeds)
        lines.append(f"| {name} | {seeds} | " + " | ".join(f"{v:.4f}" for v in vals) + " | "
                     + delta("recall@20", "random", name) + " | " + seed_se(name) + " | "
                     + " | ".join(delta(m, b, name) for m, b in (("ndcg@20", "random"), ("recall@20", "random-popular"),
                                                                   ("recall@20", "all data")))
                     + " |")
    n = any_cmp.n_units
    mde = cmps.get(("recall@20", "random"))
    lines += ["", f"Values are means over {n} test users, averaged over seeds. Δ: paired difference with a 95% bootstrap "
              "interval over test users (seeds averaged inside each resample; `leantune compare`); * marks an interval "
              "that excludes 0. The interval covers test-user sampling only; seed SE is the standard error of Δ R@20 from "
              "the spread over seeds (selection draw, scores and training), which the interval does not include." + (f" Paired minimum detectable Δ R@20 against Random at 80% power: "
                                    f"{min(r.mde_paired for r in mde.rows):.4f}–{max(r.mde_paired for r in mde.rows):.4f}."
                                    if mde and mde.rows else ""), ""]
    return lines


def cost_table(cells, done, surrogate_s: float) -> list[str]:
    """Wall seconds per stage of each main method (mean over its seeds) against training on all data."""
    scoring = {}
    for c in cells:
        if c.kind == "scores" and c.influence_from == "scores" and c.name in done:
            for k, v in done[c.name]["scoring_s"].items():
                scoring.setdefault(k, []).append(v)
    mean = {k: float(np.mean(v)) for k, v in scoring.items()}
    needs = {"random": [], "dealrec": ["influence", "tiger_effort"], "influence": ["influence"], "effort": ["tiger_effort"],
             "grand": ["grand", "el2n"], "el2n": ["grand", "el2n"], "ccs": ["grand", "el2n"],
             "tfdcon": ["embedding"], "kcenter": ["embedding"]}
    uses_surrogate = {"dealrec", "influence", "tfdcon", "kcenter"}
    full = [done[c.name] for c in cells if c.kind == "full" and c.name in done]
    full_s = full[0]["train_s"] if full else None
    lines = ["| method | surrogate s | scoring s | select s | train s | total s | × all-data training | eval s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    needs["random-popular"] = []
    for m in MAIN_METHODS + CONTROLS:
        rows = [done[c.name] for c in cells if c.kind == "train" and c.table == "main" and c.method == m and c.name in done]
        if not rows:
            continue
        score_s = sum(mean.get(k, float("nan")) for k in needs[m])
        sur = surrogate_s if m in uses_surrogate else 0.0
        sel, tr, ev = (float(np.mean([r[k] for r in rows])) for k in ("select_s", "train_s", "eval_s"))
        total = sur + score_s + sel + tr
        ratio = f"{total / full_s:.2f}" if full_s else "–"
        lines.append(f"| {m} | {sur:.0f} | {score_s:.0f} | {sel:.1f} | {tr:.0f} | {total:.0f} | {ratio} | {ev:.0f} |")
    if full:
        lines.append(f"| all data | 0 | 0 | 0 | {full_s:.0f} | {full_s:.0f} | 1.00 | {full[0]['eval_s']:.0f} |")
    return lines


def report(args, cells, work) -> str:
    meta = args.surrogate_dir / "surrogate.json"
    surrogate_s = float(read_json(meta).get("train_seconds", 0.0)) if meta.is_file() else float("nan")
    done = finished(cells, work)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    missing = [c.name for c in cells if c.name not in done]
    command = "python3 benchmarks/reproduce_dealrec.py --recommender tiger"
    evs = evaluations(cells, work, done, main_row(args.budget), sanity=True)
    lines = [f"# DEALRec reproduction at reduced scale: TIGER on {args.data}", "",
             f"Fill and report: `{command}` (cells cached under `$LEANTUNE_HOME/reproduce-dealrec/`; "
             f"`--report-only` rewrites this from finished cells).", "",
             f"Budget {args.budget} of 49,156 training samples (2%); TIGER `small` preset, recipe of `leantune run --recommender tiger`; "
             f"scores per seed from the surrogate `leantune surrogate train --data games` wrote with its defaults; "
             f"every model evaluated on {'all' if not args.test_users else args.test_users} test users "
             "(constrained beam search, beam 20). Machine: " + f"{machine_summary(threads=False)}; "
             "one torch thread per process, two processes side by side.", ""]
    lines += [f"**{len(done)} of {len(cells)} cells finished.**" + (f" Missing: {', '.join(missing)}." if missing else ""), ""]
    result = {"done": sorted(done), "missing": missing, "comparisons": {}}
    detail, cmps = [], {}
    for metric in METRICS:
        for baseline in ("random", "all data") + (("random-popular",) if metric in ("recall@20", "ndcg@20") else ()):
            cmp = compare_block(evs, baseline, metric)
            if cmp is None:
                continue
            tag = f"main-{metric.replace('@', '')}-vs-{baseline.replace(' ', '')}"
            cmp.write(out / tag)
            cmps[(metric, baseline)] = cmp
            result["comparisons"][tag] = cmp.to_dict()
            detail += [f"### {metric}, paired against {baseline}", "", cmp.to_markdown(), f"Forest plot: `{tag}/forest.png`.", ""]
    lines += summary_table(cmps) + ["## Every comparison", "", *detail]
    lines += selection_profile(args, cells, work, done) + popularity_link(args, cells, work, done)
    lines += ["## Cost (wall seconds, mean over seeds; one torch thread)", "", *cost_table(cells, done, surrogate_s), "",
              "Surrogate: the SASRec surrogate's recorded training time, charged to the methods that read it "
              "(influence and the surrogate embeddings). GraNd and EL2N share three early-trained SASRec models, trained inside "
              "the GraNd stage, so GraNd, EL2N and CCS (stratified on EL2N) are each charged both stages. "
              "Scoring: mean over the seeds' score cells. The cost of evaluation is the same for every method and "
              "is not part of the total.", ""]
    (out / "main.md").write_text("\n".join(lines) + "\n")
    write_json(out / "main.json", {**result, "cells": done})
    ablation_md = ablations(args, cells, work, done)
    (out / "ablations.md").write_text(ablation_md)
    return "\n".join(lines) + "\n" + ablation_md


def ablations(args, cells, work, done) -> str:
    from leantune.evaluation.compare import compare

    lines = ["# DEALRec ablations and sensitivity (TIGER, paired against DEALRec's default at the same budget)", ""]
    groups = {"no coverage (top-k on the same score)": lambda c: "dealrec" if c.table == "main" and c.method == "dealrec"
              else ("dealrec-topk" if c.selector == "topk" else None),
              "influence on the reference's single layer": lambda c: "dealrec" if c.table == "main" and c.method == "dealrec"
              else ("dealrec-reflayer" if c.influence_from == "scores-ref" else None),
              "influence at the reference's damping λ = 0.25 (default: λ = 2·|λ_min| from Lanczos)":
                  lambda c: "dealrec" if c.table == "main" and c.method == "dealrec"
                  else ("dealrec-damp0.25" if c.influence_from == "scores-damp" else None)}
    for title, row in groups.items():
        evs = evaluations(cells, work, done, lambda c: row(c) if c.kind == "train" else None, args.ablation_seeds)
        if len({e.name for e in evs}) == 2:
            cmp = compare(evs, baseline="dealrec", metric="recall@20")
            lines += [f"## {title}", "", cmp.to_markdown(), ""]
    lines += damping_agreement(args, work, done)
    # λ sweep: DEALRec at each λ against Random at the main budget (same seeds).
    lam_row = lambda c: (f"λ={c.lam:g}" if c.method == "dealrec" and c.budget == args.budget and c.selector is None
                         and c.influence_from == "scores" and c.kind == "train" else
                         ("random" if c.method == "random" and c.budget == args.budget and c.kind == "train" else None))
    evs = evaluations(cells, work, done, lam_row, args.ablation_seeds)
    if len({e.name for e in evs}) > 1 and "random" in {e.name for e in evs}:
        cmp = compare(evs, baseline="random", metric="recall@20")
        cmp.write(args.out / "lambda")
        lines += ["## λ (effort weight), against Random at the same budget", "", cmp.to_markdown(), ""]
        delta_plot([(float(r.name[2:]), r) for r in cmp.rows if r.name.startswith("λ=")], "effort weight λ",
                   "DEALRec − Random, R@20", args.out / "lambda.png", default=args.lam)
    points = []
    for b in sorted(BUDGET_SHARES):
        brow = lambda c, b=b: (c.method if c.kind == "train" and c.budget == b and c.method in ("dealrec", "random")
                               and c.selector is None and c.influence_from == "scores" and c.lam == args.lam else None)
        evs = evaluations(cells, work, done, brow, args.ablation_seeds)
        if {e.name for e in evs} == {"dealrec", "random"}:
            cmp = compare(evs, baseline="random", metric="recall@20")
            points.append((b, cmp.row("dealrec")))
            lines += [f"## budget {b} ({BUDGET_SHARES[b]}): DEALRec against Random", "", cmp.to_markdown(), ""]
    delta_plot(points, "budget (training samples)", "DEALRec − Random, R@20", args.out / "budget.png", default=args.budget,
               log=True)
    return "\n".join(lines) + "\n"


def damping_agreement(args, work, done) -> list[str]:
    """How differently the two dampings rank the samples: Spearman of the influence columns per seed,
    beside the default's own seed-to-seed agreement (its noise floor)."""
    from scipy.stats import spearmanr

    from leantune.pruning import load_selection
    from leantune.scoring.scorefile import read_scores

    def column(name):
        if name not in done:
            return None
        scores = read_scores(load_selection(work / "cells" / name / "prune").scores_path)
        info = read_json(work / "cells" / name / "prune" / "selection.json")["timings"]["scoring"]["influence"]["info"]
        return scores["sample_id"], scores["influence"], info["damping"]

    rows = []
    for s in args.ablation_seeds:
        base, damp = column(f"scores-s{s}"), column(f"scores-damp-s{s}")
        if base and damp and np.array_equal(base[0], damp[0]):
            rows.append(f"| {s} | {base[2]:.3f} | {damp[2]:g} | {spearmanr(base[1], damp[1])[0]:.4f} |")
    if not rows:
        return []
    notes = []
    for label, prefix in (("default (the seed also redraws the Lanczos subsample)", "scores"), ("λ = 0.25", "scores-damp")):
        pair = [column(f"{prefix}-s{s}") for s in args.ablation_seeds[:2]]
        if len(pair) == 2 and all(pair) and np.array_equal(pair[0][0], pair[1][0]):
            notes.append(f"{label} {spearmanr(pair[0][1], pair[1][1])[0]:.4f}")
    note = (f"Each damping's own seed-to-seed agreement (seeds {args.ablation_seeds[0]} vs {args.ablation_seeds[1]}): "
            + "; ".join(notes) + "." if notes else "")
    return ["Influence rank agreement between the two dampings (all training samples, same seed):", "",
            "| seed | default λ (Lanczos) | reference λ | Spearman |", "| ---: | ---: | ---: | ---: |", *rows, "",
            note, ""]


def delta_plot(points, xlabel, ylabel, path: Path, default=None, log=False) -> None:
    """Each setting's paired difference with its 95% interval, zero marked (written only with >= 2 settings)."""
    if len(points) < 2:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(points, key=lambda p: p[0])
    xs = [p[0] for p in points]
    diffs = np.array([p[1].diff for p in points])
    lo, hi = diffs - [p[1].ci_low for p in points], [p[1].ci_high for p in points] - diffs
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.axhline(0, color="grey", lw=1)
    ax.errorbar(xs, diffs, yerr=[lo, hi], fmt="o-", capsize=4)
    for x, (_, r) in zip(xs, points):
        ax.annotate(f"{r.n_seeds} seed{'s' if r.n_seeds != 1 else ''}", (x, r.ci_high), textcoords="offset points",
                    xytext=(0, 4), ha="center", fontsize=7)
    if default is not None:
        ax.axvline(default, color="grey", ls=":", lw=1, label="default")
        ax.legend(fontsize=8)
    if log:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("paired 95% bootstrap intervals over test users", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.recommender == "bigrec":
        raise SystemExit("reproduce_dealrec.py: the BIGRec rows come from benchmarks/bench_bigrec.py "
                         "(--seeds 0 1 2 --test-users 500 --surrogate-dir runs/surrogate-games)")
    work = args.work or Path(os.environ.get("LEANTUNE_HOME", Path.home() / ".cache" / "leantune")) / "reproduce-dealrec" / f"{args.data}-tiger"
    cells = grid_cells(args)
    if args.list:
        for c in cells:
            state = "done" if is_done(c, work) else ("claimed" if Claim(c.folder(work)).path.exists() else "to do")
            print(f"{c.name:32s} {c.kind:7s} {state}")
        return
    if not args.report_only:
        if not (args.surrogate_dir / "surrogate.json").is_file():
            raise SystemExit(f"--surrogate-dir {args.surrogate_dir}: no trained surrogate (surrogate.json); "
                             f"run `leantune surrogate train --data {args.data} --out {args.surrogate_dir}` first")
        try:
            fill(args, cells, work)
        except LeantuneError as exc:
            raise SystemExit(f"error: {exc}") from None
    print(report(args, cells, work))


if __name__ == "__main__":
    main()
