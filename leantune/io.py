"""Atomic writes and small file helpers shared by every stage.

Every artefact is written to a temporary file in the same folder and renamed, so a killed
job never leaves a half-written file where a finished one is expected.
"""
from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from .errors import LeantuneError


def claim_lock(lock_file: str | os.PathLike):
    """The lock ``lock_file`` (an OS lock: it goes with the process that holds it, however that
    process ends), or None while another process holds it."""
    from filelock import FileLock, Timeout

    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return None
    return lock


@contextmanager
def hold_lock(lock_file: str | os.PathLike, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold ``lock_file`` for the block. While another process holds it, ``on_wait()`` is called once
    (to say so) and this one waits its turn; the block should then check for what that process made."""
    from filelock import FileLock

    lock = claim_lock(lock_file)
    if lock is None:
        if on_wait is not None:
            on_wait()
        lock = FileLock(str(lock_file))
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 less the umask), so
        # a dashboard or another worker can read it.
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new, empty temporary folder next to ``path``; on success it takes the place of ``path``.

    A folder already at ``path`` is moved aside and removed only once the new one is in place, so a
    killed job never leaves a half-written folder at ``path`` (killed between the two renames, it leaves
    none there and the old one at ``.<name>.old``, which the next swap removes). On an exception
    ``path`` is left as it was and the temporary folder is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700; give the mode a plain mkdir would
        old = path.with_name(f".{path.name}.old")
        if old.exists():  # set aside by a job killed mid-swap
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` to ``path`` atomically as strict JSON (what any JSON reader accepts, jq and
    browsers too): a non-finite float is written as its string ("nan", "inf", "-inf"; see
    :func:`json_safe`), and :func:`read_float` turns such a field back into a float."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_safe(obj), indent=2, sort_keys=False, default=_jsonable, allow_nan=False) + "\n")


def save_figure(fig, path: str | os.PathLike, dpi: int = 120, tight: bool = False) -> Path:
    """Write matplotlib figure ``fig`` to ``path`` as a PNG (atomically, like every artefact), then close it.
    ``tight``: crop to the drawn area (``bbox_inches="tight"``)."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    finally:
        plt.close(fig)
    return Path(path)


def json_safe(x: Any) -> Any:
    """``x`` with every non-finite float (in nested dicts, lists and tuples too) kept as its string
    ("nan", "inf", "-inf"): JSON has no NaN/inf, and a reader can still tell such a value apart."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def read_float(value: Any, field: str = "value") -> float | None:
    """A float field read back from a file :func:`write_json` wrote: a number as a float, the strings
    it writes for non-finite floats ("nan", "inf", "-inf") as those floats, ``None`` as ``None``;
    anything else is a one-line :class:`~leantune.errors.DataError` naming ``field``."""
    from .errors import DataError

    if value is None:
        return None
    if isinstance(value, bool):
        raise DataError(field, f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.lower() in _NON_FINITE:
        return _NON_FINITE[value.lower()]
    raise DataError(field, f"expected a number, got {value!r}")


def read_json(path: str | os.PathLike) -> Any:
    from .errors import DataError

    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    with open_text(path) as fh:
        text = fh.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"invalid JSON ({exc.msg})", exc.lineno) from None


def read_loss_history(rows: list[dict], where: str = "history") -> list[dict]:
    """Training-history rows (``{"step", "epoch", "train_loss", "valid_loss", ...}``) read back from JSON
    with every ``*_loss`` field a float again (:func:`read_float`): a diverged run's "nan" is NaN."""
    return [{k: read_float(v, f"{where} {k}") if k.endswith("_loss") else v for k, v in row.items()} for row in rows]


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        for row in rows:
            fh.write(json.dumps(json_safe(row), default=_jsonable, allow_nan=False) + "\n")


def iter_jsonl(path: str | os.PathLike, missing: str = "file not found"):
    """``(line number, decoded value)`` for every non-blank line of a JSON Lines file (``.gz`` allowed);
    a missing file or a line that is not JSON is a one-line :class:`~leantune.errors.DataError`."""
    from .errors import DataError

    path = Path(path)
    if not path.exists():
        raise DataError(path, missing)
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(path, f"invalid JSON ({exc.msg})", lineno) from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return [row for _, row in iter_jsonl(path)]


def open_text(path: str | os.PathLike):
    """Open a UTF-8 text file that may be gzip-compressed (by its ``.gz`` suffix).

    The returned file reads and iterates like a text file (and is a context manager); a file that
    cannot be opened, is not UTF-8, or is a truncated or corrupt ``.gz`` raises a one-line
    :class:`~leantune.errors.DataError` naming the file (and the line, where it can be known)
    instead of ``UnicodeDecodeError``, ``EOFError`` or ``OSError``.
    """
    from .errors import DataError

    path = Path(path)
    try:
        if path.suffix == ".gz":
            fh = gzip.open(path, "rt", encoding="utf-8")
        else:
            fh = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, not a file") from None
    except OSError as exc:
        raise DataError(path, f"cannot open ({exc.strerror or exc})") from None
    return _TextFile(fh, path)


class _TextFile:
    """A text file whose read errors become :class:`DataError` (see :func:`open_text`)."""

    def __init__(self, fh, path: Path):
        self._fh = fh
        self.path = path
        self._lines = 0  # lines handed out by iteration/readline so far

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._fh.close()
        return False

    def __iter__(self):
        return self

    def __next__(self) -> str:
        try:
            line = next(self._fh)
        except StopIteration:
            raise
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is a read error
            self._raise(exc)
        self._lines += 1
        return line

    def readline(self, *args) -> str:
        try:
            line = self._fh.readline(*args)
        except Exception as exc:  # noqa: BLE001
            self._raise(exc)
        if line:
            self._lines += 1
        return line

    def read(self, *args) -> str:
        try:
            return self._fh.read(*args)
        except Exception as exc:  # noqa: BLE001
            self._raise(exc)

    def close(self) -> None:
        self._fh.close()

    def __getattr__(self, name):  # name, encoding, closed, ... of the underlying file
        if name == "_fh":
            raise AttributeError(name)
        return getattr(self._fh, name)

    def _raise(self, exc: Exception):
        import zlib

        from .errors import DataError

        path = self.path
        if isinstance(exc, UnicodeDecodeError):
            line, byte = _first_undecodable_line(path)
            what = f"byte 0x{byte:02x} " if byte is not None else ""
            raise DataError(path, f"not UTF-8 text ({what}cannot be decoded; binary file or another encoding such as Latin-1?)",
                            line) from None
        if isinstance(exc, EOFError):
            raise DataError(path, "truncated gzip file (the compressed data ends early)") from None
        if isinstance(exc, (gzip.BadGzipFile, zlib.error)):
            raise DataError(path, f"not a valid gzip file ({exc})") from None
        if isinstance(exc, IsADirectoryError):
            raise DataError(path, "is a folder, not a file") from None
        if isinstance(exc, OSError):
            raise DataError(path, f"cannot read ({exc.strerror or exc})") from None
        raise exc


def _first_undecodable_line(path: Path) -> tuple[int | None, int | None]:
    """(1-based line, offending byte) of the first line of ``path`` that is not UTF-8, as far as it can be read."""
    import codecs
    import zlib

    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    try:
        raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
        with raw:
            for chunk in iter(lambda: raw.read(1 << 16), b""):
                for piece in chunk.splitlines(keepends=True):
                    try:
                        decoder.decode(piece)
                    except UnicodeDecodeError as exc:
                        return line, exc.object[exc.start]
                    if piece.endswith((b"\n", b"\r")):
                        line += 1
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        return line, exc.object[exc.start] if exc.object[exc.start:] else None
    except (OSError, EOFError, zlib.error):
        pass
    return None, None


def _jsonable(obj: Any):
    if hasattr(obj, "tolist"):  # numpy and torch values: their NaN/inf become strings too
        return json_safe(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return json_safe(asdict(obj))
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


_MISSING = object()


def refuse_other_settings(stored: Mapping, current: Mapping, what: str, folder, advice: str = "use another folder",
                          where: str | None = None) -> None:
    """Refuse to reuse ``folder`` when the settings stored in it differ from the current ones.

    ``stored`` is what the folder's settings file holds (read back from JSON), ``current`` what this
    job would write there, as plain JSON values too (lists, not tuples: ``==`` tells them apart);
    nested dicts are compared field by field. When they differ, raises :class:`LeantuneError` naming the folder (its display path), ``what`` it holds
    (e.g. ``"a fine-tuning run"``), the first differing field with its stored and current values,
    the other differing fields, and ``advice``. Fields are taken in ``current``'s order, then the
    ones only ``stored`` has; a field missing on one side differs from any value. Returns quietly
    when the two are equal (``stored == current``). ``where`` names what is not a folder (e.g. an
    Optuna study) in place of the folder's display path.
    """
    changed = _differing_fields(stored, current)
    if not changed:
        return
    from .paths import display_path

    field_name, was, now = changed[0]
    also = f" (also {', '.join(name for name, _, _ in changed[1:])})" if len(changed) > 1 else ""
    raise LeantuneError(
        f"{where or display_path(folder)}: holds {what} made with other settings: "
        f"{field_name}={_shown(was)} there, {_shown(now)} now{also}; {advice}"
    )


def _differing_fields(stored, current, prefix: str = "") -> list[tuple[str, object, object]]:
    """``(dotted name, stored value, current value)`` of every field that differs, recursing into dicts."""
    out = []
    names = [*current, *(k for k in stored if k not in current)]
    for name in names:
        was, now = stored.get(name, _MISSING), current.get(name, _MISSING)
        path = f"{prefix}{name}"
        if isinstance(was, Mapping) and isinstance(now, Mapping):
            out += _differing_fields(was, now, f"{path}.")
        elif was is not now and (was is _MISSING or now is _MISSING or was != now):
            out.append((path, was, now))
    return out


def _shown(value, limit: int = 120) -> str:
    text = "(not set)" if value is _MISSING else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_options(pairs, param: str = "options") -> dict:
    """``KEY=VALUE`` strings as a dict; values that parse as JSON (numbers, booleans, lists such as
    ``effort_layers=[-1]``) are decoded, anything else stays a string. A pair without ``=`` or key is
    a one-line error naming ``param``."""
    from .errors import ParameterError

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ParameterError(param, repr(pair), "expected KEY=VALUE")
        try:
            options[key.strip()] = json.loads(value.strip())
        except json.JSONDecodeError:
            options[key.strip()] = value.strip()
    return options
