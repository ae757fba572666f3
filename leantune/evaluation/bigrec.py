"""BIGRec evaluation: generate a title per test user, ground it to items, Recall/NDCG@K.

``evaluate_bigrec(model_spec, data, adapter_dir=None, cfg, out_dir)`` evaluates the base model
(no adapter) or base + adapter on a seeded sub-sample of test users. With ``out_dir`` it is
resumable: generated titles are appended to ``predictions.partial.jsonl`` batch by batch, and a
finished evaluation (``metrics.json``) with the same settings is reused.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import LeantuneError, ParameterError
from ..io import read_json, read_jsonl, write_json, write_jsonl
from ..io import refuse_other_settings
from .generation import GenerationSettings, generate_texts
from ..train.lora import adapter_fingerprint
from .grounding import clean_prediction, item_embeddings, rank_items, text_embeddings, weights_fingerprint
from .metrics import DEFAULT_KS
from .units import PER_UNIT_FILE, mean_ranking_metrics, ranking_unit_rows, write_per_unit


GEN_DTYPES = ("float32", "bfloat16")


@dataclass
class BigrecEvalConfig:
    """Settings of a BIGRec evaluation (``evaluate_bigrec``): which users, beam search, grounding, metrics."""

    users: int | None = 500  # seeded sub-sample of users with targets; None = all
    seed: int = 0
    split: str = "test"  # "test" (all test items are targets) or "valid" (first validation item)
    num_beams: int = 4
    max_new_tokens: int = 64
    batch_size: int | None = None  # prompts generated at once; None: the generation default (32 in flight)
    embed_batch_size: int = 512  # texts per embedding batch (also capped at 4096 padded tokens)
    cutoff_len: int = 512
    ks: tuple[int, ...] = DEFAULT_KS
    device: str = "cpu"
    dtype: str = "float32"
    stop_at_newline: bool = True  # the response is the first line of the generated text
    # Weights dtype of generation only ("bfloat16": about 2x faster on a CPU with AMX, and a few
    # percent of responses differ from float32); grounding always uses the model as loaded (``dtype``).
    gen_dtype: str = "float32"

    def __post_init__(self):
        self.ks = tuple(self.ks)
        if self.split not in ("test", "valid"):
            raise LeantuneError(f"evaluation split {self.split!r}: choose 'test' or 'valid'")
        if self.users is not None and self.users <= 0:
            raise ParameterError("users", self.users, "must be positive")
        if self.num_beams < 1 or self.max_new_tokens < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise LeantuneError("num_beams, max_new_tokens and batch_size must be positive")
        if self.gen_dtype not in GEN_DTYPES:
            raise LeantuneError(f"gen_dtype {self.gen_dtype!r}: choose one of {', '.join(GEN_DTYPES)}")

    def identity(self) -> dict:
        """Settings that change the result (device and batch sizes only change speed)."""
        data = asdict(self)
        for key in ("batch_size", "embed_batch_size", "device"):
            data.pop(key)
        if data["gen_dtype"] == "float32":  # the default is left out: folders made before it existed match
            data.pop("gen_dtype")
        data["ks"] = list(self.ks)
        return data


@dataclass
class EvalResult:
    metrics: dict[str, float]
    n_users: int
    timings: dict[str, float] = field(default_factory=dict)  # generate_s, item_embed_s, ground_s
    out_dir: str | None = None
    model: str = ""
    adapter: str | None = None
    per_unit: list[dict] | None = field(default=None, repr=False)  # written to per_unit.jsonl, not metrics.json

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("per_unit")
        return data


def select_samples(dataset, split: str, users: int | None, seed: int) -> list:
    """A seeded sub-sample of the users that have targets in ``split`` (in file order)."""
    from ..data.units import seeded_sample

    samples = dataset.samples(split)
    if not samples:
        raise LeantuneError(f"{dataset.name}: no users with {split} targets")
    return seeded_sample(samples, users, seed, name="users")


def evaluate_bigrec(
    model_spec: str,
    data,
    adapter_dir=None,
    cfg: BigrecEvalConfig | None = None,
    out_dir=None,
    progress: bool = True,
) -> EvalResult:
    """Evaluate ``model_spec`` (+ the adapter in ``adapter_dir``) on ``data`` (name, folder or dataset)."""
    from ..data import SequenceDataset, dataset_fingerprint, load_dataset
    from ..models.llm import load_model, resolve_model

    cfg = cfg or BigrecEvalConfig()
    dataset = data if isinstance(data, SequenceDataset) else load_dataset(data)
    samples = select_samples(dataset, cfg.split, cfg.users, cfg.seed)
    identity = {
        "model": weights_fingerprint(resolve_model(model_spec)),
        "adapter": adapter_fingerprint(adapter_dir),
        "data": dataset_fingerprint(dataset, "evaluation"),
        "users": _ids_fingerprint(s.sample_id for s in samples),
        "settings": cfg.identity(),
    }
    out = Path(out_dir) if out_dir else None
    if out is not None:
        cached = _reuse(out, identity)
        if cached is not None:
            return cached
        write_json(out / "eval_settings.json", identity)

    if adapter_dir:
        from ..train import load_finetuned

        model, tokenizer = load_finetuned(model_spec, adapter_dir, dtype=cfg.dtype, device=cfg.device)
    else:
        model, tokenizer = load_model(model_spec, dtype=cfg.dtype, device=cfg.device)
    result = evaluate_loaded(model, tokenizer, dataset, samples, cfg, out, progress)
    result.model, result.adapter = str(model_spec), str(adapter_dir) if adapter_dir else None
    if out is not None:
        write_json(out / "metrics.json", result.to_dict())
    return result


def evaluate_loaded(model, tokenizer, dataset, samples: Sequence, cfg: BigrecEvalConfig, out: Path | None = None, progress: bool = True) -> EvalResult:
    """Generate, ground and score an already loaded model (base or with adapter) on ``samples``."""
    from ..data.prompts import sample_prompt

    done: dict[int, str] = {}
    partial = out / "predictions.partial.jsonl" if out else None
    if out is not None and (out / "predictions.jsonl").exists():
        done = {row["sample_id"]: row["prediction"] for row in read_jsonl(out / "predictions.jsonl")}
    if partial is not None and partial.exists():
        done.update({row["sample_id"]: row["prediction"] for row in _read_partial(partial)})
    todo = [s for s in samples if s.sample_id not in done]
    prompts = [sample_prompt(dataset, s, tokenizer, cfg.cutoff_len, with_response=False).prompt for s in todo]

    def save_batch(indices, texts):
        if partial is None:
            return
        with open(partial, "a") as fh:
            for i, text in zip(indices, texts):
                fh.write(json.dumps({"sample_id": todo[i].sample_id, "prediction": text}) + "\n")

    gen = GenerationSettings(cfg.num_beams, cfg.max_new_tokens, cfg.batch_size,
                             stop_at_newline=cfg.stop_at_newline)
    start = time.perf_counter()
    if todo:
        if cfg.gen_dtype != "float32":
            from ..device import warn_if_bf16_emulated

            warn_if_bf16_emulated(next(model.parameters()).device.type, f"--gen-dtype {cfg.gen_dtype}")
        gen_model = with_dtype(model, cfg.gen_dtype)
        for sample, text in zip(todo, generate_texts(gen_model, tokenizer, prompts, gen, progress, save_batch)):
            done[sample.sample_id] = text
        del gen_model
    generate_s = time.perf_counter() - start

    start = time.perf_counter()
    item_ids, item_vectors = item_embeddings(model, tokenizer, dataset, cfg.embed_batch_size, progress)
    item_embed_s = time.perf_counter() - start

    start = time.perf_counter()
    predictions = [clean_prediction(done[s.sample_id]) for s in samples]
    query = text_embeddings(model, tokenizer, predictions, batch_size=cfg.embed_batch_size)
    topk = rank_items(query, item_vectors, item_ids, k=max(cfg.ks))
    targets = [list(s.targets) for s in samples]
    unit_rows = ranking_unit_rows([s.sample_id for s in samples], topk, targets, cfg.ks)
    metrics = mean_ranking_metrics(unit_rows, cfg.ks)
    ground_s = time.perf_counter() - start

    if out is not None:
        rows = [
            {"sample_id": s.sample_id, "user": s.user, "prediction": done[s.sample_id], "targets": list(s.targets),
             "target_titles": [dataset.title(t) for t in s.targets], "top10": [int(i) for i in row[:10]]}
            for s, row in zip(samples, topk)
        ]
        write_jsonl(out / "predictions.jsonl", rows)
        write_per_unit(out, unit_rows)
        partial.unlink(missing_ok=True)
    return EvalResult(
        metrics=metrics,
        n_users=len(samples),
        timings={"generate_s": generate_s, "item_embed_s": item_embed_s, "ground_s": ground_s},
        out_dir=str(out) if out else None,
        per_unit=unit_rows,
    )


def with_dtype(model, dtype: str):
    """``model`` itself when its weights are already ``dtype``, else a copy converted to it."""
    import copy

    import torch

    target = getattr(torch, dtype)
    if next(model.parameters()).dtype == target:
        return model
    return copy.deepcopy(model).to(target)


def _read_partial(path: Path) -> list[dict]:
    """Rows of a partial predictions file; a torn last line (killed mid-write) is dropped."""
    rows = []
    with open(path) as fh:
        for line in fh:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def _reuse(out: Path, identity: dict) -> EvalResult | None:
    settings_path = out / "eval_settings.json"
    if not settings_path.exists():
        return None
    refuse_other_settings(read_json(settings_path), identity, "an evaluation", out)
    metrics_path = out / "metrics.json"
    # An evaluation finished before per-unit results existed is completed from its predictions
    # (grounding only, no generation).
    if metrics_path.exists() and (out / PER_UNIT_FILE).exists():
        return EvalResult(**read_json(metrics_path))
    return None


def _ids_fingerprint(ids) -> str:
    return hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest()[:16]


def read_predictions(out_dir) -> list[dict]:
    return read_jsonl(Path(out_dir) / "predictions.jsonl")
