"""The console's campaign pages over HTTP: the form (pasted or uploaded HTML), a campaign's
page (a sandboxed preview, the scan's findings, counts), test send, send now or later, pause,
resume, cancel; roles, CSRF and the audit rows of every change."""

from __future__ import annotations

import html
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import pytest
from console_helpers import ConsoleClient, cheap_hashing  # noqa: F401 (a fixture)
from console_helpers import console_client as signed_in
from smtp_server import RecordingSMTPServer

from gateway import Gateway
from gateway.bounces import Event

pytestmark = pytest.mark.usefixtures("cheap_hashing")

HTML = "<p>Xin chào {{ contact.name }}! <a href='https://first.vn/sale'>Xem</a></p>"
REMOTE = "<p>Hi <img src='https://tracker.example.com/open.png' alt=''></p>"
FORM = {"name": "Tháng 12", "topic": "news", "subject": "Ưu đãi cho {{ contact.name }}"}


@asynccontextmanager
async def console_client(
    gw: Gateway, role: str, email: str | None = None, language: str = "en"
) -> AsyncIterator[ConsoleClient]:
    """A signed-in client whose staff member chose `language` (the default is vi)."""
    async with signed_in(gw, role, email) as client:
        chosen = await client.post_form("/admin/language", {"language": language})
        assert chosen.status_code == 303, chosen.text
        yield client


async def audit_rows(gw: Gateway, action: str) -> list[tuple[str, str | None]]:
    rows = await gw.store.rows(
        "SELECT actor, subject FROM audit_log WHERE action = ? ORDER BY id", (action,)
    )
    return [(r[0], r[1]) for r in rows]


async def create(client: httpx.AsyncClient, **values: str) -> int:
    answer = await client.post_form(  # type: ignore[attr-defined]
        "/admin/campaigns/new", {**FORM, "html": HTML, **values}
    )
    assert answer.status_code == 303, answer.text
    found = re.fullmatch(r"/admin/campaigns/(\d+)\?done=created", answer.headers["location"])
    assert found, answer.headers["location"]
    return int(found.group(1))


async def subscribers(gw: Gateway, n: int) -> list[str]:
    emails = [f"person{i}@example.vn" for i in range(n)]
    for i, address in enumerate(emails):
        await gw.add_contact(address, name=f"Người {i}", subscribe=["news"])
    return emails


def forms(page: str) -> set[str]:
    """The actions of the page's POST forms."""
    return set(re.findall(r'<form method="post" action="([^"]+)"', page))


async def test_co2_a_marketer_creates_a_campaign_with_the_form_and_the_change_is_audited(gw):
    async with console_client(gw, "marketer") as client:
        form = (await client.get("/admin/campaigns/new")).text
        for name in ("name", "topic", "subject", "html", "text", "html_file", "csrf_token"):
            assert f'name="{name}"' in form, name
        assert 'type="file"' in form and 'enctype="multipart/form-data"' in form
        assert '<option value="news"' in form and '<option value="deals"' in form
        for field in re.findall(r'<(?:input|select|textarea)[^>]* id="([^"]+)"', form):
            assert f'<label for="{field}"' in form, f"no label for {field}"
        cid = await create(client, text="Xin chào {{ contact.name }}")
        c = await gw.campaigns.get(cid)
        assert (c["name"], c["topic"], c["state"], c["html"]) == ("Tháng 12", "news", "draft", HTML)
        assert c["text"] == "Xin chào {{ contact.name }}"
        page = (await client.get(f"/admin/campaigns/{cid}?done=created")).text
        assert "The campaign is saved as a draft." in page
        listing = (await client.get("/admin/campaigns")).text
        assert f'href="/admin/campaigns/{cid}"' in listing and "Tháng 12" in listing
        assert await audit_rows(gw, "campaigns.create") == [(f"staff:{client.email}", str(cid))]


async def test_an_uploaded_html_file_is_the_campaigns_html(gw):
    document = "<!DOCTYPE html><html><body><p>Tệp {{ contact.name }}</p></body></html>"
    async with console_client(gw, "marketer") as client:
        answer = await client.post(
            "/admin/campaigns/new",
            data={**FORM, "html": "<p>pasted</p>", "csrf_token": client.csrf_token},
            files={"html_file": ("dec.html", document.encode(), "text/html")},
        )
        assert answer.status_code == 303, answer.text
        cid = int(answer.headers["location"].split("/")[-1].split("?")[0])
        assert (await gw.campaigns.get(cid))["html"] == document  # byte for byte, not pasted
        bad = await client.post(
            "/admin/campaigns/new",
            data={**FORM, "csrf_token": client.csrf_token},
            files={"html_file": ("dec.html", "<p>Tệp</p>".encode("utf-16"), "text/html")},
        )
        assert bad.status_code == 400
        assert "the HTML file is not UTF-8 text" in bad.text
        assert 'value="Tháng 12"' in bad.text  # the form comes back filled in
        assert len(await gw.list_campaigns()) == 1


async def test_the_form_says_what_is_wrong_and_saves_nothing(gw):
    async with console_client(gw, "marketer") as client:
        for values, words in (
            ({"name": " "}, "the campaign needs a name"),
            ({"subject": ""}, "the subject is empty"),
            ({"html": "<p>{{ contact.nam }}</p>"}, "contact.nam"),
            ({"topic": "nope"}, "nope"),
        ):
            answer = await client.post_form(
                "/admin/campaigns/new", {**FORM, "html": HTML, **values}
            )
            assert answer.status_code == 400, values
            assert "The campaign was not saved:" in answer.text
            assert html.escape(words, quote=False) in answer.text, (values, answer.text[-800:])
    assert await gw.list_campaigns() == []


async def test_co2_a_viewer_reads_the_campaigns_and_every_change_answers_403(gw):
    async with console_client(gw, "marketer") as marketer:
        cid = await create(marketer)
    async with console_client(gw, "viewer") as viewer:
        assert (await viewer.get("/admin/campaigns")).status_code == 200
        page = await viewer.get(f"/admin/campaigns/{cid}")
        assert page.status_code == 200
        assert forms(page.text) <= {"/admin/language", "/admin/logout"}  # no buttons to press
        assert "/admin/campaigns/new" not in (await viewer.get("/admin/campaigns")).text
        assert (await viewer.get("/admin/campaigns/new")).status_code == 403
        assert (await viewer.get(f"/admin/campaigns/{cid}/edit")).status_code == 403
        for path in ("new", f"{cid}/edit", f"{cid}/test", f"{cid}/send", f"{cid}/cancel"):
            answer = await viewer.post_form(f"/admin/campaigns/{path}", {**FORM, "html": HTML})
            assert answer.status_code == 403, path
    assert len(await gw.list_campaigns()) == 1
    assert (await gw.campaigns.get(cid))["state"] == "draft"
    assert [a for a, _ in await audit_rows(gw, "campaigns.create")] == [f"staff:{marketer.email}"]
    assert await audit_rows(gw, "campaigns.cancel") == []


async def test_co2_a_change_without_the_forms_token_answers_403_and_changes_nothing(gw):
    async with console_client(gw, "admin") as client:
        cid = await create(client)
        answer = await client.post("/admin/campaigns/new", data={**FORM, "html": HTML})
        assert answer.status_code == 403
        answer = await client.post(
            f"/admin/campaigns/{cid}/send", data={"when": "now", "csrf_token": "forged"}
        )
        assert answer.status_code == 403
    assert len(await gw.list_campaigns()) == 1
    assert (await gw.campaigns.get(cid))["state"] == "draft"


async def test_tp1_a_blocked_campaign_shows_the_findings_in_words_and_cannot_be_sent(gw):
    await subscribers(gw, 2)
    async with console_client(gw, "marketer") as client:
        cid = await create(client, html=REMOTE)  # kept as a draft, to be fixed
        page = (await client.get(f"/admin/campaigns/{cid}")).text
        assert "This campaign cannot be sent" in page
        assert "https://tracker.example.com/open.png" in page
        assert "tracker.example.com is not a first-party domain" in page
        assert not {f"/admin/campaigns/{cid}/send", f"/admin/campaigns/{cid}/test"} & forms(page)
        answer = await client.post_form(f"/admin/campaigns/{cid}/send", {"when": "now"})
        assert answer.status_code == 409
        assert "This campaign cannot be sent: it loads content from other sites." in answer.text
        assert "tracker.example.com" in answer.text
        assert (await gw.campaigns.get(cid))["state"] == "draft"
        with pytest.raises(ValueError, match="third-party content"):
            await gw.campaigns.start(cid)  # the service refuses it too, whoever asks
        assert await gw.store.rows("SELECT COUNT(*) FROM outbox") == [(0,)]
        assert await audit_rows(gw, "campaigns.send") == []
        # Fixed: the findings are gone and it may be sent.
        edit = await client.get(f"/admin/campaigns/{cid}/edit")
        assert "tracker.example.com" in html.unescape(edit.text)
        fixed = await client.post_form(f"/admin/campaigns/{cid}/edit", {**FORM, "html": HTML})
        assert fixed.headers["location"] == f"/admin/campaigns/{cid}?done=saved"
        page = (await client.get(f"/admin/campaigns/{cid}")).text
        assert "This campaign cannot be sent" not in page
        assert f"/admin/campaigns/{cid}/send" in forms(page)
        sent = await client.post_form(f"/admin/campaigns/{cid}/send", {"when": "now"})
        assert sent.headers["location"] == f"/admin/campaigns/{cid}?done=sending"
        assert (await gw.campaigns.get(cid))["state"] == "sending"
        # Only a draft may be changed.
        late = await client.post_form(f"/admin/campaigns/{cid}/edit", {**FORM, "html": REMOTE})
        assert late.status_code == 409 and "Only a draft can be changed." in late.text
        assert (await gw.campaigns.get(cid))["html"] == HTML
    assert [s for _, s in await audit_rows(gw, "campaigns.edit")] == [str(cid)]
    assert [s for _, s in await audit_rows(gw, "campaigns.send")] == [str(cid)]


async def test_the_preview_is_a_sandboxed_srcdoc_as_the_chosen_contact_gets_it(gw):
    await gw.add_contact("binh@example.vn", name="Bình <b>&", subscribe=["news"])
    async with console_client(gw, "viewer") as viewer:
        async with console_client(gw, "marketer") as marketer:
            cid = await create(marketer)
        answer = await viewer.get(f"/admin/campaigns/{cid}", params={"email": "Binh@Example.vn"})
        policy = answer.headers["content-security-policy"]
        assert "img-src 'self' data:" in policy and "default-src 'none'" in policy
        frames = re.findall(r"<iframe\b([^>]*)>", answer.text)
        assert len(frames) == 1
        attributes = dict(re.findall(r'\s([a-z-]+)(?:="([^"]*)")?', frames[0]))
        assert attributes["sandbox"] == ""  # no allow-scripts, no allow-same-origin
        assert attributes["title"]
        srcdoc = html.unescape(attributes["srcdoc"])
        # The person's name, escaped by the message's template, then again for the attribute:
        # the customer's markup is only ever the frame's document, never the console's page.
        assert "Xin chào Bình &lt;b&gt;&amp;!" in srcdoc
        assert "Bình <b>" not in answer.text  # the page itself only ever holds text of it
        assert "As binh@example.vn gets it." in answer.text
        assert "Subject:</strong> [QC] Ưu đãi cho Bình &lt;b&gt;&amp;" in answer.text
        reads = await audit_rows(gw, "campaigns.preview")
        assert reads == [(f"staff:{viewer.email}", gw.signer.address_hash("binh@example.vn"))]
        unknown = await viewer.get(f"/admin/campaigns/{cid}", params={"email": "nobody@x.vn"})
        assert "There is no contact with the address nobody@x.vn" in unknown.text
        assert "Xin chào Nguyễn Văn An" in html.unescape(unknown.text)  # the sample instead
        assert len(await audit_rows(gw, "campaigns.preview")) == 1


async def test_tp3_the_preview_as_a_contact_shows_what_blocks_that_persons_own_copy(gw):
    await gw.add_contact("boss@first.vn", name="Sếp", attributes={"site": "https://evil.com/x"})
    async with console_client(gw, "marketer") as client:
        cid = await create(client, html="<p>Xin chào {{ contact.attributes.site }}</p>")
        sample = (await client.get(f"/admin/campaigns/{cid}")).text
        assert "would not be sent" not in sample and "cannot be sent" not in sample
        page = (await client.get(f"/admin/campaigns/{cid}?email=boss@first.vn")).text
        assert "This person's copy would not be sent" in html.unescape(page)
        assert "https://evil.com/x" in page and "evil.com is not a first-party domain" in page


async def test_a_test_send_goes_to_the_staff_members_own_address(
    gw: Gateway, smtp: RecordingSMTPServer
):
    async with console_client(gw, "marketer", "marketing@first.vn") as client:
        cid = await create(client)
        answer = await client.post_form(f"/admin/campaigns/{cid}/test")
        assert answer.headers["location"] == f"/admin/campaigns/{cid}?done=test"
    await gw.deliver(until_idle=True)
    assert [m.rcpt_tos for m in smtp.messages] == [["marketing@first.vn"]]
    assert b"[TEST]" in smtp.messages[0].data
    assert (await gw.campaigns.get(cid))["state"] == "draft"
    assert await audit_rows(gw, "campaigns.test") == [("staff:marketing@first.vn", str(cid))]


async def test_a_test_send_to_an_address_outside_our_domains_is_refused_in_words(gw):
    async with console_client(gw, "admin", "boss@example.vn") as client:
        cid = await create(client)
        answer = await client.post_form(f"/admin/campaigns/{cid}/test")
        assert answer.status_code == 409
        assert "The test copy could not be sent." in answer.text
        assert "only to an address of your own domains" in answer.text
    assert await gw.store.rows("SELECT COUNT(*) FROM outbox") == [(0,)]


async def test_a_schedule_in_vietnam_time_is_kept_in_utc_then_pause_resume_cancel(gw):
    async with console_client(gw, "marketer") as client:
        cid = await create(client)
        bad = await client.post_form(
            f"/admin/campaigns/{cid}/send", {"when": "later", "at": "tomorrow", "timezone": "vn"}
        )
        assert bad.status_code == 409 and "Give the date and time to send at" in bad.text
        for values, words in (
            (
                {"when": "later", "at": "2020-01-02T09:00", "timezone": "utc"},
                "That time has passed",
            ),
            ({"when": "now", "rate": "nan"}, "The rate must be a number of messages a second"),
            ({"when": "now", "rate": "0"}, "The rate must be a number of messages a second"),
        ):
            refused = await client.post_form(f"/admin/campaigns/{cid}/send", values)
            assert refused.status_code == 409 and words in html.unescape(refused.text), values
        assert (await gw.campaigns.get(cid))["state"] == "draft"
        answer = await client.post_form(
            f"/admin/campaigns/{cid}/send",
            {"when": "later", "at": "2030-01-02T09:00", "timezone": "vn", "rate": "5"},
        )
        assert answer.headers["location"] == f"/admin/campaigns/{cid}?done=scheduled"
        c = await gw.campaigns.get(cid)
        assert c["state"] == "scheduled" and c["rate"] == 5
        assert c["scheduled_at"] == datetime(2030, 1, 2, 2, 0, tzinfo=UTC).timestamp()
        page = (await client.get(f"/admin/campaigns/{cid}")).text
        assert "2030-01-02 09:00" in page
        for action, state in (("pause", "paused"), ("resume", "sending"), ("cancel", "cancelled")):
            answer = await client.post_form(f"/admin/campaigns/{cid}/{action}")
            assert answer.status_code == 303, answer.text
            assert (await gw.campaigns.get(cid))["state"] == state
            assert await audit_rows(gw, f"campaigns.{action}") == [
                (f"staff:{client.email}", str(cid))
            ]
        again = await client.post_form(f"/admin/campaigns/{cid}/resume")
        assert again.status_code == 409 and "That cannot be done now." in again.text
        assert await audit_rows(gw, "campaigns.schedule") == [(f"staff:{client.email}", str(cid))]


async def test_while_sending_the_page_reloads_itself_and_after_it_shows_the_outcomes(
    gw: Gateway, smtp: RecordingSMTPServer
):
    people = await subscribers(gw, 3)
    async with console_client(gw, "marketer") as client:
        cid = await create(client)
        await client.post_form(f"/admin/campaigns/{cid}/send", {"when": "now"})
        sending = await client.get(f"/admin/campaigns/{cid}?done=sending")
        # It reloads itself (no JavaScript), and says so with a way to stop it (WCAG 2.2.1).
        assert sending.headers["refresh"] == f"5; url=/admin/campaigns/{cid}"
        assert "<progress" in sending.text
        assert f'href="/admin/campaigns/{cid}?reload=off">Stop reloading</a>' in sending.text
        still = await client.get(f"/admin/campaigns/{cid}?reload=off")
        assert "refresh" not in still.headers
        assert "Reload now, and every 5 seconds" in still.text
        await gw.deliver(until_idle=True)
        assert len(smtp.messages) == 3
        # One complains (a report about its message), one refuses with the link.
        row = (
            await gw.store.rows(
                "SELECT id, message_id FROM outbox WHERE email = ? AND campaign_id = ?",
                (people[0], cid),
            )
        )[0]
        async with gw.store.transaction():
            await gw.feedback.apply(
                [Event(people[0], "complaint", "arf", message_id=row[1], outbox_id=row[0])]
            )
        contact = await gw.store.get_contact(people[1])
        await gw.consent.refuse(contact, source="unsubscribe")
        # Stopping another topic is not a refusal of this campaign's mail.
        other = await gw.store.get_contact(people[2])
        deals = await gw.accepter.topic("deals")
        async with gw.store.transaction():
            for status in ("subscribed", "unsubscribed"):
                await gw.consent.set_subscription(
                    other, deals, status, source="preferences", now=time.time()
                )
        answer = await client.get(f"/admin/campaigns/{cid}")
        assert "refresh" not in answer.headers
        done = answer.text
        assert '<span class="state state-done">done</span>' in done
        values = dict(re.findall(r"<dt>([^<]+)</dt><dd>(\d+)</dd>", done))
        assert values["Delivered"] == "3"
        assert values["Complaints"] == "1"
        assert values["Unsubscribed after receiving it"] == "1"
        assert values["Bounced"] == "0"
        listing = (await client.get("/admin/campaigns")).text
        assert re.search(r'state-done">done</span></td>\s*<td class="num">3</td>', listing)


async def test_the_pages_speak_vietnamese_to_a_staff_member_who_chose_it(gw):
    async with console_client(gw, "marketer", language="vi") as client:
        cid = await create(client)
        page = (await client.get(f"/admin/campaigns/{cid}")).text
        assert '<html lang="vi">' in page
        assert "Xem trước" in page  # "Preview"
        assert "Preview" not in page


async def test_tp1_a_preview_keeps_the_messages_styles_and_still_loads_nothing_from_elsewhere(gw):
    """The page with a preview lets inline styles apply (the frame inherits its policy) so
    the preview looks like the mail; images, fonts and style sheets stay first party only."""
    async with console_client(gw, "marketer") as client:
        cid = await create(client, html='<p style="color:#c00">Giảm giá</p>')
        shown = await client.get(f"/admin/campaigns/{cid}")
        policy = shown.headers["content-security-policy"]
        assert "style-src 'self' 'unsafe-inline'" in policy
        assert "img-src 'self' data:" in policy and "default-src 'none'" in policy
        assert shown.headers.get_list("content-security-policy") == [policy]  # one policy
        listing = await client.get("/admin/campaigns")
        assert "unsafe-inline" not in listing.headers["content-security-policy"]
