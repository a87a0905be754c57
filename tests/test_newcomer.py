"""What a new user meets first: one odd contact must not stall a campaign, a person's own
refusal cannot be undone by staff, topic counts say who will really get mail, the CLI behaves
in a pipe, CSV files are read strictly and written safely, and the README runs as written.

Real parts throughout: SQLite files (or the PostgreSQL cluster), the aiosmtpd server,
subprocesses of the installed `gateway` command, the API in process through httpx.
"""

from __future__ import annotations

import asyncio
import csv
import email.policy
import io
import json
import logging
import os
import re
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from smtp_server import RecordingSMTPServer
from test_cli import assert_one_line_error, audit_entries, run

from gateway import Gateway, InvalidInput, apikeys
from gateway.bounces import Event
from gateway.errors import Conflict
from gateway.store import schema as t
from gateway.web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
HTML = "<p>Xin chào {{ contact.name }}! <a href='https://first.vn/sale'>Xem</a></p>"


@pytest.fixture
async def client(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    key = await apikeys.create(gw.store, "crm")
    transport = httpx.ASGITransport(app=create_app(gw, worker=False), client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(
        transport=transport,
        base_url="https://mail.first.vn/api/v1",
        headers={"Authorization": f"Bearer {key}"},
    ) as c:
        yield c


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert "\n" not in body["error"]
    return str(body["error"])


async def log_rows(gw: Gateway, **where: Any) -> list[dict[str, Any]]:
    rows = await gw.store.db.fetch_all(t.message_log.select().order_by(t.message_log.c.id))
    found = [dict(r._mapping) for r in rows]
    return [r for r in found if all(r[k] == v for k, v in where.items())]


# -- 11.5: one contact cannot stall a campaign; control characters stop at the door ------------


async def test_a_recipient_whose_name_breaks_the_subject_fails_alone_and_the_campaign_ends(
    gw: Gateway, smtp: RecordingSMTPServer
):
    """MF-2 keeps a line break out of the Subject; that must cost one recipient, not all."""
    await gw.add_contact("an@example.vn", name="An", subscribe=["news"])
    await gw.add_contact("odd@example.vn", name="Odd", subscribe=["news"])
    await gw.add_contact("binh@example.vn", name="Bình", subscribe=["news"])
    # A name stored before names were checked (or written by another tool).
    await gw.store.db.execute(
        t.contacts.update()
        .where(t.contacts.c.email == "odd@example.vn")
        .values(name="Odd\nBcc: all@example.vn")
    )
    cid = await gw.campaigns.create(
        name="Tết", topic="news", subject="Chào {{ contact.name }}", html=HTML
    )
    await gw.campaigns.start(cid)
    await asyncio.wait_for(gw.deliver(until_idle=True), timeout=60)
    status = await gw.campaigns.status(cid)
    assert status.state == "done"
    assert (status.counts["sent"], status.counts["failed"], status.counts["queued"]) == (2, 1, 0)
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == ["an@example.vn", "binh@example.vn"]
    [failed] = await log_rows(gw, campaign_id=cid, status="failed")
    assert failed["email"] == "odd@example.vn" and "line break" in failed["reason"]


@pytest.mark.parametrize("bad", ["An\nB", "An\rB", "An\x1b[31m", "An\x7f", "An\tB"])
@pytest.mark.parametrize("field", ["name", "phone", "address"])
async def test_control_characters_in_a_name_phone_or_postal_address_are_refused(
    gw: Gateway, field: str, bad: str
):
    with pytest.raises(InvalidInput, match="control character"):
        await gw.add_contact("an@example.vn", **{field: bad})
    assert await gw.store.get_contact("an@example.vn") is None


def test_contacts_add_refuses_a_line_break_in_one_line_and_import_names_the_line(env, tmp_path):
    assert run(env, "topics", "add", "news", "--name", "Tin tức").returncode == 0
    proc = run(env, "contacts", "add", "an@example.vn", "--name", "An\nBcc: x@example.vn")
    assert_one_line_error(proc, "name", "line break")
    (tmp_path / "c.csv").write_text(
        "email,name,phone,address\nan@example.vn,An,,\nbinh@example.vn,Bình,090\x1b,\n",
        encoding="utf-8",
    )
    proc = run(env, "contacts", "import", "c.csv", "--json")
    assert proc.returncode == 4
    report = json.loads(proc.stdout)
    assert report["created"] == 1
    assert [(r["line"], "control character" in r["reason"]) for r in report["bad_rows"]] == [
        (3, True)
    ]


async def test_the_api_answers_422_for_a_control_character_on_create_and_update(
    gw: Gateway, client: httpx.AsyncClient
):
    bad = await client.post("/contacts", json={"email": "an@example.vn", "name": "An\r\nB"})
    assert "control character" in error_of(bad, 422)
    made = (await client.post("/contacts", json={"email": "an@example.vn", "name": "An"})).json()
    patched = await client.patch(f"/contacts/{made['id']}", json={"address": "12 Lê Lợi\nQ1"})
    assert "postal address" in error_of(patched, 422)
    assert (await gw.store.contact_records([made["id"]]))[0]["postal_address"] is None


# -- 11.6: staff cannot lift a person's own refusal ------------------------------------------


async def person_refusals(gw: Gateway) -> dict[str, str]:
    """One address per way a person refuses (Decree 91 Art. 20), each refused their way."""
    ways = {
        "click@example.vn": ("link", "unsubscribe"),  # one-click
        "page@example.vn": ("preferences", "unsubscribe"),  # the preference page
        "mailto@example.vn": ("email", "email"),  # the mailto: of List-Unsubscribe
    }
    for address, (source, reason) in ways.items():
        contact, _, _ = await gw.add_contact(address, subscribe=["news"])
        assert await gw.preferences.refuse(contact, source=source, reason=reason)
    await gw.add_contact("abuse@example.vn", subscribe=["news"])
    event = Event("abuse@example.vn", "complaint", "arf")
    assert await gw.feedback.apply([event])
    await gw.add_contact("gone@example.vn", subscribe=["news"])
    await gw.erase_contact("gone@example.vn")
    return {a: "refused" for a in (*ways, "abuse@example.vn", "gone@example.vn")}


async def test_staff_cannot_lift_a_persons_own_refusal_or_erasure_only_their_own_and_bounces(
    gw: Gateway, client: httpx.AsyncClient
):
    """ST-1/OC-5: after a refusal no marketing flows again without the person's new consent."""
    for address in await person_refusals(gw):
        with pytest.raises(Conflict, match="only (they|their own)"):
            await gw.unsuppress(address)
        answer = error_of(await client.delete(f"/suppressions/{address}"), 409)
        assert "only" in answer
    for address in ("click@example.vn", "mailto@example.vn", "abuse@example.vn"):
        result = await gw.send(address, "Ưu đãi", text="x", category="marketing", topic="news")
        assert result.status == "suppressed"
    # What staff added themselves, and bounces, staff may lift.
    await gw.suppress("typo@example.vn")
    await gw.suppress("phoned@example.vn", reason="phone")
    await gw.feedback.apply([Event("full@example.vn", "hard", "dsn", "5.1.1")])
    assert await gw.unsuppress("typo@example.vn") == 1
    assert (await client.delete("/suppressions/phoned@example.vn")).json()["removed"] == 1
    assert await gw.unsuppress("full@example.vn") == 1


def test_suppress_remove_of_a_persons_refusal_exits_nonzero_in_one_line(env):
    async def refuse() -> None:
        async with Gateway.from_env(env) as gw:
            await gw.add_topic("news", "Tin tức")
            contact, _, _ = await gw.add_contact("an@example.vn", subscribe=["news"])
            await gw.preferences.refuse(contact, source="link")

    asyncio.run(refuse())
    assert_one_line_error(run(env, "suppress", "remove", "an@example.vn"), "only they")
    rows = json.loads(run(env, "suppress", "list", "--json").stdout)
    assert [(r["email"], r["reason"]) for r in rows] == [("an@example.vn", "unsubscribe")]


# -- 11.7: what will actually happen, per topic ----------------------------------------------


async def test_a_person_who_refused_everything_shows_stopped_and_is_not_counted(
    gw: Gateway, client: httpx.AsyncClient, env: dict[str, str]
):
    refused, _, _ = await gw.add_contact("an@example.vn", subscribe=["news", "deals"])
    await gw.add_contact("binh@example.vn", subscribe=["news"])
    await gw.add_contact("chi@example.vn", subscribe=["news"])
    await gw.preferences.refuse(refused, source="link")
    await gw.suppress("chi@example.vn")  # blocked for all mail by staff

    record = (await client.get(f"/contacts/{refused.id}")).json()
    assert record["subscriptions"] == {"deals": "subscribed", "news": "subscribed"}  # recorded
    assert record["effective"]["news"]["state"] == "stopped"
    assert "refused all promotional mail" in record["effective"]["news"]["why"]
    other = (await client.get("/contacts", params={"email": "binh@example.vn"})).json()
    assert other["effective"] == {"news": {"state": "receiving"}}

    counts = {t["slug"]: t["subscribers"] for t in (await client.get("/topics")).json()}
    assert counts == {"deals": 0, "news": 1}
    listed = json.loads(run(env, "topics", "list", "--json").stdout)
    assert {t["slug"]: t["subscribers"] for t in listed} == {"deals": 0, "news": 1}


# -- 11.9: a pipe, the benchmarks' help, a quote left open, the README ------------------------


def test_output_into_a_closed_pipe_is_quiet_like_other_unix_tools(env):
    """`gateway settings | head -1`: the reader went away; no 'unexpected BrokenPipeError'."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "gateway", "settings"],
            env={**os.environ, **env},
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert "BrokenPipe" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "Exception ignored" not in proc.stderr
    assert proc.returncode == 141


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "bench").glob("*.py")))
def test_every_benchmark_explains_itself_with_help(script):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


def test_a_quote_left_open_imports_nothing_and_names_the_line(env, tmp_path):
    (tmp_path / "c.csv").write_text(
        'email,name\nan@example.vn,An\n"binh@example.vn,Bình\nchi@example.vn,Chi\n',
        encoding="utf-8",
    )
    assert_one_line_error(run(env, "contacts", "import", "c.csv"), "line 3", "nothing")
    assert json.loads(run(env, "suppress", "list", "--json").stdout) == []

    async def contacts() -> int:
        async with Gateway.from_env(env) as gw:
            return len(await gw.store.db.fetch_all(t.contacts.select()))

    assert asyncio.run(contacts()) == 0


async def test_the_api_refuses_a_csv_with_a_quote_left_open(gw: Gateway, client):
    text = 'email,name\nan@example.vn,"An\nbinh@example.vn,Bình\n'
    answer = await client.post(
        "/contacts/import", content=text.encode(), headers={"content-type": "text/csv"}
    )
    assert "line 2" in error_of(answer, 422)
    assert await gw.store.get_contact("an@example.vn") is None


def readme_block(heading: str) -> list[list[str]]:
    """The shell commands of the first ```sh block under `heading` in README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(heading, 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def test_the_readme_campaign_commands_run_in_order_on_the_default_settings(
    env: dict[str, str], tmp_path
):
    defaults = {"GATEWAY_DATABASE_URL": env["GATEWAY_DATABASE_URL"]}  # the test's own database
    # The topic the README's quick start adds first.
    assert run(defaults, "topics", "add", "news", "--name", "Tin tức").returncode == 0
    (tmp_path / "people.csv").write_text(
        "email,name,phone,address,language,topics\nan@example.vn,Nguyễn Văn An,,,vi,\n",
        encoding="utf-8",
    )
    (tmp_path / "dec.html").write_text("<p>Xin chào {{ contact.name }}!</p>", encoding="utf-8")
    commands = readme_block("## Campaigns")
    assert [c[:3] for c in commands][:2] == [
        ["gateway", "contacts", "import"],
        ["gateway", "campaign", "create"],
    ]
    for command in commands:
        assert command[0] == "gateway"
        proc = run(defaults, *command[1:])
        assert proc.returncode == 0, (command, proc.stderr)
    status = json.loads(proc.stdout)
    assert status["state"] == "done" and status["counts"]["sent"] == 1
    parse = BytesHeaderParser(policy=email.policy.default).parsebytes
    subjects = sorted(
        str(parse(m.read_bytes())["Subject"]) for m in (tmp_path / "var/mail/new").iterdir()
    )
    # the [TEST] copy and the campaign's message
    assert subjects == ["[QC] [TEST] Ưu đãi cho Nguyễn Văn An", "[QC] Ưu đãi cho Nguyễn Văn An"]


# -- 12.10: CSV injection, addresses in ALERT lines, reads that were not audited --------------


async def test_a_suppressions_export_cannot_carry_a_spreadsheet_formula(
    gw: Gateway, client: httpx.AsyncClient
):
    """OWASP CSV injection: a cell starting with = + - @ is written as text."""
    for address in ("=cmd@example.vn", "+1@example.vn", "-2@example.vn", "an@example.vn"):
        await gw.suppress(address)
    exported = (await client.get("/suppressions.csv")).text
    emails = [r["email"] for r in csv.DictReader(io.StringIO(exported))]
    assert emails == ["'=cmd@example.vn", "'+1@example.vn", "'-2@example.vn", "an@example.vn"]


async def test_an_alert_names_no_address(env: dict[str, str], caplog: pytest.LogCaptureFixture):
    """BN-2 alerts are logged with a message id and a keyed hash of the recipient."""

    def reject(rcpt: str) -> tuple[int, str] | None:
        return (550, f"5.7.1 <{rcpt.upper()}> sender not authorized (SPF)")

    async with RecordingSMTPServer(reject=reject) as srv:
        env.update(GATEWAY_SMTP_URL=srv.url, GATEWAY_RETRY_SCHEDULE="1")
        async with Gateway.from_env(env) as gw:
            sent = await gw.send("an@example.vn", "Hóa đơn", text="x")
            with caplog.at_level(logging.INFO, logger="gateway"):
                await gw.deliver(until_idle=True)
    alerts = [r.getMessage() for r in caplog.records if "ALERT" in r.getMessage()]
    assert len(alerts) == 1 and "5.7.1" in alerts[0]
    assert sent.message_id in alerts[0]
    assert not re.search("an@example.vn", alerts[0], re.IGNORECASE), alerts[0]


def test_suppress_list_on_the_command_line_is_audited(env):
    assert run(env, "suppress", "add", "spam@example.vn").returncode == 0
    assert run(env, "suppress", "list").returncode == 0
    rows = [(e["actor"], e["action"], e["subject"]) for e in audit_entries(env)]
    assert [(a.startswith("cli:"), action, subject) for a, action, subject in rows] == [
        (True, "suppressions.list", "list")
    ]


async def test_the_api_answer_that_a_contact_exists_is_audited(gw: Gateway, client):
    await gw.add_contact("an@example.vn")
    answer = await client.post("/contacts", json={"email": "an@example.vn"})
    assert "(id " in error_of(answer, 409)
    log = await gw.store.audit_entries()
    assert [(e["action"], e["subject"]) for e in log] == [
        ("contacts.exists", gw.signer.address_hash("an@example.vn"))
    ]
