"""Operator tools (issue 16): dry runs and confirmations, listings of contacts and messages,
the frequency cap said at accept, social links, plain words, and quiet mistakes made loud."""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import pty
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway import Gateway, content
from gateway.accept import SendRequest
from gateway.cli import build_parser
from gateway.cli.mail import _say_check_errors
from gateway.config import Settings
from gateway.errors import ConfigError, GatewayError, NotFound
from gateway.web.openapi import DOCUMENT

ROOT = Path(__file__).resolve().parent.parent
RULE_CODE = re.compile(r"\b[A-Z]{2}-\d\b|promise \d")
HTML = "<p>Xin chào {{ contact.name }}</p>"


async def cli(gw: Gateway, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    """Run one `gateway …` command on the open gateway; its JSON answer."""
    args = build_parser().parse_args([*argv, "--json"])
    assert await args.handler(gw, args) == 0
    return json.loads(capsys.readouterr().out)


async def text(gw: Gateway, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    args = build_parser().parse_args(list(argv))
    assert await args.handler(gw, args) == 0
    return capsys.readouterr().out


async def rows(gw: Gateway, table: str) -> int:
    return int((await gw.store.rows(f"SELECT COUNT(*) FROM {table}"))[0][0])


async def people(gw: Gateway, *emails: str, topic: str = "news") -> None:
    for email in emails:
        await gw.add_contact(email, name=email.split("@")[0].title(), subscribe=[topic])


# -- dry runs ----------------------------------------------------------------------------------


async def test_campaign_send_dry_run_counts_by_reason_and_sends_or_writes_nothing(
    gw: Gateway, capsys: pytest.CaptureFixture[str]
):
    """AD-4, ST-1: the dry run judges each subscriber as accept will, and changes nothing."""
    await people(gw, "an@example.vn", "binh@example.vn", "chi@example.vn", "dung@example.vn")
    await people(gw, "em@example.vn", "giang@example.vn")
    await gw.suppress("binh@example.vn", reason="hard_bounce")
    await gw.suppress("chi@example.vn", reason="phone")  # refused promotional mail
    contact = await gw.store.get_contact("dung@example.vn")
    assert contact is not None
    await gw.store.run(
        "UPDATE subscriptions SET status = 'pending' WHERE contact_id = ?", (contact.id,)
    )
    await gw.erase_contact("giang@example.vn")
    cid = await gw.campaigns.create(name="Dec", topic="news", subject="Tin", html=HTML)
    before = [await rows(gw, t) for t in ("outbox", "message_log")]

    found = await cli(gw, capsys, "campaign", "send", str(cid), "--dry-run")
    assert found["dry_run"] is True and found["state"] == "draft"
    assert found["would_get"] == 2  # an, em
    assert found["suppressed"] == {"hard_bounce": 1, "phone": 1}
    assert found["not_in_audience"] == {"pending": 1, "unsubscribed": 0}
    assert (found["already_sent"], found["held_by_frequency_cap"]) == (0, 0)
    assert [await rows(gw, t) for t in ("outbox", "message_log")] == before
    assert (await gw.campaigns.status(cid)).state == "draft"

    said = await text(gw, capsys, "campaign", "send", str(cid), "--dry-run", "--rate", "1")
    assert "2 would get the campaign, 2 suppressed; nothing was sent or written" in said
    assert "suppressed, address bounced (hard bounce): 1" in said
    assert "suppressed, refused promotional mail by phone: 1" in said
    assert "not in the audience, waiting to confirm their subscription: 1" in said
    assert "at 1 a second it would take about 2 second(s)" in said


async def test_campaign_dry_run_tells_already_sent_and_held_by_the_frequency_cap(
    gw: Gateway, capsys: pytest.CaptureFixture[str]
):
    """AD-3: who already had the day's marketing mail is held, not dropped."""
    await people(gw, "an@example.vn", "binh@example.vn")
    await gw.add_contact("an@example.vn", subscribe=["deals"])
    for n in range(3):
        await gw.send("an@example.vn", f"Deal {n}", text="x", category="marketing", topic="deals")
    await gw.deliver(until_idle=True)
    cid = await gw.campaigns.create(name="Dec", topic="news", subject="Tin", html=HTML)
    found = await cli(gw, capsys, "campaign", "send", str(cid), "--dry-run")
    assert (found["would_get"], found["held_by_frequency_cap"]) == (2, 1)

    await gw.campaigns.start(cid)
    await gw.campaigns.tick(cid)  # both enqueued: a second run would mail nobody again
    found = await cli(gw, capsys, "campaign", "send", str(cid), "--dry-run")
    assert (found["would_get"], found["already_sent"]) == (0, 2)


async def test_campaign_dry_run_of_a_finished_campaign_is_refused_in_words(
    gw: Gateway, capsys: pytest.CaptureFixture[str]
):
    cid = await gw.campaigns.create(name="Dec", topic="news", subject="Tin", html=HTML)
    await gw.campaigns.cancel(cid)
    args = build_parser().parse_args(["campaign", "send", str(cid), "--dry-run"])
    with pytest.raises(GatewayError, match="is cancelled: it cannot be sent again"):
        await args.handler(gw, args)


async def test_policy_publish_dry_run_counts_the_notices_and_publishes_nothing(
    gw: Gateway, capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    """PD-5: a notice reaches everyone with data stored but hard bounces and erasures."""
    await people(gw, "an@example.vn", "binh@example.vn", "chi@example.vn", "dung@example.vn")
    await gw.suppress("binh@example.vn", reason="hard_bounce")
    await gw.suppress("chi@example.vn", reason="phone")  # a refusal does not stop a notice
    await gw.erase_contact("dung@example.vn")
    (tmp_path / "policy.txt").write_text("Chính sách mới.")
    argv = ("policy", "publish", "2026.12", "--text", str(tmp_path / "policy.txt"))
    before = [await rows(gw, t) for t in ("outbox", "message_log", "policy_notices")]
    found = await cli(gw, capsys, *argv, "--adverse", "--dry-run")
    assert found["would_get"] == 2
    assert found["suppressed"] == {"hard_bounce": 1, "erased": 1}
    said = await text(gw, capsys, *argv, "--adverse", "--dry-run")
    assert "2 would get the notice, 2 suppressed; nothing was sent or written" in said
    not_adverse = await cli(gw, capsys, *argv, "--dry-run")
    assert (not_adverse["adverse"], not_adverse["would_get"]) == (False, 0)
    assert await gw.policies.versions() == []
    assert [await rows(gw, t) for t in ("outbox", "message_log", "policy_notices")] == before

    await gw.policies.publish("2026.12", "Chính sách mới.")
    args = build_parser().parse_args([*argv, "--dry-run"])
    with pytest.raises(GatewayError, match="already published"):
        await args.handler(gw, args)


# -- confirmations on a terminal ---------------------------------------------------------------


def on_terminal(env: dict[str, str], answer: str | None, *argv: str) -> tuple[int, str]:
    """`gateway …` with its stdin a terminal (a pseudo-terminal), typing `answer`."""
    leader, follower = pty.openpty()
    try:
        if answer is not None:
            os.write(leader, answer.encode() + b"\n")
        proc = subprocess.run(
            [sys.executable, "-m", "gateway", *argv],
            env={**os.environ, **env},
            stdin=follower,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(follower)
        os.close(leader)
    return proc.returncode, proc.stdout + proc.stderr


async def test_contact_erase_asks_on_a_terminal_and_yes_skips_the_question(env: dict[str, str]):
    """PD-3: erasing cannot be undone, so a person at a terminal confirms it first."""
    async with Gateway.from_env(env) as gw:
        await gw.add_topic("news", "Tin")
        await gw.add_contact("an@example.vn")
        await gw.add_contact("binh@example.vn")
    code, said = on_terminal(env, "n", "contact", "erase", "an@example.vn")
    assert code == 1 and "Erase an@example.vn now?" in said
    assert "nothing was done (answer y to go ahead, or add --yes)" in said
    code, said = on_terminal(env, "y", "contact", "erase", "an@example.vn")
    assert code == 0 and "erased an@example.vn" in said
    code, said = on_terminal(env, None, "contact", "erase", "binh@example.vn", "--yes")
    assert code == 0 and "?" not in said.split("erased")[0]
    async with Gateway.from_env(env) as gw:
        assert await gw.is_erased("an@example.vn") and await gw.is_erased("binh@example.vn")


async def test_adverse_policy_publish_asks_on_a_terminal_naming_how_many_get_it(
    env: dict[str, str], tmp_path: Path
):
    async with Gateway.from_env(env) as gw:
        await gw.add_contact("an@example.vn")
    (tmp_path / "p.txt").write_text("Chính sách.")
    argv = ("policy", "publish", "2026.12", "--text", "p.txt", "--adverse")
    code, said = on_terminal(env, "no", *argv)
    assert code == 1 and "email a notice to 1 contact(s) now?" in said
    async with Gateway.from_env(env) as gw:
        assert await gw.policies.versions() == []
    code, said = on_terminal(env, "y", *argv)
    assert code == 0 and "1 notice(s) queued" in said


# -- listings ----------------------------------------------------------------------------------


async def test_contacts_list_prints_headers_or_json_by_topic_in_pages(
    gw: Gateway, capsys: pytest.CaptureFixture[str]
):
    await people(gw, "an@example.vn", "binh@example.vn", "chi@example.vn")
    await gw.add_contact("dung@example.vn", subscribe=["deals"])
    said = await text(gw, capsys, "contacts", "list")
    lines = said.splitlines()
    assert lines[0].split() == ["id", "email", "name", "language", "status", "added"]
    assert [line.split()[1] for line in lines[1:5]] == [
        "an@example.vn",
        "binh@example.vn",
        "chi@example.vn",
        "dung@example.vn",
    ]
    page = await cli(gw, capsys, "contacts", "list", "--topic", "news", "--limit", "2")
    assert [c["email"] for c in page["contacts"]] == ["an@example.vn", "binh@example.vn"]
    assert (page["total"], page["more"]) == (3, True)
    assert page["contacts"][0]["subscription"] == "subscribed"
    rest = await cli(
        gw, capsys, "contacts", "list", "--topic", "news", "--after", str(page["contacts"][1]["id"])
    )
    assert [c["email"] for c in rest["contacts"]] == ["chi@example.vn"]
    said = await text(gw, capsys, "contacts", "list", "--limit", "1")
    assert said.splitlines()[-1] == "1 of 4 shown; the next ones: --after 1"
    entries = await gw.store.rows("SELECT action, subject FROM audit_log")
    assert ("contacts.list", "list") in entries  # promise 9: a read of people's data


async def test_messages_list_and_show_tell_state_why_and_who_handed_it_in(
    gw: Gateway, capsys: pytest.CaptureFixture[str]
):
    await people(gw, "an@example.vn")
    await gw.suppress("binh@example.vn", reason="manual")
    [sent] = await gw.send_many(
        [SendRequest("an@example.vn", "Hóa đơn", text="x", source="apikey:crm")]
    )
    refused = await gw.send("binh@example.vn", "Hóa đơn", text="x")
    assert refused.status == "suppressed"
    await gw.deliver(until_idle=True)

    listed = await cli(gw, capsys, "messages", "list")
    assert [(m["to"], m["state"]) for m in listed["messages"]] == [
        ("binh@example.vn", "suppressed"),
        ("an@example.vn", "sent"),
    ]
    assert listed["messages"][0]["id"].startswith("#")
    assert "suppressed for all mail (manual)" in listed["messages"][0]["why"]
    said = await text(gw, capsys, "messages", "list", "--to", "AN@example.vn")
    assert said.splitlines()[0].split() == ["id", "accepted", "to", "category", "state", "why"]
    assert sent.message_id in said and "binh" not in said

    shown = await cli(gw, capsys, "messages", "show", sent.message_id or "")
    assert (shown["state"], shown["attempts"], shown["source"]) == ("sent", 1, "apikey:crm")
    assert [step["status"] for step in shown["history"]] == ["accepted", "sent"]
    bare = (sent.message_id or "").strip("<>")
    said = await text(gw, capsys, "messages", "show", bare)
    assert "handed in by: apikey:crm" in said and "state:        sent" in said
    said = await text(gw, capsys, "messages", "show", listed["messages"][0]["id"])
    assert "why:          suppressed for all mail (manual)" in said
    args = build_parser().parse_args(["messages", "show", "<nobody@first.vn>"])
    with pytest.raises(NotFound, match="no message <nobody@first.vn>"):
        await args.handler(gw, args)


async def test_messages_list_pages_with_limit_and_before_and_filters_by_campaign(
    gw: Gateway, capsys: pytest.CaptureFixture[str]
):
    await people(gw, "an@example.vn", "binh@example.vn")
    for n in range(3):
        await gw.send("an@example.vn", f"Hóa đơn {n}", text="x")
    cid = await gw.campaigns.create(name="Dec", topic="news", subject="Tin", html=HTML)
    await gw.campaigns.start(cid)
    await gw.campaigns.tick(cid)
    first = await cli(gw, capsys, "messages", "list", "--limit", "2")
    assert first["more"] is True and len(first["messages"]) == 2
    said = await text(gw, capsys, "messages", "list", "--limit", "2")
    before = said.splitlines()[-1].rsplit(" ", 1)[1]
    rest = await cli(gw, capsys, "messages", "list", "--before", before)
    assert len(rest["messages"]) == 3 and rest["more"] is False
    ids = {m["id"] for m in first["messages"]} | {m["id"] for m in rest["messages"]}
    assert len(ids) == 5
    campaign = await cli(gw, capsys, "messages", "list", "--campaign", str(cid))
    assert {m["to"] for m in campaign["messages"]} == {"an@example.vn", "binh@example.vn"}
    assert all(m["campaign_id"] == cid for m in campaign["messages"])


async def test_every_listing_prints_a_header_line(gw: Gateway, capsys: pytest.CaptureFixture[str]):
    await gw.suppress("an@example.vn")
    await gw.create_api_key("crm")
    await gw.campaigns.create(name="Dec", topic="news", subject="Tin", html=HTML)
    await gw.policies.publish("2026.12", "Chính sách.")
    for argv, header in (
        (("suppress", "list"), "email scope reason source"),
        (("apikey", "list"), "name scope prefix created state"),
        (("campaign", "list"), "id state topic name"),
        (("policy", "list"), "version published adverse notices"),
    ):
        said = await text(gw, capsys, *argv)
        first = said.splitlines()[0]
        assert " ".join(first.split()) == header, argv


# -- the frequency cap, said at accept ---------------------------------------------------------


async def test_ad3_a_message_the_frequency_cap_holds_says_so_when_accepted(
    gw: Gateway, capsys: pytest.CaptureFixture[str]
):
    await people(gw, "an@example.vn")
    results = [
        await gw.send("an@example.vn", f"Tin {n}", text="x", category="marketing", topic="news")
        for n in range(4)
    ]
    assert [r.status for r in results] == ["queued"] * 4
    assert [r.reason for r in results[:3]] == ["", "", ""]
    held = results[3].reason
    assert held.startswith("held by the frequency cap (at most 3 marketing messages to one")
    assert re.search(r"until \d{4}-\d\d-\d\d \d\d:\d\d UTC$", held)
    assert results[3].as_dict()["reason"] == held  # what the API answers
    # service mail is never capped
    assert (await gw.send("an@example.vn", "Hóa đơn", text="x")).reason == ""
    await gw.deliver(until_idle=True)
    shown = await cli(gw, capsys, "messages", "show", results[3].message_id or "")
    assert shown["state"] == "queued" and "held by the frequency cap" in shown["why"]
    args = build_parser().parse_args(
        ["send", "--to", "an@example.vn", "--subject", "Tin 5", "--text", "-",
         "--category", "marketing", "--topic", "news"]
    )  # fmt: skip
    sys.stdin = __import__("io").StringIO("x")
    try:
        assert await args.handler(gw, args) == 0
    finally:
        sys.stdin = sys.__stdin__
    assert "; held by the frequency cap" in capsys.readouterr().out


# -- social links ------------------------------------------------------------------------------

FIRST = ("first.vn",)
SOCIAL = ("facebook.com", "zalo.me")


@pytest.mark.parametrize(
    "html",
    [
        '<a href="https://www.facebook.com/shop">Facebook</a>',
        '<a href="https://zalo.me/0901234567">Zalo</a>',
        '<map><area href="https://facebook.com/shop" alt="fb"></map>',
    ],
)
def test_tp5_plain_links_to_listed_domains_pass(html: str):
    assert content.scan(html, None, FIRST, link_domains=SOCIAL) == []


def test_tp5_urls_in_the_text_part_to_listed_domains_pass():
    found = content.scan(None, "Theo dõi: https://zalo.me/shop www.facebook.com/shop", FIRST,
                         link_domains=SOCIAL)  # fmt: skip
    assert found == []


@pytest.mark.parametrize(
    "html",
    [
        '<img src="https://facebook.com/logo.png">',
        '<link rel="stylesheet" href="https://facebook.com/a.css">',
        "<style>@font-face { src: url(https://zalo.me/f.woff) }</style>",
        '<form action="https://facebook.com/post"><button>x</button></form>',
        '<iframe src="https://zalo.me/widget"></iframe>',
        '<div style="background: url(https://facebook.com/bg.png)">x</div>',
    ],
)
def test_tp5_images_stylesheets_fonts_forms_and_frames_from_listed_domains_stay_blocked(
    html: str,
):
    [finding] = content.scan(html, None, FIRST, link_domains=SOCIAL)
    assert "allowed for links only (GATEWAY_LINK_DOMAINS)" in finding.reason


@pytest.mark.parametrize(
    ("html", "text"),
    [('<a href="https://instagram.com/shop">x</a>', None), (None, "https://instagram.com/shop")],
)
def test_a_blocked_plain_link_says_to_list_its_domain_not_to_host_a_file(
    html: str | None, text: str | None
):
    [finding] = content.scan(html, text, FIRST, link_domains=SOCIAL)
    assert "add it to GATEWAY_LINK_DOMAINS" in finding.reason
    assert "host the file yourself" not in finding.reason


async def test_send_with_social_links_queues_and_a_social_image_blocks(env: dict[str, str]):
    env["GATEWAY_LINK_DOMAINS"] = "facebook.com, zalo.me"
    async with Gateway.from_env(env) as gw:
        links = '<p><a href="https://facebook.com/shop">fb</a></p>'
        ok = await gw.send("an@example.vn", "Hóa đơn", links, "Zalo: https://zalo.me/shop")
        assert ok.status == "queued"
        image = '<img src="https://facebook.com/logo.png" alt="">'
        blocked = await gw.send("an@example.vn", "Hóa đơn", image)
        assert blocked.status == "blocked" and "links only" in blocked.reason


# -- plain words -------------------------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += _parsers(sub)
    return found


def test_no_help_text_shows_an_internal_rule_code():
    parsers = _parsers(build_parser())
    assert len(parsers) > 40  # the walk reached every command
    for parser in parsers:
        assert not RULE_CODE.search(parser.format_help()), parser.prog


def test_the_openapi_document_shows_no_internal_rule_code():
    assert not RULE_CODE.findall(json.dumps(DOCUMENT, ensure_ascii=False))


def test_no_message_in_the_code_shows_an_internal_rule_code():
    """Every string literal of gateway/ (errors, reasons, help, pages), docstrings apart: a
    rule code in a docstring or a comment is for us, anywhere else it reaches a user."""
    hits = []
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        tree = ast.parse(path.read_text())
        docs = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docs
                and RULE_CODE.search(node.value)
            ):
                hits.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value[:60]!r}")
    assert hits == []


def test_no_page_or_mail_template_shows_an_internal_rule_code():
    hits = []
    for path in (ROOT / "templates").rglob("*"):
        if path.is_file() and path.suffix in (".html", ".txt", ".po"):
            said = re.sub(r"\{#.*?#\}", "", path.read_text(), flags=re.S)
            said = "\n".join(line for line in said.splitlines() if not line.startswith("#"))
            hits += [f"{path.relative_to(ROOT)}: {m}" for m in RULE_CODE.findall(said)]
    assert hits == []


async def test_settings_shows_each_value_in_effect_beside_its_default(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    env["GATEWAY_SMTP_URL"] = "smtp://shop:s3cret-pass@relay.first.vn:587"
    env["GATEWAY_MARKETING_DAILY_CAP"] = "2"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    async with Gateway.from_env(env) as gw:
        found = {r["name"]: r for r in await cli(gw, capsys, "settings")}
        said = await text(gw, capsys, "settings")
    cap = found["GATEWAY_MARKETING_DAILY_CAP"]
    assert (cap["value"], cap["from"], cap["default"]) == ("2", "set", "3")
    assert found["GATEWAY_AD_LABEL"]["from"] == "default"
    assert found["GATEWAY_BOUNCE_ADDRESS"] == {
        **found["GATEWAY_BOUNCE_ADDRESS"],
        "value": "bounces@first.vn",
        "from": "derived",
    }
    assert found["GATEWAY_SECRET_KEYS"]["value"] == "2 key(s), not shown"
    assert "s3cret" not in said and "test-key" not in said
    assert "GATEWAY_MARKETING_DAILY_CAP = 2\n    default: 3" in said
    assert "GATEWAY_AD_LABEL = [QC]  (not set: the default)" in said
    assert (
        "the first signs new links, the others only verify" in found["GATEWAY_SECRET_KEYS"]["help"]
    )
    for name in ("GATEWAY_FIRST_PARTY_DOMAINS", "GATEWAY_LINK_DOMAINS", "GATEWAY_RETRY_SCHEDULE"):
        assert "comma-separated" in found[name]["help"], name
    assert "replaces the default" in found["GATEWAY_FIRST_PARTY_DOMAINS"]["help"]


# -- quiet mistakes made loud ------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["GATEWAY_FIRST_PARTY_DOMAINS", "GATEWAY_LINK_DOMAINS"])
def test_a_domain_list_written_with_spaces_is_refused_at_start(env: dict[str, str], variable: str):
    env[variable] = "first.vn zalo.me,facebook.com"
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    said = str(refused.value)
    assert "\n" not in said
    assert said == (
        f"{variable}: 'first.vn zalo.me' is read as one name: separate domains with commas,"
        " first.vn,zalo.me"
    )
    if variable != "GATEWAY_LINK_DOMAINS":
        return  # the command line says it the same way for both: once is enough
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "topics", "list"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "separate domains with commas" in proc.stderr


def test_check_says_a_domain_list_with_spaces_once(env: dict[str, str]):
    from gateway.preflight import check

    env["GATEWAY_LINK_DOMAINS"] = "zalo.me facebook.com"
    found = [f for f in check(env) if "separate domains with commas" in f.message]
    assert [(f.level, f.name) for f in found] == [("error", "link_domains")]


def test_the_development_key_warning_appears_once_per_process(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
):
    del env["GATEWAY_SECRET_KEYS"]
    with caplog.at_level(logging.WARNING, logger="gateway"):
        first = Settings.from_env(env)
        second = Settings.from_env(env)
    assert first.secret_keys == second.secret_keys
    warned = [r.getMessage() for r in caplog.records if "GATEWAY_SECRET_KEYS" in r.getMessage()]
    assert len(warned) == 1
    assert "`gateway check` says what to set" in warned[0]


def test_serve_prints_the_check_errors_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("GATEWAY_")]:
        monkeypatch.delenv(key)
    _say_check_errors()  # the quick-start defaults: a localhost From, no footer details
    err = capsys.readouterr().err
    assert "gateway: check: the From address no-reply@localhost is on localhost" in err
    assert "gateway: check: GATEWAY_SENDER_POSTAL_ADDRESS is not set" in err
    assert err.splitlines()[-1].startswith("gateway: 3 setting(s) would hurt delivery")
    assert not (tmp_path / ".gateway-secret").exists()  # checking writes nothing


async def test_a_frequency_cap_of_zero_turns_the_cap_off_in_the_worker_too(env, smtp):
    """GATEWAY_MARKETING_DAILY_CAP=0 once made the worker fail on every marketing batch."""
    from gateway import Gateway

    env.update(GATEWAY_SMTP_URL=smtp.url, GATEWAY_MARKETING_DAILY_CAP="0")
    async with Gateway.from_env(env) as gw:
        await gw.add_topic("news", "News")
        await gw.add_contact("an@example.vn", subscribe=["news"])
        for i in range(5):
            sent = await gw.send(
                "an@example.vn", f"Tin {i}", text="x", category="marketing", topic="news"
            )
            assert sent.status == "queued"
        stats = await gw.deliver(until_idle=True)
        assert stats.sent == 5 and len(smtp.messages) == 5
