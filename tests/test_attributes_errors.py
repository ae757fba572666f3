"""``leantune attributes errors``: a run's errors by kind and by attribute, with the micro-F1 each costs."""
from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from leantune.errors import LeantuneError, ParameterError
from leantune.tasks.attributes_errors import error_breakdown, error_kind, read_predictions

from .attributes_fixtures import write_attribute_folder


def _row(attribute, outcome, gold=None, predicted=None, pid="p1"):
    return {"product_id": pid, "category": "c", "attribute": attribute, "gold": gold, "predicted": predicted, "outcome": outcome}


ROWS = [
    _row("Brand", "VC", "Sun Bum", "sun bum"),
    _row("Brand", "VW", "Arm & Hammer Spinbrush PRO+", "Arm & Hammer"),  # inside the gold span: boundary
    _row("Brand", "VW", "Yogi", "Yogi Tea"),  # contains the gold span: boundary
    _row("Brand", "VW", "Sunbum", "Sun"),  # shares letters, not words: another value
    _row("Flavor", "VW", "Bourbon Vanilla", "?"),  # nothing left after normalisation: another value
    _row("Flavor", "VN", "Honey"),
    _row("Flavor", "NV", None, "Mint"),
    _row("Flavor", "NN"),
    _row("Flavor", "VC", "Mint", "Mint"),
]


def test_errors_are_split_by_kind_and_each_kind_reports_the_f1_it_costs():
    kinds = [error_kind(r) for r in ROWS]
    assert kinds == [None, "boundary", "boundary", "other value", "other value", "missed", "spurious", None, None]
    b = error_breakdown(ROWS, examples=10)
    # VC 2, VW 4, VN 1, NV 1: precision 2/7, recall 2/7.
    assert b.counts == {"NN": 1, "NV": 1, "VN": 1, "VC": 2, "VW": 4}
    assert b.precision == pytest.approx(2 / 7) and b.recall == pytest.approx(2 / 7) and b.f1 == pytest.approx(2 / 7)
    by = {k["kind"]: k for k in b.kinds}
    assert [k["count"] for k in b.kinds] == [2, 2, 1, 1] and sum(k["share"] for k in b.kinds) == pytest.approx(1)
    # Boundary errors right: VC 4, VW 2 -> precision 4/7, recall 4/7.
    assert by["boundary"]["f1_if_fixed"] == pytest.approx(4 / 7) and by["boundary"]["gain"] == pytest.approx(2 / 7)
    # The missed value right: VC 3, VN 0 -> precision 3/8, recall 3/7.
    p, r = 3 / 8, 3 / 7
    assert by["missed"]["f1_if_fixed"] == pytest.approx(2 * p * r / (p + r))
    # The spurious value right (n/a): NV 0 -> precision 2/6, recall 2/7.
    p, r = 2 / 6, 2 / 7
    assert by["spurious"]["f1_if_fixed"] == pytest.approx(2 * p * r / (p + r))
    # Per attribute: Brand's three errors right -> VC 5, VW 1, VN 1, NV 1: precision 5/7, recall 5/7.
    attrs = {a["attribute"]: a for a in b.attributes}
    assert attrs["Brand"]["f1_if_fixed"] == pytest.approx(5 / 7) and attrs["Brand"]["errors"] == 3
    assert (attrs["Brand"]["boundary"], attrs["Brand"]["other value"], attrs["Flavor"]["missed"]) == (2, 1, 1)
    assert attrs["Brand"]["f1"] == pytest.approx(1 / 4)  # VC 1, VW 3: precision 1/4, recall 1/4
    assert [a["attribute"] for a in b.attributes] == sorted(attrs, key=lambda n: -attrs[n]["gain"])
    assert {len(v) for v in b.examples.values()} == {1, 2} and b.examples["missed"][0]["gold"] == "Honey"
    assert len(error_breakdown(ROWS, examples=1).examples["boundary"]) == 1
    assert b.boundary_sides == {"shorter": 1, "longer": 1}  # "Arm & Hammer" is shorter, "Yogi Tea" longer
    text = "\n".join(b.lines(top=1))
    assert "micro-F1 0.2857" in text and "| Brand | 3 |" not in text and "| Brand | 4 | 0.250 | 3 |" in text
    assert "- Flavor: 'Honey' -> n/a" in text and "fewer words than the gold value in 1, more in 1." in text


def test_values_not_in_the_products_text_are_counted_with_the_f1_of_answering_na_there():
    text = {"p1": "Sun Bum Arm & Hammer Yogi Mint Bourbon Vanilla Honey"}
    b = error_breakdown(ROWS, texts=text)
    # Not in the text: "Yogi Tea" and "?" (nothing left after normalisation), both wrong values. As n/a:
    # VW 4 -> 2, VN 1 -> 3, so precision 2/5, recall 2/7, F1 1/3.
    assert b.off_text == {"wrong": 2, "spurious": 0, "right": 0, "gold_off_text": 2, "f1_if_na": pytest.approx(1 / 3),
                          "gain": pytest.approx(1 / 3 - 2 / 7)}  # golds not in it: "Arm & Hammer Spinbrush PRO+", "Sunbum"
    lines = "\n".join(b.lines())
    assert "not in the product's text: 2 (2 wrong values, 0 where the product has none)" in lines and "would be 0.3333 (+0.0476)" in lines
    assert "2 gold values are not in their product's text either" in lines
    # Every gold value in the text: no right answer is lost, the spurious "Mint" (not in it) becomes a right n/a.
    spans = {"p1": "Sun Bum Arm & Hammer Spinbrush PRO+ Yogi Sunbum Bourbon Vanilla Honey Mint"}
    rows = [r for r in ROWS if r["predicted"] != "?"] + [_row("Color", "NV", None, "Red")]
    c = error_breakdown(rows, texts=spans)
    assert (c.off_text["wrong"], c.off_text["spurious"], c.off_text["right"], c.off_text["gold_off_text"]) == (1, 1, 0, 0)
    assert c.off_text["gain"] > 0 and "either" not in "\n".join(c.lines())
    assert error_breakdown(ROWS).off_text is None and "not in the product's text" not in "\n".join(error_breakdown(ROWS).lines())
    with pytest.raises(LeantuneError, match="product_id 'p1' is not in the data given"):
        error_breakdown(ROWS, texts={"p2": "x"})


def test_read_predictions_refuses_what_is_not_an_attribute_evaluation(tmp_path):
    good = tmp_path / "run"
    good.mkdir()
    (good / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    rows, file = read_predictions(good)
    assert len(rows) == len(ROWS) and file == good / "predictions.jsonl"
    assert read_predictions(file)[0] == rows
    curve_run = tmp_path / "curve-run"
    curve_run.mkdir()
    (curve_run / "per_unit.jsonl").write_text("{}\n")
    with pytest.raises(LeantuneError, match="no predictions.jsonl .*holds per_unit.jsonl"):
        read_predictions(curve_run)
    cases = {
        "[1, 2]": "expected a JSON object, got list",
        json.dumps({"outcome": "VC"}): "no field 'attribute'",
        json.dumps({"attribute": "Brand", "outcome": "XX"}): "outcome 'XX' is none of NN, NV, VN, VC, VW",
        json.dumps({"attribute": "Brand", "outcome": "VW", "gold": "a"}): "a wrong value \\(VW\\) needs 'gold' and 'predicted'",
    }
    for i, (line, message) in enumerate(cases.items()):
        bad = tmp_path / f"bad{i}.jsonl"
        bad.write_text(json.dumps(ROWS[0]) + "\n" + line + "\n")
        with pytest.raises(LeantuneError, match=f"bad{i}.jsonl:2: {message}"):
            read_predictions(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(LeantuneError, match="no judged answers"):
        read_predictions(empty)


def test_errors_cli_prints_the_breakdown_and_writes_it_as_json_or_markdown(tmp_path):
    from leantune.cli import app

    run = tmp_path / "run"
    run.mkdir()
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    result = CliRunner().invoke(app, ["attributes", "errors", str(run), "--top", "2", "--out", str(tmp_path / "e.json"), "--data", "none"])
    assert result.exit_code == 0, result.output
    assert "| boundary (wrong value containing the gold value or inside it) | 2 | 33.3% | 0.5714 | +0.2857 |" in result.output
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["counts"]["VW"] == 4 and saved["f1"] == pytest.approx(2 / 7) and len(saved["attributes"]) == 2
    md = CliRunner().invoke(app, ["attributes", "errors", str(run / "predictions.jsonl"), "--examples", "0", "--out", str(tmp_path / "e.md"),
                                  "--data", "none"])
    assert md.exit_code == 0, md.output
    assert (tmp_path / "e.md").read_text().startswith(f"{run / 'predictions.jsonl'}: micro-F1 0.2857")
    assert "Examples" not in (tmp_path / "e.md").read_text()
    bad = CliRunner().invoke(app, ["attributes", "errors", str(run), "--out", str(tmp_path / "e.txt")])
    assert bad.exit_code != 0 and not (tmp_path / "e.txt").exists()
    # The products' texts come from --data (OA-Mine by default): these rows' product is in neither.
    other = CliRunner().invoke(app, ["attributes", "errors", str(run)])
    assert isinstance(other.exception, ParameterError) and "has no product 'p1'" in str(other.exception)  # printed as --data (bad_inputs)
    folder = write_attribute_folder(tmp_path / "data")
    from leantune.tasks.attributes_data import load_attribute_data

    product = load_attribute_data(str(folder)).products("test")[0]
    mine = [{**r, "product_id": product.id} for r in ROWS]
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mine))
    texts = CliRunner().invoke(app, ["attributes", "errors", str(run), "--data", str(folder)])
    assert texts.exit_code == 0, texts.output
    expected = error_breakdown(mine, texts={product.id: product.text}).off_text
    assert error_breakdown(mine, data=str(folder)).off_text == expected  # the library loads the texts the same way
    with pytest.raises(ParameterError, match=re.escape(f"data {folder}: has no product 'p1' of run; name the evaluation's data")):
        error_breakdown(ROWS, data=str(folder))
    assert f"Values answered that are not in the product's text: {expected['wrong'] + expected['spurious']}" in texts.output
