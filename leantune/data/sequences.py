"""Sequential recommendation data in the DEALRec folder format.

A dataset folder holds ``sequential_{train,valid,test}.txt`` (``user item item ...`` per line,
the same users on the same lines in all three files) and ``items.tsv``
(``seq_id  item_id  title  categories``). Files may be gzip-compressed (``.txt.gz``, ``.tsv.gz``).

Samples follow the reference method, one per user:

* training: history = training items but the last, target = the last training item. Users with a
  single training item get an *empty history*; they are kept (they are real training samples
  for the LLM, which still learns the target title) and counted in ``DatasetStats.empty_history``.
  Users whose training line holds no items (``user_id`` alone) get no training sample; they are
  still validation/test users when they have items there (``DatasetStats.no_train_users``).
* validation: history = all training items, target = the first validation item (users with one).
* test: history = training + validation items, targets = all test items (users with any).

A user id may appear once per file; a user with no item in any of the three files is refused.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import DataError
from ..io import open_text

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Item:
    seq_id: int
    asin: str
    title: str
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sample:
    """One user's example. ``sample_id`` is the user's line index (0-based) in the files."""

    sample_id: int
    user: int
    history: tuple[int, ...]
    targets: tuple[int, ...]


@dataclass
class SequenceDataset:
    name: str
    items: dict[int, Item]
    users: list[int]
    train: list[list[int]]
    valid: list[list[int]]
    test: list[list[int]]
    item_noun: str = "products"
    source: str = ""
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_items(self) -> int:
        """Largest item id; ids run 1..num_items and 0 is free for padding."""
        return max(self.items)

    def title(self, item: int) -> str:
        return self.items[item].title

    @cached_property
    def train_samples(self) -> list[Sample]:
        """One per user with training items (users with none are validation/test users only)."""
        return [
            Sample(i, u, tuple(seq[:-1]), (seq[-1],))
            for i, (u, seq) in enumerate(zip(self.users, self.train))
            if seq
        ]

    @cached_property
    def valid_samples(self) -> list[Sample]:
        return [
            Sample(i, u, tuple(tr), (va[0],))
            for i, (u, tr, va) in enumerate(zip(self.users, self.train, self.valid))
            if va
        ]

    @cached_property
    def test_samples(self) -> list[Sample]:
        return [
            Sample(i, u, tuple(tr + va), tuple(te))
            for i, (u, tr, va, te) in enumerate(zip(self.users, self.train, self.valid, self.test))
            if te
        ]

    def samples(self, split: str) -> list[Sample]:
        return {"train": self.train_samples, "valid": self.valid_samples, "test": self.test_samples}[split]

    def eval_split(self, split: str) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
        """(histories, targets) for evaluation: valid = train -> first valid item; test = train + valid -> all test items."""
        if split not in ("valid", "test"):
            raise ValueError(f"split must be valid or test, not {split!r}")
        samples = self.samples(split)
        return [s.history for s in samples], [s.targets for s in samples]


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise DataError(folder / stem, "file not found")


def read_items(path: Path) -> dict[int, Item]:
    items: dict[int, Item] = {}
    with open_text(path) as fh:
        reader = csv.reader(fh, delimiter="\t")
        try:
            _read_item_rows(path, reader, items)
        except csv.Error as exc:
            raise DataError(path, f"malformed TSV ({exc})", reader.line_num or None) from None
    if not items:
        raise DataError(path, "no items")
    return items


def _read_item_rows(path: Path, reader, items: dict[int, Item]) -> None:
    header = next(reader, None)
    if header is None:
        raise DataError(path, "empty file")
    if [h.strip() for h in header[:3]] != ["seq_id", "item_id", "title"]:
        raise DataError(path, f"header must start with seq_id, item_id, title; got {header!r}", 1)
    previous = reader.line_num
    for row in reader:
        lineno, previous = previous + 1, reader.line_num
        if reader.line_num > lineno or any("\n" in f or "\r" in f for f in row):
            raise DataError(path, "unbalanced '\"': a quoted field must close on the line it opens "
                                  "(double a quote inside one, as in \"a \"\"b\"\" c\")", lineno)
        if not row:
            continue
        if len(row) < 3:
            raise DataError(path, f"expected at least 3 tab-separated fields, got {len(row)}", lineno)
        try:
            seq_id = int(row[0])
        except ValueError:
            raise DataError(path, f"seq_id {row[0]!r} is not an integer", lineno) from None
        if seq_id <= 0:
            raise DataError(path, f"seq_id {seq_id} must be positive (0 is reserved for padding)", lineno)
        if seq_id in items:
            raise DataError(path, f"seq_id {seq_id} appears twice", lineno)
        cats = tuple(c for c in row[3].split("|") if c) if len(row) > 3 else ()
        items[seq_id] = Item(seq_id, row[1], row[2].strip(), cats)


def read_sequences(path: Path, items: dict[int, Item], require_items: bool) -> tuple[list[int], list[list[int]]]:
    """``(users, sequences)`` of one split file; a user id twice, an unknown item or (with
    ``require_items``) a user without items is refused with the file and line."""
    users, seqs = [], []
    first_line: dict[int, int] = {}
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            tokens = line.split()
            if not tokens:
                raise DataError(path, "empty line (expected 'user_id [item ...]')", lineno)
            try:
                ids = [int(t) for t in tokens]
            except ValueError:
                bad = next(t for t in tokens if not _is_int(t))
                raise DataError(path, f"value {bad!r} is not an integer id", lineno) from None
            user, seq = ids[0], ids[1:]
            if user in first_line:
                raise DataError(path, f"user {user} appears twice (first on line {first_line[user]})", lineno)
            first_line[user] = lineno
            for item in seq:
                if item not in items:
                    raise DataError(path, f"item id {item} is not in items.tsv", lineno)
            if require_items and not seq:
                raise DataError(path, f"user {user} has no training items", lineno)
            users.append(user)
            seqs.append(seq)
    if not users:
        raise DataError(path, "empty file")
    return users, seqs


def _is_int(token: str) -> bool:
    try:
        int(token)
        return True
    except ValueError:
        return False


def load_sequence_folder(folder: str | Path, name: str | None = None, item_noun: str = "products") -> SequenceDataset:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "not a folder (expected a DEALRec data folder)" if folder.exists() else "data folder not found")
    items = read_items(_find(folder, "items.tsv"))
    splits = {}
    train_path = _find(folder, "sequential_train.txt")
    users, splits["train"] = read_sequences(train_path, items, require_items=False)
    for split in ("valid", "test"):
        path = _find(folder, f"sequential_{split}.txt")
        other_users, splits[split] = read_sequences(path, items, require_items=False)
        if len(other_users) != len(users):
            raise DataError(path, f"has {len(other_users)} users but {train_path.name} has {len(users)}")
        for lineno, (a, b) in enumerate(zip(users, other_users), 1):
            if a != b:
                raise DataError(path, f"user {b} is out of order: {train_path.name} has user {a} on this line", lineno)
    for lineno, (user, tr, va, te) in enumerate(zip(users, splits["train"], splits["valid"], splits["test"]), 1):
        if not (tr or va or te):
            raise DataError(train_path, f"user {user} has no items in any split (train, valid, test)", lineno)
    if not any(splits["train"]):
        raise DataError(train_path, "no user has training items")
    return SequenceDataset(
        name=name or folder.name,
        items=items,
        users=users,
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
        item_noun=item_noun,
        source=str(folder),
    )
