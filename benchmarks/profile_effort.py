"""Where an effort pass over a Games prompt spends its time: embedding, attention, MLP, norms, the
rest of the trunk (rotary tables, residual adds, Python), the LM head and the backward.

    python3 benchmarks/profile_effort.py --samples 128 --threads 1

Runs ``leantune.scoring.effort.EffortModel.batch_effort`` (the scorer itself, length-sorted batches)
on a seeded subset of Games training samples, once with the model in float32 (the exact default) and
once held in bfloat16 (``--opt effort_dtype=bfloat16-weights``), batch by batch in turn. Forward
hooks time each decoder layer's attention block (q/k/v/o projections with their LoRA, rotary
application, the attention kernel), its MLP and its two RMSNorms; "trunk, other" is the trunk's wall
time minus those parts. LM head (logits, softmax, ∂ℓ/∂h) and backward come from the scorer's own
stage timer. Hooks add a few hundred Python calls per batch; the "other" share includes them.
Results: ``benchmarks/results/effort-profile.{json,md}``.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from _common import ROOT, machine_summary  # first: puts the repo on sys.path, the hub offline

import torch  # noqa: E402

from leantune.data import load_dataset  # noqa: E402
from leantune.io import atomic_path, write_json  # noqa: E402
from leantune.scoring.effort import EffortConfig, EffortModel  # noqa: E402

PARTS = ("embedding", "attention", "mlp", "norms")


class PartTimer:
    """Forward pre/post hooks that add each module's wall time to its part."""

    def __init__(self, trunk):
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self._start: dict[int, float] = {}
        named = [("embedding", trunk.embed_tokens), ("norms", trunk.norm)]
        for layer in trunk.layers:
            named += [("attention", layer.self_attn), ("mlp", layer.mlp),
                      ("norms", layer.input_layernorm), ("norms", layer.post_attention_layernorm)]
        for part, module in named:
            module.register_forward_pre_hook(self._pre)
            module.register_forward_hook(self._post(part))

    def _pre(self, module, args):
        self._start[id(module)] = time.perf_counter()

    def _post(self, part):
        def hook(module, args, output):
            self.seconds[part] += time.perf_counter() - self._start.pop(id(module))
        return hook


def profile(samples: int, batch_size: int, seed: int) -> dict:
    data = load_dataset("games")
    pool = data.train_samples
    rng = np.random.default_rng(seed)
    subset = [pool[i] for i in sorted(rng.choice(len(pool), size=min(samples, len(pool)), replace=False))]
    config = EffortConfig(model="smollm2", batch_size=batch_size, progress=False)
    models = {"float32": EffortModel(config, "cpu", seed=seed),
              "bfloat16 weights": EffortModel(replace(config, dtype="bfloat16-weights"), "cpu", seed=seed)}
    encoded = models["float32"].encode(data, subset)
    lengths = np.array([len(e.ids) for e in encoded])
    order = np.argsort(lengths, kind="stable")
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    timers = {name: PartTimer(m.trunk) for name, m in models.items()}
    stages = {name: {} for name in models}
    warm = [encoded[i] for i in groups[-1]]
    for name, m in models.items():  # allocator and kernels warm, not timed
        m.batch_effort(warm)
        timers[name].seconds = dict.fromkeys(PARTS, 0.0)
    load = os.getloadavg()
    for g in groups:
        batch = [encoded[i] for i in g]
        for name, m in models.items():
            m.batch_effort(batch, stages[name])
    result = {"samples": len(encoded), "tokens": int(lengths.sum()), "mean_tokens": float(lengths.mean()),
              "batch_size": batch_size, "threads": torch.get_num_threads(), "load_before": [round(x, 2) for x in load],
              "load_after": [round(x, 2) for x in os.getloadavg()], "runs": {}}
    for name in models:
        t = {k: float(v["seconds"] if isinstance(v, dict) else v) for k, v in stages[name].items()}
        parts = dict(timers[name].seconds)
        parts["trunk, other"] = max(0.0, t["trunk"] - sum(parts.values()))
        parts["LM head (logits, softmax, ∂ℓ/∂h)"] = t["head"]
        parts["backward (chosen layer + per-sample einsum)"] = t["backward"]
        total = sum(parts.values())
        result["runs"][name] = {"total_s": total, "samples_per_s": len(encoded) / total, "parts_s": parts}
    return result


def markdown(r: dict, command: str) -> str:
    names = list(r["runs"])
    lines = ["# Where effort spends its time (SmolLM2-135M, Games prompts, CPU)", "",
             f"`{command}`", "",
             f"{r['samples']} seeded Games training samples, {r['tokens']} tokens (mean {r['mean_tokens']:.0f}), batch "
             f"{r['batch_size']}, {r['threads']} torch thread(s), {machine_summary(threads=False)}; "
             f"1/5/15-min load average {r['load_before']} before and {r['load_after']} after "
             "(the load includes other jobs running beside this one: read the shares, not the absolute seconds).", "",
             "| part | " + " | ".join(f"{n} s | share" for n in names) + " |",
             "| --- | " + " | ".join("---: | ---:" for _ in names) + " |"]
    for part in r["runs"][names[0]]["parts_s"]:
        cells = []
        for n in names:
            run = r["runs"][n]
            cells.append(f"{run['parts_s'][part]:.1f} | {100 * run['parts_s'][part] / run['total_s']:.0f}%")
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(f"**{r['runs'][n]['total_s']:.1f}** | {r['runs'][n]['samples_per_s']:.2f} samples/s"
                                                for n in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--samples", type=int, default=128, help="seeded Games training samples")
    p.add_argument("--batch-size", type=int, default=4, help="the scorer's CPU default")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "effort-profile")
    args = p.parse_args(argv)
    if args.samples < 1 or args.batch_size < 1:
        raise SystemExit("error: --samples and --batch-size must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python3 benchmarks/profile_effort.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    result = profile(args.samples, args.batch_size, args.seed)
    result["command"] = command.strip()
    write_json(args.out.with_suffix(".json"), result)
    text = markdown(result, command.strip())
    with atomic_path(args.out.with_suffix(".md")) as tmp:
        Path(tmp).write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
