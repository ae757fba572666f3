"""Benchmark the LLM effort scorer against a no-grad forward pass and the naive per-sample autograd loop.

On SmolLM2-135M-Instruct with Games prompts (a seeded subset of the training samples):

* ``effort``: ``leantune.scoring.effort`` (length-sorted batches, grads for the last layer only,
  chunked LM head), split into trunk / LM head / backward.
* ``forward``: a no-grad forward pass of the same model over the same batches, per-sample loss from
  the model's logits (the HF way); its trunk and head+loss parts are timed separately.
* ``naive``: one sample at a time, the model's own loss, a full backward through every layer (the
  reference: all LoRA layers present, input embeddings requiring grad), read the last layer's
  v_proj LoRA-B gradient. Run on the first ``--naive-samples`` samples; its rate is per token.
* ``effort bf16`` (optional): the same with bfloat16 autocast; Spearman against fp32.
* ``effort bf16 weights`` (optional): a second copy of the model held in bfloat16 (its fresh LoRA
  adapter in float32; ``--opt effort_dtype=bfloat16-weights``); Spearman against fp32.

All runs are timed batch by batch in turn (forward, effort, effort bf16, a share of the naive
samples), so that load from other processes on a shared machine hits them alike; the ratios are
the headline figures, absolute rates depend on that load.

    python3 benchmarks/bench_effort.py --device cpu --samples 256
    python3 benchmarks/bench_effort.py --device cuda --samples 4096 --batch-size 32 --naive-samples 128

Results go to ``benchmarks/results/effort.{json,md}`` (``effort.<device>.*`` off the CPU). On a
machine without the converted checkpoint, ``--model <folder with config + tokenizer>
--random-weights`` times the same architecture with random weights.
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
from leantune.scoring.effort import EffortConfig, EffortModel, StageTimer  # noqa: E402


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def batches(encoded, batch_size):
    order = np.argsort([len(e.ids) for e in encoded], kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def forward_losses(effort: EffortModel, batch, timings: dict) -> np.ndarray:
    """No-grad forward of the plain model (adapter off) and per-sample mean loss from its logits."""
    timer = StageTimer(timings, effort.device)
    ids, mask, positions, weights = effort._collate(batch)
    with torch.no_grad(), effort.model.disable_adapter():
        with timer("trunk"):
            hidden = effort.trunk(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
            hidden = hidden.last_hidden_state
        with timer("head"):
            logits = effort.lm.lm_head(hidden).float()
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none"
            ).view(ids.shape[0], -1)
            loss = (nll * weights[:, :-1]).sum(dim=1)
    return loss.cpu().numpy()


def naive_model(effort: EffortModel):
    """The reference's way: LoRA q/v on every layer, input grads on (full backward), batch 1."""
    from peft import LoraConfig, get_peft_model

    from leantune.models.llm import load_model

    c = effort.config
    base, _ = load_model(c.model, "float32", "cpu")
    model = get_peft_model(base, LoraConfig(r=c.lora_r, lora_alpha=c.lora_alpha, lora_dropout=0.0,
                                            target_modules=list(c.lora_targets), task_type="CAUSAL_LM"))
    model.eval().to(effort.device)
    for p in model.parameters():
        p.requires_grad_(False)
    model.enable_input_require_grads()
    # Same A as the fast scorer's adapter, so the two must agree (all other B are zero).
    layer = effort.layers[-1]
    target = model.get_base_model().model.layers[layer].self_attn.v_proj
    source = effort.targets[(layer, "v_proj")]
    mine = effort.lm.model.layers[layer].self_attn.v_proj
    with torch.no_grad():
        target.lora_A["default"].weight.copy_(mine.lora_A["default"].weight)
    target.lora_B["default"].weight.requires_grad_(True)
    assert source.weight.shape == target.lora_B["default"].weight.shape
    return model, target.lora_B["default"].weight


def naive_effort(model, weight, enc, device) -> float:
    ids = torch.tensor([enc.ids], device=device)
    labels = ids.clone()
    labels[0, : enc.loss_from] = -100
    weight.grad = None
    model(input_ids=ids, labels=labels).loss.backward()
    return float(weight.grad.norm())


def random_weights_copy(spec: str, seed: int) -> str:
    """A temporary model folder: ``spec``'s config and tokenizer files with seeded random weights."""
    import shutil
    import tempfile

    from transformers import AutoConfig, AutoModelForCausalLM

    from leantune.models.llm import resolve_model

    source = Path(spec) if Path(spec).is_dir() else resolve_model(spec)
    dest = Path(tempfile.mkdtemp(prefix="bench-effort-random-"))
    for f in source.iterdir():
        if f.is_file() and not f.name.endswith((".safetensors", ".bin", ".gguf")):
            shutil.copy(f, dest / f.name)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source)).save_pretrained(dest)
    return str(dest)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=256, help="seeded subset of Games training samples")
    parser.add_argument("--naive-samples", type=int, default=32, help="samples for the one-at-a-time loop")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 4 on CPU, 32 on CUDA")
    parser.add_argument("--head-chunk", type=int, default=None)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 autocast run")
    parser.add_argument("--no-bf16-weights", action="store_true", help="skip the run with the model held in bfloat16")
    parser.add_argument("--random-weights", action="store_true",
                        help="time random weights of --model's architecture (a folder holding its config and tokenizer "
                             "is enough): for machines without the converted checkpoint; effort values are meaningless")
    parser.add_argument("--note", default="", help="a remark stored with the results (e.g. where the weights came from)")
    parser.add_argument("--out", default=None, help="results stem (default benchmarks/results/effort[.<device>])")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_size = args.batch_size or (32 if device.type == "cuda" else 4)

    data = load_dataset("games")
    pool = data.train_samples
    rng = np.random.default_rng(args.seed)
    subset = [pool[i] for i in sorted(rng.choice(len(pool), size=min(args.samples, len(pool)), replace=False))]

    model_spec = random_weights_copy(args.model, args.seed) if args.random_weights else args.model
    config = EffortConfig(model=model_spec, batch_size=batch_size, progress=False)
    if args.head_chunk:
        config = replace(config, head_chunk=args.head_chunk)
    began = time.perf_counter()
    effort = EffortModel(config, args.device, seed=args.seed)
    load_s = time.perf_counter() - began
    began = time.perf_counter()
    encoded = effort.encode(data, subset)
    encode_s = time.perf_counter() - began
    lengths = np.array([len(e.ids) for e in encoded])
    tokens = int(lengths.sum())
    groups = batches(encoded, batch_size)
    padded_tokens = int(sum(len(g) * lengths[g].max() for g in groups))

    naive_n = min(args.naive_samples, len(encoded))
    model, weight = naive_model(effort)
    bf16_config = None if args.no_bf16 else replace(config, dtype="bfloat16")

    def effort_bf16(batch, timings=None):
        effort.config = bf16_config
        try:
            return effort.batch_effort(batch, timings)
        finally:
            effort.config = config

    weights_model = None if args.no_bf16_weights else EffortModel(replace(config, dtype="bfloat16-weights"), args.device, seed=args.seed)

    # Warm-up (allocator, kernels), not timed.
    warm = [encoded[i] for i in groups[-1]]
    if weights_model:
        weights_model.batch_effort(warm)
    effort.batch_effort(warm)
    forward_losses(effort, warm, {})
    naive_effort(model, weight, encoded[0], device)
    if bf16_config:
        effort_bf16(warm)

    # Every run advances batch by batch in turn, so load from other processes hits all alike.
    seconds = {"forward": 0.0, "effort": 0.0, "bf16": 0.0, "bf16_weights": 0.0, "naive": 0.0}
    eff_t, fwd_t, bf_t, bw_t = {}, {}, {}, {}
    values, bf_values, naive_values = np.empty(len(encoded)), np.empty(len(encoded)), np.empty(naive_n)
    bw_values = np.empty(len(encoded))
    naive_done = 0

    def timed(name, fn):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        seconds[name] += time.perf_counter() - t0
        return out

    from tqdm.auto import tqdm

    for step, g in enumerate(tqdm(groups, desc="batches", unit="batch")):
        batch = [encoded[i] for i in g]
        timed("forward", lambda: forward_losses(effort, batch, fwd_t))
        values[g] = timed("effort", lambda: effort.batch_effort(batch, eff_t))
        if bf16_config:
            bf_values[g] = timed("bf16", lambda: effort_bf16(batch, bf_t))
        if weights_model:
            bw_values[g] = timed("bf16_weights", lambda: weights_model.batch_effort(batch, bw_t))
        while naive_done < naive_n * (step + 1) / len(groups):
            naive_values[naive_done] = timed("naive", lambda: naive_effort(model, weight, encoded[naive_done], device))
            naive_done += 1
    model = None  # frees the naive copy before the summaries
    eff_s, fwd_s, naive_s = seconds["effort"], seconds["forward"], seconds["naive"]
    naive_tokens = int(lengths[:naive_n].sum())
    naive_rel = float(np.max(np.abs(values[:naive_n] - naive_values) / naive_values))

    bf16 = None
    if bf16_config:
        bf_s = seconds["bf16"]
        bf16 = {"seconds": bf_s, "tokens_per_s": tokens / bf_s, "speedup_vs_fp32_effort": eff_s / bf_s,
                "spearman_vs_fp32": spearman(bf_values, values),
                "max_rel_diff_vs_fp32": float(np.max(np.abs(bf_values - values) / values)), "profile_s": bf_t}

    bf16_weights = None
    if weights_model:
        bw_s = seconds["bf16_weights"]
        bf16_weights = {"seconds": bw_s, "tokens_per_s": tokens / bw_s, "samples_per_s": len(encoded) / bw_s,
                        "speedup_vs_fp32_effort": eff_s / bw_s, "spearman_vs_fp32": spearman(bw_values, values),
                        "max_rel_diff_vs_fp32": float(np.max(np.abs(bw_values - values) / values)), "profile_s": bw_t}

    n_full = len(pool)
    full_tokens = lengths.mean() * n_full
    naive_tok_s = naive_tokens / naive_s
    result = {
        "command": "python3 benchmarks/bench_effort.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "device": str(device),
        "device_name": machine_summary(str(device)),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "model": args.model + (" (random weights)" if args.random_weights else ""),
        "note": args.note,
        "config": {k: getattr(config, k) for k in ("modules", "layers", "lora_targets", "lora_r", "lora_alpha",
                                                   "batch_size", "head_chunk", "dtype", "mask_prompt", "max_tokens")},
        "samples": len(encoded),
        "tokens": tokens,
        "padded_tokens": padded_tokens,
        "mean_tokens": float(lengths.mean()),
        "model_load_s": load_s,
        "encode_s": encode_s,
        "effort": {"seconds": eff_s, "tokens_per_s": tokens / eff_s, "samples_per_s": len(encoded) / eff_s,
                   "profile_s": eff_t},
        "forward": {"seconds": fwd_s, "tokens_per_s": tokens / fwd_s, "samples_per_s": len(encoded) / fwd_s,
                    "profile_s": fwd_t},
        "naive": {"samples": naive_n, "tokens": naive_tokens, "seconds": naive_s, "tokens_per_s": naive_tok_s,
                  "samples_per_s": naive_n / naive_s, "max_rel_diff_vs_effort": naive_rel},
        "ratios": {
            "effort_over_forward": eff_s / fwd_s,
            "effort_over_forward_trunk": eff_s / fwd_t["trunk"],
            "naive_over_effort_per_token": (tokens / eff_s) / naive_tok_s,
        },
        "bf16": bf16,
        "bf16_weights": bf16_weights,
        "load_average": os.getloadavg()[0],
        "full_games": {
            "samples": n_full,
            "tokens_estimate": float(full_tokens),
            "effort_hours": full_tokens / (tokens / eff_s) / 3600,
            "forward_hours": full_tokens / (tokens / fwd_s) / 3600,
            "naive_hours": full_tokens / naive_tok_s / 3600,
            "effort_bf16_hours": full_tokens / bf16["tokens_per_s"] / 3600 if bf16 else None,
            "effort_bf16_weights_hours": full_tokens / bf16_weights["tokens_per_s"] / 3600 if bf16_weights else None,
        },
    }
    if args.random_weights:
        import shutil

        shutil.rmtree(model_spec, ignore_errors=True)
    stem = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / ("effort" if device.type == "cpu" else f"effort.{device.type}")
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_json(str(stem) + ".json", result)
    with atomic_path(str(stem) + ".md") as tmp:
        tmp.write_text(markdown(result))
    print(markdown(result))
    return result


def markdown(r: dict) -> str:
    e, f, n, ratios, full = r["effort"], r["forward"], r["naive"], r["ratios"], r["full_games"]
    ep, fp = e["profile_s"], f["profile_s"]
    lines = [
        f"# Effort scorer benchmark ({r['device']}, {r['device_name']})",
        "",
        f"Reproduce: `{r['command']}`",
        "",
        f"{r['model']}, {r['samples']} seeded Games training samples, {r['tokens']} tokens "
        f"(mean {r['mean_tokens']:.0f}; {r['padded_tokens']} with padding), batch {r['config']['batch_size']}, "
        f"grads of {', '.join(r['config']['modules'])} LoRA-B in layers {list(r['config']['layers'])}, "
        f"torch {r['torch']}, {r['torch_threads']} threads.",
        "",
        *([f"Note: {r['note']}", ""] if r.get("note") else []),
        "| run | seconds | tokens/s | samples/s |",
        "|---|---:|---:|---:|",
        f"| no-grad forward (HF logits + loss) | {f['seconds']:.1f} | {f['tokens_per_s']:.0f} | {f['samples_per_s']:.2f} |",
        f"| effort (fp32, exact) | {e['seconds']:.1f} | {e['tokens_per_s']:.0f} | {e['samples_per_s']:.2f} |",
    ]
    if r["bf16"]:
        b = r["bf16"]
        lines.append(f"| effort (bf16 autocast) | {b['seconds']:.1f} | {b['tokens_per_s']:.0f} | "
                     f"{r['samples'] / b['seconds']:.2f} |")
    if r.get("bf16_weights"):
        w = r["bf16_weights"]
        lines.append(f"| effort (model held in bf16) | {w['seconds']:.1f} | {w['tokens_per_s']:.0f} | {w['samples_per_s']:.2f} |")
    lines += [
        f"| naive loop, batch 1, full backward ({n['samples']} samples) | {n['seconds']:.1f} | "
        f"{n['tokens_per_s']:.0f} | {n['samples_per_s']:.2f} |",
        "",
        f"- **effort / forward = {ratios['effort_over_forward']:.3f}** (runs interleaved batch by batch); "
        f"effort / forward trunk only = {ratios['effort_over_forward_trunk']:.3f}.",
        f"- effort is **{ratios['naive_over_effort_per_token']:.1f}x** the naive loop's tokens/s; "
        f"largest relative difference between the two on the naive samples: {n['max_rel_diff_vs_effort']:.1e}.",
        f"- Where the time goes — effort: trunk {ep.get('trunk', 0):.1f} s, LM head (logits + softmax + "
        f"∂ℓ/∂h) {ep.get('head', 0):.1f} s, backward through the chosen layer(s) + per-sample einsum "
        f"{ep.get('backward', 0):.1f} s; forward: trunk {fp.get('trunk', 0):.1f} s, LM head + loss {fp.get('head', 0):.1f} s.",
    ]
    head_share = fp.get("head", 0) / f["seconds"]
    lines.append(f"- The LM head (+ loss) is {head_share:.0%} of the forward pass. Effort's head takes "
                 f"{ep.get('head', 0) / max(fp.get('head', 0), 1e-9):.2f}x as long: besides the logits it needs "
                 f"∂ℓ/∂h = Wᵀ(softmax − onehot), a second matmul as large, but it works in chunks on the loss positions "
                 f"only, with no batch × length × vocabulary tensor. The trunk costs the same in both.")
    if r["bf16"]:
        b = r["bf16"]
        lines.append(f"- bf16 autocast: {b['speedup_vs_fp32_effort']:.2f}x the fp32 effort speed, Spearman "
                     f"{b['spearman_vs_fp32']:.4f} against fp32 (largest relative difference {b['max_rel_diff_vs_fp32']:.1e}); "
                     f"its time: trunk {b['profile_s'].get('trunk', 0):.1f} s, LM head {b['profile_s'].get('head', 0):.1f} s, "
                     f"backward {b['profile_s'].get('backward', 0):.1f} s.")
    if r.get("bf16_weights"):
        w = r["bf16_weights"]
        lines.append(f"- **model held in bf16** (`--opt effort_dtype=bfloat16-weights`): **{w['speedup_vs_fp32_effort']:.2f}x** "
                     f"the fp32 effort speed (goal ≥ 2x), Spearman **{w['spearman_vs_fp32']:.4f}** against fp32 (goal ≥ 0.99; "
                     f"largest relative difference {w['max_rel_diff_vs_fp32']:.1e}); its time: trunk "
                     f"{w['profile_s'].get('trunk', 0):.1f} s, LM head {w['profile_s'].get('head', 0):.1f} s, backward "
                     f"{w['profile_s'].get('backward', 0):.1f} s.")
    if "load_average" in r:
        lines.append(f"- 1-min load average {r['load_average']:.1f} at the end (this benchmark's own threads count).")
    lines += [
        f"- Full Games ({full['samples']} samples, ≈{full['tokens_estimate'] / 1e6:.2f} M tokens at this subset's mean "
        f"length): effort ≈ {full['effort_hours']:.2f} h, forward ≈ {full['forward_hours']:.2f} h, naive ≈ "
        f"{full['naive_hours']:.2f} h" + (f", effort bf16 ≈ {full['effort_bf16_hours']:.2f} h" if full["effort_bf16_hours"] else "")
        + (f", model in bf16 ≈ {full['effort_bf16_weights_hours']:.2f} h" if full.get("effort_bf16_weights_hours") else "") + ".",
        f"- Model load {r['model_load_s']:.1f} s, tokenisation {r['encode_s']:.1f} s (not in the rates).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
