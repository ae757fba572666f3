"""Seconds per optimizer step of SmolLM2's product recipe (16 products a step, LoRA r 16 / alpha 32 on every
linear layer, bf16 autocast) at several micro-batch sizes, on a GPU, through leantune's own training loop.

The weights are random (SmolLM2-135M's config, built in code): a step's cost does not depend on their
values, and nothing has to travel but the tokenizer, the config and 64 OA-Mine training products' prompts
(about 3.5 MB). Prints and writes one JSON object: for each micro-batch size, the median and quartiles of
the per-step wall time over the steps after the first few. Run from the repository root:

    python3 benchmarks/bench_step_time.py --pack .gpu/steps --make-pack     # here: writes the pack (git-ignored)
    # on the GPU machine, carrying .whl (the wheels curve_seeds.sh packs) and .gpu/steps:
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site python3 benchmarks/bench_step_time.py --pack .gpu/steps --micro 4,16,8 --out $OUT/step_time.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repo on sys.path, the hub offline)
import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from leantune.pipelines.attributes import attribute_finetune_config
from leantune.tasks.base import TextExample
from leantune.train import finetune


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def make_pack(pack: Path, n_products: int = 64) -> int:
    """SmolLM2's config and tokenizer and the prompts of the first ``n_products`` OA-Mine training products."""
    import shutil

    from leantune.models.llm import model_dir, prepare_model, prepare_tokenizer
    from leantune.tasks.attributes import AttributeTask

    prepare_model("smollm2")
    pack.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_dir("smollm2") / "config.json", pack / "config.json")
    tok = prepare_tokenizer("smollm2")
    tok.save_pretrained(pack / "tok")
    task = AttributeTask(data="oa-mine", unit="product")
    examples = task.train_examples(task.train_pool()[:n_products], tok)
    (pack / "examples.jsonl").write_text("".join(json.dumps({"prompt": e.prompt, "response": e.response}) + "\n" for e in examples))
    print(f"wrote {pack}: config.json, tok/, examples.jsonl ({len(examples)} products)")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pack", required=True, help="folder with config.json, tok/ and examples.jsonl")
    p.add_argument("--work", default="/tmp/step-time")
    p.add_argument("--micro", default="4,8,16", help="micro-batch sizes to time")
    p.add_argument("--steps", type=int, default=14)
    p.add_argument("--skip", type=int, default=4, help="first steps left out (warm-up)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default=None, help="JSON file to write")
    p.add_argument("--make-pack", action="store_true", help="write the pack from this machine's SmolLM2 cache and OA-Mine, then stop")
    args = p.parse_args(argv)
    pack, work = Path(args.pack), Path(args.work)
    if args.make_pack:
        return make_pack(pack)
    model_dir = work / "random-smollm2"
    if not (model_dir / "config.json").exists():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(pack))
        model.save_pretrained(model_dir)
        AutoTokenizer.from_pretrained(pack / "tok").save_pretrained(model_dir)
    examples = [TextExample(prompt=r["prompt"], response=r["response"])
                for r in map(json.loads, (pack / "examples.jsonl").read_text().splitlines())]
    report = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
              "torch": torch.__version__, "examples": len(examples), "runs": []}
    for micro in [int(m) for m in args.micro.split(",")]:
        # SmolLM2's own product recipe (attributes finetune's), cut to --steps steps, no validation
        cfg, _ = attribute_finetune_config("smollm2", micro_batch_size=micro, max_steps=args.steps, early_stopping_patience=None,
                                           device=args.device, bf16=args.device == "cuda")
        timer = StepTimer()
        start = time.perf_counter()
        result = finetune(str(model_dir), examples, None, work / f"mb{micro}", cfg, progress=False, callbacks=[timer])
        gaps = [b - a for a, b in zip(timer.times, timer.times[1:])][args.skip:]
        q = [round(x, 4) for x in statistics.quantiles(gaps, n=4, method="inclusive")] if len(gaps) >= 2 else [None] * 3  # JSON: no NaN
        run = {"micro_batch_size": micro, "status": result.status, "steps": result.steps, "wall_s": round(time.perf_counter() - start, 2),
               "step_s_median": round(statistics.median(gaps), 4) if gaps else None, "step_s_q1": q[0], "step_s_q3": q[2],
               "steps_timed": len(gaps)}
        report["runs"].append(run)
        print(json.dumps(run), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
