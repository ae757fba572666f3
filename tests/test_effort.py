"""Effort on the tiny Llama: batched = one at a time = plain autograd, for any padding or order."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from leantune.errors import LeantuneError  # noqa: E402
from leantune.scoring import SCORERS, ScoringContext  # noqa: E402
from leantune.scoring.effort import EffortConfig, EffortModel, EffortScorer, encode_sample  # noqa: E402

TINY = EffortConfig(model="tiny", progress=False)
REL = 1e-4


@pytest.fixture(scope="module")
def tiny_model():
    return EffortModel(TINY, "cpu", seed=0)


@pytest.fixture
def encoded(tiny_rec, tiny_model):
    samples = tiny_rec.train_samples[:8]
    return samples, tiny_model.encode(tiny_rec, samples)


def autograd_effort(effort: EffortModel, enc) -> float:
    """The naive way: one sample, the model's own loss, every parameter trainable, a full backward."""
    ids = torch.tensor([enc.ids])
    labels = ids.clone()
    labels[0, : enc.loss_from] = -100
    saved = {p: p.requires_grad for p in effort.model.parameters()}
    try:
        for p in saved:
            p.requires_grad_(True)
            p.grad = None
        effort.model(input_ids=ids, labels=labels).loss.backward()
        squared = sum(float(b.weight.grad.double().square().sum()) for b in effort.targets.values())
    finally:
        for p, flag in saved.items():
            p.requires_grad_(flag)
            p.grad = None
    return squared**0.5


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def test_registered():
    assert "effort" in SCORERS.names()
    assert SCORERS.get("effort") is EffortScorer


def test_batched_equals_one_at_a_time(tiny_model, encoded):
    _, enc = encoded
    tiny_model.config = replace(TINY, batch_size=3)
    batched = tiny_model.scores(enc)
    single = np.array([tiny_model.batch_effort([e])[0] for e in enc])
    assert np.all(batched > 0)
    assert len({len(e.ids) for e in enc}) > 1  # padding really happens
    assert rel(batched, single) < REL


def test_layers_below_the_chosen_one_run_without_grad(tiny_model, encoded):
    _, enc = encoded
    seen = []
    handles = [layer.register_forward_hook(lambda m, a, out, i=i: seen.append((i, torch.is_grad_enabled())))
               for i, layer in enumerate(tiny_model.trunk.layers)]
    try:
        tiny_model.batch_effort(enc[:2])
    finally:
        for h in handles:
            h.remove()
    assert seen == [(0, False), (1, True)]
    assert torch.is_grad_enabled()


def test_equals_full_autograd_reference(tiny_model, encoded):
    _, enc = encoded
    tiny_model.config = replace(TINY, batch_size=4)
    fast = tiny_model.scores(enc)
    reference = [autograd_effort(tiny_model, e) for e in enc]
    assert rel(fast, reference) < REL


def test_padding_side_and_order_do_not_matter(tiny_model, encoded):
    _, enc = encoded
    tiny_model.config = replace(TINY, batch_size=4, padding_side="right", sort_by_length=True)
    base = tiny_model.scores(enc)
    tiny_model.config = replace(TINY, batch_size=4, padding_side="left", sort_by_length=False)
    left_unsorted = tiny_model.scores(enc)
    perm = np.random.default_rng(1).permutation(len(enc))
    tiny_model.config = replace(TINY, batch_size=3, padding_side="left", sort_by_length=True)
    permuted = tiny_model.scores([enc[i] for i in perm])
    assert rel(left_unsorted, base) < REL
    assert rel(permuted, base[perm]) < REL


def test_mask_prompt_changes_the_result(tiny_rec, tiny_model, encoded):
    samples, enc = encoded
    masked = [encode_sample(tiny_rec, s, tiny_model.tokenizer, 512, mask_prompt=True) for s in samples]
    assert all(m.ids == e.ids and m.loss_from > 1 for m, e in zip(masked, enc))
    tiny_model.config = replace(TINY, batch_size=4)
    full, only_response = tiny_model.scores(enc), tiny_model.scores(masked)
    assert np.all(np.abs(full - only_response) > 1e-3 * full)
    # The masked variant is exact too.
    assert rel(only_response[:3], [autograd_effort(tiny_model, m) for m in masked[:3]]) < REL


def test_empty_history_and_short_cut(tiny_rec, tiny_model):
    empty = [s for s in tiny_rec.train_samples if not s.history]
    assert empty, "fixture should contain users with one training item"
    enc = tiny_model.encode(tiny_rec, empty[:2])
    tiny_model.config = TINY
    values = tiny_model.scores(enc)
    assert np.all(np.isfinite(values)) and np.all(values > 0)
    assert rel(values, [autograd_effort(tiny_model, e) for e in enc]) < REL


def test_scorer_is_chunk_independent(tiny_rec):
    samples = tiny_rec.train_samples[:8]
    ctx = ScoringContext(tiny_rec, seed=3, options={"model": "tiny", "effort_batch_size": 3, "effort_progress": False})
    scorer = EffortScorer()
    whole = scorer.score(samples, ctx)["effort"]
    parts = np.concatenate([scorer.score(samples[:4], ctx)["effort"], scorer.score(samples[4:], ctx)["effort"]])
    assert whole.shape == (8,) and rel(parts, whole) < REL
    # A fresh context with the same seed rebuilds the same adapter, hence the same values.
    again = EffortScorer().score(samples[4:], ScoringContext(tiny_rec, seed=3, options=dict(ctx.options)))["effort"]
    assert rel(again, whole[4:]) < REL
    other_seed = EffortScorer().score(samples[4:], ScoringContext(tiny_rec, seed=4, options=dict(ctx.options)))["effort"]
    assert rel(other_seed, whole[4:]) > 1e-3


def test_query_and_value_modules(tiny_rec):
    cfg = replace(TINY, modules=("q_proj", "v_proj"), layers=(0, -1))
    effort = EffortModel(cfg, "cpu", seed=0)
    enc = effort.encode(tiny_rec, tiny_rec.train_samples[:4])
    assert rel(effort.scores(enc), [autograd_effort(effort, e) for e in enc]) < REL


def test_trained_adapter_folder(tiny_rec, tmp_path):
    from peft import LoraConfig, get_peft_model

    from leantune.models.llm import load_model

    base, _ = load_model("tiny")
    torch.manual_seed(5)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a "trained" adapter: B != 0 on every layer
    model.save_pretrained(tmp_path / "adapter")
    effort = EffortModel(replace(TINY, adapter=str(tmp_path / "adapter")), "cpu", seed=0)
    enc = effort.encode(tiny_rec, tiny_rec.train_samples[:4])
    assert rel(effort.scores(enc), [autograd_effort(effort, e) for e in enc]) < REL


def test_options_from_the_command_line():
    cfg = EffortConfig.from_options({"model": "tiny", "effort_modules": "q_proj, v_proj", "effort_layers": "0,-1",
                                     "effort_batch_size": "8", "effort_mask_prompt": "true"})
    assert (cfg.model, cfg.modules, cfg.layers, cfg.batch_size, cfg.mask_prompt) == \
        ("tiny", ("q_proj", "v_proj"), (0, -1), 8, True)
    with pytest.raises(LeantuneError, match="effort_layers"):
        EffortConfig.from_options({"effort_layers": "last"})


def test_bad_settings_are_one_line_errors(tiny_rec):
    with pytest.raises(LeantuneError, match="dtype"):
        replace(TINY, dtype="float8").validate()
    with pytest.raises(LeantuneError, match="no LoRA adapter"):
        replace(TINY, modules=("k_proj",)).validate()
    with pytest.raises(LeantuneError, match="layers"):
        EffortModel(replace(TINY, layers=(7,)), "cpu")
    ctx = ScoringContext(tiny_rec, options={"model": "tiny", "effort_batch_size": 0})
    with pytest.raises(LeantuneError, match="batch_size"):
        EffortScorer().score(tiny_rec.train_samples[:2], ctx)


def test_bf16_weights_track_fp32_and_keep_the_adapter_in_fp32(tiny_rec, tiny_model, encoded):
    # The model held in bfloat16 (the fast path on AMX CPUs): scores close to the exact fp32 ones, ranks
    # nearly equal, and peft's fresh LoRA B matrices (whose gradients are the score) stay float32.
    samples, enc = encoded
    exact = tiny_model.scores(enc, progress=False)
    import leantune.device as device
    from leantune.errors import LeantuneWarning

    with pytest.MonkeyPatch.context() as mp:  # a CPU without native bf16: the setting is named in a warning
        mp.setattr(device, "cpu_native_bf16", lambda: "")
        with pytest.warns(LeantuneWarning, match="effort_dtype=bfloat16-weights on a CPU without native bf16"):
            EffortModel(replace(TINY, dtype="bfloat16-weights"), "cpu", seed=0)
    fast = EffortModel(replace(TINY, dtype="bfloat16-weights"), "cpu", seed=0)
    assert next(fast.lm.parameters()).dtype == torch.bfloat16
    assert all(b.weight.dtype == torch.float32 for b in fast.targets.values())
    values = fast.scores(fast.encode(tiny_rec, samples), progress=False)
    assert rel(values, exact) < 0.05
    from scipy.stats import spearmanr

    assert spearmanr(values, exact)[0] > 0.9
    ctx = ScoringContext(tiny_rec, options={"model": "tiny", "effort_dtype": "bfloat16-weights", "progress": False})
    scorer = EffortScorer()
    assert scorer.model(ctx) is not scorer.model(ScoringContext(tiny_rec, options={"model": "tiny", "progress": False},
                                                                 extras=ctx.extras))  # other weights, other model
