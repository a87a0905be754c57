"""Benchmark of what the database keeps per delivered message after a campaign (SQLite).

Run it with the project's virtualenv (the package must be installed):

    .venv/bin/python bench/storage.py                        # a 20,000-recipient campaign
    .venv/bin/python bench/storage.py --n 100000
    .venv/bin/python bench/storage.py --n 1000000 --setup sqlite   # the 1,000,000 campaign
    .venv/bin/python bench/storage.py --json                 # one JSON object with every figure

What happens, in order:

1. The SMTP sink of bench/_sink.py (aiosmtpd in a child process on 127.0.0.1, port 0,
   discarding every message) starts.
2. Setup, as bench/campaign.py does it: a fresh SQLite file, `gateway init`, `gateway topics
   add news`, N subscribed contacts (`gateway contacts import`, or with --setup sqlite
   inserted with sqlite3 in the same schema), `gateway campaign create`. The database's
   size is taken here ("before": the contacts, their subscriptions and consent records).
3. `gateway campaign send ID --json` delivers the campaign into the sink.
4. The database is measured twice: as it stands after the campaign (its write-ahead log
   checkpointed into the file: what the disk holds), and after `VACUUM` of a copy (the
   rows and indexes alone, without free pages or half-empty ones). Each table and index is
   measured with SQLite's dbstat table (bytes of the pages it uses) and grouped: the
   message records (outbox, outbox_bodies and message_log with their indexes), the contacts (contacts,
   subscriptions, consent_ledger with theirs), the rest.

Figures, per delivered message (delivered = the campaign's `sent` count):
- bytes kept after VACUUM: the whole file / delivered (the issue's measure; target <= 600);
- the message records alone (outbox + message_log, indexes included) / delivered, with the
  share of each table and index;
- the contacts' share, what the file held before the campaign;
- as it stands, without VACUUM: the file / delivered, with the free pages counted apart.
- whether any rendered message is still held after delivery (outbox_bodies, or outbox.raw
  before schema 5): it must not be.
With --n below 1,000,000 the report also extrapolates the file after a 1,000,000-contact
campaign (the issue's < 1 GB target) from the per-message and per-contact figures.

Checks (exit status 1 when one fails): the campaign is done with sent == N, the sink got
N messages, and no outbox row of the campaign keeps its rendered bytes. Only 127.0.0.1 is
used.
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import sys
from pathlib import Path
from typing import Any

from _common import (
    commit,
    doc_parser,
    fail,
    finish,
    gateway_env,
    outcome,
    scratch,
    speaker,
    without_gateway_env,
)
from _sink import Sink, gateway_count
from campaign import Cli, setup

from gateway.config import Settings

TARGET_BYTES = 600
TARGET_1M_BYTES = 1_000_000_000
MIB = 1024 * 1024
MESSAGES = ("outbox", "outbox_bodies", "message_log")
CONTACTS = ("contacts", "subscriptions", "consent_ledger")


def checkpoint(db: Path) -> None:
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


def usage(db: Path) -> dict[str, Any]:
    """Bytes of the file, of its free pages and of each table and index (dbstat)."""
    c = sqlite3.connect(db)
    try:
        page = c.execute("PRAGMA page_size").fetchone()[0]
        pages = c.execute("PRAGMA page_count").fetchone()[0]
        free = c.execute("PRAGMA freelist_count").fetchone()[0]
        owners = dict(
            c.execute("SELECT name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index')")
        )
        per_name = {
            name: (int(size), int(payload))
            for name, size, payload in c.execute(
                "SELECT name, SUM(pgsize), SUM(payload) FROM dbstat GROUP BY name"
            )
        }
    finally:
        c.close()
    groups = {"messages": 0, "contacts": 0, "other": 0}
    for name, (size, _) in per_name.items():
        table = owners.get(name, name)
        group = "messages" if table in MESSAGES else "contacts" if table in CONTACTS else "other"
        groups[group] += size
    return {
        "file_bytes": db.stat().st_size,
        "page_size": page,
        "pages": pages,
        "free_bytes": free * page,
        "groups": groups,
        "names": {
            name: {"table": owners.get(name, name), "bytes": size, "payload": payload}
            for name, (size, payload) in sorted(per_name.items(), key=lambda kv: -kv[1][0])
        },
    }


def vacuumed(db: Path, to: Path) -> dict[str, Any]:
    if to.exists():
        to.unlink()
    with sqlite3.connect(db) as c:
        c.execute("VACUUM INTO ?", (str(to),))
    c.close()
    return usage(to)


def raw_left(db: Path, campaign_id: int) -> int:
    """The campaign's messages whose rendered bytes are still held: in their outbox row,
    or in outbox_bodies (schema 5)."""
    c = sqlite3.connect(db)
    try:
        sql = "SELECT COUNT(*) FROM outbox WHERE campaign_id = ? AND (raw IS NOT NULL"
        if c.execute("SELECT 1 FROM sqlite_schema WHERE name = 'outbox_bodies'").fetchone():
            sql += " OR id IN (SELECT outbox_id FROM outbox_bodies)"
        return int(c.execute(sql + ")", (campaign_id,)).fetchone()[0])
    finally:
        c.close()


def run(args: argparse.Namespace, sink: Sink, tmp: Path, say: Any) -> dict[str, Any]:
    n = args.n
    db = tmp / "storage.db"
    env = {**without_gateway_env(), **gateway_env(tmp, str(db), sink.port)}
    settings = Settings.from_env(gateway_env(tmp, str(db), sink.port))
    cli = Cli(env, tmp)
    campaign_id, setup_figures = setup(cli, tmp, db, settings, n, args.setup, say)
    checkpoint(db)
    before = vacuumed(db, tmp / "before.db")
    (tmp / "before.db").unlink()
    say(f"`gateway campaign send {campaign_id}` to {n:,} contacts ...")
    base = gateway_count(sink.stats()["counts"])
    m = cli.run(
        "campaign", "send", str(campaign_id), "--json", "--concurrency", str(args.concurrency),
        timeout=600 + 0.02 * n,
    )  # fmt: skip
    got = gateway_count(sink.stats()["counts"]) - base
    status = cli.run("campaign", "status", str(campaign_id), "--json").json()
    delivered = int(status["counts"].get("sent", 0))
    checkpoint(db)
    live = usage(db)
    say("VACUUM INTO a copy ...")
    after = vacuumed(db, tmp / "vacuumed.db")
    kept_raw = raw_left(db, campaign_id)
    failures = []
    if status.get("state") != "done" or delivered != n:
        failures.append(f"campaign status {status.get('state')}, sent {delivered} of {n}")
    if got != n:
        failures.append(f"the sink got {got} messages, not {n}")
    if kept_raw:
        failures.append(f"{kept_raw} outbox rows still hold their rendered bytes after delivery")
    per = max(delivered, 1)
    per_contact_bytes = before["groups"]["contacts"] / n
    per_message_bytes = after["groups"]["messages"] / per
    r: dict[str, Any] = {
        "benchmark": "storage",
        "commit": commit(),
        "python": platform.python_version(),
        "n": n,
        "setup": setup_figures,
        "send_seconds": round(m.seconds, 1),
        "delivered": delivered,
        "raw_kept_after_delivery": kept_raw,
        "before": before,
        "live": live,
        "vacuumed": after,
        "bytes_per_delivered": round(after["file_bytes"] / per),
        "live_bytes_per_delivered": round(live["file_bytes"] / per),
        "live_free_bytes_per_delivered": round(live["free_bytes"] / per),
        "message_records_bytes_per_delivered": round(per_message_bytes),
        "contact_bytes_per_contact": round(per_contact_bytes),
        "target_bytes": TARGET_BYTES,
        "target_met": after["file_bytes"] / per <= TARGET_BYTES,
        "ok": not failures,
        "failures": failures,
        "notes": [],
    }
    if n < 1_000_000:
        fixed = after["file_bytes"] - after["groups"]["messages"] - after["groups"]["contacts"]
        r["extrapolated_1m_bytes"] = round(
            fixed + 1_000_000 * (per_message_bytes + per_contact_bytes)
        )
        r["notes"].append(
            "the 1,000,000-contact figure is extrapolated linearly from this run's bytes per"
            " message and per contact (indexes grow a little faster than linearly: deeper trees)"
        )
    return r


def human(r: dict[str, Any]) -> str:
    after, live, before = r["vacuumed"], r["live"], r["before"]
    n, per = r["n"], max(r["delivered"], 1)
    lines = [
        f"storage: N={n:,} python={r['python']} commit={r['commit']} setup={r['setup']['how']}",
        f"  campaign send        {r['send_seconds']} s, delivered {r['delivered']:,};"
        f" rendered bytes still held after delivery: {r['raw_kept_after_delivery']} rows",
        f"  before the campaign  {before['file_bytes'] / MIB:7.1f} MiB after VACUUM"
        f" = {r['contact_bytes_per_contact']} B per contact (contacts, subscriptions, consent)",
        f"  after, as it stands  {live['file_bytes'] / MIB:7.1f} MiB"
        f" = {r['live_bytes_per_delivered']} B per delivered message"
        f" ({r['live_free_bytes_per_delivered']} B of it free pages)",
        f"  after VACUUM         {after['file_bytes'] / MIB:7.1f} MiB"
        f" = {r['bytes_per_delivered']} B per delivered message   target <= {r['target_bytes']}"
        f"  {'met' if r['target_met'] else 'MISSED'}",
        f"    message records (outbox + message_log, indexes included):"
        f" {r['message_records_bytes_per_delivered']} B per message:",
    ]
    for name, v in after["names"].items():
        if v["table"] in MESSAGES:
            lines.append(f"      {name:32} {v['bytes'] / per:7.0f} B")
    lines.append(
        f"    contacts' share {after['groups']['contacts'] / per:.0f} B,"
        f" the rest {after['groups']['other'] / per:.0f} B"
    )
    if "extrapolated_1m_bytes" in r:
        gb = r["extrapolated_1m_bytes"] / 1e9
        lines.append(
            f"  1,000,000 contacts   ~{gb:.2f} GB after VACUUM (extrapolated)  target < 1 GB"
            f"  {'met' if gb < 1 else 'MISSED'}"
        )
    return "\n".join(lines + outcome(r))


def main(argv: list[str] | None = None) -> int:
    parser = doc_parser("storage.py", __doc__)
    parser.add_argument("--n", type=int, default=20_000, help="recipients (default 20000)")
    parser.add_argument(
        "--setup",
        choices=("import", "sqlite"),
        default="import",
        help="contacts through `gateway contacts import` (default) or inserted with sqlite3",
    )
    parser.add_argument(
        "--concurrency", "-c", type=int, default=4, help="SMTP connections (default 4)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (database, copy)"
    )
    args = parser.parse_args(argv)
    if args.n < 1 or args.concurrency < 1:
        parser.error("--n and --concurrency must be at least 1")
    say = speaker(args.json)
    sink = Sink("asyncio")
    try:
        with scratch("gw-storage-", args.keep, say) as tmp:
            result = run(args, sink, tmp, say)
    finally:
        sink.stop()
    if result is None:
        fail("no result")
    return finish(result, [], args.json, human)


if __name__ == "__main__":
    sys.exit(main())
