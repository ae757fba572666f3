"""The HPO benchmark's bookkeeping (benchmarks/bench_tuning.py): resumable cells, each pick against the
default recipe on the same test units."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_tuning as bench  # noqa: E402
from leantune.evaluation.units import attribute_unit_rows, write_per_unit  # noqa: E402


def _rows(correct: list[bool]) -> list[dict]:
    """Judged questions of 4 products x 3 attributes (gold always valued): correct ones are VC, others VW."""
    return attribute_unit_rows([{"product_id": f"p{i // 3}", "attribute": f"a{i % 3}", "outcome": "VC" if c else "VW",
                                 "correct": c, "gold": "x"} for i, c in enumerate(correct)])


def test_each_pick_is_compared_with_the_default_recipe_on_the_same_units(tmp_path):
    base = [True, False, False] * 4
    better = [True, True, False] * 4  # 8 of 12 right against 4 of 12
    results = {}
    for seed in (0, 1):
        write_per_unit(tmp_path / f"s{seed}/early/base/test", _rows(base))
        write_per_unit(tmp_path / f"s{seed}/early/best/test", _rows(better))
        write_per_unit(tmp_path / f"s{seed}/tpe/best/test", _rows(base))
        results[str(seed)] = {"early_bo": {"best_rows": f"s{seed}/early/best/test", "baseline_rows": f"s{seed}/early/base/test"},
                              "full_tpe": {"best_rows": f"s{seed}/tpe/best/test"}}
    args = argparse.Namespace(runner="finetune", objective="metric", root=tmp_path)
    out = bench.unit_comparison(results, args, "accuracy")
    assert out["early_bo"]["diff"] == pytest.approx(4 / 12) and out["early_bo"]["low"] > 0
    assert out["full_tpe"]["diff"] == 0 and out["early_bo"]["n_seeds"] == 2
    # Paired by seed: both seeds gain 4/12, so the seed part adds nothing to the units' interval.
    assert out["early_bo"]["per_seed"] == pytest.approx({"0": 4 / 12, "1": 4 / 12})
    assert out["early_bo"]["pair_low"] == pytest.approx(4 / 12 - 1.959964 * (out["early_bo"]["pair_mde"] / 2.801585), rel=1e-4)
    assert 0 < out["early_bo"]["pair_low"] < 4 / 12 < out["early_bo"]["pair_high"]
    table = bench.units_table(out, 100)  # both tuning benchmarks print these rows with it
    assert table[2].startswith("| early_bo | 2 | +33.33 | +33.3 / +33.3 | [") and table[3].startswith("| full_tpe | 2 | +0.00 |")
    results["1"]["full_tpe"]["best_rows"] = None  # a seed without a pick: that strategy has no row
    assert set(bench.unit_comparison(results, args, "accuracy")) == {"early_bo"}
    assert bench.unit_comparison(results, argparse.Namespace(runner="synthetic", objective="metric", root=tmp_path), "f1") is None


def test_finished_cells_are_reused_and_not_rerun(tmp_path, monkeypatch):
    from leantune.errors import LeantuneError

    calls = []
    monkeypatch.setattr(bench, "run_optuna", lambda *a, **k: calls.append(a[6]) or {"compute": 5, "best_test": 0.5})
    args = argparse.Namespace(runner="synthetic", trials=30, space=None)
    first = bench.run_cell(None, None, args, 0, tmp_path, "median", 40)
    again = bench.run_cell(None, None, args, 0, tmp_path, "median", 40)
    assert first == again == {"compute": 5, "best_test": 0.5} and calls == ["median"]
    assert (tmp_path / "cells" / "s0-median.json").is_file()
    with pytest.raises(LeantuneError, match="made with other settings: trials=30 there, 12 now"):
        bench.run_cell(None, None, argparse.Namespace(runner="synthetic", trials=12, space=None), 0, tmp_path, "median", 40)


class _Counting:
    """A synthetic runner that counts its trainings and evaluations."""

    def __init__(self, **kw):
        from leantune.tuning import SyntheticRunner

        self.inner, self.calls = SyntheticRunner(**kw), []
        self.metric = self.inner.metric

    def run(self, params, out_dir, fraction, test=False):
        self.calls.append((Path(out_dir).name, fraction, test))
        return self.inner.run(params, out_dir, fraction, test=test)


@pytest.mark.parametrize("strategy", ["full_tpe", "sha"])
def test_an_interrupted_cell_replays_its_study_without_training_finished_trials_again(tmp_path, strategy):
    """A cell stopped before its result was written replays its seeded study from what each trial
    folder measured (trial_results.json): the same result, and no finished trial trained again."""
    from leantune.tuning import load_space

    args = argparse.Namespace(runner="synthetic", trials=10, space=None, root=tmp_path, equal_compute=True)
    space = load_space(None)
    first = _Counting(train_size=64, noise=0.01)
    whole = bench.run_cell(first, space, args, 0, tmp_path / "a", strategy, 120)
    # The same cell, "interrupted": its trial folders are there, its result file is not.
    (tmp_path / "a" / "cells" / f"s0-{strategy}.json").unlink()
    again = _Counting(train_size=64, noise=0.01)
    resumed = bench.run_cell(again, space, args, 0, tmp_path / "a", strategy, 120)
    assert again.calls == [] and first.calls
    for key in ("compute", "best_test", "best_valid", "trials", "best_params"):
        assert resumed[key] == whole[key], key
    # Its wall time covers the earlier sitting: what the results read back took when they were measured.
    from leantune.io import read_json, write_json

    recorded = sum(r.get("wall_s") or 0.0 for f in (tmp_path / "a" / f"s0/{strategy}").glob("t*/" + bench.TRIAL_RESULTS)
                   for r in read_json(f)["results"].values())
    assert recorded > 0 and resumed["wall_s"] >= recorded
    # A trial folder made for other hyperparameters (the sampler went elsewhere) is not reused.
    folder = tmp_path / "a" / f"s0/{strategy}" / "t0001"
    stored = read_json(folder / bench.TRIAL_RESULTS)
    stored["params"] = {**stored["params"], "lr": 0.5}
    write_json(folder / bench.TRIAL_RESULTS, stored)
    (tmp_path / "a" / "cells" / f"s0-{strategy}.json").unlink()
    third = _Counting(train_size=64, noise=0.01)
    assert bench.run_cell(third, space, args, 0, tmp_path / "a", strategy, 120)["compute"] == whole["compute"]
    assert {c[0] for c in third.calls} == {"t0001"}


def test_full_tpe_is_capped_at_early_bos_compute_only_with_equal_compute(tmp_path):
    from leantune.tuning import SyntheticRunner, load_space

    runner, space = SyntheticRunner(train_size=64, noise=0.01), load_space(None)
    capped = bench.run_cell(runner, space, argparse.Namespace(runner="synthetic", trials=10, space=None, root=tmp_path,
                                                              equal_compute=True), 0, tmp_path / "c", "full_tpe", 60)
    free = bench.run_cell(runner, space, argparse.Namespace(runner="synthetic", trials=10, space=None, root=tmp_path,
                                                            equal_compute=False), 0, tmp_path / "f", "full_tpe", 60)
    assert free["trials"] == 10 and capped["trials"] < 10
    assert capped["compute"] >= 60 > capped["curve"][-2][0]  # it stops once the budget is spent, not before
    assert capped["best_params"] and capped["best_trial"] is not None


def test_early_bo_without_validate_all_counts_only_what_it_continued(tmp_path):
    from leantune.tuning import SyntheticRunner, load_space

    runner, space = SyntheticRunner(train_size=64, noise=0.01), load_space(None)
    common = dict(runner="synthetic", trials=10, space=None, root=tmp_path, early_fraction=0.2, top_k=3)
    every = bench.run_cell(runner, space, argparse.Namespace(**common, validate_all=True), 0, tmp_path / "v", "early_bo", None)
    own = bench.run_cell(runner, space, argparse.Namespace(**common, validate_all=False), 0, tmp_path / "o", "early_bo", None)
    assert own["agreement"] is None and own["validate_all_compute"] is None and every["agreement"] is not None
    # The same proposals and early scores, so the same continued trials, pick and counted compute.
    assert own["compute"] == every["compute"] and own["best_test"] == every["best_test"]
    assert own["continued"] == every["continued"] and every["validate_all_compute"] > every["compute"]


def test_early_bo_resumed_in_place_counts_the_earlier_sittings_runs_in_its_wall_time(tmp_path):
    """Early BO's study resumes in place: a second sitting's wall time adds what the runs already in the
    study took when they were measured (before, it counted only the last sitting)."""
    from leantune.tuning import SyntheticRunner, TuneConfig, load_records, load_space

    import dataclasses

    class Slow(SyntheticRunner):  # each run "took" 100 s, so the earlier sitting's time cannot hide in overhead
        def run(self, *a, **kw):
            return dataclasses.replace(super().run(*a, **kw), wall_s=100.0)

    args = argparse.Namespace(runner="synthetic", trials=6, early_fraction=0.2, top_k=2, root=tmp_path)
    runner, space = Slow(train_size=64, noise=0.01), load_space(None)
    first = bench.run_early_bo(runner, space, args, 0, tmp_path / "w")
    rec = load_records("early-0", f"sqlite:///{tmp_path / 'w' / 'early.db'}")
    recorded = sum(t.early_wall_s + t.final_wall_s for t in rec.trials)
    assert recorded >= 100 * (len(rec.trials) + 2) and all(t.early_wall_s == 100 for t in rec.trials)
    assert bench._recorded_wall_s(TuneConfig(study="early-0", storage=f"sqlite:///{tmp_path / 'w' / 'early.db'}")) == recorded
    again = bench.run_early_bo(runner, space, args, 0, tmp_path / "w")  # nothing left to run
    assert again["wall_s"] >= recorded and again["best_trial"] == first["best_trial"]
