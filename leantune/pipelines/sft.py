"""Prune, fine-tune and evaluate any SFT dataset (``--task sft``, ``leantune.tasks.sft``).

``score_sft`` computes one method's score columns for every training record, ``select_sft`` turns
them into a budget with any selector, ``prune_sft`` does both into a folder (``selection.json``
names the exact file by its SHA-256), and ``finetune_sft`` trains a LoRA adapter on a selection
(or a seeded random budget, or everything) and evaluates the answer loss per validation record,
so that runs compare paired with ``leantune compare``.

Methods (scorers) and the selector each uses unless ``selector`` says otherwise:

* ``random``: no score; a uniform sample.
* ``effort``: DEALRec's effort, the LoRA gradient norm on the answer (coverage-enhanced selection).
* ``loss``: the base model's mean answer loss (coverage-enhanced selection).
* ``gradient-influence``: LESS — projected LoRA gradients, mean cosine with a target set's (top-k).
* ``kcenter``: k-center greedy on the base model's mean-pooled prompt states.

Any scored method takes the selectors ``coverage``, ``topk`` and ``stratified``; ``kcenter`` and
``random`` are their own selectors.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LeantuneError
from ..io import read_json, refuse_other_settings, write_json, write_jsonl
from ..paths import display_path

SFT_METHODS = {  # method -> (score column, default selector)
    "random": (None, "random"),
    "effort": ("effort", "coverage"),
    "loss": ("loss", "coverage"),
    "gradient-influence": ("gradient_influence", "topk"),
    "kcenter": ("embedding", "kcenter"),
}
SCORE_SELECTORS = ("coverage", "topk", "stratified")


def check_method(method: str, selector: str | None) -> str:
    """The selector ``method`` runs with (``selector`` or its default); a one-line error otherwise."""
    if method not in SFT_METHODS:
        raise LeantuneError(f"--method {method!r} is not available for --task sft (choose one of {', '.join(SFT_METHODS)})")
    column, default = SFT_METHODS[method]
    chosen = selector or default
    if column in (None, "embedding"):
        if chosen != default:
            raise LeantuneError(f"--selector {chosen!r}: --method {method} selects with {default} only")
    elif chosen not in SCORE_SELECTORS:
        raise LeantuneError(f"--selector {chosen!r}: --method {method} takes one of {', '.join(SCORE_SELECTORS)}")
    return chosen


def check_options(options: dict) -> None:
    """Refuse ``--opt`` keys no SFT scorer reads (``effort_<field>``, ``gi_<field>``, ``device``)."""
    from dataclasses import fields

    from ..scoring.effort import EffortConfig
    from ..scoring.gradient_influence import GradientInfluenceConfig

    known = {f"effort_{f.name}" for f in fields(EffortConfig)} | {f"gi_{f.name}" for f in fields(GradientInfluenceConfig)} | {"device"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise LeantuneError(f"--opt {unknown[0]}: not an option of the SFT scorers (effort_<field>, gi_dim, gi_warmup_steps, "
                            "gi_warmup_fraction, gi_batch_size, device)")


def scorer_settings(method: str, model: str, options: dict) -> dict:
    """Every setting of ``method``'s scorer after defaults and ``--opt`` (the typed configs as dicts)."""
    from dataclasses import asdict

    from ..scoring.effort import EffortConfig
    from ..scoring.gradient_influence import GradientInfluenceConfig

    column = SFT_METHODS[method][0]
    out = {}
    if column in ("effort", "gradient_influence"):
        effort = asdict(EffortConfig.from_options({**options, "model": model}))
        effort.pop("progress", None)
        out["effort_model"] = {**effort, "mask_prompt": True}
    if column == "gradient_influence":
        out["gradient_influence"] = asdict(GradientInfluenceConfig.from_options(options))
    return out


def _effort_model(model: str, seed: int, options: dict, adapter=None):
    from dataclasses import replace

    from ..scoring.effort import EffortConfig, EffortModel

    cfg = EffortConfig.from_options({**options, "model": model})
    cfg = replace(cfg, mask_prompt=True, progress=options.get("progress", True), adapter=str(adapter) if adapter else cfg.adapter)
    from ..device import resolve_device

    return EffortModel(cfg, resolve_device(str(options.get("device", "cpu"))), seed)


def score_sft(task, method: str, model: str = "smollm2", seed: int = 0, options: dict | None = None,
              target=None, work_dir=None, progress: bool = True) -> dict[str, np.ndarray]:
    """Score columns of ``method`` for every record of ``task.train_pool()`` (in that order)."""
    from ..models.llm import load_tokenizer
    from ..scoring.effort import encode_example

    options = {**(options or {}), "progress": progress}
    column = SFT_METHODS[method][0]
    if column is None:
        return {}
    tokenizer = load_tokenizer(model)
    examples = task.train_examples(task.train_pool(), tokenizer)
    cutoff = task.config.cutoff_len
    if column == "embedding":
        from ..curves.scores import prompt_embeddings

        return {column: prompt_embeddings(model, [e.prompt for e in examples], progress=progress)}
    if column == "loss":
        from ..models.llm import load_model
        from ..tasks.sft import answer_losses

        lm, tok = load_model(model)
        return {column: answer_losses(lm, tok, examples, cutoff, progress=progress)[0]}
    if column == "effort":
        scorer = _effort_model(model, seed, options)
        return {column: scorer.scores([encode_example(e, scorer.tokenizer, cutoff, True) for e in examples])}
    # gradient influence (LESS)
    from ..scoring.gradient_influence import GradientInfluenceConfig, gradient_features, influence_scores

    gi = GradientInfluenceConfig.from_options(options)
    adapter = _warmup(task, model, gi, seed, Path(work_dir) / "warmup" if work_dir else None, progress) if gi.warmup_steps else None
    scorer = _effort_model(model, seed, options, adapter)
    if target is not None:
        from ..tasks.sft import read_sft, to_example

        targets = [to_example(r, scorer.tokenizer) for r in read_sft(target)]
    else:
        targets = task.valid_examples(scorer.tokenizer)
    enc = lambda exs: [encode_example(e, scorer.tokenizer, cutoff, True) for e in exs]  # noqa: E731
    train_f = gradient_features(scorer, enc(examples), gi.dim, seed, gi.batch_size, progress)
    target_f = gradient_features(scorer, enc(targets), gi.dim, seed, gi.batch_size, progress)
    if not np.any(target_f):
        raise LeantuneError("gradient influence: no target example has an answer token within the cutoff length")
    return {column: influence_scores(train_f, target_f)}


def _warmup(task, model: str, gi, seed: int, folder, progress: bool):
    """LESS's warm-up: LoRA training for ``gi.warmup_steps`` steps on a seeded ``gi.warmup_fraction``
    of the training records; returns the adapter folder."""
    from ..models.llm import load_tokenizer
    from ..train import FinetuneConfig, finetune

    if folder is None:
        raise LeantuneError("gradient influence with gi_warmup_steps needs a work folder for the warm-up adapter")
    pool = task.train_pool()
    n = max(1, round(gi.warmup_fraction * len(pool)))
    units = [pool[i] for i in sorted(np.random.default_rng([seed, 5]).choice(len(pool), n, replace=False))]
    cfg = FinetuneConfig(max_steps=gi.warmup_steps, lr=1e-3, batch_size=8, micro_batch_size=4, train_on_inputs=False,
                         cutoff_len=task.config.cutoff_len, early_stopping_patience=None, seed=seed, device="cpu")
    result = finetune(model, task.train_examples(units, load_tokenizer(model)), None, folder, cfg, progress=progress)
    if result.adapter_dir is None:
        raise LeantuneError(f"gradient influence warm-up in {display_path(folder)} ended without an adapter ({result.status})")
    return result.adapter_dir


def select_sft(scores: dict[str, np.ndarray], pool_size: int, method: str, budget: int, seed: int,
               selector: str | None = None) -> list[int]:
    """Positions (into the training pool) of the ``budget`` records ``method`` with ``selector`` keeps, sorted."""
    from ..selection import SELECTORS
    from ..selection.base import check_budget

    chosen = check_method(method, selector)
    check_budget(budget, pool_size)
    column = SFT_METHODS[method][0]
    rng = np.random.default_rng([seed, 2])
    if chosen == "random":
        positions = rng.choice(pool_size, budget, replace=False)
    elif chosen == "kcenter":
        positions = SELECTORS.get("kcenter")(column="embedding").select(scores, budget, rng)
    else:
        positions = SELECTORS.get(chosen)(weights={column: 1.0}).select(scores, budget, rng)
    return sorted(int(i) for i in np.asarray(positions))


@dataclass
class SFTPruneResult:
    record: dict
    selection_path: Path
    scores_path: Path | None
    reused: bool


def prune_sft(data, budget: int, method: str, out, *, selector: str | None = None, model: str = "smollm2",
              valid=None, target=None, seed: int = 0, cutoff_len: int = 512, options: dict | None = None,
              progress: bool = True) -> SFTPruneResult:
    """Score the records of SFT file ``data`` with ``method`` and keep ``budget`` of them into ``out``
    (``selection.json``, ``scores.jsonl``). Re-running with the same settings reuses the folder;
    other settings in the same folder are refused."""
    from ..tasks.sft import SFTTask, file_fingerprint

    chosen = check_method(method, selector)
    if budget < 1:
        raise LeantuneError(f"--budget {budget}: must be a positive number of records")
    if target is not None and method != "gradient-influence":
        raise LeantuneError(f"--target is read by --method gradient-influence only (not {method})")
    options = dict(options or {})
    check_options(options)
    if method == "gradient-influence":
        from ..scoring.gradient_influence import GradientInfluenceConfig

        GradientInfluenceConfig.from_options(options)  # checked before any work
    task = SFTTask(data=str(data), valid=str(valid) if valid else None, cutoff_len=cutoff_len, progress=progress)
    pool = task.train_pool()
    if budget > len(pool):
        raise LeantuneError(f"--budget {budget} is larger than the training records of {data} ({len(pool)})")
    out = Path(out)
    settings = {"task": "sft", "data": display_path(data), "data_sha256": file_fingerprint(data),
                "valid": display_path(valid) if valid else None, "valid_sha256": file_fingerprint(valid) if valid else None,
                "target": display_path(target) if target else None, "method": method, "selector": chosen,
                "budget": budget, "seed": seed, "model": model, "cutoff_len": cutoff_len,
                "options": {k: v for k, v in sorted(options.items())}}
    sel_path = out / "selection.json"
    if sel_path.is_file():
        stored = read_json(sel_path)
        refuse_other_settings(stored.get("settings", {}), settings, "an SFT selection", out, "use another --out")
        return SFTPruneResult(stored, sel_path, out / "scores.jsonl" if (out / "scores.jsonl").is_file() else None, True)
    t0 = time.perf_counter()
    scores = score_sft(task, method, model, seed, options, target, out, progress)
    scoring_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    positions = select_sft(scores, len(pool), method, budget, seed, selector)
    select_s = time.perf_counter() - t0
    scores_path = None
    flat = {k: v for k, v in scores.items() if np.ndim(v) == 1}
    if flat:
        scores_path = out / "scores.jsonl"
        write_jsonl(scores_path, [{"unit": u, **{k: float(v[i]) for k, v in flat.items()}} for i, u in enumerate(pool)])
    record = {"settings": settings, "scorer": scorer_settings(method, model, options), "unit_ids": [pool[i] for i in positions],
              "pool_size": len(pool),
              "valid_records": len(task.valid_records), "timings": {"scoring_s": round(scoring_s, 2), "select_s": round(select_s, 3)},
              "score_stats": {k: {"min": float(np.min(v)), "mean": float(np.mean(v)), "max": float(np.max(v)),
                                  "selected_mean": float(np.mean(np.asarray(v)[positions]))} for k, v in flat.items()}}
    write_json(sel_path, record)
    return SFTPruneResult(record, sel_path, scores_path, False)


def load_sft_selection(path, data) -> tuple[list[str], dict]:
    """Unit ids and settings of an SFT ``selection.json`` (or its folder), refused when it was made on
    another file than ``data``."""
    from ..errors import DataError
    from ..tasks.sft import file_fingerprint

    path = Path(path)
    file = path / "selection.json" if path.is_dir() else path
    if not file.is_file():
        raise DataError(file, "no selection.json (make one with `leantune prune --task sft`)")
    record = read_json(file)
    settings = record.get("settings") if isinstance(record, dict) else None
    if not isinstance(settings, dict) or settings.get("task") != "sft" or not isinstance(record.get("unit_ids"), list):
        raise DataError(file, "not an SFT selection (made by `leantune prune --task sft`)")
    if settings.get("data_sha256") != file_fingerprint(data):
        raise DataError(file, f"made on {settings.get('data')} (sha256 {settings.get('data_sha256')}), not on {display_path(data)} "
                              f"(sha256 {file_fingerprint(data)})")
    return [str(u) for u in record["unit_ids"]], settings


@dataclass
class SFTFinetuneResult:
    metrics: dict
    adapter_dir: Path | None
    status: str
    units: int
    out: Path


def finetune_sft(data, out, cfg, *, selection=None, budget: int | None = None, model: str = "smollm2", valid=None,
                 base: bool = False, progress: bool = True) -> SFTFinetuneResult:
    """LoRA fine-tuning (``cfg``: a ``FinetuneConfig``; its seed also draws a ``budget`` sample) on the
    selected records, then the answer loss per validation record in ``out/eval`` (and, with ``base``,
    the base model's in ``out/base/eval``); ``out/run.json`` names the method and seed for
    ``leantune compare``."""
    from ..device import resolve_device
    from ..evaluation.units import write_per_unit
    from ..models.llm import load_model, load_tokenizer
    from ..tasks.sft import SFTTask
    from ..train import finetune, load_finetuned

    if selection is not None and budget is not None:
        raise LeantuneError("give --selection or --budget, not both")
    task = SFTTask(data=str(data), valid=str(valid) if valid else None, cutoff_len=cfg.cutoff_len, progress=progress)
    pool = task.train_pool()
    if selection is not None:
        units, sel = load_sft_selection(selection, data)
        task.records("train", units)  # every unit must be a training record of this split
        method = sel["method"]
    elif budget is not None:
        if not 0 < budget <= len(pool):
            raise LeantuneError(f"--budget {budget}: must be between 1 and {len(pool)} (training records of {data})")
        units = [pool[i] for i in sorted(np.random.default_rng([cfg.seed, 2]).choice(len(pool), budget, replace=False))]
        method = "random"
    else:
        units, method = pool, "all"
    out = Path(out)
    tokenizer = load_tokenizer(model)
    train = task.train_examples(units, tokenizer)
    from ..data.tokenize import answer_cut_off

    cut = [ex.example_id for ex in train if answer_cut_off(tokenizer, ex, cfg.cutoff_len)]
    if cut:
        raise LeantuneError(f"--cutoff-len {cfg.cutoff_len} cuts off the whole answer of {len(cut)} record(s) (e.g. line "
                            f"{cut[0][1:]} of {data}); raise it")
    settings = {"task": "sft", "data": display_path(data), "method": method, "seed": cfg.seed, "units": len(units),
                "model": model, "selection": display_path(selection) if selection else None}
    write_json(out / "run.json", {"settings": settings})
    result = finetune(model, train, None, out / "train", cfg, progress=progress)
    metrics = {}
    device = resolve_device(cfg.device)
    if result.adapter_dir is not None:
        lm, tok = load_finetuned(model, result.adapter_dir, device=device)
        metrics, rows = task.evaluate_units(lm, tok)
        write_per_unit(out / "eval", rows)
        write_json(out / "eval" / "metrics.json", {"settings": settings, "metrics": metrics})
    if base:
        lm, tok = load_model(model, device=device)
        base_metrics, rows = task.evaluate_units(lm, tok)
        write_per_unit(out / "base" / "eval", rows)
        write_json(out / "base" / "run.json", {"settings": {**settings, "method": "base"}})
        write_json(out / "base" / "eval" / "metrics.json", {"settings": {**settings, "method": "base"}, "metrics": base_metrics})
    return SFTFinetuneResult(metrics, result.adapter_dir, result.status, len(units), out)


EXPORT_FORMATS = ("chat", "prompt-completion")


def export_records(task: str, data: str | None = None, split: str = "train", fmt: str = "chat",
                   limit: int | None = None, seed: int = 0) -> list[dict]:
    """A shipped task's ``split`` as SFT records (``--task sft`` input): ``chat`` messages (system and
    user message, the answer as the assistant's) or ``prompt-completion`` pairs (the prompt text the
    trainer uses without a chat template). ``limit``: a seeded sample of that many units."""
    from ..data.units import seeded_sample

    if fmt not in EXPORT_FORMATS:
        raise LeantuneError(f"--format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    if split not in ("train", "valid", "test"):
        raise LeantuneError(f"--split {split!r}: choose train, valid or test")
    if limit is not None and limit < 1:
        raise LeantuneError(f"--limit {limit}: must be at least 1")
    records = []
    if task == "attributes":
        from ..tasks.attributes_data import load_attribute_data
        from ..tasks.attributes_prompts import SYSTEM, product_answer, product_prompt, product_user_text

        for p in seeded_sample(load_attribute_data(data or "oa-mine").products(split), limit, seed, name="limit"):
            if fmt == "chat":
                records.append({"messages": [{"role": "system", "content": SYSTEM},
                                             {"role": "user", "content": product_user_text(p)},
                                             {"role": "assistant", "content": product_answer(p)}]})
            else:
                records.append({"prompt": product_prompt(p), "completion": product_answer(p)})
    elif task == "recommendation":
        from ..data import load_dataset
        from ..data.prompts import instruction_text, render, user_input

        ds = load_dataset(data or "games")
        for s in seeded_sample(list(ds.samples(split)), limit, seed, name="limit"):
            titles = [ds.title(i) for i in s.history]
            answer = ds.title(s.targets[0])
            if fmt == "chat":
                records.append({"messages": [{"role": "user", "content": f"{instruction_text(ds.item_noun)}\n\n{user_input(titles, ds.item_noun)}"},
                                             {"role": "assistant", "content": answer}]})
            else:
                records.append({"prompt": render(titles, ds.item_noun), "completion": answer})
    else:
        raise LeantuneError(f"--task {task!r}: export writes the shipped tasks attributes or recommendation")
    return records
