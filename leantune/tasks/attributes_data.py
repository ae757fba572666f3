"""Product attribute-value data (OA-Mine format): one record per product, every attribute of its category.

A data folder holds ``train``, ``valid`` and ``test`` as ``.jsonl`` or ``.jsonl.gz`` and optionally
``schema.json`` ({"schema": {category: [attributes]}}). Each line:
``{"id", "category", "text", "attributes": {name: value | null}, "alt_values": {name: [values]}}``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, LeantuneError, ParameterError
from ..io import read_json, read_jsonl
from ..paths import SHIPPED_DATA

DATA_NAMES = ("oa-mine",)
SPLITS = ("train", "valid", "test")
QUESTION_SEP = "::"


@dataclass(frozen=True)
class Product:
    id: str
    category: str
    text: str
    attributes: dict  # attribute -> gold value (str) or None when the title does not state it
    alt_values: dict = field(default_factory=dict)  # attribute -> tuple of other accepted spellings

    def accepted(self, attribute: str) -> tuple[str, ...]:
        gold = self.attributes[attribute]
        return () if gold is None else (gold, *self.alt_values.get(attribute, ()))


@dataclass
class AttributeData:
    name: str
    folder: Path
    splits: dict  # split -> list[Product]
    schema: dict  # category -> list of attributes (the questions asked for that category)

    def products(self, split: str) -> list[Product]:
        if split not in self.splits:
            raise LeantuneError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
        return self.splits[split]

    def by_id(self, split: str) -> dict[str, Product]:
        return {p.id: p for p in self.products(split)}


def question_id(product_id: str, attribute: str) -> str:
    return f"{product_id}{QUESTION_SEP}{attribute}"


def split_question_id(qid: str) -> tuple[str, str]:
    product_id, sep, attribute = qid.partition(QUESTION_SEP)
    if not sep:
        raise LeantuneError(f"{qid!r} is not a question id (expected '<product id>{QUESTION_SEP}<attribute>')")
    return product_id, attribute


def resolve_attribute_data(spec: str | Path) -> tuple[str, Path]:
    spec = str(spec)
    if spec in DATA_NAMES:
        return spec, SHIPPED_DATA / spec
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ParameterError("data", repr(spec), f"not a known attribute dataset ({', '.join(DATA_NAMES)}) and no such folder")
    return path.name, path


def _split_file(folder: Path, split: str) -> Path:
    for suffix in (".jsonl", ".jsonl.gz"):
        if (folder / f"{split}{suffix}").exists():
            return folder / f"{split}{suffix}"
    raise DataError(folder / f"{split}.jsonl", "file not found (also looked for .jsonl.gz)")


def _as_str(value, path, line, where) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(path, f"{where} must be a non-empty string, got {value!r}", line)
    return value


def _product(row, path: Path, line: int, schema: dict | None) -> Product:
    if not isinstance(row, dict):
        raise DataError(path, "each line must be a JSON object", line)
    for key in ("id", "category", "text", "attributes"):
        if key not in row:
            raise DataError(path, f"missing field {key!r}", line)
    pid = _as_str(row["id"], path, line, "'id'")
    if QUESTION_SEP in pid:
        raise DataError(path, f"'id' {pid!r} must not contain {QUESTION_SEP!r}", line)
    category = _as_str(row["category"], path, line, "'category'")
    text = _as_str(row["text"], path, line, "'text'")
    attributes = row["attributes"]
    if not isinstance(attributes, dict) or not attributes:
        raise DataError(path, f"'attributes' must be a non-empty object, got {attributes!r}", line)
    for name, value in attributes.items():
        if value is not None:
            _as_str(value, path, line, f"'attributes'[{name!r}]")
    if schema is not None:
        expected = schema.get(category)
        if expected is None:
            raise DataError(path, f"category {category!r} is not in schema.json", line)
        if sorted(attributes) != sorted(expected):
            missing = sorted(set(expected) - set(attributes))
            extra = sorted(set(attributes) - set(expected))
            raise DataError(path, f"'attributes' of {category!r} differ from schema.json (missing {missing}, extra {extra})", line)
    alt = row.get("alt_values") or {}
    if not isinstance(alt, dict):
        raise DataError(path, f"'alt_values' must be an object, got {alt!r}", line)
    alt_values = {}
    for name, values in alt.items():
        if name not in attributes:
            raise DataError(path, f"'alt_values' names attribute {name!r} that is not in 'attributes'", line)
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise DataError(path, f"'alt_values'[{name!r}] must be a list of strings", line)
        if values and attributes[name] is None:
            raise DataError(path, f"'alt_values'[{name!r}] given but the attribute's value is null", line)
        alt_values[name] = tuple(values)
    return Product(pid, category, text, dict(attributes), alt_values)


def _load_schema(folder: Path) -> dict | None:
    path = folder / "schema.json"
    if not path.exists():
        return None
    raw = read_json(path)
    schema = raw.get("schema", raw) if isinstance(raw, dict) else None
    if not isinstance(schema, dict) or not all(
        isinstance(v, list) and all(isinstance(a, str) for a in v) for v in schema.values()
    ):
        raise DataError(path, "expected {'schema': {category: [attribute, ...]}}")
    return {c: list(v) for c, v in schema.items()}


_LOADED: dict[str, AttributeData] = {}


def load_attribute_data(spec: str | Path = "oa-mine") -> AttributeData:
    """Load (once per process) an attribute dataset by name or folder, validating every record."""
    name, folder = resolve_attribute_data(spec)
    key = str(folder.resolve())
    if key in _LOADED:
        return _LOADED[key]
    schema = _load_schema(folder)
    splits = {}
    for split in SPLITS:
        path = _split_file(folder, split)
        products = [_product(row, path, i, schema) for i, row in enumerate(read_jsonl(path), 1)]
        if not products:
            raise DataError(path, "no products")
        seen = set()
        for i, p in enumerate(products, 1):
            if p.id in seen:
                raise DataError(path, f"duplicate id {p.id!r}", i)
            seen.add(p.id)
        splits[split] = products
    if schema is None:  # derive it: the attributes each category's products carry
        schema = {}
        for products in splits.values():
            for p in products:
                schema.setdefault(p.category, sorted(p.attributes))
    data = AttributeData(name, folder, splits, schema)
    _LOADED[key] = data
    return data
