"""Early-performance hyperparameter search for LoRA fine-tuning, built on Optuna.

``EarlySearch`` runs the two phases (early-scored Optuna trials, then the top-k continued from
their checkpoints); ``write_report`` reads a study back and writes markdown + plots.
"""
from .analysis import SearchRecords, TrialRecord, load_records, rank_agreement
from .report import write_report
from .runner import RunResult, SyntheticRunner, TrialRunner, failure_reason
from .space import SearchSpace, load_space
from .study import EarlySearch, TuneConfig, default_storage

__all__ = [
    "EarlySearch", "RunResult", "SearchRecords", "SearchSpace", "SyntheticRunner", "TrialRecord", "TrialRunner",
    "TuneConfig", "default_storage", "failure_reason", "load_records", "load_space", "rank_agreement", "write_report",
]
