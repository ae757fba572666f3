"""Where the pooled beam search spends its time: model forwards that encode prompts vs decoding steps.

Wraps the model's forward to time every call and count its tokens (prompt encoding: several tokens
per row; decoding: one token per row), runs the default generation path on seeded Games test users,
and writes ``benchmarks/results/generation-profile.{json,md}`` with the machine load.

    python3 benchmarks/profile_generation.py --adapter runs/run-games-random-b64-s0/finetune/adapter --users 64
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from _common import RESULTS  # first: puts the repo on sys.path, the hub offline

from leantune.io import atomic_path, write_json  # noqa: E402

# Multiply-adds per token of SmolLM2-135M: 30 layers of 3.54 M weights, plus the 28.3 M-weight output
# layer for a decoding row (prompt encoding keeps only the last position's logits).
LAYER_WEIGHTS, HEAD_WEIGHTS = 30 * 3.54e6, 49152 * 576


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", type=Path, default=None, help="LoRA adapter folder (default: the base model)")
    p.add_argument("--users", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from leantune.data import load_dataset
    from leantune.data.prompts import sample_prompt
    from leantune.evaluation.bigrec import select_samples
    from leantune.evaluation.generation import GenerationSettings, generate_texts
    from leantune.models.llm import load_model
    from leantune.train import load_finetuned

    ds = load_dataset("games")
    model, tok = load_finetuned("smollm2", args.adapter) if args.adapter else load_model("smollm2")
    samples = select_samples(ds, "test", args.users, args.seed)
    prompts = [sample_prompt(ds, s, tok, 512, with_response=False).prompt for s in samples]
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    forward, calls = inner.forward, []

    def timed(*a, **k):
        start = time.perf_counter()
        out = forward(*a, **k)
        calls.append((tuple(k["input_ids"].shape), time.perf_counter() - start))
        return out

    inner.forward = timed
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    generate_texts(model, tok, prompts, GenerationSettings(), progress=False)
    wall = time.perf_counter() - start
    load = f"{load_before:.2f} -> {os.getloadavg()[0]:.2f}"
    encode = [(shape, t) for shape, t in calls if shape[1] > 1]
    decode = [(shape, t) for shape, t in calls if shape[1] == 1]
    tokens = sum(s[0] * s[1] for s, _ in encode)
    rows = sum(s[0] for s, _ in decode)
    encode_s, decode_s = sum(t for _, t in encode), sum(t for _, t in decode)
    flop = 2 * (tokens * LAYER_WEIGHTS + rows * (LAYER_WEIGHTS + HEAD_WEIGHTS))
    report = {"command": "python3 benchmarks/profile_generation.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "users": len(prompts), "wall_s": wall, "load": load, "encode_calls": len(encode),
              "encode_padded_tokens": tokens, "encode_s": encode_s, "decode_steps": len(decode), "decode_rows": rows,
              "decode_s": decode_s, "other_s": wall - encode_s - decode_s, "weight_tflop": flop / 1e12,
              "gflop_per_s_in_forwards": flop / 1e9 / (encode_s + decode_s)}
    write_json(RESULTS / "generation-profile.json", report)
    lines = ["# Where pooled generation spends its time", "", f"`{report['command']}`", "",
             f"{len(prompts)} seeded Games test users, 2 torch threads, load {load} (1 min, before -> after).", "",
             "| part | calls | size | seconds |", "| --- | ---: | ---: | ---: |",
             f"| prompt encoding | {len(encode)} | {tokens} padded tokens | {encode_s:.1f} |",
             f"| decoding | {len(decode)} steps | {rows} rows | {decode_s:.1f} |",
             f"| everything else (selection, copies, decoding text) | | | {report['other_s']:.1f} |",
             f"| total | | | {wall:.1f} |", "",
             f"Weight multiply-adds in the forwards: {flop / 1e12:.2f} TFLOP, "
             f"{report['gflop_per_s_in_forwards']:.0f} GFLOP/s over the forward time."]
    with atomic_path(RESULTS / "generation-profile.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
