"""Score file: columnar round trips, resumable chunks, manifests, sharding over processes."""
import numpy as np
import pytest

from leantune.errors import LeantuneError
from leantune.scoring import ScoringContext
from leantune.scoring.scorefile import (
    ChunkStore,
    ProcessInfo,
    chunk_bounds,
    merge_chunks,
    read_scores,
    score_chunks,
    shard_chunks,
    write_scores,
)


class HashScorer:
    """Deterministic per-sample values (one scalar, one 3-d vector); can fail at a given chunk."""

    name = "hash"

    def __init__(self, fail_at_call=None):
        self.calls = []
        self.fail_at_call = fail_at_call

    def score(self, samples, ctx):
        self.calls.append([s.sample_id for s in samples])
        if self.fail_at_call is not None and len(self.calls) == self.fail_at_call:
            raise RuntimeError("killed")
        ids = np.array([s.sample_id for s in samples], dtype=np.float64)
        lengths = np.array([len(s.history) for s in samples], dtype=np.float64)
        return {"h": np.sin(ids * 12.9898 + ctx.seed) + lengths / 7, "vec": np.stack([ids, lengths, -ids], 1)}


KEY = {"samples": 40, "seed": 0}


def run(tiny_rec, folder, scorer, chunk_size=7, process=None):
    samples = tiny_rec.train_samples
    store = ChunkStore(folder, "hash", KEY, chunk_size)
    store.check_manifest()
    ctx = ScoringContext(tiny_rec, seed=0)
    score_chunks(scorer, "hash", samples, ctx, store, process, progress=False)
    return store


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_round_trip(tmp_path, suffix):
    cols = {"sample_id": np.arange(4), "user_id": np.array([5, 6, 7, 8]), "influence": np.array([0.1, -2.0, 3e-9, 4.0]),
            "embedding": np.arange(12, dtype=np.float32).reshape(4, 3)}
    path = tmp_path / f"scores.{suffix}"
    write_scores(path, cols)
    back = read_scores(path)
    assert list(back) == list(cols)
    for name in cols:
        assert np.array_equal(back[name], cols[name]) and back[name].shape == cols[name].shape


def test_killed_run_resumes_with_identical_scores(tiny_rec, tmp_path):
    ids = np.array([s.sample_id for s in tiny_rec.train_samples])
    full = merge_chunks(run(tiny_rec, tmp_path / "full", HashScorer()), ids)[0]

    killed = HashScorer(fail_at_call=4)  # dies in the 4th of 6 chunks
    with pytest.raises(RuntimeError, match="killed"):
        run(tiny_rec, tmp_path / "resume", killed)
    assert sorted(p.name for p in (tmp_path / "resume").glob("chunk-*")) == [f"chunk-0000{i}.parquet" for i in range(3)]
    assert not list((tmp_path / "resume").glob("*.tmp"))  # the failed chunk left nothing behind

    again = HashScorer()
    store = run(tiny_rec, tmp_path / "resume", again)
    assert [c[0] for c in again.calls] == [21, 28, 35]  # only the unfinished chunks were scored
    resumed = merge_chunks(store, ids)[0]
    assert resumed.keys() == full.keys()
    for name in full:
        assert np.array_equal(resumed[name], full[name])


def test_manifest_refuses_other_settings_but_adopts_chunk_size(tiny_rec, tmp_path):
    run(tiny_rec, tmp_path, HashScorer(), chunk_size=7)
    with pytest.raises(LeantuneError, match="holds score chunks made with other settings: seed=0 there, 1 now"):
        ChunkStore(tmp_path, "hash", {**KEY, "seed": 1}, 7).check_manifest()
    store = ChunkStore(tmp_path, "hash", KEY, 100)
    store.check_manifest()
    assert store.chunk_size == 7
    ChunkStore(tmp_path / "t", "hash", {"options": {"layers": (-1, -2)}}, 7).check_manifest()
    ChunkStore(tmp_path / "t", "hash", {"options": {"layers": (-1, -2)}}, 7).check_manifest()  # tuple == list


def test_merge_reports_missing_and_foreign_chunks(tiny_rec, tmp_path):
    ids = np.array([s.sample_id for s in tiny_rec.train_samples])
    store = run(tiny_rec, tmp_path, HashScorer())
    (tmp_path / "chunk-00002.parquet").unlink()
    with pytest.raises(LeantuneError, match="chunk-00002.parquet: chunk missing"):
        merge_chunks(store, ids)
    with pytest.raises(LeantuneError, match="other sample ids"):
        merge_chunks(store, ids[::-1].copy())


def test_scorer_output_is_checked(tiny_rec, tmp_path):
    class Short:
        def score(self, samples, ctx):
            return {"x": np.zeros(len(samples) - 1)}

    store = ChunkStore(tmp_path, "short", KEY, 7)
    with pytest.raises(LeantuneError, match="scorer 'short' column 'x': shape \\(6,\\) for 7 samples"):
        score_chunks(Short(), "short", tiny_rec.train_samples, ScoringContext(tiny_rec), store, progress=False)


@pytest.mark.parametrize("n,count", [(1, 1), (6, 4), (10, 3), (3, 8)])
def test_shards_partition_the_chunks(n, count):
    shards = [shard_chunks(n, i, count) for i in range(count)]
    flat = sorted(c for s in shards for c in s)
    assert flat == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_sharded_processes_score_disjoint_chunks_and_merge_equal(tiny_rec, tmp_path):
    ids = np.array([s.sample_id for s in tiny_rec.train_samples])
    single = merge_chunks(run(tiny_rec, tmp_path / "one", HashScorer()), ids)[0]
    scorers = [HashScorer(), HashScorer(), HashScorer()]
    for index, scorer in enumerate(scorers):
        store = run(tiny_rec, tmp_path / "three", scorer, process=ProcessInfo(index, 3))
    starts = [[c[0] for c in s.calls] for s in scorers]
    assert starts == [[0, 21], [7, 28], [14, 35]]
    merged = merge_chunks(store, ids)[0]
    for name in single:
        assert np.array_equal(merged[name], single[name])


def test_chunk_bounds_cover_everything():
    assert chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_bounds(0, 4) == []
