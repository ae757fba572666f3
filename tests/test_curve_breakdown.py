"""Per-attribute learning curves with intervals over the test products (``leantune.curves.breakdown``)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from leantune.curves import breakdown_curves
from leantune.curves.breakdown import read_breakdown_curves
from leantune.curves.plots import plot_breakdown_bands
from leantune.curves.runner import run_dir
from leantune.evaluation.units import write_per_unit
from .test_compare import attr_rows, direct_micro

OUTCOMES = np.array(["NN", "NV", "VN", "VC", "VW"])


def _curve_folder(out, n_products=40):
    """A curve folder of per-question rows: zero-shot, then sizes 10 and 20 with seeds 0 and 1, over
    attributes a0 and a1 (every product) and a2 (every other product). a0 is always wrong at zero-shot,
    right for a third of the products at size 10 and for every product at size 20; a1 and a2 draw
    their outcomes at random in every run."""
    rows, by_run = [], {}
    rng = np.random.default_rng(3)
    for size, seed in [(0, None), (10, 0), (10, 1), (20, 0), (20, 1)]:
        outcomes = {}
        for i in range(n_products):
            a0 = "VC" if size == 20 or (size == 10 and i % 3 == 0) else "VW"
            outcomes[f"p{i}"] = [a0, *rng.choice(OUTCOMES, size=2 if i % 2 == 0 else 1)]
        units = attr_rows(outcomes)
        write_per_unit(run_dir(out, size, seed), units)
        by_run[(size, seed)] = units
        rows.append({"size": size, "seed": seed, "status": "finished", "metrics": {"f1": direct_micro(units)["f1"]}})
    return rows, by_run


def _attribute_f1(units, attribute):
    return direct_micro([u for u in units if u["unit"].endswith(f"::{attribute}")])["f1"]


def test_each_attribute_gets_its_curve_with_intervals_and_its_last_step(tmp_path):
    rows, by_run = _curve_folder(tmp_path)
    curves, why = breakdown_curves(tmp_path, rows, "f1", n_boot=400)
    assert why == "" and curves.n_groups == 3
    assert [g.group for g in curves.groups] == ["a0", "a1", "a2"]  # most test questions first
    assert [g.units for g in curves.groups] == [40, 40, 20]
    assert curves.groups[2].valued == sum(u["valued"] for u in by_run[(0, None)] if u["unit"].endswith("::a2"))
    for g in curves.groups:
        assert [(p.size, p.seeds) for p in g.points] == [(0, 1), (10, 2), (20, 2)]
        for p in g.points:  # each size: its seeds' F1 over this attribute's questions, averaged
            runs = [units for (size, _), units in by_run.items() if size == p.size]
            assert p.value == pytest.approx(np.mean([_attribute_f1(u, g.group) for u in runs]))
            assert p.ci_low <= p.value + 1e-9 and p.value - 1e-9 <= p.ci_high
        step = g.last_step
        assert (step.against, step.size) == (10, 20) and step.diff == pytest.approx(g.points[2].value - g.points[1].value)
    a0 = curves.groups[0]
    assert a0.points[0].value == 0.0 and a0.points[2].value == 1.0 and a0.points[2].ci_low == 1.0  # no spread to resample
    assert a0.last_step.ci_low > 0 and curves.gaining() == ["a0"]
    # With runs that flip at random, a1's last step holds zero.
    assert curves.groups[1].last_step.ci_low < 0 < curves.groups[1].last_step.ci_high

    md = curves.to_markdown()
    assert "| attribute | test questions (with a value) | zero-shot | 10 | 20 | last step 10 → 20 [95% CI] |" in md
    assert f"| a0 | 40 ({a0.valued}) | 0.000 [0.00, 0.00] |" in md and "| **+" in md
    # The steps picked out by their 95% interval are redrawn at the false-coverage-rate level α·R/m.
    flagged = curves.flagged()
    assert "a0" in flagged and curves.adj_alpha == pytest.approx(0.05 * len(flagged) / 3)
    assert curves.adj_boot >= 100 / curves.adj_alpha  # 50 resamples beyond each adjusted bound
    for g in curves.groups:
        s = g.last_step
        if g.group in flagged:  # wider around the same step
            assert s.adj_low <= s.ci_low and s.ci_high <= s.adj_high
        else:
            assert s.adj_low is None and s.adj_high is None
    assert curves.groups[0].last_step.adj_low > 0 and curves.gaining() == ["a0"]
    level = f"{100 * (1 - curves.adj_alpha):.2f}%"
    assert f"| last step 10 → 20 [95% CI] | flagged step at {level} |" in md
    assert "1 of 3 attributes gain with an interval above zero (a0)." in md and "Bold: a last step clear of zero at that level." in md
    assert f"redrawn at the false-coverage-rate adjusted level 1 − α·R/m = {level}" in md and f"; {curves.adj_boot:,} resamples)" in md
    assert "not adjusted for the 3 attributes" in md
    assert curves.summary() == ("per attribute: the last step (10 → 20) has an interval above zero for 1 of the 3 attributes "
                                f"with the most test questions (a0), 1 of them at the selection-adjusted level {level} (a0); "
                                "each size with its interval in per_attribute.md")
    files = curves.write(tmp_path)
    assert json.loads(files["breakdown_json"].read_text())["groups"][0]["group"] == "a0"
    assert read_breakdown_curves(tmp_path) == curves  # saved and read back whole
    assert files["breakdown_md"].read_text().startswith("# Per-attribute learning curves (f1)")
    assert plot_breakdown_bands(curves, tmp_path / "per_attribute.png").stat().st_size > 0

    top = breakdown_curves(tmp_path, rows, "f1", top=2, n_boot=50)[0]
    assert [g.group for g in top.groups] == ["a0", "a1"] and top.n_groups == 3
    assert "the 2 attributes with the most test questions, of 3" in top.to_markdown()


def test_breakdown_leaves_out_runs_without_rows_and_says_why_it_has_none(tmp_path):
    rows, _ = _curve_folder(tmp_path)
    (run_dir(tmp_path, 20, 1) / "per_unit.jsonl").unlink()
    curves, _ = breakdown_curves(tmp_path, rows, "f1", n_boot=50)
    assert curves.left_out == [run_dir(tmp_path, 20, 1).name] and curves.groups[0].points[-1].seeds == 1
    assert "Left out (no per-unit results): size00020-seed1." in curves.to_markdown()
    assert breakdown_curves(tmp_path / "empty", rows, "f1") == (None, "no run has per-unit results")
    # Units without an attribute (recommendation users, say) have no per-attribute curve.
    write_per_unit(run_dir(tmp_path / "users", 0, None), [{"unit": "u1", "cluster": "u1", "recall@20": 0.0}])
    none, why = breakdown_curves(tmp_path / "users", rows[:1], "recall@20")
    assert none is None and "has no attribute" in why
    # Runs evaluated on other questions cannot be resampled together: no curves, and the reason.
    write_per_unit(run_dir(tmp_path, 10, 0), attr_rows({"q1": ["VC", "VW"]}))
    none, why = breakdown_curves(tmp_path, rows, "f1", n_boot=50)
    assert none is None and why


def test_a_step_clear_of_zero_only_before_the_selection_adjustment_does_not_count_as_gaining(tmp_path):
    rows, _ = _curve_folder(tmp_path)
    curves, _ = breakdown_curves(tmp_path, rows, "f1", n_boot=400)
    a1 = curves.groups[1].last_step  # as if a1's 95% interval had cleared zero, but not its adjusted one
    a1.ci_low, a1.ci_high, a1.adj_low, a1.adj_high = 0.01, 0.30, -0.02, 0.33
    curves.adj_alpha = 0.05 * 2 / 3
    assert curves.gaining(adjusted=False) == ["a0", "a1"] and curves.gaining() == ["a0"]
    md = curves.to_markdown()
    assert "| a1 | 40 (" in md and f"{a1.diff:+.3f} [+0.010, +0.300] | [-0.020, +0.330] |" in md  # not bold
    assert "2 of 3 attributes gain with an interval above zero (a0, a1)" in md and ": 1 still gain (a0)." in md
    assert "level 1 − α·R/m = 96.67% (Benjamini & Yekutieli 2005; R = 2 of m = 3;" in md
    assert "2 of the 3 attributes with the most test questions (a0, a1), 1 of them at the selection-adjusted" in curves.summary()
    # Curves saved before the adjustment existed read back with the unadjusted reading.
    old = curves.to_dict()
    del old["adj_alpha"]
    for g in old["groups"]:
        del g["last_step"]["adj_low"], g["last_step"]["adj_high"]
    from leantune.curves.breakdown import BreakdownCurves
    assert BreakdownCurves.from_dict(old).gaining() == ["a0", "a1"]
