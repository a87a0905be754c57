"""Hostile submissions (a review found each of these let through once): header smuggling, scan
bypasses and a marketing footer hidden in an attachment."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import test_submission
from test_submission import Sub, deliver, in_thread, send_data

sub = test_submission.sub  # the fixture: a gateway with its submission listener

TRACKER = b'<p>Hi</p><img src="https://tracker.example.net/o.gif" alt="">'


def lines(*head: str, body: bytes = b"Hello\r\n") -> bytes:
    return b"".join(h.encode() + b"\r\n" for h in head) + b"\r\n" + body


async def test_review_bare_cr_smuggles_an_unlabelled_subject_and_a_cc_into_marketing(sub: Sub):
    """AD-1 / each recipient sees only self: a bare CR inside a kept header line hides a
    second Subject and a Cc from the rewrite; aiosmtplib turns the CR into a line break."""
    await sub.gw.add_contact("an@example.vn", subscribe=["news"])
    data = (
        b"From: shop@first.vn\r\nTo: an@example.vn\r\nSubject: Sale\r\n"
        b"X-Note: x\rSubject: Sale (no label)\rCc: bich@example.vn, chi@example.vn\r\n"
        b"X-Gateway-Category: marketing\r\nX-Gateway-Topic: news\r\n\r\nHello\r\n"
    )
    code, reply = await in_thread(send_data, sub, data, ["an@example.vn"])
    if code != 250:
        return  # refused: fine
    [out] = await deliver(sub, 1)
    assert out.get_all("Subject") == ["[QC] Sale"]
    assert "Cc" not in out


async def test_review_obs_header_space_before_colon_hides_an_html_part_from_the_scan(sub: Sub):
    """TP-1: 'X-Mailer : x' (RFC 5322 obsolete syntax, a header to mail clients) ends the
    headers for Python's parser, so the scan reads the rest as a text body while the headers
    after it (text/html, base64) are sent as they are."""
    data = lines(
        "From: shop@first.vn",
        "To: an@example.vn",
        "Subject: Order",
        "X-Mailer : Shop 1.0",
        "MIME-Version: 1.0",
        "Content-Type: text/html; charset=utf-8",
        "Content-Transfer-Encoding: base64",
        body=base64.encodebytes(TRACKER).replace(b"\n", b"\r\n"),
    )
    code, reply = await in_thread(send_data, sub, data, ["an@example.vn"])
    assert code == 550 and b"tracker.example.net" in reply, (code, reply)


async def test_review_an_html_part_in_a_charset_browsers_do_not_know_escapes_the_scan(sub: Sub):
    """TP-1: the scan decodes with Python's codec registry (utf-32, cp037, ...); a mail
    client that does not know the label falls back to UTF-8/windows-1252 and loads the image."""
    for charset in ("utf-32", "cp037"):
        data = lines(
            "From: shop@first.vn",
            "To: an@example.vn",
            "Subject: Order",
            "MIME-Version: 1.0",
            f"Content-Type: text/html; charset={charset}",
            "Content-Transfer-Encoding: 7bit",
            body=TRACKER + b"\r\n",
        )
        code, reply = await in_thread(send_data, sub, data, ["an@example.vn"])
        assert code == 550, (charset, code, reply)


async def test_review_the_marketing_footer_lands_in_a_forwarded_message_attachment(sub: Sub):
    """AD-2: the footer goes into the first text and HTML parts found by walk(), which
    descends into a message/rfc822 attachment placed first: the body people read has none."""
    await sub.gw.add_contact("an@example.vn", subscribe=["news"])
    inner = (
        b"From: x@first.vn\r\nSubject: old\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nOld mail\r\n"
    )
    data = (
        b"From: shop@first.vn\r\nTo: an@example.vn\r\nSubject: Sale\r\n"
        b"X-Gateway-Category: marketing\r\nX-Gateway-Topic: news\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n"
        + inner
        + b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBig sale this week\r\n--b--\r\n"
    )
    code, reply = await in_thread(send_data, sub, data, ["an@example.vn"])
    assert code == 250, reply
    [out] = await deliver(sub, 1)
    body = out.get_body(preferencelist=("plain",))
    assert body is not None
    assert "mail.first.vn/unsubscribe/" in body.get_content()


async def test_review_a_header_dkim_cannot_parse_is_accepted_then_dropped(
    env: dict[str, str], smtp: Any, tmp_path: Path
):
    """SU-2 never accept then drop: 'X-Mailer : x' (and any header line dkimpy's parser
    refuses) gets 250 at DATA; with DKIM configured the worker then fails it unsent."""
    import tls
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from test_dkim import DOMAIN, SELECTOR, pkcs8

    from gateway import Gateway

    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "dkim.pem").write_bytes(pkcs8(key))
    certs = tls.certificates(tmp_path)
    env.update(
        GATEWAY_SMTP_URL=smtp.url,
        GATEWAY_SUBMISSION_SMTP="127.0.0.1:0",
        GATEWAY_TLS_CERT=str(certs.cert_file),
        GATEWAY_TLS_KEY=str(certs.key_file),
        GATEWAY_DKIM_DOMAIN=DOMAIN,
        GATEWAY_DKIM_SELECTOR=SELECTOR,
        GATEWAY_DKIM_KEY_FILE=str(tmp_path / "dkim.pem"),
    )
    data = lines(
        "From: shop@first.vn", "To: an@example.vn", "Subject: Order", "X-Mailer : Shop 1.0"
    )
    async with Gateway.from_env(env) as gw:
        api_key = await gw.create_api_key("shop", "send")
        async with gw.submitting() as where:
            assert where is not None
            s = Sub(gw, int(where.rpartition(":")[2]), certs, api_key, smtp)
            code, reply = await in_thread(send_data, s, data, ["an@example.vn"])
            await gw.deliver(until_idle=True)
            status = None
            if code == 250:
                status = await gw.message_status(reply.split()[-1].decode())
    assert code != 250 or len(smtp.messages) == 1, (code, reply, status)


async def test_review_the_html_footer_lands_inside_a_trailing_comment(sub: Sub):
    """AD-2: with_html_footer puts the footer before the LAST '</body' in the text, which may
    be inside a comment after the real end of the body: the footer is then never shown."""
    from selectolax.lexbor import LexborHTMLParser

    await sub.gw.add_contact("an@example.vn", subscribe=["news"])
    html = "<html><body><p>Sale</p></body></html><!-- end </body> -->"
    data = lines(
        "From: shop@first.vn",
        "To: an@example.vn",
        "Subject: Sale",
        "X-Gateway-Category: marketing",
        "X-Gateway-Topic: news",
        "MIME-Version: 1.0",
        "Content-Type: text/html; charset=utf-8",
        body=html.encode() + b"\r\n",
    )
    code, reply = await in_thread(send_data, sub, data, ["an@example.vn"])
    assert code == 250, reply
    [out] = await deliver(sub, 1)
    got = out.get_body(preferencelist=("html",))
    assert got is not None
    shown = LexborHTMLParser(got.get_content()).body
    assert shown is not None and "mail.first.vn/unsubscribe/" in shown.html


async def test_an_html_attachment_is_scanned_too(sub: Sub):
    """TP-1: a client may show an attached HTML file inline; its remote image is refused."""
    data = lines(
        "From: shop@first.vn",
        "To: an@example.vn",
        "Subject: Order",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="b"',
        body=b"--b\r\nContent-Type: text/plain\r\n\r\nSee attached\r\n"
        b"--b\r\nContent-Type: text/html\r\nContent-Disposition: attachment; filename=a.html\r\n\r\n"
        + TRACKER
        + b"\r\n--b--\r\n",
    )
    code, reply = await in_thread(send_data, sub, data, ["an@example.vn"])
    assert code == 550 and b"tracker.example.net" in reply


async def test_a_line_that_is_not_a_header_is_refused_in_words(sub: Sub):
    data = lines("From: shop@first.vn", "To: an@example.vn", "Subject: x", "not a header")
    code, reply = await in_thread(send_data, sub, data, ["an@example.vn"])
    assert code == 550 and reply.startswith(b"5.6.0 ") and b"line 4" in reply


async def test_a_large_message_to_many_recipients_is_refused_before_anything_is_copied(
    sub: Sub,
):
    sub.gw.settings.__dict__["submission_max_bytes"] = 20_000  # frozen dataclass: tests only
    data = lines("From: shop@first.vn", "Subject: x", body=b"x" * 15_000 + b"\r\n")
    rcpts = [f"p{i}@example.vn" for i in range(6)]
    code, reply = await in_thread(send_data, sub, data, rcpts)
    assert code == 552 and b"fewer" in reply
    assert await sub.gw.store.rows("SELECT count(*) FROM outbox", ()) == [(0,)]
