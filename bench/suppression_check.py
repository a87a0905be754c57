"""Benchmark of the dispatch-time suppression check at 1,000,000 suppressed addresses.

Run it with the project's virtualenv (the package must be installed):

    .venv/bin/python bench/suppression_check.py                   # SQLite and PostgreSQL
    .venv/bin/python bench/suppression_check.py --database sqlite
    .venv/bin/python bench/suppression_check.py --database postgresql://postgres@127.0.0.1:5432/x
    .venv/bin/python bench/suppression_check.py --suppressions 100000 --iterations 50  # quicker
    .venv/bin/python bench/suppression_check.py --json

What is timed is the worker's recheck (gateway/worker.py `_recheck`, ST-1): right before a
claimed batch is handed to SMTP, the keyed hashes of every address under every key in
GATEWAY_SECRET_KEYS (`Signer.address_hashes`), then `Store.standings({email: hashes})`
(gateway/store/people.py): the suppressions of those hashes, the contacts of those addresses
and their subscriptions, a statement per 500 values.

For each database (SQLite: a new file in a temporary directory; PostgreSQL: a throwaway
cluster started with tests/pg.py's Cluster and stopped at the end, or a database the script
creates and drops on the server of a URL):

1. `Store.migrate()` (the gateway's own schema), one topic, then --contacts contacts with a
   subscription to it: half of them at addresses that will be suppressed (sup0000000@…),
   half at addresses that never are (ok0000000@…). Loaded with COPY on PostgreSQL and
   executemany on SQLite (untimed; the time is reported).
2. Timed at 0 suppressions: --iterations batches of --batch addresses, half drawn from each
   half, after --warmup untimed batches.
3. --suppressions rows in `suppressions` (COPY / executemany, untimed), one per address
   sup0000000@… upwards, so the first contacts/2 of them are contacts too. Every email_hash
   is what `Signer.address_hash` gives for the address (HMAC-SHA256 under the newest key),
   not a synthetic value: a lookup finds exactly what production data would. Scopes and
   reasons are mixed as bounces, complaints and refusals make them (50% all/hard_bounce,
   10% marketing/complaint, 30% marketing/unsubscribe, 10% topic/unsubscribe). Then ANALYZE
   on PostgreSQL (what autovacuum does after a bulk load).
4. Timed again at that size, the same way. Each batch is checked: every sup address has a
   suppression and every ok address none, every address its contact.

Each timed phase runs once per key count in --keys (default 1,2): with two keys (a key
rotation in progress) every address has two hashes, so the suppressions lookup has twice the
values (two statements of 500 per batch of 500).

Figures, in microseconds per message (batch time / batch size; mean, median and 95th
percentile over the batches): `hash` (Signer.address_hashes), `standings` (the store call:
all of its statements), `lookup` (the suppressions statement alone, run with the same values
the same way), and `recheck` = hash + standings. The queries run on one held connection, as
the worker holds one. Also printed: the query plans of the three statements (PostgreSQL:
EXPLAIN (ANALYZE, BUFFERS) with a real batch's values, and the generic plan a cached prepared
statement may switch to; SQLite: EXPLAIN QUERY PLAN) and the table and index sizes. Exit
status 1 when a check fails or a plan of the lookup scans the whole table.

Only 127.0.0.1 is used (the throwaway cluster listens there).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from _common import TOPIC, count_list, doc_parser
from _pg import PgServer, is_postgres
from _proc import cpu_busy

from gateway.store import Store
from gateway.tokens import Signer

KEYS = ("bench-key-newest", "bench-key-older")
CHUNK = 50_000  # rows per COPY / executemany call while loading
LOOKUP = "SELECT email_hash, scope, topic_id, reason FROM suppressions WHERE email_hash IN ({})"
CONTACTS = "SELECT id, uid, email, name, language, status FROM contacts WHERE email IN ({})"
SUBSCRIPTIONS = "SELECT contact_id, topic_id, status FROM subscriptions WHERE contact_id IN ({})"
SEQ_SCAN_FAILS_AT = 100_000  # rows: from here a lookup plan that reads the table is a failure
SUPPRESSION_KINDS = (  # (scope, with topic, reason, source) by i % 10
    *[("all", False, "hard_bounce", "bounce")] * 5,
    ("marketing", False, "complaint", "arf"),
    *[("marketing", False, "unsubscribe", "person")] * 3,
    ("topic", True, "unsubscribe", "person"),
)


def sup_email(i: int) -> str:
    return f"sup{i:07d}@example.vn"


def ok_email(i: int) -> str:
    return f"ok{i:07d}@example.vn"


def plan_queries(
    hashes: list[str], emails: list[str], ids: list[int]
) -> list[tuple[str, str, list[Any]]]:
    """The three statements of Store.standings, each with one statement's worth of values."""
    return [
        ("lookup", LOOKUP, hashes[:500]),
        ("contacts", CONTACTS, emails[:500]),
        ("subscriptions", SUBSCRIPTIONS, ids[:500]),
    ]


def _chunks(items: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --------------------------------------------------------------------------- databases


class Database:
    """One database for one run: where it is, how to bulk-load it, its sizes and plans."""

    kind = ""
    url = ""

    def describe(self) -> str:
        raise NotImplementedError

    async def load(
        self, table: str, columns: Sequence[str], rows: Iterator[tuple[Any, ...]]
    ) -> None:
        raise NotImplementedError

    async def execute(self, sql: str, *params: Any) -> None:
        raise NotImplementedError

    async def sizes(self) -> dict[str, float]:
        raise NotImplementedError

    async def plans(
        self, store: Store, hashes: list[str], emails: list[str], ids: list[int]
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def close(self) -> None:
        pass

    def server_cpu(self) -> float:
        """CPU seconds of a database server the script started (0: none, or in-process)."""
        return 0.0


class SQLiteDatabase(Database):
    kind = "sqlite"

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "suppressions.db"
        self.url = f"sqlite:///{self.path}"

    def describe(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}, {self.path}"

    async def load(
        self, table: str, columns: Sequence[str], rows: Iterator[tuple[Any, ...]]
    ) -> None:
        con = sqlite3.connect(self.path)
        try:
            with con:
                sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({','.join('?' * len(columns))})"
                con.executemany(sql, rows)
        finally:
            con.close()

    async def execute(self, sql: str, *params: Any) -> None:
        con = sqlite3.connect(self.path)
        try:
            with con:
                con.execute(sql, params)
        finally:
            con.close()

    async def sizes(self) -> dict[str, float]:
        con = sqlite3.connect(self.path)
        try:
            sizes = {"database_mib": self.path.stat().st_size / 2**20}
            try:  # the dbstat virtual table, when SQLite was built with it
                for name, size in con.execute(
                    "SELECT name, SUM(pgsize) FROM dbstat WHERE name LIKE '%suppressions%' GROUP BY name"
                ):
                    sizes[f"{name}_mib"] = size / 2**20
            except sqlite3.Error:
                pass
            return {k: round(v, 1) for k, v in sizes.items()}
        finally:
            con.close()

    async def plans(
        self, store: Store, hashes: list[str], emails: list[str], ids: list[int]
    ) -> dict[str, Any]:
        con = sqlite3.connect(self.path)
        try:
            found = {}
            for name, sql, values in plan_queries(hashes, emails, ids):
                rows = con.execute(
                    "EXPLAIN QUERY PLAN " + sql.format(",".join("?" * len(values))), values
                ).fetchall()
                found[name] = {"plan": [r[-1] for r in rows]}
            return found
        finally:
            con.close()


class PostgresDatabase(Database):
    kind = "postgresql"

    def __init__(self, spec: str) -> None:
        """A throwaway cluster (its own database), or a database of ours on a URL's server."""
        self.pg = PgServer(spec)
        self.name: str | None = None
        self.url = self.pg.url
        if self.pg.cluster is None:
            self.name = f"gwsup_{os.getpid()}_{int(time.time())}"
            self.url = self.pg.database_url(self.name)

    async def _connect(self) -> Any:
        return await self.pg.connect(self.url)

    async def start(self) -> None:
        if self.name is not None:
            await self.pg.fetch(f"CREATE DATABASE {self.name}")
        conn = await self._connect()
        try:
            self.version = await conn.fetchval("SHOW server_version")
            self.settings = {
                k: await conn.fetchval(f"SHOW {k}")
                for k in ("shared_buffers", "work_mem", "random_page_cost", "effective_cache_size")
            }
        finally:
            await conn.close()

    def describe(self) -> str:
        where = (
            self.pg.where() if self.name is None else f"database {self.name} on {self.pg.where()}"
        )
        settings = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"PostgreSQL {self.version.split()[0]}, {where}; {settings}"

    async def load(
        self, table: str, columns: Sequence[str], rows: Iterator[tuple[Any, ...]]
    ) -> None:
        conn = await self._connect()
        try:
            while True:
                chunk = [row for _, row in zip(range(CHUNK), rows, strict=False)]
                if not chunk:
                    break
                await conn.copy_records_to_table(table, records=chunk, columns=list(columns))
        finally:
            await conn.close()

    async def execute(self, sql: str, *params: Any) -> None:
        conn = await self._connect()
        try:
            await conn.execute(Store._numbered(sql), *params)
        finally:
            await conn.close()

    async def sizes(self) -> dict[str, float]:
        conn = await self._connect()
        try:
            sizes = {
                "database_mib": await conn.fetchval("SELECT pg_database_size(current_database())")
            }
            for (name,) in await conn.fetch(
                "SELECT relname FROM pg_class WHERE relname LIKE '%suppressions%'"
                " AND relkind IN ('r', 'i') ORDER BY relname"
            ):
                sizes[f"{name}_mib"] = await conn.fetchval(
                    "SELECT pg_relation_size($1::regclass)", name
                )
            return {k: round(v / 2**20, 1) for k, v in sizes.items()}
        finally:
            await conn.close()

    async def plans(
        self, store: Store, hashes: list[str], emails: list[str], ids: list[int]
    ) -> dict[str, Any]:
        conn = await self._connect()
        try:
            found = {}
            for name, sql, values in plan_queries(hashes, emails, ids):
                query = Store._numbered(sql.format(",".join("?" * len(values))))
                custom = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + query, *values)
                # The plan a cached prepared statement (asyncpg caches them) may settle on
                # after five executions: PREPARE, then EXPLAIN EXECUTE with generic plans forced.
                await conn.execute(f"PREPARE bench_{name} AS {query}")
                await conn.execute("SET plan_cache_mode = force_generic_plan")
                literals = ",".join(
                    str(v) if isinstance(v, int) else "'" + str(v).replace("'", "''") + "'"
                    for v in values
                )
                generic = await conn.fetch(f"EXPLAIN EXECUTE bench_{name}({literals})")
                await conn.execute("RESET plan_cache_mode")
                await conn.execute(f"DEALLOCATE bench_{name}")
                found[name] = {
                    "plan": [_shorten(r[0]) for r in custom],
                    "generic_plan": [_shorten(r[0]) for r in generic],
                }
            return found
        finally:
            await conn.close()

    def server_cpu(self) -> float:
        return self.pg.cpu() or 0.0  # a server we did not start: its CPU is other processes'

    async def close(self) -> None:
        if self.name is not None:
            await self.pg.fetch(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        self.pg.stop()


def _shorten(line: str) -> str:
    """A plan line with its array of values (literals or $n parameters) cut to a count."""
    line = re.sub(
        r"'\{([^}]*)\}'",
        lambda m: f"'{{…{m.group(1).count(',') + 1} values…}}'",
        line,
    )
    return re.sub(
        r"ARRAY\[\$1(?:, \$\d+)*\]",
        lambda m: f"ARRAY[$1 … ${m.group(0).count('$')}]",
        line,
    )


def seq_scan(plan: Sequence[str]) -> bool:
    """A plan that reads the whole table instead of looking the values up in an index."""
    return any(
        "Seq Scan on suppressions" in line or ("SCAN suppressions" in line and "USING" not in line)
        for line in plan
    )


# --------------------------------------------------------------------------- the measurement


class Timings:
    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {
            "hash": [],
            "standings": [],
            "lookup": [],
            "recheck": [],
        }

    def add(self, batch: int, hash_s: float, standings_s: float, lookup_s: float) -> None:
        for key, seconds in (
            ("hash", hash_s),
            ("standings", standings_s),
            ("lookup", lookup_s),
            ("recheck", hash_s + standings_s),
        ):
            self.samples[key].append(1e6 * seconds / batch)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for key, values in self.samples.items():
            ordered = sorted(values)
            out[key] = {
                "mean": round(statistics.fmean(values), 2),
                "median": round(statistics.median(values), 2),
                "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
            }
        return out


async def measure(
    db: Database,
    store: Store,
    signer: Signer,
    half: int,
    batch: int,
    iterations: int,
    warmup: int,
    suppressed: bool,
    rng: random.Random,
) -> dict[str, Any]:
    """Batches of `batch` addresses, half sup… (suppressed once loaded), half ok…; each
    timed as the worker's recheck and checked."""
    timings = Timings()
    wrong = 0
    busy0, own0, server0, t00 = cpu_busy(), time.process_time(), db.server_cpu(), time.time()
    async with store.connection():  # the worker holds one connection while it runs
        for iteration in range(warmup + iterations):
            emails = [sup_email(i) for i in rng.sample(range(half), batch // 2)]
            emails += [ok_email(i) for i in rng.sample(range(half), batch - batch // 2)]
            rng.shuffle(emails)
            t0 = time.perf_counter()
            hashes = {email: signer.address_hashes(email) for email in emails}
            t1 = time.perf_counter()
            standings = await store.standings(hashes)
            t2 = time.perf_counter()
            values = [h for hs in hashes.values() for h in hs]
            for chunk in _chunks(values):
                await store.rows(LOOKUP.format(store.marks(len(chunk))), list(chunk))
            t3 = time.perf_counter()
            for email, standing in standings.items():
                expected = suppressed and email.startswith("sup")
                if bool(standing.suppressions) != expected or standing.contact is None:
                    wrong += 1
            if iteration >= warmup:
                timings.add(batch, t1 - t0, t2 - t1, t3 - t2)
    wall = time.time() - t00
    own, server = time.process_time() - own0, db.server_cpu() - server0
    other = max(cpu_busy() - busy0 - own - server, 0.0)
    return {
        "batches": iterations,
        "batch": batch,
        "wrong": wrong,
        "us_per_msg": timings.summary(),
        "cpu_bench_pct": round(100 * own / wall, 1),
        "cpu_server_pct": round(100 * server / wall, 1),
        "cpu_other_pct": round(100 * other / wall, 1),
    }


def contact_rows(half: int, now: float) -> Iterator[tuple[Any, ...]]:
    for prefix, email in (("s", sup_email), ("o", ok_email)):
        for i in range(half):
            yield (f"{prefix}{i:09d}", email(i), f"Khách {i}", "vi", "active", "bench", now, now)


def suppression_rows(
    n: int, signer: Signer, topic_id: int, now: float
) -> Iterator[tuple[Any, ...]]:
    for i in range(n):
        email = sup_email(i)
        scope, with_topic, reason, source = SUPPRESSION_KINDS[i % 10]
        yield (
            email,
            signer.address_hash(email),
            scope,
            topic_id if with_topic else None,
            reason,
            source,
            now,
        )


async def run_one(
    db: Database, args: argparse.Namespace, say: Callable[[str], None]
) -> dict[str, Any]:
    result: dict[str, Any] = {"database": db.describe(), "kind": db.kind}
    store = Store(db.url)
    await store.connect()
    try:
        await store.migrate()
        now = time.time()
        topic = await store.add_topic(TOPIC, "Tin tức", False, now)
        half = args.contacts // 2
        say(f"{db.kind}: loading {2 * half} contacts and their subscriptions ...")
        t0 = time.perf_counter()
        await db.load(
            "contacts",
            ("uid", "email", "name", "language", "status", "source", "created_at", "updated_at"),
            contact_rows(half, now),
        )
        await db.execute(
            "INSERT INTO subscriptions (contact_id, topic_id, status, created_at, subscribed_at)"
            " SELECT id, ?, 'subscribed', ?, ? FROM contacts",
            topic.id,
            now,
            now,
        )
        result["load_contacts_s"] = round(time.perf_counter() - t0, 1)
        if db.kind == "postgresql":
            await db.execute("ANALYZE")
        signers = {k: Signer(KEYS[:k]) for k in args.keys}
        rng = random.Random(args.seed)
        phases: list[dict[str, Any]] = []

        async def timed(suppressions: int) -> None:
            for keys, signer in signers.items():
                for batch in args.batch:
                    say(
                        f"{db.kind}: {suppressions} suppressions, {keys} key(s), batches of {batch} ..."
                    )
                    figures = await measure(
                        db, store, signer, half, batch, args.iterations, args.warmup,
                        suppressions > 0, rng,
                    )  # fmt: skip
                    phases.append({"suppressions": suppressions, "keys": keys, **figures})

        await timed(0)
        say(f"{db.kind}: loading {args.suppressions} suppressions (real keyed hashes) ...")
        t0 = time.perf_counter()
        await db.load(
            "suppressions",
            ("email", "email_hash", "scope", "topic_id", "reason", "source", "created_at"),
            suppression_rows(args.suppressions, signers[max(signers)], topic.id, now),
        )
        result["load_suppressions_s"] = round(time.perf_counter() - t0, 1)
        emails = [sup_email(i) for i in range(0, half, max(half // 250, 1))][:250]
        emails += [ok_email(i) for i in range(0, half, max(half // 250, 1))][:250]
        sample = {e: signers[min(signers)].address_hashes(e) for e in emails}
        hashes = [h for hs in sample.values() for h in hs]
        ids = [s.contact.id for s in (await store.standings(sample)).values() if s.contact]
        if db.kind == "postgresql":
            result["plans_before_analyze"] = {
                "lookup": (await db.plans(store, hashes, emails, ids))["lookup"]
            }
            t0 = time.perf_counter()
            await db.execute("ANALYZE suppressions")
            result["analyze_s"] = round(time.perf_counter() - t0, 1)
        await timed(args.suppressions)
        result["plans"] = await db.plans(store, hashes, emails, ids)
        result["sizes"] = await db.sizes()
        result["phases"] = phases
    finally:
        await store.disconnect()
    return result


# --------------------------------------------------------------------------- output


def human(report: dict[str, Any]) -> str:
    lines = [
        f"suppression check: {report['suppressions']:,} suppressed addresses, {report['contacts']:,}"
        f" contacts, {report['iterations']} timed batches per row (+{report['warmup']} warm-up),"
        f" cores={report['cores']} load={report['loadavg_at_start'][0]} python={report['python']}",
        "  us per message = batch time / batch size; mean / median / p95 over the batches;"
        " recheck = hash + standings (what the worker's _recheck spends before decide());"
        " cpu db: the PostgreSQL cluster the script started, other: every other process, in %"
        " of one core while the batches ran",
    ]
    for r in report["results"]:
        lines += ["", f"  {r['database']}"]
        lines.append(
            f"    load: contacts {r['load_contacts_s']} s, suppressions {r['load_suppressions_s']} s"
            + (f", ANALYZE {r['analyze_s']} s" if "analyze_s" in r else "")
            + "; sizes "
            + ", ".join(f"{k} {v}" for k, v in r["sizes"].items())
        )
        lines.append(
            f"    {'suppressed':>10} {'keys':>4} {'batch':>5}  {'recheck us/msg':>20}"
            f"  {'standings':>20}  {'lookup alone':>20}  {'hash':>6}  {'cpu db':>6}"
            f" {'other':>5}  check"
        )
        for p in r["phases"]:
            u = p["us_per_msg"]

            def cell(key: str, u: dict[str, Any] = u) -> str:
                return f"{u[key]['mean']:6.1f}/{u[key]['median']:6.1f}/{u[key]['p95']:6.1f}"

            lines.append(
                f"    {p['suppressions']:>10,} {p['keys']:>4} {p['batch']:>5}  {cell('recheck'):>20}"
                f"  {cell('standings'):>20}  {cell('lookup'):>20}  {u['hash']['mean']:6.1f}"
                f"  {p['cpu_server_pct']:5.0f}% {p['cpu_other_pct']:4.0f}%"
                f"  {'OK' if not p['wrong'] else str(p['wrong']) + ' WRONG'}"
            )
        for name, plan in r["plans"].items():
            lines.append(f"    plan of the {name} query ({len(plan['plan'])} lines):")
            lines += [f"      {line}" for line in plan["plan"]]
            if "generic_plan" in plan:
                lines.append("      generic plan (a cached prepared statement may use it):")
                lines += [f"        {line}" for line in plan["generic_plan"]]
        if "plans_before_analyze" in r:
            lines.append("    lookup plan right after the bulk load, before ANALYZE:")
            lines += [f"      {line}" for line in r["plans_before_analyze"]["lookup"]["plan"]]
    lines += [f"  note: {n}" for n in report["notes"]]
    lines.append("  checks: " + ("OK" if report["ok"] else "FAILED"))
    lines += [f"  FAILURE: {f}" for f in report["failures"]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = doc_parser("suppression_check.py", __doc__)

    counts = count_list("numbers", "numbers")
    parser.add_argument(
        "--database",
        default="both",
        help="both (default: SQLite, then a throwaway PostgreSQL cluster), sqlite, postgresql,"
        " or postgresql://USER@HOST:PORT/DB (a database is created and dropped on that server)",
    )
    parser.add_argument("--suppressions", type=int, default=1_000_000, help="default 1000000")
    parser.add_argument(
        "--contacts", type=int, default=100_000, help="half suppressed, half not (default 100000)"
    )
    parser.add_argument(
        "--batch", type=counts, default=[500], help="addresses per recheck, e.g. 200,500 (500)"
    )
    parser.add_argument("--keys", type=counts, default=[1, 2], help="key counts (default 1,2)")
    parser.add_argument("--iterations", type=int, default=200, help="timed batches (200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed batches first (20)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args(argv)
    if max(args.keys) > len(KEYS):
        parser.error(f"--keys: at most {len(KEYS)}")
    if args.contacts < 4 or args.suppressions < args.contacts // 2:
        parser.error("--suppressions must cover the suppressed half of --contacts")
    if max(args.batch) > args.contacts // 2:
        parser.error("--batch must be at most --contacts / 2")
    if args.iterations < 1 or args.warmup < 0:
        parser.error("--iterations must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def say(text: str) -> None:
        if not args.json:
            print(text, file=sys.stderr, flush=True)

    spec = args.database
    kinds = ["sqlite", "postgresql"] if spec == "both" else [spec]
    report: dict[str, Any] = {
        "suppressions": args.suppressions,
        "contacts": args.contacts,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "cores": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "results": [],
    }
    failures: list[str] = []
    notes: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="gw-suppression-"))
    try:
        for kind in kinds:
            db: Database
            if kind == "sqlite":
                db = SQLiteDatabase(tmp)
            elif is_postgres(kind):
                db = PostgresDatabase(kind)
            else:
                raise SystemExit(f"suppression_check: --database {kind!r} is not known")

            async def one(db: Database = db) -> dict[str, Any]:
                try:
                    if isinstance(db, PostgresDatabase):
                        await db.start()
                    return await run_one(db, args, say)
                finally:
                    await db.close()

            r = asyncio.run(one())
            report["results"].append(r)
            busiest = max(p["cpu_other_pct"] for p in r["phases"])
            if busiest >= 15:
                notes.append(
                    f"{r['kind']}: other processes used up to {busiest:.0f}% of a core during"
                    " the timed batches: the figures are disturbed, run again on a quiet machine"
                )
            for p in r["phases"]:
                if p["wrong"]:
                    failures.append(
                        f"{r['kind']}: {p['wrong']} addresses got the wrong standing at"
                        f" {p['suppressions']} suppressions, {p['keys']} key(s)"
                    )
            plan = r["plans"]["lookup"]
            if seq_scan(plan["plan"]) or seq_scan(plan.get("generic_plan", [])):
                text = f"{r['kind']}: the lookup query scans the whole suppressions table"
                if args.suppressions >= SEQ_SCAN_FAILS_AT:
                    failures.append(text)
                else:  # a small table: reading it whole can be the planner's right choice
                    notes.append(f"{text} (only {args.suppressions} rows)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report["notes"] = notes
    report["ok"] = not failures
    report["failures"] = failures
    print(json.dumps(report, ensure_ascii=False) if args.json else human(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
