"""The pooled beam search gives the tokens ``transformers``' beam search gives, prompt by prompt."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def _random_model(seed: int = 0, vocab: int = 48):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.4, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                         attn_implementation="sdpa")
    # float64, so that the two implementations' different summation orders cannot flip a beam.
    return LlamaForCausalLM(config).to(torch.float64).eval()


def _reference(model, prompt: list[int], num_beams: int, max_new: int, stop_ids: list[int], length_penalty: float):
    """``generate`` on one unpadded prompt: the new tokens of the best sequence, padding dropped."""
    from transformers import GenerationConfig

    config = GenerationConfig(num_beams=num_beams, num_return_sequences=1, do_sample=False, max_new_tokens=max_new,
                              pad_token_id=0, eos_token_id=stop_ids, length_penalty=length_penalty)
    with torch.inference_mode():
        out = model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             generation_config=config)[0, len(prompt):].tolist()
    # generate pads after the stop token with pad_token_id (0, never generated: its logit is masked below)
    return out[: max(i + 1 for i, t in enumerate(out) if t != 0)] if any(t != 0 for t in out) else []


def _pooled(model, prompts, shared: int, **kwargs) -> list[list[int]]:
    from leantune.evaluation.beam import pooled_beam_search
    from leantune.evaluation.generation import _encode_prefix

    results: dict[int, list[int]] = {}
    with torch.inference_mode():
        prefix = _encode_prefix(model, prompts[0][:shared], torch.device("cpu")) if shared else None
        pooled_beam_search(model, [p[shared:] for p in prompts], pad_id=0, prefix_cache=prefix, shared=shared,
                           on_done=lambda idx, toks: results.update(zip(idx, toks)), **kwargs)
    assert sorted(results) == list(range(len(prompts)))  # every prompt answered once
    return [results[i] for i in range(len(prompts))]


@pytest.mark.parametrize("num_beams,max_new,slots,length_penalty", [
    (4, 12, 3, 1.0),   # more prompts than slots: prompts join as others finish
    (2, 6, 16, 1.0),   # every prompt in flight at once
    (3, 9, 2, 0.6),    # another length penalty
    (1, 8, 4, 1.0),    # one beam = greedy search
])
def test_pooled_beam_search_equals_generate(num_beams, max_new, slots, length_penalty):
    model = _random_model()
    # The pad id can never be chosen, as in real use (its logit is pushed down here).
    with torch.no_grad():
        model.lm_head.weight[0] = 0.0
        model.model.embed_tokens.weight[0] = 0.0
    g = torch.Generator().manual_seed(1)
    head = torch.randint(3, 48, (5,), generator=g).tolist()
    prompts = [head + torch.randint(3, 48, (int(n),), generator=g).tolist()
               for n in torch.randint(1, 20, (11,), generator=g)]
    prompts.sort(key=len)
    # An end-of-sequence token and several "line break" tokens: finished lists fill within a few
    # steps, so the rule that keeps a prompt running while a running beam could still beat its worst
    # finished one decides when prompts end (stopping once the list is full fails this test).
    stop_ids = [2, 7, 11, 13, 17, 19]
    expected = [_reference(model, p, num_beams, max_new, stop_ids, length_penalty) for p in prompts]
    got = _pooled(model, prompts, shared=5, num_beams=num_beams, max_new_tokens=max_new, stop_ids=stop_ids,
                  slots=slots, length_penalty=length_penalty)
    assert got == expected
    lengths = {len(t) for t in expected}
    assert len(lengths) > 2  # responses of several lengths: prompts finish at different steps
    assert any(t and t[-1] in stop_ids for t in expected) and any(len(t) == max_new for t in expected)


def test_pooled_beam_search_without_shared_prefix_and_small_admissions():
    model = _random_model(seed=3)
    with torch.no_grad():
        model.lm_head.weight[0] = 0.0
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(3, 48, (int(n),), generator=g).tolist() for n in torch.randint(1, 15, (7,), generator=g)]
    expected = [_reference(model, p, 3, 7, [2, 5], 1.0) for p in prompts]
    # admit_tokens 1: one prompt encoded at a time
    got = _pooled(model, prompts, shared=0, num_beams=3, max_new_tokens=7, stop_ids=[2, 5], slots=3, admit_tokens=1)
    assert got == expected


def test_sliding_window_models_use_generate():
    from transformers import Gemma3TextConfig, LlamaConfig

    from leantune.evaluation.beam import supports_pool

    class Holder:
        def __init__(self, config):
            self.config = config

    assert supports_pool(Holder(LlamaConfig()))
    assert not supports_pool(Holder(Gemma3TextConfig(num_hidden_layers=2)))


def test_pooled_greedy_with_own_budgets_and_a_stop_rule_equals_generate():
    """Attribute answers: greedy search, each prompt with its own token budget, ended by a rule on its
    tokens (here: a 3-token run summing past a bound), as ``generate`` with a ``StoppingCriteria``
    ends each prompt on its own."""
    from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

    model = _random_model(seed=5)
    with torch.no_grad():
        model.lm_head.weight[0] = 0.0
        model.model.embed_tokens.weight[0] = 0.0
    g = torch.Generator().manual_seed(2)
    prompts = sorted((torch.randint(3, 48, (int(n),), generator=g).tolist() for n in torch.randint(1, 15, (9,), generator=g)), key=len)
    budgets = [int(b) for b in torch.randint(2, 12, (len(prompts),), generator=g)]

    def rule(tokens: list[int]) -> bool:
        return len(tokens) >= 3 and sum(tokens[-3:]) > 100

    class Rule(StoppingCriteria):
        def __init__(self, start):
            self.start = start

        def __call__(self, input_ids, scores, **kwargs):
            return torch.tensor([rule(row[self.start:].tolist()) for row in input_ids], dtype=torch.bool)

    expected = []
    for prompt, budget in zip(prompts, budgets):
        config = GenerationConfig(num_beams=1, do_sample=False, max_new_tokens=budget, pad_token_id=0, eos_token_id=[2])
        with torch.inference_mode():
            out = model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 generation_config=config, stopping_criteria=StoppingCriteriaList([Rule(len(prompt))])
                                 )[0, len(prompt):].tolist()
        expected.append(out)
    got = _pooled(model, prompts, shared=0, num_beams=1, max_new_tokens=99, stop_ids=[2], slots=3, budgets=budgets,
                  stop_tokens=rule)
    assert got == expected
    assert any(rule(t) for t in expected) and any(len(t) == b and not rule(t) for t, b in zip(expected, budgets))
    with pytest.raises(ValueError, match="greedy search"):
        _pooled(model, prompts, shared=0, num_beams=2, max_new_tokens=4, stop_ids=[2], slots=3, stop_tokens=rule)
