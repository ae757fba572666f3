"""Learning curves: the saturating fit, the saturation point, subsets, and the cached runner on tiny data."""
from __future__ import annotations

import csv
import json
import math
import re

import numpy as np
import pytest

from leantune.curves.fit import CurveFit, bootstrap_saturation, fit_curve, size_weights
from leantune.errors import LeantuneError
from leantune.tasks.attributes_generate import GENERATION_LOG

from .attributes_fixtures import write_attribute_folder

SIZES = [25, 50, 100, 200, 400, 800, 1288]


def synthetic(a=0.9, b=0.8, c=0.5, noise=0.003, seeds=3, rng_seed=1):
    rng = np.random.default_rng(rng_seed)
    sizes, values, seed_ids = [], [], []
    for s in range(seeds):
        for n in SIZES:
            sizes.append(n)
            seed_ids.append(s)
            values.append(a - b * n ** (-c) + rng.normal(0, noise))
    return sizes, values, seed_ids


def test_fit_recovers_known_parameters():
    fit = fit_curve(*synthetic()[:2])
    assert fit.kind == "power" and fit.fallback_reason == ""
    assert fit.params["a"] == pytest.approx(0.9, abs=0.02)
    assert fit.params["c"] == pytest.approx(0.5, abs=0.1)
    assert fit.rmse < 0.01


def test_saturation_point_matches_closed_form_and_bootstrap_covers_it():
    a, b, c, t = 0.9, 0.8, 0.5, 0.01
    exact = CurveFit("power", {"a": a, "b": b, "c": c}, 0, 0.0).saturation_point(t)
    assert exact == pytest.approx((b * (1 - 2 ** -c) / t) ** (1 / c))
    # gain per doubling at n* equals the threshold
    fit = CurveFit("power", {"a": a, "b": b, "c": c}, 0, 0.0)
    assert float(fit.gain_per_doubling(exact)) == pytest.approx(t)
    # A tiny exponent puts n* beyond any float (10^419 here): infinite, not an OverflowError.
    assert CurveFit("power", {"a": 0.9, "b": 0.5, "c": 0.002}, 0, 0.0).saturation_point(1e-4) == math.inf
    sizes, values, seeds = synthetic(a, b, c)
    sat = bootstrap_saturation(sizes, values, seeds, threshold=t, resamples=200, rng=np.random.default_rng(0))
    assert sat.low <= sat.point <= sat.high
    assert sat.low < exact * 1.3 and sat.high > exact / 1.3
    assert sat.bootstrap_power == 200 and not sat.beyond_data


def test_fallbacks_are_reported():
    two = fit_curve([10, 10, 20, 20], [0.5, 0.52, 0.6, 0.61])
    assert two.kind == "loglinear" and "3 distinct sizes" in two.fallback_reason
    assert two.params["s"] == pytest.approx(0.095, abs=0.01)
    assert two.saturation_point(0.01) == math.inf and two.saturation_point(0.2) == 1.0
    exact = fit_curve([25, 50, 100], [0.5, 0.6, 0.65])  # 3 points, 3 parameters
    assert exact.kind == "loglinear" and "degree of freedom" in exact.fallback_reason
    noisy = fit_curve([1, 2, 4, 8, 16], [0.9, 0.1, 0.8, 0.2, 0.85])  # no curve to see: must not raise
    assert noisy.kind in ("power", "loglinear")
    with pytest.raises(ValueError):
        fit_curve([0, 0], [0.1, 0.2])


def test_one_size_is_no_curve():
    """A line through a single size is flat and would saturate at n = 1: fitting it is refused."""
    with pytest.raises(ValueError, match="two distinct sizes"):
        fit_curve([200, 200, 200], [0.5, 0.52, 0.55])
    with pytest.raises(ValueError, match="two distinct sizes"):  # the other size has no finite value
        fit_curve([0, 100, 200, 200], [0.3, float("nan"), 0.5, 0.52])
    with pytest.raises(ValueError, match="two distinct sizes"):
        bootstrap_saturation([200, 200], [0.5, 0.52], [0, 1], resamples=10)


def test_every_size_weighs_the_same_whatever_its_number_of_seeds():
    """Five runs at one size and one at the others: the fit equals the fit to the size means (the
    unweighted fit would be dragged toward the size with five runs)."""
    sizes = [50, 100, 200, 400, 800]
    means = [0.40, 0.52, 0.60, 0.655, 0.685]
    spread = [-0.04, -0.02, 0.0, 0.02, 0.04]
    points = [(n, m) for n, m in zip(sizes, means) if n != 50] + [(50, 0.40 + d) for d in spread]
    many = fit_curve([p[0] for p in points], [p[1] for p in points], ceiling=1.0)
    means_fit = fit_curve(sizes, means, ceiling=1.0)
    assert many.kind == means_fit.kind == "power"
    for key in ("a", "b", "c"):
        assert many.params[key] == pytest.approx(means_fit.params[key], rel=1e-3)
    # The log-linear fall-back weighs sizes alike too: one size with four runs, another with one.
    line = fit_curve([10, 10, 10, 10, 20], [0.4, 0.5, 0.6, 0.5, 0.7])
    assert line.kind == "loglinear" and line.params["s"] == pytest.approx(0.2)
    # Equal seeds: every weight is exactly 1, so curves with as many seeds at every size fit as before.
    assert size_weights(np.array(sizes * 3, dtype=float)).tolist() == [1.0] * 15
    assert size_weights(np.array([10, 10, 20, 10], dtype=float)).tolist() == [1 / 3, 1 / 3, 1.0, 1 / 3]


def test_ceiling_keeps_a_bounded_plateau_and_refuses_a_line_in_disguise():
    # A saturating curve below the ceiling is fitted as before.
    bent = fit_curve(*synthetic()[:2], ceiling=1.0)
    assert bent.kind == "power" and bent.params["a"] == pytest.approx(0.9, abs=0.02)
    # Straight in log2(n): unbounded, the plateau flies off far above 1 (a line in disguise) ...
    rng = np.random.default_rng(3)
    sizes = SIZES * 2
    values = [0.43 + 0.0132 * math.log2(n) + rng.normal(0, 0.002) for n in sizes]
    free = fit_curve(sizes, values)
    assert free.kind == "loglinear" or free.params["a"] > 1.0
    # ... bounded by 1 it would run into the bound: reported as log-linear with that reason.
    bounded = fit_curve(sizes, values, ceiling=1.0)
    assert bounded.kind == "loglinear" and "ceiling" in bounded.fallback_reason
    assert bounded.params["s"] == pytest.approx(0.0132, abs=0.002)
    assert bounded.saturation_point(0.01) == math.inf


def test_random_subsets_nested_per_seed():
    from leantune.pipelines.units import select_units

    pick = lambda n, seed: set(select_units({}, 100, "random", n, seed))  # noqa: E731
    assert pick(5, 3) < pick(20, 3) < pick(60, 3) and len(pick(60, 3)) == 60
    assert pick(5, 4) != pick(5, 3)


def test_scored_methods_select_through_the_one_pruning_path():
    """A curve's subsets come from ``leantune.pipelines.units`` (the path `prune --task sft` runs)."""
    from leantune.pipelines.units import select_units

    emb = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    small, large = (set(select_units({"embedding": emb}, 30, "kcenter", n, 0)) for n in (3, 10))
    assert len(large) == 10 and small <= large  # greedy k-center is nested
    effort = {"effort": np.arange(30, dtype=np.float32)}
    assert select_units(effort, 30, "effort", 5, 0, "topk") == [25, 26, 27, 28, 29]
    assert len(set(select_units(effort, 30, "effort", 10, 0))) == 10  # coverage by default
    with pytest.raises(LeantuneError, match="score column 'effort' has 29 rows for a pool of 30"):
        select_units({"effort": np.ones(29)}, 30, "effort", 5, 0)
    with pytest.raises(LeantuneError, match="needs the score column 'embedding'"):
        select_units({}, 30, "kcenter", 5, 0)


def test_curve_scores_for_text_tasks_and_methods_refused_up_front(tmp_path):
    """effort and embedding come from the task's training texts, tokenised as the trainer does; a
    selector passed as --method, or an unknown method, is refused when the config is made."""
    from leantune.curves import CurveConfig
    from leantune.curves.runner import curve_scores, curve_subsets
    from leantune.tasks.attributes import AttributeTask

    task = AttributeTask(data=str(write_attribute_folder(tmp_path / "d")))
    pool = task.train_pool()
    cfg = CurveConfig(method="effort", model="tiny", sizes=(4, 8), progress=False)
    assert cfg.selector == "coverage"
    scores = curve_scores(task, cfg, tmp_path)
    assert scores["effort"].shape == (12,) and np.isfinite(scores["effort"]).all() and (scores["effort"] > 0).all()
    assert (tmp_path / "scores-effort-seed0.safetensors").exists()
    assert np.array_equal(curve_scores(task, cfg, tmp_path)["effort"], scores["effort"])  # read back, not recomputed
    emb = curve_scores(task, CurveConfig(method="kcenter", model="tiny", progress=False), tmp_path)
    assert emb["embedding"].shape == (12, 64)
    gi = curve_scores(task, CurveConfig(method="gradient-influence", model="tiny", progress=False), tmp_path)
    assert gi["gradient_influence"].shape == (12,) and np.isfinite(gi["gradient_influence"]).all()  # LESS, target: validation
    assert (tmp_path / "scores-gradient_influence-seed0.safetensors").exists()
    subsets = curve_subsets(task, cfg, tmp_path, pool, 0)
    assert [len(subsets[n]) for n in (4, 8)] == [4, 8] and set(subsets[8]) <= set(pool)
    # A run's subset comes from scores made with the run's own seed, whichever --seed the process
    # filling the folder started from: seed 1's run is the same from a `--seed 0 --seeds 2` process
    # as from a `--seed 1` one (they used to differ: the process's seed scored every run).
    assert not (tmp_path / "scores-effort-seed1.safetensors").exists()
    from_seed0_process = curve_subsets(task, cfg, tmp_path, pool, 1)
    assert (tmp_path / "scores-effort-seed1.safetensors").exists()
    seed1 = curve_scores(task, cfg, tmp_path, 1)["effort"]
    assert not np.array_equal(seed1, scores["effort"])  # the LoRA initialisation differs, so the scores do
    assert from_seed0_process == curve_subsets(task, CurveConfig(method="effort", model="tiny", sizes=(4, 8), seed=1,
                                                                  progress=False), tmp_path, pool, 1)
    with pytest.raises(LeantuneError, match="method 'coverage': not available for the attributes task .*pass it as the selector"):
        CurveConfig(method="coverage")
    with pytest.raises(LeantuneError, match="method 'nonsense': not available"):
        CurveConfig(method="nonsense")
    with pytest.raises(LeantuneError, match="selector 'topk': method kcenter selects with kcenter only"):
        CurveConfig(method="kcenter", selector="topk")


def test_a_seed_another_process_is_scoring_is_waited_for_not_scored_twice(tmp_path, monkeypatch):
    import threading
    import time

    from filelock import FileLock
    from safetensors.numpy import save_file

    import leantune.pipelines.units as units
    from leantune.curves import CurveConfig
    from leantune.curves.runner import curve_scores, curve_subsets
    from leantune.tasks.attributes import AttributeTask

    task = AttributeTask(data=str(write_attribute_folder(tmp_path / "d")))
    cfg = CurveConfig(method="effort", model="tiny", sizes=(4,), progress=False)
    path = tmp_path / "scores-effort-seed3.safetensors"
    made = np.arange(12, dtype=np.float32) + 1
    holding = threading.Event()

    def other_process():  # scores seed 3: holds the lock, writes the file, lets go
        with FileLock(str(path) + ".lock"):
            holding.set()
            time.sleep(0.5)
            save_file({"effort": made}, str(path))

    def refuse(*a, **k):
        raise AssertionError("scored a seed another process was scoring")

    monkeypatch.setattr(units, "score_units", refuse)
    logs: list[str] = []
    other = threading.Thread(target=other_process)
    other.start()
    holding.wait()
    try:
        got = curve_subsets(task, cfg, tmp_path, task.train_pool(), 3, log=logs.append)
    finally:
        other.join()
    assert len(got[4]) == 4 and np.array_equal(curve_scores(task, cfg, tmp_path, 3)["effort"], made)
    assert logs == ["seed 3: another process is scoring it (it holds "
                    f"{path}.lock); waiting for scores-effort-seed3.safetensors"]
    # Once the lock is free and no file is there, the caller scores the seed itself.
    monkeypatch.undo()
    fresh = curve_scores(task, cfg, tmp_path, 4, log=logs.append)
    assert fresh["effort"].shape == (12,) and (tmp_path / "scores-effort-seed4.safetensors").exists() and len(logs) == 1


def _tiny_config(folder, **over):
    from leantune.curves import CurveConfig
    from leantune.curves.runner import curve_recipe

    base = dict(
        task="attributes", task_options={"data": str(folder), "max_new_tokens": 6, "progress": False}, model="tiny",
        sizes=(0, 2, 4), seeds=2, eval_limit=2, min_steps=1, bootstrap=20, progress=False,
    )
    recipe = {"batch_size": 2, "micro_batch_size": 2, **over.pop("finetune", {})}
    if over.pop("bf16", False):
        recipe["bf16"] = True
    base.update(over)
    return CurveConfig(**base, finetune=curve_recipe(**recipe))


def test_curve_runner_caches_nests_and_refuses_changed_settings(tmp_path):
    from leantune.curves import learning_curve

    folder = write_attribute_folder(tmp_path / "data")
    out = tmp_path / "curve"
    logs: list[str] = []
    first = learning_curve(_tiny_config(folder), out, log=logs.append)
    assert (first.run.trained, first.run.cached) == (5, 0)  # zero-shot + 2 sizes x 2 seeds
    for seed in (0, 1):
        small = json.loads((out / "runs" / f"size00002-seed{seed}" / "subset.json").read_text())["units"]
        large = json.loads((out / "runs" / f"size00004-seed{seed}" / "subset.json").read_text())["units"]
        assert set(small) < set(large)
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["size"], r["seed"]) for r in rows] == [("0", ""), ("2", "0"), ("2", "1"), ("4", "0"), ("4", "1")]
    assert "accuracy" in rows[0] and "attribute_accuracy/Brand" in rows[0]
    saved = json.loads((out / "results.json").read_text())
    assert saved["analysis"]["fit"]["kind"] in ("power", "loglinear") and "saturation" in saved["analysis"]
    assert (out / "curve.png").stat().st_size > 0 and (out / "per_attribute.png").stat().st_size > 0
    # Per attribute: each size with its interval over the test products, from the runs' per-question rows.
    per_attribute = json.loads((out / "per_attribute.json").read_text())
    assert per_attribute["metric"] == "f1" and per_attribute["groups"][0]["points"][0]["size"] == 0
    assert "breakdown_md" in first.files and (out / "per_attribute.md").is_file()
    assert first.breakdown is not None and first.breakdown.to_dict() == per_attribute
    assert any(line.startswith("per attribute: the last step (2 → 4)") for line in first.lines)
    # Every run wrote its per-question results, on the same questions, so sizes compare paired.
    from leantune.evaluation.compare import compare, load_evaluation

    runs = [load_evaluation(out / "runs" / name, name=name.split("-")[0])
            for name in ("size00002-seed0", "size00002-seed1", "size00004-seed0", "size00004-seed1")]
    assert len({tuple(r.units) for r in runs}) == 1 and "::" in runs[0].units[0]
    acc = compare(runs, baseline="size00002", metric="correct", n_boot=200, n_perm=200).row("size00004")
    mean = lambda name: sum(float(r["accuracy"]) for r in rows if r["size"] == name) / 2  # noqa: E731
    assert acc.diff == pytest.approx(mean("4") - mean("2"))
    # The curve's own paired steps: each size against the previous one and against zero-shot,
    # with the task's metric name (accuracy = the mean of the per-question `correct`).
    steps = first.steps
    assert [(s.size, s.against, s.seeds) for s in steps.previous] == [(2, 0, 2), (4, 2, 2)]
    assert steps.previous[1].diff == pytest.approx(acc.diff) and steps.previous[1].ci_low <= acc.diff <= steps.previous[1].ci_high
    assert steps.zero_shot[0] is steps.previous[0] and steps.zero_shot[1].diff == pytest.approx(mean("4") - float(rows[0]["accuracy"]))
    assert (out / "steps.md").read_text().count("\n| 4 | 2 |") == 1 and first.files["steps_json"].exists()
    # Curve run folders name themselves in a comparison: the curve's method, and zero-shot.
    plain = load_evaluation(out / "runs" / "size00004-seed1")
    assert (plain.name, plain.seed) == ("random", 1) and load_evaluation(out / "runs" / "size00000").name == "zero-shot"

    # Second run: nothing trained; one more seed: only its runs.
    import leantune.train as train

    def no_training(*a, **k):
        raise AssertionError("a cached run was trained again")

    original = train.finetune
    train.finetune = no_training
    try:
        again = learning_curve(_tiny_config(folder), out, log=logs.append)
    finally:
        train.finetune = original
    assert (again.run.trained, again.run.cached) == (0, 5)
    recorded = (out / "curve.json").read_bytes()
    more = learning_curve(_tiny_config(folder, seeds=3), out, log=logs.append)
    assert (more.run.trained, more.run.cached) == (2, 5)
    # Same run settings, another seed count: the folder's record is kept as it was, not rewritten by
    # each process that fills the folder.
    assert (out / "curve.json").read_bytes() == recorded
    with pytest.raises(LeantuneError, match="lr"):
        learning_curve(_tiny_config(folder, finetune={"lr": 1e-2}), out)

    # --cached-only: a fourth seed is reported missing, not trained; the fit uses the 7 cached runs.
    # The report-only call leaves the folder's curve.json (written by the runs that trained) as it was.
    recorded = (out / "curve.json").read_bytes()
    train.finetune = no_training
    try:
        partial = learning_curve(_tiny_config(folder, seeds=4), out, log=logs.append, cached_only=True)
    finally:
        train.finetune = original
    assert (partial.run.trained, partial.run.cached, len(partial.run.rows)) == (0, 7, 7)
    assert (out / "curve.json").read_bytes() == recorded
    assert any("size 4 seed 3: not in" in line for line in logs)
    with pytest.raises(LeantuneError, match="no finished runs"):
        learning_curve(_tiny_config(folder, sizes=(3,)), out, cached_only=True)

    # bf16 changes the weights: refused in an fp32 folder, also one written before the setting existed.
    with pytest.raises(LeantuneError, match="bf16=False"):
        learning_curve(_tiny_config(folder, bf16=True), out)
    settings = json.loads((out / "curve.json").read_text())
    del settings["run_settings"]["bf16"]
    (out / "curve.json").write_text(json.dumps(settings))
    with pytest.raises(LeantuneError, match="bf16=False"):
        learning_curve(_tiny_config(folder, bf16=True), out)
    with pytest.raises(LeantuneError, match="larger than the attributes training pool"):
        learning_curve(_tiny_config(folder, sizes=(0, 50)), tmp_path / "other")
    # Options equal to the task's defaults (as a script spells them out) and progress switches do
    # not split curve folders.
    from leantune.curves import CurveConfig

    spelled = CurveConfig(task_options={"data": "oa-mine", "unit": "product", "progress": False}).run_settings()
    assert spelled["task_options"] == {} == CurveConfig().run_settings()["task_options"]
    assert CurveConfig(task_options={"unit": "question"}).run_settings()["task_options"] == {"unit": "question"}


def test_curve_bf16_trains_evaluates_and_keeps_its_own_effort_scores(tmp_path):
    from leantune.curves import learning_curve

    folder = write_attribute_folder(tmp_path / "data")
    out = tmp_path / "curve-bf16"
    result = learning_curve(_tiny_config(folder, sizes=(0, 4), seeds=1, bf16=True, method="effort"), out, log=lambda _: None)
    assert (result.run.trained, result.run.cached) == (2, 0)
    trained = [r for r in result.run.rows if r["seed"] is not None][0]
    assert trained["status"] == "finished" and trained["finetune"]["bf16"] is True
    assert all(0 <= r["metrics"]["accuracy"] <= 1 for r in result.run.rows)
    assert (out / "scores-effort-bf16-seed0.safetensors").exists() and not (out / "scores-effort-seed0.safetensors").exists()


def test_plot_marks_sizes_trained_with_the_same_step_floor():
    from leantune.curves.plots import _step_floor

    def row(size, steps):
        return {"size": size, "seed": 0, "train": {"steps": steps}}

    assert _step_floor([row(25, 25), row(50, 25), row(100, 25), row(400, 50), row(800, 100)]) == (100, 25)
    assert _step_floor([row(25, 4), row(50, 7), row(100, 13)]) is None  # every size its own budget
    assert _step_floor([row(25, 25), row(50, 30), row(100, 25)]) is None  # not the smallest sizes in a row


def test_saturation_line_names_sizes_with_a_single_seed():
    from leantune.curves.analysis import _single_seed_note

    assert _single_seed_note({0: {"n": 1}, 25: {"n": 3}, 800: {"n": 1}}) == "; size(s) 800 have one seed and add no spread"
    assert "degenerate" in _single_seed_note({0: {"n": 1}, 25: {"n": 1}, 50: {"n": 1}})
    assert _single_seed_note({0: {"n": 1}, 25: {"n": 2}}) == ""


def test_schedules_epochs_and_steps():
    """--schedule epochs: epochs x size / batch steps (with an optional floor); steps: one budget for every size."""
    from leantune.curves import CurveConfig

    from leantune.curves.runner import curve_recipe

    epochs = CurveConfig(sizes=(0, 4, 8, 40), epochs=2, finetune=curve_recipe(batch_size=4))
    assert [epochs.steps_for(n) for n in (1, 4, 8, 40)] == [1, 2, 4, 20]
    assert "schedule epochs: 2 epoch(s) per size (batch 4)" == epochs.schedule_label()
    floor = CurveConfig(sizes=(0, 4, 40), epochs=2, finetune=curve_recipe(batch_size=4), min_steps=5)
    assert [floor.steps_for(n) for n in (4, 40)] == [5, 20] and "at least 5 steps" in floor.schedule_label()
    fixed = CurveConfig(sizes=(0, 4, 40), epochs=2, finetune=curve_recipe(batch_size=4), schedule="steps")
    assert fixed.steps == 20 and {fixed.steps_for(n) for n in (4, 40)} == {20}  # what the largest size gets
    assert "20 optimizer steps of 4 at every size" in fixed.schedule_label()
    assert CurveConfig(sizes=(0, 4), schedule="steps", steps=7).steps_for(4) == 7
    assert fixed.run_settings()["schedule"] == "steps" and fixed.run_settings()["steps"] == 20
    # The library names parameters (``schedule``, ``min_steps``); the CLI prints them as flags (bad-input corpus).
    for bad, message in (({"schedule": "tokens"}, "schedule 'tokens'"), ({"steps": 3}, "steps 3: only with schedule 'steps'"),
                         ({"schedule": "steps", "min_steps": 2}, "min_steps 2: only with schedule 'epochs'"),
                         ({"schedule": "steps", "steps": 0}, "steps 0"), ({"min_steps": -1}, "min_steps -1"),
                         ({"epochs": float("nan")}, "epochs nan")):
        with pytest.raises(LeantuneError, match=re.escape(message)):
            CurveConfig(**bad)


def test_old_curve_folders_keep_working_and_a_changed_schedule_is_refused(tmp_path):
    """A curve folder written before --schedule existed (no schedule/steps keys) is read as the epochs
    schedule; asking it for the steps schedule is refused, naming the setting."""
    from leantune.curves.runner import _check_settings

    cfg = _tiny_config(tmp_path)
    old = cfg.run_settings()
    old.pop("schedule"), old.pop("steps")
    (tmp_path / "curve").mkdir()
    (tmp_path / "curve" / "curve.json").write_text(json.dumps({"run_settings": old}))
    _check_settings(tmp_path / "curve", cfg)  # accepted
    with pytest.raises(LeantuneError, match="schedule"):
        _check_settings(tmp_path / "curve", _tiny_config(tmp_path, schedule="steps", steps=3, min_steps=0))

    # A folder from before the LoRA recipe was nested (no target_modules, dropout, ...) trained q/v
    # with FinetuneConfig's defaults: accepted as such; another module set is refused, naming it.
    for key in ("target_modules", "dropout", "warmup_ratio", "weight_decay", "lr_scheduler", "max_grad_norm", "group_by_length",
                "early_stopping_patience"):
        old.pop(key)
    (tmp_path / "curve" / "curve.json").write_text(json.dumps({"run_settings": {**old, "train_on_inputs": None}}))
    _check_settings(tmp_path / "curve", cfg)
    with pytest.raises(LeantuneError, match="target_modules"):
        _check_settings(tmp_path / "curve", _tiny_config(tmp_path, finetune={"target_modules": ("q_proj", "k_proj")}))


def test_steps_schedule_curve_trains_equal_steps_and_plots_the_na_baseline(tmp_path):
    """A --schedule steps curve trains every size for the same steps; the summary names the schedule and
    the all-"n/a" baseline (the share of questions whose gold is n/a, for accuracy)."""
    from leantune.curves import learning_curve
    from leantune.tasks.attributes import AttributeTask

    folder = write_attribute_folder(tmp_path / "data")
    cfg = _tiny_config(folder, seeds=1, schedule="steps", steps=2, min_steps=0, metric="accuracy")
    result = learning_curve(cfg, tmp_path / "curve", log=lambda *_: None)
    trained = [r for r in result.run.rows if r["size"] > 0]
    assert [r["train"]["steps"] for r in trained] == [2, 2]
    task = AttributeTask(data=str(folder))
    tested = task.data.products("test")
    from leantune.tasks.attributes import seeded_subset

    questions = [v for p in seeded_subset(tested, 2, 0) for v in p.attributes.values()]
    share_na = sum(v is None for v in questions) / len(questions)
    assert task.baselines("accuracy", limit=2) == {'answer "n/a" everywhere': pytest.approx(share_na)}
    assert task.baselines("f1") == {'answer "n/a" everywhere': 0.0} and task.baselines("nosuch") == {}
    assert result.lines[0] == "schedule steps: 2 optimizer steps of 2 at every size"
    assert f'baseline \'answer "n/a" everywhere\': accuracy {share_na:.4f}' in result.lines
    saved = json.loads((tmp_path / "curve" / "results.json").read_text())
    assert saved["settings"]["config"]["schedule"] == "steps" and saved["settings"]["config"]["steps"] == 2
    assert (tmp_path / "curve" / "curve.png").stat().st_size > 0


def test_default_sizes_follow_the_unit_and_reach_the_whole_pool(tmp_path):
    from leantune.curves import DEFAULT_SIZES, default_sizes

    assert default_sizes("attributes", {}) == DEFAULT_SIZES  # OA-Mine products: 0 ... 1,288
    assert default_sizes("attributes", {"unit": "question"}) == (0, 100, 400, 1600, 3200, 6500, 13795)
    folder = write_attribute_folder(tmp_path / "data")
    assert default_sizes("attributes", {"data": str(folder)}) == (0, 12)
    n_questions = default_sizes("attributes", {"data": str(folder), "unit": "question"})[-1]
    assert n_questions > 12 and default_sizes("attributes", {"data": str(folder), "unit": "question"}) == (0, n_questions)


def test_plan_counts_the_missing_runs_and_estimates_them_from_timed_steps(tmp_path):
    """``curve --plan``: the runs still missing from the folder, their steps and evaluations, and an
    estimate that is steps x the timed seconds per step + evaluated units x seconds per unit."""
    from typer.testing import CliRunner

    from leantune.cli import app
    from leantune.curves import learning_curve
    from leantune.curves.plan import measure_costs, plan_curve

    folder = write_attribute_folder(tmp_path / "data")
    cfg = _tiny_config(folder, seeds=2)
    out = tmp_path / "curve"
    plan = plan_curve(cfg, out)
    assert [(r.size, r.seed) for r in plan.runs] == [(0, None), (2, 0), (4, 0), (2, 1), (4, 1)]
    assert [r.steps for r in plan.runs] == [0] + [cfg.steps_for(n) for n in (2, 4, 2, 4)]
    assert len(plan.missing) == 5 and plan.train_steps == 2 * (cfg.steps_for(2) + cfg.steps_for(4))
    assert plan.eval_units == 2  # --eval-limit 2 of the fixture's 6 test products; without a limit, all of them:
    assert plan_curve(_tiny_config(folder, seeds=2, eval_limit=None), tmp_path / "all").eval_units == 6
    costs = {"s_per_step": 10.0, "s_per_eval_unit": 2.0, "threads": 1, "load_avg": [1.0, 1.0, 1.0]}
    assert plan.estimate_s(costs) == plan.train_steps * 10.0 + 5 * plan.eval_units * 2.0
    # Runs already in the folder drop out of the plan.
    learning_curve(_tiny_config(folder, seeds=1), out, log=lambda *_: None)
    again = plan_curve(cfg, out)
    assert [(r.size, r.seed) for r in again.missing] == [(2, 1), (4, 1)]
    assert again.train_steps == cfg.steps_for(2) + cfg.steps_for(4)
    # An interrupted run resumes from its newest complete checkpoint (trainer_state.json written last):
    # those steps are not counted again; a checkpoint cut off while saving is not one.
    from leantune.curves.runner import run_dir

    checkpoints = run_dir(out, 4, 1) / "train" / "checkpoints"
    (checkpoints / "checkpoint-1").mkdir(parents=True)
    (checkpoints / "checkpoint-1" / "trainer_state.json").write_text("{}")
    (checkpoints / "checkpoint-2").mkdir()  # no trainer_state.json: incomplete
    resumed = plan_curve(cfg, out)
    assert [r.checkpointed for r in resumed.missing] == [0, 1]
    assert resumed.train_steps == cfg.steps_for(2) + cfg.steps_for(4) - 1 and resumed.checkpointed_steps == 1
    assert f"size 4 seed 1 at step 1 of {cfg.steps_for(4)}" in "\n".join(resumed.lines())
    with pytest.raises(LeantuneError, match="learning curve"):  # a folder of other runs is refused, not miscounted
        plan_curve(_tiny_config(folder, seeds=2, min_steps=3), out)
    with pytest.raises(LeantuneError, match="^steps"):
        measure_costs(cfg, steps=1)
    measured = measure_costs(cfg, steps=2, eval_units=1, log=lambda *_: None)
    assert measured["s_per_step"] > 0 and measured["s_per_eval_unit"] > 0 and measured["threads"] >= 1
    assert measured["step_source"] == "2 steps timed here" and measured["timed"] is True
    assert "base model" in measured["eval_source"]  # no folder to learn from: the base model's upper estimate
    # With the folder: its fine-tuned runs trained and evaluated on this machine with these threads price
    # both the steps and the evaluation (each run records both); a run made on another machine is left out.
    import statistics

    from leantune.curves.plan import finished_costs
    from leantune.device import machine_summary
    from leantune.io import read_json, write_json

    rows = [read_json(run_dir(out, n, 0) / "result.json") for n in (2, 4)]
    assert all(r["machine"] == machine_summary(threads=False) and r["threads"] >= 1 for r in rows)
    per_step = statistics.median(r["train"]["wall_s"] / r["train"]["steps"] for r in rows)
    per_unit = statistics.median(r["eval_s"] / 2 for r in rows)
    assert finished_costs(out, plan.eval_units) == {"s_per_step": (per_step, 2), "s_per_eval_unit": (per_unit, 2)}
    stamp = lambda *a: pytest.fail("nothing is timed when the folder prices both")  # noqa: E731
    measured = measure_costs(cfg, steps=2, eval_units=1, log=stamp, out=out)
    assert (measured["s_per_step"], measured["s_per_eval_unit"]) == (per_step, per_unit)
    assert "median of 2 fine-tuned run(s) in the folder, trained" in measured["step_source"]
    assert "median of 2 fine-tuned run(s) in the folder" in measured["eval_source"] and "busy" not in measured
    lines = "\n".join(again.lines(measured))
    assert f"{per_step:.1f} s per optimizer step (the median of 2" in lines and "priced from the folder's runs" in lines
    assert measured["timed"] is False and "measured here" not in lines
    # Runs made here with another thread count do not price this process's runs, but the plan says how to use them.
    write_json(run_dir(out, 2, 0) / "result.json", {**rows[0], "threads": rows[0]["threads"] + 1})
    found = finished_costs(out, plan.eval_units)
    assert found["other_threads"] == {rows[0]["threads"] + 1: 1} and found["s_per_step"][1] == 1
    write_json(run_dir(out, 4, 0) / "result.json", {**rows[1], "threads": rows[1]["threads"] + 1})
    hinted = measure_costs(cfg, steps=2, eval_units=1, log=lambda *_: None, out=out)
    assert hinted["timed"] and f"OMP_NUM_THREADS={rows[0]['threads'] + 1} to price from them" in hinted["hint"]
    assert hinted["hint"] in "\n".join(again.lines(hinted))
    write_json(run_dir(out, 2, 0) / "result.json", rows[0])
    write_json(run_dir(out, 4, 0) / "result.json", {**rows[1], "machine": "Another CPU"})
    assert finished_costs(out, plan.eval_units) == {"s_per_step": (rows[0]["train"]["wall_s"] / rows[0]["train"]["steps"], 1),
                                                    "s_per_eval_unit": (rows[0]["eval_s"] / 2, 1)}
    assert finished_costs(tmp_path / "empty", plan.eval_units) == {}
    # Steps timed on a machine with more work than cores are flagged as an upper bound.
    from leantune.curves.plan import busy_warning

    assert busy_warning([0.1, 0.1, 0.1], threads=2, cpus=2) is None
    assert busy_warning([], threads=2, cpus=2) is None
    assert "load average 2.8 before timing, plus 2 thread(s) timed, on 2 CPU(s)" in busy_warning([2.8, 2.0, 2.0], threads=2, cpus=2)
    assert "busy" in "\n".join(again.lines({**measured, "busy": busy_warning([2.8], threads=2, cpus=2)}))

    result = CliRunner().invoke(app, ["curve", "--data", str(folder), "--model", "tiny", "--sizes", "0,2,4", "--seeds", "2",
                                      "--eval-limit", "2", "--out", str(tmp_path / "other"), "--plan", "--plan-steps", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "missing: 5 of 5 runs" in result.output and "estimate" not in result.output
    assert not (tmp_path / "other" / "runs").exists()  # nothing trained
    bad = CliRunner().invoke(app, ["curve", "--model", "tiny", "--plan", "--plan-steps", "1"])
    assert bad.exit_code != 0 and "--plan-steps" in bad.output


def test_recipe_model_trains_the_curve_with_the_models_own_recipe_and_flags_override_it(tmp_path):
    """``curve --recipe model``: the unit, epochs, LoRA settings and checkpoint cadence of what ``attributes
    finetune`` trains that model with (Gemma's own recipe, the task's product recipe for other models);
    each flag given wins; the default 'curve' recipe is unchanged, so existing folders keep their settings."""
    from typer.testing import CliRunner

    from leantune.cli import app
    from leantune.curves.runner import resolve_recipe
    from leantune.errors import ParameterError
    from leantune.tasks.attributes import RECIPE, default_recipe
    from leantune.train import ALL_LINEAR

    gemma = resolve_recipe("attributes", "gemma3-270m", "model")
    want = default_recipe("gemma3-270m")
    f = gemma.finetune
    assert (gemma.unit, gemma.epochs) == (want["unit"], want["epochs"]) == ("product", 3.0)
    assert (f.lr, f.batch_size, f.r, f.alpha, f.target_modules, f.eval_every) == (1e-3, 8, 8, 16, ALL_LINEAR, 20)
    mine = resolve_recipe("attributes", "gemma3-270m", "model", unit="question", epochs=2, save_every=5, lr=5e-4, r=4,
                          target_modules=("q_proj",), micro_batch_size=4, bf16=None)
    assert (mine.unit, mine.epochs, mine.finetune.eval_every, mine.finetune.lr, mine.finetune.r) == ("question", 2, 5, 5e-4, 4)
    assert (mine.finetune.target_modules, mine.finetune.micro_batch_size, mine.finetune.batch_size) == (("q_proj",), 4, 8)
    assert "unit question (the recipe was chosen on product units)" in mine.describe()
    assert "chosen on" not in gemma.describe() and "gemma3-270m's default fine-tuning recipe" in gemma.describe()
    other = resolve_recipe("attributes", "some/local/folder", "model")  # no recipe of its own: the task's
    assert (other.unit, other.epochs, other.finetune.lr, other.finetune.batch_size) == (RECIPE["unit"], RECIPE["epochs"], 2e-3, 16)
    assert other.finetune.eval_every is None
    short = resolve_recipe("attributes", "gemma3-270m")  # 'curve': short runs whatever the model
    assert (short.unit, short.epochs, short.finetune.r, short.finetune.batch_size, short.finetune.target_modules) == (
        None, 1.0, 8, 8, ("q_proj", "v_proj"))
    with pytest.raises(ParameterError, match="recipe 'model'.*no per-model recipe"):
        resolve_recipe("recommendation", "smollm2", "model")
    with pytest.raises(ParameterError, match="recipe 'best'.*curve, model"):
        resolve_recipe("attributes", "smollm2", "best")

    folder = write_attribute_folder(tmp_path / "data")
    args = ["curve", "--data", str(folder), "--sizes", "0,2", "--seeds", "1", "--eval-limit", "2", "--plan", "--plan-steps", "0", "--quiet"]
    result = CliRunner().invoke(app, args + ["--model", "gemma3-270m", "--recipe", "model", "--out", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output
    assert "recipe (gemma3-270m's default fine-tuning recipe, then the flags given), unit product, 3 epoch(s)" in result.output
    assert "(batch 8)" in result.output and "missing: 2 of 2 runs" in result.output
    # A folder made with one recipe refuses the other rather than mixing runs of both.
    made = CliRunner().invoke(app, ["curve", "--data", str(folder), "--model", "tiny", "--sizes", "0,2", "--seeds", "1", "--eval-limit", "2",
                                    "--min-steps", "1", "--batch-size", "2", "--micro-batch-size", "2", "--out", str(tmp_path / "t"), "--quiet"])
    assert made.exit_code == 0, made.output
    assert "recipe (the curve's short-run recipe, then the flags given), 1 epoch(s), lr 0.001, batch 2," in made.output
    again = CliRunner().invoke(app, args + ["--model", "tiny", "--recipe", "model", "--micro-batch-size", "2", "--out", str(tmp_path / "t")])
    assert isinstance(again.exception, LeantuneError), again.output  # main() prints it as one line
    assert "made with other settings: epochs=1.0 there, 5.0 now" in str(again.exception)


def test_curve_cli_save_every_checkpoints_each_run_between_epochs(tmp_path):
    """``curve --save-every N``: each run saves a checkpoint every N optimizer steps (a 1-epoch run
    otherwise saves only at its end), so an interrupted long run resumes; the curve's settings are unchanged."""
    from typer.testing import CliRunner

    from leantune.cli import app
    from leantune.curves.runner import run_dir

    folder = write_attribute_folder(tmp_path / "data")

    def run(out, *extra):
        result = CliRunner().invoke(app, ["curve", "--data", str(folder), "--model", "tiny", "--sizes", "4", "--seeds", "1",
                                          "--batch-size", "2", "--micro-batch-size", "2", "--eval-limit", "1", "--bootstrap", "10",
                                          "--out", str(out), "--quiet", *extra])
        assert result.exit_code == 0, result.output
        train = run_dir(out, 4, 0) / "train"
        return sorted(p.name for p in (train / "checkpoints").iterdir()), json.loads((train / "manifest.json").read_text())["config"]

    assert run(tmp_path / "epoch")[0] == ["checkpoint-2"]  # 2 steps an epoch: only the last is saved
    saved, config = run(tmp_path / "often", "--save-every", "1")
    assert saved == ["checkpoint-1", "checkpoint-2"] and config["eval_every"] == 1
    settings = [json.loads((tmp_path / name / "curve.json").read_text())["run_settings"] for name in ("often", "epoch")]
    assert settings[0] == settings[1]  # not a setting of the curve: a folder may be continued with another --save-every
    assert run(tmp_path / "epoch", "--save-every", "1")[0] == ["checkpoint-2"]  # its finished run is cached, not redone
    bad = CliRunner().invoke(app, ["curve", "--model", "tiny", "--save-every", "0"])
    assert bad.exit_code != 0 and "--save-every" in bad.output


def test_a_resumed_runs_wall_time_counts_its_training_in_earlier_sittings(tmp_path, monkeypatch):
    """A run resumed from a checkpoint reports the trainer's training time over all sittings; the run's
    ``wall_s`` (the report's "sum of the runs' own wall times") is then at least that plus its evaluation."""
    from leantune.curves import runner

    folder = write_attribute_folder(tmp_path / "data")
    cfg = _tiny_config(folder, sizes=(2,), seeds=1)

    def resumed(task, cfg, out, size, seed, units):  # as run_one returns it after a resumed training
        return {"size": size, "seed": seed, "status": "finished", "metrics": {"f1": 0.5},
                "train": {"status": "finished", "steps": 1, "wall_s": 1000.0}, "eval_s": 20.0}

    monkeypatch.setattr(runner, "run_one", resumed)
    run = runner.run_curve(cfg, tmp_path / "curve", log=lambda *_: None)
    assert run.rows[0]["wall_s"] == 1020.0
    assert json.loads((runner.run_dir(tmp_path / "curve", 2, 0) / "result.json").read_text())["wall_s"] == 1020.0


def test_curve_runs_keep_their_answers_and_an_interrupted_evaluation_resumes_from_them(tmp_path, monkeypatch):
    """Each curve run writes its judged answers (``predictions.jsonl``, read by ``attributes errors``) beside
    ``per_unit.jsonl``; answers are logged as they come, so an evaluation cut off before its files are
    written generates nothing again when the run is repeated, and the log goes once they are written."""
    import transformers

    from leantune.curves import runner
    from leantune.evaluation import units
    from leantune.evaluation.units import read_per_unit
    from leantune.tasks.attributes_errors import error_breakdown, read_predictions

    folder = write_attribute_folder(tmp_path / "data")
    cfg = _tiny_config(folder, sizes=(0, 2), seeds=1)
    out, quiet = tmp_path / "curve", (lambda *_: None)
    real_write, generate = units.write_evaluation, transformers.GenerationMixin.generate

    def cut_off(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(units, "write_evaluation", cut_off)
    with pytest.raises(KeyboardInterrupt):
        runner.run_curve(cfg, out, log=quiet)
    zero, trained = runner.run_dir(out, 0, None), runner.run_dir(out, 2, 0)
    assert (zero / GENERATION_LOG).is_file() and not (zero / "per_unit.jsonl").exists()
    monkeypatch.setattr(units, "write_evaluation", real_write)
    calls = []

    def counted(*a, **k):
        calls.append(k.get("input_ids", a[1] if len(a) > 1 else None).shape[0])
        return generate(*a, **k)

    monkeypatch.setattr(transformers.GenerationMixin, "generate", counted)
    done = runner.run_curve(cfg, out, log=quiet)
    assert done.trained == 2 and not (zero / GENERATION_LOG).exists() and not (trained / GENERATION_LOG).exists()
    prompts = len({u["cluster"] for u in read_per_unit(trained)})  # one prompt per product (the task's unit)
    assert sum(calls) == prompts  # the trained run's answers only: the zero-shot ones came from the log
    for run in (zero, trained):
        rows, _ = read_predictions(run)
        assert [f"{r['product_id']}::{r['attribute']}" for r in rows] == [u["unit"] for u in read_per_unit(run)]
        assert [r["outcome"] for r in rows] == [u["outcome"] for u in read_per_unit(run)]
        assert error_breakdown(rows).f1 == pytest.approx(json.loads((run / "result.json").read_text())["metrics"]["f1"])


def test_saturation_interval_over_test_units_has_width_with_one_seed():
    # One seed per size: resampling seeds alone gives a point interval; resampling the test units
    # (values that move together across sizes, as paired runs on one test set do) gives a real one.
    a, b, c, t = 0.9, 0.8, 0.5, 0.01
    sizes = np.array(SIZES, dtype=float)
    values = a - b * sizes ** (-c)
    seeds = [0] * len(SIZES)
    seeds_only = bootstrap_saturation(sizes, values, seeds, threshold=t, resamples=100, rng=np.random.default_rng(0))
    assert seeds_only.low == seeds_only.high == seeds_only.point and seeds_only.over == "seeds"
    rng = np.random.default_rng(1)
    shift = rng.normal(0, 0.02, size=(300, 1))  # a resample's harder or easier test set moves every size
    slope = rng.normal(0, 0.05, size=(300, 1))  # ... and changes how much the data helps
    draws = values + shift + slope * (b * sizes ** (-c))
    units = bootstrap_saturation(sizes, values, seeds, threshold=t, rng=np.random.default_rng(0), unit_draws=draws)
    assert units.bootstrap == 300 and units.over == "test units and seeds"
    assert units.low < units.point < units.high
    with pytest.raises(ValueError, match="one column per point"):
        bootstrap_saturation(sizes, values, seeds, unit_draws=draws[:, :3])


def test_a_run_another_process_is_making_is_left_out_not_made_twice(tmp_path):
    from filelock import FileLock

    from leantune.curves import learning_curve
    from leantune.curves.runner import RUN_LOCK, run_dir

    folder = write_attribute_folder(tmp_path / "data")
    out = tmp_path / "curve"
    cfg = _tiny_config(folder, sizes=(0, 2, 4), seeds=2)
    busy = run_dir(out, 4, 1)
    busy.mkdir(parents=True)
    other = FileLock(str(busy / RUN_LOCK))  # another process training size 4, seed 1
    other.acquire()
    logs: list[str] = []
    try:
        first = learning_curve(cfg, out, log=logs.append)
    finally:
        other.release()
    assert (first.run.trained, first.run.cached) == (4, 0) and not (busy / "result.json").exists()
    assert any("size 4 seed 1: another process is making it" in line for line in logs)
    assert sorted((r["size"], r["seed"]) for r in first.run.rows if r["seed"] is not None) == [(2, 0), (2, 1), (4, 0)]
    # Once it lets go (finished, or died: the OS lock goes with the process), the next call makes it.
    second = learning_curve(cfg, out, log=logs.append)
    assert (second.run.trained, second.run.cached) == (1, 4) and (busy / "result.json").exists()


def test_each_size_gets_an_interval_over_test_units_for_its_seed_mean():
    from leantune.curves.analysis import analyse, describe

    rows = [{"size": 0, "seed": None, "metrics": {"f1": 0.1}}, {"size": 10, "seed": 0, "metrics": {"f1": 0.5}},
            {"size": 20, "seed": 0, "metrics": {"f1": 0.7}}, {"size": 10, "seed": 1, "metrics": {"f1": 0.6}}]
    e = np.linspace(-0.1, 0.1, 201)
    # Columns follow the trained rows' order: size 10's two seeds move in opposite directions, so
    # their mean does not move at all; size 20's one run spreads evenly over ±0.1.
    draws = np.stack([0.5 + e, 0.7 + e, 0.6 - e], axis=1)
    a = analyse(rows, "f1", bootstrap=50, unit_draws=draws)
    assert (a.by_size[10]["ci_low"], a.by_size[10]["ci_high"]) == pytest.approx((0.55, 0.55))
    assert (a.by_size[20]["ci_low"], a.by_size[20]["ci_high"]) == pytest.approx((0.7 - 0.095, 0.7 + 0.095))
    assert "ci_low" not in a.by_size[0] and "95% CI over test units [0.6050, 0.7950]" in "\n".join(describe(a))
    assert "ci_low" not in analyse(rows, "f1", bootstrap=50).by_size[20]  # no per-unit results: no interval


def test_one_trained_size_gets_no_fit_and_no_saturation_point():
    from leantune.curves.analysis import analyse, describe

    rows = [{"size": 0, "seed": None, "metrics": {"f1": 0.1}}, {"size": 200, "seed": 0, "metrics": {"f1": 0.55}},
            {"size": 200, "seed": 1, "metrics": {"f1": 0.53}}]
    a = analyse(rows, "f1", bootstrap=20)
    assert a.fit is None and a.saturation is None and a.by_size[200]["n"] == 2
    text = "\n".join(describe(a))
    assert "no fit and no saturation point" in text and "n* =" not in text
    assert analyse(rows + [{"size": 400, "seed": 0, "metrics": {"f1": 0.6}}], "f1", bootstrap=20).saturation is not None
    nan = analyse(rows + [{"size": 400, "seed": 0, "metrics": {"f1": float("nan")}}], "f1", bootstrap=20)  # 400 has no value to fit
    assert nan.fit is None and nan.saturation is None and "one trained size (200)" in nan.note
    none = analyse([{"size": 200, "seed": 0, "metrics": {"f1": float("nan")}}], "f1", bootstrap=20)
    assert none.fit is None and "no trained run has a finite f1" in none.note


def test_curve_saturation_interval_resamples_the_per_question_results(tmp_path):
    from leantune.curves import learning_curve
    from leantune.curves.analysis import describe

    folder = write_attribute_folder(tmp_path / "data")
    cfg = _tiny_config(folder, seeds=1, sizes=(0, 2, 3, 4))
    result = learning_curve(cfg, tmp_path / "curve", log=lambda line: None)
    sat = result.analysis.saturation
    assert sat["over"] == "test units and seeds" and sat["bootstrap"] == cfg.bootstrap
    assert "resamples of test units and seeds" in "\n".join(describe(result.analysis))
    assert "degenerate" not in "\n".join(result.lines)
    for size in (2, 3, 4):  # one seed each: its interval over the test units holds its value (the tiny model's F1 may be 0)
        s = result.analysis.by_size[size]
        assert s["ci_low"] <= s["mean"] <= s["ci_high"]
    # A run without per-question results (evaluated before they were written) leaves the seeds alone, and says so.
    (tmp_path / "curve" / "runs" / "size00003-seed0" / "per_unit.jsonl").unlink()
    again = learning_curve(cfg, tmp_path / "curve", log=lambda line: None, cached_only=True)
    assert again.analysis.saturation["over"] == "seeds" and "ci_low" not in again.analysis.by_size[4]
    assert "over seeds only (no per_unit.jsonl in size00003-seed0)" in again.analysis.note


def test_results_json_keeps_unreached_saturation_as_a_string(tmp_path):
    """A curve without saturation has n* = inf, which JSON cannot hold: results.json writes it as the
    string "inf" (a strict JSON reader still loads the file) and the CSV is untouched."""
    from leantune.curves.analysis import CurveAnalysis, write_table

    rows = [{"size": 0, "seed": None, "status": "zero-shot", "metrics": {"f1": 0.1}},
            {"size": 10, "seed": 0, "status": "finished", "metrics": {"f1": float("nan")}}]
    analysis = CurveAnalysis("f1", 0.1, {10: {"mean": 0.2, "std": 0.0, "min": 0.2, "max": 0.2, "n": 1}}, None,
                             {"n_star": math.inf, "interval": [1000.0, math.inf]}, {10: {"measured": 0.1, "fitted": None}})
    _, json_path = write_table(tmp_path, rows, analysis, {"model": "tiny"})
    text = json_path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data["analysis"]["saturation"] == {"n_star": "inf", "interval": [1000.0, "inf"]}
    assert data["analysis"]["by_size"]["10"]["mean"] == 0.2
    assert data["runs"][1]["f1"] == "nan"


def test_machines_names_where_a_curves_runs_ran_and_counts_the_unrecorded_ones():
    from leantune.curves.analysis import machines, table_rows

    rows = [{"size": 0, "seed": None, "metrics": {}, "machine": "CPU A", "threads": 2},
            {"size": 4, "seed": 0, "metrics": {}, "machine": "CPU A", "threads": 2},
            {"size": 4, "seed": 1, "metrics": {}, "machine": "CPU B", "threads": 1},
            {"size": 8, "seed": 0, "metrics": {}}]
    assert machines(rows) == "CPU A, 2 threads (2 runs); CPU B, 1 thread (1 run); 1 run made before runs recorded their machine"
    assert [(r["machine"], r["threads"]) for r in table_rows(rows, [])] == [("CPU A", 2), ("CPU A", 2), ("CPU B", 1), ("", "")]
