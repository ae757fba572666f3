"""Early-performance search (leantune.tuning): space, failure handling, both phases, resume, report.

Most tests use the synthetic runner (milliseconds per trial); one runs the real tiny-model path.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leantune.errors import DataError, LeantuneError
from leantune.tasks.attributes_generate import GENERATION_LOG
from leantune.tuning import (EarlySearch, RunResult, SyntheticRunner, TuneConfig, failure_reason, load_records, load_space,
                             rank_agreement, write_report)
from leantune.tuning.space import DEFAULT_BASELINE

optuna = pytest.importorskip("optuna")


def _cfg(tmp_path, **kw) -> TuneConfig:
    base = dict(study="t", work_dir=tmp_path / "work", trials=10, top_k=3, early_fraction=0.25, seed=0)
    return TuneConfig(**{**base, **kw})


def _segments(work: Path, trial) -> list:
    state = json.loads((work / trial.user_attrs["checkpoint"] / "synthetic_state.json").read_text())
    return state["segments"]


def _studies(cfg):
    storage = optuna.storages.RDBStorage(cfg.storage_url)
    return (optuna.load_study(study_name=cfg.study, storage=storage),
            optuna.load_study(study_name=cfg.study + "/final", storage=storage))


# ----------------------------------------------------------------------------- search space


def test_default_space_reaches_the_breaking_region_and_holds_the_baseline():
    space = load_space(None)
    assert space.params["lr"].log and space.params["lr"].high >= 1e-2
    assert max(space.params["alpha"].choices) >= 64
    assert space.baseline_params() == {k: DEFAULT_BASELINE[k] for k in space.params}


def test_space_file_overrides(tmp_path):
    toml = tmp_path / "space.toml"
    toml.write_text('[params.lr]\nlow = 1e-5\nhigh = 1e-3\nlog = true\n[params.dropout]\nvalue = 0.1\n'
                    '[params.alpha]\nchoices = [8, 16]\n[baseline]\nlr = 2e-4\n')
    space = load_space(toml)
    assert space.params["lr"].high == 1e-3 and space.params["dropout"].kind == "fixed"
    assert space.params["alpha"].choices == (8, 16)
    assert space.baseline_params()["lr"] == 2e-4 and "dropout" not in space.baseline_params()
    steps = tmp_path / "steps.yaml"
    steps.write_text("params:\n  max_steps: {low: 10, high: 40}\nbaseline:\n  max_steps: 20\n")
    space = load_space(steps)
    assert "epochs" not in space.params and space.params["max_steps"].kind == "int"


@pytest.mark.parametrize("text, needle", [
    ("[params.momentum]\nlow = 0.1\nhigh = 0.9\n", "params.momentum"),
    ("[params.lr]\nlow = 1e-2\nhigh = 1e-3\n", "low < high"),
    ("[params.lr]\nlow = 1e-3\nhigh = 1e-2\n", "baseline.lr"),  # the default baseline lr 1e-4 falls outside
    ("[params.lr\n", "invalid TOML"),
])
def test_bad_space_file_is_a_one_line_error(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        load_space(path)
    assert str(path) in str(err.value) and needle in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- runs and failures


def test_space_file_not_utf8_or_a_folder_is_a_one_line_error(tmp_path):
    path = tmp_path / "space.toml"
    path.write_bytes(b"[params.lr]\nlow = 1e-5 # \xff\n")
    with pytest.raises(DataError, match=r"space.toml:2: not UTF-8 text \(byte 0xff"):
        load_space(path)
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    with pytest.raises(DataError, match="is a folder, not a file"):
        load_space(folder)


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../x", "x/final", "/abs", "a b", "-x", "x" * 101])
def test_study_names_must_be_one_safe_path_component(tmp_path, name):
    with pytest.raises(LeantuneError, match="^study "):
        _cfg(tmp_path, study=name)


def test_report_of_a_missing_study_or_storage_makes_no_folder(tmp_path):
    with pytest.raises(LeantuneError, match="no such SQLite file"):
        write_report("t", f"sqlite:///{tmp_path / 'none' / 'optuna.db'}", tmp_path / "r1")
    with pytest.raises(LeantuneError, match="cannot open"):
        write_report("t", "nothing://x", tmp_path / "r2")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists() and not (tmp_path / "none").exists()


def test_failure_reasons():
    ok = RunResult(score=0.4, status="paused", steps=2, total_steps=10, history=[{"step": 2, "train_loss": 1.0, "valid_loss": 1.1}])
    assert failure_reason(ok) is None
    assert "diverged" in failure_reason(RunResult(score=0.3, status="diverged", steps=3, total_steps=10, reason="loss nan"))
    nan = RunResult(score=0.3, status="paused", steps=2, total_steps=10, history=[{"step": 2, "train_loss": float("nan")}])
    assert "train_loss nan" in failure_reason(nan)
    assert "score 0" in failure_reason(RunResult(score=0.0, status="finished", steps=10, total_steps=10))
    # At the early point a 0 (the answer format not learned yet) is a low score; at the end it is a failure.
    early_zero = RunResult(score=0.0, status="paused", steps=2, total_steps=10, metrics={"invalid_rate": 1.0})
    assert failure_reason(early_zero, final=False) is None and "invalid_rate" in failure_reason(early_zero)
    assert "nan" in failure_reason(RunResult(score=0.0, status="paused", steps=2, total_steps=10, valid_loss=float("nan")), final=False)
    assert "inf" in failure_reason(RunResult(score=0.2, status="finished", steps=10, total_steps=10, valid_loss=float("inf")))


def test_synthetic_runner_pauses_and_continues_without_retraining(tmp_path):
    runner = SyntheticRunner(train_size=64)
    params = {"lr": 1e-3, "alpha": 16, "r": 8, "dropout": 0.05, "epochs": 2, "batch_size": 8, "warmup_ratio": 0.0}
    early = runner.run(params, tmp_path, 0.25)
    assert early.status == "paused" and early.steps == 4 and early.total_steps == 16
    final = runner.run(params, tmp_path, None, test=True)
    assert final.status == "finished" and final.steps == 16 and final.test_score is not None
    state = json.loads((tmp_path / "synthetic_state.json").read_text())
    assert state["segments"] == [[0, 4], [4, 16]]
    with pytest.raises(LeantuneError):
        runner.run({**params, "lr": 2e-3}, tmp_path, None)


# ----------------------------------------------------------------------------- the two phases


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One two-phase search with a report, shared by the tests that only read it."""
    tmp_path = tmp_path_factory.mktemp("search")
    cfg = _cfg(tmp_path, trials=10, top_k=3)
    lines: list[str] = []
    EarlySearch(cfg, SyntheticRunner(train_size=64), load_space(None), log=lines.append).run()
    md = write_report(cfg.study, cfg.storage_url, tmp_path / "report", top_k=3)
    return cfg, lines, md


def test_phase1_trains_every_trial_to_the_early_point_and_keeps_it(searched):
    cfg, lines, _ = searched
    study, _ = _studies(cfg)
    phase1 = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(phase1) == 10 and len(study.trials) == 10
    assert sum(line.startswith("[phase 1]") for line in lines) == 10
    baseline = study.trials[0]
    assert baseline.user_attrs["baseline"] and baseline.params == load_space(None).baseline_params()
    for t in phase1:
        assert _segments(cfg.work_dir, t)[0] == [0, t.user_attrs["early"]["steps"]]
        assert t.user_attrs["early"]["steps"] == math.ceil(0.25 * t.user_attrs["early"]["total_steps"])


def test_phase2_continues_the_top_k_and_baseline_from_their_checkpoints(searched):
    cfg, lines, _ = searched
    study, final = _studies(cfg)
    phase1 = [t for t in study.trials if t.state.name == "COMPLETE"]
    done = [t for t in final.trials if t.state.name == "COMPLETE"]
    status = {t.user_attrs["source_trial"]: t.user_attrs["status"] for t in done}
    # Early rank order; a continuation that fails is replaced by the next trial (backfill) until 3 are usable.
    ranked = sorted((t for t in phase1 if t.user_attrs["status"] == "ok"), key=lambda t: (-t.value, t.number))
    expected, usable = [], 0
    for t in ranked:
        if usable == 3:
            break
        expected.append(t.number)
        usable += status.get(t.number) == "ok"
    assert set(status) == set(expected) | {study.trials[0].number} and len(done) == len(status)
    assert {t.user_attrs["role"] for t in done if t.user_attrs["source_trial"] in expected[:3]} == {"top_k"}
    assert sum(line.startswith("[phase 2]") for line in lines) == len(done)
    for t in done:  # continued, not retrained: exactly one more segment, from the early step on
        source = study.trials[t.user_attrs["source_trial"]]
        e = source.user_attrs["early"]["steps"]
        assert _segments(cfg.work_dir, source) == [[0, e], [e, t.user_attrs["final"]["steps"]]]
        assert t.user_attrs["final"]["added_steps"] == t.user_attrs["final"]["steps"] - e
        assert t.params == source.params
    for t in phase1:
        if t.number not in status:
            assert len(_segments(cfg.work_dir, t)) == 1


class LateDivergence(SyntheticRunner):
    """Every run with lr above 1e-3 diverges after its early point."""

    def run(self, params, out_dir, fraction, test=False):
        result = super().run(params, out_dir, fraction, test)
        if fraction is None and params["lr"] > 1e-3:
            result.status, result.reason, result.score = "diverged", "loss nan (late)", 0.0
        return result


def test_failed_top_k_continuations_are_backfilled(tmp_path):
    space = tmp_path / "space.toml"  # large learning rates look best early, then blow up
    space.write_text("[params.lr]\nlow = 1e-4\nhigh = 5e-3\nlog = true\n[params.alpha]\nvalue = 16\n")
    cfg = _cfg(tmp_path, trials=10, top_k=2, sampler="random", baseline=False)
    EarlySearch(cfg, LateDivergence(train_size=64, instability=1.0), load_space(space), log=lambda _: None).run()
    study, final = _studies(cfg)
    done = sorted((t for t in final.trials if t.state.name == "COMPLETE"), key=lambda t: t.number)
    ok = [t for t in done if t.user_attrs["status"] == "ok"]
    assert len(ok) == 2 and any(t.user_attrs["role"] == "backfill" for t in done)
    assert all(study.trials[t.user_attrs["source_trial"]].params["lr"] <= 1e-3 for t in ok)
    assert all(t.user_attrs["fail_reason"].startswith("diverged") for t in done if t not in ok)


def test_report_files_and_figures(searched):
    cfg, _, md = searched
    text = md.read_text()
    for png in ("score_vs_trial.png", "lr_vs_alpha.png", "valid_loss.png", "early_vs_final.png"):
        assert (md.parent / png).stat().st_size > 1000 and png in text
    records = load_records(cfg.study, cfg.storage_url)
    best = records.best()
    assert best is not None and f"Chosen by validation: trial {best.number}" in text
    assert "Baseline (default hyperparameters, trial 0)" in text
    # The default space searches epochs: the early points differ in epochs, and the report says so.
    epochs = {t.params["epochs"] for t in records.trials if t.status == "ok"}
    assert len(epochs) > 1 and "epochs (each trial's fraction of its own schedule), so early scores are not taken at equal compute" in text
    summary = json.loads((md.parent / "summary.json").read_text())
    c = summary["compute"]
    assert c["total_steps"] == c["phase1_steps"] + c["phase2_steps"] < c["full_fidelity_steps"]
    assert summary["best"]["trial"] == best.number


class FlakyRunner(SyntheticRunner):
    """Crashes for tiny learning rates and returns a NaN loss for large batches: the study must go on."""

    def run(self, params, out_dir, fraction, test=False):
        if params["lr"] < 3e-5:
            raise RuntimeError("CUDA out of memory (simulated)")
        result = super().run(params, out_dir, fraction, test)
        if params["batch_size"] == 16:
            result.history.append({"epoch": 0.1, "step": result.steps, "train_loss": float("inf"), "valid_loss": 1.0})
        return result


def test_failed_runs_are_recorded_with_reasons_and_never_crash(tmp_path):
    cfg = _cfg(tmp_path, trials=10, sampler="random", baseline=False)
    space = load_space(None)
    EarlySearch(cfg, FlakyRunner(train_size=64, instability=0.02), space, log=lambda _: None).run()
    study, _ = _studies(cfg)
    assert all(t.state.name == "COMPLETE" for t in study.trials) and len(study.trials) == 10
    failed = [t for t in study.trials if t.user_attrs["status"] == "failed"]
    reasons = " | ".join(t.user_attrs["fail_reason"] for t in failed)
    assert all(t.value == 0.0 for t in failed)
    assert "RuntimeError: CUDA out of memory" in reasons and "train_loss inf" in reasons
    assert "diverged" in reasons or "score 0" in reasons
    for t in study.trials:
        if t.params["lr"] < 3e-5:
            assert t.user_attrs["status"] == "failed" and (cfg.work_dir / t.user_attrs["checkpoint"] / "error.txt").exists()
    text = write_report(cfg.study, cfg.storage_url, tmp_path / "report").read_text()
    assert "## Failed trials" in text and "CUDA out of memory" in text


def test_validate_all_measures_rank_agreement(tmp_path):
    cfg = _cfg(tmp_path, trials=6, validate_all=True)
    EarlySearch(cfg, SyntheticRunner(train_size=64), load_space(None), log=lambda _: None).run()
    records = load_records(cfg.study, cfg.storage_url)
    resumable = [t for t in records.trials if t.early_status == "paused"]
    assert resumable and all(t.final_status is not None for t in resumable)
    summary = json.loads((Path(write_report(cfg.study, cfg.storage_url, tmp_path / "r", top_k=3)).parent / "summary.json").read_text())
    agreement = summary["rank_agreement"]
    assert agreement["all_continued"] and agreement["n"] == len(resumable)
    assert -1 <= agreement["spearman"] <= 1 and 0 <= agreement["topk_overlap"] <= 3
    lo, hi = agreement["spearman_ci"]
    assert -1 <= lo <= agreement["spearman"] <= hi <= 1  # a bootstrap interval over trials
    fractions = summary["ranking_by_fraction"]
    assert [r["fraction"] for r in fractions] == [0.1, 0.2, 0.3, 0.5] and all(r["n"] <= len(resumable) for r in fractions)
    assert "When does the ranking settle?" in (tmp_path / "r" / "report.md").read_text()


def test_agreement_interval_and_score_at_fraction():
    from leantune.tuning.analysis import TrialRecord, agreement_interval, score_at_fraction

    perfect = agreement_interval(list(range(10)), [2 * x for x in range(10)], 3, n_boot=200)
    assert perfect["spearman_ci"] == pytest.approx([1.0, 1.0]) and perfect["topk_overlap_ci"][1] <= 3
    noisy = agreement_interval([0, 1, 2, 3, 4, 5, 6, 7], [1, 0, 3, 2, 5, 4, 7, 6], 3, n_boot=300)
    assert noisy["spearman_ci"][0] < noisy["spearman"] < 1.0
    trial = TrialRecord(number=0, params={}, baseline=False, status="ok", fail_reason=None, early_score=0.5, early_status="paused",
                        early_steps=2, total_steps=10, early_tokens=0, final_steps=10,
                        history=[{"step": 1, "valid_loss": 2.0}, {"step": 3, "valid_loss": 1.0}, {"step": 6, "valid_loss": float("nan")}])
    assert score_at_fraction(trial, 0.1) == pytest.approx(math.exp(-2.0))
    assert score_at_fraction(trial, 0.5) == pytest.approx(math.exp(-1.0))  # the NaN at step 6 is past 50% anyway
    assert score_at_fraction(trial, 0.05) is None


def test_early_epoch_span():
    from leantune.tuning.analysis import early_epoch_span, early_epochs

    # 20% of a 5-epoch and of a 15-epoch schedule: 1.0 and 3.0 epochs; a zero-step schedule is left out
    assert early_epoch_span([(5.0, 20, 100), (15.0, 60, 300), (3.0, 0, 0)]) == pytest.approx((1.0, 3.0))
    assert early_epoch_span([(5.0, 20, 100), (10.0, 10, 100)]) is None  # the same point, 1.0 epoch each
    assert early_epoch_span([(5.0, 20, 100)]) is None
    assert early_epochs(15.0, 60, 300) == pytest.approx(3.0)
    assert early_epochs(3.0, 0, 0) is None  # no schedule


def test_rank_agreement():
    assert rank_agreement([1, 2, 3, 4], [10, 20, 30, 40], 2) == {"n": 4, "k": 2, "spearman": 1.0, "kendall": 1.0, "topk_overlap": 2}
    rev = rank_agreement([1, 2, 3, 4], [4, 3, 2, 1], 2)
    assert rev["spearman"] == pytest.approx(-1.0) and rev["topk_overlap"] == 0


class InterruptingRunner(SyntheticRunner):
    def __init__(self, at_call: int, **kw):
        super().__init__(**kw)
        self.calls, self.at_call = 0, at_call

    def run(self, params, out_dir, fraction, test=False):
        self.calls += 1
        if self.calls == self.at_call:
            raise KeyboardInterrupt
        return super().run(params, out_dir, fraction, test)


def test_study_resumes_after_interruption_with_exactly_n_trials(tmp_path):
    cfg = _cfg(tmp_path, trials=8, top_k=2)
    with pytest.raises(KeyboardInterrupt):
        EarlySearch(cfg, InterruptingRunner(at_call=4, train_size=64), load_space(None), log=lambda _: None).run()
    EarlySearch(cfg, SyntheticRunner(train_size=64), load_space(None), log=lambda _: None).run()
    study, final = _studies(cfg)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 8 and states.count("FAIL") == 1 and states[3] == "FAIL"
    assert len([t for t in final.trials if t.state.name == "COMPLETE"]) >= 2


def test_joining_with_other_settings_is_refused(tmp_path):
    cfg = _cfg(tmp_path, trials=2, top_k=1)
    EarlySearch(cfg, SyntheticRunner(train_size=32), load_space(None), log=lambda _: None).run()
    with pytest.raises(LeantuneError, match=r"^study '.+': holds trials made with other settings: early_fraction=0.25 there, 0.5 now"):
        EarlySearch(_cfg(tmp_path, trials=2, top_k=1, early_fraction=0.5), SyntheticRunner(train_size=32), load_space(None))


def test_gp_sampler_is_wired(tmp_path):
    # Failed runs are COMPLETE trials (value 0), so GPSampler, which fits on COMPLETE trials only, sees them.
    cfg = _cfg(tmp_path, trials=3, top_k=1, sampler="gp")
    search = EarlySearch(cfg, SyntheticRunner(train_size=32), load_space(None), log=lambda _: None)
    assert isinstance(search.study.sampler, optuna.samplers.GPSampler)
    search.run()
    study, _ = _studies(cfg)
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 3


def test_killed_worker_trial_is_failed_and_retried(tmp_path):
    """A worker killed mid-trial: its heartbeat stops, another worker fails the trial and reruns it."""
    cfg = _cfg(tmp_path, trials=3, top_k=1, heartbeat_interval=1, grace_period=2, poll_s=0.5)
    cmd = [sys.executable, "-m", "leantune", "tune", "--runner", "synthetic", "--study", cfg.study, "--storage", cfg.storage_url,
           "--work-dir", str(cfg.work_dir), "--trials", "3", "--top-k", "1", "--early-fraction", "0.25", "--heartbeat", "1",
           "--train-size", "32", "--synthetic-step-s", "30", "--no-report"]
    victim = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    db = Path(cfg.storage_url[len("sqlite:///"):])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # read the file directly: opening it with Optuna would race its set-up
            try:
                with sqlite3.connect(db, timeout=5) as con:
                    # Mid-trial: running with a heartbeat and all its parameters drawn (the objective sets
                    # `checkpoint` right after drawing them; a worker killed while drawing leaves only some,
                    # and one killed before drawing leaves nothing to rerun: that case is the orphan test below).
                    running = con.execute("SELECT COUNT(*) FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
                                          "WHERE t.state = 'RUNNING' AND EXISTS (SELECT 1 FROM trial_user_attributes u "
                                          "WHERE u.trial_id = t.trial_id AND u.key = 'checkpoint')").fetchone()[0]
            except sqlite3.OperationalError:  # no file or no tables yet
                running = 0
            if running:
                break
            assert victim.poll() is None, victim.stderr.read().decode()
            time.sleep(0.3)
        else:
            pytest.fail("the first worker never started a trial")
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
    EarlySearch(cfg, SyntheticRunner(train_size=32), load_space(None), log=lambda _: None).run()
    study, _ = _studies(cfg)
    killed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(killed) == 1
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == killed[0].number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == killed[0].params
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 3


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_trial_orphaned_before_its_heartbeat_is_failed_and_retried(tmp_path):
    """Optuna never marks stale a RUNNING trial that has no heartbeat yet (a worker killed between
    creating the trial and starting its objective); the search fails and retries it itself."""
    cfg = _cfg(tmp_path, trials=3, top_k=1, heartbeat_interval=1, orphan_after_s=0.0, baseline=False)
    search = EarlySearch(cfg, SyntheticRunner(train_size=32), load_space(None), log=lambda _: None)
    orphan = search.study.ask()  # RUNNING, no heartbeat, objective never started
    search.run()
    study, _ = _studies(cfg)
    assert study.trials[orphan.number].state.name == "FAIL"
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 3 and states.count("FAIL") == 1


def test_cli_synthetic_search_and_report(tmp_path):
    from typer.testing import CliRunner

    from leantune.cli import app

    work = tmp_path / "cli"
    result = CliRunner().invoke(app, ["tune", "--runner", "synthetic", "--study", "c", "--work-dir", str(work), "--trials", "4",
                                      "--top-k", "1", "--train-size", "32", "--no-report"])
    assert result.exit_code == 0, result.output
    assert result.output.count("[phase 1]") == 4 and "[phase 2]" in result.output and "optuna-dashboard" in result.output
    assert not (work / "report").exists()
    result = CliRunner().invoke(app, ["tune", "report", "--study", "c", "--work-dir", str(work), "--out", str(tmp_path / "r2")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r2" / "early_vs_final.png").exists()


def test_real_finetune_path_with_the_tiny_model(tmp_path):
    """Phase 1 pauses real LoRA runs (tiny random Llama) at half their schedule; phase 2 continues them."""
    pytest.importorskip("peft")
    from leantune.tuning.finetune_runner import FinetuneRunner

    space_file = tmp_path / "space.toml"  # 4 examples, batch 4, 2 epochs: 2 steps, paused after 1
    space_file.write_text("[params.epochs]\nvalue = 2\n[params.batch_size]\nvalue = 4\n")
    runner = FinetuneRunner(task="attributes", model="tiny", train_size=4, eval_limit=1, valid_loss_size=2, objective="valid_loss",
                            # short (the CPU is slow), but past the longest prompt (180 tokens): answers must fit
                            fixed={"cutoff_len": 192, "train_on_inputs": True},
                            task_options={"progress": False, "max_new_tokens": 8})
    cfg = _cfg(tmp_path, trials=1, top_k=1, early_fraction=0.5)  # the baseline trial alone: the CPU is slow
    EarlySearch(cfg, runner, load_space(space_file), settings=runner.settings(), log=lambda _: None).run()
    study, final = _studies(cfg)
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    for t in study.trials:
        early = t.user_attrs["early"]
        assert (early["status"], early["steps"], early["total_steps"]) == ("paused", 1, 2), t.user_attrs
        assert 0 < t.value == pytest.approx(math.exp(-early["valid_loss"]))
    done = [t for t in final.trials if t.state.name == "COMPLETE"]
    assert [t.user_attrs["source_trial"] for t in done] == [0]
    for t in done:
        fin = t.user_attrs["final"]
        assert (fin["status"], fin["steps"], fin["added_steps"]) == ("finished", 2, 1), t.user_attrs
        assert 0 < fin["test_score"] == pytest.approx(math.exp(-fin["metrics"]["heldout_loss"]))
        folder = cfg.work_dir / study.trials[t.user_attrs["source_trial"]].user_attrs["checkpoint"]
        assert (folder / "adapter" / "adapter_config.json").exists()


def test_a_finished_trial_keeps_its_test_rows_for_a_paired_comparison(tmp_path):
    """With the generated-answer objective, a trial's test evaluation writes ``test/per_unit.jsonl``
    beside the run, so a pick can be compared with the default recipe unit by unit (bench_tuning)."""
    pytest.importorskip("peft")
    from leantune.evaluation.units import read_per_unit
    from leantune.tuning.finetune_runner import TEST_FOLDER, FinetuneRunner

    runner = FinetuneRunner(task="attributes", model="tiny", train_size=4, eval_limit=2, valid_loss_size=2, objective="metric",
                            fixed={"cutoff_len": 192, "train_on_inputs": True}, task_options={"progress": False, "max_new_tokens": 4})
    params = {"epochs": 1, "batch_size": 4}
    runner.run(params, tmp_path / "t0", None)
    assert not (tmp_path / "t0" / TEST_FOLDER).exists()  # validation only
    final = runner.run(params, tmp_path / "t0", None, test=True)
    rows = read_per_unit(tmp_path / "t0" / TEST_FOLDER)
    assert rows and all("::" in r["unit"] for r in rows)
    assert sum(r["correct"] for r in rows) / len(rows) == pytest.approx(final.metrics["test_accuracy"])


def test_a_finished_trial_is_scored_again_on_a_larger_test_set(tmp_path):
    """``evaluate_test`` scores a finished trial's adapter on another number of test units and keeps
    the rows; on the trial's own limit it gives the trial's own test score."""
    pytest.importorskip("peft")
    from leantune.evaluation.units import read_per_unit
    from leantune.io import read_json
    from leantune.errors import ParameterError
    from leantune.tuning.finetune_runner import FinetuneRunner

    runner = FinetuneRunner(task="attributes", model="tiny", train_size=4, eval_limit=2, valid_loss_size=2, objective="metric",
                            fixed={"cutoff_len": 192, "train_on_inputs": True}, task_options={"progress": False, "max_new_tokens": 4})
    params = {"epochs": 1, "batch_size": 4}
    final = runner.run(params, tmp_path / "t0", None, test=True)
    same = runner.evaluate_test(tmp_path / "t0", 2, tmp_path / "again")
    assert same == pytest.approx(final.test_score)
    runner.evaluate_test(tmp_path / "t0", 5, tmp_path / "five")
    assert {r["unit"].split("::")[0] for r in read_per_unit(tmp_path / "five")} > {r["unit"].split("::")[0] for r in read_per_unit(tmp_path / "again")}
    assert read_json(tmp_path / "five" / "metrics.json")[runner.metric] is not None
    # The judged answers are kept beside the per-question rows, for `leantune attributes errors`.
    from leantune.tasks.attributes_errors import read_predictions

    answers, _ = read_predictions(tmp_path / "five")
    assert [f"{r['product_id']}::{r['attribute']}" for r in answers] == [r["unit"] for r in read_per_unit(tmp_path / "five")]
    # The answers were logged as they came: scoring again (after an interruption) generates nothing.
    assert (tmp_path / "five" / GENERATION_LOG).is_file()
    rows = read_per_unit(tmp_path / "five")
    import transformers

    def no_generation(*a, **k):
        raise AssertionError("generated again")

    mp = pytest.MonkeyPatch()
    mp.setattr(transformers.GenerationMixin, "generate", no_generation)
    try:
        runner.evaluate_test(tmp_path / "t0", 5, tmp_path / "five")
    finally:
        mp.undo()
    assert read_per_unit(tmp_path / "five") == rows
    loss = FinetuneRunner(task="attributes", model="tiny", train_size=4, eval_limit=2, valid_loss_size=2, objective="valid_loss")
    with pytest.raises(ParameterError, match="objective"):
        loss.evaluate_test(tmp_path / "t0", 2, tmp_path / "no")


def test_report_names_a_sqlite_storage_relative_to_the_working_folder(tmp_path, monkeypatch):
    """A committed report must not carry the machine's folders: a SQLite study inside the working
    folder is printed as a relative URL (one that still opens from there)."""
    from leantune.tuning.study import public_url

    monkeypatch.chdir(tmp_path)
    assert public_url(f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}") == "sqlite:///runs/optuna.db"
    assert public_url("postgresql://u:secret@h:5/db") == "postgresql://u:***@h:5/db"
    cfg = _cfg(tmp_path / "w", trials=2, top_k=1)
    EarlySearch(cfg, SyntheticRunner(train_size=16), load_space(None)).run()
    text = write_report(cfg.study, cfg.storage_url, tmp_path / "report", top_k=1).read_text()
    assert str(tmp_path) not in text and "sqlite:///w/work/" in text
