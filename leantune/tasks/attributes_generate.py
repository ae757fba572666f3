"""Greedy batched generation for attribute answers.

Uses ``leantune.evaluation.generation`` when it provides ``generate_texts``; otherwise this small
fallback: prompts sorted by length (less padding), left-padded batches, ``model.generate`` greedy,
optional stop strings so a rambling zero-shot model stops after its JSON object.
"""
from __future__ import annotations

from typing import Sequence


def greedy_generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 16,
    stop_strings: Sequence[str] = (),
    progress: bool = True,
    desc: str = "generating",
) -> list[str]:
    import torch
    from tqdm.auto import tqdm

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    extra = {"stop_strings": list(stop_strings), "tokenizer": tokenizer} if stop_strings else {}
    try:
        with torch.inference_mode(), tqdm(total=len(prompts), desc=desc, disable=not progress, leave=False) as bar:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    **extra,
                )
                texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                for i, text in zip(idx, texts):
                    outputs[i] = text
                bar.update(len(idx))
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return outputs
