"""Shared fixtures: small data written in code, so tests never depend on ../shared."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _session_home() -> str:
    """A fresh ``LEANTUNE_HOME`` per test session (models, embeddings, evaluation caches), removed
    at exit, so tests neither read nor fill ``~/.cache/leantune``. ``LEANTUNE_TEST_HOME=DIR``
    keeps one folder across sessions instead (faster reruns: the tiny model is built once)."""
    keep = os.environ.get("LEANTUNE_TEST_HOME")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        return keep
    home = tempfile.mkdtemp(prefix="leantune-test-home-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    return home


# Set at import, before any test (or module-level code) resolves a cache path.
os.environ["LEANTUNE_HOME"] = _session_home()


@pytest.fixture
def one_thread():
    """One torch thread for the test (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny
    models on a shared 2-core machine run several times faster on one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_sequence_folder(folder: Path, train: dict, valid: dict, test: dict, n_items: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["seq_id\titem_id\ttitle\tcategories"]
    lines += [f"{i}\tASIN{i:04d}\tGame number {i}\tVideo Games|PC" for i in range(1, n_items + 1)]
    (folder / "items.tsv").write_text("\n".join(lines) + "\n")
    for name, split in (("train", train), ("valid", valid), ("test", test)):
        text = "\n".join(" ".join(map(str, [u, *seq])) for u, seq in split.items())
        (folder / f"sequential_{name}.txt").write_text(text + "\n")
    return folder


@pytest.fixture
def tiny_rec_folder(tmp_path) -> Path:
    """40 users over 30 items with a learnable pattern (item i tends to follow item i-1)."""
    import random

    rng = random.Random(0)
    n_items = 30
    train, valid, test = {}, {}, {}
    for u in range(1, 41):
        start = rng.randint(1, n_items)
        length = rng.randint(1, 8)
        seq = [((start + k - 1) % n_items) + 1 for k in range(length + 2)]
        train[u] = seq[:length]
        valid[u] = [seq[length]] if u % 3 else []
        test[u] = [seq[length + 1]] if u % 2 else []
    return write_sequence_folder(tmp_path / "tiny", train, valid, test, n_items)


@pytest.fixture
def tiny_rec(tiny_rec_folder):
    from leantune.data import load_sequence_folder

    return load_sequence_folder(tiny_rec_folder, name="tiny", item_noun="game products")


@pytest.fixture
def gappy_rec(tiny_rec_folder):
    """``tiny_rec`` where users 5, 10, 15, 20, 25, 35 and 40 have no training items (validation/test
    users only): training samples are then not numbered 0..n-1 by position."""
    from leantune.data import load_sequence_folder

    path = tiny_rec_folder / "sequential_train.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line.split()[0] if int(line.split()[0]) % 5 == 0 and line.split()[0] != "30" else line
                              for line in lines) + "\n")
    ds = load_sequence_folder(tiny_rec_folder, name="gappy", item_noun="game products")
    assert len(ds.train_samples) == 33 and ds.train_samples[4].sample_id == 5
    return ds


@pytest.fixture
def tiny_surrogate(monkeypatch):
    """An untrained tiny SASRec in place of the trained-and-cached one (same class and API)."""
    import torch

    from leantune.models import sasrec
    from leantune.train import sasrec as surrogate_training

    def get_surrogate(dataset, seed=0, **kwargs):
        torch.manual_seed(seed)
        return sasrec.SASRec(dataset.num_items, sasrec.SASRecConfig(hidden=8, blocks=1, max_len=5))

    monkeypatch.setattr(surrogate_training, "get_surrogate", get_surrogate)
