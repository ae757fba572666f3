"""Two learning curves size by size (``leantune.curves.versus``, ``leantune compare-curves``)."""
from __future__ import annotations

import numpy as np
import pytest

from leantune.curves import compare_curves, read_curve_gap
from leantune.curves.runner import run_dir
from leantune.errors import LeantuneError
from leantune.evaluation.compare import compare, load_evaluation
from leantune.evaluation.units import write_per_unit
from .test_compare import attr_rows

OUTCOMES = np.array(["NN", "NV", "VN", "VC", "VW"])


def _curve(out, runs, right, n_products=40, seed=0):
    """A curve folder of per-question rows, two attributes a product: for each (size, seed) of ``runs``
    attribute a0 is right for the products ``right(size, i)`` picks and wrong otherwise; a1 is drawn at random."""
    rng = np.random.default_rng(seed)
    for size, s in runs:
        outcomes = {f"p{i}": ["VC" if right(size, i) else "VW", rng.choice(OUTCOMES)] for i in range(n_products)}
        write_per_unit(run_dir(out, size, s), attr_rows(outcomes))


def _two_curves(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    # A learns slowly; B is right for every product from size 20 on, like A at size 10 below it.
    _curve(a, [(0, None), (10, 0), (10, 1), (20, 0), (20, 1), (40, 0)], lambda n, i: n >= 20 and i % 4 == 0, seed=1)
    _curve(b, [(0, None), (10, 0), (10, 1), (20, 0), (20, 1), (80, 0)], lambda n, i: n >= 20 or (n == 10 and i % 4 == 0), seed=2)
    return a, b


def test_each_shared_size_is_the_paired_comparison_of_its_runs(tmp_path):
    a, b = _two_curves(tmp_path)
    gap = compare_curves(a, b, "f1", names=("slow", "fast"), n_boot=300)
    assert [g.size for g in gap.gaps] == [0, 10, 20] and gap.only_a == [40] and gap.only_b == [80]
    assert [(g.seeds_a, g.seeds_b) for g in gap.gaps] == [(1, 1), (2, 2), (2, 2)]
    for g in gap.gaps:  # the same numbers `leantune compare` gives at that size
        evs = [load_evaluation(p, name=n) for n, folder in (("slow", a), ("fast", b))
               for p in sorted((folder / "runs").glob(f"size{g.size:05d}*"))]
        c = compare(evs, baseline="slow", metric="f1", n_boot=300, n_perm=300)
        r = c.row("fast")
        assert (g.value_a, g.value_b, g.diff, g.ci_low, g.ci_high, g.p_value) == pytest.approx(
            (c.baseline_value, r.value, r.diff, r.ci_low, r.ci_high, r.p_value))
        assert (g.total_low is None) == (g.size == 0)  # one run a side at zero-shot: no seed spread
    at20 = gap.gaps[2]
    assert at20.diff > 0.3 and at20.clear() and at20.total_low > 0
    assert not gap.gaps[0].clear()  # zero-shot: both always wrong on a0, a1 at random
    md = gap.to_markdown()
    assert "| size | seeds slow / fast | slow | fast | fast − slow | 95% CI (units) | 95% CI (units + seeds) |" in md
    assert f"| 20 | 2 / 2 | {at20.value_a:.3f} | {at20.value_b:.3f} | **{at20.diff:+.3f}** |" in md
    assert "Only slow measured (left out): 40." in md and "Only fast measured (left out): 80." in md
    assert gap.summary().startswith("fast − slow (f1): clear of zero at ") and gap.summary().endswith(f"{at20.diff:+.3f} at 20")
    files = gap.write(tmp_path / "out")
    assert read_curve_gap(tmp_path / "out") == gap and files["png"].stat().st_size > 1000
    assert files["md"].read_text().startswith("# fast against slow, size by size (f1)")


def test_sizes_and_refusals(tmp_path):
    a, b = _two_curves(tmp_path)
    gap = compare_curves(a, b, "f1", names=("slow", "fast"), sizes=[20], n_boot=100)
    assert [g.size for g in gap.gaps] == [20] and gap.only_a == [40]  # sizes both measured but not asked: not "only"
    with pytest.raises(LeantuneError, match="sizes 40: not measured by both curves"):
        compare_curves(a, b, "f1", names=("slow", "fast"), sizes=[20, 40], n_boot=100)
    with pytest.raises(LeantuneError, match="need different names"):
        compare_curves(a, b, "f1", names=("x", "x"))
    with pytest.raises(LeantuneError, match="no runs/ folder"):
        compare_curves(tmp_path / "nope", b, "f1")
    (tmp_path / "empty" / "runs" / "size00010-seed0").mkdir(parents=True)  # a run not yet evaluated
    with pytest.raises(LeantuneError, match="no run with per_unit.jsonl"):
        compare_curves(tmp_path / "empty", b, "f1")
    # A curve evaluated on other test units cannot be paired with this one: the size says which.
    _curve(tmp_path / "other", [(10, 0)], lambda n, i: True, n_products=12)
    with pytest.raises(LeantuneError, match="size 10: "):
        compare_curves(a, tmp_path / "other", "f1", names=("slow", "other"), n_boot=50)


def test_cli_compare_curves(tmp_path):
    from typer.testing import CliRunner

    import leantune.cli  # noqa: F401  (registers the commands)
    from leantune.cli.app import app

    a, b = _two_curves(tmp_path)
    out = tmp_path / "cmp"
    args = ["compare-curves", str(a), str(b), "--name", "slow", "--name", "fast", "--metric", "f1", "--boot", "200", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "| 20 | 2 / 2 |" in result.output and "wrote " in result.output
    assert f"Reproduce: `leantune compare-curves {a} {b} --name slow --name fast --metric f1 --out {out} --boot 200`" in result.output
    for name in ("curves.md", "curves.json", "curves.png"):
        assert (out / name).stat().st_size > 100, name
    only = CliRunner().invoke(app, args + ["--sizes", "10,20"])
    assert only.exit_code == 0 and "| zero-shot |" not in only.output
    assert f"--metric f1 --sizes 10,20 --out {out} --boot 200`" in only.output  # given options only, in the command's order
    bad = CliRunner().invoke(app, args[:3] + ["--name", "one"])
    assert isinstance(bad.exception, LeantuneError) and "--name given 1 times" in str(bad.exception)
    bad = CliRunner().invoke(app, args + ["--sizes", "ten"])
    assert isinstance(bad.exception, LeantuneError) and "--sizes 'ten'" in str(bad.exception)


def test_recommendation_curves_compare_on_a_per_user_metric(tmp_path):
    rng = np.random.default_rng(0)
    for name, rate in (("a", 0.1), ("b", 0.4)):
        for size, s in [(50, 0), (50, 1)]:
            hits = (rng.random(300) < rate).astype(float)
            write_per_unit(run_dir(tmp_path / name, size, s), [{"unit": f"u{i}", "cluster": f"u{i}", "recall@20": h}
                                                              for i, h in enumerate(hits)])
    gap = compare_curves(tmp_path / "a", tmp_path / "b", "recall@20", names=("random", "effort"), n_boot=300)
    g = gap.gaps[0]
    assert gap.n_units == 300 and g.size == 50 and 0.2 < g.diff < 0.4 and g.clear()
    assert "| 50 | 2 / 2 |" in gap.to_markdown()
