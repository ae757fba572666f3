"""Data pruning: score the training samples, then pick ``budget`` of them.

``prune(data, budget, method, out_dir=...)`` is the library entry (``leantune prune`` and
``leantune run`` call it). A method is a set of scorers, a selector and the selector's settings;
``--selector`` swaps the selector for ablations (e.g. DEALRec without coverage = ``topk``).

The out folder holds ``scores.parquet`` (or ``.jsonl``), the resumable chunk files it is merged
from (``scores.chunks/``) and ``selection.json`` (chosen sample/user ids, every setting, seed,
package versions, time per stage). Re-running into the same folder reuses finished chunks.

This module imports neither torch nor the scorer modules at import time.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import LeantuneError, ParameterError
from .io import read_json, write_json
from .registry import Registry

SELECTION_FILE = "selection.json"
SCORE_FORMATS = ("parquet", "jsonl")
RECOMMENDERS = ("bigrec", "tiger")
# Scorers that read the LLM, and what takes their place when TIGER is the recommender: the
# effort of the model that will be trained on the selection. Every other scorer reads the data
# or the SASRec surrogate only, so it serves both recommenders unchanged.
TIGER_SUBSTITUTES = {"effort": "tiger_effort"}


@dataclass
class PruneConfig:
    """Every setting of a pruning run (saved in selection.json)."""

    budget: int
    method: str = "dealrec"
    seed: int = 0
    lam: float = 0.3  # effort weight in DEALRec's overall score (Games run script: 0.3)
    selector: str | None = None  # None: the method's selector
    hard_prune: float | None = None  # None: the selector's default (0.1)
    ranges: int | None = None  # None: the selector's default (50)
    clusters: int | None = None  # cluster selector; None: one cluster per budget sample
    difficulty: str = "el2n"  # the score CCS stratifies
    pool: int | None = None  # score a seeded random sub-pool of this many samples
    model: str = "smollm2"  # LLM for LLM-based scorers (effort)
    # The model trained on the selection: "bigrec" (LLM effort), "tiger" (TIGER effort in place
    # of LLM effort), or None: the method's scorers exactly as registered (e.g. dealrec-tiger).
    recommender: str | None = None
    chunk_size: int = 1024  # samples per checkpointed chunk
    scores_format: str = "parquet"
    options: dict = field(default_factory=dict)  # extra scorer options (ScoringContext.options)

    def validate(self) -> None:
        if self.budget <= 0:
            raise ParameterError("budget", self.budget, "must be a positive number of samples")
        if self.pool is not None and self.pool <= 0:
            raise ParameterError("pool", self.pool, "must be a positive number of samples")
        if self.chunk_size <= 0:
            raise ParameterError("chunk_size", self.chunk_size, "must be positive")
        if self.hard_prune is not None and not 0.0 <= self.hard_prune < 1.0:
            raise ParameterError("hard_prune", self.hard_prune, "must be in [0, 1)")
        if self.ranges is not None and self.ranges < 1:
            raise ParameterError("ranges", self.ranges, "must be at least 1")
        if self.clusters is not None and self.clusters < 1:
            raise ParameterError("clusters", self.clusters, "must be at least 1")
        if self.scores_format not in SCORE_FORMATS:
            raise ParameterError("scores_format", repr(self.scores_format), f"choose one of {', '.join(SCORE_FORMATS)}")
        if isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or not math.isfinite(self.lam) or self.lam < 0:
            raise ParameterError("lam", self.lam, "the effort weight λ must be a finite number >= 0")
        if not isinstance(self.options, dict):
            raise LeantuneError(f"options {self.options!r}: must be a dict of scorer options")
        if self.options:
            check_options(self.options)
        resolve_method(self)  # unknown method or recommender, or a method for another recommender


# Options read outside the scorers' own prefixed settings: ``model`` (as --model), ``device`` (the
# scoring device), ``surrogate_dir`` (a trained SASRec for influence/GraNd/EL2N/embeddings) and
# ``embedding_source``; ``progress`` is set by prune itself.
GENERAL_OPTIONS = ("model", "device", "surrogate_dir", "embedding_source")


def scorer_options() -> list[str]:
    """Every key a scorer reads from ``PruneConfig.options`` (``--opt KEY=VALUE``), sorted.

    Imports the scorer modules (torch): called only when options are given.
    """
    from dataclasses import fields

    from .scoring.effort import EffortConfig
    from .scoring.influence import InfluenceConfig
    from .scoring.surrogate_scores import EarlyConfig
    from .scoring.tiger_effort import OPTIONS as TIGER_OPTIONS

    keys = set(GENERAL_OPTIONS) | set(TIGER_OPTIONS)
    keys |= {f"effort_{f.name}" for f in fields(EffortConfig)}
    keys |= {f"influence_{f.name}" for f in fields(InfluenceConfig)}
    keys |= {f"{prefix}_{f.name}" for prefix in ("grand", "el2n") for f in fields(EarlyConfig)}
    return sorted(keys)


def check_options(options: dict) -> None:
    """Refuse an option no scorer reads (a typo would otherwise be ignored without a word), and a
    value a scorer would refuse or choke on, before any folder is made or any model trained."""
    from dataclasses import fields

    from .scoring.effort import EffortConfig
    from .scoring.embedding import SOURCES
    from .scoring.influence import InfluenceConfig
    from .scoring.surrogate_scores import EarlyConfig

    known = scorer_options()
    unknown = [key for key in options if key not in known and key != "progress"]
    if unknown:
        raise ParameterError("options", unknown[0], f"unknown option; known: {', '.join(known)}")

    def typed(prefix: str, cls) -> None:  # values of the scorers that take options as given (no text coercion)
        for f in fields(cls):
            key = f"{prefix}_{f.name}"
            if key in options:
                _check_option_type(key, options[key], getattr(cls(), f.name))

    typed("influence", InfluenceConfig)
    InfluenceConfig.from_options(options)
    for prefix in ("grand", "el2n"):
        typed(prefix, EarlyConfig)
        EarlyConfig.from_options(options, prefix)
    if any(key.startswith("effort_") for key in options):
        EffortConfig.from_options(options).validate()
    if "embedding_source" in options and options["embedding_source"] not in SOURCES:
        raise ParameterError("options", f"embedding_source={options['embedding_source']!r}", f"choose one of {', '.join(SOURCES)}")
    if "tiger_preset" in options:
        from .models.tiger import PRESETS

        if options["tiger_preset"] not in PRESETS:
            raise ParameterError("options", f"tiger_preset={options['tiger_preset']!r}", f"choose one of {', '.join(PRESETS)}")
    for key, least in (("tiger_warmup_epochs", 1), ("tiger_batch", 1), ("tiger_warmup_samples", 0)):
        if key in options:
            _check_option_type(key, options[key], least)
            if options[key] < least:
                raise ParameterError("options", f"{key}={options[key]!r}", f"must be at least {least}")
    for key in ("surrogate_dir", "tiger_ids", "tiger_model_dir"):
        if key in options and not isinstance(options[key], (str, Path)):
            raise ParameterError("options", f"{key}={options[key]!r}", "expected a path")
    if "surrogate_dir" in options and not Path(options["surrogate_dir"]).is_dir():
        raise ParameterError("options", f"surrogate_dir={options['surrogate_dir']}", "no such folder (one written by `leantune surrogate train`)")


def scorer_settings(scorers, options: dict) -> dict:
    """Every setting each scorer of a run uses after its defaults and ``--opt`` (the typed configs as
    dicts), recorded in ``selection.json`` so that a selection says exactly how it was scored."""
    from .scoring.effort import EffortConfig
    from .scoring.influence import InfluenceConfig
    from .scoring.surrogate_scores import EarlyConfig

    out = {}
    for name in scorers:
        if name == "influence":
            out[name] = dataclasses.asdict(InfluenceConfig.from_options(options))
        elif name == "effort":
            effort = dataclasses.asdict(EffortConfig.from_options(options))
            effort.pop("progress", None)
            out[name] = effort
        elif name in ("grand", "el2n"):
            out[name] = dataclasses.asdict(EarlyConfig.from_options(options, name))
        elif name == "embedding":
            out[name] = {"source": options.get("embedding_source", "surrogate")}
        elif name == "tiger_effort":
            out[name] = {k: str(v) if isinstance(v, Path) else v for k, v in options.items() if k.startswith("tiger_")}
        else:
            out[name] = {}
    if any(name in out for name in ("influence", "grand", "el2n", "embedding")):
        out["surrogate_dir"] = str(options["surrogate_dir"]) if "surrogate_dir" in options else None
    return out


def _check_option_type(key: str, value, default) -> None:
    """``value`` must be of ``default``'s kind: an integer for an int, a number for a float, text for a string."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float) or default is None:  # None: an optional number (influence_cg_damping)
        ok = (value is None and default is None) or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                                     and math.isfinite(value))
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise ParameterError("options", f"{key}={value!r}", f"expected a value like {default!r}")


def resolve_method(cfg: PruneConfig) -> "Method":
    """The method as run for ``cfg.recommender``: with TIGER, LLM scorers become their TIGER
    counterparts (dealrec = influence + λ·tiger_effort, i.e. dealrec-tiger)."""
    method = METHODS.get(cfg.method)
    if cfg.recommender is None:
        return method
    if cfg.recommender not in RECOMMENDERS:
        raise ParameterError("recommender", repr(cfg.recommender), f"choose one of {', '.join(RECOMMENDERS)}")
    if cfg.recommender == "tiger":
        swap = lambda name: TIGER_SUBSTITUTES.get(name, name)  # noqa: E731
        return dataclasses.replace(method, scorers=tuple(map(swap, method.scorers)),
                                   weights=lambda c: {swap(k): v for k, v in method.weights(c).items()})
    tiger_only = sorted(set(method.scorers) & set(TIGER_SUBSTITUTES.values()))
    if tiger_only:
        plain = cfg.method.removesuffix("-tiger")
        raise ParameterError("method", cfg.method, f"scores with a TIGER model ({', '.join(tiger_only)}), not with recommender "
                             f"{cfg.recommender!r}: use recommender 'tiger', or method {plain!r}")
    return method


@dataclass(frozen=True)
class Method:
    name: str
    scorers: tuple[str, ...]
    selector: str
    weights: Callable[[PruneConfig], dict] = field(default=lambda cfg: {}, repr=False)
    help: str = ""


METHODS: Registry[Method] = Registry("method")


def _method(method: Method) -> None:
    METHODS.register(method.name)(method)


_method(Method("dealrec", ("influence", "effort"), "coverage", lambda c: {"influence": 1.0, "effort": c.lam},
               "DEALRec: minmax(influence) + λ·minmax(effort), coverage-enhanced selection."))
_method(Method("influence", ("influence",), "coverage", lambda c: {"influence": 1.0},
               "DEALRec without effort: influence only, coverage-enhanced selection."))
_method(Method("effort", ("effort",), "coverage", lambda c: {"effort": 1.0},
               "DEALRec without influence: effort only, coverage-enhanced selection."))
_method(Method("random", (), "random", help="Uniform random sample (seeded)."))
_method(Method("grand", ("grand",), "topk", lambda c: {"grand": 1.0},
               "GraNd: the samples with the largest surrogate gradient norm."))
_method(Method("el2n", ("el2n",), "topk", lambda c: {"el2n": 1.0},
               "EL2N: the samples with the largest surrogate error norm."))
_method(Method("ccs", (), "stratified", lambda c: {c.difficulty: 1.0},
               "CCS: drop the hardest, stratified sampling on a difficulty score (--difficulty, el2n)."))
_method(Method("tfdcon", ("embedding",), "cluster",
               help="TF-DCon-style: k-means on sample embeddings, samples nearest each centroid."))
_method(Method("kcenter", ("embedding",), "kcenter", help="k-center greedy on sample embeddings."))
_method(Method("dealrec-tiger", ("influence", "tiger_effort"), "coverage",
               lambda c: {"influence": 1.0, "tiger_effort": c.lam},
               "DEALRec for TIGER: effort is the gradient norm of a briefly trained TIGER model (see `leantune tiger`)."))


def methods_help() -> str:
    return "\n".join(f"{m.name}: {m.help}" for m in (METHODS.get(n) for n in METHODS.names()))


# --------------------------------------------------------------------------- results
@dataclass
class PruneResult:
    out_dir: Path
    sample_ids: list[int]
    user_ids: list[int]
    scores_path: Path
    selection_path: Path
    record: dict  # the content of selection.json

    @property
    def timings(self) -> dict:
        return self.record["timings"]


def selection_file(path: str | Path) -> Path:
    """``selection.json`` in ``path`` when it is a folder (or has no ``.json`` suffix), else ``path``."""
    path = Path(path)
    return path / SELECTION_FILE if path.is_dir() or path.suffix != ".json" else path


def read_sample_ids(path: str | Path) -> list[int]:
    """``sample_ids`` of a selection.json written by ``leantune prune`` (or of the folder holding it):
    the one reader every consumer of a recommendation selection uses (``run``, ``finetune``, ``tiger train``)."""
    path = selection_file(path)
    return _sample_ids(read_json(path), path)


def _sample_ids(record, path: Path) -> list[int]:
    from .errors import DataError

    ids = record.get("sample_ids") if isinstance(record, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise DataError(path, "field 'sample_ids' must be a list of integer training-sample ids")
    return ids


def load_selection(out_dir: str | Path) -> PruneResult:
    """Read a finished pruning run (``selection.json`` in ``out_dir``, or that file itself)."""
    path = selection_file(out_dir)
    record = read_json(path)
    ids = _sample_ids(record, path)
    for key in ("user_ids", "scores_file"):
        if key not in record:
            raise LeantuneError(f"{path}: field {key!r} missing; not a selection file")
    return PruneResult(path.parent, ids, record["user_ids"], path.parent / record["scores_file"], path, record)


# --------------------------------------------------------------------------- pipeline
def build_selector(cfg: PruneConfig):
    """The selector object for a config: the method's (or ``cfg.selector``) with its settings."""
    from .selection import SELECTORS

    method = resolve_method(cfg)
    name = cfg.selector or method.selector
    cls = SELECTORS.get(name)
    settings = {"weights": method.weights(cfg), "hard_prune": cfg.hard_prune, "ranges": cfg.ranges,
                "clusters": cfg.clusters}
    names = {f.name for f in dataclasses.fields(cls)}
    if "weights" in names and not settings["weights"]:
        raise ParameterError("selector", name, f"needs a scalar score, but method {method.name!r} produces none")
    return cls(**{k: v for k, v in settings.items() if k in names and v is not None})


def default_out_dir(data_name: str, cfg: PruneConfig) -> Path:
    pool = f"-p{cfg.pool}" if cfg.pool else ""
    method, run, registered = cfg.method, resolve_method(cfg), METHODS.get(cfg.method)
    if (run.scorers, set(run.weights(cfg))) != (registered.scorers, set(registered.weights(cfg))):
        method = f"{method}-{cfg.recommender}"  # e.g. dealrec with TIGER effort: its own folder
    return Path("runs") / f"prune-{data_name}-{method}-b{cfg.budget}-s{cfg.seed}{pool}"


def prune(data, budget: int, method: str = "dealrec", out_dir: str | Path | None = None, *,
          process=None, progress: bool = True, **settings) -> PruneResult:
    """Score and select ``budget`` training samples of ``data`` (a dataset spec or SequenceDataset).

    ``settings`` are :class:`PruneConfig` fields (seed, lam, selector, hard_prune, ranges, pool,
    model, chunk_size, scores_format, options, ...).
    """
    return prune_with_config(data, _config(budget, method, settings), out_dir, process=process, progress=progress)


def prune_with_config(data, cfg: PruneConfig, out_dir=None, *, process=None, progress: bool = True) -> PruneResult:
    from .data import SequenceDataset, load_dataset
    from .scoring.scorefile import current_process

    cfg.validate()
    process = process or current_process()
    timings: dict = {}
    began = time.perf_counter()
    dataset = data if isinstance(data, SequenceDataset) else load_dataset(data)
    samples = dataset.train_samples
    timings["load_data"] = time.perf_counter() - began

    began = time.perf_counter()
    selector = build_selector(cfg)
    pool = _pool(len(samples), cfg)
    _check_budget_early(cfg.budget, len(pool), selector)
    scorers = _scorer_names(cfg, selector)
    out = Path(out_dir) if out_dir is not None else default_out_dir(dataset.name, cfg)
    if process.is_main:  # a selection left by an earlier run must not pass for this run's
        (out / SELECTION_FILE).unlink(missing_ok=True)
    timings["pool"] = time.perf_counter() - began

    pool_samples = [samples[i] for i in pool]
    scores, stages = _score(dataset, pool_samples, scorers, cfg, out, process, progress, timings)
    timings["scoring"] = stages
    scores_path = out / f"scores.{cfg.scores_format}"
    if process.is_main:
        began = time.perf_counter()
        from .scoring.scorefile import write_scores

        write_scores(scores_path, scores)
        timings["write_scores"] = time.perf_counter() - began

        began = time.perf_counter()
        chosen = _select(scores, cfg, selector)
        timings["select"] = time.perf_counter() - began
        record = _record(dataset, cfg, selector, scorers, scores, chosen, timings, scores_path)
        record["processes"] = process.count  # scoring processes of this run (accelerate launch)
        write_json(out / SELECTION_FILE, record)
    process.barrier()  # the other processes read what the main process wrote
    return load_selection(out)


def _scorer_names(cfg: PruneConfig, selector) -> list[str]:
    """The scorers a run needs: the method's, then any column its selector reads, each once."""
    return list(dict.fromkeys([*resolve_method(cfg).scorers, *selector.columns()]))


def _select(scores: dict, cfg: PruneConfig, selector) -> np.ndarray:
    """Positions (into the scored pool) that ``selector`` keeps for ``cfg.budget`` and ``cfg.seed``."""
    chosen = np.asarray(selector.select(scores, cfg.budget, np.random.default_rng([cfg.seed, 2])), dtype=np.int64)
    _check_selection(chosen, cfg.budget, len(scores["sample_id"]))
    return chosen


def _config(budget: int, method: str, settings: dict) -> PruneConfig:
    try:
        cfg = PruneConfig(budget=budget, method=method, **settings)
    except TypeError as exc:
        raise LeantuneError(f"prune(): {exc}") from None
    cfg.validate()
    return cfg


def score_samples(data, method: str = "dealrec", *, work_dir: str | Path | None = None, progress: bool = True,
                  **settings) -> dict[str, np.ndarray]:
    """Score the training samples of ``data`` for ``method`` in memory, writing nothing into ``./runs``.

    Returns a table of columns, one row per scored sample (the whole training split, or the seeded
    ``pool``): ``sample_id``, ``user_id`` and every column of the method's scorers and selector.
    The resumable chunk store goes to ``work_dir`` (a re-run with the same folder reuses finished
    chunks); without one, a temporary folder is used and removed. ``settings`` are
    :class:`PruneConfig` fields other than ``budget`` (seed, pool, lam, selector, options, ...).
    ``select_samples`` turns the table into a selection, exactly as ``prune`` does.
    """
    import tempfile

    from .data import SequenceDataset, load_dataset
    from .scoring.scorefile import current_process

    cfg = _config(1, method, settings)
    dataset = data if isinstance(data, SequenceDataset) else load_dataset(data)
    samples = dataset.train_samples
    scorers = _scorer_names(cfg, build_selector(cfg))
    pool_samples = [samples[i] for i in _pool(len(samples), cfg)]
    with tempfile.TemporaryDirectory(prefix="leantune-scores-") as tmp:
        folder = Path(work_dir) if work_dir is not None else Path(tmp)
        scores, _ = _score(dataset, pool_samples, scorers, cfg, folder, current_process(), progress, {})
    return scores


def select_samples(scores: dict, budget: int, method: str = "dealrec", **settings) -> list[int]:
    """Sample ids (sorted) that ``method``'s selector keeps from a ``score_samples`` table; the same
    ``settings`` (seed, lam, selector, hard_prune, ranges, ...) give the same selection as ``prune``."""
    cfg = _config(budget, method, settings)
    if "sample_id" not in scores:
        raise LeantuneError("scores: no 'sample_id' column (pass the table score_samples returns)")
    selector = build_selector(cfg)
    _check_budget_early(budget, len(scores["sample_id"]), selector)
    return sorted(int(i) for i in np.asarray(scores["sample_id"])[_select(scores, cfg, selector)])


def _pool(n: int, cfg: PruneConfig) -> np.ndarray:
    """Positions of the scored samples: all, or a seeded random sub-pool (sorted by sample id)."""
    if cfg.pool is None:
        return np.arange(n)
    if cfg.pool > n:
        raise ParameterError("pool", cfg.pool, f"larger than the dataset ({n} training samples)")
    return np.sort(np.random.default_rng([cfg.seed, 1]).choice(n, size=cfg.pool, replace=False))


def _check_budget_early(budget: int, pool: int, selector) -> None:
    """Fail before hours of scoring, not after."""
    from .selection.base import check_budget

    check_budget(budget, pool)
    hard = getattr(selector, "hard_prune", 0.0)
    if hard:
        n_hard = math.floor(hard * pool)
        check_budget(budget, pool - n_hard, where=f"pool left after hard_prune {hard:g} drops {n_hard}")


def _score(dataset, samples, scorers, cfg, out, process, progress, timings):
    """Run each scorer over the chunks (resuming), then merge all chunks into columns."""
    from .data import dataset_fingerprint
    from .scoring import SCORERS, ScoringContext
    from .scoring.scorefile import ChunkStore, ScoringStage, fingerprint, merge_chunks, score_chunks

    sample_ids = np.array([s.sample_id for s in samples], dtype=np.int64)
    options = {"model": cfg.model, "progress": progress, **cfg.options}
    key = {
        "samples": len(samples),
        "seed": cfg.seed,
        "options": {k: v for k, v in options.items() if k not in ("device", "progress")},  # change no score
        "data": dataset_fingerprint(dataset, "scoring"),
        "pool": fingerprint(sample_ids.tolist()),
    }
    classes = {name: SCORERS.get(name) for name in scorers}  # unknown names fail before any work
    stages = {}
    if classes:
        began = time.perf_counter()
        device = options.get("device") or process.device or _default_device()
        from .train import sasrec as surrogate_training
        from .train import tiger as tiger_training

        ctx = ScoringContext(dataset, seed=cfg.seed, work_dir=out / "work", device=device, options=options,
                             get_surrogate=surrogate_training.get_surrogate, train_tiger=tiger_training.train_tiger)
        if "tiger_effort" in classes:  # TIGER effort reads semantic IDs: read them, or build them once here
            from .train.rqvae import semantic_ids_for

            ctx.extras["tiger_semantic_ids"] = semantic_ids_for(dataset, options.get("tiger_ids"), seed=cfg.seed,
                                                                progress=progress)[0]
        timings["scoring_setup"] = time.perf_counter() - began
    stores = {name: ChunkStore(out / "scores.chunks" / name, name, key, cfg.chunk_size) for name in classes}
    for name, cls in classes.items():
        stores[name].check_manifest()
        began = time.perf_counter()
        reused = score_chunks(cls(), name, samples, ctx, stores[name], process, progress)
        stages[name] = ScoringStage(name, math.ceil(len(samples) / stores[name].chunk_size), reused,
                                    time.perf_counter() - began)
    process.barrier()  # every process has written its chunks

    scores = {"sample_id": sample_ids, "user_id": np.array([s.user for s in samples], dtype=np.int64)}
    if process.is_main:
        for name in classes:
            columns, seconds = merge_chunks(stores[name], sample_ids)
            stages[name].compute_seconds = seconds
            stages[name].columns = list(columns)
            stages[name].info = stores[name].info()
            for col, values in columns.items():
                if col in scores:
                    raise LeantuneError(f"score column {col!r} is produced by two scorers")
                scores[col] = values
    return scores, {name: dataclasses.asdict(stage) for name, stage in stages.items()}


def _default_device() -> str:
    from .device import resolve_device

    return resolve_device("auto")


def _check_selection(chosen: np.ndarray, budget: int, pool: int) -> None:
    # A selector bug must not silently train on the wrong number of samples.
    if len(chosen) != budget or len(np.unique(chosen)) != budget or chosen.min() < 0 or chosen.max() >= pool:
        raise AssertionError(f"selector returned {len(chosen)} positions ({len(np.unique(chosen))} distinct) "
                             f"for budget {budget} and pool {pool}")


def score_stats(scores: dict, chosen: np.ndarray) -> dict:
    """min/mean/max/std of each scalar score over the pool, and its mean over the selection."""
    stats = {}
    for name, values in scores.items():
        values = np.asarray(values)
        if name in ("sample_id", "user_id") or values.ndim != 1:
            continue
        stats[name] = {"min": float(values.min()), "mean": float(values.mean()), "max": float(values.max()),
                       "std": float(values.std()), "selected_mean": float(values[chosen].mean())}
    return stats


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    names = ("leantune", "numpy", "scipy", "pyarrow", "torch", "transformers", "peft", "accelerate")
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    import platform

    found["python"] = platform.python_version()
    return found


def _record(dataset, cfg, selector, scorers, scores, chosen, timings, scores_path) -> dict:
    chosen_sorted = np.sort(chosen)
    sample_ids = scores["sample_id"][chosen_sorted]
    user_ids = scores["user_id"][chosen_sorted]
    return {
        "data": dataset.name,
        "data_source": dataset.source,
        "method": cfg.method,
        "recommender": cfg.recommender,
        "budget": cfg.budget,
        "pool_size": int(len(scores["sample_id"])),
        "dataset_samples": len(dataset.train_samples),
        "seed": cfg.seed,
        "selector": selector.name,
        "selector_settings": dataclasses.asdict(selector),
        "scorers": scorers,
        "scorer_settings": scorer_settings(scorers, {"model": cfg.model, **cfg.options}),
        "settings": dataclasses.asdict(cfg),
        "sample_ids": sample_ids.tolist(),
        "user_ids": user_ids.tolist(),
        "scores_file": scores_path.name,
        "score_stats": score_stats(scores, chosen),
        "timings": timings,
        "versions": package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
