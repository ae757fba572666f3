"""Prune, fine-tune and evaluate any SFT dataset (``--task sft``, ``leantune.tasks.sft``).

``score_sft`` computes one method's score columns for every training record, ``select_sft`` turns
them into a budget with any selector, ``prune_sft`` does both into a folder (``selection.json``
names the exact file by its SHA-256), and ``finetune_sft`` trains a LoRA adapter on a selection
(or a seeded random budget, or everything) and evaluates the answer loss per validation record,
so that runs compare paired with ``leantune compare``.

Scoring and selection are ``leantune.pipelines.units`` (``score_units``, ``select_units``), the
pruning path of every text task; see there for the methods and selectors.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ParameterError
from ..io import read_json, refuse_other_settings, write_json, write_jsonl
from ..paths import display_path

from .units import check_method, check_options, scorer_settings, score_units, select_units

# The SFT names of the one unit-pruning path (``leantune.pipelines.units``).
score_sft = score_units
select_sft = select_units


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
        raise ParameterError("budget", budget, "must be a positive number of records")
    if target is not None and method != "gradient-influence":
        raise ParameterError("target", target, f"read by method gradient-influence only (not {method})")
    options = dict(options or {})
    check_options(options)
    if method == "gradient-influence":
        from ..scoring.gradient_influence import GradientInfluenceConfig

        GradientInfluenceConfig.from_options(options)  # checked before any work
    task = SFTTask(data=str(data), valid=str(valid) if valid else None, cutoff_len=cutoff_len, progress=progress)
    pool = task.train_pool()
    if budget > len(pool):
        raise ParameterError("budget", budget, f"larger than the training records of {data} ({len(pool)})")
    out = Path(out)
    settings = {"task": "sft", "data": display_path(data), "data_sha256": file_fingerprint(data),
                "valid": display_path(valid) if valid else None, "valid_sha256": file_fingerprint(valid) if valid else None,
                "target": display_path(target) if target else None, "method": method, "selector": chosen,
                "budget": budget, "seed": seed, "model": model, "cutoff_len": cutoff_len,
                "options": {k: v for k, v in sorted(options.items())}}
    sel_path = out / "selection.json"
    if sel_path.is_file():
        stored = read_json(sel_path)
        refuse_other_settings(stored.get("settings", {}), settings, "an SFT selection", out, "use another output folder")
        return SFTPruneResult(stored, sel_path, out / "scores.jsonl" if (out / "scores.jsonl").is_file() else None, True)
    t0 = time.perf_counter()
    scores = score_units(task, method, model, seed, options, target, out, progress)
    scoring_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    positions = select_units(scores, len(pool), method, budget, seed, selector)
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
                 base: bool = False, generate: str | None = None, max_new_tokens: int = 64, progress: bool = True) -> SFTFinetuneResult:
    """LoRA fine-tuning (``cfg``: a ``FinetuneConfig``; its seed also draws a ``budget`` sample) on the
    selected records, then the answer loss per validation record in ``out/eval`` (and, with ``base``,
    the base model's in ``out/base/eval``); ``out/run.json`` names the method and seed for
    ``leantune compare``. ``generate`` (``exact-match`` or ``FILE.py:FUNCTION``) also generates each
    validation answer and scores it (column ``exact_match`` or ``score``)."""
    from ..device import resolve_device
    from ..evaluation.units import write_per_unit
    from ..models.llm import load_model, load_tokenizer
    from ..tasks.sft import SFTTask
    from ..train import finetune, load_finetuned

    if selection is not None and budget is not None:
        raise ParameterError("selection", selection, "give a selection or a budget, not both")
    task = SFTTask(data=str(data), valid=str(valid) if valid else None, cutoff_len=cfg.cutoff_len, generate=generate,
                   max_new_tokens=max_new_tokens, progress=progress)
    pool = task.train_pool()
    if selection is not None:
        units, sel = load_sft_selection(selection, data)
        task.records("train", units)  # every unit must be a training record of this split
        method = sel["method"]
    elif budget is not None:
        if not 0 < budget <= len(pool):
            raise ParameterError("budget", budget, f"must be between 1 and {len(pool)} (training records of {data})")
        from ..data.units import training_subset

        units = training_subset(pool, budget, cfg.seed)
        method = "random"
    else:
        units, method = pool, "all"
    out = Path(out)
    tokenizer = load_tokenizer(model)
    train = task.train_examples(units, tokenizer)
    from ..data.tokenize import answer_cut_off

    cut = [ex.example_id for ex in train if answer_cut_off(tokenizer, ex, cfg.cutoff_len)]
    if cut:
        raise ParameterError("cutoff_len", cfg.cutoff_len, f"cuts off the whole answer of {len(cut)} record(s) (e.g. line "
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
        raise ParameterError("format", repr(fmt), f"choose one of {', '.join(EXPORT_FORMATS)}")
    if split not in ("train", "valid", "test"):
        raise ParameterError("split", repr(split), "choose train, valid or test")
    if limit is not None and limit < 1:
        raise ParameterError("limit", limit, "must be at least 1")
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
        raise ParameterError("task", repr(task), "export writes the shipped tasks attributes or recommendation")
    return records
