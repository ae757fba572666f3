"""Two worker processes share one study on a real PostgreSQL server; every trial runs exactly once.

The test starts its own throw-away cluster (initdb + pg_ctl in a temporary folder, on a free
loopback port). PostgreSQL refuses to run as root, so under root (as in CI) the server runs as
the ``postgres`` system user (or ``nobody``). It skips, saying why, only when no server can start.
"""
from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from leantune.device import free_port

optuna = pytest.importorskip("optuna")


def _pg_bindir() -> Path | None:
    for candidate in [os.environ.get("PG_BINDIR"), *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _run_as(user: str | None, cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, user=user, capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture(scope="module")
def postgres_url():
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 is not installed (`pip install psycopg2-binary`, done by scripts/setup.sh)")
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql (done by .ci/run)")
    user = None
    if os.geteuid() == 0:  # the server refuses to run as root
        for name in ("postgres", "nobody"):
            try:
                pwd.getpwnam(name)
                user = name
                break
            except KeyError:
                continue
        if user is None:
            pytest.skip("running as root and no 'postgres' or 'nobody' user to run the PostgreSQL server as")
    root = Path(tempfile.mkdtemp(prefix="leantune-pg-"))
    data, log = root / "data", root / "server.log"
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    port = free_port()
    init = _run_as(user, [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "leantune", "--no-sync"], cwd=root)
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed, no PostgreSQL server can start: {init.stderr.strip()[-300:]}")
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
    start = _run_as(user, [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start"], cwd=root)
    if start.returncode != 0:
        tail = log.read_text()[-300:] if log.exists() else start.stderr[-300:]
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"the PostgreSQL server did not start: {tail.strip()}")
    try:
        yield f"postgresql+psycopg2://leantune@127.0.0.1:{port}/postgres"
    finally:
        _run_as(user, [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], cwd=root)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_study_and_run_every_trial_once(postgres_url, tmp_path):
    work, trials, top_k = tmp_path / "shared", 8, 3
    space = tmp_path / "space.toml"  # 4 steps per trial (1 early + 3 continued): short, and the same for all
    space.write_text("[params.epochs]\nvalue = 1\n[params.batch_size]\nvalue = 8\n")
    base = [sys.executable, "-m", "leantune", "tune", "--runner", "synthetic", "--study", "pg", "--storage", postgres_url,
            "--work-dir", str(work), "--trials", str(trials), "--top-k", str(top_k), "--early-fraction", "0.25",
            "--train-size", "32", "--heartbeat", "2", "--synthetic-step-s", "0.8", "--space", str(space), "--no-report"]
    workers = [subprocess.Popen(base + ["--worker", str(i)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    for w, out in zip(workers, outputs):
        assert w.returncode == 0, out

    storage = optuna.storages.RDBStorage(postgres_url)
    study = optuna.load_study(study_name="pg", storage=storage)
    final = optuna.load_study(study_name="pg/final", storage=storage)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == trials
    assert all(t.user_attrs.get("status") == "surplus" for t in study.trials if t.state.name != "COMPLETE")
    # Both processes took trials from the same study.
    assert {t.user_attrs["early"]["worker"] for t in done} == {0, 1}, outputs
    # Exactly once: each trial trained once to its early point in its own folder, each continuation
    # popped by one worker and trained once from that checkpoint.
    folders = [t.user_attrs["checkpoint"] for t in done]
    assert len(set(folders)) == trials
    continued = [t for t in final.trials if t.state.name == "COMPLETE"]
    sources = [t.user_attrs["source_trial"] for t in continued]
    assert len(sources) == len(set(sources)) and len(sources) >= top_k
    end = {t.user_attrs["source_trial"]: t.user_attrs["final"]["steps"] for t in continued}  # 4, or less if it diverged
    for t in done:
        segments = json.loads((work / t.user_attrs["checkpoint"] / "synthetic_state.json").read_text())["segments"]
        assert segments == ([[0, 1], [1, end[t.number]]] if t.number in end else [[0, 1]])
    printed = [line for out in outputs for line in out.splitlines() if line.startswith("[phase 1]")]
    assert len(printed) == trials


def test_the_readmes_bare_postgresql_url_works(postgres_url, tmp_path, capsys):
    """`--storage postgresql://user@host:port/db`, as the README writes it. SQLAlchemy 2.1 reads a
    bare postgresql:// as psycopg 3; with psycopg2 installed and psycopg 3 not, both commands
    failed with 'missing database driver' until the URL was given the installed driver."""
    from leantune.cli import main

    bare = postgres_url.replace("postgresql+psycopg2://", "postgresql://", 1)
    assert bare.startswith("postgresql://leantune@127.0.0.1:")
    work = tmp_path / "w"
    for args in (["tune", "--runner", "synthetic", "--study", "bare", "--storage", bare, "--work-dir", str(work), "--trials", "3",
                  "--top-k", "1", "--train-size", "16", "--no-report"],
                 ["tune", "report", "--study", "bare", "--storage", bare, "--work-dir", str(work), "--top-k", "1"]):
        with pytest.raises(SystemExit) as done:
            main(args)
        out, err = capsys.readouterr()
        assert done.value.code in (0, None), err
        assert "missing database driver" not in out + err
    assert (work / "report" / "report.md").exists()
    study = optuna.load_study(study_name="bare", storage=optuna.storages.RDBStorage(postgres_url))
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 3
