"""The recipe benchmark's bookkeeping (benchmarks/bench_attr_recipe.py): shards, the chosen recipe, test items."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_attr_recipe as bench  # noqa: E402
from leantune.io import write_json  # noqa: E402


def test_recipe_names_are_unique_and_shards_cover_every_cell_once():
    for grid in bench.GRIDS.values():
        names = [r.name for r in grid]
        assert len(names) == len(set(names))
        costs = [bench._cost(r) for r in grid]
        for shards in (1, 2, 3, 6):
            parts = [bench._mine(grid, costs, s, shards) for s in range(shards)]
            assert sorted(r.name for part in parts for r in part) == sorted(names)
            loads = [sum(bench._cost(r) for r in part) for part in parts]
            assert max(loads) - min(loads) <= max(costs)  # greedy longest-first stays within one cell
    assert bench.CLI_DEFAULT in bench.GRIDS["smollm2"]


def test_the_best_validation_f1_is_chosen_and_test_items_follow_it(tmp_path):
    args = bench.parse_args(["--phase", "test", "--work", str(tmp_path), "--seeds", "0", "1", "--name", "no-such-report"])
    with pytest.raises(SystemExit, match="no finished grid cells"):
        bench.best_recipe(args)
    grid = bench.GRIDS["smollm2"]
    for recipe, f1 in ((grid[0], 0.4), (grid[3], 0.7), (bench.CLI_DEFAULT, 0.6)):
        write_json(tmp_path / "grid" / f"{recipe.name}.json", {"recipe": recipe.__dict__, "name": recipe.name, "valid": {"f1": f1}})
    assert bench.best_recipe(args) == grid[3]
    items = bench.test_items(args)
    labels = [(label, seed) for label, _, seed in items]
    assert labels[0] == ("zero-shot", 0) and ("10-shot", 1) in labels
    assert {tuple(spec["recipe"].items()) for label, spec, _ in items if label == "best"} == {tuple(grid[3].__dict__.items())}
    assert [seed for label, _, seed in items if label == "default"] == [0, 1]
    # The task's recipe is one of this grid's: where the grid chose it, it is the "best" row, not a second one.
    assert bench.task_default_recipe() in grid
    write_json(tmp_path / "grid" / f"{bench.task_default_recipe().name}.json",
               {"recipe": bench.task_default_recipe().__dict__, "name": bench.task_default_recipe().name, "valid": {"f1": 0.9}})
    assert {label for label, _, _ in bench.test_items(args)} == {"zero-shot", "3-shot", "10-shot", "best", "default"}


def test_a_new_machine_carries_the_committed_grid_rows_and_comparisons(tmp_path, monkeypatch):
    """Only small records travel: with no grid cells in --work the committed grid chooses the
    recipe, rows and comparisons that ran elsewhere are carried (marked), and a new row is added."""
    from leantune.evaluation.units import attribute_unit_rows, write_per_unit
    from leantune.io import read_json

    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results")
    grid = bench.GRIDS["smollm2"]
    first = bench.parse_args(["--phase", "report", "--work", str(tmp_path / "w1"), "--seeds", "0", "--name", "r"])
    for recipe, f1 in ((grid[3], 0.7), (bench.CLI_DEFAULT, 0.6)):
        write_json(first.work / "grid" / f"{recipe.name}.json",
                   {"recipe": recipe.__dict__, "name": recipe.name, "status": "finished", "steps": 5, "tokens": 9, "device": "cpu",
                    "valid": {"f1": f1, "precision": f1, "recall": f1, "accuracy": f1, "invalid_rate": 0.0, "n_products": 3}})

    def rows(folder, right, n=40):
        judged = [{"product_id": f"p{i // 2}", "attribute": f"a{i % 2}", "outcome": "VC" if i < right else "VW",
                   "correct": i < right, "gold": "x"} for i in range(n)]
        write_per_unit(folder, attribute_unit_rows(judged))
        f1 = right / n
        write_json(folder / "metrics.json", {"metrics": {"f1": f1, "precision": f1, "recall": f1, "accuracy": f1}})

    rows(first.work / "test" / "zero-shot" / "s0", 4)
    rows(first.work / "test" / "best" / "s0", 30)
    text1 = bench.report(first)
    assert "### f1 against zero-shot" in text1 and "(carried)" not in text1
    assert f"| fine-tuned, chosen recipe ({grid[3].name}; the best of 2 grid cells on validation) | 1 | 0.750 |" in text1

    second = bench.parse_args(["--phase", "report", "--work", str(tmp_path / "w2"), "--seeds", "0", "--name", "r"])
    assert bench.best_recipe(second) == grid[3]  # from the committed summary: no grid cell in w2
    rows(second.work / "test" / "10-shot" / "s0", 12)
    text2 = bench.report(second)
    assert f"| {grid[3].name} **(chosen)** (carried) |" in text2
    assert "| zero-shot (carried) | 1 | 0.100 |" in text2 and "| 10-shot | 1 | 0.300 |" in text2
    assert "### f1 against zero-shot (carried: written when its rows were here)" in text2
    summary = read_json(tmp_path / "results" / "r" / "summary.json")
    assert set(summary["test"]) == {"zero-shot", "10-shot", "best"} and "vs-zero-shot-f1" in summary


def test_cells_run_here_join_the_committed_grid_and_the_choice_is_over_all_of_them(tmp_path, monkeypatch, capsys):
    """A grid filled across machines: a cell trained in this work folder is added to the committed
    report's cells (carried, marked), not put in their place, and the recipe is chosen over all of them."""
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results")
    grid = bench.GRIDS["smollm2"]

    def cell(recipe, f1, **extra):
        return {"recipe": recipe.__dict__, "name": recipe.name, "status": "finished", "steps": 5, "tokens": 9, **extra,
                "valid": {"f1": f1, "precision": f1, "recall": f1, "accuracy": f1, "invalid_rate": 0.0, "n_products": 3}}

    elsewhere = bench.parse_args(["--phase", "report", "--work", str(tmp_path / "gpu"), "--seeds", "0", "--name", "r"])
    for recipe, f1 in ((grid[3], 0.7), (grid[5], 0.74)):
        write_json(elsewhere.work / "grid" / f"{recipe.name}.json", cell(recipe, f1, device="cuda"))
    bench.report(elsewhere)
    here = bench.parse_args(["--phase", "report", "--work", str(tmp_path / "cpu"), "--seeds", "0", "--name", "r"])
    write_json(here.work / "grid" / f"{grid[10].name}.json", cell(grid[10], 0.72, device="cpu", machine="AMD EPYC, 2 CPUs", bf16=False))
    cells = {c["name"]: c for c in bench.grid_cells(here)}
    assert set(cells) == {grid[3].name, grid[5].name, grid[10].name}
    assert cells[grid[3].name]["carried"] and cells[grid[5].name]["carried"] and "carried" not in cells[grid[10].name]
    assert bench.best_recipe(here) == grid[5]  # the committed cell still wins
    text = bench.report(here)
    assert f"| {grid[5].name} **(chosen)** (carried) |" in text
    assert f"| {grid[10].name} | question |" in text and "| AMD EPYC, 2 CPUs | no | 0.720 |" in text
    assert f"Not run yet ({len(grid) - 3} of {len(grid)})" in text
    # The summary now holds all three, so the next machine carries the CPU cell too.
    from leantune.io import read_json

    summary = read_json(tmp_path / "results" / "r" / "summary.json")
    assert {c["name"] for c in summary["grid"]} == set(cells) and summary["best_recipe"] == grid[5].name
    assert [c["machine"] for c in summary["grid"] if c["name"] == grid[10].name] == ["AMD EPYC, 2 CPUs"]
    # --phase missing lists what no machine has trained, leaving out a run under way here.
    (here.work / "runs" / grid[11].name / "s0").mkdir(parents=True)
    todo, started = bench.missing_recipes(here)
    assert started == [grid[11]] and len(todo) == len(grid) - 4 and grid[10] not in todo and grid[0] in todo
    bench.main(["--phase", "missing", "--work", str(here.work), "--name", "r"])
    out = capsys.readouterr()
    assert out.out.split() == [r.name for r in todo]
    assert f"{len(todo)} of {len(grid)} recipes not finished nor under way" in out.err
    assert f"under way in {here.work}: {grid[11].name} (nothing written yet)" in out.err
    # A started run shows the (complete) checkpoint it would resume from and how long ago it last wrote
    # (an abandoned run looks old); a checkpoint still being written (no trainer_state.json yet) is not counted.
    ckpt = here.work / "runs" / grid[11].name / "s0" / "checkpoints"
    for step in (20, 40, 100):
        (ckpt / f"checkpoint-{step}").mkdir(parents=True)
        (ckpt / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (ckpt / "checkpoint-120").mkdir()
    (ckpt / "checkpoint-120" / "adapter_model.safetensors").write_text("")
    old = time.time() - 5 * 3600
    os.utime(ckpt / "checkpoint-100" / "trainer_state.json", (old, old))
    assert bench.run_progress(here.work / "runs" / grid[11].name) == "checkpoint 100, last written 0.0 h ago"
    for f in ckpt.rglob("*.*"):
        os.utime(f, (old, old))
    assert bench.run_progress(here.work / "runs" / grid[11].name) == "checkpoint 100, last written 5.0 h ago"
    # A better cell here is chosen over the carried ones.
    write_json(here.work / "grid" / f"{grid[10].name}.json", cell(grid[10], 0.8, device="cpu"))
    assert bench.best_recipe(here) == grid[10]
    # --phase grid without --recipes trains only what no machine has finished: not the carried cells again.
    trained = []

    class Result:
        status, steps, tokens_seen, adapter_dir, wall_s, machine = "finished", 1, 1, None, 2.0, "box"
        sittings: list = []

    monkeypatch.setattr(bench, "_train", lambda args, recipe, seed, device, out, fraction=None: trained.append(recipe) or Result())
    bench.grid_phase(bench.parse_args(["--phase", "grid", "--work", str(here.work), "--name", "r"]), "cpu", 0.0)
    assert trained == [r for r in grid if r not in (grid[3], grid[5], grid[10])]


def test_a_model_without_a_grid_gets_its_zero_and_few_shot_rows(tmp_path, monkeypatch):
    """Zero-/few-shot and the default recipe need no grid: a new model (Gemma) is evaluated and
    reported before its grid has run, under its own report name, and only 'best' waits."""
    from leantune.evaluation.units import attribute_unit_rows, write_per_unit

    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results")
    args = bench.parse_args(["--phase", "test", "--model", "gemma3-270m", "--work", str(tmp_path / "w"), "--seeds", "0",
                             "--only", "zero-shot", "3-shot"])
    assert args.name == "attr-recipe-gemma3-270m"
    labels = {label for label, _, _ in bench.test_items(args)}
    assert labels == {"zero-shot", "3-shot", "10-shot", "default", "task-default"}  # no 'best' without a grid
    # ... but a fine-tuned row all the same: the task's recipe (attributes finetune's default for models without their own).
    from leantune.tasks.attributes import RECIPE

    task_default = bench.task_default_recipe()
    assert (task_default.epochs, task_default.lr, task_default.r, task_default.batch_size) == \
        (RECIPE["epochs"], RECIPE["lr"], RECIPE["r"], RECIPE["batch_size"])
    assert bench.MODULES[task_default.modules] == tuple(RECIPE["target_modules"])
    with pytest.raises(SystemExit, match="--model gemma3-270m"):
        bench.test_items(bench.parse_args(["--phase", "test", "--model", "gemma3-270m", "--work", str(tmp_path / "w")]))

    judged = [{"product_id": f"p{i // 2}", "attribute": f"a{i % 2}", "outcome": "VC" if i < 3 else "VW", "correct": i < 3,
               "gold": "x"} for i in range(20)]
    folder = args.work / "test" / "zero-shot" / "s0"
    write_per_unit(folder, attribute_unit_rows(judged))
    write_json(folder / "metrics.json", {"metrics": {"f1": 0.15, "precision": 0.15, "recall": 0.15, "accuracy": 0.15}})
    text = bench.report(bench.parse_args(["--phase", "report", "--model", "gemma3-270m", "--work", str(args.work), "--seeds", "0"]))
    assert text.startswith("# Attribute-extraction recipes: gemma3-270m on oa-mine")
    assert "--phase report --model gemma3-270m --work <work> --seeds 0`" in text
    assert "No grid cell has finished for gemma3-270m" in text and "| zero-shot | 1 | 0.150 |" in text
    assert "| fine-tuned, chosen recipe (no grid yet) | 0 | not run yet |" in text
    # Gemma trains with a recipe of its own by default (leantune.tasks.attributes.MODEL_RECIPES): the row says so.
    assert bench.model_default_recipe("gemma3-270m") != task_default == bench.model_default_recipe("smollm2")
    assert (f"| fine-tuned, the task's recipe ({task_default.name}; chosen on SmolLM2-135M's grid; not this model's default) "
            "| 0 | not run yet |") in text
    assert (tmp_path / "results" / "attr-recipe-gemma3-270m" / "README.md").is_file()
    # Once Gemma's own recipe is the grid's choice, its row says it is what `attributes finetune` trains.
    own = bench.model_default_recipe("gemma3-270m")
    assert own in bench.GRIDS["smollm2"]
    write_json(args.work / "grid" / f"{own.name}.json",
               {"recipe": own.__dict__, "name": own.name, "status": "finished", "steps": 5, "tokens": 9, "device": "cpu",
                "valid": {"f1": 0.7, "precision": 0.7, "recall": 0.7, "accuracy": 0.7, "invalid_rate": 0.0, "n_products": 3}})
    text = bench.report(bench.parse_args(["--phase", "report", "--model", "gemma3-270m", "--work", str(args.work), "--seeds", "0"]))
    assert (f"| fine-tuned, chosen recipe ({own.name}; the best of 1 grid cell on validation; "
            "`attributes finetune`'s default for this model) | 0 | not run yet |") in text


def test_a_work_folder_under_results_tracks_only_its_small_records(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results")
    inside, outside = tmp_path / "results" / "attr-recipe-x" / "cells", tmp_path / "cache" / "cells"
    bench.track_small_records(inside)
    bench.track_small_records(outside)
    assert (inside / ".gitignore").read_text() == bench.CELLS_GITIGNORE and not outside.exists()
    assert (ROOT / "benchmarks" / "results" / "attr-recipe-smollm2" / "cells" / ".gitignore").read_text() == bench.CELLS_GITIGNORE


def test_save_every_sets_the_checkpoint_interval_and_defaults_to_one_per_epoch():
    recipe = bench.task_default_recipe()
    assert bench._finetune_config(recipe, 0, "cpu", 8).eval_every is None  # once per epoch
    cfg = bench._finetune_config(recipe, 0, "cpu", 8, save_every=9)
    assert cfg.eval_every == 9 and cfg.micro_batch_size == 8 and cfg.train_on_inputs is False
    assert bench.parse_args(["--phase", "test", "--work", "w", "--save-every", "9"]).save_every == 9


def test_grid_recipes_trains_only_the_named_cells(tmp_path, monkeypatch, capsys):
    grid = bench.GRIDS["smollm2"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--phase", "grid", "--work", str(tmp_path), "--recipes", grid[0].name, "no-such-recipe"])
    assert "--recipes: no-such-recipe not in --grid smollm2" in capsys.readouterr().err
    trained = []

    class Result:
        status, steps, tokens_seen, adapter_dir, wall_s, machine = "finished", 1, 1, None, 2.0, "AMD EPYC, 2 CPUs"
        sittings = [{"machine": "AMD EPYC, 2 CPUs", "from_step": 0, "to_step": 1, "wall_s": 2.0}]

    monkeypatch.setattr(bench, "_train", lambda args, recipe, seed, device, out, fraction=None: trained.append(recipe.name) or Result())
    args = bench.parse_args(["--phase", "grid", "--work", str(tmp_path), "--recipes", grid[10].name, grid[1].name])
    bench.grid_phase(args, "cpu", 0.0)
    assert sorted(trained) == sorted([grid[10].name, grid[1].name])
    assert sorted(p.stem for p in (tmp_path / "grid").glob("*.json")) == sorted(trained)
    from leantune.io import read_json

    cell = read_json(tmp_path / "grid" / f"{grid[1].name}.json")
    assert cell["bf16"] is False and cell["machine"] == "AMD EPYC, 2 CPUs"  # CPU without --bf16
    args = bench.parse_args(["--phase", "grid", "--work", str(tmp_path / "b"), "--recipes", grid[1].name, "--bf16"])
    bench.grid_phase(args, "cpu", 0.0)
    assert read_json(tmp_path / "b" / "grid" / f"{grid[1].name}.json")["bf16"] is True
    assert bench._cell_bf16({"device": "cuda"}) == "yes" and bench._cell_bf16({"device": "cpu"}) == "?"
    # A cell from before machines were recorded names only its device, and says so.
    assert bench._cell_device({"device": "cuda"}) == "cuda (machine not recorded)"
    assert bench._cell_device({"device": "cpu", "machine": "AMD EPYC, 2 CPUs"}) == "AMD EPYC, 2 CPUs"
    assert read_json(tmp_path / "grid" / f"{grid[1].name}.json")["sittings"][0]["to_step"] == 1
    # A run finished over several sittings names each machine once and how many sittings, unrecorded ones counted.
    a, b = "AMD EPYC, 2 CPUs, 2 threads", "AMD EPYC, 2 CPUs, 1 thread"
    resumed = {"device": "cpu", "machine": b, "sittings": [{"machine": ""}, {"machine": a}, {"machine": b}, {"machine": b}]}
    assert bench._cell_device(resumed) == f"{a} + {b} (4 sittings, 1 not recorded)"
    assert bench._cell_device({"device": "cpu", "machine": a, "sittings": [{"machine": a}]}) == a


def test_grid_and_test_records_count_the_runs_training_over_all_its_sittings(tmp_path, monkeypatch):
    """A run resumed from a checkpoint, or finished by the grid and reused by the test phase, records the
    run's own training seconds (``FinetuneResult.wall_s``), not the seconds of the last call."""
    from leantune.io import read_json
    from leantune.train import FinetuneResult

    recipe = bench.GRIDS["tiny"][0]
    result = FinetuneResult(adapter_dir=tmp_path / "adapter", status="finished", steps=4, total_steps=4, tokens_seen=99,
                            history=[], best_valid_loss=None, wall_s=1234.5, reason="", n_train=8, n_valid=0)
    monkeypatch.setattr(bench, "_train", lambda *a, **k: result)
    monkeypatch.setattr(bench, "_evaluate", lambda *a, **k: ({"f1": 0.5, "accuracy": 0.6}, [], 7.0))
    args = bench.parse_args(["--phase", "grid", "--grid", "tiny", "--recipes", recipe.name, "--work", str(tmp_path), "--name", "r"])
    bench.grid_phase(args, "cpu", 0.0)
    assert read_json(tmp_path / "grid" / f"{recipe.name}.json")["train_s"] == 1234.5

    import leantune.evaluation.units as units
    monkeypatch.setattr(units, "attribute_unit_rows", lambda rows: [])
    monkeypatch.setattr(units, "write_per_unit", lambda folder, rows: None)
    args = bench.parse_args(["--phase", "test", "--grid", "tiny", "--only", "best", "--seeds", "0", "--work", str(tmp_path), "--name", "r"])
    bench.test_phase(args, "cpu", 0.0)
    settings = read_json(tmp_path / "test" / "best" / "s0" / "metrics.json")["settings"]
    assert settings["train_s"] == 1234.5 and settings["eval_s"] == 7.0


def test_grid_cells_keep_their_validation_rows_and_the_report_pairs_them(tmp_path, monkeypatch):
    """Each new grid cell writes its per-question validation rows; the report then compares the cells
    that have them against the best of them, paired over the same validation products, with an interval."""
    from leantune.io import read_json
    from leantune.train import FinetuneResult

    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results")
    grid = bench.GRIDS["smollm2"]
    right = {grid[1].name: 10, grid[3].name: 30, grid[10].name: 24, grid[4].name: 29}

    def judged(n_right, n=40):
        return [{"product_id": f"p{i // 2}", "attribute": f"a{i % 2}", "outcome": "VC" if i < n_right else "VW",
                 "correct": i < n_right, "gold": "x"} for i in range(n)]

    def train(args, recipe, seed, device, out, fraction=None):
        return FinetuneResult(adapter_dir=out / "adapter", status="finished", steps=3, total_steps=3, tokens_seen=9, history=[],
                              best_valid_loss=None, wall_s=1.0, reason="", n_train=8, n_valid=0, machine="box")

    def evaluate(args, device, split, limit, seed, adapter=None, unit="product", **kw):
        n_right = right[adapter.parent.parent.name]
        f1 = n_right / 40
        return ({"f1": f1, "precision": f1, "recall": f1, "accuracy": f1, "invalid_rate": 0.0, "n_products": 20},
                judged(n_right), 2.0)

    monkeypatch.setattr(bench, "_train", train)
    monkeypatch.setattr(bench, "_evaluate", evaluate)
    args = bench.parse_args(["--phase", "grid", "--work", str(tmp_path / "w"), "--recipes", *right, "--name", "r"])
    bench.grid_phase(args, "cpu", 0.0)
    for name, n_right in right.items():
        folder = tmp_path / "w" / "grid" / "valid" / name
        assert len((folder / "per_unit.jsonl").read_text().splitlines()) == 40
        assert read_json(folder / "metrics.json")["metrics"]["f1"] == n_right / 40
    text = bench.report(bench.parse_args(["--phase", "report", "--work", str(tmp_path / "w"), "--seeds", "0", "--name", "r"]))
    assert "### Validation F1 of the 4 cells with per-question rows, against the best of them" in text
    section = text.split("### Validation F1")[1]
    assert f"| {grid[3].name} (baseline) | 1 | 0.7500 |" in section
    assert f"| {grid[10].name} | 1 | 0.6000 | -0.1500 |" in section and f"| {grid[1].name} | 1 | 0.2500 | -0.5000 |" in section
    assert (tmp_path / "results" / "r" / "grid-valid-f1" / "comparison.json").is_file()
    # The CLI default follows the grid's choice only where that beats it with a paired interval clear of zero.
    report_args = bench.parse_args(["--phase", "report", "--work", str(tmp_path / "w"), "--seeds", "0", "--name", "r"])

    def default_line(recipe):
        monkeypatch.setattr(bench, "model_default_recipe", lambda model: recipe)
        text = bench.report(report_args)
        return next(line for line in text.splitlines() if line.startswith("`leantune attributes finetune --model smollm2` trains"))

    assert default_line(grid[3]).endswith(f"trains {grid[3].name} by default: the grid's choice.")
    far = default_line(grid[1])
    assert f"({grid[1].name} − {grid[3].name}: -0.500 [" in far and f"the default should move to {grid[3].name} (edit `MODEL_RECIPES`" in far
    near = default_line(grid[4])
    assert f"({grid[4].name} − {grid[3].name}: -0.025 [" in near and "is not told apart from it" in near and "so the default stays" in near
    assert "has no finished cell in this grid" in default_line(grid[5])
    (tmp_path / "w" / "grid" / "valid" / grid[4].name / "per_unit.jsonl").unlink()
    assert "is not paired with it" in default_line(grid[4])
    # One cell with rows is no comparison.
    only = bench.parse_args(["--phase", "report", "--work", str(tmp_path / "w1"), "--seeds", "0", "--name", "r1"])
    bench.write_valid_rows(only.work, grid[3].name, judged(30), {"f1": 0.75})
    write_json(only.work / "grid" / f"{grid[3].name}.json",
               {"recipe": grid[3].__dict__, "name": grid[3].name, "status": "finished", "steps": 5, "tokens": 9, "device": "cpu",
                "valid": {"f1": 0.75, "precision": 0.75, "recall": 0.75, "accuracy": 0.75, "invalid_rate": 0.0, "n_products": 20}})
    assert "### Validation F1" not in bench.report(only)


def test_a_label_folder_left_by_an_earlier_choice_is_refused_and_a_moved_one_gets_its_own_row(tmp_path, monkeypatch):
    """'best' names whatever the grid chooses now: a test/best folder finished under an earlier choice
    stops the test phase (before any training) and the report with one line naming the folder and both
    recipes; moved aside, it is reported as a row of its own and compared with the new choice."""
    from leantune.evaluation.units import attribute_unit_rows, write_per_unit

    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results")
    grid = bench.GRIDS["smollm2"]
    work = tmp_path / "w"

    def cell(recipe, f1):
        write_json(work / "grid" / f"{recipe.name}.json",
                   {"recipe": recipe.__dict__, "name": recipe.name, "status": "finished", "steps": 5, "tokens": 9, "device": "cpu",
                    "valid": {"f1": f1, "precision": f1, "recall": f1, "accuracy": f1, "invalid_rate": 0.0, "n_products": 3}})

    def rows(folder, right, recipe=None, n=40):
        judged = [{"product_id": f"p{i // 2}", "attribute": f"a{i % 2}", "outcome": "VC" if i < right else "VW",
                   "correct": i < right, "gold": "x"} for i in range(n)]
        write_per_unit(folder, attribute_unit_rows(judged))
        f1 = right / n
        settings = {"recipe": recipe.name} if recipe else {}
        write_json(folder / "metrics.json", {"settings": settings, "metrics": {"f1": f1, "precision": f1, "recall": f1, "accuracy": f1}})

    cell(grid[3], 0.7)
    rows(work / "test" / "zero-shot" / "s0", 4)
    rows(work / "test" / "best" / "s0", 30, grid[3])
    report = ["--phase", "report", "--work", str(work), "--seeds", "0", "--name", "r"]
    assert "| fine-tuned, chosen recipe" in bench.report(bench.parse_args(report))
    cell(grid[5], 0.8)  # a better cell: the grid's choice moves
    trained = []
    monkeypatch.setattr(bench, "_train", lambda *a, **k: trained.append(a) or None)
    test = bench.parse_args(["--phase", "test", "--only", "best", "--seeds", "0", "--work", str(work), "--name", "r"])
    message = f"test/best/s0/metrics.json: holds recipe {grid[3].name}, but 'best' is now {grid[5].name}; move the folder aside"
    with pytest.raises(SystemExit, match=message.replace("/", "[/\\\\]")):
        bench.test_phase(test, "cpu", 0.0)
    assert trained == []
    with pytest.raises(SystemExit, match="holds recipe"):
        bench.report(bench.parse_args(report))
    (work / "test" / "best").rename(work / "test" / "earlier")
    rows(work / "test" / "best" / "s0", 34, grid[5])
    text = bench.report(bench.parse_args(report))
    assert f"| fine-tuned, chosen recipe ({grid[5].name}; the best of 2 grid cells on validation" in text and "| 1 | 0.850 |" in text
    assert f"| fine-tuned, {grid[3].name} (`test/earlier`; not the grid's choice now) | 1 | 0.750 |" in text
    assert "### f1 against best (paired over test products, seeds averaged)" in text
    assert (tmp_path / "results" / "r" / "vs-best-f1" / "comparison.json").is_file()


def test_screen_scores_each_recipe_early_and_the_grid_finishes_the_best_of_them(tmp_path, monkeypatch, capsys):
    """--phase screen trains each recipe to --fraction of its schedule and validates it there; missing --top
    names the best-screened recipes for the grid, which continues their runs; the report sets early against
    final F1 with their rank agreement."""
    import math

    from leantune.io import read_json
    from leantune.train import FinetuneResult

    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results")
    grid = bench.GRIDS["smollm2"]
    early = {grid[1].name: 12, grid[3].name: 20, grid[10].name: 16}  # right answers of 40 at the screen
    final = {grid[1].name: 10, grid[3].name: 30, grid[10].name: 24}
    calls = []

    def train(args, recipe, seed, device, out, fraction=None):
        total = bench._cost(recipe)
        calls.append((recipe.name, fraction))
        steps = total if fraction is None else math.ceil(fraction * total)
        return FinetuneResult(adapter_dir=out / "adapter", status="finished" if fraction is None else "paused", steps=steps,
                              total_steps=total, tokens_seen=9, history=[], best_valid_loss=None, wall_s=float(steps),
                              reason="", n_train=8, n_valid=0, machine="box")

    def evaluate(args, device, split, limit, seed, adapter=None, unit="product", **kw):
        name = adapter.parent.parent.name
        n_right = (final if args.phase == "grid" else early)[name]
        f1 = n_right / 40
        rows = [{"product_id": f"p{i // 2}", "attribute": f"a{i % 2}", "outcome": "VC" if i < n_right else "VW",
                 "correct": i < n_right, "gold": "x"} for i in range(40)]
        return {"f1": f1, "precision": f1, "recall": f1, "accuracy": f1, "invalid_rate": 0.0, "n_products": 20}, rows, 2.0

    monkeypatch.setattr(bench, "_train", train)
    monkeypatch.setattr(bench, "_evaluate", evaluate)
    work = tmp_path / "w"
    bench.screen_phase(bench.parse_args(["--phase", "screen", "--work", str(work), "--recipes", *early, "--fraction", "0.25",
                                         "--name", "r"]), "cpu", 0.0)
    assert sorted(calls) == sorted((name, 0.25) for name in early)
    rec = read_json(work / "grid" / "screen" / f"{grid[3].name}.json")
    assert rec["fraction"] == 0.25 and rec["valid"]["f1"] == 0.5 and rec["steps"] == math.ceil(0.25 * rec["total_steps"])
    assert len((work / "grid" / "screen" / "valid" / grid[3].name / "per_unit.jsonl").read_text().splitlines()) == 40
    assert not (work / "grid" / f"{grid[3].name}.json").exists()  # a screen is not a finished cell
    assert "screened at step" in capsys.readouterr().out

    # The best of each unit: product grid[3] (0.5) and question grid[10] (0.4), not product grid[1] (0.3);
    # the top 2 of each unit adds grid[1]. Best early F1 first.
    assert grid[3].unit == grid[1].unit == "product" and grid[10].unit == "question"
    bench.main(["--phase", "missing", "--top", "2", "--work", str(work), "--name", "r"])
    out, err = capsys.readouterr()
    assert out.split() == [grid[3].name, grid[10].name, grid[1].name]
    assert "the 2 best-screened of each unit (product: 2, question: 1) of 3 screened recipes" in err
    bench.main(["--phase", "missing", "--top", "1", "--work", str(work), "--name", "r"])
    out, err = capsys.readouterr()
    assert out.split() == [grid[3].name, grid[10].name]
    # The fake runs left no checkpoint (as on a machine other than the screen's): the steps count from 0.
    full = bench._cost(grid[3]) + bench._cost(grid[10])
    assert (f"the 1 best-screened of each unit (product: 1, question: 1) of 3 screened recipes without a finished cell "
            f"({full:,} optimizer steps to finish them; no checkpoint in {work} for {grid[3].name}, {grid[10].name}: "
            "from step 0)") in err
    ckpt = work / "runs" / grid[3].name / "s0" / "checkpoints" / f"checkpoint-{rec['steps']}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    bench.main(["--phase", "missing", "--top", "1", "--work", str(work), "--name", "r"])
    assert (f"({full - rec['steps']:,} optimizer steps to finish them; no checkpoint in {work} for {grid[10].name}: "
            "from step 0)") in capsys.readouterr().err

    calls.clear()
    bench.grid_phase(bench.parse_args(["--phase", "grid", "--work", str(work), "--recipes", *final, "--name", "r"]), "cpu", 0.0)
    assert sorted(calls) == sorted((name, None) for name in final)  # the grid continues them to the end
    out = capsys.readouterr().out
    assert f"{grid[10].name}: screened, but its checkpoint is not in {work}; training from step 0" in out
    assert f"{grid[3].name}: screened, but" not in out  # its checkpoint is here: continued
    text = bench.report(bench.parse_args(["--phase", "report", "--work", str(work), "--seeds", "0", "--name", "r"]))
    assert "## Screen: each recipe at 0.25 of its own schedule" in text
    assert "Every recipe screened on box." in text and "| valid F1 final |\n" in text  # one machine: no column
    assert f"| 1 | {grid[3].name} | {rec['steps']} ({rec['total_steps']}) | {grid[3].epochs * rec['steps'] / rec['total_steps']:.1f} | 0.500 | 0.750 |" in text
    # The screen point in epochs differs between these recipes: the report says it is not equal compute.
    assert "epochs here (`epochs`), so the screen does not compare recipes at equal compute" in text
    assert "Early against final over the 3 recipes with both (`screen-early-vs-final.png`" in text
    assert "Spearman +1.00, Kendall +1.00 (no bootstrap interval below 6 recipes" in text
    assert "agrees at least as well with chance 0.17 (one-sided Kendall test); top-2 overlap 2 of 2" in text  # 1 of 3! orders
    assert "the screen's best of them is also the best at the end" in text
    assert "Both units are screened" in text  # grid[10] is a question recipe
    # Each unit's gain from its screen point to its final cell, from these records (product: 12 -> 10 and 20 -> 30
    # right of 40; question: 16 -> 24).
    assert "F1 gained: the 1 question recipe +0.20, the 2 product recipes -0.05 to +0.25)" in text
    assert (tmp_path / "results" / "r" / "screen-early-vs-final.png").stat().st_size > 0
    screen_table = text[text.index("### Early validation F1 of the 2 screened product recipes, against the best of them"):]
    # Each screened product recipe against the best product recipe, paired over the validation products (12 of
    # 40 right vs 20); the one question recipe has none of its unit to be compared with: no question table.
    assert f"| {grid[3].name} (baseline) | 1 | 0.5000 |" in screen_table
    assert f"| {grid[1].name} | 1 | 0.3000 | -0.2000 |" in screen_table and grid[10].name not in screen_table
    assert "screened question recipes" not in text
    assert (tmp_path / "results" / "r" / "screen-product-valid-f1").is_dir()
    assert not (tmp_path / "results" / "r" / "screen-question-valid-f1").exists()
    with pytest.raises(SystemExit, match="--top 1: no screened recipe without a finished cell"):
        bench.main(["--phase", "missing", "--top", "1", "--work", str(work), "--name", "r"])

    # --phase missing lists a run the screen left paused with the recipes to train, not as one under way,
    # until a process continuing it writes again.
    run = tmp_path / "w3" / "runs" / grid[4].name / "s0"
    run.mkdir(parents=True)
    write_json(run / "result.json", {"status": "paused"})
    args3 = bench.parse_args(["--phase", "missing", "--work", str(tmp_path / "w3"), "--name", "r3"])
    todo, started = bench.missing_recipes(args3)
    assert grid[4] in todo and started == []
    bench.main(["--phase", "missing", "--work", str(tmp_path / "w3"), "--name", "r3"])
    assert "1 of them left paused by --phase screen here, which --phase grid continues" in capsys.readouterr().err
    later = time.time() + 120
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "trainer_state.json").write_text("{}")
    os.utime(run / "checkpoints" / "trainer_state.json", (later, later))
    assert bench.missing_recipes(args3)[1] == [grid[4]]  # written after the pause: under way again

    # A run already trained past the screening point is not screened (its score would not be an early one).
    calls.clear()
    monkeypatch.setattr(bench, "_train", lambda args, recipe, seed, device, out, fraction=None: train(args, recipe, seed, device, out))
    bench.screen_phase(bench.parse_args(["--phase", "screen", "--work", str(tmp_path / "w2"), "--recipes", grid[1].name,
                                         "--name", "r2"]), "cpu", 0.0)
    assert "finished at step" in capsys.readouterr().out and not (tmp_path / "w2" / "grid" / "screen").exists()
    with pytest.raises(SystemExit):
        bench.parse_args(["--phase", "screen", "--work", str(work), "--fraction", "1.5"])
    assert "--fraction 1.5: give a fraction" in capsys.readouterr().err


def test_screen_check_gives_rank_intervals_from_six_recipes_and_names_a_wrong_pick(tmp_path):
    """With 6 or more recipes screened and finished the rank agreement carries bootstrap intervals; a screen
    whose best is not the final best says so."""
    grid = bench.GRIDS["smollm2"][:6]
    early = [0.60, 0.50, 0.40, 0.30, 0.20, 0.10]
    final = [0.70, 0.75, 0.50, 0.45, 0.30, 0.20]  # the screen's second is the final best
    for i, (recipe, e) in enumerate(zip(grid, early)):
        write_json(tmp_path / "grid" / "screen" / f"{recipe.name}.json",
                   {"name": recipe.name, "recipe": recipe.__dict__, "valid": {"f1": e}, "fraction": 0.2, "steps": 2, "total_steps": 10,
                    "machine": "box" if i != 2 else "other box"})
    cells = [{"name": recipe.name, "valid": {"f1": f}} for recipe, f in zip(grid, final)]
    args = bench.parse_args(["--phase", "report", "--work", str(tmp_path), "--name", "r"])
    lines = "\n".join(bench.screen_lines(args, cells, tmp_path / "out"))
    assert "Early against final over the 6 recipes with both" in lines
    # Two machines: each named once, the rows keyed to them.
    assert "Screened on m1: box; m2: other box." in lines and "| valid F1 final | machine |" in lines
    assert (f"| 3 | {grid[2].name} | 2 (10) | {grid[2].epochs * 0.2:.1f} | 0.400 | 0.500 | m2 |" in lines
            and f"| 1 | {grid[0].name} | 2 (10) | {grid[0].epochs * 0.2:.1f} | 0.600 | 0.700 | m1 |" in lines)
    assert "Spearman +0.94 [" in lines and "(95% bootstrap intervals over recipes)" in lines
    assert "top-2 overlap 2 of 2; the screen's best of them is not the best at the end" in lines
    assert (tmp_path / "out" / "screen-early-vs-final.png").is_file()
    tied = [{**c, "valid": {"f1": 0.5}} for c in cells]  # every final the same: nothing to rank, said so
    assert "every final F1 is the same, so there is no order to compare" in "\n".join(bench.screen_lines(args, tied, tmp_path / "o2"))


def test_the_screen_table_pairs_each_recipe_with_the_best_of_its_own_unit(tmp_path):
    """Early F1 ranks within a unit, so the screen's paired tables do too: product recipes against the best
    product recipe, question recipes against the best question recipe (even where the best question recipe
    is below some product recipe)."""
    grid = bench.GRIDS["smollm2"]
    right = {grid[6].name: 30, grid[7].name: 20, grid[10].name: 12, grid[11].name: 16}  # of 40 questions
    for recipe in grid:
        if recipe.name not in right:
            continue
        rows = [{"product_id": f"p{i // 2}", "attribute": f"a{i % 2}", "outcome": "VC" if i < right[recipe.name] else "VW",
                 "correct": i < right[recipe.name], "gold": "x"} for i in range(40)]
        f1 = right[recipe.name] / 40
        bench.write_valid_rows(tmp_path, recipe.name, rows, {"f1": f1}, kind="screen")
        write_json(tmp_path / "grid" / "screen" / f"{recipe.name}.json",
                   {"name": recipe.name, "recipe": recipe.__dict__, "valid": {"f1": f1}, "fraction": 0.2, "steps": 2,
                    "total_steps": 10, "machine": "box"})
    args = bench.parse_args(["--phase", "report", "--work", str(tmp_path), "--name", "r"])
    text = "\n".join(bench.screen_lines(args, [], tmp_path / "out"))
    product = text[text.index("### Early validation F1 of the 2 screened product recipes"):text.index("### Early validation F1 of the 2 screened question")]
    question = text[text.index("### Early validation F1 of the 2 screened question recipes, against the best of them"):]
    assert f"| {grid[6].name} (baseline) | 1 | 0.7500 |" in product and f"| {grid[7].name} | 1 | 0.5000 | -0.2500 |" in product
    assert grid[10].name not in product and grid[6].name not in question
    assert f"| {grid[11].name} (baseline) | 1 | 0.4000 |" in question and f"| {grid[10].name} | 1 | 0.3000 | -0.1000 |" in question
    assert "a table per unit below" in text
    assert (tmp_path / "out" / "screen-product-valid-f1" / "comparison.json").is_file()
    assert (tmp_path / "out" / "screen-question-valid-f1" / "comparison.json").is_file()
