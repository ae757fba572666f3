"""Cross-entropy for causal-LM fine-tuning over a large vocabulary, in row chunks.

transformers' ``ForCausalLMLoss`` upcasts the whole ``[tokens, vocab]`` logits to float32 and runs
``log_softmax``, whose CPU backward rebuilds the dense softmax from the saved float32 output. With
Gemma 3's 262,144-token vocabulary that is most of a gigabyte per micro-batch and, on this CPU, a
fifth of a product-level training step (``benchmarks/bench_ce_loss.py``). ``causal_lm_loss`` computes
the same loss — the same shifting, ``ignore_index``, mean or ``sum / num_items_in_batch`` — keeping
only the logits (in their own dtype) and one float32 log-sum-exp per row for the backward pass, which
recomputes the softmax a chunk of rows at a time. Values and gradients equal the reference's up to
float32 rounding (``tests/test_loss.py``).
"""
from __future__ import annotations

import torch

CHUNK_ROWS = 64  # rows per float32 chunk: 64 x 262,144 x 4 bytes = 64 MiB at Gemma's vocabulary


class _SummedCrossEntropy(torch.autograd.Function):
    """sum over rows with ``target != ignore_index`` of ``logsumexp(logits[i]) - logits[i, target[i]]``."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, ignore_index: int, chunk: int):
        valid = target != ignore_index
        safe = torch.where(valid, target, torch.zeros_like(target))
        lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        for start in range(0, logits.shape[0], chunk):
            x = logits[start:start + chunk].to(torch.float32, copy=True)  # never in place on the logits
            peak = x.amax(dim=-1, keepdim=True)
            lse[start:start + chunk] = x.sub_(peak).exp_().sum(dim=-1).log_().add_(peak.squeeze(-1))
        picked = logits.gather(1, safe.unsqueeze(1)).squeeze(1).float()
        ctx.save_for_backward(logits, safe, valid, lse)
        ctx.chunk = chunk
        return ((lse - picked) * valid).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, safe, valid, lse = ctx.saved_tensors
        scale = grad.float() * valid.float()
        out = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.chunk):
            stop = min(start + ctx.chunk, logits.shape[0])
            rows = torch.arange(stop - start, device=logits.device)
            p = logits[start:stop].to(torch.float32, copy=True).sub_(lse[start:stop, None]).exp_().mul_(scale[start:stop, None])
            p[rows, safe[start:stop]] -= scale[start:stop]
            out[start:stop] = p
        return out, None, None, None


def summed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100,
                         chunk: int = CHUNK_ROWS) -> torch.Tensor:
    """Summed cross-entropy of ``logits`` (``[rows, vocab]``, any float dtype) against ``target``
    (``[rows]``), rows equal to ``ignore_index`` left out; float32 result."""
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"logits must be [rows, vocab] and target [rows]; got {tuple(logits.shape)} and {tuple(target.shape)}")
    return _SummedCrossEntropy.apply(logits, target, ignore_index, chunk)


def causal_lm_loss(logits, labels, vocab_size: int, num_items_in_batch=None, ignore_index: int = -100,
                   shift_labels=None, **kwargs) -> torch.Tensor:
    """Drop-in for transformers' ``ForCausalLMLoss`` (same arguments and result), computed with
    ``summed_cross_entropy``: set it as a model's ``loss_function``."""
    if shift_labels is None:
        labels = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)
        shift_labels = labels[..., 1:]
    logits = logits.reshape(-1, vocab_size)
    target = shift_labels.reshape(-1).to(logits.device)
    total = summed_cross_entropy(logits, target, ignore_index)
    if num_items_in_batch is None:
        return total / (target != ignore_index).sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch
