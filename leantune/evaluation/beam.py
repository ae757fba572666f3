"""Beam search over a pool of prompts: a prompt leaves as soon as its result is final, a waiting one
takes its place, and the beams of one prompt read its prompt's keys and values once.

The rules are those of ``transformers``' beam search (``model.generate(num_beams=k)`` with its
defaults: ``early_stopping=False``, ``length_penalty`` 1): at every step, of the ``k`` best
continuations of all of a prompt's beams, those that end (a stop token, or ``max_new_tokens``
reached) are offered to the prompt's finished list, scored by summed log-probability divided by
length ** ``length_penalty``, the best ``k`` kept; the ``k`` best continuations that do not end run
on. A prompt is final once its list is full and its best running beam, at its current length, does
not score above the worst entry. Its response is the best entry.

What differs from ``generate`` is the cost:

* ``generate`` runs a batch until its last prompt is final and pays for every row until then; here a
  final prompt's slot goes to the next waiting prompt at once, so the rows in flight stay busy.
* ``generate`` keeps one key/value cache row per beam, grows it by concatenation and copies all of
  it when beams are reordered. Here the prompt's keys/values are stored once per prompt and the
  generated tokens' once per beam, in buffers allocated once; a new token is written in place and a
  reorder copies only generated columns. Decoding attention (``_pool_attention``) reads the prompt
  part once for all beams of a prompt, which on a CPU is most of the memory traffic of a step.

Results equal ``generate``'s up to floating-point ties (attention sums in another order; a prompt's
logits are computed in a batch of another make-up): ``tests/test_beam.py`` checks token equality
against ``generate`` on a small random model and ``benchmarks/bench_generation.py`` counts equal
responses on real prompts.
"""
from __future__ import annotations

from collections import deque
from contextlib import contextmanager
from functools import lru_cache
from typing import Callable, Sequence

ATTENTION_NAME = "leantune_beam_pool"
_ACTIVE: dict = {}  # the pool whose decoding step is running (read by _pool_attention)


def supports_pool(model) -> bool:
    """Whether ``pooled_beam_search`` can run ``model``: a Llama-style decoder (its attention goes through
    the ``transformers`` attention interface) whose every layer attends to all earlier tokens."""
    from .grounding import inner_model

    config = inner_model(model).config
    if getattr(config, "model_type", None) not in ("llama", "qwen2", "mistral"):
        return False
    types = getattr(config, "layer_types", None)
    if types is not None and any(t != "full_attention" for t in types):
        return False
    return getattr(config, "sliding_window", None) is None or not getattr(config, "use_sliding_window", False)


def _pool_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention of one new token per row over its prompt (stored once per prompt) and its beam's
    generated tokens, softmax over both together."""
    import torch

    pool = _ACTIVE["pool"]
    layer = pool.layers[module.layer_idx]
    rows, heads, _, dim = query.shape
    nb, groups = pool.num_beams, layer.prompt_keys.shape[1]
    slots, rep = rows // nb, heads // groups
    scale = scaling if scaling is not None else dim ** -0.5
    pw, gw = pool.prompt_width, pool.gen_width
    q = query.reshape(slots, nb, groups, rep, dim)
    qp = q.permute(0, 2, 1, 3, 4).reshape(slots, groups, nb * rep, dim)
    sp = torch.matmul(qp, layer.prompt_keys[:, :, :pw].transpose(-1, -2)) * scale
    sp = sp.masked_fill(pool.prompt_blocked[:, None, None, :pw], float("-inf"))
    sp = sp.view(slots, groups, nb, rep, pw).permute(0, 2, 1, 3, 4).reshape(rows, groups, rep, pw)
    sg = torch.matmul(q.reshape(rows, groups, rep, dim), layer.gen_keys[:, :, :gw].transpose(-1, -2)) * scale
    sg = sg.masked_fill(pool.gen_blocked[:, None, None, :gw], float("-inf"))
    probs = torch.softmax(torch.cat([sp, sg], dim=-1).float(), dim=-1).to(query.dtype)
    pp = probs[..., :pw].reshape(slots, nb, groups, rep, pw).permute(0, 2, 1, 3, 4).reshape(slots, groups, nb * rep, pw)
    out = torch.matmul(pp, layer.prompt_values[:, :, :pw])
    out = out.view(slots, groups, nb, rep, dim).permute(0, 2, 1, 3, 4).reshape(rows, groups, rep, dim)
    out = out + torch.matmul(probs[..., pw:], layer.gen_values[:, :, :gw])
    return out.reshape(rows, 1, heads, dim), None


@lru_cache(maxsize=None)
def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, _pool_attention)


@contextmanager
def _pool_step(model, pool):
    """Run the model's attention through ``_pool_attention`` for one decoding step."""
    from .grounding import inner_model

    _register_attention()
    config = inner_model(model).config
    before = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    _ACTIVE["pool"] = pool
    try:
        yield
    finally:
        config._attn_implementation = before
        _ACTIVE.pop("pool", None)


@lru_cache(maxsize=None)
def _layer_class():
    from transformers.cache_utils import DynamicLayer

    class PoolLayer(DynamicLayer):
        """One layer's keys/values: the prompts' [slots, groups, prompt columns, dim] and the beams'
        generated tokens' [rows, groups, max_new, dim]. ``update`` writes each row's new token at its
        own generated column; ``_pool_attention`` reads the buffers itself."""

        def __init__(self, prompt_keys, prompt_values, gen_keys, gen_values, pool):
            super().__init__()
            self.prompt_keys, self.prompt_values = prompt_keys, prompt_values
            self.gen_keys, self.gen_values = gen_keys, gen_values
            self.keys, self.values = gen_keys, gen_values
            self.pool = pool
            self.is_initialized = True
            self.device = gen_keys.device

        def update(self, key_states, value_states, *args, **kwargs):
            rows, columns = self.pool.row_index, self.pool.write_column
            self.gen_keys[rows, :, columns] = key_states[:, :, -1]
            self.gen_values[rows, :, columns] = value_states[:, :, -1]
            return self.gen_keys, self.gen_values

        def get_seq_length(self) -> int:
            return self.pool.prompt_width + self.pool.gen_width

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.get_seq_length(), 0

    return PoolLayer


class _PoolView:
    """What the attention and the cache layers read during one step."""

    def __init__(self, num_beams: int):
        self.num_beams = num_beams
        self.layers: list = []
        self.prompt_width = self.gen_width = 0
        self.prompt_blocked = self.gen_blocked = self.row_index = self.write_column = None


def _select(scores, beams_now: int, steps, fin_scores, fin_seqs, fin_len, seqs, num_beams: int, max_new: int,
            is_stop, length_penalty: float, limit=None):
    """One step of the beam rules for n prompts.

    ``scores`` [n, beams_now * vocab]: summed log-probabilities of every continuation; ``steps`` [n]
    tokens generated before this one; ``seqs`` [n, beams_now, max_new] the running beams' tokens;
    ``fin_*`` [n, num_beams(, max_new)] the finished lists; ``limit`` [n] each prompt's token budget
    (default ``max_new``). Returns the new finished lists, the running beams' scores, source beams and
    tokens, their token rows, and which prompts are final."""
    import torch

    n = scores.shape[0]
    vocab = scores.shape[1] // beams_now
    length = steps + 1  # [n]
    divisor = (length.double() ** length_penalty).float()[:, None]
    last = (length >= (max_new if limit is None else limit))[:, None]
    pos = steps[:, None, None].expand(n, num_beams, 1)

    top_scores, top_index = scores.topk(num_beams, dim=-1)
    top_beam, top_token = top_index // vocab, top_index % vocab
    ends = is_stop[top_token] | last
    top_seqs = seqs.gather(1, top_beam[:, :, None].expand(-1, -1, max_new)).scatter(2, pos, top_token[:, :, None])
    offered = torch.where(ends, top_scores / divisor, float("-inf"))
    merged = torch.cat([fin_scores, offered], dim=1)
    keep = merged.topk(num_beams, dim=-1).indices
    fin_scores = merged.gather(1, keep)
    fin_seqs = torch.cat([fin_seqs, top_seqs], dim=1).gather(1, keep[:, :, None].expand(-1, -1, max_new))
    fin_len = torch.cat([fin_len, length[:, None].expand(-1, num_beams)], dim=1).gather(1, keep)

    open_scores = scores.view(n, beams_now, vocab).masked_fill(is_stop, float("-inf")).view(n, -1)
    run_scores, run_index = open_scores.topk(num_beams, dim=-1)
    run_beam, run_token = run_index // vocab, run_index % vocab
    run_seqs = seqs.gather(1, run_beam[:, :, None].expand(-1, -1, max_new)).scatter(2, pos, run_token[:, :, None])
    # -inf while a list has room, so a prompt with room is never final.
    final = last[:, 0] | (run_scores[:, 0] / divisor[:, 0] <= fin_scores.min(dim=1).values)
    return fin_scores, fin_seqs, fin_len, run_scores, run_beam, run_token, run_seqs, final


def pooled_beam_search(
    model,
    own_ids: Sequence[Sequence[int]],
    *,
    num_beams: int,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    slots: int,
    prefix_cache=None,
    shared: int = 0,
    length_penalty: float = 1.0,
    admit_tokens: int = 4096,
    on_done: Callable[[list[int], list[list[int]]], None],
    budgets: Sequence[int] | None = None,
    stop_tokens: Callable[[list[int]], bool] | None = None,
) -> None:
    """Beam-search every prompt of ``own_ids`` (token ids after the ``shared`` prefix, whose cache is
    ``prefix_cache``), at most ``slots`` prompts in flight; ``on_done(indices, tokens)`` receives
    each final prompt's new tokens (the stop token included). Prompts are taken in the given order
    (shortest first keeps padding small); at most ``admit_tokens`` padded prompt tokens are encoded
    at once. ``budgets`` gives each prompt its own ``max_new_tokens``. ``stop_tokens`` (greedy search,
    ``num_beams=1``, only) ends a prompt as soon as it holds for its new tokens, the last one
    included, as a ``StoppingCriteria`` ends a row of ``generate``."""
    import torch
    from transformers.cache_utils import Cache

    from .generation import prefix_cache_for

    if stop_tokens is not None and num_beams != 1:
        raise ValueError("stop_tokens: a stop rule on the tokens is defined for greedy search (num_beams=1) only")
    if budgets is not None and len(budgets) != len(own_ids):
        raise ValueError(f"budgets: {len(budgets)} for {len(own_ids)} prompts")
    device = next(model.parameters()).device
    nb = num_beams
    max_new = max(budgets) if budgets else max_new_tokens
    queue = deque(range(len(own_ids)))
    if not queue:
        return
    prompt_columns = shared + max(len(t) for t in own_ids)
    rows = slots * nb
    beam_range = torch.arange(nb, device=device)
    pool = _PoolView(nb)

    cache = None  # built from the first prefill (heads, dim, dtype)
    prompt_blocked = torch.ones(slots, prompt_columns, dtype=torch.bool, device=device)
    prompt_blocked[:, :shared] = False
    own_len = torch.zeros(slots, dtype=torch.long, device=device)
    slot_user = [-1] * slots
    steps = torch.zeros(slots, dtype=torch.long, device=device)  # tokens generated (and fed next) per slot
    limit = torch.full((slots,), max_new, dtype=torch.long, device=device)  # each slot's prompt's token budget
    running = torch.full((slots, nb), float("-inf"), device=device)
    seqs = torch.zeros(slots, nb, max_new, dtype=torch.long, device=device)
    fin_scores = torch.full((slots, nb), float("-inf"), device=device)
    fin_seqs = torch.zeros(slots, nb, max_new, dtype=torch.long, device=device)
    fin_len = torch.zeros(slots, nb, dtype=torch.long, device=device)
    tokens = torch.full((rows,), pad_id, dtype=torch.long, device=device)
    positions = torch.zeros(rows, dtype=torch.long, device=device)
    gen_columns = torch.arange(max_new, device=device)
    is_stop = None

    def finish(indices: list[int], finals) -> None:
        out = []
        for scores_row, seq_rows, len_row in finals:
            best = int(scores_row.argmax())
            out.append(seq_rows[best, : int(len_row[best])].tolist())
        on_done(indices, out)

    def stopped(candidates: list[int], run_seqs, lengths) -> list[int]:
        """Those of ``candidates`` (rows of ``run_seqs``) whose running (greedy) sequence meets ``stop_tokens``."""
        if stop_tokens is None:
            return []
        return [j for j in candidates if stop_tokens(run_seqs[j, 0, : int(lengths[j])].tolist())]

    def admit() -> None:
        """Encode waiting prompts into free slots; take their first step."""
        nonlocal cache, is_stop
        free = [s for s in range(slots) if slot_user[s] < 0]
        take: list[int] = []
        width = 0
        while queue and len(take) < len(free):
            w = max(width, len(own_ids[queue[0]]))
            if take and w * (len(take) + 1) > admit_tokens:
                break
            take.append(queue.popleft())
            width = w
        m = len(take)
        ids = torch.full((m, width), pad_id, dtype=torch.long, device=device)
        own_mask = torch.zeros(m, width, dtype=torch.long, device=device)
        for j, i in enumerate(take):
            row = own_ids[i]
            ids[j, width - len(row):] = torch.tensor(row, dtype=torch.long)
            own_mask[j, width - len(row):] = 1
        temp = prefix_cache_for(model, prefix_cache, m)
        prompt_mask = torch.cat([torch.ones(m, shared, dtype=torch.long, device=device), own_mask], dim=1)
        pos = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=prompt_mask, position_ids=pos[:, shared:], cache=temp,
                       use_cache=True, logits_to_keep=1).logits[:, -1]
        if cache is None:
            is_stop = torch.zeros(logits.shape[-1], dtype=torch.bool, device=device)
            is_stop[torch.as_tensor(list(stop_ids), dtype=torch.long, device=device)] = True
            layers = []
            for entry in temp.layers:
                groups, dim, dtype = entry.keys.shape[1], entry.keys.shape[3], entry.keys.dtype
                pk = torch.zeros(slots, groups, prompt_columns, dim, dtype=dtype, device=device)
                pv = torch.zeros_like(pk)
                pk[:, :, :shared] = entry.keys[:1, :, :shared]
                pv[:, :, :shared] = entry.values[:1, :, :shared]
                gk = torch.zeros(rows, groups, max_new, dim, dtype=dtype, device=device)
                layers.append(_layer_class()(pk, pv, gk, torch.zeros_like(gk), pool))
            pool.layers = layers
            cache = Cache(layers=layers)
        scores = torch.log_softmax(logits.float(), dim=-1)
        zeros = torch.zeros(m, dtype=torch.long, device=device)
        take_limit = torch.tensor([budgets[i] if budgets else max_new for i in take], dtype=torch.long, device=device)
        f_s, f_q, f_l, r_s, _, r_t, r_q, final = _select(
            scores, 1, zeros, torch.full((m, nb), float("-inf"), device=device),
            torch.zeros(m, nb, max_new, dtype=torch.long, device=device),
            torch.zeros(m, nb, dtype=torch.long, device=device), torch.zeros(m, 1, max_new, dtype=torch.long, device=device),
            nb, max_new, is_stop, length_penalty, take_limit)
        done = [j for j in range(m) if bool(final[j])]
        if done:
            finish([take[j] for j in done], [(f_s[j], f_q[j], f_l[j]) for j in done])
        by_rule = stopped([j for j in range(m) if not bool(final[j])], r_q, torch.ones(m, dtype=torch.long))
        if by_rule:
            on_done([take[j] for j in by_rule], [r_q[j, 0, :1].tolist() for j in by_rule])
        for j in (j for j in range(m) if not bool(final[j]) and j not in by_rule):
            s = free.pop(0)
            n = len(own_ids[take[j]])
            slot_user[s] = take[j]
            limit[s] = take_limit[j]
            for layer, entry in zip(cache.layers, temp.layers):  # own tokens right after the prefix
                layer.prompt_keys[s, :, shared : shared + n] = entry.keys[j, :, shared + width - n :]
                layer.prompt_values[s, :, shared : shared + n] = entry.values[j, :, shared + width - n :]
            prompt_blocked[s, shared:] = True
            prompt_blocked[s, shared : shared + n] = False
            own_len[s] = n
            r = slice(s * nb, (s + 1) * nb)
            positions[r] = shared + n
            tokens[r] = r_t[j]
            steps[s] = 1
            running[s], seqs[s] = r_s[j], r_q[j]
            fin_scores[s], fin_seqs[s], fin_len[s] = f_s[j], f_q[j], f_l[j]

    def shrink() -> None:
        """Keep only live slots (once nothing waits), so the last prompts do not pay for empty rows."""
        nonlocal slots, rows, prompt_blocked, own_len, tokens, positions, steps, running, seqs, \
            fin_scores, fin_seqs, fin_len, limit
        live = [s for s in range(slots) if slot_user[s] >= 0]
        index = torch.tensor(live, device=device)
        row_index = (index[:, None] * nb + beam_range).flatten()
        for layer in cache.layers:
            layer.prompt_keys, layer.prompt_values = layer.prompt_keys[index], layer.prompt_values[index]
            layer.gen_keys, layer.gen_values = layer.gen_keys[row_index], layer.gen_values[row_index]
            layer.keys, layer.values = layer.gen_keys, layer.gen_values
        prompt_blocked, own_len = prompt_blocked[index], own_len[index]
        tokens, positions = tokens[row_index], positions[row_index]
        steps, running, seqs, limit = steps[index], running[index], seqs[index], limit[index]
        fin_scores, fin_seqs, fin_len = fin_scores[index], fin_seqs[index], fin_len[index]
        slot_user[:] = [slot_user[s] for s in live]
        slots, rows = len(live), len(live) * nb

    while True:
        if queue and any(u < 0 for u in slot_user):
            admit()
            continue
        live = [s for s in range(slots) if slot_user[s] >= 0]
        if not live:
            return
        if not queue and len(live) <= slots * 3 // 4:
            shrink()
            live = list(range(slots))
        index = torch.tensor(live, device=device)
        row_steps = steps.repeat_interleave(nb)  # per row; 0 for an empty slot
        pool.prompt_width = shared + int(own_len[index].max())
        pool.gen_width = int(steps[index].max())
        pool.prompt_blocked = prompt_blocked
        pool.gen_blocked = gen_columns[None, : pool.gen_width] >= row_steps[:, None]
        pool.row_index = torch.arange(rows, device=device)
        pool.write_column = (row_steps - 1).clamp(min=0)
        with _pool_step(model, pool):
            logits = model(input_ids=tokens[:, None], position_ids=positions[:, None], cache=cache,
                           use_cache=True).logits[:, -1]
        positions += 1

        row_index = (index[:, None] * nb + beam_range).flatten()
        vocab = logits.shape[-1]
        scores = torch.log_softmax(logits[row_index].float(), dim=-1).view(len(live), nb, vocab) + running[index, :, None]
        f_s, f_q, f_l, r_s, r_b, r_t, r_q, final = _select(
            scores.view(len(live), nb * vocab), nb, steps[index], fin_scores[index], fin_seqs[index], fin_len[index],
            seqs[index], nb, max_new, is_stop, length_penalty, limit[index])
        fin_scores[index], fin_seqs[index], fin_len[index] = f_s, f_q, f_l
        done = [j for j in range(len(live)) if bool(final[j])]
        if done:
            finish([slot_user[live[j]] for j in done], [(f_s[j], f_q[j], f_l[j]) for j in done])
        by_rule = stopped([j for j in range(len(live)) if not bool(final[j])], r_q, steps[index] + 1)
        if by_rule:
            on_done([slot_user[live[j]] for j in by_rule], [r_q[j, 0, : int(steps[live[j]]) + 1].tolist() for j in by_rule])
        for j in done + by_rule:
            s = live[j]
            slot_user[s], steps[s], own_len[s] = -1, 0, 0
            prompt_blocked[s, shared:] = True  # an empty slot's rows attend to the prefix only
        going = [j for j in range(len(live)) if not bool(final[j]) and j not in by_rule]
        if not going:
            continue
        g = torch.tensor(going, device=device)
        slots_going = index[g]
        running[slots_going], seqs[slots_going] = r_s[g], r_q[g]
        dst = (slots_going[:, None] * nb + beam_range).flatten()
        src = (slots_going[:, None] * nb + r_b[g]).flatten()
        tokens[dst] = r_t[g].flatten()
        moved = src != dst
        if bool(moved.any()):  # generated columns follow their beams; the prompt is shared
            d, sr = dst[moved], src[moved]
            width = int(steps[slots_going].max())
            for layer in cache.layers:
                layer.gen_keys[d, :, :width] = layer.gen_keys[sr, :, :width]
                layer.gen_values[d, :, :width] = layer.gen_values[sr, :, :width]
        steps[slots_going] += 1
