"""Parsing model answers and scoring attribute extraction.

Every (product, attribute) question ends in one of the literature's five outcomes (ExtractGPT,
Brinkmann et al.): NN (gold n/a, answered n/a), NV (gold n/a, a value answered), VN (gold value,
n/a answered), VC (a gold value matched) and VW (a wrong value). Micro precision
``VC / (NV + VC + VW)`` and recall ``VC / (VN + VC + VW)`` give correct "n/a" answers no credit, so
answering "n/a" everywhere scores F1 = 0.

Accuracy is stricter about broken output: an attribute whose answer is missing or unparseable is
wrong for accuracy even when the gold is n/a, while P/R/F1 read it as "n/a" like the literature.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Sequence

NA = "n/a"
# Spellings of "no value" a model may use; none of them is a gold value in OA-Mine.
NA_WORDS = frozenset({"n/a", "n a", "na", "none", "null", "nil", "not available", "not applicable", "unknown", "not mentioned", "not stated", "not specified"})
OUTCOMES = ("NN", "NV", "VN", "VC", "VW")
# The keys ``summarise`` always writes (besides count/*, parse/* and the per-attribute ones).
SUMMARY_METRICS = ("accuracy", "strict_accuracy", "valued_accuracy", "na_accuracy", "precision", "recall", "f1",
                   "strict_precision", "strict_recall", "strict_f1", "invalid_rate", "n_questions", "n_valued", "n_products")


class _Invalid:
    def __repr__(self) -> str:
        return "INVALID"


INVALID = _Invalid()  # an answer that is missing or could not be parsed


def normalise(text: str) -> str:
    """Lower-case, punctuation to spaces, whitespace collapsed: '12 Fl. oz' == '12 fl oz'."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


def is_na(text: str) -> bool:
    return text.strip().lower() in NA_WORDS or normalise(text) in NA_WORDS


def _value(raw):
    """A JSON value from the model -> str, None (n/a) or INVALID."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        return INVALID
    if isinstance(raw, (int, float)):
        raw = str(raw)
    if isinstance(raw, list) and len(raw) == 1:
        return _value(raw[0])
    if not isinstance(raw, str):
        return INVALID  # several values, objects: not one answer
    return None if is_na(raw) else raw.strip()


def _first_wins(pairs):
    """JSON object hook: with a repeated key keep the first answer (a looping model repeats keys)."""
    obj = {}
    for key, value in pairs:
        obj.setdefault(key, value)
    return obj


def _first_object(text: str):
    """The first JSON object in ``text`` (after code fences or chatter), or None."""
    decoder = json.JSONDecoder(object_pairs_hook=_first_wins)
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except (json.JSONDecodeError, RecursionError):
            start = text.find("{", start + 1)
            continue
        if isinstance(obj, dict):
            return obj
        start = text.find("{", start + 1)
    return None


_PAIR = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*("(?:[^"\\]|\\.)*"|null)')


def _salvage_pairs(text: str) -> dict:
    """``"key": "value"`` pairs from broken JSON (cut off, unbalanced), first occurrence per key."""
    obj = {}
    for key, value in _PAIR.findall(text):
        try:
            obj.setdefault(json.loads(f'"{key}"'), json.loads(value))
        except json.JSONDecodeError:
            continue
    return obj


def parse_product_answer(text: str, attributes: Sequence[str], strict: bool = False) -> tuple[dict, str]:
    """Model output -> ({attribute: str | None | INVALID}, status).

    ``ok``: the whole output is one JSON object. Unless ``strict``: ``recovered`` takes the first
    JSON object inside extra text or code fences, and ``salvaged`` the ``"key": "value"`` pairs of
    broken JSON (e.g. cut off at the token limit); otherwise ``failed``. Keys match attribute names
    ignoring case and punctuation; a repeated key keeps its first value; a missing key, a
    non-string value or unparseable output makes that attribute INVALID.
    """
    stripped = text.strip()
    obj, status = None, "failed"
    try:
        candidate = json.loads(stripped, object_pairs_hook=_first_wins)
        if isinstance(candidate, dict):
            obj, status = candidate, "ok"
    except (json.JSONDecodeError, RecursionError):
        pass
    if obj is None and not strict:
        obj = _first_object(stripped)
        status = "recovered"
        if obj is None:
            obj = _salvage_pairs(stripped) or None
            status = "salvaged"
    answers = {a: INVALID for a in attributes}
    if obj is None:
        return answers, "failed"
    by_key = {}
    for k, v in obj.items():
        by_key.setdefault(normalise(str(k)), v)
    for attribute in attributes:
        key = normalise(attribute)
        if key in by_key:
            answers[attribute] = _value(by_key[key])
    return answers, status


def parse_question_answer(text: str):
    """A one-attribute answer: its first non-empty line, without quotes; '' is INVALID."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return INVALID
    answer = lines[0].strip().strip("`").strip()
    if len(answer) >= 2 and answer[0] == answer[-1] and answer[0] in "\"'":
        answer = answer[1:-1].strip()
    if not answer:
        return INVALID
    return None if is_na(answer) else answer


@dataclass(frozen=True)
class Judged:
    """One scored question."""

    product_id: str
    category: str
    attribute: str
    gold: str | None
    predicted: str | None  # None: n/a, unparseable or missing (see ``valid``)
    valid: bool
    outcome: str  # NN, NV, VN, VC, VW (invalid answers read as n/a)
    correct: bool  # normalised match with a gold/alt value, or a valid n/a for a gold n/a
    strict_correct: bool  # the same with exact string equality

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def judge(product_id: str, category: str, attribute: str, accepted: Sequence[str], answer) -> Judged:
    """Score one answer (str, None for n/a, or INVALID) against the accepted gold values ("" none: n/a)."""
    valid = answer is not INVALID
    predicted = answer if valid else None
    gold = accepted[0] if accepted else None
    if gold is None:
        outcome = "NN" if predicted is None else "NV"
        correct = strict = valid and predicted is None
    elif predicted is None:
        outcome, correct, strict = "VN", False, False
    else:
        correct = normalise(predicted) in {normalise(v) for v in accepted}
        strict = predicted in accepted
        outcome = "VC" if correct else "VW"
    return Judged(product_id, category, attribute, gold, predicted, valid, outcome, correct, strict)


def prf(counts: dict) -> tuple[float, float, float]:
    """Micro precision, recall and F1 from NN/NV/VN/VC/VW counts (0 where undefined)."""
    vc = counts.get("VC", 0)
    p_den = counts.get("NV", 0) + vc + counts.get("VW", 0)
    r_den = counts.get("VN", 0) + vc + counts.get("VW", 0)
    p = vc / p_den if p_den else 0.0
    r = vc / r_den if r_den else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f1


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def summarise(judged: Iterable[Judged], parse_status: Iterable[str] = ()) -> dict[str, float]:
    """Flat metrics: overall/strict/valued/n-a accuracy, P/R/F1 (normalised and strict),
    outcome counts, parse statistics and, per attribute name, ``attribute_f1/<name>`` (micro-F1 over
    its questions), ``attribute_accuracy/<name>`` and ``attribute_support/<name>`` (its questions)."""
    judged = list(judged)
    counts = {k: 0 for k in OUTCOMES}
    strict_counts = {k: 0 for k in OUTCOMES}
    per_attr: dict[str, dict[str, int]] = {}  # attribute -> outcome counts
    per_attr_right: dict[str, int] = {}  # attribute -> correct answers (accuracy's notion)
    valued = [j for j in judged if j.gold is not None]
    empty = [j for j in judged if j.gold is None]
    for j in judged:
        counts[j.outcome] += 1
        # Strict F1: a value that only matches after normalisation is a wrong value.
        strict_counts["VW" if j.outcome == "VC" and not j.strict_correct else j.outcome] += 1
        per_attr.setdefault(j.attribute, {k: 0 for k in OUTCOMES})[j.outcome] += 1
        per_attr_right[j.attribute] = per_attr_right.get(j.attribute, 0) + j.correct
    p, r, f1 = prf(counts)
    sp, sr, sf1 = prf(strict_counts)
    out = {
        "accuracy": _ratio(sum(j.correct for j in judged), len(judged)),
        "strict_accuracy": _ratio(sum(j.strict_correct for j in judged), len(judged)),
        "valued_accuracy": _ratio(sum(j.correct for j in valued), len(valued)),
        "na_accuracy": _ratio(sum(j.correct for j in empty), len(empty)),
        "precision": p,
        "recall": r,
        "f1": f1,
        "strict_precision": sp,
        "strict_recall": sr,
        "strict_f1": sf1,
        "invalid_rate": _ratio(sum(not j.valid for j in judged), len(judged)),
        "n_questions": len(judged),
        "n_valued": len(valued),
        "n_products": len({j.product_id for j in judged}),
        **{f"count/{k}": v for k, v in counts.items()},
    }
    status = list(parse_status)
    if status:
        for s in ("ok", "recovered", "salvaged", "failed"):
            out[f"parse/{s}"] = status.count(s) / len(status)
    for attribute in sorted(per_attr):
        total = sum(per_attr[attribute].values())
        out[f"attribute_f1/{attribute}"] = prf(per_attr[attribute])[2]
        out[f"attribute_accuracy/{attribute}"] = per_attr_right[attribute] / total
        out[f"attribute_support/{attribute}"] = total
    return out
