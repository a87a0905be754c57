"""What the gateway keeps and holds in memory at scale: a message's rendered bytes only until
it reaches a final state (its record stays), and a contact import that streams its file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pg import sqlite_only
from smtp_server import RecordingSMTPServer

from gateway import Gateway
from gateway.store import schema as t


async def bodies(gw: Gateway) -> dict[str, bytes]:
    """Rendered bytes held, by Message-ID."""
    rows = await gw.store.db.fetch_all(
        t.outbox_bodies.join(t.outbox, t.outbox.c.id == t.outbox_bodies.c.outbox_id).select()
    )
    return {r["message_id"]: r["raw"] for r in rows}


async def test_rendered_bytes_stay_until_delivery_and_the_record_after_it(
    gw: Gateway, smtp: RecordingSMTPServer
):
    """Sent, bounced and erased messages drop their body; each stays listed, with its
    status, in the sender's view and in the person's export (PD-2)."""
    smtp.reject = lambda rcpt: (550, "5.1.1 no such user") if rcpt.startswith("gone") else None
    await gw.add_contact("an@example.vn", name="An")
    ok = await gw.send("an@example.vn", "Hóa đơn #42", text="cảm ơn bạn đã mua hàng")
    gone = await gw.send("gone@example.vn", "Hóa đơn #43", text="x")
    held = await bodies(gw)
    assert set(held) == {ok.message_id, gone.message_id}
    assert f"Message-ID: {ok.message_id}".encode() in held[ok.message_id]
    await gw.deliver(until_idle=True)
    assert [m.rcpt_tos for m in smtp.messages] == [["an@example.vn"]]
    assert await bodies(gw) == {}
    rows = await gw.store.db.fetch_all(t.outbox.select())
    assert {r["message_id"]: (r["state"], r["raw"]) for r in rows} == {
        ok.message_id: ("sent", None),
        gone.message_id: ("bounced", None),
    }
    assert (await gw.message_status(ok.message_id))["state"] == "sent"
    assert (await gw.message_status(gone.message_id))["state"] == "bounced"
    exported = await gw.export_contact("an@example.vn")
    assert [m["status"] for m in exported["messages"]] == ["accepted", "sent"]
    assert exported["messages"][0]["subject"] == "Hóa đơn #42"


async def test_a_waiting_message_loses_its_body_when_erased_or_cancelled(
    gw: Gateway, smtp: RecordingSMTPServer, tmp_path: Path
):
    (tmp_path / "c.csv").write_text("email,name\nbinh@example.vn,Bình\nchi@example.vn,Chi\n")
    await gw.import_contacts(tmp_path / "c.csv", subscribe=["news"])
    waiting = await gw.send("binh@example.vn", "Nhắc hẹn", text="ngày mai 9 giờ")
    await gw.erase_contact("binh@example.vn")
    assert waiting.message_id not in await bodies(gw)
    cid = await gw.campaigns.create(
        name="Tháng 12", topic="news", subject="Ưu đãi", html="<p>Xin chào {{ contact.name }}</p>"
    )
    await gw.campaigns.start(cid)
    await gw.campaigns.tick(cid)
    assert len(await bodies(gw)) == 1  # chi's; binh was erased
    await gw.campaigns.cancel(cid)
    assert await bodies(gw) == {}
    assert (await gw.deliver(until_idle=True)).sent == 0
    assert smtp.messages == []


@pytest.mark.empty_database
async def test_an_upgrade_moves_the_bytes_of_waiting_mail_beside_its_row(
    env: dict[str, str], smtp: RecordingSMTPServer
):
    """A message a release before schema 5 queued (its bytes in outbox.raw) is delivered
    as it was rendered after the upgrade, and its bytes then go."""
    env["GATEWAY_SMTP_URL"] = smtp.url
    async with Gateway.from_env(env) as gw:
        waiting = await gw.send("an@example.vn", "Hóa đơn #42", text="cảm ơn bạn")
        body = (await bodies(gw))[waiting.message_id]
        db = gw.store.db
        await db.execute(
            "UPDATE outbox SET raw = (SELECT b.raw FROM outbox_bodies b"
            " WHERE b.outbox_id = outbox.id)"
        )
        await db.execute("DROP TABLE outbox_bodies")
        await db.execute("UPDATE alembic_version SET version_num = '0004'")
        await db.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    async with Gateway.from_env(env) as gw:
        assert gw.migrated is not None and gw.migrated[0] == 4
        assert await bodies(gw) == {waiting.message_id: body}
        row = await gw.store.db.fetch_one(t.outbox.select())
        assert row is not None and row["raw"] is None
        assert (await gw.deliver(until_idle=True)).sent == 1
        assert await bodies(gw) == {}
    assert smtp.messages[0].data.replace(b"\r\n", b"\n") == body.replace(b"\r\n", b"\n")


# -- a million-row import in flat memory --------------------------------------------------

ROWS = 60_000
# What the import may add to the peak memory of the same command on a one-row file. Reading
# the file whole (as before) added about 1 MiB per 1,000 rows (63 MiB here, 1.1 GiB at a
# million); streaming it adds a few MiB whatever the size. 60,000 rows rather than more keep
# the test near 5 s on a quiet machine.
GROWTH_MIB = 25
PEAK = textwrap.dedent(
    """
    import sys
    from gateway.cli import main
    try:
        code = main(sys.argv[1:])
    finally:
        with open("/proc/self/status") as f:
            peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
        print("PEAK", peak, file=sys.stderr)
    sys.exit(code)
    """
)


def import_peak(env: dict[str, str], path: Path) -> tuple[int, dict[str, object], float]:
    """`gateway contacts import FILE --json` in a fresh interpreter: its own peak RSS (KiB,
    VmHWM read by the process itself just before it exits), its report, its wall time."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PEAK, "contacts", "import", str(path), "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak = int(proc.stderr.rsplit("PEAK", 1)[1].split()[0])
    return peak, json.loads(proc.stdout.strip().splitlines()[-1]), seconds


@sqlite_only("the memory of the import does not depend on the database; SQLite is the quick one")
def test_a_large_import_streams_its_file_in_flat_memory(env: dict[str, str], tmp_path: Path):
    """60,000 rows add less than 25 MiB to the peak of a one-row import (the whole file
    held in memory added about 63 MiB), as 1,000,000 rows do: bench/import_rss.py measures
    that size (77 MiB in all, 3.5 MiB over a one-row file)."""
    one = tmp_path / "one.csv"
    one.write_text("email,name\nmot@example.vn,Một\n", encoding="utf-8")
    many = tmp_path / "many.csv"
    with many.open("w", encoding="utf-8") as f:
        f.write("email,name,language\n")
        f.writelines(f"kh{i:06d}@example.vn,Nguyễn Văn {i},vi\n" for i in range(ROWS))
    floor, report, _ = import_peak(env, one)
    assert report["created"] == 1
    peak, report, seconds = import_peak(env, many)
    assert (report["created"], report["bad_rows"]) == (ROWS, [])
    grew = (peak - floor) / 1024
    assert grew < GROWTH_MIB, f"the import of {ROWS} rows grew by {grew:.0f} MiB in {seconds:.0f} s"
