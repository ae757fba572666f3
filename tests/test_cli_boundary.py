"""The CLI boundary: usage errors, user errors and Ctrl-C end in one line and a fixed exit code."""
from __future__ import annotations

import re

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
import typer

from leantune.cli import INTERRUPTED, main

from .conftest import write_sequence_folder

REPO = Path(__file__).resolve().parents[1]


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """``leantune ARGS`` in-process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["leantune", *args])
    with pytest.raises(SystemExit) as done:
        main()
    out, err = capsys.readouterr()
    code = done.value.code
    return (0 if code is None else code), out, err


@pytest.mark.parametrize(
    "args,message,hint",
    [
        (["prune", "--bogus"], "error: No such option", "try: leantune prune --help"),
        (["prune"], "error: Missing option '--budget'", "try: leantune prune --help"),
        (["data", "stats", "--seed", "x"], "error: Invalid value for '--seed'", "try: leantune data stats --help"),
        (["data", "stats", "--data"], "error: Option '--data' requires an argument", "try: leantune data stats --help"),
        (["datta"], "error: No such command 'datta'", "try: leantune --help"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(monkeypatch, capsys, args, message, hint):
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0].startswith(message) and lines[1] == hint, err
    assert "Traceback" not in out + err


def test_the_installed_typers_own_exception_classes_are_caught():
    """Whatever click typer raises (its vendored ``typer._click`` or the ``click`` package) is caught."""
    from typer.main import get_command

    from leantune.cli import _click_classes, app

    with pytest.raises(Exception) as raised:
        get_command(app).make_context("leantune", ["--bogus"])
    assert isinstance(raised.value, _click_classes("UsageError"))
    assert isinstance(raised.value, _click_classes("ClickException"))


def test_plain_click_errors_are_caught_too(monkeypatch, capsys):
    """Older typer raises the ``click`` package's classes; a command may raise them itself."""
    click = pytest.importorskip("click")
    import leantune.data

    def bad(spec):
        raise click.BadParameter("not a dataset", param_hint="'--data'")

    monkeypatch.setattr(leantune.data, "load_dataset", bad)
    code, _, err = run_main(monkeypatch, capsys, "data", "stats")
    assert code == 2 and err.splitlines()[0] == "error: Invalid value for '--data': not a dataset"

    def file_error(spec):
        raise click.FileError("x.txt", "gone")

    monkeypatch.setattr(leantune.data, "load_dataset", file_error)
    code, _, err = run_main(monkeypatch, capsys, "data", "stats")
    assert code == 2 and err == "error: Could not open file 'x.txt': gone\n"


def test_help_and_explicit_exit_codes_pass_through(monkeypatch, capsys):
    import typer

    import leantune.data

    code, out, err = run_main(monkeypatch, capsys, "data", "stats", "--help")
    assert code == 0 and "--data" in out and not err

    def stop(spec):
        raise typer.Exit(3)

    monkeypatch.setattr(leantune.data, "load_dataset", stop)
    assert run_main(monkeypatch, capsys, "data", "stats")[0] == 3


def test_a_group_alone_prints_its_help_not_a_traceback(monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, "data")
    assert code == 2 and "stats" in out + err and "Traceback" not in out + err


def test_user_error_is_one_line_even_if_the_message_is_not(monkeypatch, capsys):
    import leantune.data
    from leantune.errors import LeantuneError

    def bad(spec):
        raise LeantuneError("first\nsecond")

    monkeypatch.setattr(leantune.data, "load_dataset", bad)
    code, _, err = run_main(monkeypatch, capsys, "data", "stats")
    assert (code, err) == (2, "error: first second\n")


def test_keyboard_interrupt_exits_130_with_the_resume_line(monkeypatch, capsys):
    import leantune.data

    def interrupted(spec):
        raise KeyboardInterrupt

    monkeypatch.setattr(leantune.data, "load_dataset", interrupted)
    code, out, err = run_main(monkeypatch, capsys, "data", "stats")
    assert code == 130 and err == INTERRUPTED + "\n" and "Traceback" not in out


def test_sigint_to_a_running_command_exits_130(tmp_path):
    """A real Ctrl-C (SIGINT) to ``python -m leantune`` while a command works."""
    script = (
        "import sys, time\n"
        "import leantune.data\n"
        "def slow(spec):\n"
        "    print('working', flush=True)\n"
        "    for _ in range(600):\n"  # short sleeps: a SIGINT that lands on another thread is seen at once
        "        time.sleep(0.1)\n"
        "leantune.data.load_dataset = slow\n"
        "sys.argv = ['leantune', 'data', 'stats']\n"
        "import runpy\n"
        "runpy.run_module('leantune', run_name='__main__')\n"
    )
    env = {**os.environ, "LEANTUNE_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)]))}
    # A job started in the background (`cmd &`) may inherit SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler; give the child a terminal's default disposition, whoever runs the tests.
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline() == "working\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err == INTERRUPTED + "\n"


def test_data_stats_shows_users_without_training_items(tmp_path):
    folder = write_sequence_folder(tmp_path / "d", {1: [1, 2], 2: [], 3: [3]}, {1: [3], 2: [1], 3: []},
                                   {1: [1], 2: [2], 3: [1]}, 3)
    env = {**os.environ, "LEANTUNE_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "leantune", "data", "stats", "--data", str(folder)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = {line.strip("│ ").split("│")[0].strip(): line.split("│")[2].strip()
            for line in done.stdout.splitlines() if line.count("│") == 3}
    assert rows["users"] == "3"
    assert rows["training samples (one per user with training items)"] == "2"
    assert rows["users without training items (validation/test only)"] == "1"


def test_os_errors_on_a_named_path_are_one_line_and_others_keep_their_traceback(monkeypatch, capsys):
    import leantune.data

    def not_a_dir(spec):
        raise NotADirectoryError(20, "Not a directory", "taken/selection.json")

    monkeypatch.setattr(leantune.data, "load_dataset", not_a_dir)
    code, _, err = run_main(monkeypatch, capsys, "data", "stats")
    assert (code, err) == (2, "error: taken/selection.json: Not a directory\n")

    def bug(spec):
        raise OSError("no file involved")

    monkeypatch.setattr(leantune.data, "load_dataset", bug)
    monkeypatch.setattr(sys, "argv", ["leantune", "data", "stats"])
    with pytest.raises(OSError, match="no file involved"):
        main()


def test_every_command_help_shows_an_example():
    """An example or two in every command's --help."""
    import typer.main

    from leantune.cli import app

    missing = []

    def walk(command, path):
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*path, name])
        elif not re.search(r"Examples?:", (command.help or "") + (command.epilog or "")):
            missing.append(" ".join(path))

    walk(typer.main.get_command(app), [])
    assert missing == []


def test_the_command_listing_has_one_line_summaries(monkeypatch, capsys):
    """``leantune --help`` lists each command by a one-line summary: its own ``short_help``, else its help's
    first paragraph joined into one line (typer's rich listing would keep a hard-wrapped docstring's line
    breaks and break rows mid-sentence)."""
    import inspect

    import typer.main

    from leantune.cli import app, one_line_summaries

    def commands(group, path=()):
        for name, sub in getattr(group, "commands", {}).items():
            yield " ".join((*path, name)), sub
            yield from commands(sub, (*path, name))

    command = typer.main.get_command(app)
    derived = {name for name, sub in commands(command) if not sub.short_help}
    one_line_summaries(command)
    joined = []
    for name, sub in commands(command):
        assert sub.short_help and "\n" not in sub.short_help, name
        first = inspect.cleandoc(sub.help or "").split("\n\n")[0]
        if name in derived and "\n" in first:
            joined.append(name)
            assert sub.short_help == " ".join(line.strip() for line in first.splitlines()), name
    assert "attributes errors" in joined  # a hard-wrapped first paragraph was there to join
    code, out, _ = run_main(monkeypatch, capsys, "attributes", "--help")
    assert code == 0 and "errors" in out and "vote" in out


def test_invocation_repeats_what_was_typed_with_paths_relative_and_defaults_left_out(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from leantune.cli.app import invocation

    root, group = typer.Typer(), typer.Typer()
    root.add_typer(group, name="outer")
    seen = []

    @group.command("inner")
    def inner(ctx: typer.Context, folder: Path = typer.Argument(...), names: List[str] = typer.Option([], "--name"),
              out: Path = typer.Option(Path("runs"), "--out"), boot: int = typer.Option(10, "--boot"),
              fast: bool = typer.Option(False, "--fast/--slow")) -> None:
        seen.append(invocation(ctx))

    @group.command("other")
    def other(ctx: typer.Context) -> None:
        seen.append(invocation(ctx))

    monkeypatch.chdir(tmp_path)
    (tmp_path / "run a").mkdir()
    result = CliRunner().invoke(root, ["outer", "inner", str(tmp_path / "run a"), "--fast", "--name", "x", "--name", "y z",
                                       "--out", "/elsewhere/o"])
    assert result.exit_code == 0, result.output
    # the absolute path inside the working folder written relative (quoted for the shell); --boot not given, so not repeated
    assert seen[0] == "leantune outer inner 'run a' --name x --name 'y z' --out /elsewhere/o --fast"
    assert CliRunner().invoke(root, ["outer", "other"]).exit_code == 0 and seen[1] == "leantune outer other"
