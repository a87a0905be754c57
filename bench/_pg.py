"""The PostgreSQL server a benchmark runs on: a throwaway cluster of its own, or a server
given by URL on which it creates (and drops) databases of its own.

Not a benchmark: bench/campaign.py and bench/suppression_check.py import it.
"""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from _common import ROOT
from _proc import tree_cpu

PG_WORDS = ("postgresql", "postgres", "pg")  # --database: start a throwaway cluster
PG_PREFIXES = ("postgresql://", "postgres://", "postgresql+asyncpg://", "postgres+asyncpg://")
TESTS = ROOT / "tests"  # tests/pg.py: the throwaway PostgreSQL cluster of the suite


def is_postgres(spec: str) -> bool:
    return spec.lower() in PG_WORDS or spec.startswith(PG_PREFIXES)


def plain(url: str) -> str:
    """A URL asyncpg accepts: the gateway's query options (pool sizes) left out."""
    return urlsplit(url)._replace(query="").geturl()


class PgServer:
    """`postgresql` (or pg, postgres): tests/pg.py's Cluster, on a free port of 127.0.0.1
    with fsync off, stopped and removed by stop(). A URL: that server, untouched but for
    the databases a benchmark creates on it (the URL's own database is only connected to)."""

    def __init__(self, spec: str) -> None:
        self.cluster: Any = None
        if spec.lower() in PG_WORDS:
            sys.path.insert(0, str(TESTS))
            try:
                from pg import Cluster  # type: ignore[import-not-found]
            finally:
                sys.path.remove(str(TESTS))
            self.cluster = Cluster().start()
            self.url = self.cluster.url()
        else:
            self.url = "postgresql://" + spec.split("://", 1)[1]

    def where(self) -> str:
        if self.cluster is not None:
            return f"throwaway cluster on 127.0.0.1:{self.cluster.port} (tests/pg.py: fsync off)"
        return urlsplit(self.url)._replace(path="", query="").geturl()

    def database_url(self, name: str) -> str:
        return urlsplit(self.url)._replace(path="/" + name).geturl()

    async def connect(self, url: str | None = None) -> Any:
        import asyncpg

        return await asyncpg.connect(plain(url or self.url))

    async def fetch(self, sql: str, *params: Any) -> list[Any]:
        """One statement on the server's own database (CREATE/DROP DATABASE, statistics)."""
        conn = await self.connect()
        try:
            return list(await conn.fetch(sql, *params))
        finally:
            await conn.close()

    def sql(self, sql: str, *params: Any) -> list[Any]:
        """fetch() from code that runs no event loop of its own."""
        return asyncio.run(self.fetch(sql, *params))

    def cpu(self) -> float | None:
        """CPU seconds of the throwaway cluster so far: the postmaster, the backends it has
        reaped and those still alive. None for a server the benchmark did not start."""
        if self.cluster is None:
            return None
        try:
            pid = int((self.cluster.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return tree_cpu(pid)

    def restart(self, *settings: str) -> None:
        """Restart the throwaway cluster with the options it was started with plus these
        `name=value` settings (a later -c wins over an earlier one). Only a cluster the
        benchmark started: someone else's server is never restarted."""
        assert self.cluster is not None, "only the benchmark's own cluster is restarted"
        opts = shlex.split((self.cluster.data / "postmaster.opts").read_text())
        args = opts[1:]  # without the postgres binary; -D is given to pg_ctl again
        if "-D" in args:
            i = args.index("-D")
            del args[i : i + 2]
        args += [x for s in settings for x in ("-c", s)]
        pg_ctl = str(self.cluster.bindir / "pg_ctl")
        done = subprocess.run(
            self.cluster._command(
                pg_ctl,
                "-D",
                str(self.cluster.data),
                "-o",
                shlex.join(args),
                "-l",
                str(self.cluster.root / "log"),
                "-w",
                "restart",
            ),  # fmt: skip
            timeout=120,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.cluster.root,
        )
        if done.returncode:
            raise RuntimeError(f"pg_ctl restart failed:\n{done.stdout[-2000:]}")

    def statement_counts(self) -> bool:
        """Make pg_stat_statements readable from the server's own database, if it can be
        without touching someone else's server: the throwaway cluster is restarted once with
        the library loaded (before anything is measured); a server given by URL is used
        only when the extension is already there. True when it is readable."""
        if self.cluster is not None:
            try:
                self.restart("shared_preload_libraries=pg_stat_statements")
                self.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                return True
            except Exception:
                return False
        try:
            return bool(self.sql("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"))
        except Exception:
            return False

    def statements(self, database: str) -> list[tuple[str, int, int]]:
        """(query, calls, rows) of every statement pg_stat_statements counted in one database."""
        rows = self.sql(
            "SELECT s.query, s.calls, s.rows FROM pg_stat_statements s"
            " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1",
            database,
        )
        return [(str(q), int(c), int(r)) for q, c, r in rows]

    async def durability(self) -> dict[str, str]:
        """fsync and full_page_writes as the server runs now (synchronous_commit is on in
        the sessions of commit_ceiling, whatever the server's default)."""
        rows = await self.fetch(
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'full_page_writes')"
        )
        return {str(k): str(v) for k, v in rows}

    def commit_ceiling(
        self, name: str, connections: int = 4, seconds: float = 3.0
    ) -> dict[str, Any]:
        """How many commits per second the server takes: `connections` asyncpg connections,
        each committing one single-row UPDATE after the other (autocommit, synchronous_commit
        on in the session) for `seconds`, in a scratch database `name` created and dropped
        here. Also the server's CPU per commit (our own cluster only)."""

        async def go() -> dict[str, Any]:
            await self.fetch(f"CREATE DATABASE {name}")
            try:
                url = self.database_url(name)
                setup = await self.connect(url)
                try:
                    await setup.execute("CREATE TABLE c (id int PRIMARY KEY, v bigint NOT NULL)")
                    await setup.executemany(
                        "INSERT INTO c VALUES ($1, 0)", [(i,) for i in range(connections)]
                    )
                finally:
                    await setup.close()
                conns = [await self.connect(url) for _ in range(connections)]
                for conn in conns:
                    await conn.execute("SET synchronous_commit = on")
                counts = [0] * connections
                cpu0, own0 = self.cpu(), time.process_time()
                t0 = time.perf_counter()
                end = t0 + seconds

                async def loop(i: int) -> None:
                    stmt = await conns[i].prepare("UPDATE c SET v = v + 1 WHERE id = $1")
                    while time.perf_counter() < end:
                        await stmt.fetch(i)
                        counts[i] += 1

                await asyncio.gather(*(loop(i) for i in range(connections)))
                wall = time.perf_counter() - t0
                cpu1, own1 = self.cpu(), time.process_time()
                for conn in conns:
                    await conn.close()
            finally:
                await self.fetch(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            total = sum(counts)
            db_cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
            return {
                "connections": connections,
                "seconds": round(wall, 2),
                "commits": total,
                "commits_per_s": round(total / wall),
                "db_cpu_us_per_commit": round(1e6 * db_cpu / total, 1) if db_cpu else None,
                "client_cpu_pct": round(100 * (own1 - own0) / wall),
                **(await self.durability()),
            }

        return asyncio.run(go())

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()


if __name__ == "__main__":
    from _common import library_help

    library_help(__doc__)
