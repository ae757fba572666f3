"""Where an attribute-extraction run loses micro-F1: its wrong answers by kind and by attribute.

Reads the judged rows an evaluation writes (``predictions.jsonl``: one row per (product, attribute)
question with its ``outcome``, ``gold`` and ``predicted`` value) and splits the errors four ways:

* ``boundary``: a wrong value (VW) whose words contain the gold value's words in a row, or lie in a
  row inside them, after the scorer's normalisation (e.g. "Arm & Hammer" for "Arm & Hammer Spinbrush
  PRO+"): a span-boundary disagreement;
* ``other value``: a wrong value that does not overlap the gold value;
* ``missed``: "n/a" answered where the product has a value (VN);
* ``spurious``: a value answered where the product has none (NV).

For each kind, and for each attribute, it reports the micro-F1 the run would have if those errors
alone were answered right: the F1 each one costs. The gains do not add up (fixing one kind changes
the denominators of the others).

Given the products' texts, it also counts the values answered that do not occur in the product's text
(after the scorer's normalisation) and the micro-F1 the run would have had it answered "n/a" there.
Where every gold value occurs in its product's text (OA-Mine's do: values are spans of the title), no
such answer can be right, so that change only removes false positives: it never lowers F1.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..evaluation.units import PREDICTIONS_FILE
from ..errors import DataError, LeantuneError, ParameterError
from .attributes_scoring import OUTCOMES, normalise, prf

PREDICTIONS = PREDICTIONS_FILE
KINDS = ("boundary", "other value", "missed", "spurious")
KIND_HELP = {
    "boundary": "wrong value containing the gold value or inside it",
    "other value": "wrong value not overlapping the gold value",
    "missed": "n/a answered, the product has a value (VN)",
    "spurious": "value answered, the product has none (NV)",
}
_FIXED = {"boundary": ("VW", "VC"), "other value": ("VW", "VC"), "missed": ("VN", "VC"), "spurious": ("NV", "NN")}


def error_kind(row: dict) -> str | None:
    """The kind of error of one judged row (``KINDS``), or None for a right answer (VC, NN)."""
    return _classify(row)[0]


def _classify(row: dict) -> tuple[str | None, bool | None]:
    """``error_kind`` and, for a boundary error, whether the answer has fewer words than the gold value."""
    outcome = row["outcome"]
    if outcome == "VN":
        return "missed", None
    if outcome == "NV":
        return "spurious", None
    if outcome != "VW":
        return None, None
    gold, predicted = normalise(str(row["gold"])).split(), normalise(str(row["predicted"])).split()
    if _inside(gold, predicted) or _inside(predicted, gold):
        return "boundary", len(predicted) < len(gold)
    return "other value", None


def _inside(part: list[str], whole: list[str]) -> bool:
    """Whether the words ``part`` (at least one) appear in a row within ``whole``."""
    n = len(part)
    return n > 0 and any(whole[i:i + n] == part for i in range(len(whole) - n + 1))


@dataclass
class ErrorBreakdown:
    """``error_breakdown``'s result: outcome counts, F1 now, and per kind and per attribute what it costs."""

    source: str
    counts: dict
    precision: float
    recall: float
    f1: float
    kinds: list = field(default_factory=list)  # {kind, count, share, f1_if_fixed, gain}
    attributes: list = field(default_factory=list)  # {attribute, questions, f1, errors, <kind>: n, f1_if_fixed, gain}
    examples: dict = field(default_factory=dict)  # kind -> [{product_id, attribute, gold, predicted}]
    boundary_sides: dict = field(default_factory=dict)  # boundary errors whose answer has fewer / more words than the gold
    off_text: dict | None = None  # answers not in the product's text: {wrong, spurious, right, gold_off_text, f1_if_na, gain}; None without texts

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def lines(self, top: int = 10) -> list[str]:
        """A Markdown summary: kinds, the ``top`` attributes by F1 cost, and the examples."""
        c = self.counts
        errors = sum(k["count"] for k in self.kinds)
        out = [f"{self.source}: micro-F1 {self.f1:.4f} (precision {self.precision:.4f}, recall {self.recall:.4f}) over "
               f"{sum(c.values()):,} questions; " + ", ".join(f"{k} {c[k]:,}" for k in OUTCOMES) + f"; {errors:,} errors", "",
               "| error | count | share of errors | micro-F1 if these were right | gain |", "| --- | ---: | ---: | ---: | ---: |"]
        out += [f"| {k['kind']} ({KIND_HELP[k['kind']]}) | {k['count']:,} | {k['share']:.1%} | {k['f1_if_fixed']:.4f} | "
                f"+{k['gain']:.4f} |" for k in self.kinds]
        sides = self.boundary_sides
        if sum(sides.values()):
            out += ["", f"Boundary errors: the answer has fewer words than the gold value in {sides['shorter']:,}, "
                        f"more in {sides['longer']:,}."]
        if self.off_text is not None:
            o = self.off_text
            out += ["", f"Values answered that are not in the product's text: {o['wrong'] + o['spurious']:,} "
                        f"({o['wrong']:,} wrong values, {o['spurious']:,} where the product has none); answered \"n/a\" "
                        f"instead, micro-F1 would be {o['f1_if_na']:.4f} (+{o['gain']:.4f})."]
            if o["gold_off_text"]:
                out.append(f"({o['gold_off_text']:,} gold values are not in their product's text either, so such an answer can be right: "
                           f"{o['right']:,} right answers are counted as \"n/a\" in that F1.)")
        shown = self.attributes[:top]
        if shown:
            out += ["", f"Attributes costing the most F1 ({len(shown)} of {len(self.attributes)}):", "",
                    "| attribute | questions | its F1 | errors | " + " | ".join(KINDS) + " | overall F1 gain if all right |",
                    "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in KINDS) + " | ---: |"]
            out += [f"| {a['attribute']} | {a['questions']:,} | {a['f1']:.3f} | {a['errors']:,} | "
                    + " | ".join(f"{a[k]:,}" for k in KINDS) + f" | +{a['gain']:.4f} |" for a in shown]
        for kind, rows in self.examples.items():
            if rows:
                out += ["", f"Examples, {kind} (attribute: gold -> predicted):"]
                out += [f"- {r['attribute']}: {_shown(r['gold'])} -> {_shown(r['predicted'])}" for r in rows]
        return out


def _shown(value) -> str:
    return "n/a" if value is None else repr(str(value))


def _fixed_f1(counts: dict, moves: dict) -> float:
    """Micro-F1 after moving ``moves[(from, to)]`` questions between outcomes."""
    fixed = dict(counts)
    for (src, dst), n in moves.items():
        fixed[src] -= n
        fixed[dst] += n
    return prf(fixed)[2]


def error_breakdown(rows: list[dict], source: str = "run", examples: int = 5, seed: int = 0,
                    texts: dict[str, str] | None = None, data: str | None = None) -> ErrorBreakdown:
    """Split the errors of judged rows (``predictions.jsonl``) by kind and by attribute, with the micro-F1
    each costs; ``examples`` seeded random rows per kind. ``texts`` (product id -> the product's text), or
    ``data`` (the evaluation's dataset, name or folder, whose products give them), adds the values answered
    that are not in the text (``ErrorBreakdown.off_text``)."""
    if data is not None:
        if texts is not None:
            raise ParameterError("data", data, "give the products' texts or their data, not both")
        texts = product_texts(data)
    if texts is not None:  # every row's product must have its text
        missing = sorted({str(r.get("product_id")) for r in rows} - set(texts))
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            if data is not None:
                raise ParameterError("data", data, f"has no product {missing[0]!r}{more} of {source}; name the evaluation's data, "
                                                   "or none to skip the products' texts")
            raise LeantuneError(f"product_id {missing[0]!r}{more} is not in the data given for the products' texts")
    counts = {k: 0 for k in OUTCOMES}
    by_kind: dict[str, list[dict]] = {k: [] for k in KINDS}
    sides = {"shorter": 0, "longer": 0}
    per_attr: dict[str, dict] = {}
    for row in rows:
        counts[row["outcome"]] += 1
        a = per_attr.setdefault(row["attribute"], {"counts": {k: 0 for k in OUTCOMES}, **{k: 0 for k in KINDS}})
        a["counts"][row["outcome"]] += 1
        kind, shorter = _classify(row)
        if kind is not None:
            by_kind[kind].append(row)
            a[kind] += 1
        if kind == "boundary":
            sides["shorter" if shorter else "longer"] += 1
    p, r, f1 = prf(counts)
    errors = sum(len(v) for v in by_kind.values())
    kinds = []
    for kind in KINDS:
        n = len(by_kind[kind])
        now = _fixed_f1(counts, {_FIXED[kind]: n})
        kinds.append({"kind": kind, "count": n, "share": n / errors if errors else 0.0, "f1_if_fixed": now, "gain": now - f1})
    attributes = []
    for name, a in per_attr.items():
        moves: dict = {}
        for kind in KINDS:
            moves[_FIXED[kind]] = moves.get(_FIXED[kind], 0) + a[kind]
        now = _fixed_f1(counts, moves)
        attributes.append({"attribute": name, "questions": sum(a["counts"].values()), "f1": prf(a["counts"])[2],
                           "errors": sum(a[k] for k in KINDS), **{k: a[k] for k in KINDS}, "f1_if_fixed": now, "gain": now - f1})
    attributes.sort(key=lambda x: (-x["gain"], x["attribute"]))
    rng = random.Random(seed)
    shown = {kind: [{k: row.get(k) for k in ("product_id", "attribute", "gold", "predicted")}
                    for row in rng.sample(by_kind[kind], min(examples, len(by_kind[kind])))] for kind in KINDS}
    off = None if texts is None else _off_text(rows, texts, counts, f1)
    return ErrorBreakdown(source, counts, p, r, f1, kinds, attributes, shown, sides, off)


def product_texts(data: str) -> dict[str, str]:
    """Product id -> the product's text, over every split of the attribute dataset ``data`` (name or folder)."""
    from .attributes_data import load_attribute_data

    loaded = load_attribute_data(data)
    return {p.id: p.text for split in loaded.splits.values() for p in split}


def _off_text(rows: list[dict], texts: dict[str, str], counts: dict, f1: float) -> dict:
    """Values answered (VW, NV, and VC where the gold is not in the text either) that are not in the product's
    normalised text, and the micro-F1 with "n/a" answered there instead; every row's product is in ``texts``."""
    normal = {pid: normalise(text) for pid, text in texts.items()}
    moves = {("VW", "VN"): 0, ("NV", "NN"): 0, ("VC", "VN"): 0}
    gold_off = 0
    for row in rows:
        text = normal[str(row["product_id"])]
        if row.get("gold") is not None and normalise(str(row["gold"])) not in text:
            gold_off += 1
        answer = normalise(str(row.get("predicted")))
        if row["outcome"] in ("VW", "NV", "VC") and (not answer or answer not in text):  # nothing left of it: in no text
            moves[(row["outcome"], "NN" if row["outcome"] == "NV" else "VN")] += 1
    now = _fixed_f1(counts, moves)
    return {"wrong": moves[("VW", "VN")], "spurious": moves[("NV", "NN")], "right": moves[("VC", "VN")],
            "gold_off_text": gold_off, "f1_if_na": now, "gain": now - f1}


def read_predictions(path: str | Path, required: Sequence[str] = ()) -> tuple[list[dict], Path]:
    """The judged rows of an evaluation: ``path`` is a ``predictions.jsonl`` or a folder holding one. Each row
    needs ``attribute``, ``outcome`` (one of NN, NV, VN, VC, VW), for a wrong value ``gold`` and ``predicted``,
    and every field in ``required``."""
    from ..io import iter_jsonl

    path = Path(path)
    file = path / PREDICTIONS if path.is_dir() else path
    if path.is_dir() and not file.exists():
        per_unit = " (it holds per_unit.jsonl, which has outcomes but not the answers: curve runs evaluated before 2026-12-02 kept no answers)" if (path / "per_unit.jsonl").exists() else ""
        raise LeantuneError(f"{path}: no {PREDICTIONS} with the judged answers{per_unit}; pass an evaluation's folder or file")
    rows = []
    for line, row in iter_jsonl(file):
        if not isinstance(row, dict):
            raise DataError(file, f"expected a JSON object, got {type(row).__name__}", line)
        missing = [k for k in ("attribute", "outcome", *required) if k not in row]
        if missing:
            raise DataError(file, f"no field {missing[0]!r} (is this an attribute evaluation's {PREDICTIONS}?)", line)
        if row["outcome"] not in OUTCOMES:
            raise DataError(file, f"outcome {row['outcome']!r} is none of {', '.join(OUTCOMES)}", line)
        if row["outcome"] == "VW" and (row.get("gold") is None or row.get("predicted") is None):
            raise DataError(file, "a wrong value (VW) needs 'gold' and 'predicted'", line)
        rows.append(row)
    if not rows:
        raise DataError(file, "no judged answers")
    return rows, file
