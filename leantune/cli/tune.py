"""``leantune tune``: early-performance hyperparameter search (Optuna), and ``leantune tune report``.

Start the same command N times (on one machine with SQLite, or on several with a PostgreSQL URL and
a shared --work-dir) and the workers share one study.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import MODEL_NAMES_HELP, SEED_HELP, SEED_MAX, app, seed_everything

tune_app = typer.Typer(
    help="Early-performance Bayesian search over LoRA hyperparameters: score every trial early, continue the top-k.",
    invoke_without_command=True,
)
app.add_typer(tune_app, name="tune")

STUDY_HELP = "Study name (one study per search; workers started with the same name and storage share it): letters, digits, '.', '_' and '-', at most 100 characters, as it names the folder runs/tune/<study>."
STORAGE_HELP = "Optuna storage URL, e.g. sqlite:///tune.db or postgresql://user@host/db (psycopg 3 if installed, else psycopg2; default: sqlite in --work-dir)."
WORK_HELP = "Folder for checkpoints and the default SQLite file (default: runs/tune/<study>); shared by all workers."


def _work_dir(work_dir: Optional[Path], study: str) -> Path:
    from ..tuning.study import check_study_name

    check_study_name(study)  # also with --work-dir: the name is the report's and the phase-2 study's too
    return work_dir if work_dir is not None else Path("runs") / "tune" / study


@tune_app.callback()
def tune(
    ctx: typer.Context,
    task: Optional[str] = typer.Option(None, help="Task to tune on: 'attributes' or 'recommendation' (required unless --runner synthetic)."),
    model: str = typer.Option("smollm2", help=f"Model: {MODEL_NAMES_HELP} or a local folder."),
    runner: str = typer.Option("finetune", help="'finetune' (real LoRA training) or 'synthetic' (a simulated run, seconds; for trying the machinery)."),
    study: str = typer.Option("leantune-tune", help=STUDY_HELP),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    work_dir: Optional[Path] = typer.Option(None, help=WORK_HELP),
    trials: int = typer.Option(30, help="Phase-1 trials in the study (all workers together), the baseline included."),
    early_fraction: float = typer.Option(0.2, help="Fraction of each trial's schedule trained before it is scored."),
    top_k: int = typer.Option(5, help="Trials continued from their early checkpoint to the full schedule."),
    validate_all: bool = typer.Option(False, help="Continue every trial to the end, to measure how well early ranks predict final ranks."),
    sampler: str = typer.Option("tpe", help="Optuna sampler: 'tpe', 'gp' (GPSampler) or 'random'."),
    space: Optional[Path] = typer.Option(None, help="TOML/YAML file overriding the search space (see leantune/tuning/space.py)."),
    train_size: Optional[int] = typer.Option(64, help="Training units drawn (seeded) from the task's pool; 0 = all."),
    eval_limit: Optional[int] = typer.Option(20, help="Validation/test units each score is computed on; 0 = all."),
    objective: str = typer.Option("metric", help="'metric' (the task metric on validation, by generation) or 'valid_loss' (exp(-loss); no generation)."),
    metric: Optional[str] = typer.Option(None, help="Key of the task's metrics to optimise (default: the task's primary metric)."),
    valid_size: int = typer.Option(32, help="Validation examples the trainer computes its loss on (as many more give the held-out loss)."),
    cutoff_len: Optional[int] = typer.Option(None, help="Token cut-off of training examples (default: FinetuneConfig's 512)."),
    baseline: bool = typer.Option(True, help="Enqueue a baseline trial with the default hyperparameters and continue it too."),
    backfill: bool = typer.Option(True, help="Replace a top-k trial that fails after the early point by the next one in early rank."),
    worker: int = typer.Option(0, help="Worker index: offsets the sampler seed so parallel workers propose different points (a worker restarted on a study that has trials draws from a new, deterministic seed, so it does not repeat them)."),
    heartbeat: int = typer.Option(60, help="Seconds between trial heartbeats; a trial silent for 2x this is failed and retried."),
    max_retry: int = typer.Option(2, help="How often a trial of a killed worker is retried."),
    report: bool = typer.Option(True, help="Write the report (markdown + PNGs) into <work-dir>/report when done."),
    progress: bool = typer.Option(False, help="Show the trainer's progress bars inside each trial."),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help=SEED_HELP),
    synthetic_step_s: float = typer.Option(0.0, hidden=True, help="Seconds per simulated step (tests of concurrency)."),
) -> None:
    """Run a search worker: phase 1 (early-scored trials), then phase 2 (continue the top-k), then the report."""
    if ctx.invoked_subcommand is not None:
        return
    from ..errors import LeantuneError
    from ..tuning import EarlySearch, SyntheticRunner, TuneConfig, load_space, write_report
    from ..tuning.study import public_url

    work = _work_dir(work_dir, study)
    cfg = TuneConfig(study=study, storage=storage, work_dir=work, trials=trials, early_fraction=early_fraction, top_k=top_k,
                     validate_all=validate_all, sampler=sampler, seed=seed, worker=worker, baseline=baseline, backfill=backfill,
                     heartbeat_interval=heartbeat, max_retry=max_retry)
    search_space = load_space(space)
    if runner == "synthetic":
        trial_runner = SyntheticRunner(train_size=train_size or 256, seed=seed, step_seconds=synthetic_step_s)
        settings = {"runner": "synthetic", "train_size": train_size}
    elif runner == "finetune":
        if task is None:
            raise LeantuneError("--task is required with --runner finetune (e.g. --task attributes)")
        from ..tuning.finetune_runner import FinetuneRunner

        seed_everything(seed)  # imports torch: only for real runs
        trial_runner = FinetuneRunner(task=task, model=model, train_size=train_size or None, eval_limit=eval_limit or None,
                                      valid_loss_size=valid_size, objective=objective, metric_name=metric, seed=seed, progress=progress,
                                      fixed={} if cutoff_len is None else {"cutoff_len": cutoff_len})
        settings = {"runner": "finetune", **trial_runner.settings()}
    else:
        raise LeantuneError(f"--runner {runner!r}: choose 'finetune' or 'synthetic'")
    # Opens (or creates) the study first: a storage that cannot be opened is refused before anything is printed.
    search = EarlySearch(cfg, trial_runner, search_space, settings=settings, log=lambda line: print(line, flush=True))
    print(f"study {study!r} in {public_url(cfg.storage_url)} (work dir {work}); worker {worker}; {trials} trials to "
          f"{early_fraction:.0%} of their schedule, then the top {top_k}{' (all: --validate-all)' if validate_all else ''} to the end", flush=True)
    print("search space: " + "; ".join(search_space.describe()), flush=True)
    search.run()
    if report:
        md = write_report(study, cfg.storage_url, work / "report", top_k=top_k)
        print(f"report: {md}")
    print(f"view the study: optuna-dashboard {public_url(cfg.storage_url)}")


@tune_app.command("report")
def report_cmd(
    study: str = typer.Option("leantune-tune", help=STUDY_HELP),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    work_dir: Optional[Path] = typer.Option(None, help=WORK_HELP),
    out: Optional[Path] = typer.Option(None, help="Report folder (default: <work-dir>/report)."),
    top_k: int = typer.Option(5, help="k of the early-vs-final top-k overlap."),
) -> None:
    """Write markdown + PNGs for a study: scores per trial, lr vs alpha, validation loss, early vs final ranks.

    Examples:

      leantune tune report --study leantune-tune                      # after `leantune tune` with the same --study
    """
    from ..errors import LeantuneError
    from ..tuning import default_storage, write_report

    if top_k < 1:
        raise LeantuneError(f"--top-k {top_k}: must be at least 1")
    work = _work_dir(work_dir, study)
    url = storage or default_storage(work)
    md = write_report(study, url, out or work / "report", top_k=top_k)
    print(f"report: {md}")
