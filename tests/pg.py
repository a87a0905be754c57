"""A throwaway PostgreSQL cluster for the tests: a temp directory, a free port, gone at the end.

Used when GATEWAY_TEST_DATABASE=postgresql (see conftest.py). It needs PostgreSQL's server
binaries: `initdb` on PATH, or Debian's package (`apt-get install postgresql`) under
/usr/lib/postgresql/<version>/bin. PostgreSQL refuses to run as root, so as root the cluster
runs as the `postgres` system user (created by Debian's package).
"""

from __future__ import annotations

import asyncio
import glob
import itertools
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

# GATEWAY_TEST_DATABASE=postgresql runs the suite against a throwaway PostgreSQL cluster.
CHOSEN = os.environ.get("GATEWAY_TEST_DATABASE", "").strip().lower() or "sqlite"
ON_POSTGRES = CHOSEN in ("postgresql", "postgres", "pg")


def sqlite_only(reason: str) -> pytest.MarkDecorator:
    """Skip a test that checks something only SQLite has (its file, its pragmas)."""
    return pytest.mark.skipif(ON_POSTGRES, reason=f"SQLite only: {reason}")


def postgres_only(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not ON_POSTGRES, reason=f"PostgreSQL only: {reason}")


INSTALL_HINT = (
    "GATEWAY_TEST_DATABASE=postgresql needs PostgreSQL's server binaries (initdb, pg_ctl): "
    "install them (Debian: `apt-get install postgresql`) or unset GATEWAY_TEST_DATABASE"
)


class PostgresUnavailable(RuntimeError):
    pass


def check() -> None:
    """Raise PostgresUnavailable, with what to do, unless a cluster can be started here."""
    if CHOSEN not in ("sqlite", "postgresql", "postgres", "pg"):
        raise PostgresUnavailable(
            f"GATEWAY_TEST_DATABASE={CHOSEN!r}: use sqlite (the default) or postgresql"
        )
    find_bindir()
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable(
                "running as root, and PostgreSQL refuses to: create the `postgres` system "
                "user for it to run as (Debian's postgresql package does)"
            ) from None


def find_bindir() -> Path:
    """Where initdb and pg_ctl live: PATH first, else the newest Debian version."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parent.parent.name.split(".")],
    )
    if versions:
        return Path(versions[-1]).parent
    raise PostgresUnavailable(INSTALL_HINT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """initdb + pg_ctl start in a temp directory; `stop()` kills it and removes the files."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._root = False
        if os.geteuid() == 0:  # PostgreSQL refuses root: run it as `postgres`
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._root = True
        self.started = False

    def _command(self, *args: str) -> list[str]:
        if not self._root:
            return list(args)
        if shutil.which("runuser"):
            return ["runuser", "-u", "postgres", "--", *args]
        return ["su", "-s", "/bin/sh", "postgres", "-c", shlex.join(args)]

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            self._command(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.root,
        )
        if done.returncode:
            raise PostgresUnavailable(f"{' '.join(args[:2])} failed:\n{done.stdout[-2000:]}")

    def start(self) -> Cluster:
        self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.data),
            "-A", "trust",
            "-U", "postgres",
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",
        )  # fmt: skip
        options = " ".join(
            [
                f"-k {self.root}",
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                # a throwaway cluster: durability buys nothing here
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=300",
            ]
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D", str(self.data),
            "-o", options,
            "-l", str(self.root / "log"),
            "-w",
            "start",
        )  # fmt: skip
        self.started = True
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.started:
            pg_ctl = str(self.bindir / "pg_ctl")
            subprocess.run(
                self._command(pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self.root,
            )
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)


class Databases:
    """Creates and drops one database per test over one admin connection, from any thread
    (a thread of its own runs the admin connection's event loop, so a test's loop is free)."""

    def __init__(self, cluster: Cluster) -> None:
        import asyncpg

        self.cluster = cluster
        self._names = itertools.count(1)
        self._template: str | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._conn = self._call(asyncpg.connect(cluster.url()))

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    def create(self, *, empty: bool = False) -> str:
        """A new database: a copy of one migrated once for the session (a file copy, about
        10 ms, against 100 ms to create and migrate each), or with `empty` no tables at all."""
        name = f"t_{next(self._names)}"
        if empty:
            self._call(self._conn.execute(f"CREATE DATABASE {name}"))
        else:
            template = self._template or self._make_template()
            self._call(
                self._conn.execute(f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY")
            )
        return name

    def _make_template(self) -> str:
        from gateway.store import Store

        name = "gateway_template"
        self._call(self._conn.execute(f"CREATE DATABASE {name}"))

        async def migrate() -> None:
            store = Store(self.cluster.url(name))
            await store.connect()
            try:
                await store.migrate()
            finally:
                await store.disconnect()

        self._call(migrate())
        self._template = name
        return name

    def drop(self, name: str) -> None:
        self._call(self._conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))

    def close(self) -> None:
        try:
            self._call(self._conn.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
