"""The score file: sample id, user id and one column per score, written in resumable chunks.

Scoring runs over chunks of the pool; every chunk of every scorer is its own parquet file under
``<out>/scores.chunks/<scorer>/``, written atomically, so a killed job restarts at the first
missing chunk and ends with the same scores. A ``manifest.json`` per scorer records what the
chunks were computed for (data, pool, seed, options, chunk size); chunks made for other settings
are never mixed in. When all chunks exist they are merged into one columnar file
(``scores.parquet``, or ``scores.jsonl``), which is rewritten from the chunks on every run.

With several processes (``accelerate launch``) each process scores the chunks ``i`` with
``i % num_processes == process_index`` and the main process merges after a barrier.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import DataError, LeantuneError
from ..io import atomic_path, read_json, read_jsonl, refuse_other_settings, write_json, write_jsonl

ID_COLUMNS = ("sample_id", "user_id")


# --------------------------------------------------------------------------- processes
@dataclass
class ProcessInfo:
    """Which share of the chunks this process scores; ``barrier`` waits for all processes."""

    index: int = 0
    count: int = 1
    barrier: Callable[[], None] = field(default=lambda: None, repr=False)
    device: str | None = None

    @property
    def is_main(self) -> bool:
        return self.index == 0


def current_process() -> ProcessInfo:
    """One process unless launched by torchrun or ``accelerate launch --multi_gpu`` with several.

    Without a GPU, accelerate's default state ignores the launcher's WORLD_SIZE (every process would
    believe it is the only one and score every chunk), so on a CPU-only machine the state is asked
    for CPU processes explicitly (gloo). Note that ``accelerate launch --cpu --num_processes N``
    starts a single process (accelerate expects MPI for several CPU processes); use
    ``accelerate launch --multi_gpu --num_processes N`` or ``torchrun --nproc_per_node N`` instead.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ProcessInfo()
    import torch
    from accelerate import PartialState

    cpu = not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    if state.num_processes <= 1:
        raise LeantuneError(f"launched as one of WORLD_SIZE={os.environ['WORLD_SIZE']} processes, but accelerate "
                            "set up a single process; launch with `torchrun` or `accelerate launch --multi_gpu`")
    return ProcessInfo(state.process_index, state.num_processes, state.wait_for_everyone, "cpu" if cpu else str(state.device))


def shard_chunks(n_chunks: int, index: int, count: int) -> list[int]:
    """Round-robin: chunk i goes to process i % count, so shards differ by at most one chunk."""
    return list(range(index, n_chunks, count))


def chunk_bounds(n: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]


# --------------------------------------------------------------------------- columns <-> arrow
def _to_arrow(values: np.ndarray):
    import pyarrow as pa

    values = np.asarray(values)
    if values.ndim == 1:
        return pa.array(values)
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).ravel())
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def _from_arrow(col) -> np.ndarray:
    import pyarrow as pa

    col = col.combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        return np.asarray(col.flatten()).reshape(len(col), col.type.list_size)
    return np.asarray(col)


def _write_parquet(path: Path, columns: Mapping[str, np.ndarray], meta: dict | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({name: _to_arrow(values) for name, values in columns.items()})
    if meta is not None:
        table = table.replace_schema_metadata({b"leantune": json.dumps(meta).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _read_parquet(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise DataError(path, f"unreadable parquet file ({exc})") from None
    return {name: _from_arrow(table.column(name)) for name in table.column_names}, _leantune_meta(table.schema)


def _read_parquet_meta(path: Path) -> dict:
    """Only the ``leantune`` metadata of a parquet file (its footer; the columns are not read)."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise DataError(path, f"unreadable parquet file ({exc})") from None
    return _leantune_meta(schema)


def _leantune_meta(schema) -> dict:
    raw = (schema.metadata or {}).get(b"leantune")
    return json.loads(raw) if raw else {}


def write_scores(path: str | os.PathLike, columns: Mapping[str, np.ndarray]) -> None:
    """Write a score table (``.parquet`` or ``.jsonl`` by suffix) atomically."""
    path = Path(path)
    if path.suffix == ".jsonl":
        names = list(columns)
        arrays = [np.asarray(columns[n]).tolist() for n in names]
        write_jsonl(path, (dict(zip(names, row)) for row in zip(*arrays)))
    else:
        _write_parquet(path, columns)


def read_scores(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a score table written by :func:`write_scores`: column name -> array (2-D for embeddings)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        rows = read_jsonl(path)
        if not rows:
            raise DataError(path, "no rows")
        return {name: np.asarray([row[name] for row in rows]) for name in rows[0]}
    if not path.exists():
        raise DataError(path, "file not found")
    return _read_parquet(path)[0]


# --------------------------------------------------------------------------- chunk store
def fingerprint(obj) -> str:
    """Short content hash of a JSON-able object (pool ids, dataset sequences, options)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ChunkStore:
    """Chunk files of one scorer, with a manifest that pins the settings they were made with."""

    def __init__(self, folder: str | os.PathLike, scorer: str, key: dict, chunk_size: int):
        self.folder = Path(folder)
        self.scorer = scorer
        # Through JSON once, so a tuple option compares equal to the list read back from the manifest.
        self.key = json.loads(json.dumps({"scorer": scorer, **key}, default=str))
        self.chunk_size = chunk_size

    def check_manifest(self) -> None:
        """Refuse to reuse chunks made for other settings; start a manifest otherwise.

        A different chunk size changes no score, so the stored one is kept for resuming.
        """
        path = self.folder / "manifest.json"
        if path.exists():
            old = read_json(path)
            self.chunk_size = int(old.get("chunk_size", self.chunk_size))
            # The key's order puts the readable fields first.
            refuse_other_settings({k: v for k, v in old.items() if k != "chunk_size"}, dict(self.key), "score chunks", self.folder,
                                  f"use another output folder or delete {self.folder}")
        else:  # identical content from every process: the race is harmless
            write_json(path, {**self.key, "chunk_size": self.chunk_size})

    def path(self, index: int) -> Path:
        return self.folder / f"chunk-{index:05d}.parquet"

    def done(self, index: int) -> bool:
        return self.path(index).exists()

    def write(self, index: int, sample_ids: np.ndarray, columns: Mapping[str, np.ndarray], seconds: float,
              info: dict | None = None) -> None:
        meta = {"seconds": seconds} if info is None else {"seconds": seconds, "info": info}
        _write_parquet(self.path(index), {"sample_id": sample_ids, **columns}, meta)

    def info(self) -> dict | None:
        """What the scorer reported about its computation (e.g. influence's damping) when it scored the
        first chunk; None when it reported nothing or that chunk is missing."""
        path = self.path(0)
        return _read_parquet_meta(path).get("info") if path.exists() else None

    def read(self, index: int, sample_ids: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
        path = self.path(index)
        if not path.exists():
            raise DataError(path, "chunk missing (did a scoring process fail?); re-run to finish it")
        columns, meta = _read_parquet(path)
        if not np.array_equal(columns.pop("sample_id"), sample_ids):
            raise DataError(path, "holds other sample ids than this pool's chunk; delete the chunk folder")
        return columns, float(meta.get("seconds", 0.0))


def _check_output(name: str, out, n: int) -> dict[str, np.ndarray]:
    if not isinstance(out, Mapping) or not out:
        raise LeantuneError(f"scorer {name!r} returned {type(out).__name__}; expected a dict of score columns")
    columns = {}
    for col, values in out.items():
        values = np.asarray(values)
        if col in ID_COLUMNS or values.ndim not in (1, 2) or len(values) != n:
            raise LeantuneError(f"scorer {name!r} column {col!r}: shape {values.shape} for {n} samples")
        columns[col] = values.astype(np.float64) if values.ndim == 1 else values.astype(np.float32)
    return columns


@dataclass
class ScoringStage:
    """Timing of one scorer: compute time of all its chunks (earlier runs included) and of this run."""

    scorer: str
    chunks: int
    reused: int = 0
    seconds_this_run: float = 0.0
    compute_seconds: float = 0.0
    columns: list[str] = field(default_factory=list)
    info: dict | None = None  # what the scorer reported (``ctx.extras['<scorer>_info']``), e.g. influence's damping


def score_chunks(
    scorer,
    name: str,
    samples: Sequence,
    ctx,
    store: ChunkStore,
    process: ProcessInfo | None = None,
    progress: bool = True,
) -> int:
    """Score this process's share of the missing chunks; return how many were already done."""
    from tqdm.auto import tqdm

    process = process or ProcessInfo()
    bounds = chunk_bounds(len(samples), store.chunk_size)
    mine = shard_chunks(len(bounds), process.index, process.count)
    todo = [i for i in mine if not store.done(i)]
    for i in tqdm(todo, desc=f"score {name}", unit="chunk", disable=not progress or not todo):
        start, stop = bounds[i]
        part = samples[start:stop]
        began = time.perf_counter()
        columns = _check_output(name, scorer.score(part, ctx), len(part))
        store.write(i, np.array([s.sample_id for s in part], dtype=np.int64), columns, time.perf_counter() - began,
                    ctx.extras.get(f"{name}_info"))
    return len(mine) - len(todo)


def merge_chunks(store: ChunkStore, sample_ids: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
    """Concatenate one scorer's chunks in pool order; also return their summed compute time."""
    parts, seconds = [], 0.0
    for i, (start, stop) in enumerate(chunk_bounds(len(sample_ids), store.chunk_size)):
        columns, sec = store.read(i, sample_ids[start:stop])
        parts.append(columns)
        seconds += sec
    if not parts:
        return {}, 0.0
    if any(set(p) != set(parts[0]) for p in parts):
        raise DataError(store.folder, "chunks hold different score columns; delete the folder and re-score")
    return {col: np.concatenate([p[col] for p in parts]) for col in parts[0]}, seconds
