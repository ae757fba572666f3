"""Fixes to ``leantune tune``: the README's bare postgresql:// URL, resumed workers that replayed
their sampler, a cutoff_len that cuts the answers off, and search spaces no trial can run.

The PostgreSQL server test of the bare URL is in test_tuning_postgres.py (it reuses that file's
throw-away cluster); here the URL rewriting itself is checked without a server.
"""
from __future__ import annotations

import pytest

from leantune.cli import main
from leantune.errors import DataError, LeantuneError
from leantune.tuning import EarlySearch, SyntheticRunner, TuneConfig, load_space
from leantune.tuning import study as study_module
from leantune.tuning.space import DEFAULT_BASELINE, ParamSpec, SearchSpace, _default_params

optuna = pytest.importorskip("optuna")


def _cfg(tmp_path, **kw) -> TuneConfig:
    base = dict(study="t", work_dir=tmp_path / "work", trials=6, top_k=1, early_fraction=0.25, seed=0)
    return TuneConfig(**{**base, **kw})


def run_main(capsys, *args) -> tuple[int, str, str]:
    """``leantune ARGS`` in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return (0 if done.value.code is None else done.value.code), out, err


# ----------------------------------------------------------------------------- 1. postgresql:// with psycopg2


@pytest.mark.parametrize("installed, url, expected", [
    ({"psycopg2"}, "postgresql://u@h:5432/db", "postgresql+psycopg2://u@h:5432/db"),  # the README's form
    ({"psycopg2", "psycopg"}, "postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),  # SQLAlchemy's psycopg 3 default works
    (set(), "postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),  # neither: SQLAlchemy's own "missing driver" error
    ({"psycopg2"}, "postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),  # a named driver is kept
    ({"psycopg2"}, "sqlite:///x/optuna.db", "sqlite:///x/optuna.db"),
    ({"psycopg2"}, "mysql://u@h/db", "mysql://u@h/db"),
])
def test_bare_postgresql_url_uses_the_installed_driver(monkeypatch, installed, url, expected):
    monkeypatch.setattr(study_module, "_importable", lambda module: module in installed)
    assert study_module.driver_url(url) == expected


def test_bare_postgresql_url_opens_with_psycopg2_when_psycopg3_is_missing(monkeypatch):
    """Through make_storage: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; with only
    psycopg2 importable the storage must get as far as psycopg2 trying to connect (refused: nothing
    listens on port 1), not stop at 'missing database driver'."""
    pytest.importorskip("psycopg2")
    monkeypatch.setattr(study_module, "_importable", lambda module: module == "psycopg2", raising=False)
    with pytest.raises(LeantuneError) as err:
        study_module.make_storage("postgresql://nobody@127.0.0.1:1/db", heartbeat_interval=None)
    message = str(err.value)
    assert "missing database driver" not in message, message
    assert message.startswith("storage 'postgresql://nobody@127.0.0.1:1/db': cannot open (OperationalError"), message


# ----------------------------------------------------------------------------- 2. a resumed worker's sampler


class InterruptingRunner(SyntheticRunner):
    """Ctrl-C (or a kill) in the middle of the ``at_call``-th run."""

    def __init__(self, at_call: int, **kw):
        super().__init__(**kw)
        self.at_call, self.calls = at_call, 0

    def run(self, params, out_dir, fraction, test=False):
        self.calls += 1
        if self.calls == self.at_call:
            raise KeyboardInterrupt
        return super().run(params, out_dir, fraction, test)


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_resumed_worker_does_not_repeat_finished_configurations(tmp_path, sampler):
    """The same worker (same --seed, same --worker) restarted on its study used to re-seed its
    sampler and propose trial 1's parameters again as its next trial."""
    cfg = _cfg(tmp_path, sampler=sampler)
    with pytest.raises(KeyboardInterrupt):
        EarlySearch(cfg, InterruptingRunner(at_call=4, train_size=32), load_space(None), log=lambda _: None).run()
    storage = optuna.storages.RDBStorage(cfg.storage_url)
    before = optuna.load_study(study_name=cfg.study, storage=storage).trials
    finished = [t.params for t in before if t.state.name == "COMPLETE"]
    assert len(finished) == 3  # the baseline and two sampled trials; the fourth was interrupted

    resumed = EarlySearch(cfg, SyntheticRunner(train_size=32), load_space(None), log=lambda _: None)
    resumed.run_phase1()
    after = optuna.load_study(study_name=cfg.study, storage=storage).trials
    new = [t for t in after if t.number >= len(before)]
    assert new and all(t.state.name == "COMPLETE" for t in new)
    assert all(t.params not in finished for t in new), [t.params for t in new]
    done = [t.params for t in after if t.state.name == "COMPLETE"]
    assert len(done) == cfg.trials and all(done.count(p) == 1 for p in done)
    assert resumed.sampler_seed == study_module.sampler_seed(cfg.seed, cfg.worker, len(before)) != cfg.seed


def test_sampler_seed_is_the_fresh_one_for_a_new_study_and_deterministic_on_resume():
    seed_of = study_module.sampler_seed
    assert seed_of(7, 0, 0) == 7 and seed_of(7, 2, 0) == 2007  # a fresh study reproduces as before
    assert seed_of(7, 0, 5) == seed_of(7, 0, 5)  # deterministic
    seeds = {seed_of(7, w, n) for w in range(3) for n in range(1, 40)}
    assert len(seeds) == 3 * 39 and not seeds & {7, 1007, 2007}
    assert all(0 <= s < 2**32 for s in seeds)


# ----------------------------------------------------------------------------- 3. cutoff_len cuts the answers off


def _finetune_runner(cutoff_len: int, train_size: int = 8, **fixed):
    pytest.importorskip("transformers")
    from leantune.tuning.finetune_runner import FinetuneRunner

    return FinetuneRunner(task="attributes", model="tiny", train_size=train_size, eval_limit=1, valid_loss_size=2,
                          objective="valid_loss", fixed={"cutoff_len": cutoff_len, **fixed},
                          task_options={"progress": False, "max_new_tokens": 8})


def test_cutoff_len_that_cuts_every_answer_is_refused_before_any_training(tmp_path):
    """It used to train every trial and report each as 'diverged ... try a lower learning rate'
    (with the loss on the answers only, no label was left: a NaN loss)."""
    cfg = _cfg(tmp_path)
    with pytest.raises(LeantuneError) as err:
        EarlySearch(cfg, _finetune_runner(32), load_space(None), log=lambda _: None)
    message = str(err.value)
    assert message.startswith("cutoff_len 32: cuts the answer off: all 8 training examples"), message
    assert "raise it above" in message and "\n" not in message and "learning rate" not in message
    assert not cfg.work_dir.exists()  # refused before the storage (or any trial folder) was created


def test_cutoff_len_cutting_some_answers(tmp_path):
    # attributes prompts take about 125-195 tokens: at 150 some examples keep no answer token. With
    # the loss on the answers only (the task's setting) those rows have no loss: refused.
    with pytest.raises(LeantuneError, match=r"^cutoff_len 150: cuts the answer off: \d+ of the 16 training"):
        _finetune_runner(150, train_size=16).preflight()
    # With the loss on prompt and answer they still train something: allowed; so is a long enough cut.
    _finetune_runner(150, train_size=16, train_on_inputs=True).preflight()
    _finetune_runner(384, train_size=16).preflight()


def test_cutoff_len_cutting_validation_answers(tmp_path):
    """The trainer's validation loss is a NaN 'divergence' too when its examples keep no answer token."""
    from leantune.tasks.base import TextExample

    runner = _finetune_runner(384, train_size=4)
    train, _ = runner._examples()
    runner._data = (train, [TextExample(prompt="word " * 400, response="answer")])
    with pytest.raises(LeantuneError, match=r"^cutoff_len 384: cuts the answer off: all 1 validation examples"):
        runner.preflight()


def test_cli_cutoff_len_too_short_is_one_error_line(tmp_path, capsys):
    work = tmp_path / "w"
    # One small trial, so that without the check the command ends quickly (every trial 'diverged', exit 0).
    code, out, err = run_main(capsys, "tune", "--task", "attributes", "--model", "tiny", "--objective", "valid_loss",
                              "--train-size", "4", "--valid-size", "2", "--trials", "1", "--top-k", "1", "--cutoff-len", "24",
                              "--work-dir", str(work), "--no-report")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in out + err, err
    assert errors[0].startswith("error: --cutoff-len 24: cuts the answer off"), err
    assert "[phase 1]" not in out and not work.exists()


def test_fixed_settings_are_checked_when_the_runner_is_made():
    with pytest.raises(LeantuneError, match="cutoff_len must be at least 8"):
        _finetune_runner(4)
    with pytest.raises(LeantuneError, match=r"fixed fine-tuning settings: \['cutof_len'\]"):
        _finetune_runner(64, cutof_len=64)


# ----------------------------------------------------------------------------- 4. spaces no trial can run


@pytest.mark.parametrize("text, needle", [
    ("[params.batch_size]\nvalue = 0\n", "params.batch_size = 0: batch sizes must be positive"),
    ("[params.lr]\nvalue = -1\n", "params.lr = -1: lr must be positive"),
    # (a baseline inside the range: otherwise the default baseline lying outside it was refused already)
    ("[params.lr]\nlow = -2.0\nhigh = -1.0\n[baseline]\nlr = -1.5\n", "params.lr = [-2.0, -1.0]: no value in the range is valid (lr must be positive)"),
    ("[params.epochs]\nlow = -3\nhigh = 0\n[baseline]\nepochs = -1\n", "params.epochs = [-3, 0]: no value in the range is valid"),
    ("[params.dropout]\nlow = 0.0\nhigh = 1.5\n", "params.dropout.high = 1.5: dropout must be in [0, 1)"),
    ("[params.r]\nchoices = [0, 8]\n", "params.r.choices holds 0: r must be positive"),
    ("[params.max_steps]\nlow = 0\nhigh = 10\n[baseline]\nmax_steps = 5\n", "params.max_steps.low = 0: max_steps must be positive"),
    ("[params.warmup_ratio]\nvalue = 1.0\n", "params.warmup_ratio = 1.0: warmup_ratio must be in [0, 1)"),
    ('[params.lr]\nvalue = "fast"\n', "params.lr = 'fast': must be a number, got str"),
])
def test_space_that_no_trial_can_run_is_refused(tmp_path, text, needle):
    path = tmp_path / "space.toml"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        load_space(path)
    assert str(err.value) == f"{path}: {needle}" or str(err.value).startswith(f"{path}: {needle}"), str(err.value)
    assert "\n" not in str(err.value)


def test_valid_spaces_still_load(tmp_path):
    path = tmp_path / "space.toml"
    # A step budget overrides epochs, so epochs need no positive value then (as in FinetuneConfig).
    path.write_text("[params.max_steps]\nvalue = 10\n[params.epochs]\nvalue = 0\n[params.dropout]\nlow = 0.0\nhigh = 0.5\n")
    assert load_space(path).params["max_steps"].value == 10
    load_space(None).check()


def test_search_space_built_in_code_is_checked_before_the_study_is_made(tmp_path):
    params = {**_default_params(), "batch_size": ParamSpec("batch_size", "fixed", value=0)}
    cfg = _cfg(tmp_path)
    with pytest.raises(LeantuneError, match=r"search space: params.batch_size = 0: batch sizes must be positive"):
        EarlySearch(cfg, SyntheticRunner(train_size=32), SearchSpace(params=params, baseline=dict(DEFAULT_BASELINE)))
    assert not cfg.work_dir.exists()


@pytest.mark.parametrize("text, needle", [
    ("[params.batch_size]\nvalue = 0\n", "params.batch_size = 0"),
    ("[params.lr]\nvalue = -1\n", "params.lr = -1"),
])
def test_cli_refuses_a_space_every_trial_would_fail_with_exit_2(tmp_path, capsys, text, needle):
    """It used to run 30 failed trials and exit 0."""
    space, work = tmp_path / "space.toml", tmp_path / "w"
    space.write_text(text)
    code, out, err = run_main(capsys, "tune", "--runner", "synthetic", "--work-dir", str(work), "--space", str(space),
                              "--trials", "3", "--no-report")
    assert code == 2 and err.splitlines() == [err.splitlines()[0]] and err.startswith(f"error: {space}: {needle}"), err
    assert "Traceback" not in out + err and "[phase 1]" not in out and not work.exists()


def test_cli_cutoff_len_zero_is_not_taken_for_the_default(tmp_path, capsys):
    code, _, err = run_main(capsys, "tune", "--task", "attributes", "--model", "tiny", "--cutoff-len", "0",
                            "--objective", "valid_loss", "--train-size", "4", "--valid-size", "2", "--trials", "1",
                            "--top-k", "1", "--work-dir", str(tmp_path / "w"), "--no-report")
    assert code == 2 and err.startswith("error: fine-tuning setting: cutoff_len must be at least 8"), err
