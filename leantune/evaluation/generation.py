"""Generation of one response per prompt: the one loop every task generates through.

BIGRec asks for beam search (4 beams, one sequence, a line break ends the response); attribute
extraction and ``--task sft --generate`` ask for greedy answers (``num_beams=1``) with a token budget
per prompt and a stop rule on the decoded text (``GenerationSettings.stop``), so a rambling model
stops once its answer is complete instead of running to the limit.

By default prompts go through ``beam.pooled_beam_search``: a pool of prompts in flight, each leaving
as soon as its result is final (per-prompt budgets too; a text stop rule with greedy search only).
With ``search="transformers"`` (and for models the pool does not support, or a text stop rule with
several beams) batches go through ``model.generate``: prompts are left-padded so every sequence in a
batch ends where generation starts. Greedy attribute answers use ``generate`` batches by default
(``greedy_settings``): the pool answers identically but was only 1.03-1.11x faster on them. Either way prompts are taken shortest first (and results put back in
input order) to waste little compute on padding, the token prefix all prompts share is encoded
once, and only the new tokens are decoded (special tokens dropped, whitespace stripped).

A response is one line (an item title), so by default every token that contains a line break ends
a beam as the end-of-sequence token does: a briefly fine-tuned model that has not yet learned to
emit EOS would otherwise repeat its title until ``max_new_tokens``, which costs time and blurs the
text that grounding embeds. The text after the first line break is dropped.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

from tqdm.auto import tqdm

from ..data.batching import token_budget_batches
from .beam import pooled_beam_search, supports_pool

# Prompts in flight in the pooled beam search when ``batch_size`` is not given.
POOL_PROMPTS = 32


@dataclass
class GenerationSettings:
    num_beams: int = 4
    max_new_tokens: int = 64
    # Prompts in flight (search "leantune": POOL_PROMPTS when None; "transformers": prompts per
    # ``generate`` call, by padded prompt tokens when None).
    batch_size: int | None = None
    batch_tokens: int = 1024  # padded prompt tokens encoded at once
    # search "transformers" only (the pooled search always does this): encode each prompt once and
    # copy its key/value cache to the beams; plain ``generate`` encodes it once per beam. Same
    # output, 1.7-3x faster with 4 beams on CPU (Games prompts, SmolLM2).
    prefill_once: bool = True
    stop_at_newline: bool = True  # a line break ends the response (see the module docstring)
    # Encode the token prefix that every prompt shares (the instruction template, ~75 of ~170
    # tokens on Games) once, and only each prompt's own tokens per batch.
    share_prefix: bool = True
    # "leantune": ``beam.pooled_beam_search``, in which a prompt leaves as soon as its result is final
    # and a waiting one takes its place; "transformers": ``model.generate`` over batches, which
    # computes every prompt of a batch until the last one ends. Same rules, same responses (up to
    # floating-point ties). Models with sliding-window attention always use "transformers".
    search: str = "leantune"
    length_penalty: float = 1.0
    # A per-sequence stop rule on the decoded new text (e.g. "the JSON object is closed"), checked
    # after every token; batches then go through ``model.generate`` (search "transformers").
    stop: Callable[[str], bool] | None = None

    def __post_init__(self):
        if self.search not in SEARCHES:
            from ..errors import LeantuneError

            raise LeantuneError(f"generation search {self.search!r}: choose one of {', '.join(SEARCHES)}")


SEARCHES = ("leantune", "transformers")


def greedy_settings(batch_size: int, stop: Callable[[str], bool] | None = None, max_new_tokens: int = 64,
                    search: str = "transformers") -> GenerationSettings:
    """Greedy answers (attribute extraction, ``--task sft --generate``), ended by EOS, by ``stop`` on the
    decoded text, or by the token budget; no line-break rule (answers may span lines). Search
    "transformers": ``batch_size`` prompts per ``model.generate`` call; "leantune": the pooled search
    with ``batch_size`` prompts in flight, each leaving as soon as it ends."""
    return GenerationSettings(num_beams=1, max_new_tokens=max_new_tokens, batch_size=batch_size, prefill_once=False,
                              share_prefix=False, stop_at_newline=False, search=search, stop=stop)


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
    *,
    budgets: Sequence[int] | None = None,
    done: dict[int, str] | None = None,
    desc: str = "generate",
) -> list[str]:
    """Generate one text per prompt (new tokens only, special tokens dropped, whitespace stripped).

    ``on_batch(indices, texts)`` is called after each batch (indices into ``prompts``), so a caller
    can save partial results as they arrive. ``budgets`` gives each prompt its own
    ``max_new_tokens`` (a batch runs to the largest of its members', and each answer is cut back to
    its own, so an answer does not depend on its batch-mates); ``done`` holds texts already
    generated, by prompt index (e.g. read back from a log): those prompts are skipped."""
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
        length_penalty=settings.length_penalty,
    )
    if budgets is not None and len(budgets) != len(prompts):
        raise ValueError(f"budgets: {len(budgets)} for {len(prompts)} prompts")
    device = next(model.parameters()).device
    done = done or {}
    token_ids = tokenizer(list(prompts))["input_ids"] if prompts else []
    order = sorted((i for i in range(len(prompts)) if i not in done), key=lambda i: len(token_ids[i]))
    # The pool takes per-prompt budgets; a text stop rule only with greedy search (one beam).
    pooled = settings.search == "leantune" and supports_pool(model) and (settings.stop is None or settings.num_beams == 1)
    # Tokens every prompt starts with (the instruction template): encoded once, shared by all.
    shared = common_prefix([token_ids[i] for i in order]) if settings.share_prefix and (settings.prefill_once or pooled) else []
    outputs: list[str | None] = [done.get(i) for i in range(len(prompts))]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(prompts), initial=len(prompts) - len(order), desc=desc, unit="prompt",
                                          disable=not progress, leave=False) as bar:
            prefix_cache = _encode_prefix(model, shared, device) if shared else None

            def finish(idx: list[int], texts: list[str]) -> None:
                texts = [first_line(t) if settings.stop_at_newline else t.strip() for t in texts]
                for i, text in zip(idx, texts):
                    outputs[i] = text
                if on_batch is not None:
                    on_batch(idx, texts)
                bar.update(len(idx))

            if pooled:
                pooled_beam_search(
                    model, [token_ids[i][len(shared):] for i in order], num_beams=settings.num_beams,
                    max_new_tokens=settings.max_new_tokens, stop_ids=stop_ids, pad_id=_pad_id(tokenizer),
                    slots=settings.batch_size or POOL_PROMPTS, prefix_cache=prefix_cache, shared=len(shared),
                    length_penalty=settings.length_penalty, admit_tokens=settings.batch_tokens,
                    budgets=[budgets[i] for i in order] if budgets is not None else None,
                    stop_tokens=(lambda toks: settings.stop(tokenizer.decode(toks, skip_special_tokens=True))) if settings.stop else None,
                    on_done=lambda js, tokens: finish([order[j] for j in js],
                                                    tokenizer.batch_decode(tokens, skip_special_tokens=True)))
                return outputs  # type: ignore[return-value]
            for idx in _batches(order, token_ids, len(shared), settings):
                input_ids, mask = _left_pad([token_ids[i][len(shared):] for i in idx], tokenizer.pad_token_id, device)
                if shared:
                    head = torch.tensor(shared, device=device).expand(len(idx), -1)
                    input_ids = torch.cat([head, input_ids], dim=1)
                    mask = torch.cat([torch.ones_like(head), mask], dim=1)
                extra, batch_config = {}, config
                if budgets is not None:
                    batch_config = copy.deepcopy(config)
                    batch_config.max_new_tokens = max(budgets[i] for i in idx)
                if settings.stop is not None:
                    extra["stopping_criteria"] = _text_stop(tokenizer, input_ids.shape[1], settings.stop)
                if settings.prefill_once and input_ids.shape[1] > 1:
                    extra["cache"] = _prefill(model, input_ids, mask, settings.num_beams, prefix_cache, len(shared))
                out = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=batch_config, **extra)
                new = out[:, input_ids.shape[1] :]
                if budgets is not None:  # each answer within its own budget, whatever its batch-mates were given
                    new = [row[: budgets[i]] for row, i in zip(new, idx)]
                finish(idx, tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return outputs  # type: ignore[return-value]


def _text_stop(tokenizer, prompt_len: int, stop: Callable[[str], bool]):
    """A stopping criterion that ends each sequence once ``stop`` holds for its decoded new text."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class TextStop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            texts = tokenizer.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
            return torch.tensor([stop(t) for t in texts], dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([TextStop()])


def common_prefix(token_ids: Sequence[Sequence[int]]) -> list[int]:
    """The longest token prefix shared by every sequence, leaving each at least one token of its own."""
    if len(token_ids) < 2:
        return []
    first = token_ids[0]
    n = min(len(t) for t in token_ids) - 1
    for t in token_ids[1:]:
        k = 0
        while k < n and t[k] == first[k]:
            k += 1
        n = k
    return list(first[: max(n, 0)])


def _batches(order: list[int], token_ids, shared: int, settings: GenerationSettings):
    """Consecutive slices of ``order`` (sorted by length): ``batch_size`` prompts each, or, when it is
    None, as many as fit ``batch_tokens`` padded prompt tokens (at most 32 prompts)."""
    if settings.batch_size:
        for start in range(0, len(order), settings.batch_size):
            yield order[start : start + settings.batch_size]
        return
    widths = {i: len(token_ids[i]) - shared for i in order}
    yield from token_budget_batches(order, widths, 32, settings.batch_tokens)


def _pad_id(tokenizer) -> int:
    for token in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token is not None:
            return int(token)
    return 0


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int, device):
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id if pad_id is not None else 0, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        if r:
            ids[j, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[j, width - len(r) :] = 1
    return ids.to(device), mask.to(device)


def _new_cache(model):
    from transformers import DynamicCache

    from .grounding import inner_model

    return DynamicCache(config=inner_model(model).config)


def _encode_prefix(model, prefix: Sequence[int], device):
    """Key/value cache of the shared prompt prefix, for one sequence."""
    import torch

    from .grounding import _decoder

    cache = _new_cache(model)
    ids = torch.tensor([list(prefix)], device=device)
    _decoder(model)(input_ids=ids, position_ids=torch.arange(len(prefix), device=device)[None], cache=cache,
                    use_cache=True)
    return cache


def prefix_cache_for(model, prefix_cache, batch: int):
    """A new cache holding ``prefix_cache`` (one sequence) for each of ``batch`` rows (empty without one)."""
    cache = _new_cache(model)
    if prefix_cache is not None:
        for layer, entry in enumerate(prefix_cache.layers):
            cache.update(entry.keys.expand(batch, -1, -1, -1).contiguous(),
                         entry.values.expand(batch, -1, -1, -1).contiguous(), layer)
    return cache


def _prefill(model, input_ids, attention_mask, num_beams: int, prefix_cache=None, shared: int = 0):
    """Key/value cache of all but the last prompt token, computed once per prompt and repeated for
    each beam (``generate`` then feeds the last token itself). Positions follow the attention mask,
    as ``generate`` computes them for left-padded prompts. With ``prefix_cache`` (the first
    ``shared`` tokens of every row, encoded once), only the rest of each prompt is encoded: the
    batch is laid out as [shared prefix][padding][own tokens], the padding masked out."""
    from .grounding import _decoder

    cache = prefix_cache_for(model, prefix_cache, input_ids.shape[0])
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    if input_ids.shape[1] - 1 > shared:  # else every row's own part is its last token (identical prompts)
        _decoder(model)(
            input_ids=input_ids[:, shared:-1], attention_mask=attention_mask[:, :-1],
            position_ids=positions[:, shared:-1], cache=cache, use_cache=True,
        )
    cache.batch_repeat_interleave(num_beams)
    return cache
