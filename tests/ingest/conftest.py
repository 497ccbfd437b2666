"""A real PostgreSQL server for the ingest tests, started from the system's binaries.

The server runs from a temporary data directory on a free port, for the whole session, and
holds the LiteLLM SpendLogs table made by LiteLLM's own migrations (tests/data/litellm/).
Without ``initdb``/``postgres`` (on PATH or under /usr/lib/postgresql/*/bin) the tests that
need it are skipped with that reason; ``.ci/run`` installs the server.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pytest

from distillguard.gateway.ports import free_port

MIGRATIONS = Path(__file__).parent.parent / "data" / "litellm" / "migrations"


def _pg_bin() -> Path | None:
    """The directory holding initdb and postgres: PATH first, then Debian's versioned dirs."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(on_path).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                   if Path(p).parent.name.isdigit() else 0)
    for directory in reversed(found):
        if (Path(directory) / "initdb").exists() and (Path(directory) / "postgres").exists():
            return Path(directory)
    return None


def _server_user() -> str | None:
    """The user to run the server as: PostgreSQL refuses to run as root, so a root test run
    hands it to the ``postgres`` account (or ``nobody``); anyone else runs it as themselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a throwaway server (initdb in a temp dir, a free port), stop and delete it after.

    Raises ``LookupError`` with the reason when it cannot run here (no binaries; root with no
    account to hand the server to). The benchmark (benchmarks/pg_ingest.py) uses it too."""
    bindir = _pg_bin()
    if bindir is None:
        raise LookupError("PostgreSQL server binaries (initdb, postgres) not found on PATH or under "
                          "/usr/lib/postgresql/*/bin: install the postgresql package (.ci/run does)")
    run_as = _server_user()
    if os.geteuid() == 0 and run_as is None:
        raise LookupError("running as root and no 'postgres' or 'nobody' account to run the server as")
    root = Path(tempfile.mkdtemp(prefix="distillguard-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if run_as:
        entry = pwd.getpwnam(run_as)
        for path in (root, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    try:
        subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "distillguard", "--auth=trust",
                        "--encoding=UTF8", "--no-sync"], check=True, user=run_as, capture_output=True)
        port = free_port()
        with (root / "server.log").open("wb") as log:
            server = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
                 "-k", str(sockets), "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off"],
                stdout=log, stderr=subprocess.STDOUT, user=run_as)
            info = PostgresServer("127.0.0.1", port, "distillguard")
            try:
                _wait_ready(info, server, root / "server.log")
                yield info
            finally:
                server.terminate()  # SIGTERM: PostgreSQL's smart shutdown; sessions are closed by now
                try:
                    server.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterable[PostgresServer]:
    """A running PostgreSQL server, trust authentication on 127.0.0.1, superuser ``distillguard``."""
    try:
        server = running_postgres()
        info = server.__enter__()
    except LookupError as exc:
        pytest.skip(str(exc))
    try:
        yield info
    finally:
        server.__exit__(None, None, None)


def _wait_ready(info: PostgresServer, server: subprocess.Popen, log: Path) -> None:
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"postgres exited with {server.returncode}:\n{log.read_text(errors='replace')}")
        try:
            psycopg.connect(info.url("postgres"), connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def create_litellm_database(server: PostgresServer, name: str) -> str:
    """A new database with LiteLLM's SpendLogs table, made by LiteLLM's own migration SQL in
    the order LiteLLM applies it; returns its URL."""
    import psycopg

    with psycopg.connect(server.url("postgres"), autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}"')
        con.execute(f'CREATE DATABASE "{name}"')
    url = server.url(name)
    with psycopg.connect(url, autocommit=True) as con:
        for migration in sorted(MIGRATIONS.glob("*.sql")):
            con.execute(migration.read_text())
    return url


@pytest.fixture
def litellm_db(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """URL of a fresh database, named after the test, holding an empty LiteLLM_SpendLogs."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    return create_litellm_database(postgres_server, name)
