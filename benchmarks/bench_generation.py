"""Evaluation throughput: BIGRec beam-4 generation (users/s) and attribute extraction (products/s),
old path vs new path, side by side in one process on the same inputs.

BIGRec (SmolLM2-135M, the fine-tuned adapter given with ``--adapter`` or the base model):

* ``old``: the generation path as it was when the evaluation issue was filed (``transformers``'
  ``generate`` over fixed batches of 8 prompts, every prompt encoded whole);
* ``generate, shared prefix``: ``generate`` over batches sized by padded prompt tokens, the token
  prefix all prompts share encoded once (``GenerationSettings(search="transformers")``);
* ``pooled``: the default, leantune's pooled beam search (``leantune.evaluation.beam``: a prompt
  leaves as soon as it is final and a waiting one takes its slot; the beams of a prompt read its
  prompt once), float32 weights, so its responses should equal ``old``'s;
* ``pooled, bf16``: the same with bfloat16 weights (``--gen-dtype bfloat16``), which changes numerics:
  it is reported with the number of responses that differ.

After grounding every response to an item, each path's Recall/NDCG@20 is compared with ``old``'s
user by user (paired bootstrap interval).

Attribute extraction (OA-Mine test products, greedy JSON answers, zero-shot SmolLM2): one product
at a time vs the task's batched default (float32), and batched with bfloat16 weights.

Writes ``benchmarks/results/generation.{json,md}`` with the machine load beside every timing.

    python3 benchmarks/bench_generation.py --adapter runs/run-games-random-b64-s0/finetune/adapter --users 128
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from _common import RESULTS, machine_summary  # first: puts the repo on sys.path, the hub offline

from leantune.io import atomic_path, write_json  # noqa: E402

GAMES_TEST_USERS = 8696


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", type=Path, default=None, help="LoRA adapter folder (default: the base model)")
    p.add_argument("--users", type=int, default=64, help="seeded Games test users (seed --seed; 0: skip the BIGRec part)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--products", type=int, default=24, help="OA-Mine test products for attribute extraction (0: skip)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--skip-bf16", action="store_true")
    p.add_argument("--name", default="generation", help="results file stem in benchmarks/results/")
    return p.parse_args(argv)


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} / {five:.2f} (1 / 5 min)"


def _timed(fn):
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - start
    return out, wall, f"{load_before:.2f} -> {os.getloadavg()[0]:.2f}"


def bigrec_part(args, rows: list[dict], notes: list[str]) -> dict:

    from leantune.data import load_dataset
    from leantune.data.prompts import sample_prompt
    from leantune.evaluation.bigrec import select_samples, with_dtype
    from leantune.evaluation.compare import Evaluation, compare
    from leantune.evaluation.generation import GenerationSettings, generate_texts
    from leantune.evaluation.grounding import clean_prediction, item_embeddings, rank_items, text_embeddings
    from leantune.evaluation.units import ranking_unit_rows
    from leantune.models.llm import load_model
    from leantune.train import load_finetuned

    ds = load_dataset("games")
    if args.adapter:
        model, tok = load_finetuned("smollm2", args.adapter)
    else:
        model, tok = load_model("smollm2")
    samples = select_samples(ds, "test", args.users, args.seed)
    prompts = [sample_prompt(ds, s, tok, 512, with_response=False).prompt for s in samples]
    paths = {
        "old (generate, batches of 8, whole prompts)": (
            model, GenerationSettings(batch_size=8, share_prefix=False, search="transformers")),
        "generate, shared prefix, token-sized batches": (model, GenerationSettings(search="transformers")),
        "pooled beam search (default)": (model, GenerationSettings()),
    }
    if not args.skip_bf16:
        paths["pooled beam search, bfloat16 weights"] = (with_dtype(model, "bfloat16"), GenerationSettings())
    texts, result = {}, {}
    reference = None
    for name, (m, settings) in paths.items():
        out, wall, load = _timed(lambda: generate_texts(m, tok, prompts, settings, progress=False))
        texts[name] = out
        reference = reference or name
        same = sum(a == b for a, b in zip(texts[reference], out))
        result[name] = {"wall_s": round(wall, 1), "users_per_s": len(prompts) / wall, "identical_to_old": same,
                        "load": load}
        print(f"{name}: {wall:.1f} s, {len(prompts) / wall:.3f} users/s, {same}/{len(prompts)} responses identical to old; load {load}", flush=True)
    old = result[reference]["users_per_s"]
    for name, r in result.items():
        r["speed_vs_old"] = r["users_per_s"] / old
        r["all_games_test_users_h"] = GAMES_TEST_USERS / r["users_per_s"] / 3600
        rows.append({"part": "BIGRec beam-4", "path": name, "units": len(prompts), **r})

    # Ground every path's responses and compare the metrics unit by unit against old.
    ids, vectors = item_embeddings(model, tok, ds, progress=True)
    evaluations = []
    for name, out in texts.items():
        query = text_embeddings(model, tok, [clean_prediction(t) for t in out])
        topk = rank_items(query, vectors, ids, k=20)
        unit_rows = ranking_unit_rows([s.sample_id for s in samples], topk, [s.targets for s in samples], (10, 20))
        evaluations.append(Evaluation(path=Path(name), name=name, seed=0, rows=unit_rows))
    comparisons = {}
    for metric in ("recall@20", "ndcg@20"):
        cmp = compare(evaluations, baseline=reference, metric=metric, seed=0)
        comparisons[metric] = cmp.to_dict()
        for row in cmp.rows:
            notes.append(f"{row.name} vs old, {metric}: Δ {row.diff:+.4f} (95% CI {row.ci_low:+.4f} … {row.ci_high:+.4f}), "
                         f"old {cmp.baseline_value:.4f}")
    return {"users": len(prompts), "paths": result, "comparisons": comparisons}


def attribute_part(args, rows: list[dict]) -> dict:
    from leantune.evaluation.bigrec import with_dtype
    from leantune.models.llm import load_model
    from leantune.tasks.attributes import AttributeTask

    model, tok = load_model("smollm2")
    variants = {"one product at a time": (model, 1, "transformers"), "batched (16)": (model, 16, "transformers"),
                "pooled greedy (16 in flight)": (model, 16, "leantune")}
    if not args.skip_bf16:
        variants["batched (16), bfloat16 weights"] = (with_dtype(model, "bfloat16"), 16, "transformers")
    result, reference = {}, None
    for name, (m, batch, search) in variants.items():
        task = AttributeTask(batch_size=batch, search=search, progress=False)
        (metrics, judged), wall, load = _timed(lambda: task.predict(m, tok, "test", limit=args.products, seed=args.seed))
        # The judged answer of each question: raw texts of a batch also differ past the closed JSON
        # object, because a batch generates up to the largest token budget of its members.
        answers = [(r["predicted"], r["valid"]) for r in judged]
        reference = reference or answers
        same = sum(a == b for a, b in zip(reference, answers))
        r = {"wall_s": round(wall, 1), "products_per_s": args.products / wall, "identical_questions": same,
             "questions": len(answers), "f1": metrics["f1"], "accuracy": metrics["accuracy"], "load": load}
        result[name] = r
        print(f"attributes, {name}: {wall:.1f} s, {args.products / wall:.3f} products/s, {same}/{len(answers)} judged answers identical; load {load}", flush=True)
    base = next(iter(result.values()))["products_per_s"]
    for name, r in result.items():
        r["speed_vs_one_at_a_time"] = r["products_per_s"] / base
        rows.append({"part": "attributes greedy", "path": name, "units": args.products, **r})
    return result


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows: list[dict] = []
    notes: list[str] = []
    report = {"command": "python3 benchmarks/bench_generation.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "machine": machine_summary(),
              "load_at_start": _load()}
    if args.users:
        report["bigrec"] = bigrec_part(args, rows, notes)
    if args.products:
        report["attributes"] = attribute_part(args, rows)
    report["load_at_end"] = _load()
    report["notes"] = notes
    write_json(RESULTS / f"{args.name}.json", report)
    lines = [f"# Evaluation throughput ({args.name})", "", f"`{report['command']}`", "",
             f"Machine: {report['machine']}; load average at start {report['load_at_start']}, at end {report['load_at_end']}.",
             f"BIGRec: {'adapter ' + str(args.adapter) if args.adapter else 'base model'}, {args.users} seeded Games test users; "
             f"attributes: {args.products} seeded OA-Mine test products.", "",
             "| part | path | units | wall s | units/s | × old | identical | load (before → after) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        per_s = r.get("users_per_s", r.get("products_per_s"))
        speed = r.get("speed_vs_old", r.get("speed_vs_one_at_a_time"))
        same = r.get("identical_to_old")
        same = f"{same}/{r['units']}" if same is not None else f"{r['identical_questions']}/{r['questions']} questions"
        lines.append(f"| {r['part']} | {r['path']} | {r['units']} | {r['wall_s']} | {per_s:.3f} | {speed:.2f} | {same} | {r['load']} |")
    if "bigrec" in report:
        lines += ["", "Extrapolated time for all 8,696 Games test users (generation only, this load):", ""]
        for name, r in report["bigrec"]["paths"].items():
            lines.append(f"- {name}: {r['all_games_test_users_h']:.1f} h")
        lines += ["", "Grounded metrics of each path against old on the same users (paired bootstrap, 10,000 resamples):", ""]
        lines += [f"- {n}" for n in notes]
    if "attributes" in report:
        lines += ["", "Attribute extraction, zero-shot SmolLM2 (identical = the same judged answer per question):", ""]
        lines += [f"- {name}: micro-F1 {r['f1']:.4f}, accuracy {r['accuracy']:.4f}" for name, r in report["attributes"].items()]
    with atomic_path(RESULTS / f"{args.name}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
