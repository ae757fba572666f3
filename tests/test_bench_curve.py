"""The learning-curve benchmark's settings (benchmarks/bench_curve.py): ``--recipe`` and the flags over it."""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_curve as bench  # noqa: E402
from leantune.tasks.attributes import default_recipe  # noqa: E402
from leantune.train.config import ALL_LINEAR  # noqa: E402


def _config(*argv):
    return bench.build_config(bench.parse_args(["--sizes", "0,100", *argv]))


def test_the_curve_recipe_keeps_the_settings_earlier_curve_folders_were_made_with():
    cfg, recipe = _config()
    f = cfg.finetune
    assert recipe.source == "curve" and cfg.task_options == {"data": "oa-mine", "unit": "product"} and cfg.epochs == 1.0
    assert (f.lr, f.batch_size, f.micro_batch_size, f.r, f.alpha, tuple(f.target_modules), f.eval_every) == (1e-3, 8, 4, 8, 16, ("q_proj", "v_proj"), None)
    spelled, _ = _config("--unit", "question", "--epochs", "1", "--batch-size", "32", "--r", "16", "--alpha", "32",
                         "--target-modules", "all", "--lr", "1e-3", "--save-every", "20", "--micro-batch-size", "8", "--model", "gemma3-270m")
    own, _ = _config("--recipe", "model", "--unit", "question", "--epochs", "1", "--batch-size", "32", "--r", "16", "--alpha", "32",
                     "--micro-batch-size", "8", "--model", "gemma3-270m")
    assert asdict(own) == asdict(spelled)  # the question curve's settings (question-e1, Gemma's default until 2026-12-05)
    product, _ = _config("--unit", "product", "--epochs", "3", "--batch-size", "8", "--r", "8", "--alpha", "16",
                         "--target-modules", "all", "--lr", "1e-3", "--save-every", "20", "--micro-batch-size", "8", "--model", "gemma3-270m")
    assert asdict(_config("--recipe", "model", "--micro-batch-size", "8", "--model", "gemma3-270m")[0]) == asdict(product)


def test_the_model_recipe_follows_the_model_and_each_flag_given_overrides_one_setting():
    cfg, recipe = _config("--recipe", "model", "--model", "smollm2")
    smol = default_recipe("smollm2")
    f = cfg.finetune
    assert cfg.task_options["unit"] == smol["unit"] and cfg.epochs == smol["epochs"]
    assert (f.lr, f.batch_size, f.r, f.alpha, set(f.target_modules)) == (smol["lr"], smol["batch_size"], smol["r"], smol["alpha"], set(ALL_LINEAR))
    mine, _ = _config("--recipe", "model", "--model", "smollm2", "--lr", "5e-4", "--epochs", "2")
    assert (mine.finetune.lr, mine.epochs, mine.finetune.r, mine.task_options["unit"]) == (5e-4, 2.0, smol["r"], smol["unit"])
    assert "smollm2's default fine-tuning recipe" in recipe.describe()
