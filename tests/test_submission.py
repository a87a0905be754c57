"""SMTP submission: Python's smtplib against the real listener (GATEWAY_SUBMISSION_SMTP) on a
free port with a generated certificate, every reply of the dialogue, and each MIME shape an
application builds parsed back after delivery through the real worker into the recording sink.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import smtplib
import time
import unicodedata
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import tls
from smtp_server import RecordingSMTPServer

from gateway import Gateway
from gateway.submission import FailedLogins, Submission

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"  # every byte value, binary


@dataclass
class Sub:
    gw: Gateway
    port: int
    certs: tls.Certificates
    key: str  # a send-scoped key named "shop"
    smtp: RecordingSMTPServer

    def client(self) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
        client.ehlo("app.example")
        client.starttls(context=self.certs.client_context())
        client.ehlo("app.example")
        return client

    def login(self, user: str = "shop", key: str | None = None) -> smtplib.SMTP:
        client = self.client()
        client.login(user, key or self.key)
        return client


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def submission_env(
    env: dict[str, str], smtp: RecordingSMTPServer, tmp_path: Path, **extra: str
) -> tls.Certificates:
    """The environment of a gateway delivering to `smtp` that takes submissions on a free
    port with a generated certificate; the certificates, for the client's side."""
    certs = tls.certificates(tmp_path)
    env.update(
        GATEWAY_SMTP_URL=smtp.url,
        GATEWAY_SUBMISSION_SMTP="127.0.0.1:0",
        GATEWAY_TLS_CERT=str(certs.cert_file),
        GATEWAY_TLS_KEY=str(certs.key_file),
        **extra,
    )
    return certs


@pytest.fixture
async def sub(env: dict[str, str], smtp: RecordingSMTPServer, tmp_path: Path) -> AsyncIterator[Sub]:
    certs = submission_env(env, smtp, tmp_path)
    async with Gateway.from_env(env) as gw:
        await gw.add_topic("news", "Tin tức")
        key = await gw.create_api_key("shop", "send")
        async with gw.submitting() as where:
            assert where is not None
            yield Sub(gw, int(where.rpartition(":")[2]), certs, key, smtp)


def message(
    to: str = "an@example.vn",
    *,
    subject: str = "Đơn hàng #1001",
    text: str | None = "Cảm ơn bạn đã đặt hàng.",
    html: str | None = None,
    sender: str = "Cửa hàng An <shop@first.vn>",
    **headers: str,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    if text is not None:
        msg.set_content(text)
    if html is not None:
        if text is None:
            msg.set_content(html, subtype="html")
        else:
            msg.add_alternative(html, subtype="html")
    return msg


def parsed(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def body_text(msg: EmailMessage, subtype: str) -> str:
    part = msg.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} body"
    return part.get_content()


async def deliver(sub: Sub, count: int) -> list[EmailMessage]:
    await sub.gw.deliver(until_idle=True)
    assert len(sub.smtp.messages) == count
    return [parsed(m.data) for m in sub.smtp.messages]


def send_data(sub: Sub, msg: EmailMessage | bytes, rcpts: list[str]) -> tuple[int, bytes]:
    """MAIL, RCPT each, DATA; the DATA reply (RCPT refusals raise)."""
    client = sub.login()
    try:
        code, _ = client.mail("shop@first.vn")
        assert code == 250
        for rcpt in rcpts:
            code, reply = client.rcpt(rcpt)
            assert code == 250, reply
        data = msg if isinstance(msg, bytes) else msg.as_bytes(policy=email.policy.SMTP)
        return client.data(data)
    finally:
        client.quit()


# -- the dialogue ------------------------------------------------------------------------------


async def test_ehlo_offers_starttls_and_size_and_auth_only_after_starttls(sub: Sub):
    def dialogue() -> tuple[str, str]:
        client = smtplib.SMTP("127.0.0.1", sub.port, timeout=10)
        client.ehlo("app.example")
        before = client.ehlo_resp.decode()
        client.starttls(context=sub.certs.client_context())
        client.ehlo("app.example")
        after = client.ehlo_resp.decode()
        client.quit()
        return before, after

    before, after = await in_thread(dialogue)
    assert "STARTTLS" in before and "AUTH" not in before
    assert "SIZE 26214400" in before and "8BITMIME" in before and "SMTPUTF8" in before
    assert "AUTH LOGIN PLAIN" in after or "AUTH PLAIN LOGIN" in after
    assert "STARTTLS" not in after


async def test_nothing_but_starttls_before_tls_and_no_mail_before_auth(sub: Sub):
    def dialogue() -> tuple[int, int, int]:
        client = smtplib.SMTP("127.0.0.1", sub.port, timeout=10)
        client.ehlo("app.example")
        plain_mail = client.docmd("MAIL FROM:<shop@first.vn>")[0]
        plain_auth = client.docmd("AUTH PLAIN AHNob3AAeA==")[0]
        client.starttls(context=sub.certs.client_context())
        client.ehlo("app.example")
        no_auth = client.mail("shop@first.vn")[0]
        client.quit()
        return plain_mail, plain_auth, no_auth

    assert await in_thread(dialogue) == (530, 530, 530)


async def test_a_wrong_key_or_name_answers_535_and_a_send_key_logs_in(sub: Sub):
    other = await sub.gw.create_api_key("crm")  # an admin key may send too

    def attempts() -> list[int]:
        codes = []
        for user, key in (("shop", "gwk_wrong"), ("crm", sub.key), ("shop", other)):
            client = sub.client()
            with pytest.raises(smtplib.SMTPAuthenticationError) as info:
                client.login(user, key)
            codes.append(info.value.smtp_code)
            assert b"API key" in info.value.smtp_error
            client.quit()
        for user, key in (("shop", sub.key), ("crm", other)):
            client = sub.client()
            codes.append(client.login(user, key)[0])
            client.quit()
        return codes

    assert await in_thread(attempts) == [535, 535, 535, 235, 235]
    await sub.gw.revoke_api_key("shop")

    def revoked() -> int:
        client = sub.client()
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            client.login("shop", sub.key)
        client.quit()
        return info.value.smtp_code

    assert await in_thread(revoked) == 535


async def test_failed_logins_slow_down_past_ten_a_minute_and_never_lock_out():
    now = [1000.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    class Store:
        async def find_api_key(self, key_hash: str, now: float) -> tuple[str, str] | None:
            return ("shop", "send") if key_hash == GOOD_HASH else None

    from gateway.apikeys import key_hash

    GOOD_HASH = key_hash("gwk_good")
    service = Submission(
        None,  # type: ignore[arg-type]
        Store(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        failures=FailedLogins(clock=lambda: now[0]),
        sleep=sleep,
    )
    for _ in range(10):
        assert await service.authenticate("10.0.0.1", "shop", "gwk_bad") is None
    assert waits == []  # ten in a minute: no delay yet
    assert await service.authenticate("10.0.0.1", "shop", "gwk_bad") is None
    assert await service.authenticate("10.0.0.1", "shop", "gwk_bad") is None
    assert waits == [1.0, 2.0]  # each further failure doubles the wait
    assert await service.authenticate("10.0.0.2", "shop", "gwk_bad") is None
    assert waits == [1.0, 2.0]  # another client is not slowed
    key = await service.authenticate("10.0.0.1", "shop", "gwk_good")
    assert key is not None and key.name == "shop"  # the right key still works, only later
    assert waits[-1] == 4.0
    now[0] += 61  # a minute later the count is empty: never locked out for good
    waits.clear()
    assert await service.authenticate("10.0.0.1", "shop", "gwk_bad") is None
    assert waits == []


async def test_plain_then_login_failures_count_and_the_eleventh_waits(sub: Sub):
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    def attempts() -> tuple[list[int], float, int, float]:
        client = sub.client()
        codes = []
        for i in range(5):  # a client trying PLAIN then LOGIN: two failed attempts each time
            codes.append(client.docmd("AUTH PLAIN", b64(f"\0shop\0gwk_wrong{i}"))[0])
            client.docmd("AUTH LOGIN", b64("shop"))
            codes.append(client.docmd(b64(f"gwk_wrong{i}"))[0])
        started = time.monotonic()
        codes.append(client.docmd("AUTH PLAIN", b64("\0shop\0gwk_wrong"))[0])
        slowed = time.monotonic() - started
        started = time.monotonic()
        code = client.docmd("AUTH PLAIN", b64(f"\0shop\0{sub.key}"))[0]
        then = time.monotonic() - started
        client.quit()
        return codes, slowed, code, then

    codes, slowed, code, then = await in_thread(attempts)
    assert codes == [535] * 11
    assert slowed >= 1.0  # ten failures within the minute: the eleventh waits
    assert code == 235 and then >= 2.0  # the right key still works, only later


# -- the same policy as send() -----------------------------------------------------------------


async def test_a_refused_recipient_is_answered_at_rcpt_and_the_others_get_their_message(sub: Sub):
    await sub.gw.suppress("bich@example.vn", reason="hard_bounce", scope="all")

    def dialogue() -> tuple[tuple[int, bytes], tuple[int, bytes], tuple[int, bytes]]:
        client = sub.login()
        client.mail("shop@first.vn")
        refused = client.rcpt("bich@example.vn")
        accepted = client.rcpt("an@example.vn")
        reply = client.data(message("an@example.vn").as_bytes(policy=email.policy.SMTP))
        client.quit()
        return refused, accepted, reply

    refused, accepted, (code, reply) = await in_thread(dialogue)
    assert refused[0] == 550 and refused[1].startswith(b"5.7.1 ")
    assert b"hard_bounce" in refused[1]
    assert accepted[0] == 250
    assert code == 250 and reply.startswith(b"2.0.0 queued as <")
    message_id = reply.split(b"queued as ")[1].decode()
    [got] = await deliver(sub, 1)
    assert got["Message-ID"] == message_id
    assert sub.smtp.messages[0].rcpt_tos == ["an@example.vn"]
    status = await sub.gw.message_status(message_id)
    assert status["state"] == "sent" and status["source"] == "smtp:shop"


async def test_tp1_a_message_with_a_remote_image_is_refused_at_data_naming_the_host(sub: Sub):
    msg = message(html='<p>Hi</p><img src="https://tracker.example.net/o.gif" alt="">')
    code, reply = await in_thread(send_data, sub, msg, ["an@example.vn"])
    assert code == 550 and reply.startswith(b"5.7.1 ")
    assert b"tracker.example.net" in reply
    await sub.gw.deliver(until_idle=True)
    assert sub.smtp.messages == []  # nothing queued, nothing sent


async def test_a_from_outside_the_gateways_domains_is_refused(sub: Sub):
    msg = message(sender="Someone <ceo@elsewhere.example>")
    code, reply = await in_thread(send_data, sub, msg, ["an@example.vn"])
    assert code == 550 and b"first.vn" in reply and b"elsewhere.example" in reply


async def test_an_unknown_category_or_topic_is_refused_in_words(sub: Sub):
    msg = message(X_Gateway_Category="newsletter")
    code, reply = await in_thread(send_data, sub, msg, ["an@example.vn"])
    assert code == 550 and b"category" in reply
    msg = message(X_Gateway_Category="marketing", X_Gateway_Topic="nope")
    code, reply = await in_thread(send_data, sub, msg, ["an@example.vn"])
    assert code == 550 and b"nope" in reply


async def test_ad4_marketing_to_someone_not_subscribed_is_refused_whole_and_nothing_queued(
    sub: Sub,
):
    await sub.gw.add_contact("an@example.vn", subscribe=["news"])
    msg = message(X_Gateway_Category="marketing", X_Gateway_Topic="news")
    code, reply = await in_thread(send_data, sub, msg, ["an@example.vn", "bich@example.vn"])
    assert code == 550 and reply.startswith(b"5.7.1 ")
    assert b"bich@example.vn" in reply and b"nothing was queued" in reply
    await sub.gw.deliver(until_idle=True)
    assert sub.smtp.messages == []


async def test_ad1_ad2_lu2_marketing_gets_label_footer_list_headers_and_each_sees_only_self(
    sub: Sub,
):
    for who in ("an@example.vn", "bich@example.vn"):
        await sub.gw.add_contact(who, subscribe=["news"])
    msg = message(
        "an@example.vn, bich@example.vn",
        subject="Giảm giá mùa hè",
        text="Giảm 20% tuần này.",
        html="<html><body><p>Giảm 20% tuần này.</p></body></html>",
        Cc="boss@first.vn",
        X_Gateway_Category="marketing",
        X_Gateway_Topic="news",
        DKIM_Signature="v=1; a=rsa-sha256; d=first.vn; s=app; b=AAAA; bh=BBBB; h=from",
        List_Unsubscribe="<https://app.example/unsub>",
        Disposition_Notification_To="shop@first.vn",
    )
    sent = msg.as_bytes(policy=email.policy.SMTP)
    code, reply = await in_thread(send_data, sub, msg, ["an@example.vn", "bich@example.vn"])
    assert code == 250, reply
    assert len(reply.split(b"queued as ")[1].split()) == 2
    got = await deliver(sub, 2)
    for received, out in zip(sub.smtp.messages, got, strict=True):
        [rcpt] = received.rcpt_tos
        assert out["To"] == rcpt  # only their own address
        assert "Cc" not in out and "Bcc" not in out
        assert out["Subject"] == "[QC] Giảm giá mùa hè"
        for gone in ("X-Gateway-Category", "X-Gateway-Topic", "Disposition-Notification-To"):
            assert gone not in out
        assert "DKIM-Signature" not in out  # the application's signature is gone
        # none added (Python's add_alternative writes one into the HTML part itself)
        assert received.data.count(b"MIME-Version:") == sent.count(b"MIME-Version:")
        unsubscribe = out["List-Unsubscribe"]
        assert "https://mail.first.vn/unsubscribe/" in unsubscribe
        assert "app.example" not in unsubscribe
        assert out["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        text, html = body_text(out, "plain"), body_text(out, "html")
        assert text.startswith("Giảm 20% tuần này.")
        assert "12 Lê Lợi" in text and "mail.first.vn/unsubscribe/" in text
        assert html.startswith("<html><body><p>Giảm 20% tuần này.</p>")
        assert "12 Lê Lợi" in html and html.rstrip().endswith("</body></html>")
        assert html.index("12 Lê Lợi") < html.index("</body>")


# -- any MIME an application builds -------------------------------------------------------------


def raw_message(content_type: str, cte: str, body: bytes, **headers: str) -> bytes:
    head = {
        "From": "shop@first.vn",
        "To": "an@example.vn",
        "Subject": "Hóa đơn",
        "MIME-Version": "1.0",
        "Content-Type": content_type,
        "Content-Transfer-Encoding": cte,
        **headers,
    }
    return b"".join(f"{k}: {v}\r\n".encode() for k, v in head.items()) + b"\r\n" + body


def cp1258(text: str) -> bytes:
    """Vietnamese in windows-1258 as its software writes it: letters with a horn, breve or
    circumflex precomposed, the tone as a combining mark after them."""
    out = b""
    for char in text:
        try:
            out += char.encode("cp1258")
        except UnicodeEncodeError:
            parts = unicodedata.normalize("NFD", char)
            out += unicodedata.normalize("NFC", parts[:-1]).encode("cp1258")
            out += parts[-1].encode("cp1258")
    return out


SHAPES = {
    # text only, iso-8859-1, quoted-printable
    "latin1-qp": (
        raw_message(
            'text/plain; charset="iso-8859-1"', "quoted-printable", b"Caf=E9 cr=E8me br=FBl=E9e\r\n"
        ),
        "Café crème brûlée",
        None,
    ),
    # HTML only, windows-1258 (Vietnamese software), base64
    "cp1258-base64": (
        raw_message(
            'text/html; charset="windows-1258"',
            "base64",
            base64.encodebytes(cp1258("<p>Cảm ơn quý khách</p>")),
        ),
        None,
        "<p>Cảm ơn quý khách</p>",
    ),
    # text only, utf-8, 8bit
    "utf8-8bit": (
        raw_message('text/plain; charset="utf-8"', "8bit", "Xin chào Việt Nam\r\n".encode()),
        "Xin chào Việt Nam",
        None,
    ),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("category", ["transactional", "marketing"])
async def test_charsets_and_encodings_arrive_readable(sub: Sub, shape: str, category: str):
    data, text, html = SHAPES[shape]
    if category == "marketing":
        await sub.gw.add_contact("an@example.vn", subscribe=["news"])
        data = b"X-Gateway-Category: marketing\r\nX-Gateway-Topic: news\r\n" + data
    code, reply = await in_thread(send_data, sub, data, ["an@example.vn"])
    assert code == 250, reply
    [out] = await deliver(sub, 1)
    if text is not None:
        got = body_text(out, "plain")
        assert got.startswith(text)
        assert ("12 Lê Lợi" in got) == (category == "marketing")
    if html is not None:
        got = unicodedata.normalize("NFC", body_text(out, "html"))
        assert got.startswith(html)
        assert ("12 Lê Lợi" in got) == (category == "marketing")


async def test_attachments_arrive_byte_for_byte_and_a_cid_image_is_first_party(sub: Sub):
    await sub.gw.add_contact("an@example.vn", subscribe=["news"])
    msg = message(
        text="Hóa đơn đính kèm.",
        html='<p>Hóa đơn</p><img src="cid:logo@first.vn" alt="logo">',
        X_Gateway_Category="marketing",
        X_Gateway_Topic="news",
    )
    html_part = msg.get_body(preferencelist=("html",))
    assert html_part is not None
    html_part.add_related(PNG, "image", "png", cid="<logo@first.vn>")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="hoa-don.pdf")
    msg.add_attachment("tên,số\nAn,1\n".encode(), maintype="text", subtype="csv", filename="ds.csv")
    code, reply = await in_thread(send_data, sub, msg, ["an@example.vn"])
    assert code == 250, reply
    [out] = await deliver(sub, 1)
    assert out.get_content_type() == "multipart/mixed"
    attachments = {a.get_filename(): a.get_payload(decode=True) for a in out.iter_attachments()}
    assert attachments == {"hoa-don.pdf": PDF, "ds.csv": "tên,số\nAn,1\n".encode()}
    images = [p for p in out.walk() if p.get_content_type() == "image/png"]
    assert [p.get_content() for p in images] == [PNG]
    assert images[0]["Content-ID"] == "<logo@first.vn>"
    html = body_text(out, "html")
    assert 'src="cid:logo@first.vn"' in html and "12 Lê Lợi" in html
    assert "12 Lê Lợi" in body_text(out, "plain")


async def test_a_message_over_the_size_limit_is_refused_before_its_data_is_read(
    env: dict[str, str], smtp: RecordingSMTPServer, tmp_path: Path
):
    certs = submission_env(env, smtp, tmp_path, GATEWAY_SUBMISSION_MAX_BYTES="20000")
    async with Gateway.from_env(env) as gw:
        key = await gw.create_api_key("shop", "send")
        async with gw.submitting() as where:
            assert where is not None
            s = Sub(gw, int(where.rpartition(":")[2]), certs, key, smtp)
            big = message(text="x" * 30000).as_bytes(policy=email.policy.SMTP)

            def dialogue() -> tuple[int, int]:
                client = s.login(key=key)
                announced = client.mail("shop@first.vn", [f"SIZE={len(big)}"])[0]
                client.rset()
                client.mail("shop@first.vn")
                client.rcpt("an@example.vn")
                at_data = client.data(big)[0]
                client.quit()
                return announced, at_data

            assert await in_thread(dialogue) == (552, 552)


# -- keys with scopes ------------------------------------------------------------------------


async def test_a_send_key_may_only_send_over_the_api(sub: Sub):
    from gateway.web.app import create_app

    app = create_app(sub.gw, worker=False)
    headers = {"Authorization": f"Bearer {sub.key}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://mail.first.vn"
    ) as client:
        sent = await client.post(
            "/api/v1/messages",
            json={"to": "an@example.vn", "subject": "Hi", "text": "x"},
            headers=headers,
        )
        assert sent.status_code == 202
        status = await sub.gw.message_status(sent.json()["message_id"])
        assert status["source"] == "apikey:shop"
        for method, path in (("GET", "/api/v1/contacts"), ("POST", "/api/v1/topics")):
            refused = await client.request(method, path, headers=headers, json={})
            assert refused.status_code == 403
            assert "only send" in refused.json()["error"]


# -- start-up ---------------------------------------------------------------------------------


@pytest.mark.parametrize("broken", ["missing", "not-pem"])
async def test_an_unreadable_certificate_stops_serve_in_one_line(
    env: dict[str, str], tmp_path: Path, broken: str
):
    import os
    import subprocess
    import sys

    certs = tls.certificates(tmp_path)
    cert = tmp_path / "absent.pem"
    if broken == "not-pem":
        cert.write_text("not a certificate\n")
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    run_env.update(env)
    run_env.update(
        GATEWAY_SUBMISSION_SMTP="127.0.0.1:0",
        GATEWAY_TLS_CERT=str(cert),
        GATEWAY_TLS_KEY=str(certs.key_file),
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", "serve", "--port", "0"],
        cwd=tmp_path,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "GATEWAY_TLS_CERT" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


async def test_the_gateway_signs_what_it_sends_and_the_applications_signature_is_gone(
    env: dict[str, str], smtp: RecordingSMTPServer, tmp_path: Path
):
    import dkim
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from test_dkim import DOMAIN, SELECTOR, dns, ed_txt, pkcs8

    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "dkim.pem").write_bytes(pkcs8(key))
    certs = submission_env(
        env,
        smtp,
        tmp_path,
        GATEWAY_DKIM_DOMAIN=DOMAIN,
        GATEWAY_DKIM_SELECTOR=SELECTOR,
        GATEWAY_DKIM_KEY_FILE=str(tmp_path / "dkim.pem"),
    )
    async with Gateway.from_env(env) as gw:
        api_key = await gw.create_api_key("shop", "send")
        async with gw.submitting() as where:
            assert where is not None
            s = Sub(gw, int(where.rpartition(":")[2]), certs, api_key, smtp)
            msg = message(DKIM_Signature="v=1; a=rsa-sha256; d=first.vn; s=app; h=from; bh=x; b=y")
            code, _ = await in_thread(send_data, s, msg, ["an@example.vn"])
            assert code == 250
            await gw.deliver(until_idle=True)
    [received] = smtp.messages
    assert received.data.count(b"DKIM-Signature:") == 1
    assert f"d={DOMAIN}".encode() in received.data and b"s=app" not in received.data
    assert dkim.verify(received.data, dnsfunc=dns(ed_txt(key))) is True


async def test_a_transactional_body_arrives_byte_for_byte(sub: Sub):
    msg = message(html="<p>Đơn hàng</p>")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="hoa-don.pdf")
    sent = msg.as_bytes(policy=email.policy.SMTP)
    code, _ = await in_thread(send_data, sub, msg, ["an@example.vn"])
    assert code == 250
    await deliver(sub, 1)
    body = sent.partition(b"\r\n\r\n")[2]
    assert sub.smtp.messages[0].data.partition(b"\r\n\r\n")[2] == body
