"""`leantune prune --recommender tiger` and `leantune run --recommender tiger` on tiny data."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from leantune.cli import app
from leantune.errors import LeantuneError

from .tiger_fixtures import tiny_sids


@pytest.fixture
def ids_dir(tmp_path):
    """Semantic IDs written in code (no MiniLM, no RQ-VAE training)."""
    folder = tmp_path / "ids"
    tiny_sids().save(folder / "semantic_ids.json")
    return folder


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, (LeantuneError, SystemExit)):
        raise result.exception
    return result


def test_prune_for_tiger_random_and_dealrec(tiny_rec_folder, ids_dir, tmp_path, tiny_surrogate):
    common = ["prune", "--data", tiny_rec_folder, "--recommender", "tiger", "--budget", 9, "--quiet"]
    result = invoke(*common, "--method", "random", "--out", tmp_path / "random")
    assert result.exit_code == 0, result.output
    random_sel = json.loads((tmp_path / "random" / "selection.json").read_text())
    assert len(random_sel["sample_ids"]) == len(set(random_sel["sample_ids"])) == 9
    assert random_sel["recommender"] == "tiger" and random_sel["scorers"] == []

    result = invoke(*common, "--method", "dealrec", "--out", tmp_path / "dealrec", "--opt", f"tiger_ids={ids_dir}",
                    "--opt", "tiger_preset=small", "--opt", "influence_depth=50")
    assert result.exit_code == 0, result.output
    assert "dealrec for TIGER" in result.output
    sel = json.loads((tmp_path / "dealrec" / "selection.json").read_text())
    assert len(sel["sample_ids"]) == len(set(sel["sample_ids"])) == 9
    assert sel["method"] == "dealrec" and sel["scorers"] == ["influence", "tiger_effort"]  # no LLM effort
    assert sel["selector_settings"]["weights"] == {"influence": 1.0, "tiger_effort": 0.3}
    warmup = json.loads((tmp_path / "dealrec" / "work" / "tiger-effort-warmup" / "tiger_config.json").read_text())
    assert warmup["config"]["d_model"] == 64 and warmup["config"]["max_epochs"] == 1  # --opt reached the scorer
    from leantune.scoring.scorefile import read_scores

    effort = read_scores(tmp_path / "dealrec" / "scores.parquet")["tiger_effort"]
    assert len(effort) == 40 and (effort > 0).all()

    # --method effort with TIGER: TIGER effort only.
    result = invoke(*common, "--method", "effort", "--out", tmp_path / "effort", "--opt", f"tiger_ids={ids_dir}",
                    "--opt", "tiger_preset=small")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "effort" / "selection.json").read_text())["scorers"] == ["tiger_effort"]


def test_bad_recommender_combinations_are_one_line_errors(tiny_rec_folder, tmp_path):
    # Through the real entry point: exit code 2 and one line on stderr, before any scoring.
    cmd = [sys.executable, "-m", "leantune", "prune", "--data", str(tiny_rec_folder), "--budget", "5",
           "--method", "dealrec-tiger", "--out", str(tmp_path / "p"), "--quiet"]
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.strip() == ("error: --method dealrec-tiger: scores with a TIGER model (tiger_effort), not with "
                                  "recommender 'bigrec': use recommender 'tiger', or method 'dealrec'")
    assert not (tmp_path / "p").exists()

    result = invoke("prune", "--data", tiny_rec_folder, "--budget", 5, "--recommender", "sasrec", "--out", tmp_path / "q")
    assert isinstance(result.exception, LeantuneError) and "recommender 'sasrec': choose one of bigrec, tiger" in str(result.exception)
    for extra in (["--recommender", "llama"], ["--recommender", "tiger", "--preset", "huge"],
                  ["--recommender", "tiger", "--epochs", "1.5"], ["--method", "dealrec-tiger"]):
        result = invoke("run", "--data", tiny_rec_folder, "--budget", 5, "--out", tmp_path / "r", *extra)
        assert isinstance(result.exception, LeantuneError), extra
        assert "\n" not in str(result.exception)
    assert not (tmp_path / "r").exists()  # every one failed before creating the run folder


def test_run_tiger_end_to_end_then_reuse(tiny_rec_folder, ids_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = ["run", "--recommender", "tiger", "--data", tiny_rec_folder, "--ids", ids_dir, "--method", "random",
            "--budget", 12, "--epochs", 2, "--test-users", 10, "--out", out, "--device", "cpu", "--quiet",
            "--lora-r", 4]  # a LoRA option: ignored by tiger
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "TIGER (10 test users): recall@10" in result.output and "report:" in result.output
    record = json.loads((out / "run.json").read_text())
    assert record["kind"] == "tiger"
    for stage in ("semantic_ids", "prune", "train", "evaluate", "report"):
        assert record["stages"][stage]["status"] == "finished", stage
        assert record["stages"][stage]["wall_s"] >= 0
    selection = json.loads((out / "prune" / "selection.json").read_text())["sample_ids"]
    assert len(selection) == 12
    train = record["stages"]["train"]["outputs"]
    assert train["n_samples"] == 12 and train["epochs"] == 2 and train["steps"] == 2  # batch 128: one step per epoch
    assert json.loads((out / "train" / "tiger_config.json").read_text())["config"]["d_model"] == 64  # preset small
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["users"] == 10 and set(metrics["metrics"]) >= {"recall@10", "recall@20", "ndcg@10", "ndcg@20"}
    assert all(0.0 <= v <= 1.0 for v in metrics["metrics"].values())
    report = (out / "report.md").read_text()
    assert "# TIGER run: random" in report and "| train | finished |" in report and "recall@20" in report

    # Second invocation: every finished stage is reused (any call to a stage's work raises).
    import leantune.evaluation.tiger as tiger_eval
    import leantune.train.rqvae as rqvae
    import leantune.train.tiger as tiger
    import leantune.pruning as pruning

    def boom(*a, **k):
        raise AssertionError("stage was recomputed")

    for module, name in ((pruning, "prune_with_config"), (tiger, "train_tiger"), (tiger_eval, "evaluate_tiger"),
                         (rqvae, "build_semantic_ids")):
        monkeypatch.setattr(module, name, boom)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    again = json.loads((out / "run.json").read_text())
    for stage in ("semantic_ids", "prune", "train", "evaluate"):
        assert again["stages"][stage] == record["stages"][stage], stage
    assert "TIGER (10 test users)" in result.output

    # Other settings into the same folder: refused, nothing overwritten.
    result = invoke(*[a if a != 12 else 10 for a in args])
    assert isinstance(result.exception, LeantuneError) and "other settings: budget=12 there, 10 now;" in str(result.exception)


def test_run_tiger_dealrec_scores_with_the_run_settings(tiny_rec_folder, ids_dir, tmp_path, tiny_surrogate, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in a default folder (runs/tiger-<data>/ would build IDs)
    result = invoke("run", "--recommender", "tiger", "--data", tiny_rec_folder, "--ids", ids_dir, "--method", "dealrec",
                    "--budget", 10, "--epochs", 1, "--test-users", 5, "--effort-epochs", 2, "--opt", "influence_depth=50",
                    "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    out = tmp_path / "runs" / "run-tiny-dealrec-tiger-b10-s0"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [out.name]
    selection = json.loads((out / "prune" / "selection.json").read_text())
    assert selection["scorers"] == ["influence", "tiger_effort"] and len(selection["sample_ids"]) == 10
    assert selection["settings"]["options"]["tiger_ids"] == str(ids_dir)
    # The effort model has the run's preset and --effort-epochs; the trained model reads the same IDs.
    warmup = json.loads((out / "prune" / "work" / "tiger-effort-warmup" / "tiger_config.json").read_text())
    trained = json.loads((out / "train" / "tiger_config.json").read_text())
    assert warmup["config"]["d_model"] == trained["config"]["d_model"] == 64
    assert warmup["config"]["max_epochs"] == 2 and warmup["ids_key"] == trained["ids_key"] == "tiny"
    assert json.loads((out / "eval" / "metrics.json").read_text())["users"] == 5
