"""MovieLens-100K from the ``recbole`` wheel, converted to the DEALRec folder format.

Each user's ratings are ordered by timestamp (ties keep file order); the last interaction is the
test target, the second-last the validation target, the rest is training history.
"""
from __future__ import annotations

import csv
import importlib.util
from collections import defaultdict
from pathlib import Path

from ..errors import DataError, LeantuneError
from ..io import atomic_path
from ..paths import cache_dir


def recbole_ml100k_folder() -> Path:
    spec = importlib.util.find_spec("recbole")
    if spec is None or spec.origin is None:
        raise LeantuneError("MovieLens-100K needs the recbole wheel: run `pip install --no-deps recbole` (scripts/setup.sh does)")
    folder = Path(spec.origin).parent / "dataset_example" / "ml-100k"
    if not folder.is_dir():
        raise LeantuneError(f"{folder}: ml-100k example data not found in the recbole wheel")
    return folder


def _read_tab(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.exists():
        raise DataError(path, "file not found")
    with open(path, encoding="latin-1", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise DataError(path, "empty file")
    return [h.split(":")[0] for h in rows[0]], rows[1:]


def convert_ml100k(source: Path, dest: Path) -> Path:
    header, inter = _read_tab(source / "ml-100k.inter")
    u, i, t = header.index("user_id"), header.index("item_id"), header.index("timestamp")
    by_user: dict[int, list[tuple[float, int, int]]] = defaultdict(list)
    for order, row in enumerate(inter):
        by_user[int(row[u])].append((float(row[t]), order, int(row[i])))

    header, item_rows = _read_tab(source / "ml-100k.item")
    ii, ti, yi, ci = (header.index(k) for k in ("item_id", "movie_title", "release_year", "class"))
    dest.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest / "items.tsv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["seq_id", "item_id", "title", "categories"])
        for row in item_rows:
            title = row[ti].strip() + (f" ({row[yi]})" if row[yi] else "")
            writer.writerow([row[ii], row[ii], title, "|".join(row[ci].split())])

    splits = {"train": [], "valid": [], "test": []}
    for user in sorted(by_user):
        seq = [item for _, _, item in sorted(by_user[user])]
        if len(seq) < 3:
            continue
        splits["train"].append(f"{user} " + " ".join(map(str, seq[:-2])))
        splits["valid"].append(f"{user} {seq[-2]}")
        splits["test"].append(f"{user} {seq[-1]}")
    for split, lines in splits.items():
        with atomic_path(dest / f"sequential_{split}.txt") as tmp:
            tmp.write_text("\n".join(lines) + "\n")
    return dest


def ml100k_folder() -> Path:
    dest = cache_dir("data", "ml-100k")
    if not (dest / "sequential_test.txt").exists():
        convert_ml100k(recbole_ml100k_folder(), dest)
    return dest
