"""Pruning for any text task: score every training unit, then keep a budget of them.

One path for every task that builds training text (``leantune.tasks``: ``sft``, ``attributes``,
``recommendation``): ``leantune prune --task sft``, ``leantune curve --method ...`` and the
benchmarks all call ``score_units`` and ``select_units``. Both are pure in-memory functions (the
scores come back as columns, one row per unit of ``task.train_pool()``); writing folders is the
caller's business. Every scorer tokenises prompt + answer with the trainer's own function
(``leantune.data.tokenize.tokenize_example``, through ``scoring.effort.encode_example``) at the
task's ``cutoff_len``, so effort and influence are measured on the loss that is trained.

Methods (scorers) and the selector each uses unless ``selector`` says otherwise:

* ``random``: no score; the seeded subset every command draws (``leantune.data.units.training_subset``).
* ``effort``: DEALRec's effort, the LoRA gradient norm on the trained loss (coverage-enhanced selection).
* ``loss``: the base model's mean answer loss (coverage-enhanced selection).
* ``gradient-influence``: LESS — projected LoRA gradients, mean cosine with a target set's (top-k).
* ``kcenter``: k-center greedy on the base model's mean-pooled prompt states.

Any scored method takes the selectors ``coverage``, ``topk`` and ``stratified``; ``kcenter`` and
``random`` are their own selectors. DEALRec's influence, which needs the recommendation surrogate,
runs through ``leantune.pruning.prune`` on the recommendation samples themselves.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import LeantuneError, ParameterError
from ..paths import display_path

UNIT_METHODS = {  # method -> (score column, default selector)
    "random": (None, "random"),
    "effort": ("effort", "coverage"),
    "loss": ("loss", "coverage"),
    "gradient-influence": ("gradient_influence", "topk"),
    "kcenter": ("embedding", "kcenter"),
}
SCORE_SELECTORS = ("coverage", "topk", "stratified")


def check_method(method: str, selector: str | None = None, task: str = "sft") -> str:
    """The selector ``method`` runs with (``selector`` or its default); a one-line error otherwise."""
    if method not in UNIT_METHODS:
        hint = f"; {method} is a selector: pass it as the selector" if method in SCORE_SELECTORS else ""
        raise ParameterError("method", repr(method), f"not available for the {task} task (choose one of {', '.join(UNIT_METHODS)}{hint})")
    column, default = UNIT_METHODS[method]
    chosen = selector or default
    if column in (None, "embedding"):
        if chosen != default:
            raise ParameterError("selector", repr(chosen), f"method {method} selects with {default} only")
    elif chosen not in SCORE_SELECTORS:
        raise ParameterError("selector", repr(chosen), f"method {method} takes one of {', '.join(SCORE_SELECTORS)}")
    return chosen


def check_options(options: dict) -> None:
    """Refuse ``--opt`` keys no unit scorer reads (``effort_<field>``, ``gi_<field>``, ``device``)."""
    from dataclasses import fields

    from ..scoring.effort import EffortConfig
    from ..scoring.gradient_influence import GradientInfluenceConfig

    known = {f"effort_{f.name}" for f in fields(EffortConfig)} | {f"gi_{f.name}" for f in fields(GradientInfluenceConfig)} | {"device"}
    unknown = sorted(set(options) - known - {"progress"})
    if unknown:
        raise ParameterError("options", unknown[0], "not an option of the unit scorers (effort_<field>, gi_dim, gi_warmup_steps, "
                            "gi_warmup_fraction, gi_batch_size, device)")


def scorer_settings(method: str, model: str, options: dict, mask_prompt: bool = True) -> dict:
    """Every setting of ``method``'s scorer after defaults and ``--opt`` (the typed configs as dicts)."""
    from dataclasses import asdict

    from ..scoring.effort import EffortConfig
    from ..scoring.gradient_influence import GradientInfluenceConfig

    column = UNIT_METHODS[method][0]
    out = {}
    if column in ("effort", "gradient_influence"):
        effort = asdict(EffortConfig.from_options({**options, "model": model}))
        effort.pop("progress", None)
        out["effort_model"] = {**effort, "mask_prompt": mask_prompt}
    if column == "gradient_influence":
        out["gradient_influence"] = asdict(GradientInfluenceConfig.from_options(options))
    return out


def _effort_model(model: str, seed: int, options: dict, mask_prompt: bool, adapter=None):
    from dataclasses import replace

    from ..scoring.effort import EffortConfig, EffortModel

    cfg = EffortConfig.from_options({**options, "model": model})
    cfg = replace(cfg, mask_prompt=mask_prompt, progress=options.get("progress", True), adapter=str(adapter) if adapter else cfg.adapter)
    return EffortModel(cfg, _device(options), seed)


def score_units(task, method: str, model: str = "smollm2", seed: int = 0, options: dict | None = None,
                target=None, work_dir=None, progress: bool = True) -> dict[str, np.ndarray]:
    """Score columns of ``method`` for every unit of ``task.train_pool()`` (in that order); ``{}`` for random.

    ``options``: scorer settings (``effort_<field>``, ``gi_<field>``, ``device``). ``target``: an SFT
    file whose records are gradient influence's target set (default: the task's validation examples).
    ``work_dir``: where gradient influence's warm-up adapter goes (needed only with ``gi_warmup_steps``).
    """
    from ..models.llm import load_tokenizer
    from ..scoring.effort import encode_example

    check_method(method, None, task.name)
    options = {**(options or {}), "progress": progress}
    check_options(options)
    column = UNIT_METHODS[method][0]
    if column is None:
        return {}
    tokenizer = load_tokenizer(model)
    examples = task.train_examples(task.train_pool(), tokenizer)
    cutoff, mask = task.cutoff_len, not task.train_on_inputs
    if column == "embedding":
        from ..scoring.embedding import prompt_embeddings

        return {column: prompt_embeddings(model, [e.prompt for e in examples], _device(options), progress=progress)}
    if column == "loss":
        from ..models.llm import load_model
        from ..tasks.sft import answer_losses

        lm, tok = load_model(model, device=_device(options))
        return {column: answer_losses(lm, tok, examples, cutoff, progress=progress)[0]}
    if column == "effort":
        scorer = _effort_model(model, seed, options, mask)
        return {column: scorer.scores([encode_example(e, scorer.tokenizer, cutoff, mask) for e in examples]).astype(np.float32)}
    # gradient influence (LESS)
    from ..scoring.gradient_influence import GradientInfluenceConfig, gradient_features, influence_scores

    gi = GradientInfluenceConfig.from_options(options)
    adapter = _warmup(task, model, gi, seed, Path(work_dir) / "warmup" if work_dir else None, progress) if gi.warmup_steps else None
    scorer = _effort_model(model, seed, options, mask, adapter)
    if target is not None:
        from ..tasks.sft import read_sft, to_example

        targets = [to_example(r, scorer.tokenizer) for r in read_sft(target)]
    else:
        targets = task.valid_examples(scorer.tokenizer)
    enc = lambda exs: [encode_example(e, scorer.tokenizer, cutoff, mask) for e in exs]  # noqa: E731
    train_f = gradient_features(scorer, enc(examples), gi.dim, seed, gi.batch_size, progress)
    target_f = gradient_features(scorer, enc(targets), gi.dim, seed, gi.batch_size, progress)
    if not np.any(target_f):
        raise LeantuneError("gradient influence: no target example has an answer token within the cutoff length")
    return {column: influence_scores(train_f, target_f)}


def _device(options: dict) -> str:
    """The scoring device: ``options['device']`` (default cpu), resolved once by the project's resolver."""
    from ..device import resolve_device

    return resolve_device(str(options.get("device", "cpu")))


def _warmup(task, model: str, gi, seed: int, folder, progress: bool):
    """LESS's warm-up: LoRA training for ``gi.warmup_steps`` steps on a seeded ``gi.warmup_fraction``
    of the training units (``training_subset``); returns the adapter folder."""
    from ..data.units import training_subset
    from ..models.llm import load_tokenizer
    from ..train import FinetuneConfig, finetune

    if folder is None:
        raise LeantuneError("gradient influence with gi_warmup_steps needs a work folder for the warm-up adapter")
    pool = task.train_pool()
    units = training_subset(pool, max(1, round(gi.warmup_fraction * len(pool))), seed)
    cfg = FinetuneConfig(max_steps=gi.warmup_steps, lr=1e-3, batch_size=8, micro_batch_size=4, train_on_inputs=task.train_on_inputs,
                         cutoff_len=task.cutoff_len, early_stopping_patience=None, seed=seed, device="cpu")
    result = finetune(model, task.train_examples(units, load_tokenizer(model)), None, folder, cfg, progress=progress)
    if result.adapter_dir is None:
        raise LeantuneError(f"gradient influence warm-up in {display_path(folder)} ended without an adapter ({result.status})")
    return result.adapter_dir


def select_units(scores: dict[str, np.ndarray], pool_size: int, method: str, budget: int, seed: int,
                 selector: str | None = None) -> list[int]:
    """Positions (into the training pool) of the ``budget`` units ``method`` with ``selector`` keeps, sorted.

    ``random`` is ``leantune.data.units.training_subset``: the same units as ``finetune --budget``,
    a curve's run of that size and a tuning study's ``--train-size`` with the same seed."""
    from ..data.units import training_subset
    from ..selection import SELECTORS
    from ..selection.base import check_budget

    chosen = check_method(method, selector)
    check_budget(budget, pool_size)
    column = UNIT_METHODS[method][0]
    if column is not None:
        if column not in scores:
            raise LeantuneError(f"method {method!r} needs the score column {column!r} (have: {', '.join(sorted(scores)) or 'none'})")
        if len(scores[column]) != pool_size:
            raise LeantuneError(f"score column {column!r} has {len(scores[column])} rows for a pool of {pool_size} units")
    rng = np.random.default_rng([seed, 2])
    if chosen == "random":
        positions = training_subset(range(pool_size), budget, seed)
    elif chosen == "kcenter":
        positions = SELECTORS.get("kcenter")(column="embedding").select(scores, budget, rng)
    else:
        positions = SELECTORS.get(chosen)(weights={column: 1.0}).select(scores, budget, rng)
    return sorted(int(i) for i in np.asarray(positions))
