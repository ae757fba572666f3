"""Early-performance Bayesian search on Optuna, in two phases, safe to run from several workers.

Phase 1 — study ``NAME``: each trial trains to ``early_fraction`` of its schedule, keeps that
checkpoint in ``work_dir/trials/NNNN`` and reports the validation score there. The sampler (TPE,
GP or random) proposes the next trial from those early scores. A baseline trial with the default
hyperparameters is enqueued first.

Phase 2 — study ``NAME/final``: the top-k trials by early score (every trial with
``validate_all``) and the baseline are enqueued as Optuna trials carrying ``source_trial``; any
worker pops one, continues that checkpoint to the full schedule and scores it on validation and
test. Popping an enqueued trial is atomic in Optuna's storage, so each continuation runs once.

Failed runs (NaN/inf loss, divergence, score 0, a crash) are COMPLETE trials with value 0 and
``status='failed'`` plus ``fail_reason`` in their user attrs: the samplers (GPSampler fits on
COMPLETE trials only) then learn to avoid the region, and the study never crashes.

Workers use ``study.optimize`` (not ask/tell) so Optuna's heartbeats cover every trial: a
killed worker's trial goes stale, is failed, and ``RetryHeartbeatStaleTrialCallback`` enqueues
a copy that another worker runs. The number of trials is capped exactly by counting *lineages*
(a trial and its retries) rather than trials.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from ..errors import LeantuneError, ParameterError
from ..io import json_safe, refuse_other_settings
from ..paths import display_path
from .runner import OK_STATUSES, RunResult, TrialRunner, failure_reason, safe_run
from .space import SearchSpace

SAMPLERS = ("tpe", "gp", "random")
FINAL_SUFFIX = "/final"
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_study_name(name: str) -> str:
    """``name`` if it is one safe path component (it names the default work dir runs/tune/<study>
    and, with ``/final``, the phase-2 study): letters, digits, '.', '_' and '-', starting with a
    letter or digit, at most 100 characters; so no '..', '/' or empty name."""
    if not isinstance(name, str) or not STUDY_NAME.fullmatch(name):
        raise ParameterError("study", repr(name), "use letters, digits, '.', '_' and '-' (starting with a letter or digit, "
                            "at most 100 characters); the name becomes a folder runs/tune/<study>")
    return name


@dataclass
class TuneConfig:
    """Settings of an early-performance search: the study and its storage, trial counts, the early
    fraction at which trials are scored, how many continue, and the seed (``leantune tune``'s options)."""

    study: str = "leantune-tune"
    storage: str | None = None  # any Optuna RDB URL; None -> sqlite:///<work_dir>/optuna.db
    work_dir: Path = Path("runs/tune")  # checkpoints; must be shared by all workers of a study
    trials: int = 30
    early_fraction: float = 0.2
    top_k: int = 5
    validate_all: bool = False
    sampler: str = "tpe"
    seed: int = 0
    worker: int = 0  # offsets the sampler seed so parallel workers don't propose the same points
    baseline: bool = True
    backfill: bool = True  # a failed top-k continuation is replaced by the next trial in early rank
    heartbeat_interval: int = 60
    grace_period: int | None = None  # default: 2 x heartbeat_interval
    max_retry: int = 2
    poll_s: float = 2.0  # how often a worker waiting for others looks again
    orphan_after_s: float = 600.0  # a RUNNING trial whose objective never started is failed after this

    def __post_init__(self):
        check_study_name(self.study)
        self.work_dir = Path(self.work_dir)
        if self.trials < 1:
            raise ParameterError("trials", self.trials, "must be at least 1")
        if not 0 < self.early_fraction <= 1:
            raise ParameterError("early_fraction", self.early_fraction, "must be in (0, 1]")
        if self.top_k < 1:
            raise ParameterError("top_k", self.top_k, "must be at least 1")
        if self.sampler not in SAMPLERS:
            raise ParameterError("sampler", repr(self.sampler), f"choose one of {', '.join(SAMPLERS)}")
        if self.heartbeat_interval < 1:
            raise ParameterError("heartbeat_interval", self.heartbeat_interval, "must be at least 1 second")
        if self.max_retry < 0:
            raise ParameterError("max_retry", self.max_retry, "must be at least 0")
        if self.worker < 0:
            raise ParameterError("worker", self.worker, "must be at least 0")

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage(self.work_dir)


def default_storage(work_dir: Path) -> str:
    return f"sqlite:///{Path(work_dir).resolve() / 'optuna.db'}"


class SurplusTrial(Exception):
    """A trial created beyond the requested number (a race between workers); it is failed unrun."""


def quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:  # not installed, or installed without what it needs (psycopg 3 without libpq)
        return False
    return True


def driver_url(url: str) -> str:
    """``url`` with the PostgreSQL driver that is installed, so ``postgresql://...`` works with either.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3 (``postgresql+psycopg://``); when
    psycopg 3 cannot be imported but psycopg2 can, the URL becomes ``postgresql+psycopg2://``.
    A URL naming its driver (``postgresql+DRIVER://``), and every other database, is left as given.
    """
    scheme, sep, rest = url.partition("://")
    if sep and scheme == "postgresql" and not _importable("psycopg") and _importable("psycopg2"):
        return f"postgresql+psycopg2://{rest}"
    return url


def make_storage(url: str, heartbeat_interval: int | None = 60, grace_period: int | None = None, max_retry: int = 2):
    """An RDB storage with heartbeats and stale-trial retries (any SQLAlchemy URL Optuna accepts).

    A bare ``postgresql://`` URL uses whichever PostgreSQL driver is installed (``driver_url``);
    errors name the URL as the user gave it.
    """
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    quiet_optuna()
    given, url = url, driver_url(url)
    engine_kwargs = {}
    if url.startswith("sqlite:"):
        # Several worker processes on one SQLite file: wait for the lock instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 60}}
        path = url.split("sqlite:///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    hb = {}
    if heartbeat_interval:
        hb = dict(heartbeat_interval=heartbeat_interval, grace_period=grace_period or 2 * heartbeat_interval,
                  heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry, inherit_intermediate_values=False))
    for attempt in range(4):
        try:
            storage = RDBStorage(url, engine_kwargs=engine_kwargs, **hb)
            if url.startswith("sqlite:"):
                _serialised_sqlite(storage)
            return storage
        except ImportError as exc:
            raise ParameterError("storage", repr(public_url(given)), f"missing database driver ({exc}); for PostgreSQL `pip install psycopg2-binary`") from None
        except Exception as exc:  # noqa: BLE001 - a bad URL, a server that is down, or a race (below)
            # Workers started together on a fresh database race to create Optuna's tables and
            # version row; the loser simply opens it again.
            if attempt == 3 or not any(m in str(exc) for m in SCHEMA_RACE):
                first = str(exc).splitlines()[0][:200] if str(exc) else ""
                raise ParameterError("storage", repr(public_url(given)), f"cannot open ({type(exc).__name__}: {first})") from None
            time.sleep(0.5 + attempt)


SCHEMA_RACE = ("already exists", "UNIQUE constraint failed", "duplicate key value", "database is locked")


def public_url(url: str) -> str:
    """The storage URL fit to print in a report: any password masked, and a SQLite file's path
    written as :func:`leantune.paths.display_path` writes paths (relative to the working folder when
    inside it), so a committed report names no machine's folders."""
    if url.startswith("sqlite:///"):
        return "sqlite:///" + display_path(url[len("sqlite:///"):])
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy parses: print it as given
        return url


def _serialised_sqlite(storage) -> None:
    """Make SQLite safe and quick for several worker processes.

    pysqlite starts transactions lazily, so Optuna's SELECT ... FOR UPDATE (which SQLite ignores)
    does not stop two workers from popping the same enqueued trial. ``BEGIN IMMEDIATE`` takes the
    write lock at the start of every transaction, which serialises them. WAL + synchronous=NORMAL
    keeps each commit from waiting for fsync (every user attr is a commit); the file stays
    consistent when a worker is killed. WAL needs a local disk: share a study across machines
    through PostgreSQL/MySQL, not SQLite on NFS.
    """
    from sqlalchemy import event

    def on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    def on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(storage.engine, "connect", on_connect)
    event.listen(storage.engine, "begin", on_begin)
    storage.engine.dispose()  # reconnect, so every pooled connection gets the settings


def sampler_seed(seed: int, worker: int, trials_before: int) -> int:
    """The sampler seed of worker ``worker`` opening a study that already holds ``trials_before`` trials.

    A fresh study (no trials yet) keeps ``seed + 1000 * worker``, so a search is reproducible. A
    worker that joins or resumes a study (restarted after a crash or kill -9, or started again)
    gets a seed derived from (seed, worker, trials_before): the same worker started again with the
    same ``--seed`` would otherwise replay its random stream and propose the configurations it
    already tried. ``trials_before`` only grows (every trial, finished, failed or waiting, stays in
    the storage, and a trial exists before its parameters are drawn), so each start that draws
    anything draws from a stream no earlier start used; the seed stays a function of the storage's
    state, i.e. deterministic.
    """
    if trials_before == 0:
        return seed + 1000 * worker
    key = json.dumps(["leantune-sampler", seed, worker, trials_before]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big")


def make_sampler(name: str, seed: int):
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


# ---------------------------------------------------------------- bookkeeping over Optuna trials


def _origin(trial) -> int:
    """The trial number a (possibly retried) trial descends from."""
    return trial.system_attrs.get("failed_trial", trial.number)


def live_lineages(trials) -> set[int]:
    """Lineages that have produced, are producing or will produce a result (not FAIL)."""
    from optuna.trial import TrialState

    live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    return {_origin(t) for t in trials if t.state in live}


def _frozen(study, number: int):
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            return t
    raise LeantuneError(f"study {study.study_name!r}: no trial number {number}")


def _fmt_params(params: dict) -> str:
    def fmt(v):
        return f"{v:.2e}" if isinstance(v, float) and (abs(v) < 1e-2 and v != 0) else (f"{v:.3g}" if isinstance(v, float) else str(v))

    return " ".join(f"{k}={fmt(v)}" for k, v in params.items())


def result_attrs(result: RunResult, reason: str | None) -> dict[str, Any]:
    """A run's outcome as one JSON user attr (one attr = one storage commit, so keep it to one)."""
    return {
        "score": result.score if reason is None else 0.0,
        "raw_score": json_safe(result.score),  # JSON has no NaN/inf: the report marks these strings
        "status": result.status,
        "steps": result.steps,
        "total_steps": result.total_steps,
        "tokens": result.tokens,
        "wall_s": round(result.wall_s, 3),
        "valid_loss": json_safe(result.valid_loss),
        "test_score": None if reason or result.test_score is None else json_safe(float(result.test_score)),
        "metrics": json_safe(result.metrics),
        "history": json_safe(result.history),
    }


# ---------------------------------------------------------------- the search


class EarlySearch:
    """One worker of a two-phase early-performance search; ``run()`` does both phases."""

    def __init__(self, cfg: TuneConfig, runner: TrialRunner, space: SearchSpace, settings: dict | None = None,
                 log: Callable[[str], None] = print):
        self.cfg, self.runner, self.space, self.log = cfg, runner, space, log
        # Settings that would fail every trial are refused here, before the storage is created
        # or anything trains: values the space can propose that no fine-tune accepts, and (for a
        # runner that can tell, e.g. a cutoff_len too short for the answers) the runner's own.
        space.check()
        preflight = getattr(runner, "preflight", None)
        if preflight is not None:
            preflight()
        # What makes trials comparable; a worker joining an existing study must match it.
        self.settings = {"early_fraction": cfg.early_fraction, "space": space.to_dict(), "metric": runner.metric, **(settings or {})}
        self.storage = make_storage(cfg.storage_url, cfg.heartbeat_interval, cfg.grace_period, cfg.max_retry)
        self.study = self._open_phase1()
        # Free a trained model's memory between trials (costs ~0.2 s, pointless for simulated runs).
        self.gc = getattr(runner, "collect_garbage", True)

    # -- phase 1

    def _open_phase1(self):
        import optuna

        try:  # trials already there: a restarted worker must not replay its sampler's stream
            before = self.storage.get_n_trials(self.storage.get_study_id_from_name(self.cfg.study))
        except KeyError:  # no such study yet
            before = 0
        self.sampler_seed = sampler_seed(self.cfg.seed, self.cfg.worker, before)
        sampler = make_sampler(self.cfg.sampler, self.sampler_seed)
        try:
            study = optuna.create_study(study_name=self.cfg.study, storage=self.storage, sampler=sampler, direction="maximize")
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=self.cfg.study, storage=self.storage, sampler=sampler)
            self._check_settings(study)
            return study
        # Only the creator gets here (study names are unique in the storage), so this runs once.
        study.set_user_attr("leantune", self.settings)
        if self.cfg.baseline:
            study.enqueue_trial(self.space.baseline_params(), user_attrs={"baseline": True})
        return study

    def _check_settings(self, study) -> None:
        stored = study.user_attrs.get("leantune")
        if stored is None:
            return
        shared = [key for key in self.settings if key in stored]  # a setting the study predates is not compared
        refuse_other_settings({k: stored[k] for k in shared}, {k: _jsonable(self.settings[k]) for k in shared}, "trials",
                              None, "use the same settings or a new study name", where=f"study {self.cfg.study!r}")

    def _phase1_objective(self, trial) -> float:
        trial.set_user_attr("started", trial.number)
        frozen = _frozen(self.study, trial.number)
        fresh = "failed_trial" not in frozen.system_attrs and "fixed_params" not in frozen.system_attrs
        if fresh:
            earlier = [t for t in self.study.get_trials(deepcopy=False) if t.number < trial.number]
            if len(live_lineages(earlier)) >= self.cfg.trials:
                trial.set_user_attr("status", "surplus")
                raise SurplusTrial(f"trial {trial.number}: the study already has {self.cfg.trials} trials")
        params = self.space.suggest(trial)
        rel = f"trials/{trial.number:04d}"
        out_dir = self.cfg.work_dir / rel
        if out_dir.exists():  # left by a deleted study of the same name: never continue a stranger's run
            shutil.rmtree(out_dir)
        trial.set_user_attr("checkpoint", rel)
        retried_from = frozen.system_attrs.get("failed_trial")
        if retried_from is not None:
            trial.set_user_attr("retry_of", retried_from)

        result = safe_run(self.runner, params, out_dir, self.cfg.early_fraction)
        reason = failure_reason(result, final=False)  # a 0 at the early point is a low score, not a failure
        trial.set_user_attr("early", {**result_attrs(result, reason), "worker": self.cfg.worker})
        trial.set_user_attr("status", "failed" if reason else "ok")
        if reason:
            trial.set_user_attr("fail_reason", reason)
        done = len([t for t in self.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]) + 1
        tag = " (baseline)" if frozen.user_attrs.get("baseline") else (f" (retry of {retried_from})" if retried_from is not None else "")
        outcome = f"FAILED: {reason}" if reason else f"early {self.runner.metric}={result.score:.4g}"
        self.log(f"[phase 1] trial {trial.number:3d}{tag} ({done}/{self.cfg.trials})  {_fmt_params(params)}  ->  {outcome}  "
                 f"(step {result.steps}/{result.total_steps}, {result.wall_s:.1f}s)")
        return 0.0 if reason else float(result.score)

    def _recover(self, study) -> None:
        """Fail (and so retry) the trials of dead workers.

        Optuna's heartbeat covers a trial only once its objective runs; a worker killed between
        creating the trial and starting the heartbeat (e.g. during a GP sampler fit) leaves a
        RUNNING trial that never goes stale. Our objectives mark ``started`` first thing, so a
        RUNNING trial without that mark for ``orphan_after_s`` is such an orphan.
        """
        import optuna
        from optuna.trial import TrialState

        optuna.storages.fail_stale_trials(study)
        now = datetime.now()
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("started") == t.number or t.datetime_start is None:
                continue
            if (now - t.datetime_start).total_seconds() > self.cfg.orphan_after_s:
                try:
                    study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
                except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                    continue
                retry = self.storage.get_heartbeat_stale_trial_callback()
                if retry is not None:
                    retry(study, _frozen(study, t.number))

    def run_phase1(self) -> None:
        from optuna.trial import TrialState

        while True:
            self._recover(self.study)  # a killed worker's trial -> FAIL + retry
            trials = self.study.get_trials(deepcopy=False)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if waiting or len(live_lineages(trials)) < self.cfg.trials:
                self.study.optimize(self._phase1_objective, n_trials=1, catch=(SurplusTrial,), gc_after_trial=self.gc)
            elif any(t.state == TrialState.RUNNING for t in trials):
                time.sleep(self.cfg.poll_s)  # other workers are finishing the last trials
            else:
                return

    # -- phase 2

    def _resumable(self) -> list:
        """Phase-1 trials with a checkpoint that can be continued, best early score first."""
        trials = [t for t in self.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.user_attrs.get("status") in ("ok", "failed")]
        resumable = [t for t in trials if t.user_attrs.get("early", {}).get("status") in OK_STATUSES]
        return sorted(resumable, key=lambda t: (-float(t.value), t.number))

    def candidates(self) -> list[tuple[int, str]]:
        """(trial number, role) to continue: top-k by early score (or all), plus the baseline."""
        resumable = self._resumable()
        if self.cfg.validate_all:
            chosen = [(t.number, "all") for t in resumable]
        else:
            chosen = [(t.number, "top_k") for t in resumable if t.user_attrs.get("status") == "ok"][: self.cfg.top_k]
        for t in resumable:
            if t.user_attrs.get("baseline") and t.number not in {n for n, _ in chosen}:
                chosen.append((t.number, "baseline"))
        return chosen

    def _open_phase2(self):
        import optuna

        name = self.cfg.study + FINAL_SUFFIX
        sampler = optuna.samplers.RandomSampler(seed=self.cfg.seed)  # every phase-2 trial is enqueued with fixed params
        try:
            final = optuna.create_study(study_name=name, storage=self.storage, sampler=sampler, direction="maximize")
            creator = True
        except optuna.exceptions.DuplicatedStudyError:
            final = optuna.load_study(study_name=name, storage=self.storage, sampler=sampler)
            creator = False
        if not creator:
            # Let the creator finish enqueueing; if it died meanwhile, enqueue what is missing ourselves.
            deadline = time.monotonic() + max(30.0, 3 * self.cfg.poll_s)
            while "enqueued" not in final.user_attrs and time.monotonic() < deadline:
                time.sleep(min(1.0, self.cfg.poll_s))
        present = {t.user_attrs.get("source_trial") for t in final.get_trials(deepcopy=False) if t.state.name != "FAIL"}
        for number, role in self.candidates():
            if number not in present:
                source = _frozen(self.study, number)
                final.enqueue_trial(source.params, user_attrs={"source_trial": number, "role": role,
                                                               "baseline": bool(source.user_attrs.get("baseline"))})
        final.set_user_attr("enqueued", True)
        return final

    def _phase2_objective(self, final, trial) -> float:
        trial.set_user_attr("started", trial.number)
        source_number = trial.user_attrs.get("source_trial")
        if source_number is None:
            trial.set_user_attr("status", "surplus")
            raise SurplusTrial(f"trial {trial.number}: no enqueued continuation left")
        for other in final.get_trials(deepcopy=False):
            same = other.number != trial.number and other.user_attrs.get("source_trial") == source_number
            if same and (other.state.name == "COMPLETE" or (other.state.name == "RUNNING" and other.number < trial.number)):
                trial.set_user_attr("status", "surplus")
                raise SurplusTrial(f"trial {source_number} is already continued by final trial {other.number}")
        source = _frozen(self.study, source_number)
        params = self.space.suggest(trial)  # returns the enqueued (source) values
        out_dir = self.cfg.work_dir / source.user_attrs["checkpoint"]
        result = safe_run(self.runner, params, out_dir, None, test=True)
        reason = failure_reason(result)
        early_steps = int(source.user_attrs["early"]["steps"])
        trial.set_user_attr("final", {**result_attrs(result, reason), "added_steps": result.steps - early_steps, "worker": self.cfg.worker})
        trial.set_user_attr("status", "failed" if reason else "ok")
        if reason:
            trial.set_user_attr("fail_reason", reason)
        role = trial.user_attrs.get("role")
        outcome = (f"FAILED: {reason}" if reason else
                   f"final valid {self.runner.metric}={result.score:.4g}  test={'-' if result.test_score is None else format(result.test_score, '.4g')}")
        self.log(f"[phase 2] trial {source_number:3d} ({role}) continued {early_steps} -> "
                 f"{result.steps}/{result.total_steps} steps  ->  {outcome}  ({result.wall_s:.1f}s)")
        return 0.0 if reason else float(result.score)

    def run_phase2(self):
        from optuna.trial import TrialState

        final = self._open_phase2()
        while True:
            self._recover(final)
            trials = final.get_trials(deepcopy=False)
            if any(t.state == TrialState.WAITING for t in trials):
                final.optimize(lambda tr: self._phase2_objective(final, tr), n_trials=1, catch=(SurplusTrial,), gc_after_trial=self.gc)
            elif any(t.state == TrialState.RUNNING for t in trials):
                time.sleep(self.cfg.poll_s)
            elif not self._backfill(final):
                return final

    def _backfill(self, final) -> bool:
        """Replace top-k continuations that failed (e.g. diverged late) by the next trials in early rank.

        A trial that looks best early can blow up later (a learning rate at the edge of divergence);
        without this the search could end with fewer than k usable models, or none.
        """
        if self.cfg.validate_all or not self.cfg.backfill:
            return False
        trials = final.get_trials(deepcopy=False)
        done = [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs.get("role") in ("top_k", "backfill")]
        missing = self.cfg.top_k - sum(t.user_attrs.get("status") == "ok" for t in done)
        if missing <= 0:
            return False
        present = {t.user_attrs.get("source_trial") for t in trials if t.state.name != "FAIL"}
        nxt = [t for t in self._resumable() if t.user_attrs.get("status") == "ok" and t.number not in present][:missing]
        for t in nxt:
            final.enqueue_trial(t.params, user_attrs={"source_trial": t.number, "role": "backfill", "baseline": bool(t.user_attrs.get("baseline"))})
        return bool(nxt)

    def run(self):
        self.run_phase1()
        return self.run_phase2()


def _jsonable(value):
    import json

    return json.loads(json.dumps(value, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o)))
