"""leantune: data- and compute-efficient LoRA fine-tuning of LLMs.

The names below are the Python API of the ``leantune`` commands (load data, prune, fine-tune,
evaluate, run, curve, tune, compare). They are imported on first use, so ``import leantune``
stays cheap (no torch, no transformers)::

    import leantune

    games = leantune.load_dataset("games")
    selection = leantune.prune(games, budget=64, method="random", pool=512)
"""
import importlib as _importlib

__version__ = "0.1.0"

# public name -> "module:attribute"; resolved lazily by __getattr__ below.
_LAZY = {
    # data
    "load_dataset": "leantune.data:load_dataset",
    # prune (`leantune prune`)
    "prune": "leantune.pruning:prune",
    "score_samples": "leantune.pruning:score_samples",  # in memory: a table of score columns
    "select_samples": "leantune.pruning:select_samples",
    "PruneConfig": "leantune.pruning:PruneConfig",
    "load_selection": "leantune.pruning:load_selection",
    # fine-tune (`leantune finetune`)
    "finetune": "leantune.train:finetune",
    "finetune_recommendation": "leantune.pipelines.bigrec:finetune_recommendation",
    # attribute extraction (`leantune attributes evaluate|finetune`)
    "evaluate_attributes": "leantune.pipelines.attributes:evaluate_attributes",
    "finetune_attributes": "leantune.pipelines.attributes:finetune_attributes",
    "attribute_finetune_config": "leantune.pipelines.attributes:attribute_finetune_config",  # a model's default recipe
    "FinetuneConfig": "leantune.train:FinetuneConfig",
    "RecommendationTask": "leantune.tasks.recommendation:RecommendationTask",
    "load_tokenizer": "leantune.models.llm:load_tokenizer",
    # evaluate (`leantune evaluate`)
    "evaluate_bigrec": "leantune.evaluation.bigrec:evaluate_bigrec",
    "BigrecEvalConfig": "leantune.evaluation.bigrec:BigrecEvalConfig",
    # prune -> train -> evaluate in one run folder (`leantune run`, `leantune run --recommender tiger`)
    "run_bigrec": "leantune.pipelines.bigrec:run_bigrec",
    "BigrecRunConfig": "leantune.pipelines.bigrec:BigrecRunConfig",
    "run_tiger": "leantune.pipelines.tiger:run_tiger",
    "TigerRunConfig": "leantune.pipelines.tiger:TigerRunConfig",
    # any instruction dataset (`leantune prune --task sft`, `leantune finetune --task sft`, `leantune data export`)
    "SFTTask": "leantune.tasks.sft:SFTTask",
    "read_sft": "leantune.tasks.sft:read_sft",
    # scoring and selecting the units of any text task (the one pruning path; `score_sft`/`select_sft` are its SFT names)
    "score_units": "leantune.pipelines.units:score_units",
    "select_units": "leantune.pipelines.units:select_units",
    "score_sft": "leantune.pipelines.sft:score_sft",
    "select_sft": "leantune.pipelines.sft:select_sft",
    "prune_sft": "leantune.pipelines.sft:prune_sft",
    "finetune_sft": "leantune.pipelines.sft:finetune_sft",
    # learning curves (`leantune curve`)
    "learning_curve": "leantune.curves:learning_curve",
    "CurveConfig": "leantune.curves:CurveConfig",
    "plan_curve": "leantune.curves:plan_curve",
    "resolve_recipe": "leantune.curves:resolve_recipe",  # a curve's recipe: the short-run one or the model's own
    "compare_curves": "leantune.curves:compare_curves",  # two curves size by size (`leantune compare-curves`)
    # hyperparameter search (`leantune tune`, `leantune tune report`)
    "EarlySearch": "leantune.tuning:EarlySearch",
    "TuneConfig": "leantune.tuning:TuneConfig",
    "FinetuneRunner": "leantune.tuning.finetune_runner:FinetuneRunner",
    "load_space": "leantune.tuning:load_space",
    "write_tune_report": "leantune.tuning:write_report",
    # paired comparison of runs, test-set sizing and seed planning (`leantune compare`, `leantune power`)
    "compare": "leantune.evaluation.compare:compare",
    "read_comparison": "leantune.evaluation.compare:read_comparison",
    "compare_by_group": "leantune.evaluation.compare_groups:compare_by_group",
    "read_grouped_comparison": "leantune.evaluation.compare_groups:read_grouped_comparison",
    "seed_plan": "leantune.evaluation.compare:seed_plan",
    "seed_paired": "leantune.evaluation.compare:seed_paired",
    "load_evaluation": "leantune.evaluation.compare:load_evaluation",
    "base_evaluation": "leantune.evaluation.compare:base_evaluation",
    "minimum_detectable_effect": "leantune.evaluation.compare:minimum_detectable_effect",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(_importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
