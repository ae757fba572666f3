"""Per-attribute paired comparison (`leantune compare --by attribute`)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from leantune.errors import LeantuneError, ParameterError
from leantune.evaluation.compare import compare
from leantune.evaluation.compare_groups import compare_by_group, read_grouped_comparison, unit_group
from leantune.evaluation.units import write_per_unit
from .test_compare import attr_rows, ev, rec_rows

OUTCOMES = np.array(["NN", "NV", "VN", "VC", "VW"])


def three_attributes(n_products=40, seed=0):
    """Baseline and method rows over products with attributes a0 (every product), a1 (every product)
    and a2 (every other product): the method answers right every a0 question the baseline gets
    wrong, and is the baseline elsewhere."""
    rng = np.random.default_rng(seed)
    base, meth = {}, {}
    for i in range(n_products):
        outs = list(rng.choice(OUTCOMES, size=3 if i % 2 == 0 else 2))
        base[f"p{i}"] = outs
        meth[f"p{i}"] = ["VC" if outs[0] in ("VW", "VN", "NV") else outs[0], *outs[1:]]
    return attr_rows(base), attr_rows(meth)


def bh(p):
    """Benjamini-Hochberg adjusted p-values, written out: q_(i) = min over j >= i of p_(j)·m/j, at most 1."""
    p = np.asarray(p, dtype=float)
    order = np.argsort(p)
    scaled = p[order] * len(p) / np.arange(1, len(p) + 1)
    q = np.minimum.accumulate(scaled[::-1])[::-1].clip(max=1.0)
    out = np.empty_like(q)
    out[order] = q
    return out


def test_each_attribute_is_compare_on_its_questions_alone():
    base, meth = three_attributes()
    g = compare_by_group([ev("random", base), ev("m", meth)], by="attribute", metric="f1", n_boot=400, n_perm=400)
    assert list(g.groups) == ["a0", "a1", "a2"]  # largest first: a2 is asked of half the products
    assert [g.groups[a].n_units for a in g.groups] == [40, 40, 20]
    for attribute, c in g.groups.items():
        cut = [ev(n, [r for r in rows if r["unit"].endswith(f"::{attribute}")]) for n, rows in (("random", base), ("m", meth))]
        alone = compare(cut, metric="f1", n_boot=400, n_perm=400)
        r, a = c.row("m"), alone.row("m")
        assert (r.diff, r.ci_low, r.ci_high, r.p_value, r.mde_paired) == (a.diff, a.ci_low, a.ci_high, a.p_value, a.mde_paired)
        assert c.n_clusters == c.n_units  # one question of an attribute per product: the question is the unit
    # Only a0 changed: the other attributes show no difference at all.
    assert g.groups["a0"].row("m").diff > 0.2 and g.groups["a0"].row("m").ci_low > 0
    for attribute in ("a1", "a2"):
        r = g.groups[attribute].row("m")
        assert r.diff == 0.0 and r.p_value == 1.0
    # The overall row is the plain comparison over all questions, resampling whole products.
    whole = compare([ev("random", base), ev("m", meth)], metric="f1", n_boot=400, n_perm=400).row("m")
    assert g.overall.row("m").diff == whole.diff and g.overall.n_clusters == 40
    # q: Benjamini-Hochberg over every attribute's test.
    ps = [g.groups[a].row("m").p_value for a in g.groups]
    assert [g.q_values[a]["m"] for a in g.groups] == pytest.approx(bh(ps))
    assert g.significant("m") == ["a0"]
    md = g.to_markdown()
    valued = {a: sum(r["valued"] for r in base if r["unit"].endswith(f"::{a}")) for a in ("a0", "a1", "a2")}
    assert g.valued == valued  # the gold side: the same for every run
    assert "### m vs random, per attribute" in md and f"| **all attributes** | 100 | {sum(valued.values())} |" in md
    assert f"| a2 | 20 | {valued['a2']} | " in md
    assert "1 of 3 attributes differ at a false-discovery rate of 0.05" in md


def test_seeded_runs_get_a_units_plus_seeds_interval_per_attribute():
    """With 2+ seeds a side, each attribute's row also carries the units + seeds interval that compare
    computes on its questions; a0's gain is the same in every seed, so it outlasts the seed spread."""
    runs = []
    for seed in (0, 1, 2):
        base, meth = three_attributes(seed=seed)
        runs += [ev("random", base, seed=seed), ev("m", meth, seed=seed)]
    g = compare_by_group(runs, metric="f1", n_boot=300, n_perm=300)
    md = g.to_markdown()
    assert "| paired MDE | 95% CI units + seeds |" in md
    r = g.groups["a0"].row("m")
    assert r.ci_total_low is not None and r.ci_total_low > 0
    assert f"[{r.ci_total_low:+.4f}, {r.ci_total_high:+.4f}] |" in md
    assert g.significant("m") == ["a0"] and g.beyond_seeds("m", ["a0"]) == ["a0"]
    # Read after selection: 1 of the 3 tests flagged, so the interval is drawn at 1 - 0.05/3, wider than
    # the column's 95% one and around the same difference.
    assert g.selection_alpha() == (pytest.approx(0.05 / 3), 1, 3)
    assert g.seeds_interval("m", "a0", adjusted=False) == (r.ci_total_low, r.ci_total_high)
    low, high = g.seeds_interval("m", "a0")
    assert low < r.ci_total_low and high > r.ci_total_high
    assert (low + high) / 2 == pytest.approx(r.diff) and (r.ci_total_low + r.ci_total_high) / 2 == pytest.approx(r.diff)
    assert (f"Of those, 1 keeps a units + seeds interval clear of zero (a0) when the interval is drawn at the level their "
            f"selection calls for, 98.33% (false-coverage-rate adjusted: 1 − α·1/3, 1 of the table's 3 tests flagged): "
            f"a0 [{low:+.4f}, {high:+.4f}].") in md
    assert "The column is not adjusted for the 3 attributes" in md
    # A difference that clears zero at 95% but not at the adjusted level is not counted.
    from dataclasses import replace

    h95 = (r.ci_total_high - r.ci_total_low) / 2
    d = 1.1 * h95  # the 95% interval just clears zero; the adjusted one, about as wide as above, cannot
    shifted = replace(g, groups={**g.groups, "a0": replace(g.groups["a0"], rows=[
        replace(row, diff=d, ci_total_low=d - h95, ci_total_high=d + h95) if row.name == "m" else row
        for row in g.groups["a0"].rows])})
    assert shifted.beyond_seeds("m", ["a0"], adjusted=False) == ["a0"] and shifted.beyond_seeds("m", ["a0"]) == []
    # One seed a side: no seed spread, so neither the column nor the sentence.
    one = compare_by_group(runs[:2], metric="f1", n_boot=200, n_perm=200)
    assert one.beyond_seeds("m") == [] and "units + seeds" not in one.to_markdown()


def test_forest_plots_draw_the_units_plus_seeds_bar(tmp_path, monkeypatch):
    """Both forest plots draw a row's units + seeds interval (exactly its ends) when it has one, and none without."""
    import matplotlib.axes

    from leantune.evaluation.forest import SEEDS_STYLE, forest_plot, grouped_forest_plot

    drawn = []  # the seeds bars only (errorbar draws its own bars with hlines too)
    real = matplotlib.axes.Axes.hlines

    def hlines(self, y, lo, hi, **kw):
        if kw.get("color") == SEEDS_STYLE["color"]:
            drawn.append((y, lo, hi))
        return real(self, y, lo, hi, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "hlines", hlines)
    runs = []
    for seed in (0, 1):
        base, meth = three_attributes(seed=seed)
        runs += [ev("random", base, seed=seed), ev("m", meth, seed=seed)]
    g = compare_by_group(runs, metric="f1", n_boot=200, n_perm=200)
    forest_plot(g.overall, tmp_path / "f.png")
    r = g.overall.row("m")
    assert drawn == [(0, r.ci_total_low, r.ci_total_high)]
    drawn.clear()
    grouped_forest_plot(g, tmp_path / "g.png")
    assert sorted(d[1:] for d in drawn) == sorted((c.row("m").ci_total_low, c.row("m").ci_total_high) for c in g.groups.values())
    drawn.clear()
    one = compare_by_group(runs[:2], metric="f1", n_boot=200, n_perm=200)
    forest_plot(one.overall, tmp_path / "f1.png")
    grouped_forest_plot(one, tmp_path / "g1.png")
    assert drawn == []


def test_q_values_span_every_method_and_attribute(tmp_path):
    base, meth = three_attributes(seed=1)
    worse = [dict(r, outcome="VW", correct=0) if r["unit"].endswith("::a1") and r["outcome"] == "VC" else r for r in base]
    g = compare_by_group([ev("random", base), ev("m", meth), ev("w", worse)], metric="f1", n_boot=300, n_perm=300)
    keys = [(a, m) for a in g.groups for m in ("m", "w")]
    assert sum(len(v) for v in g.q_values.values()) == 6
    assert [g.q_values[a][m] for a, m in keys] == pytest.approx(bh([g.groups[a].row(m).p_value for a, m in keys]))
    assert g.methods == ["m", "w"]
    assert g.write(tmp_path)["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # one panel per method


def test_written_grouped_comparison_reads_back(tmp_path):
    base, meth = three_attributes()
    g = compare_by_group([ev("random", base), ev("m", meth)], metric="f1", n_boot=200, n_perm=200)
    files = g.write(tmp_path)
    assert [p.name for p in files.values()] == ["by-attribute.md", "by-attribute.json", "by-attribute.png"]
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = read_grouped_comparison(tmp_path)
    assert back.to_dict() == json.loads(files["json"].read_text()) == g.to_dict()
    assert back.to_markdown() == g.to_markdown()


def test_units_without_an_attribute_are_refused():
    assert unit_group("p1::Brand", "attribute") == "Brand" and unit_group("user-7", "attribute") is None
    with pytest.raises(LeantuneError, match=r"unit '0' has no attribute"):
        compare_by_group([ev("random", rec_rows([0, 1])), ev("m", rec_rows([1, 1]))], metric="recall@20")
    with pytest.raises(LeantuneError, match="by 'product': choose one of attribute"):
        compare_by_group([ev("random", attr_rows({"p": ["VC"]})), ev("m", attr_rows({"p": ["VW"]}))], by="product")


def test_cli_compare_by_attribute(tmp_path):
    from typer.testing import CliRunner

    import leantune.cli  # noqa: F401  (registers the commands)
    from leantune.cli.app import app

    base, meth = three_attributes()
    write_per_unit(tmp_path / "a", base)
    write_per_unit(tmp_path / "b", meth)
    out = tmp_path / "cmp"
    args = ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--name", "a", "--name", "b", "--baseline", "a",
            "--metric", "f1", "--boot", "200", "--perm", "200", "--out", str(out)]
    result = CliRunner().invoke(app, args + ["--by", "attribute"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "### b vs a, per attribute" in result.output and "| b | 1 |" in result.output
    for name in ("comparison.md", "comparison.json", "forest.png", "by-attribute.md", "by-attribute.json", "by-attribute.png"):
        assert (out / name).stat().st_size > 100, name
    bad = CliRunner().invoke(app, args + ["--by", "category"])
    assert isinstance(bad.exception, ParameterError) and bad.exception.as_flag() == "--by 'category': choose one of attribute"
