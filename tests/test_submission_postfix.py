"""A real MTA relaying into the gateway: a throwaway Postfix (tests/postfix.py), configured as
a business's null client would be (`relayhost = [127.0.0.1]:PORT`, `smtp_tls_security_level
= encrypt`, SASL with a send-scoped key), fed by `sendmail`, relays into the submission
listener (GATEWAY_SUBMISSION_SMTP). The message must reach the sink through the gateway,
DKIM-signed by the gateway, under the gateway's Message-ID, logged with its key; a refusal
must come back to Postfix as an SMTP reply that it reports (SU-1, SU-2)."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import pytest
import tls
from cryptography.hazmat.primitives.asymmetric import rsa
from postfix import Postfix, require_postfix
from smtp_server import RecordingSMTPServer
from test_dkim import DOMAIN, SELECTOR, dns, pkcs1, rsa_txt

from gateway import Gateway

KEY_NAME = "shop"
SENDER = "shop@first.vn"
QUEUED = re.compile(r"^250 2\.0\.0 queued as (<[^>]+>)")


@dataclass
class Relay:
    gw: Gateway
    port: int
    key: str
    certs: tls.Certificates
    smtp: RecordingSMTPServer
    dkim_txt: bytes


@pytest.fixture(scope="module")
def dkim_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def relay(
    env: dict[str, str], smtp: RecordingSMTPServer, tmp_path: Path, dkim_key: rsa.RSAPrivateKey
) -> AsyncIterator[Relay]:
    """A gateway with DKIM and the submission listener on a free port, delivering to `smtp`."""
    require_postfix()
    certs = tls.certificates(tmp_path / "tls")
    (tmp_path / "dkim.pem").write_bytes(pkcs1(dkim_key))
    env.update(
        GATEWAY_SMTP_URL=smtp.url,
        GATEWAY_SUBMISSION_SMTP="127.0.0.1:0",
        GATEWAY_TLS_CERT=str(certs.cert_file),
        GATEWAY_TLS_KEY=str(certs.key_file),
        GATEWAY_DKIM_DOMAIN=DOMAIN,
        GATEWAY_DKIM_SELECTOR=SELECTOR,
        GATEWAY_DKIM_KEY_FILE=str(tmp_path / "dkim.pem"),
    )
    async with Gateway.from_env(env) as gw:
        key = await gw.create_api_key(KEY_NAME, "send")
        async with gw.submitting() as where:
            assert where is not None
            port = int(where.rpartition(":")[2])
            yield Relay(gw, port, key, certs, smtp, rsa_txt(dkim_key))


def message(message_id: str, to: str) -> bytes:
    """What an application hands to sendmail: UTF-8 text, 8bit."""
    return (
        f"From: =?utf-8?b?Q+G7rWEgaMOgbmcgQW4=?= <{SENDER}>\r\n"
        f"To: {to}\r\n"
        "Subject: =?utf-8?b?xJDGoW4gaMOgbmcgIzEwMDE=?=\r\n"
        f"Message-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Cảm ơn bạn đã đặt hàng. Đơn #1001 sẽ được giao trong 2 ngày.\r\n"
    ).encode()


@pytest.mark.parametrize("mechanism", ["plain", "login"])
async def test_postfix_relays_through_the_gateway_signed_and_logged_su_1(
    relay: Relay, mechanism: str
) -> None:
    """sendmail -> Postfix -> STARTTLS + AUTH with a send key -> the gateway -> the worker ->
    the sink: DKIM-signed by the gateway, under the Message-ID the gateway answered with in
    its 250 reply, in the message log with source "smtp:shop"."""
    async with Postfix(
        relay.port, KEY_NAME, relay.key, ca_file=relay.certs.ca_file, sasl_mechanisms=mechanism
    ) as pf:
        await pf.sendmail(
            message("<order-1001@app.first.vn>", "an@example.vn"), ["an@example.vn"], SENDER
        )
        outcome = await pf.outcome("<order-1001@app.first.vn>", "an@example.vn")
        assert outcome.status == "sent", pf.report()
        await pf.wait_log(
            rf"Trusted TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:{relay.port}"
        )
    queued = QUEUED.match(outcome.reply)
    assert queued, f"not the gateway's 250 reply: {outcome.reply}"
    message_id = queued.group(1)
    assert message_id != "<order-1001@app.first.vn>"

    await relay.gw.deliver(until_idle=True)
    [received] = relay.smtp.messages
    assert received.rcpt_tos == ["an@example.vn"]
    assert received.message_id == message_id
    assert received.data.count(b"DKIM-Signature:") == 1
    assert dkim.verify(received.data, dnsfunc=dns(relay.dkim_txt)) is True
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed["Subject"] == "Đơn hàng #1001"
    assert "Cảm ơn bạn đã đặt hàng." in parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]

    status = await relay.gw.message_status(message_id)
    assert status["source"] == f"smtp:{KEY_NAME}"
    assert status["state"] == "sent"


async def test_a_suppressed_recipient_comes_back_to_postfix_as_550_5_7_1_su_2(relay: Relay) -> None:
    """One message to two recipients, one suppressed: the gateway refuses that one at RCPT,
    Postfix bounces it with the gateway's 550 5.7.1 (and writes a bounce notice for the
    sender); the other recipient's copy is delivered, and only that one."""
    assert await relay.gw.suppress("bich@example.vn", reason="hard_bounce", scope="all")
    async with Postfix(relay.port, KEY_NAME, relay.key, ca_file=relay.certs.ca_file) as pf:
        await pf.sendmail(
            message("<order-1002@app.first.vn>", "an@example.vn, bich@example.vn"),
            ["an@example.vn", "bich@example.vn"],
            SENDER,
        )
        refused = await pf.outcome("<order-1002@app.first.vn>", "bich@example.vn")
        sent = await pf.outcome("<order-1002@app.first.vn>", "an@example.vn")
        assert refused.status == "bounced", pf.report()
        assert refused.reply.startswith("host 127.0.0.1[127.0.0.1] said: 550 5.7.1 "), refused.reply
        assert "in reply to RCPT TO command" in refused.reply
        assert "dsn=5.7.1" in refused.line
        assert sent.status == "sent", pf.report()
        # Postfix's bounce notice to the sender is discarded there, not relayed to the gateway.
        await pf.wait_log(rf"{refused.queue_id}: sender non-delivery notification")
        await pf.wait_log(r"postfix/discard\[\d+\]: \w+: to=<shop@first\.vn>, relay=none")
    await relay.gw.deliver(until_idle=True)
    assert [m.rcpt_tos for m in relay.smtp.messages] == [["an@example.vn"]]


async def test_postfix_with_a_wrong_key_is_refused_and_keeps_the_message_su_1(relay: Relay) -> None:
    """A key that is not the key: the gateway answers AUTH with 535 5.7.8, Postfix keeps the
    message in its queue and logs why; nothing reaches the gateway's outbox."""
    async with Postfix(relay.port, KEY_NAME, relay.key + "x", ca_file=relay.certs.ca_file) as pf:
        await pf.sendmail(
            message("<order-1003@app.first.vn>", "an@example.vn"), ["an@example.vn"], SENDER
        )
        outcome = await pf.outcome("<order-1003@app.first.vn>", "an@example.vn", final=False)
        assert outcome.status == "deferred", pf.report()
        assert "SASL authentication failed" in outcome.reply
        assert "535 5.7.8" in outcome.reply
        assert outcome.queue_id in await pf.queue()
    await relay.gw.deliver(until_idle=True)
    assert relay.smtp.messages == []
