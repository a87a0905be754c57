"""The PostgreSQL server a benchmark runs on: a throwaway cluster of its own, or a server
given by URL on which it creates (and drops) databases of its own.

Not a benchmark: bench/campaign.py and bench/suppression_check.py import it.
"""

from __future__ import annotations

import asyncio
import sys
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

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()


if __name__ == "__main__":
    from _common import library_help

    library_help(__doc__)
