"""Privacy policy versions (promise 10, PD-5): publish, notify every contact of an adverse one.

A real SQLite file and a real SMTP server; the CLI through real subprocesses.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from smtp_server import RecordingSMTPServer
from test_cli import assert_one_line_error, run
from test_web import (
    BASE,
    ONE_CLICK,
    POLICY,
    Page,
    client_for,
    deliver,
    link,
    person,
    rows,
    snapshot,
    text_of,
    to,
)

from gateway import Gateway
from gateway.errors import Conflict, InvalidInput, NotFound
from gateway.store import schema as t
from gateway.web.app import create_app

TEXT = """Chính sách bảo mật, phiên bản 2025.09.

Chúng tôi giữ dữ liệu của bạn thêm 12 tháng sau khi bạn ngừng dùng dịch vụ.
Xem thêm tại https://first.vn/privacy."""


@pytest.fixture
async def gw(env: dict[str, str], smtp: RecordingSMTPServer) -> AsyncIterator[Gateway]:
    env["GATEWAY_SMTP_URL"] = smtp.url
    env["GATEWAY_POLICY_VERSION"] = POLICY
    async with Gateway.from_env(env) as gateway:
        await gateway.add_topic("news", "Tin tức")
        yield gateway


@pytest.fixture
async def web(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(gw, worker=False)) as client:
        yield client


async def people(gw: Gateway, web: httpx.AsyncClient) -> None:
    """A subscriber, one who refused all promotional mail, one with no topic, one who
    asked to be erased, and one whose address bounced hard."""
    await person(gw, "an@example.vn", topics=("news",))
    refused = await person(gw, "binh@example.vn", topics=("news",), language="en")
    assert (
        await web.post(await link(gw, "unsubscribe", refused), data=ONE_CLICK)
    ).status_code == 200
    await person(gw, "chi@example.vn", topics=())
    await person(gw, "dung@example.vn", topics=("news",))
    await gw.erase_contact("dung@example.vn")
    await person(gw, "em@example.vn", topics=("news",))
    await gw.suppress("em@example.vn", reason="hard_bounce")


# -- publishing ---------------------------------------------------------------------------------


async def test_pd5_a_version_that_is_not_adverse_sends_no_mail_and_becomes_current(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    await people(gw, web)
    await deliver(gw, smtp)
    smtp.messages.clear()
    assert await gw.policies.current_version() == POLICY
    outbox_before = len(await rows(gw, t.outbox))
    report = await gw.publish_policy("2025.09", TEXT)
    assert (report.adverse, report.queued, report.suppressed) == (False, 0, 0)
    assert len(await rows(gw, t.outbox)) == outbox_before
    assert await rows(gw, t.policy_notices) == []
    assert await deliver(gw, smtp) == []
    assert await gw.policies.current_version() == "2025.09"
    [policy] = await rows(gw, t.policies)
    assert (policy["version"], policy["text"], policy["adverse"]) == ("2025.09", TEXT, False)


async def test_pd1_consent_is_recorded_under_the_version_published_last(
    gw: Gateway, web: httpx.AsyncClient
):
    contact = await person(gw, "an@example.vn", topics=("news",))
    await gw.policies.publish("2025.09", TEXT)
    await gw.policies.publish("2025.10", TEXT + "\n\nThêm một điều.")
    await web.post(await link(gw, "unsubscribe", contact), data=ONE_CLICK)
    await person(gw, "binh@example.vn", topics=("news",))
    versions = [(r["action"], r["policy_version"]) for r in await rows(gw, t.consent_ledger)]
    assert versions == [("opt_in", POLICY), ("opt_out", "2025.10"), ("opt_in", "2025.10")]
    # the preference page shows the current version, linked to its text
    response = await web.get(await link(gw, "preferences", contact))
    assert "Phiên bản chính sách bảo mật hiện hành: 2025.10" in response.text
    assert "/policy?lang=vi" in Page(response.text).urls


async def test_pd5_an_adverse_version_emails_every_contact_with_data_stored(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    await people(gw, web)
    await deliver(gw, smtp)
    smtp.messages.clear()
    report = await gw.publish_policy("2025.09", TEXT, adverse=True)
    assert (report.audience, report.queued, report.suppressed) == (4, 3, 1)
    messages = await deliver(gw, smtp)
    # the subscriber, the one who refused promotions and the one with no topic: once each
    assert sorted(m["To"].addresses[0].addr_spec for m in messages) == [
        "an@example.vn",
        "binh@example.vn",
        "chi@example.vn",
    ]
    assert to(messages, "dung@example.vn") == [] and to(messages, "em@example.vn") == []
    [vi] = to(messages, "an@example.vn")
    [en] = to(messages, "binh@example.vn")
    assert vi["Subject"] == "Thông báo thay đổi chính sách bảo mật"
    assert en["Subject"] == "Notice of a change to our privacy policy"
    for mail in messages:  # AD-5: no label, no unsubscribe headers, no promotion footer
        assert "[QC]" not in mail["Subject"]
        assert mail["List-Unsubscribe"] is None
    body = text_of(vi)
    assert "Chúng tôi giữ dữ liệu của bạn thêm 12 tháng" in body
    assert f"{BASE}/policy?version=2025.09" in body
    assert f"{BASE}/preferences/" in body
    assert "kể cả những người đã từ chối nhận thư quảng cáo" in body
    assert "The new policy in full" in text_of(en)
    # PD-5: each notice recorded, tied to the keyed hash of the address
    notices = await rows(gw, t.policy_notices)
    hashes = {gw.signer.address_hash(f"{a}example.vn"): a for a in ("an@", "binh@", "chi@", "em@")}
    recorded = {hashes[n["subject"]]: (n["status"], n["message_id"] is not None) for n in notices}
    assert recorded == {
        "an@": ("queued", True),
        "binh@": ("queued", True),
        "chi@": ("queued", True),
        "em@": ("suppressed", False),
    }
    sent_ids = {m["Message-ID"] for m in messages}
    assert {n["message_id"] for n in notices if n["status"] == "queued"} == sent_ids
    [policy] = await rows(gw, t.policies)
    assert {n["policy_id"] for n in notices} == {policy["id"]}
    # the record outlives an erasure
    await gw.erase_contact("an@example.vn")
    assert len(await rows(gw, t.policy_notices)) == 4


async def test_pd5_republishing_a_version_is_refused_and_changes_nothing(
    gw: Gateway, web: httpx.AsyncClient, smtp: RecordingSMTPServer
):
    await people(gw, web)
    await gw.publish_policy("2025.09", TEXT, adverse=True)
    before = await snapshot(gw)
    with pytest.raises(Conflict, match="already published"):
        await gw.publish_policy("2025.09", TEXT + " khác", adverse=True)
    with pytest.raises(Conflict):
        await gw.publish_policy(" 2025.09 ", TEXT)
    assert await snapshot(gw) == before
    # The web layer answers the Conflict with 409 (the core names no HTTP status).
    auth = {"Authorization": f"Bearer {await gw.create_api_key('pd5')}"}
    again = {"version": "2025.09", "text": TEXT, "adverse": True}
    assert (await web.post("/api/v1/policies", json=again, headers=auth)).status_code == 409


@pytest.mark.parametrize(
    ("version", "text", "words"),
    [
        ("", TEXT, "version"),
        ("a b", TEXT, "version"),
        ("x" * 33, TEXT, "version"),
        ("2025.09", "   ", "empty"),
        ("2025.09", "Đọc tại https://evil.com/policy", "evil.com"),
    ],
)
async def test_pd5_bad_input_is_refused_before_anything_is_written(
    gw: Gateway, web: httpx.AsyncClient, version: str, text: str, words: str
):
    await people(gw, web)
    before = await snapshot(gw)
    with pytest.raises(InvalidInput, match=words):
        await gw.publish_policy(version, text, adverse=True)
    assert await snapshot(gw) == before


async def test_pd5_notices_go_out_in_pages_and_an_interrupted_run_resumes_without_repeats(
    gw: Gateway, smtp: RecordingSMTPServer, monkeypatch: pytest.MonkeyPatch
):
    for i in range(7):
        await person(gw, f"p{i}@example.vn", topics=())
    pages: list[int] = []
    real = gw.store.policy_audience

    async def counted(after_id: int, created_before: float, limit: int) -> Any:
        batch = await real(after_id, created_before, limit)
        pages.append(len(batch))
        if len(pages) == 3:
            raise RuntimeError("the process was killed")
        return batch

    monkeypatch.setattr(gw.store, "policy_audience", counted)
    seen: list[tuple[int, int]] = []
    with pytest.raises(RuntimeError):
        await gw.publish_policy(
            "2025.09", TEXT, adverse=True, page_size=3, progress=lambda d, n: seen.append((d, n))
        )
    assert pages[:2] == [3, 3] and seen == [(0, 7), (3, 7), (6, 7)]
    assert len(await rows(gw, t.policy_notices)) == 6
    monkeypatch.setattr(gw.store, "policy_audience", real)
    # the publication stands; `notify` sends only what is missing
    with pytest.raises(Conflict):
        await gw.publish_policy("2025.09", TEXT, adverse=True)
    report = await gw.policies.notify("2025.09")
    assert (report.audience, report.queued) == (1, 1)
    again = await gw.policies.notify("2025.09")
    assert (again.audience, again.queued) == (0, 0)
    messages = await deliver(gw, smtp)
    assert sorted(m["To"].addresses[0].addr_spec for m in messages) == [
        f"p{i}@example.vn" for i in range(7)
    ]
    # people who became contacts after the publication agreed to the new version already
    await person(gw, "late@example.vn", topics=())
    assert (await gw.policies.notify("2025.09")).queued == 0
    with pytest.raises(NotFound):
        await gw.policies.notify("1999")


# -- the policy page ----------------------------------------------------------------------------


async def test_the_policy_page_shows_the_current_text_and_earlier_versions(
    gw: Gateway, web: httpx.AsyncClient
):
    empty = await web.get("/policy")
    assert empty.status_code == 200
    assert f"Phiên bản hiện hành: {POLICY}" in empty.text
    await gw.publish_policy("2025.09", TEXT)
    await gw.publish_policy("2025.10", "Phiên bản <b>mười</b>.")
    current = await web.get("/policy?lang=en")
    assert current.status_code == 200 and '<html lang="en">' in current.text
    assert "Version 2025.10" in current.text
    assert "Phiên bản &lt;b&gt;mười&lt;/b&gt;." in current.text
    earlier = await web.get("/policy?version=2025.09")
    assert (
        "Chúng tôi giữ dữ liệu của bạn thêm 12 tháng sau khi bạn ngừng dùng dịch vụ.<br>"
        in earlier.text
    )
    assert "set-cookie" not in earlier.headers and "<script" not in earlier.text
    assert (await web.get("/policy?version=1999")).status_code == 404


# -- the command line ---------------------------------------------------------------------------


def test_pd5_cli_publish_adverse_prints_the_count_and_refuses_a_second_time(
    env: dict[str, str], tmp_path: Path
):
    (tmp_path / "policy.txt").write_text(TEXT, encoding="utf-8")
    assert run(env, "init").returncode == 0
    assert run(env, "topics", "add", "news", "--name", "Tin tức").returncode == 0
    for address in ("an@example.vn", "binh@example.vn", "chi@example.vn"):
        assert run(env, "contacts", "add", address, "--subscribe", "news").returncode == 0
    assert run(env, "suppress", "add", "binh@example.vn", "--reason", "phone").returncode == 0
    assert run(env, "contacts", "erase", "chi@example.vn").returncode == 0

    quiet = run(env, "policy", "publish", "2025.08", "--text", "policy.txt", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "not adverse: no email" in quiet.stdout
    published = run(
        env, "policy", "publish", "2025.09", "--text", "policy.txt", "--adverse", cwd=tmp_path
    )
    assert published.returncode == 0, published.stderr
    assert "2 notice(s) queued, 0 suppressed" in published.stdout
    again = run(env, "policy", "publish", "2025.09", "--text", "policy.txt", "--json", cwd=tmp_path)
    assert_one_line_error(again, "2025.09", "already published")
    missing = run(env, "policy", "publish", "2025.10", "--text", "nope.txt", cwd=tmp_path)
    assert_one_line_error(missing, "nope.txt")
    listed = json.loads(run(env, "policy", "list", "--json").stdout)
    assert listed["current"] == "2025.09"
    assert [(v["version"], v["adverse"], v["notices"]) for v in listed["versions"]] == [
        ("2025.08", False, {"queued": 0, "suppressed": 0}),
        ("2025.09", True, {"queued": 2, "suppressed": 0}),
    ]
    resumed = run(env, "policy", "notify", "2025.09", "--json")
    assert json.loads(resumed.stdout)["notices"] == {"queued": 0, "suppressed": 0}
    worker = run(env, "worker", "--until-idle", "--json")
    # the two notices, and the confirmation of binh's refusal by phone (ST-2, ST-3)
    assert json.loads(worker.stdout)["sent"] == 3
    assert run(env, "policy", "--help").returncode == 0
