"""Greedy batched generation for attribute answers.

``leantune.evaluation.generation.generate_texts`` (BIGRec's beam search) has one fixed token limit
and no stop rule; attribute answers need both, so this is a small greedy one: prompts sorted by
length (less padding), left-padded batches, ``model.generate``, a token budget per prompt, and a
per-sequence stop rule on the decoded text, so a rambling zero-shot model stops once its JSON
object is closed (or its one-line answer ended) instead of running to the limit.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence


class GenerationLog:
    """A resumable record of generated texts: one JSON line per prompt (``{"i", "prompt", "text"}``)
    after a settings line, appended and flushed batch by batch, so an interrupted evaluation restarts
    where it stopped. Lines whose prompt no longer matches, and a torn last line, are ignored; a log
    written under other settings is refused."""

    def __init__(self, path, settings: dict):
        self.path, self.settings = Path(path), settings

    @staticmethod
    def _key(prompt: str) -> str:
        """What a line records of its prompt, so a line is used only for the prompt it answered."""
        import hashlib

        return hashlib.sha256(prompt.encode()).hexdigest()[:16]

    def check(self) -> None:
        """Refuse a log written under other settings (reads its first line only)."""
        import json

        from ..io import refuse_other_settings

        if not self.path.is_file():
            return
        with open(self.path, encoding="utf-8") as fh:
            first = fh.readline()
        try:
            stored = json.loads(first).get("settings", {})
        except (json.JSONDecodeError, AttributeError):
            stored = {}
        refuse_other_settings(stored, self.settings, "a generation log", self.path.parent,
                              "use another --out, or delete the log to start over")

    def read(self, prompts: Sequence[str]) -> dict[int, str]:
        """The texts already generated for ``prompts`` (by index), after ``check``."""
        import json

        if not self.path.is_file():
            return {}
        self.check()
        done: dict[int, str] = {}
        with open(self.path, encoding="utf-8") as fh:
            next(fh, None)  # the settings line
            for line in fh:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut off by an interruption
                i = row.get("i")
                if isinstance(i, int) and 0 <= i < len(prompts) and row.get("prompt") == self._key(prompts[i]):
                    done[i] = row["text"]
        return done

    def writer(self, prompts: Sequence[str]):
        """An ``on_batch`` callback appending each batch's texts to the log."""
        import json

        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.is_file():
            with open(self.path, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"settings": self.settings}) + "\n")

        def append(indices, texts):
            with open(self.path, "a", encoding="utf-8") as fh:
                for i, text in zip(indices, texts):
                    fh.write(json.dumps({"i": int(i), "prompt": self._key(prompts[i]), "text": text}) + "\n")
                fh.flush()

        return append


def json_object_closed(text: str) -> bool:
    """True once the first ``{`` in ``text`` has its matching ``}`` (braces in strings ignored)."""
    start = text.find("{")
    if start < 0:
        return False
    depth, in_string, escaped = 0, False, False
    for ch in text[start:]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return True
    return False


def line_ended(text: str) -> bool:
    """True once a non-empty first line is followed by a newline."""
    stripped = text.lstrip()
    return "\n" in stripped and bool(stripped.split("\n", 1)[0].strip())


def _stop_criteria(tokenizer, prompt_len: int, done: Callable[[str], bool]):
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class TextStop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            texts = tokenizer.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
            return torch.tensor([done(t) for t in texts], dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([TextStop()])


def greedy_generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int | Sequence[int],
    batch_size: int = 16,
    stop: Callable[[str], bool] | None = None,
    progress: bool = True,
    desc: str = "generating",
    done: dict[int, str] | None = None,
    on_batch: Callable[[list[int], list[str]], None] | None = None,
) -> list[str]:
    """Greedy continuations of ``prompts``; ``max_new_tokens`` may be one budget per prompt (a batch
    gets the largest of its members'). ``done`` holds texts already generated (by prompt index, e.g.
    read back from a log): those prompts are skipped; ``on_batch(indices, texts)`` sees each new batch."""
    import torch
    from tqdm.auto import tqdm

    budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    done = done or {}
    order = sorted((i for i in range(len(prompts)) if i not in done), key=lambda i: len(prompts[i]))
    outputs: list[str] = [done.get(i, "") for i in range(len(prompts))]
    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(prompts), initial=len(prompts) - len(order), desc=desc, disable=not progress,
                                          leave=False) as bar:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                # Training tokenises prompt + response with the tokenizer's defaults; SmolLM2 adds no
                # BOS, and the chat template already carries its special tokens.
                enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
                prompt_len = enc["input_ids"].shape[1]
                extra = {"stopping_criteria": _stop_criteria(tokenizer, prompt_len, stop)} if stop else {}
                out = model.generate(
                    **enc,
                    max_new_tokens=max(budgets[i] for i in idx),
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    **extra,
                )
                texts = tokenizer.batch_decode(out[:, prompt_len:], skip_special_tokens=True)
                for i, text in zip(idx, texts):
                    outputs[i] = text
                if on_batch is not None:
                    on_batch(idx, texts)
                bar.update(len(idx))
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return outputs
