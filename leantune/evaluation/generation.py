"""Batched beam-search generation of one response per prompt (BIGRec: 4 beams, one sequence).

Prompts are left-padded so every sequence in a batch ends where generation starts, and batches
are formed from prompts of similar length (then put back in input order) to waste little compute
on padding. Only the new tokens are decoded (special tokens dropped, whitespace stripped).

A response is one line (an item title), so by default every token that contains a line break ends
a beam as the end-of-sequence token does: a briefly fine-tuned model that has not yet learned to
emit EOS would otherwise repeat its title until ``max_new_tokens``, which costs time and blurs the
text that grounding embeds. The text after the first line break is dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from tqdm.auto import tqdm


@dataclass
class GenerationSettings:
    num_beams: int = 4
    max_new_tokens: int = 64
    batch_size: int = 8
    # Encode each prompt once and copy its key/value cache to the beams; plain ``generate`` encodes
    # it once per beam. Same output, 1.7-3x faster with 4 beams on CPU (Games prompts, SmolLM2).
    prefill_once: bool = True
    stop_at_newline: bool = True  # a line break ends the response (see the module docstring)


def newline_token_ids(tokenizer) -> list[int]:
    """Ids of every vocabulary token whose text contains a line break."""
    vocab = tokenizer.get_vocab()
    ids = tokenizer.convert_tokens_to_ids(list(vocab))
    texts = tokenizer.batch_decode([[i] for i in ids])
    return sorted(i for i, text in zip(ids, texts) if "\n" in text)


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


def generate_texts(
    model,
    tokenizer,
    prompts: Sequence[str],
    settings: GenerationSettings | None = None,
    progress: bool = True,
    on_batch: Callable[[list[int], list[str]], None] | None = None,
) -> list[str]:
    """Generate one text per prompt. ``on_batch(indices, texts)`` is called after each batch
    (indices into ``prompts``), so a caller can save partial results as they arrive."""
    import torch
    from transformers import GenerationConfig

    settings = settings or GenerationSettings()
    stop_ids = [tokenizer.eos_token_id]
    if settings.stop_at_newline:
        stop_ids += newline_token_ids(tokenizer)
    config = GenerationConfig(
        num_beams=settings.num_beams,
        num_return_sequences=1,
        do_sample=False,
        max_new_tokens=settings.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_ids if len(stop_ids) > 1 else tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    device = next(model.parameters()).device
    lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    outputs: list[str | None] = [None] * len(prompts)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(prompts), desc="generate", unit="user", disable=not progress) as bar:
            for start in range(0, len(order), settings.batch_size):
                idx = order[start : start + settings.batch_size]
                enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
                if settings.prefill_once and settings.num_beams > 1 and enc["input_ids"].shape[1] > 1:
                    cache = _prefill(model, enc["input_ids"], enc["attention_mask"], settings.num_beams)
                    out = model.generate(**enc, cache=cache, generation_config=config)
                else:
                    out = model.generate(**enc, generation_config=config)
                texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                texts = [first_line(t) if settings.stop_at_newline else t.strip() for t in texts]
                for i, text in zip(idx, texts):
                    outputs[i] = text
                if on_batch is not None:
                    on_batch(idx, texts)
                bar.update(len(idx))
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return outputs  # type: ignore[return-value]


def _prefill(model, input_ids, attention_mask, num_beams: int):
    """Key/value cache of all but the last prompt token, computed once per prompt and repeated for
    each beam (``generate`` then feeds the last token itself). Positions follow the attention mask,
    as ``generate`` computes them for left-padded prompts."""
    from transformers import DynamicCache

    from .grounding import _decoder

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    cache = DynamicCache(config=inner.config)
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    _decoder(model)(
        input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1], position_ids=positions[:, :-1],
        cache=cache, use_cache=True,
    )
    cache.batch_repeat_interleave(num_beams)
    return cache
