"""SASRec surrogate, most-popular baseline and ``leantune surrogate train`` on tiny data."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from leantune.errors import LeantuneError
from leantune.evaluation.metrics import ranking_metrics
from leantune.models.popularity import MostPopular, target_popularity
from leantune.models.sasrec import SASRec, SASRecConfig, evaluate, load_surrogate, pad_histories, sample_loss, trim_left
from leantune.train.sasrec import get_surrogate, train_surrogate, training_arrays

from .conftest import write_sequence_folder

TINY = dict(hidden=16, heads=2, blocks=2, dropout=0.1, max_len=10, lr=1e-2, batch_size=16, patience=0)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_pad_histories_keeps_most_recent_left_padded():
    out = pad_histories([(1, 2, 3), (), (4, 5, 6, 7, 8)], 4)
    assert out.tolist() == [[0, 1, 2, 3], [0, 0, 0, 0], [5, 6, 7, 8]]


def test_trimming_padding_changes_no_output(tiny_rec):
    torch.manual_seed(0)
    model = SASRec(tiny_rec.num_items, SASRecConfig(**TINY)).eval()
    histories = [s.history for s in tiny_rec.train_samples[:8]] + [()]
    full = pad_histories(histories, 10)
    trimmed = trim_left(full)
    assert trimmed.shape[1] < 10
    with torch.no_grad():
        assert torch.allclose(model(full), model(trimmed), atol=1e-5)
        one_by_one = torch.cat([model(trim_left(full[i:i + 1])) for i in range(len(histories))])
        assert torch.allclose(model(full), one_by_one, atol=1e-5)
    logits = model.logits(full)
    assert logits.shape == (len(histories), tiny_rec.num_items + 1) and torch.isinf(logits[:, 0]).all()


def test_empty_history_gives_finite_loss_and_gradient():
    torch.manual_seed(0)
    model = SASRec(5, SASRecConfig(**TINY))
    seqs = pad_histories([(), (1,), (1, 2, 3)], 10)
    loss = sample_loss(model, seqs, torch.tensor([1, 2, 4]))
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    loss.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_sasrec_learns_the_tiny_pattern(tiny_rec, tmp_path):
    assert any(len(seq) == 1 for seq in tiny_rec.train), "fixture should hold single-item users"
    meta = train_surrogate(tiny_rec, tmp_path / "s", SASRecConfig(**TINY, max_epochs=25), seed=0, progress=False)
    assert all(np.isfinite(row["loss"]) for row in meta["history"])
    assert meta["history"][-1]["loss"] < meta["history"][0]["loss"]
    sasrec, pop = meta["test"]["sasrec"], meta["test"]["most_popular"]
    # Random ranking of 30 items puts a target in the top 5 with probability 1/6.
    assert sasrec["recall@5"] > 0.6 > 5 / 30
    assert sasrec["ndcg@10"] > pop["ndcg@10"] + 0.3
    model = load_surrogate(tmp_path / "s")
    assert evaluate(model, tiny_rec, "test") == pytest.approx(sasrec)
    saved = json.loads((tmp_path / "s" / "surrogate.json").read_text())
    assert saved["status"] == "done" and saved["best_epoch"] >= 1 and not (tmp_path / "s" / "checkpoint.safetensors").exists()


def test_reuse_and_resume_give_the_same_model(tiny_rec, tmp_path):
    cfg = SASRecConfig(**TINY, max_epochs=4)
    straight = train_surrogate(tiny_rec, tmp_path / "a", cfg, seed=3, progress=False)

    epochs_seen = []
    assert train_surrogate(tiny_rec, tmp_path / "a", cfg, seed=3, progress=False, on_epoch=epochs_seen.append) == straight
    assert epochs_seen == []  # reused, not retrained

    def interrupt(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_surrogate(tiny_rec, tmp_path / "b", cfg, seed=3, progress=False, on_epoch=interrupt)
    assert (tmp_path / "b" / "checkpoint.safetensors").exists() and not (tmp_path / "b" / "surrogate.json").exists()
    from leantune.models.checkpoint import checkpoint_state, load_extra_tensors

    # the checkpoint format RQ-VAE and TIGER use too, with the best epoch's weights as extra tensors
    assert checkpoint_state(tmp_path / "b" / "checkpoint.safetensors")["epoch"] == 2
    assert set(load_extra_tensors(tmp_path / "b" / "checkpoint.safetensors")) == set(load_surrogate(tmp_path / "a").state_dict())
    resumed = train_surrogate(tiny_rec, tmp_path / "b", cfg, seed=3, progress=False, on_epoch=epochs_seen.append)
    assert [r["epoch"] for r in epochs_seen] == [3, 4]
    assert [r["loss"] for r in resumed["history"]] == pytest.approx([r["loss"] for r in straight["history"]], rel=1e-5)
    a, b = load_surrogate(tmp_path / "a"), load_surrogate(tmp_path / "b")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(pa, pb, atol=1e-5), name

    with pytest.raises(LeantuneError, match=r"holds a surrogate made with other settings: config.max_epochs=4 there, 5 now"):
        train_surrogate(tiny_rec, tmp_path / "a", SASRecConfig(**TINY, max_epochs=5), seed=3, progress=False)


def test_get_surrogate_caches_by_content(tiny_rec, tmp_path, monkeypatch):
    monkeypatch.setenv("LEANTUNE_HOME", str(tmp_path / "home"))
    cfg = SASRecConfig(**TINY, max_epochs=1)
    first = get_surrogate(tiny_rec, cfg, seed=0, progress=False)
    assert len(list((tmp_path / "home" / "surrogate").iterdir())) == 1
    again = get_surrogate(tiny_rec, cfg, seed=0, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), again.parameters()))
    get_surrogate(tiny_rec, cfg, seed=1, progress=False)
    assert len(list((tmp_path / "home" / "surrogate").iterdir())) == 2


def test_users_without_training_items_give_no_training_rows(gappy_rec, tmp_path):
    cfg = SASRecConfig(**TINY, max_epochs=2)
    inputs, targets, widths = training_arrays([[1, 2, 3], [], [4]], cfg)
    assert targets[1].tolist() == [0] * 10 and inputs[1].tolist() == [0] * 10
    assert targets[0, -3:].tolist() == [1, 2, 3] and targets[2, -1].item() == 4 and widths.tolist() == [3, 1, 1]
    meta = train_surrogate(gappy_rec, tmp_path / "s", cfg, seed=0, progress=False)
    assert meta["epochs_run"] == 2 and all(np.isfinite(row["loss"]) for row in meta["history"])


def test_most_popular_ranks_by_training_count(tmp_path):
    folder = write_sequence_folder(
        tmp_path / "d",
        train={1: [3, 2], 2: [3, 1], 3: [3, 2], 4: [4]},
        valid={1: [1], 2: [], 3: [], 4: []},
        test={1: [2, 4], 2: [1], 3: [], 4: [5]},
        n_items=5,
    )
    from leantune.data import load_sequence_folder

    ds = load_sequence_folder(folder)
    pop = MostPopular.fit(ds)
    assert pop.ranking(5).tolist() == [3, 2, 1, 4, 5]  # counts 3, 2, 1, 1 (tie -> smaller id), 0
    metrics = pop.evaluate(ds, "test", ks=(1, 2, 3))
    # user 1 targets {2, 4}: rank of 2 is 2; user 2 target {1}: rank 3; user 4 target {5}: not in top 3.
    assert metrics["recall@2"] == pytest.approx((1 / 2 + 0 + 0) / 3)
    assert metrics["recall@3"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert metrics == ranking_metrics([[3, 2, 1]] * 3, [[2, 4], [1], [5]], (1, 2, 3))
    # Recent popularity counts the validation period only: item 1 (one validation interaction) first.
    assert MostPopular.fit(ds, period="valid").ranking(3).tolist() == [1, 2, 3]
    with pytest.raises(LeantuneError, match="period 'test'"):
        MostPopular.fit(ds, period="test")
    # Samples 0 and 1 (users 1 and 2) predict items 2 and 1: training counts 2 and 1, validation counts 0 and 1.
    assert target_popularity(ds, [0, 1]) == {"train": 1.5, "recent": 0.5}
    with pytest.raises(LeantuneError, match="sample id 9 is not a training sample"):
        target_popularity(ds, [0, 9])


def test_cli_surrogate_train(tiny_rec_folder, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from leantune.cli import app

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    args = ["surrogate", "train", "--data", str(tiny_rec_folder), "--out", str(out), "--epochs", "2",
            "--hidden", "8", "--max-len", "10", "--batch-size", "16", "--seed", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "most-popular" in result.output and "recall@20" in result.output
    meta = json.loads((out / "surrogate.json").read_text())
    assert meta["epochs_run"] == 2 and meta["seed"] == 1 and meta["config"]["hidden"] == 8
    assert meta["command"].startswith("leantune surrogate train --data ") and "--hidden 8" in meta["command"]
    again = CliRunner().invoke(app, args)  # reuses the finished model
    assert again.exit_code == 0 and json.loads((out / "surrogate.json").read_text()) == meta
    # The recorded command carries no machine path: --out as given, relative to the working folder ...
    assert " --out run " in meta["command"] and str(tmp_path) not in meta["command"]
    # ... and, when not given, left out (the default cache folder follows from the settings).
    cached = CliRunner().invoke(app, [a for a in args if a not in ("--out", str(out))])
    assert cached.exit_code == 0, cached.output
    home = Path(os.environ["LEANTUNE_HOME"])
    written = json.loads(max(home.glob("**/surrogate.json"), key=lambda f: f.stat().st_mtime).read_text())
    assert written["seed"] == 1 and written["config"]["hidden"] == 8  # the run just made
    assert written["command"].startswith("leantune surrogate train --data ") and "--out" not in written["command"]
