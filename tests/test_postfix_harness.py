"""The throwaway Postfix of tests/postfix.py, proven against a stand-in: an aiosmtpd server
that requires STARTTLS and AUTH (PLAIN or LOGIN) before MAIL, as the gateway's submission
listener does. A message fed to Postfix with `sendmail` must reach the stand-in over TLS
with the test key, and every failure (refused recipient, wrong password, no TLS offered)
must show in Postfix's log. tests/test_submission_postfix.py then relays into the gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import tls
from aiosmtpd.smtp import AuthResult
from pg import sqlite_only
from postfix import Postfix, require_postfix
from smtp_server import RecordingSMTPServer

from gateway.smtp.server import SMTP

USER = "shop-mailer"
PASSWORD = "gw_send_5c1e9a3f7b2d6e0a8c4f1b3d"
SENDER = "app@first.vn"

pytestmark = sqlite_only("the harness uses no database: it runs once, in the SQLite run")


@pytest.fixture(autouse=True)
def _postfix_available() -> None:
    require_postfix()


class StandIn(RecordingSMTPServer):
    """A RecordingSMTPServer that, like the submission listener, answers 530 to MAIL before
    AUTH and offers AUTH only after STARTTLS; it records each AUTH mechanism used."""

    def __init__(self, certs: tls.Certificates, **kwargs: Any) -> None:
        super().__init__(
            credentials={USER: PASSWORD},
            starttls=certs.server_context(),
            require_starttls=True,
            **kwargs,
        )
        self.mechanisms: list[str] = []

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        self.mechanisms.append(mechanism)
        return super()._authenticate(server, session, envelope, mechanism, auth_data)

    def _protocol(self) -> SMTP:
        self.connections += 1
        return SMTP(
            self._handler,
            registry=self._live,
            decode_data=False,
            enable_SMTPUTF8=True,
            hostname="localhost",
            data_size_limit=None,
            tls_context=self._starttls,
            require_starttls=True,
            authenticator=self._authenticate,
            auth_required=True,
            auth_require_tls=True,
            loop=asyncio.get_running_loop(),
        )


def message(message_id: str, to: str = "an@example.vn", body: str = "Xin chào An") -> bytes:
    return (
        f"From: Shop <{SENDER}>\r\n"
        f"To: {to}\r\n"
        "Subject: =?utf-8?b?xJDGoW4gaMOgbmcgIzQy?=\r\n"
        f"Message-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        f"{body}\r\n"
    ).encode()


@pytest.fixture
def certs(tmp_path: Path) -> tls.Certificates:
    return tls.certificates(tmp_path / "tls")


@pytest.mark.parametrize("mechanism", ["plain", "login"])
async def test_postfix_relays_over_starttls_with_auth(
    certs: tls.Certificates, mechanism: str
) -> None:
    """sendmail -> Postfix -> STARTTLS + AUTH -> the stand-in, which records the message."""
    async with StandIn(certs) as srv:
        async with Postfix(
            srv.port, USER, PASSWORD, ca_file=certs.ca_file, sasl_mechanisms=mechanism
        ) as pf:
            await pf.sendmail(message("<h1@first.vn>"), ["an@example.vn"], SENDER)
            outcome = await pf.outcome("<h1@first.vn>", "an@example.vn")
            assert outcome.status == "sent", pf.report()
            assert f"127.0.0.1[127.0.0.1]:{srv.port}" in outcome.line
            # The CA file lets Postfix say the certificate was trusted: TLS was in use.
            await pf.wait_log(
                rf"Trusted TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:{srv.port}"
            )
            await srv.wait_for(1)
    assert srv.mechanisms == [mechanism.upper()]
    assert srv.logins == [USER]
    (got,) = srv.messages
    assert got.mail_from == SENDER
    assert got.rcpt_tos == ["an@example.vn"]
    assert got.message_id == "<h1@first.vn>"
    assert "Xin chào An".encode() in got.data
    assert got.data.startswith(b"Received: by relay.postfix.test (Postfix")


async def test_a_refused_recipient_bounces_with_the_servers_reply(certs: tls.Certificates) -> None:
    """One message to two recipients; the server refuses one at RCPT with 550 5.7.1: that
    one bounces with the server's words in Postfix's log, the other is delivered."""

    def reject(rcpt: str) -> tuple[int, str] | None:
        return (
            (550, "5.7.1 binh@example.vn asked not to receive mail")
            if rcpt.startswith("binh@")
            else None
        )

    async with StandIn(certs, reject=reject) as srv:
        async with Postfix(srv.port, USER, PASSWORD, ca_file=certs.ca_file) as pf:
            await pf.sendmail(
                message("<h2@first.vn>"), ["an@example.vn", "binh@example.vn"], SENDER
            )
            refused = await pf.outcome("<h2@first.vn>", "binh@example.vn")
            sent = await pf.outcome("<h2@first.vn>", "an@example.vn")
            assert refused.status == "bounced", pf.report()
            assert "550 5.7.1 binh@example.vn asked not to receive mail" in refused.reply
            assert "in reply to RCPT TO command" in refused.reply
            assert sent.status == "sent", pf.report()
            # The bounce notice to the sender is discarded, not relayed to the server.
            await pf.wait_log(r"sender non-delivery notification")
            await pf.wait_log(r"postfix/discard\[\d+\]: \w+: to=<app@first\.vn>, relay=none")
    assert [m.rcpt_tos for m in srv.messages] == [["an@example.vn"]]


async def test_a_wrong_password_defers_and_shows_in_the_log(certs: tls.Certificates) -> None:
    """A wrong key is answered 535: Postfix keeps the message (deferred) and says why."""
    async with StandIn(certs) as srv:
        async with Postfix(srv.port, USER, "not-the-key", ca_file=certs.ca_file) as pf:
            await pf.sendmail(message("<h3@first.vn>"), ["an@example.vn"], SENDER)
            outcome = await pf.outcome("<h3@first.vn>", "an@example.vn", final=False)
            assert outcome.status == "deferred", pf.report()
            assert "SASL authentication failed" in outcome.reply
            assert "535" in outcome.reply
            assert outcome.queue_id in await pf.queue()
    assert srv.messages == [] and srv.logins == []


async def test_postfix_will_not_relay_without_tls() -> None:
    """smtp_tls_security_level = encrypt: a server that offers no STARTTLS gets nothing."""
    async with RecordingSMTPServer(credentials={USER: PASSWORD}) as srv:
        async with Postfix(srv.port, USER, PASSWORD) as pf:
            await pf.sendmail(message("<h4@first.vn>"), ["an@example.vn"], SENDER)
            outcome = await pf.outcome("<h4@first.vn>", "an@example.vn", final=False)
            assert outcome.status == "deferred", pf.report()
            assert "TLS is required, but was not offered" in outcome.reply
    assert srv.messages == []
