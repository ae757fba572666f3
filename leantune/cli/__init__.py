"""Command-line interface: a thin shell over the library.

Each command group lives in its own module and registers itself on ``app``; this module only
assembles them and turns user errors into one-line messages.

Exit codes: 0 done, 2 user error (one ``error: ...`` line on stderr; a usage error adds a
``try: leantune CMD --help`` line; a file-system error on a named path counts as one), 130
interrupted (Ctrl-C), 1 a broken pipe. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import inspect
import sys
import warnings

from .app import app

# Import for their side effect of registering commands on ``app``.
from . import data as _data  # noqa: F401,E402
from . import _optional  # noqa: F401,E402

INTERRUPTED = "interrupted: finished stages are kept; re-run the same command to resume"
PROG = "leantune"


def _click_classes(name: str) -> tuple[type, ...]:
    """``name`` (ClickException, UsageError, NoArgsIsHelpError, Exit, Abort) as defined by every
    click the installed typer may raise: its vendored copy (``typer._click``, e.g. typer 0.29), its
    own ``typer.exceptions`` and the plain ``click`` package (older typer, e.g. 0.18)."""
    import importlib

    found = []
    for module in ("typer.exceptions", "typer._click.exceptions", "click.exceptions"):
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    return tuple(found)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _error(message: str, code: int = 2, hint: str | None = None) -> None:
    print(f"error: {_one_line(message)}", file=sys.stderr)
    if hint:
        print(hint, file=sys.stderr)
    sys.exit(code)


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning) -> None:
    """leantune's own warnings as one ``warning: ...`` line on stderr; others as Python prints them."""
    from ..errors import LeantuneWarning

    if isinstance(category, type) and issubclass(category, LeantuneWarning):
        print(f"warning: {_one_line(message)}", file=file or sys.stderr)
    else:
        _default(message, category, filename, lineno, file, line)


def _interrupted() -> None:
    print(INTERRUPTED, file=sys.stderr)
    sys.exit(130)


# Library parameters whose flag is neither an option of the command that ran with the same name nor
# the parameter's name with dashes (``eval_limit`` -> ``--eval-limit``).
FLAG_NAMES = {"lam": "--lambda", "options": "--opt", "max_epochs": "--epochs", "valid_loss_size": "--valid-size",
              "heartbeat_interval": "--heartbeat"}


def one_line_summaries(command) -> None:
    """Give every (sub)command without a ``short_help`` its help's first paragraph on one line: the
    listing under ``leantune --help`` (typer's rich panels) otherwise keeps a hard-wrapped docstring's
    line breaks, and rows break mid-sentence."""
    for sub in getattr(command, "commands", {}).values():
        if not sub.short_help and sub.help:
            first = inspect.cleandoc(sub.help).partition("\f")[0].split("\n\n")[0]
            sub.short_help = _one_line(first)
        one_line_summaries(sub)


def main(args: list[str] | None = None) -> None:
    """Run the CLI on ``args`` (default ``sys.argv[1:]``); always ends in ``SystemExit``."""
    import errno

    import typer.main

    from ..errors import LeantuneError, ParameterError

    exits = _click_classes("Exit")
    aborts = _click_classes("Abort")
    usage_errors = _click_classes("UsageError")
    click_errors = _click_classes("ClickException")
    no_args_help = _click_classes("NoArgsIsHelpError")

    args = list(sys.argv[1:] if args is None else args)
    warnings.showwarning = _show_warning
    command = typer.main.get_command(app)
    one_line_summaries(command)
    try:
        # Parse and invoke directly rather than through ``app()``: in non-standalone mode typer
        # turns Ctrl-C into a *returned* 130 and usage errors into tracebacks.
        with command.make_context(PROG, args) as ctx:
            command.invoke(ctx)
    except KeyboardInterrupt:
        _interrupted()
    except ParameterError as exc:  # a library parameter, printed as the flag that sets it (if this command has one)
        flags = _flags(command, args)
        _error(exc.as_flag(flags) if exc.param in flags else str(exc))
    except LeantuneError as exc:
        _error(str(exc))
    except exits as exc:  # --help, or a command ending early with typer.Exit(code)
        sys.exit(getattr(exc, "exit_code", 0))
    except aborts:  # click's own translation of Ctrl-C / EOF at a prompt
        _interrupted()
    except no_args_help as exc:  # `leantune` or `leantune data` alone: the help, as click prints it
        exc.show()
        sys.exit(2)
    except usage_errors as exc:
        ctx = getattr(exc, "ctx", None)
        path = getattr(ctx, "command_path", None) or _command_path(command, args)
        _error(exc.format_message(), hint=f"try: {path} --help")
    except click_errors as exc:
        _error(exc.format_message())
    except OSError as exc:
        if exc.errno == errno.EPIPE:  # `leantune data stats | head -1`: a closed pipe is no error of ours
            _quiet_pipe()
            sys.exit(1)
        if exc.filename is None:
            raise
        # A path the user named (or one below it) that cannot be used: --out naming a file, a
        # folder without write permission, a full disk. Bugs surface as other exceptions.
        where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else f"{exc.filename}"
        _error(f"{where}: {exc.strerror or exc}")
    sys.exit(0)


def _resolve(command, args: list[str]) -> tuple[list[str], object]:
    """The names on the way to the (sub)command that ``args`` runs, and that command."""
    path = [PROG]
    for arg in args:
        sub = getattr(command, "commands", {}).get(arg)
        if sub is not None:
            path.append(arg)
            command = sub
        elif not arg.startswith("-"):
            break
    return path, command


def _flags(command, args: list[str]) -> dict[str, str]:
    """Library parameter -> flag for the command that ran: ``FLAG_NAMES``, then each of its options
    by its flag's own name (``--eval-limit`` for ``eval_limit``), then by the name of the function
    parameter behind it (``lam`` -> ``--lambda``)."""
    flags = dict(FLAG_NAMES)
    options = [p for p in getattr(_resolve(command, args)[1], "params", []) if getattr(p, "param_type_name", "") == "option"]
    for param in options:
        for flag in (o for o in param.opts if o.startswith("--")):
            flags[flag[2:].replace("-", "_")] = flag
    for param in options:
        long = [o for o in param.opts if o.startswith("--")]
        if long and param.name:
            flags[param.name] = long[0]
    return flags


def _command_path(command, args: list[str]) -> str:
    """``leantune data stats`` for ``args`` naming that command (some usage errors carry no context)."""
    return " ".join(_resolve(command, args)[0])


def _quiet_pipe() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
