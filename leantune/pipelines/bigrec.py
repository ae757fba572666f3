"""The BIGRec job end to end: prune -> fine-tune -> evaluate (fine-tuned and base) -> report.

Every stage writes into one run folder and is recorded in its ``run.json``; re-running the same
job skips finished stages, and an unfinished fine-tuning or evaluation resumes from its
checkpoint / partial predictions. The base-model evaluation does not depend on the selection, so
it is cached across runs (keyed by model weights, data, test users and generation settings).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..device import resolve_device
from ..errors import LeantuneError, ParameterError
from .runs import RunFolder
from ..train.config import FinetuneConfig

STAGES = ("prune", "finetune", "evaluate", "evaluate_base", "report")


@dataclass
class BigrecRunConfig:
    """Settings of a BIGRec run (``run_bigrec``): prune, LoRA fine-tune, evaluate, report."""

    data: str = "games"
    budget: int = 256
    method: str = "dealrec"
    pool: int | None = 4096
    seed: int = 0
    model: str = "smollm2"
    test_users: int | None = 500
    eval_seed: int = 0  # which test users; kept apart from ``seed`` so runs with other seeds share them
    base: bool = True  # also evaluate the base model on the same users
    device: str = "auto"
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    num_beams: int = 4
    max_new_tokens: int = 64
    gen_batch_size: int | None = None  # None: chosen from the prompt lengths
    gen_dtype: str = "float32"  # "bfloat16": generation about 2x faster on an AMX CPU (see BigrecEvalConfig)
    prune_options: dict = field(default_factory=dict)  # extra PruneConfig fields (lam, hard_prune, ...)

    def settings(self) -> dict:
        data = asdict(self)
        data["finetune"] = self.finetune.to_dict()
        if data["gen_dtype"] == "float32":  # the default is left out: run folders made before it existed match
            data.pop("gen_dtype")
        return data


def default_run_dir(cfg: BigrecRunConfig) -> Path:
    name = Path(str(cfg.data)).name
    return Path("runs") / f"run-{name}-{cfg.method}-b{cfg.budget}-s{cfg.seed}"


def _check_run(cfg: BigrecRunConfig, dataset) -> None:
    """Settings of every stage that can be checked without work."""
    from ..models.llm import resolve_model
    from ..pruning import PruneConfig

    n = len(dataset.train_samples)
    if cfg.pool is not None and not 0 < cfg.pool <= n:
        raise ParameterError("pool", cfg.pool, f"must be between 1 and {n} (training samples of {dataset.name})")
    if not 0 < cfg.budget <= (cfg.pool or n):
        raise ParameterError("budget", cfg.budget, f"must be between 1 and {cfg.pool or n} (the pool)")
    fields = {k: v for k, v in cfg.prune_options.items() if k != "options"}
    PruneConfig(budget=cfg.budget, method=cfg.method, seed=cfg.seed, pool=cfg.pool,
                options=dict(cfg.prune_options.get("options", {})), **fields).validate()
    resolve_model(cfg.model)


def run_bigrec(cfg: BigrecRunConfig, out_dir=None, progress: bool = True, log=print) -> RunFolder:
    """Run (or resume) a BIGRec job: prune -> LoRA fine-tune -> evaluate (and the base model) -> report; returns the run folder."""
    from ..data import load_dataset
    from ..evaluation.bigrec import BigrecEvalConfig, evaluate_bigrec
    from ..models.llm import load_tokenizer
    from ..tasks.recommendation import RecommendationTask
    from ..train.lora import finetune

    out = Path(out_dir) if out_dir else default_run_dir(cfg)
    # Everything that can be checked is checked before the run folder exists: a refused command
    # leaves nothing behind, and no bad setting surfaces after pruning and fine-tuning.
    device = resolve_device(cfg.device)
    dataset = load_dataset(cfg.data)
    task = RecommendationTask(dataset, cutoff_len=cfg.finetune.cutoff_len)
    eval_cfg = BigrecEvalConfig(users=cfg.test_users, seed=cfg.eval_seed, num_beams=cfg.num_beams,
                                max_new_tokens=cfg.max_new_tokens, batch_size=cfg.gen_batch_size,
                                cutoff_len=cfg.finetune.cutoff_len, device=device, gen_dtype=cfg.gen_dtype)
    _check_run(cfg, dataset)
    # The device changes speed, not results; a run may be continued on another machine.
    run = RunFolder(out, "bigrec", cfg.settings(), ignore=("device", "gen_batch_size"))

    if not run.done("prune"):
        log(f"[prune] {cfg.method}, budget {cfg.budget}, pool {cfg.pool} -> {out / 'prune'}")
        with run.stage("prune") as stage:
            from ..pruning import prune

            options = dict(cfg.prune_options)
            extra = options.pop("options", {})
            result = prune(dataset, cfg.budget, cfg.method, out / "prune", seed=cfg.seed, pool=cfg.pool,
                           model=cfg.model, progress=progress, options={"device": device, **extra}, **options)
            stage.outputs = {"selection": str(result.selection_path), "n_selected": len(result.sample_ids),
                             "timings": result.timings}
    selection = json.loads(Path(run.outputs("prune")["selection"]).read_text())
    unit_ids = [str(i) for i in selection["sample_ids"]]

    if not run.done("finetune"):
        tokenizer = load_tokenizer(cfg.model)
        train = task.train_examples(unit_ids, tokenizer)
        valid = task.valid_examples(tokenizer, unit_ids=unit_ids)
        ft = cfg.finetune
        ft_cfg = FinetuneConfig.from_dict({**ft.to_dict(), "device": device if ft.device == "auto" else ft.device})
        log(f"[finetune] {len(train)} training / {len(valid)} validation examples, "
            f"{ft_cfg.total_steps(len(train))} steps -> {out / 'finetune'}")
        with run.stage("finetune") as stage:
            result = finetune(cfg.model, train, valid, out / "finetune", ft_cfg, progress=progress)
            stage.outputs = result.to_dict()
            stage.outputs.pop("history")
        if result.status == "diverged":
            log(f"[finetune] diverged: {result.reason}")
    ft_out = run.outputs("finetune")
    adapter = ft_out.get("adapter_dir")

    if not run.done("evaluate"):
        if adapter is None:
            raise LeantuneError(f"{out}: fine-tuning diverged before any checkpoint ({ft_out.get('reason')}); nothing to evaluate")
        log(f"[evaluate] fine-tuned model on {cfg.test_users or 'all'} test users -> {out / 'eval'}")
        with run.stage("evaluate") as stage:
            result = evaluate_bigrec(cfg.model, dataset, adapter, eval_cfg, out / "eval", progress=progress)
            stage.outputs = result.to_dict()

    if cfg.base and not run.done("evaluate_base"):
        base_dir = base_eval_dir(cfg.model, dataset, eval_cfg)
        log(f"[evaluate_base] base model on the same users -> {base_dir}")
        with run.stage("evaluate_base") as stage:
            reused = (base_dir / "metrics.json").exists()
            result = evaluate_bigrec(cfg.model, dataset, None, eval_cfg, base_dir, progress=progress)
            stage.outputs = {**result.to_dict(), "reused": reused}

    with run.stage("report") as stage:
        from .report import write_run_report

        stage.outputs = {k: str(v) for k, v in write_run_report(run).items()}
    return run


def base_eval_dir(model_spec: str, dataset, eval_cfg) -> Path:
    """Shared cache folder of a base-model evaluation (same model, data, users and settings)."""
    from ..data import dataset_fingerprint
    from ..evaluation.grounding import weights_fingerprint
    from ..models.llm import resolve_model
    from ..paths import cache_dir

    key = json.dumps([weights_fingerprint(resolve_model(model_spec)), dataset_fingerprint(dataset, "evaluation"), eval_cfg.identity()])
    return cache_dir("bigrec-base") / hashlib.sha256(key.encode()).hexdigest()[:20]


def finetune_recommendation(cfg, data="games", model: str = "smollm2", *, selection=None, budget: int | None = None,
                            out=None, stop_after_fraction: float | None = None, progress: bool = True):
    """LoRA fine-tuning on the recommendation prompts of a ``leantune prune`` selection or of a seeded
    random ``budget`` (``training_subset``, drawn with ``cfg.seed``), validated and early-stopped on the
    same users' validation samples. Returns ``(FinetuneResult, out folder, units)``."""
    from ..data.units import training_subset
    from ..models.llm import load_tokenizer
    from ..tasks.recommendation import RecommendationTask
    from ..train import finetune

    if (selection is None) == (budget is None):
        raise LeantuneError("finetune needs a selection or a budget (one of them)")
    task = RecommendationTask(data, cutoff_len=cfg.cutoff_len)
    if selection is not None:
        from ..pruning import load_selection

        units = [str(i) for i in load_selection(selection).sample_ids]
    else:
        pool = task.train_pool()
        if not 0 < budget <= len(pool):
            raise ParameterError("budget", budget, f"must be between 1 and {len(pool)} (training samples of {task.dataset.name})")
        units = sorted(training_subset(pool, budget, cfg.seed), key=int)
    tokenizer = load_tokenizer(model)
    train, valid = task.train_examples(units, tokenizer), task.valid_examples(tokenizer, unit_ids=units)
    out = Path(out) if out is not None else Path("runs") / f"finetune-{Path(str(data)).name}-n{len(units)}-s{cfg.seed}"
    result = finetune(model, train, valid, out, cfg, stop_after_fraction=stop_after_fraction, progress=progress)
    return result, out, units
