"""The console's people pages over HTTP: contact search, a contact's page and its audit rows,
export, erase behind a typed confirmation, topics, the suppression list (add, import, the
refusals staff may not lift) and policy versions (a dry run, then publish).

In-process HTTP through httpx.ASGITransport against a real database and a real SMTP server,
logged in as a staff member of each role with the session cookie and its CSRF token.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from console_helpers import ConsoleClient, console_client

from gateway import Gateway
from gateway.catalog import subject
from gateway.store import schema as t
from gateway.web.app import create_app

Login = Callable[[str], Awaitable[ConsoleClient]]


@pytest.fixture
async def login(gw: Gateway) -> AsyncIterator[Login]:
    """Sign in a new staff member of a role (console_helpers), who reads English; one app
    for every client."""
    app = create_app(gw, worker=False)
    async with contextlib.AsyncExitStack() as stack:

        async def make(role: str) -> ConsoleClient:
            client = await stack.enter_async_context(console_client(gw, role, app=app))
            # The default is Vietnamese; these tests read the English words.
            chosen = await client.post_form("/admin/language", {"language": "en"})
            assert chosen.status_code == 303
            return client

        yield make


async def post(client: ConsoleClient, path: str, **data: Any) -> httpx.Response:
    return await client.post_form(path, data)


async def audit_rows(gw: Gateway) -> list[dict[str, Any]]:
    return await gw.store.audit_entries()


async def rows(gw: Gateway, table: Any) -> list[dict[str, Any]]:
    found = await gw.store.db.fetch_all(table.select())
    return [dict(r._mapping) for r in found]


def text_of(html: str) -> str:
    """The page's words without tags, spaces collapsed (what a reader sees)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&#39;", "'")


# -- contacts ---------------------------------------------------------------------------------


async def test_search_finds_contacts_by_address_or_name_in_pages_and_audits_the_read(
    gw: Gateway, login: Login
):
    """CO-2: a page of many people is a read, audited as the API's contacts.list."""
    await gw.add_contact("an@example.vn", name="Nguyễn Văn An")
    await gw.add_contact("binh@example.vn", name="Trần Bình")
    rows_csv = "email,name\n" + "".join(f"p{i:02d}@bulk.vn,Người {i}\n" for i in range(60))
    await gw.import_csv(rows_csv)
    viewer = await login("viewer")

    by_name = await viewer.get("/admin/contacts", params={"q": "trần"})
    assert by_name.status_code == 200
    assert "binh@example.vn" in by_name.text and "an@example.vn" not in by_name.text
    by_address = await viewer.get("/admin/contacts", params={"q": "AN@example"})
    assert "an@example.vn" in by_address.text and "binh@example.vn" not in by_address.text
    # a % or _ typed is a character, not a pattern
    assert "@example.vn" not in (await viewer.get("/admin/contacts?q=%25")).text

    first = await viewer.get("/admin/contacts", params={"q": "bulk.vn"})
    assert first.text.count("@bulk.vn</a>") == 50
    nxt = re.search(r'href="(/admin/contacts\?q=bulk.vn&amp;after=\d+)"', first.text)
    assert nxt, "a next page link"
    second = await viewer.get(nxt.group(1).replace("&amp;", "&"))
    assert second.text.count("@bulk.vn</a>") == 10
    assert "p59@bulk.vn" in second.text and "p00@bulk.vn" not in second.text

    listed = [r for r in await audit_rows(gw) if r["action"] == "contacts.list"]
    assert len(listed) == 5
    assert {(r["actor"], r["subject"]) for r in listed} == {(f"staff:{viewer.email}", "list")}


async def test_contact_page_shows_subscriptions_consent_messages_suppressions_and_is_audited(
    gw: Gateway, login: Login
):
    """CO-2 and PD-1: the page shows what the API's `effective` says, the consent ledger,
    each message with its outcome, and the suppressions; the view is an audited read."""
    contact, _, _ = await gw.add_contact(
        "an@example.vn", name="Nguyễn Văn An", phone="0912 345 678", subscribe=["news", "deals"]
    )
    sent = await gw.send("an@example.vn", "Hóa đơn #42", text="Cảm ơn bạn.")
    assert sent.status == "queued"
    await gw.deliver(until_idle=True)
    await gw.suppress("an@example.vn", reason="phone", source="admin")  # ST-3: by phone
    viewer = await login("viewer")

    page = await viewer.get(f"/admin/contacts/{contact.id}")
    assert page.status_code == 200
    words = text_of(page.text)
    assert "Nguyễn Văn An" in words and "+84912345678" in words
    effective = (await gw.reception(["an@example.vn"]))["an@example.vn"]
    assert effective["news"]["state"] == "stopped"
    assert f"news subscribed stopped: {effective['news']['why']}" in words
    assert "opted in" in words and "opted out" in words  # the consent ledger
    assert "Hóa đơn #42" in words and "sent" in words
    assert subject("refusal", contact.language) in words  # ST-2's confirmation, listed too
    assert "phone" in words and "admin" in words  # the suppression and who added it
    assert "Remove" not in words  # a viewer gets no buttons
    assert "/export" not in page.text and "/erase" not in page.text

    marketer = await login("marketer")
    page = await marketer.get(f"/admin/contacts/{contact.id}")
    assert 'action="/admin/suppressions/remove"' in page.text  # staff typed it in: liftable
    assert f"/admin/contacts/{contact.id}/export" in page.text

    reads = [r for r in await audit_rows(gw) if r["action"] == "contacts.get"]
    assert [(r["actor"], r["subject"]) for r in reads] == [
        (f"staff:{viewer.email}", gw.signer.address_hash("an@example.vn")),
        (f"staff:{marketer.email}", gw.signer.address_hash("an@example.vn")),
    ]
    assert "an@example.vn" not in json.dumps(await audit_rows(gw))

    missing = await viewer.get("/admin/contacts/999999")
    assert missing.status_code == 404 and "no contact 999999" in missing.text
    assert (await viewer.get("/admin/contacts/" + "9" * 40)).status_code == 404


async def test_a_persons_own_refusal_shows_no_remove_button(gw: Gateway, login: Login):
    contact, _, _ = await gw.add_contact("an@example.vn", subscribe=["news"])
    await gw.consent.refuse(contact, source="link")  # the one-click link
    marketer = await login("marketer")
    page = await marketer.get(f"/admin/contacts/{contact.id}")
    assert "only the person can lift it" in page.text
    assert 'action="/admin/suppressions/remove"' not in page.text


async def test_export_downloads_what_gateway_contact_export_prints_and_is_audited(
    gw: Gateway, login: Login
):
    """PD-2: the same JSON as the CLI and the API; a viewer may not take it out."""
    contact, _, _ = await gw.add_contact("an@example.vn", name="An", subscribe=["news"])
    marketer = await login("marketer")
    response = await marketer.get(f"/admin/contacts/{contact.id}/export")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert "attachment" in response.headers["content-disposition"]
    expected = json.loads(json.dumps(await gw.export_contact("an@example.vn")))
    assert response.json() == expected
    exports = [r for r in await audit_rows(gw) if r["action"] == "contacts.export"]
    assert [(r["actor"], r["subject"]) for r in exports] == [
        (f"staff:{marketer.email}", gw.signer.address_hash("an@example.vn"))
    ]
    viewer = await login("viewer")
    assert (await viewer.get(f"/admin/contacts/{contact.id}/export")).status_code == 403


async def test_erase_asks_for_the_address_and_a_mismatch_changes_nothing(gw: Gateway, login: Login):
    """PD-3 from the console: only the typed address erases; afterwards it is gone."""
    contact, _, _ = await gw.add_contact("an@example.vn", name="Nguyễn Văn An", subscribe=["news"])
    marketer = await login("marketer")
    form = await marketer.get(f"/admin/contacts/{contact.id}/erase")
    assert form.status_code == 200 and 'name="confirm"' in form.text

    wrong = await post(marketer, f"/admin/contacts/{contact.id}/erase", confirm="an@example.com")
    assert wrong.status_code == 422
    assert "is not this contact’s address. Nothing was erased." in wrong.text
    assert await gw.store.get_contact("an@example.vn") is not None
    empty = await post(marketer, f"/admin/contacts/{contact.id}/erase", confirm="")
    assert empty.status_code == 422 and await gw.store.get_contact("an@example.vn") is not None

    right = await post(marketer, f"/admin/contacts/{contact.id}/erase", confirm=" AN@example.vn ")
    assert right.status_code == 303
    assert right.headers["location"] == "/admin/contacts?done=erased"
    assert await gw.store.get_contact("an@example.vn") is None
    assert await gw.is_erased("an@example.vn")
    listing = await marketer.get(right.headers["location"])
    assert "The contact was erased" in listing.text and "an@example.vn" not in listing.text
    assert (await marketer.get(f"/admin/contacts/{contact.id}")).status_code == 404
    erasures = [r for r in await audit_rows(gw) if r["action"] == "contacts.erase"]
    assert [(r["actor"], r["subject"]) for r in erasures] == [
        (f"staff:{marketer.email}", gw.signer.address_hash("an@example.vn"))
    ]

    viewer = await login("viewer")
    other, _, _ = await gw.add_contact("binh@example.vn")
    refused = await post(viewer, f"/admin/contacts/{other.id}/erase", confirm="binh@example.vn")
    assert refused.status_code == 403 and await gw.store.get_contact("binh@example.vn")


# -- topics -----------------------------------------------------------------------------------


async def test_topics_list_with_receiving_counts_and_a_marketer_adds_one(gw: Gateway, login: Login):
    await gw.add_contact("an@example.vn", subscribe=["news"])
    await gw.add_contact("binh@example.vn", subscribe=["news"])
    await gw.suppress("binh@example.vn", reason="manual", scope="marketing")
    viewer = await login("viewer")
    page = await viewer.get("/admin/topics")
    assert re.search(
        r"news</th>\s*<td>Tin tức</td>\s*<td>no</td>\s*<td class=\"num\">1</td>", page.text
    )
    assert 'action="/admin/topics"' not in page.text
    assert (await post(viewer, "/admin/topics", slug="vip", name="VIP")).status_code == 403

    marketer = await login("marketer")
    added = await post(marketer, "/admin/topics", slug="vip", name="Khách VIP", double_opt_in="on")
    assert added.status_code == 303
    topic = await gw.store.get_topic("vip")
    assert topic is not None and topic.name == "Khách VIP" and topic.double_opt_in
    again = await post(marketer, "/admin/topics", slug="vip", name="Khác")
    assert again.status_code == 409 and "already exists" in again.text
    bad = await post(marketer, "/admin/topics", slug="a b", name="X")
    assert bad.status_code == 422 and "must be letters, digits" in bad.text
    long = await post(marketer, "/admin/topics", slug="x" * 65, name="X")
    assert long.status_code == 422 and "at most 64 characters" in long.text
    nameless = await post(marketer, "/admin/topics", slug="empty", name=" ")
    assert nameless.status_code == 422 and await gw.store.get_topic("empty") is None
    assert any(
        r["action"] == "topics.add" and r["subject"] == "topic:vip" for r in await audit_rows(gw)
    )


# -- suppressions -----------------------------------------------------------------------------


async def test_suppressions_add_list_and_remove_what_staff_added(gw: Gateway, login: Login):
    marketer = await login("marketer")
    added = await post(marketer, "/admin/suppressions", email="Chan@Example.vn", reason="manual")
    assert added.status_code == 303 and added.headers["location"].endswith("done=suppressed")
    again = await post(marketer, "/admin/suppressions", email="chan@example.vn", reason="manual")
    assert again.headers["location"].endswith("done=already")
    listing = await marketer.get("/admin/suppressions")
    assert "chan@example.vn" in listing.text and "1 suppression in all." in listing.text
    assert 'name="email" value="chan@example.vn"' in listing.text  # its remove button
    bad = await post(marketer, "/admin/suppressions", email="not an address")
    assert bad.status_code == 422 and "not a valid email address" in bad.text

    removed = await post(marketer, "/admin/suppressions/remove", email="chan@example.vn")
    assert removed.status_code == 303
    assert await gw.store.suppressions_of(gw.signer.address_hashes("chan@example.vn")) == []
    actions = [r["action"] for r in await audit_rows(gw)]
    assert "suppressions.add" in actions and "suppressions.remove" in actions

    viewer = await login("viewer")
    assert (await post(viewer, "/admin/suppressions", email="x@example.vn")).status_code == 403
    assert (await viewer.get("/admin/suppressions")).status_code == 200


async def test_a_forged_remove_of_a_persons_own_refusal_or_erasure_answers_409_in_words(
    gw: Gateway, login: Login
):
    """ST-1 and PD-3: staff cannot lift a one-click refusal, a complaint or an erasure; the
    console shows no button for them and a forged POST changes nothing."""
    contact, _, _ = await gw.add_contact("an@example.vn", subscribe=["news"])
    await gw.consent.refuse(contact, source="link")
    await gw.suppress("khieu@example.vn", reason="complaint", source="arf")
    await gw.add_contact("xoa@example.vn")
    await gw.erase_contact("xoa@example.vn")
    marketer = await login("marketer")
    listing = await marketer.get("/admin/suppressions")
    assert listing.text.count("only the person can lift it") == 3
    assert 'action="/admin/suppressions/remove"' not in listing.text
    assert "erased: only a keyed hash is kept" in listing.text

    for address, words in [
        ("an@example.vn", "only they can lift it"),
        ("khieu@example.vn", "only they can lift it"),
        ("xoa@example.vn", "erased at the person's request"),
    ]:
        before = await gw.store.suppressions_of(gw.signer.address_hashes(address))
        forged = await post(marketer, "/admin/suppressions/remove", email=address)
        assert forged.status_code == 409, forged.text
        assert words in forged.text.replace("&#39;", "'")
        assert "Nothing was changed." in forged.text
        assert await gw.store.suppressions_of(gw.signer.address_hashes(address)) == before
    unknown = await post(marketer, "/admin/suppressions/remove", email="nobody@example.vn")
    assert unknown.status_code == 404 and "not on the suppression list" in unknown.text


async def test_import_a_csv_of_suppressions_reports_bad_rows_by_line(gw: Gateway, login: Login):
    marketer = await login("marketer")
    csv_text = "email,reason\nmot@example.vn\nhai@example.vn,hard_bounce\nnot-an-address\nba@example.vn,erased\nmot@example.vn\n"
    response = await marketer.post(
        "/admin/suppressions/import",
        data={"csrf_token": marketer.csrf_token},
        files={"file": ("list.csv", csv_text.encode(), "text/csv")},
    )
    assert response.status_code == 200, response.text
    words = text_of(response.text)
    assert "Added: 2. Already on the list: 1. Rows skipped: 2." in words
    assert re.search(r"4 '?not-an-address'? is not a valid email address", words)
    assert "5 reason erased is kept for erasures" in words
    listed = {r["email"]: r["reason"] for r in await gw.suppressions()}
    assert listed == {"mot@example.vn": "manual", "hai@example.vn": "hard_bounce"}
    empty = await marketer.post(
        "/admin/suppressions/import",
        data={"csrf_token": marketer.csrf_token},
        files={"file": ("empty.csv", b"", "text/csv")},
    )
    assert empty.status_code == 422 and "choose a CSV file" in empty.text
    latin1 = await marketer.post(
        "/admin/suppressions/import",
        data={"csrf_token": marketer.csrf_token},
        files={"file": ("x.csv", "é@example.vn".encode("latin-1"), "text/csv")},
    )
    assert latin1.status_code == 422 and "not UTF-8" in latin1.text


# -- policy versions --------------------------------------------------------------------------


POLICY = "Chính sách bảo mật mới.\nChúng tôi thay đổi cách lưu dữ liệu của bạn.\n"


async def test_policy_dry_run_counts_who_would_be_told_then_publish_notifies_them(
    gw: Gateway, login: Login
):
    """PD-5 from the console: the dry run writes nothing and counts the audience (a hard
    bounce and an erasure are not told); publishing records the version and notices."""
    for address in ("an@example.vn", "binh@example.vn", "chi@example.vn", "xoa@example.vn"):
        await gw.add_contact(address, subscribe=["news"])
    await gw.suppress("chi@example.vn", reason="hard_bounce", scope="all")
    await gw.erase_contact("xoa@example.vn")
    marketer = await login("marketer")
    assert (await marketer.get("/admin/policies")).status_code == 403
    assert (
        await post(marketer, "/admin/policies/dry-run", version="x", text="y")
    ).status_code == 403
    admin = await login("admin")
    assert (await admin.get("/admin/policies")).status_code == 200
    outbox_before = len(await rows(gw, t.outbox))

    dry = await post(admin, "/admin/policies/dry-run", version="2026.12", text=POLICY, adverse="on")
    assert dry.status_code == 200, dry.text
    words = text_of(dry.text)
    assert "2 people would be emailed the notice." in words
    assert "2 would not be told:" in words
    assert "erased at their request: nothing is left to tell: 1" in words
    assert "their address bounced (hard bounce): 1" in words
    assert await rows(gw, t.policies) == [] and len(await rows(gw, t.outbox)) == outbox_before

    plain = await post(admin, "/admin/policies/dry-run", version="2026.12", text=POLICY)
    assert "This version is not marked adverse: nobody is emailed." in text_of(plain.text)

    uploaded = await admin.post(
        "/admin/policies/dry-run",
        data={"csrf_token": admin.csrf_token, "version": "2026.12", "text": "", "adverse": "on"},
        files={"text_file": ("policy.txt", POLICY.encode(), "text/plain")},
    )
    assert uploaded.status_code == 200 and "Chúng tôi thay đổi" in uploaded.text
    third = await post(
        admin, "/admin/policies/dry-run", version="2026.13", text="Xem https://evil.example/x"
    )
    assert third.status_code == 422 and "evil.example" in third.text

    # The dry run's form publishes exactly what it showed (line breaks come back as CRLF).
    fields = dict(re.findall(r'name="(version|text|adverse)" value="([^"]*)"', dry.text))
    assert fields["version"] == "2026.12" and fields["adverse"] == "on"
    text = fields["text"].replace("&#10;", "\n").replace("\n", "\r\n")
    published = await post(
        admin, "/admin/policies/publish", version="2026.12", text=text, adverse="on"
    )
    assert published.status_code == 303 and published.headers["location"].endswith("done=notifying")
    policy = await gw.store.get_policy("2026.12")
    assert policy is not None and policy["adverse"] and policy["text"] == POLICY.strip()
    notices = await gw.store.policy_notices(policy["id"])
    assert sorted(n["status"] for n in notices) == ["queued", "queued", "suppressed"]
    listing = await admin.get("/admin/policies")
    assert (
        "2026.12" in listing.text
        and "Consent is recorded under version 2026.12 now." in listing.text
    )
    again = await post(admin, "/admin/policies/dry-run", version="2026.12", text=POLICY)
    assert again.status_code == 409 and "already published" in again.text
    assert [r["subject"] for r in await audit_rows(gw) if r["action"] == "policies.publish"] == [
        "policy:2026.12"
    ]


async def test_the_people_pages_speak_the_staff_members_language(gw: Gateway, login: Login):
    contact, _, _ = await gw.add_contact("an@example.vn", subscribe=["news"])
    admin = await login("admin")
    chosen = await admin.post_form("/admin/language", {"language": "vi", "next": "/admin/topics"})
    assert chosen.status_code == 303
    pages = {
        "/admin/contacts": "Tìm theo địa chỉ hoặc tên",
        f"/admin/contacts/{contact.id}": "Lịch sử đồng ý",
        f"/admin/contacts/{contact.id}/erase": "Xóa người này ngay",
        "/admin/topics": "Thêm chủ đề",
        "/admin/suppressions": "Nhập tệp CSV",
        "/admin/policies": "Công bố phiên bản mới",
    }
    for path, words in pages.items():
        page = await admin.get(path)
        assert page.status_code == 200 and words in page.text, path
        assert '<html lang="vi">' in page.text


async def test_notices_left_untold_are_shown_and_queued_on_request(gw: Gateway, login: Login):
    """PD-5: an adverse version whose notices were interrupted shows who is still to be told,
    and one button queues the rest, never twice to anyone."""
    await gw.add_contact("an@example.vn")
    await gw.add_contact("binh@example.vn")
    await gw.policies.publish("2026.12", POLICY, True, send_notices=False)
    await gw.policies.publish("2026.13", POLICY + "Thêm.", False)
    admin = await login("admin")
    listing = await admin.get("/admin/policies")
    assert 'action="/admin/policies/2026.12/notify"' in listing.text
    assert 'action="/admin/policies/2026.13/notify"' not in listing.text
    queued = await admin.post_form("/admin/policies/2026.12/notify")
    assert queued.status_code == 303
    policy = await gw.store.get_policy("2026.12")
    assert policy is not None
    assert len(await gw.store.policy_notices(policy["id"])) == 2
    again = await admin.post_form("/admin/policies/2026.12/notify")
    assert again.status_code == 303 and len(await gw.store.policy_notices(policy["id"])) == 2
    assert (
        'action="/admin/policies/2026.12/notify"' not in (await admin.get("/admin/policies")).text
    )
    plain = await admin.post_form("/admin/policies/2026.13/notify")
    assert plain.status_code == 409 and "not adverse" in plain.text
    unknown = await admin.post_form("/admin/policies/1999/notify")
    assert unknown.status_code == 404
