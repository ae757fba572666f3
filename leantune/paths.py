"""Where leantune keeps caches and where the shipped data lives."""
from __future__ import annotations

import os
from pathlib import Path

SHIPPED_DATA = Path(__file__).parent / "data" / "shipped"


def leantune_home() -> Path:
    """Cache root: ``$LEANTUNE_HOME``, else ``$XDG_CACHE_HOME/leantune``, else ``~/.cache/leantune``."""
    env = os.environ.get("LEANTUNE_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "leantune"


def cache_dir(*parts: str) -> Path:
    path = leantune_home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def display_path(path) -> str:
    """``path`` as written into reports: relative to the working folder when inside it, else
    ``$LEANTUNE_HOME/...`` when inside the cache, else as it is (no machine paths in shared results)."""
    path = Path(path)
    try:
        resolved = path.resolve()
    except OSError:
        return str(path)
    for root, label in ((Path.cwd().resolve(), None), (leantune_home().resolve(), "$LEANTUNE_HOME")):
        try:
            rel = resolved.relative_to(root)
        except ValueError:
            continue
        return str(rel) if label is None else f"{label}/{rel}"
    return str(path)
