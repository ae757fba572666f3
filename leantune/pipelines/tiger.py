"""The TIGER job end to end: semantic IDs -> prune -> train TIGER on the selection -> evaluate -> report.

``leantune run --recommender tiger`` calls :func:`run_tiger`. The run folder and its ``run.json``
work as for BIGRec (:mod:`leantune.pipelines.bigrec`): every stage records its status, wall time and
outputs; re-running the same job skips finished stages, and an interrupted TIGER training resumes
from its last finished epoch. Semantic IDs are built once per dataset into the folder
``leantune tiger`` uses (``runs/tiger-<data>/`` unless ``ids`` names another) and shared by every
run; the effort scorer and the trained model read the same IDs.

The training recipe for a pruned subset is the one ``benchmarks/bench_tiger.py`` uses: batch 128,
peak lr 3e-3 with 50 warm-up steps, up to 60 epochs, early stopping on the validation loss of
1,000 seeded validation users, checked every 3 epochs, patience 3.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import LeantuneError, ParameterError
from ..evaluation.units import write_per_unit
from ..io import read_json, write_json
from .runs import RunFolder

STAGES = ("semantic_ids", "prune", "train", "evaluate", "report")
KS = (5, 10, 20)


@dataclass
class TigerRunConfig:
    """Settings of a TIGER run (``run_tiger``): semantic IDs, prune, train TIGER, evaluate, report."""

    data: str = "games"
    budget: int = 1024
    method: str = "dealrec"  # with TIGER: dealrec = influence + λ·tiger_effort (see leantune.pruning)
    pool: int | None = None  # TIGER effort is cheap enough to score every training sample
    seed: int = 0  # selection and training
    test_users: int | None = 500  # seeded subset of test users (None = all)
    eval_seed: int = 0  # which test users; kept apart from ``seed`` so runs with other seeds share them
    ids: str | None = None  # semantic-IDs folder; None: runs/tiger-<data>/ (built there if missing)
    preset: str = "small"  # TIGER size for the trained model and the effort model: small | paper
    epochs: int = 60  # maximum; early stopping on validation loss usually ends sooner
    batch_size: int = 128
    lr: float = 3e-3
    warmup_steps: int = 50
    val_users: int = 1000  # seeded validation users for early stopping (0 = all)
    patience: int = 3
    effort_warmup_epochs: int = 1  # epochs of the full-data TIGER model behind the effort score
    device: str = "auto"
    prune_options: dict = field(default_factory=dict)  # extra PruneConfig fields (lam, hard_prune, options, ...)

    def settings(self) -> dict:
        return asdict(self)

    def tiger_config(self):
        """The training config of the TIGER model trained on the selection."""
        from ..models.tiger import tiger_config

        steps_per_epoch = math.ceil(self.budget / self.batch_size)
        return tiger_config(self.preset, max_epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                            warmup_steps=self.warmup_steps, eval_every_steps=3 * steps_per_epoch, val_metric="loss",
                            val_users=self.val_users, patience=self.patience)

    def prune_config(self):
        from ..pruning import PruneConfig

        options = dict(self.prune_options)
        try:
            return PruneConfig(budget=self.budget, method=self.method, seed=self.seed, pool=self.pool,
                               recommender="tiger", options=options.pop("options", {}), **options)
        except TypeError as exc:
            raise LeantuneError(f"prune_options: {exc}") from None

    def validate(self) -> None:
        """Fail on bad settings before any semantic IDs are built or samples scored."""
        if self.epochs < 1:
            raise ParameterError("epochs", self.epochs, "must be at least 1")
        if self.test_users is not None and self.test_users < 0:
            raise ParameterError("test_users", self.test_users, "must be 0 (all) or positive")
        self.tiger_config()  # unknown preset
        self.prune_config().validate()  # budget, pool, method with this recommender


def default_run_dir(cfg: TigerRunConfig) -> Path:
    name = Path(str(cfg.data)).name
    return Path("runs") / f"run-{name}-{cfg.method}-tiger-b{cfg.budget}-s{cfg.seed}"


def run_tiger(cfg: TigerRunConfig, out_dir=None, progress: bool = True, log=print) -> RunFolder:
    """Run (or resume) a TIGER job: semantic IDs -> prune -> train TIGER -> evaluate -> report; returns the run folder."""
    from ..data import load_dataset
    from ..evaluation.tiger import evaluate_tiger
    from ..train.rqvae import semantic_ids_for
    from ..train.tiger import train_tiger
    from ..device import resolve_device

    cfg.validate()
    out = Path(out_dir) if out_dir else default_run_dir(cfg)
    run = RunFolder(out, "tiger", cfg.settings(), ignore=("device",))  # the device changes speed, not results
    device = resolve_device(cfg.device)
    dataset = load_dataset(cfg.data)

    if run.done("semantic_ids"):  # reading them is cheap; check they are still the ones trained on
        sids, ids_folder, _ = semantic_ids_for(dataset, cfg.ids, progress=progress)
        known = run.outputs("semantic_ids")["key"]
        if known != sids.key:
            raise LeantuneError(f"{ids_folder}: semantic IDs changed since {out} used them (key {known}, now "
                                f"{sids.key}); use another output folder or delete the run folder")
    else:
        with run.stage("semantic_ids") as stage:
            sids, ids_folder, built = semantic_ids_for(dataset, cfg.ids, progress=progress)
            stage.outputs = {"folder": str(ids_folder), "key": sids.key, "built": built,
                             "stats": sids.stats.lines() if sids.stats else []}
        log(f"[semantic_ids] {'built in' if built else 'read from'} {ids_folder}")

    if not run.done("prune"):
        from ..pruning import prune_with_config

        pcfg = cfg.prune_config()
        pcfg.options = {"device": device, "tiger_ids": str(ids_folder), "tiger_preset": cfg.preset,
                        "tiger_warmup_epochs": cfg.effort_warmup_epochs, **pcfg.options}
        log(f"[prune] {cfg.method} for TIGER, budget {cfg.budget}, pool {cfg.pool or 'all'} -> {out / 'prune'}")
        with run.stage("prune") as stage:
            result = prune_with_config(dataset, pcfg, out / "prune", progress=progress)
            stage.outputs = {"selection": str(result.selection_path), "n_selected": len(result.sample_ids),
                             "pool_size": result.record["pool_size"], "scorers": result.record["scorers"],
                             "timings": result.timings}
    sample_ids = read_json(Path(run.outputs("prune")["selection"]))["sample_ids"]

    if not run.done("train"):
        log(f"[train] TIGER ({cfg.preset}) on {len(sample_ids)} samples, at most {cfg.epochs} epochs -> {out / 'train'}")
        with run.stage("train") as stage:
            trained = train_tiger(dataset, sids, sample_ids, out / "train", cfg.tiger_config(), seed=cfg.seed,
                                  progress=progress, device=device)
            stage.outputs = {k: v for k, v in asdict(trained).items() if k != "history"}

    if not run.done("evaluate"):
        log(f"[evaluate] {cfg.test_users or 'all'} test users (seed {cfg.eval_seed}) -> {out / 'eval'}")
        with run.stage("evaluate") as stage:
            result = evaluate_tiger(dataset, sids, out / "train", split="test", users=cfg.test_users or 0,
                                    seed=cfg.eval_seed, ks=KS, progress=progress, device=device)
            write_per_unit(out / "eval", result.pop("per_unit"))
            write_json(out / "eval" / "metrics.json", result)
            stage.outputs = {**result, "metrics_file": str(out / "eval" / "metrics.json")}

    with run.stage("report") as stage:
        stage.outputs = {"markdown": str(write_tiger_report(run))}
    return run


def write_tiger_report(run: RunFolder) -> Path:
    """``report.md``: settings, test metrics, training summary and wall time per stage."""
    from ..io import atomic_path
    from .report import _duration

    s = run.record["settings"]
    ev, tr, pr = run.outputs("evaluate"), run.outputs("train"), run.outputs("prune")
    val_users = f"up to {s['val_users']} seeded" if s["val_users"] else "all"
    lines = [f"# TIGER run: {s['method']} on {s['data']}, budget {s['budget']}, seed {s['seed']}", "",
             f"TIGER preset `{s['preset']}`; {s['budget']} of {pr.get('pool_size', '?')} training samples selected by "
             f"`{s['method']}` (scorers: {', '.join(pr.get('scorers', [])) or 'none'}); trained from scratch, batch "
             f"{s['batch_size']}, lr {s['lr']:g}, at most {s['epochs']} epochs with early stopping on the validation "
             f"loss ({val_users} validation users); constrained beam search (beam 20) on "
             f"{ev.get('users', '?')} test users (seed {s['eval_seed']}).", "", "## Metrics", ""]
    if ev.get("metrics"):
        m, se = ev["metrics"], ev.get("stderr", {})
        keys = [f"{name}@{k}" for name in ("recall", "ndcg") for k in KS]
        lines += ["| " + " | ".join(keys) + " |", "|---" * len(keys) + "|",
                  "| " + " | ".join(f"{m[k]:.4f} ± {se.get(k, 0.0):.4f}" for k in keys) + " |", "",
                  "± is the standard error over the test users."]
    else:
        lines.append("not evaluated yet")
    lines += ["", "## Training", ""]
    if tr:
        lines.append(f"{tr['n_samples']} samples, {tr['epochs']} epochs / {tr['steps']} steps, stopped by {tr['stopped']}; "
                     f"best validation {tr['val_metric']} {tr['best_val']:.4f} at epoch {tr['best_epoch']}.")
    ids = run.outputs("semantic_ids")
    if ids:
        lines += ["", f"Semantic IDs: `{ids['folder']}`" + (" (built by this run)" if ids.get("built") else "")]
        lines += [f"- {line}" for line in ids.get("stats", [])]
    lines += ["", "## Wall time per stage", "", "| stage | status | wall time |", "|---|---|---|"]
    for name, stage in run.stages.items():
        if name != "report":
            lines.append(f"| {name} | {stage.get('status')} | {_duration(stage.get('wall_s'))} |")
    md = run.path / "report.md"
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return md
