"""Datasets by name: ``games`` (shipped), ``ml-100k`` (from recbole), or a folder path."""
from __future__ import annotations

from pathlib import Path

from ..errors import ParameterError
from ..paths import SHIPPED_DATA
from .fingerprint import dataset_fingerprint
from .sequences import Item, Sample, SequenceDataset, load_sequence_folder

__all__ = ["Item", "Sample", "SequenceDataset", "dataset_fingerprint", "load_dataset", "load_sequence_folder", "DATASET_NAMES"]

DATASET_NAMES = ("games", "ml-100k")
_ITEM_NOUNS = {"games": "game products", "ml-100k": "movies"}
_LOADED: dict[str, SequenceDataset] = {}


def resolve_data(spec: str) -> tuple[str, Path]:
    if spec == "games":
        return "games", SHIPPED_DATA / "games"
    if spec == "ml-100k":
        from .movielens import ml100k_folder

        return "ml-100k", ml100k_folder()
    path = Path(spec).expanduser()
    if not path.exists():
        raise ParameterError("data", repr(spec), f"not a known dataset ({', '.join(DATASET_NAMES)}) and no such folder")
    return path.name, path


def load_dataset(spec: str | Path) -> SequenceDataset:
    """Load a dataset by name or folder; loaded datasets are kept for the life of the process."""
    spec = str(spec)
    if spec not in _LOADED:
        name, folder = resolve_data(spec)
        _LOADED[spec] = load_sequence_folder(folder, name=name, item_noun=_ITEM_NOUNS.get(name, "products"))
    return _LOADED[spec]
