"""Tiny attribute data written in code (OA-Mine format), shared by the attribute and curve tests."""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

SCHEMA = {"Coffee": ["Brand", "Flavor", "Net content", "Roast type"], "Tea": ["Brand", "Flavor", "Tea variety"]}
BRANDS = ["Acme", "Bolt", "Crest", "Dune"]
FLAVORS = ["Vanilla", "Hazelnut", "Mint", None]


def tiny_products(n: int, seed: int, prefix: str) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        category = "Coffee" if i % 2 == 0 else "Tea"
        brand, flavor = rng.choice(BRANDS), rng.choice(FLAVORS)
        if category == "Coffee":
            size = rng.choice(["12 Ounce", "2 lb", None])
            roast = rng.choice(["Dark Roast", None])
            attrs = {"Brand": brand, "Flavor": flavor, "Net content": size, "Roast type": roast}
            words = [brand, roast, flavor, "Ground Coffee", size]
        else:
            variety = rng.choice(["Green Tea", "Black Tea"])
            attrs = {"Brand": brand, "Flavor": flavor, "Tea variety": variety}
            words = [brand, flavor, variety, "Bags"]
        text = " ".join(w for w in words if w)
        rows.append({"id": f"{prefix}-{i}", "category": category, "text": text, "attributes": attrs, "alt_values": {}})
    return rows


def write_attribute_folder(folder: Path, n_train: int = 12, n_valid: int = 4, n_test: int = 6, gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 1), ("valid", n_valid, 2), ("test", n_test, 3)):
        lines = "".join(json.dumps(r) + "\n" for r in tiny_products(n, seed, split))
        if gz:
            with gzip.open(folder / f"{split}.jsonl.gz", "wt") as fh:
                fh.write(lines)
        else:
            (folder / f"{split}.jsonl").write_text(lines)
    (folder / "schema.json").write_text(json.dumps({"schema": SCHEMA}))
    return folder
