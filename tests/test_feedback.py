"""Bounces, complaints and refusal emails flowing back into suppressions (BN-1..BN-5, ST-3),
through the real inbound SMTP listener and through `gateway bounces ingest`."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from email import message_from_bytes
from pathlib import Path

import aiosmtplib
import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from smtp_server import RecordingSMTPServer

from gateway import Gateway
from gateway.cli import main
from gateway.store import schema as t


@pytest.fixture
async def igw(env: dict[str, str], smtp: RecordingSMTPServer) -> AsyncIterator[Gateway]:
    """A gateway whose inbound listener is up on a free port (see `igw.inbound`)."""
    env["GATEWAY_SMTP_URL"] = smtp.url
    env["GATEWAY_INBOUND_SMTP"] = "127.0.0.1:0"
    async with Gateway.from_env(env) as gateway:
        await gateway.add_topic("news", "Tin tức")
        async with gateway.listening() as where:
            assert where is not None
            gateway.inbound = int(where.rpartition(":")[2])  # type: ignore[attr-defined]
            yield gateway


async def mailed(gw: Gateway, smtp: RecordingSMTPServer, to: str, *, marketing: bool = False):
    """Send one message, deliver it; return (message_id, envelope sender) as received."""
    if marketing:
        await gw.add_contact(to, subscribe=["news"], source="test")
        result = await gw.send(to, "Tin mới", text="Xin chào", category="marketing", topic="news")
    else:
        result = await gw.send(to, "Đơn hàng", text="Xin chào")
    assert result.status == "queued", result
    await gw.deliver(until_idle=True)
    got = [m for m in smtp.messages if to in m.rcpt_tos][-1]
    assert message_from_bytes(got.data)["Message-ID"] == result.message_id
    return result.message_id, got.mail_from


def dsn(recipient: str, status: str, *, message_id: str | None, action: str = "failed") -> bytes:
    """An RFC 3464 report as Postfix writes it, the original headers in the third part."""
    original = f"Message-ID: {message_id}\r\n" if message_id else ""
    return (
        "From: MAILER-DAEMON@mx.example.vn (Mail Delivery System)\r\n"
        "To: whoever@first.vn\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.vn\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Action: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} mailbox says no\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"{original}From: news@first.vn\r\nTo: {recipient}\r\nSubject: x\r\n"
        "--B--\r\n"
    ).encode()


def arf(recipient: str, message_id: str, feedback_type: str = "abuse") -> bytes:
    return (
        "From: feedback@fbl.example.vn\r\nTo: abuse@first.vn\r\nSubject: complaint\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n'
        "\r\n--F\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        "--F\r\nContent-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: {feedback_type}\r\nUser-Agent: FBL/1.0\r\nVersion: 1\r\n"
        f"Original-Rcpt-To: {recipient}\r\n"
        "--F\r\nContent-Type: message/rfc822\r\n\r\n"
        f"Message-ID: {message_id}\r\nFrom: news@first.vn\r\nTo: {recipient}\r\n"
        "Subject: x\r\n\r\nbody\r\n--F--\r\n"
    ).encode()


async def inbound(gw: Gateway, rcpt: str, data: bytes, sender: str = "") -> None:
    """Deliver to the listener as a mail server would (bounces come from the null path)."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.inbound) as client:  # type: ignore[attr-defined]
        await client.sendmail(sender, [rcpt], data)


async def suppressed(gw: Gateway) -> dict[str, str]:
    return {s["email"]: s["reason"] for s in await gw.suppressions()}


# -- the return path -------------------------------------------------------------------------


async def test_bn5_each_message_has_its_own_signed_return_path(gw: Gateway, smtp):
    _, first = await mailed(gw, smtp, "a@example.vn")
    _, second = await mailed(gw, smtp, "b@example.vn")
    assert first != second
    for path in (first, second):
        local, _, domain = path.partition("@")
        assert domain == "first.vn" and local.startswith("bounces+")
        assert gw.signer.verp_id(local.partition("+")[2]) is not None


# -- through the inbound listener -------------------------------------------------------------


async def test_bn1_dsn_to_the_return_path_suppresses_a_hard_bounce(igw: Gateway, smtp):
    message_id, return_path = await mailed(igw, smtp, "gone@example.vn")
    # The report names no Message-ID: the signed return path alone finds the message.
    await inbound(igw, return_path, dsn("gone@example.vn", "5.1.1", message_id=None))
    assert await suppressed(igw) == {"gone@example.vn": "hard_bounce"}
    assert (await igw.message_status(message_id))["state"] == "bounced"
    again = await igw.send("gone@example.vn", "Đơn hàng", text="x")
    assert again.status == "suppressed"


async def test_bn5_dsn_matched_by_the_original_message_id(igw: Gateway, smtp):
    message_id, _ = await mailed(igw, smtp, "gone@example.vn")
    await inbound(igw, "bounces@first.vn", dsn("gone@example.vn", "5.1.1", message_id=message_id))
    assert await suppressed(igw) == {"gone@example.vn": "hard_bounce"}


async def test_bn5_the_listener_ignores_a_bounce_it_cannot_tie_to_our_mail(igw: Gateway, smtp):
    # A forged report naming a stranger, with no token and an unknown Message-ID.
    await mailed(igw, smtp, "victim@example.vn")
    forged = dsn("victim@example.vn", "5.1.1", message_id="<not-ours@evil.example>")
    await inbound(igw, "bounces@first.vn", forged)
    # A token that does not verify is no better.
    await inbound(igw, "bounces+m1-0000000000000000@first.vn", forged)
    assert await suppressed(igw) == {}


async def test_the_listener_is_not_an_open_relay(igw: Gateway):
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await inbound(igw, "someone@example.vn", b"Subject: relay me\r\n\r\nx\r\n")


async def test_bn2_policy_refusal_alerts_and_does_not_suppress(igw: Gateway, smtp):
    message_id, return_path = await mailed(igw, smtp, "strict@example.vn")
    await inbound(igw, return_path, dsn("strict@example.vn", "5.7.1", message_id=message_id))
    assert await suppressed(igw) == {}
    assert await igw.alerts(time.time() - 60) == 1


async def test_bn3_a_delay_notice_counts_and_only_repeats_suppress(igw: Gateway, smtp):
    for n in range(3):
        _, return_path = await mailed(igw, smtp, "full@example.vn")
        report = dsn("full@example.vn", "4.2.2", message_id=None, action="delayed")
        await inbound(igw, return_path, report)
        expected = {} if n < 2 else {"full@example.vn": "soft_bounce"}
        assert await suppressed(igw) == expected


async def test_bn3_repeated_delay_notices_about_one_message_count_once(igw: Gateway, smtp):
    _, return_path = await mailed(igw, smtp, "slow@example.vn")
    for _ in range(4):  # 4 hours, 1 day, 2 days, then it expires
        report = dsn("slow@example.vn", "4.4.7", message_id=None, action="delayed")
        await inbound(igw, return_path, report)
    assert await suppressed(igw) == {}


async def test_bn4_complaint_stops_marketing_but_not_service_mail(igw: Gateway, smtp):
    message_id, _ = await mailed(igw, smtp, "angry@example.vn", marketing=True)
    await inbound(igw, "bounces@first.vn", arf("angry@example.vn", message_id))
    assert await suppressed(igw) == {"angry@example.vn": "complaint"}
    ad = await igw.send("angry@example.vn", "Tin mới", text="x", category="marketing", topic="news")
    assert ad.status == "suppressed"
    receipt = await igw.send("angry@example.vn", "Hoá đơn", text="x")
    assert receipt.status == "queued"
    # No refusal confirmation goes to someone who complained.
    rows = await igw.store.db.fetch_all(t.outbox.select().where(t.outbox.c.template.is_not(None)))
    assert rows == []


async def test_bn4_a_not_spam_report_changes_nothing(igw: Gateway, smtp):
    message_id, _ = await mailed(igw, smtp, "fine@example.vn", marketing=True)
    await inbound(igw, "bounces@first.vn", arf("fine@example.vn", message_id, "not-spam"))
    assert await suppressed(igw) == {}


async def test_st3_refusal_by_email_works_like_one_click(igw: Gateway, smtp):
    await mailed(igw, smtp, "an@example.vn", marketing=True)
    ad = message_from_bytes(smtp.messages[-1].data)
    mailto = ad["List-Unsubscribe"].split(",")[1].strip().strip("<>")
    address, _, query = mailto.removeprefix("mailto:").partition("?")
    assert address == "unsubscribe@first.vn"
    subject = query.removeprefix("subject=").replace("%20", " ")
    refusal = f"From: An <an@example.vn>\r\nTo: {address}\r\nSubject: {subject}\r\n\r\n".encode()
    # From someone else, the same token does nothing.
    forged = refusal.replace(b"an@example.vn>", b"mallory@example.vn>", 1)
    await inbound(igw, address, forged, sender="mallory@example.vn")
    assert await suppressed(igw) == {}
    await inbound(igw, address, refusal, sender="an@example.vn")
    await inbound(igw, address, refusal, sender="an@example.vn")  # a second one changes nothing
    assert await suppressed(igw) == {"an@example.vn": "email"}
    later = await igw.send("an@example.vn", "Tin", text="x", category="marketing", topic="news")
    assert later.status == "suppressed"
    await igw.deliver(until_idle=True)
    confirmations = [m for m in smtp.messages[1:] if "an@example.vn" in m.rcpt_tos]
    assert len(confirmations) == 1  # ST-2: exactly one confirmation


async def test_unreadable_inbound_mail_is_skipped_and_the_listener_goes_on(igw: Gateway, smtp):
    await inbound(igw, "bounces@first.vn", b"\x00\xff garbage without headers")
    message_id, return_path = await mailed(igw, smtp, "gone@example.vn")
    await inbound(igw, return_path, dsn("gone@example.vn", "5.1.1", message_id=message_id))
    assert await suppressed(igw) == {"gone@example.vn": "hard_bounce"}


# -- gateway bounces ingest (the operator's own mailbox) -------------------------------------


QMAIL_STYLE = (
    b"From: MAILER-DAEMON@mx.example.vn\r\nTo: bounces@first.vn\r\n"
    b"Subject: failure notice\r\n\r\n"
    b"Hi. This is the qmail-send program at mx.example.vn.\r\n"
    b"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
    b"This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
    b"<%s>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n\r\n"
    b"--- Below this line is a copy of the message.\r\n"
)


async def test_bn5_ingest_acts_on_a_detected_bounce_only_for_an_address_mailed_lately(
    env: dict[str, str], smtp, tmp_path: Path, capsys, monkeypatch
):
    env["GATEWAY_SMTP_URL"] = smtp.url
    async with Gateway.from_env(env) as gw:
        await mailed(gw, smtp, "gone@example.vn")
    box = tmp_path / "box" / "new"
    box.mkdir(parents=True)
    (box / "1").write_bytes(QMAIL_STYLE % b"gone@example.vn")
    (box / "2").write_bytes(QMAIL_STYLE % b"stranger@example.vn")
    (box / "3").write_bytes(b"not a report at all")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # The command runs its own event loop: call it as a shell would, beside this one.
    assert (
        await asyncio.to_thread(main, ["bounces", "ingest", str(tmp_path / "box"), "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["acted"] == 1
    by_file = {Path(f["file"]).name: f for f in report["files"]}
    assert by_file["1"]["actions"] and not by_file["2"]["actions"]
    assert by_file["3"]["reason"]
    async with Gateway.from_env(env) as gw:
        assert await suppressed(gw) == {"gone@example.vn": "hard_bounce"}


async def test_bn4_bn5_a_complaint_from_the_operators_mailbox_without_our_message_id(
    gw: Gateway, smtp
):
    """Many feedback loops strip the original's headers. From the operator's own mailbox
    the named recipient is enough if we mailed them lately; a stranger is left alone."""
    await mailed(gw, smtp, "angry@example.vn", marketing=True)
    unknown = "<rewritten-by-the-isp@fbl.example.vn>"
    result = await gw.ingest(arf("angry@example.vn", unknown), trusted=True)
    assert result.actions and await suppressed(gw) == {"angry@example.vn": "complaint"}
    stranger = await gw.ingest(arf("stranger@example.vn", unknown), trusted=True)
    assert not stranger.actions
    # The public listener's way (untrusted) never acts on such a report.
    await mailed(gw, smtp, "other@example.vn", marketing=True)
    public = await gw.ingest(arf("other@example.vn", unknown))
    assert not public.actions and "other@example.vn" not in await suppressed(gw)


def test_ingest_of_a_missing_file_is_one_line(env: dict[str, str], capsys, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["bounces", "ingest", "nowhere.eml"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "gateway: error: cannot read nowhere.eml: no such file or directory"


# -- erasure ---------------------------------------------------------------------------------


async def test_erasure_forgets_the_bounce_history(igw: Gateway, smtp):
    _, return_path = await mailed(igw, smtp, "gone@example.vn")
    await inbound(
        igw, return_path, dsn("gone@example.vn", "4.2.2", message_id=None, action="delayed")
    )
    assert (await igw.export_contact("gone@example.vn"))["bounces"]
    await igw.erase_contact("gone@example.vn")
    rows = await igw.store.db.fetch_all(t.bounces.select())
    assert rows == []


# -- DKIM on the wire (LU-5) -----------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
async def test_lu5_delivered_marketing_mail_is_dkim_signed_over_the_list_headers(
    env: dict[str, str], smtp, tmp_path: Path, algorithm: str
):
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = base64.b64encode(
            key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        record = b"v=DKIM1; k=rsa; p=" + public
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        record = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "dkim.pem").write_bytes(pem)
    env.update(
        GATEWAY_SMTP_URL=smtp.url,
        GATEWAY_DKIM_DOMAIN="first.vn",
        GATEWAY_DKIM_SELECTOR="s1",
        GATEWAY_DKIM_KEY_FILE=str(tmp_path / "dkim.pem"),
    )
    async with Gateway.from_env(env) as gw:
        await gw.add_topic("news", "Tin tức")
        await mailed(gw, smtp, "an@example.vn", marketing=True)
    data = smtp.messages[-1].data

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"s1._domainkey.first.vn." else b""

    assert dkim.verify(data, dnsfunc=dns)
    signature = message_from_bytes(data)["DKIM-Signature"]
    signed = {h.strip().lower() for h in signature.split("h=")[1].split(";")[0].split(":")}
    assert {"list-unsubscribe", "list-unsubscribe-post", "from", "subject"} <= signed
    # Nothing touched the signed headers afterwards: change one and it fails.
    assert not dkim.verify(data.replace(b"One-Click", b"One-Clack"), dnsfunc=dns)
