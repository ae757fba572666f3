"""Command-line interface: a thin shell over the library.

Each command group lives in its own module and registers itself on ``app``; this module only
assembles them and turns user errors into one-line messages.
"""
from __future__ import annotations

import sys

from .app import app

# Import for their side effect of registering commands on ``app``.
from . import data as _data  # noqa: F401,E402
from . import _optional  # noqa: F401,E402


def main() -> None:
    from ..errors import LeantuneError

    try:
        app(standalone_mode=False)
    except LeantuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished stages are kept; re-run the same command to resume", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # click usage errors and aborts
        import click

        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise
