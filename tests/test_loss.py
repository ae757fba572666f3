"""leantune.train.loss: the chunked cross-entropy equals transformers' ForCausalLMLoss, value and gradient."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers.loss.loss_utils import ForCausalLMLoss

from leantune.train.loss import causal_lm_loss, summed_cross_entropy

ROOT = Path(__file__).resolve().parents[1]


def _case(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(3, 7, 50, generator=g) * 4).to(dtype)
    labels = torch.randint(0, 50, (3, 7), generator=g)
    labels[0, :3] = -100  # a masked prompt
    labels[2, 5:] = -100
    return logits, labels


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("num_items", [None, 11])
def test_loss_and_gradient_equal_transformers(dtype, num_items):
    logits, labels = _case(dtype)
    got_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    kwargs = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    got = causal_lm_loss(got_in, labels, 50, **kwargs)
    ref = ForCausalLMLoss(ref_in, labels, 50, **kwargs)
    assert got.dtype == torch.float32 and torch.allclose(got, ref, rtol=1e-6, atol=1e-6)
    (got * 3).backward()
    (ref * 3).backward()
    assert got_in.grad.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 1e-2  # bf16 gradients: both round the same float32 values once
    assert torch.allclose(got_in.grad.float(), ref_in.grad.float(), rtol=tol, atol=tol)
    assert got_in.grad[0, :2].abs().sum() == 0  # positions whose next label is masked get no gradient


def test_shift_labels_and_chunks_give_the_same_loss():
    """The answer-only path passes ``shift_labels`` (already shifted); chunk size changes nothing."""
    logits, labels = _case(torch.float32, seed=1)
    shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    a = causal_lm_loss(logits, None, 50, shift_labels=shifted)
    b = ForCausalLMLoss(logits, labels, 50)
    c = summed_cross_entropy(logits.reshape(-1, 50), shifted.reshape(-1), chunk=2) / (shifted != -100).sum()
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(c, b, atol=1e-6)


def test_all_rows_ignored_is_nan_as_in_transformers_and_bad_shapes_are_named():
    logits = torch.randn(4, 9)
    target = torch.full((4,), -100)
    assert torch.isnan(causal_lm_loss(logits[None], None, 9, shift_labels=target[None]))
    with pytest.raises(ValueError, match="logits must be"):
        summed_cross_entropy(logits, target[:3])


def test_fine_tuning_uses_the_chunked_loss(tmp_path):
    from leantune.train.config import FinetuneConfig
    from leantune.train.lora import _build_trainer
    from leantune.data.tokenize import TextExample

    train = [TextExample("question: 1+1?", "2", "a"), TextExample("question: 2+2?", "4", "b")]
    cfg = FinetuneConfig(batch_size=2, micro_batch_size=2, max_steps=1)
    trainer, model = _build_trainer("tiny", train, [], tmp_path, cfg, total=1, target=1, progress=False, callbacks=[])
    assert trainer.chunked_loss and model.get_base_model().loss_function is causal_lm_loss


def test_bench_ce_loss_on_the_tiny_model(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_ce_loss as bench

    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    bench.main(["--model", "tiny", "--micro-batch-size", "2", "--steps", "2", "--rounds", "1", "--no-bf16"])
    text = (tmp_path / "ce-loss-tiny.md").read_text()
    assert "Reproduce: `python3 benchmarks/bench_ce_loss.py --model tiny" in text and "load average" in text
    from leantune.io import read_json

    row = read_json(tmp_path / "ce-loss-tiny.json")["models"][0]
    assert row["max_abs_loss_diff"] < 1e-5 and row["max_abs_grad_diff"] <= 1e-4 * max(row["max_abs_grad"], 1e-3)
    assert row["step_s"]["transformers"] > 0 and row["step_s"]["chunked"] > 0 and row["scored_per_round"] > 0
