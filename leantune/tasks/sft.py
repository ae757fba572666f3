"""Supervised fine-tuning on any instruction dataset (``--task sft``): JSONL in the two formats
TRL's SFTTrainer accepts.

* chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`` — rendered
  with the model's chat template; the last message must be the assistant's, and it is the answer
  the loss is computed on (earlier assistant turns are context: they are read, not trained).
* prompt/completion: ``{"prompt": "...", "completion": "..."}`` — the prompt as it is, the loss on
  the completion.

Every line of a file is one unit, named ``L<line number>``. Evaluation is the loss on the answer
tokens of the validation records (``--valid FILE``, or a seeded 10% of the training file held out
and never trained on): per unit the mean token loss and the share of answer tokens the model
predicts (greedy next token), so runs compare paired with ``leantune compare --metric loss``.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import DataError, LeantuneError, ParameterError
from ..io import iter_jsonl
from .base import TASKS, Task, TextExample

ROLES = ("system", "user", "assistant")
SFT_METRICS = ("token_accuracy", "loss", "neg_loss", "n_examples", "n_tokens")


@dataclass(frozen=True)
class SFTRecord:
    """One line of an SFT file: chat ``messages`` or a ``prompt``/``completion`` pair."""

    line: int
    messages: tuple[tuple[str, str], ...] | None = None  # (role, content) pairs, the last one the assistant's
    prompt: str | None = None
    completion: str | None = None

    @property
    def unit_id(self) -> str:
        return f"L{self.line}"

    @property
    def answer(self) -> str:
        return self.messages[-1][1] if self.messages is not None else self.completion

    def as_dict(self) -> dict:
        """The record as it would be written back to a JSONL file."""
        if self.messages is not None:
            return {"messages": [{"role": r, "content": c} for r, c in self.messages]}
        return {"prompt": self.prompt, "completion": self.completion}


def _check_record(obj, path: Path, line: int) -> SFTRecord:
    if not isinstance(obj, dict):
        raise DataError(path, f"expected a JSON object with 'messages' or 'prompt' and 'completion', got {type(obj).__name__}", line)
    if "messages" in obj:
        messages = obj["messages"]
        if not isinstance(messages, list) or len(messages) < 2:
            raise DataError(path, "'messages' must be a list of at least two messages (a prompt and the assistant's answer)", line)
        pairs = []
        for k, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise DataError(path, f"messages[{k}]: expected {{\"role\": ..., \"content\": \"...\"}} with string values", line)
            if m["role"] not in ROLES:
                raise DataError(path, f"messages[{k}].role {m['role']!r}: choose one of {', '.join(ROLES)}", line)
            pairs.append((m["role"], m["content"]))
        if pairs[-1][0] != "assistant":
            raise DataError(path, f"the last message must be the assistant's answer (it is {pairs[-1][0]!r})", line)
        if not any(role == "user" for role, _ in pairs[:-1]):
            raise DataError(path, "no user message before the assistant's answer", line)
        if not pairs[-1][1].strip():
            raise DataError(path, "the assistant's answer is empty", line)
        return SFTRecord(line, messages=tuple(pairs))
    if "prompt" in obj or "completion" in obj:
        for key in ("prompt", "completion"):
            if not isinstance(obj.get(key), str):
                raise DataError(path, f"'{key}' must be a string (prompt/completion format)", line)
        if not obj["completion"].strip():
            raise DataError(path, "'completion' is empty", line)
        return SFTRecord(line, prompt=obj["prompt"], completion=obj["completion"])
    raise DataError(path, f"expected 'messages' or 'prompt' and 'completion' (keys: {', '.join(sorted(obj)) or 'none'})", line)


def read_sft(path) -> list[SFTRecord]:
    """Read and check an SFT JSONL file (``.gz`` allowed); blank lines are skipped. A bad line is a
    one-line :class:`DataError` naming the file and line."""
    path = Path(path)
    missing = "file not found (the sft task reads a JSONL file of chat 'messages' or 'prompt'/'completion' records)"
    records = [_check_record(obj, path, line) for line, obj in iter_jsonl(path, missing)]
    if not records:
        raise DataError(path, "no records")
    return records


def file_fingerprint(path) -> str:
    """SHA-256 of the file's bytes (first 16 hex digits): a selection names the exact file it was made on."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def render_prompt(record: SFTRecord, tokenizer) -> str:
    """The text the model reads before the answer: the chat template over every message but the
    last (with the generation prompt), or the plain prompt."""
    if record.messages is None:
        return record.prompt
    context = [{"role": r, "content": c} for r, c in record.messages[:-1]]
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(context, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role']}: {m['content']}\n" for m in context) + "assistant: "


def to_example(record: SFTRecord, tokenizer) -> TextExample:
    return TextExample(render_prompt(record, tokenizer), record.answer, record.unit_id)


def split_valid(records: Sequence[SFTRecord], fraction: float, seed: int) -> tuple[list[SFTRecord], list[SFTRecord]]:
    """A seeded ``fraction`` (at least one record) held out for validation; the rest for training."""
    import numpy as np

    if len(records) < 2:
        raise ParameterError("valid", None, f"{len(records)} record(s) cannot be split into training and validation; give a validation file")
    n_valid = min(len(records) - 1, max(1, round(fraction * len(records))))
    held = set(np.random.default_rng([seed, 7]).choice(len(records), n_valid, replace=False).tolist())
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the generated answer equals the reference after trimming and collapsing whitespace."""
    return float(" ".join(prediction.split()) == " ".join(reference.split()))


def load_answer_scorer(spec: str):
    """``(column name, function(prediction, reference) -> float)`` for ``--generate``: ``exact-match``,
    or ``FILE.py:FUNCTION`` (a function of the user's own file, called once per validation record)."""
    import importlib.util

    if spec == "exact-match":
        return "exact_match", exact_match
    path, sep, name = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not name.isidentifier():
        raise ParameterError("generate", repr(spec), "'exact-match' or FILE.py:FUNCTION (a Python function of prediction and reference)")
    if not Path(path).is_file():
        raise ParameterError("generate", repr(spec), f"no such file {path}")
    module_spec = importlib.util.spec_from_file_location(f"leantune_user_scorer_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: report it in one line, whatever it raised
        raise ParameterError("generate", repr(spec), f"{path} failed to load ({type(exc).__name__}: {exc})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ParameterError("generate", repr(spec), f"{path} has no function {name!r}")
    return "score", fn


@dataclass
class SFTConfig:
    data: str = ""  # training JSONL
    valid: str | None = None  # validation JSONL; None: hold out valid_fraction of data
    valid_fraction: float = 0.1
    split_seed: int = 0  # seeds the held-out split (fixed, so every run validates on the same records)
    cutoff_len: int = 512
    batch_size: int = 8  # evaluation batch
    # Also generate each validation answer (greedy) and score it: "exact-match", or FILE.py:FUNCTION
    # (the function gets prediction and reference, returns a number). None: loss and token accuracy only.
    generate: str | None = None
    max_new_tokens: int = 64  # generation budget per answer
    progress: bool = True

    def __post_init__(self):
        if not self.data:
            raise ParameterError("data", None, "the sft task needs a JSONL file of 'messages' or 'prompt'/'completion' records")
        if not 0 < self.valid_fraction < 1:
            raise LeantuneError(f"valid_fraction {self.valid_fraction}: must be between 0 and 1")
        if self.cutoff_len < 8 or self.batch_size < 1:
            raise LeantuneError(f"cutoff_len {self.cutoff_len} / batch_size {self.batch_size}: need cutoff_len >= 8 and batch_size >= 1")
        if self.max_new_tokens < 1:
            raise ParameterError("max_new_tokens", self.max_new_tokens, "must be at least 1")


@TASKS.register("sft")
class SFTTask(Task):
    """Any instruction dataset; primary metric: the share of answer tokens predicted on validation."""

    name = "sft"
    primary_metric = "token_accuracy"
    train_on_inputs = False  # loss on the answer (assistant / completion) only

    def __init__(self, data: str = "", **options):
        unknown = sorted(set(options) - set(SFTConfig.__dataclass_fields__))
        if unknown:
            raise LeantuneError(f"sft task: unknown option(s) {unknown} (known: {', '.join(SFTConfig.__dataclass_fields__)})")
        self.config = SFTConfig(data=str(data), **options)
        # (column, function) scoring generated answers; loaded once, so a bad spec fails before any training
        self.answer_scorer = load_answer_scorer(self.config.generate) if self.config.generate is not None else None
        records = read_sft(self.config.data)
        if self.config.valid:
            self.train_records, self.valid_records = records, read_sft(self.config.valid)
        else:
            self.train_records, self.valid_records = split_valid(records, self.config.valid_fraction, self.config.split_seed)
        self._train = {r.unit_id: r for r in self.train_records}
        self._valid = {r.unit_id: r for r in self.valid_records}

    @property
    def cutoff_len(self) -> int:
        """Tokens of prompt + answer the trainer and the scorers keep."""
        return self.config.cutoff_len

    def set_progress(self, show: bool) -> None:
        self.config.progress = show

    # -- training data ---------------------------------------------------------------------------
    def train_pool(self) -> list[str]:
        return [r.unit_id for r in self.train_records]

    def records(self, split: str, unit_ids: Sequence[str]) -> list[SFTRecord]:
        table = self._train if split == "train" else self._valid
        missing = [u for u in unit_ids if u not in table]
        if missing:
            where = self.config.data if split == "train" else (self.config.valid or f"the held-out part of {self.config.data}")
            raise LeantuneError(f"unit(s) {missing[:3]} are not {split} records of {where}")
        return [table[u] for u in unit_ids]

    def train_examples(self, unit_ids: Sequence[str], tokenizer) -> list[TextExample]:
        return [to_example(r, tokenizer) for r in self.records("train", unit_ids)]

    def valid_examples(self, tokenizer, limit: int | None = None, seed: int = 0,
                       unit_ids: Sequence[str] | None = None) -> list[TextExample]:
        from ..data.units import seeded_sample

        if unit_ids is not None:
            raise LeantuneError("sft task: validation records are not tied to training units (use limit)")

        records = seeded_sample(self.valid_records, limit, seed, name="limit")
        return [to_example(r, tokenizer) for r in records]

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate_units(self, model, tokenizer, split: str = "test", limit: int | None = None, seed: int = 0):
        """Answer loss and token accuracy per validation record (``split`` test and valid are the
        same records: an SFT file has no separate test split)."""
        examples = self.valid_examples(tokenizer, limit, seed)
        losses, correct, counts = answer_losses(model, tokenizer, examples, self.config.cutoff_len, self.config.batch_size,
                                                self.config.progress)
        rows = [{"unit": ex.example_id, "cluster": ex.example_id, "loss": float(l), "token_accuracy": float(c / n) if n else 0.0,
                 "n_tokens": int(n)} for ex, l, c, n in zip(examples, losses, correct, counts)]
        total = int(sum(counts))
        mean_loss = float(sum(l * n for l, n in zip(losses, counts)) / total) if total else math.nan
        metrics = {"token_accuracy": float(sum(correct) / total) if total else 0.0, "loss": mean_loss, "neg_loss": -mean_loss,
                   "n_examples": len(examples), "n_tokens": total}
        if self.answer_scorer is not None:
            column, values = self._generated_scores(model, tokenizer, examples)
            for row, value in zip(rows, values):
                row[column] = value
            metrics[column] = float(sum(values) / len(values)) if values else 0.0
        return metrics, rows

    def _generated_scores(self, model, tokenizer, examples) -> tuple[str, list[float]]:
        """Greedy answers to the validation prompts, scored against the references by ``generate``."""
        from ..evaluation.generation import generate_texts, greedy_settings

        column, fn = self.answer_scorer
        texts = generate_texts(model, tokenizer, [e.prompt for e in examples],
                               greedy_settings(self.config.batch_size, max_new_tokens=self.config.max_new_tokens),
                               self.config.progress, desc="generating answers")
        values = []
        for ex, text in zip(examples, texts):
            try:
                value = float(fn(text, ex.response))
            except Exception as exc:  # the user's function: one line naming the record
                raise ParameterError("generate", repr(self.config.generate), f"failed on record {ex.example_id} "
                                     f"({type(exc).__name__}: {exc})") from None
            if not math.isfinite(value):
                raise ParameterError("generate", repr(self.config.generate), f"returned {value} for record {ex.example_id}: need a finite number")
            values.append(value)
        return column, values

    def evaluate(self, model, tokenizer, split: str = "test", limit: int | None = None, seed: int = 0) -> dict[str, float]:
        return self.evaluate_units(model, tokenizer, split, limit, seed)[0]

    def metric_names(self) -> list[str]:
        extra = [self.answer_scorer[0]] if self.answer_scorer is not None else []
        return list(SFT_METRICS) + extra


def answer_losses(model, tokenizer, examples: Sequence[TextExample], cutoff_len: int, batch_size: int = 8,
                  progress: bool = False):
    """Per example: mean cross-entropy over its answer tokens, the number of them the model predicts
    (argmax), and their count — with the trainer's tokenisation (``leantune.data.tokenize``)."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from ..data.tokenize import IGNORE_INDEX, tokenize_example

    rows = [tokenize_example(tokenizer, ex, cutoff_len, train_on_inputs=False) for ex in examples]
    losses, correct, counts = np.zeros(len(rows)), np.zeros(len(rows), dtype=np.int64), np.zeros(len(rows), dtype=np.int64)
    order = np.argsort([len(r["input_ids"]) for r in rows], kind="stable")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc="answer loss", disable=not progress, leave=False):
            idx = order[start:start + batch_size]
            width = max(len(rows[i]["input_ids"]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            labels = torch.full((len(idx), width), IGNORE_INDEX, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for k, i in enumerate(idx):
                n = len(rows[i]["input_ids"])
                ids[k, :n] = torch.tensor(rows[i]["input_ids"])
                labels[k, :n] = torch.tensor(rows[i]["labels"])
                mask[k, :n] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1].float()
            target = labels[:, 1:].to(device)
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target.clamp(min=0), reduction="none")
            valid = target != IGNORE_INDEX
            hit = (logits.argmax(-1) == target) & valid
            for k, i in enumerate(idx):
                n = int(valid[k].sum())
                counts[i], correct[i] = n, int(hit[k].sum())
                losses[i] = float((loss[k] * valid[k]).sum() / n) if n else 0.0
    model.train(was_training)
    return losses, correct, counts
