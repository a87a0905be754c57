"""Bounce, complaint and refusal parsing (BN-1..BN-5, ST-3) and the inbound SMTP listener."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

import aiosmtplib
import pytest

from gateway.bounces import Failure, Report, parse_report, refusal_token, verp_tokens
from gateway.errors import ConfigError
from gateway.smtp import InboundServer, parse_hostport

SAMPLES = Path(__file__).parent / "samples"
KINDS = {"dsn", "arf", "detected", "refusal", "unreadable"}
FAILURE_KINDS = {"hard", "soft", "policy", "ignore"}
TOKEN = "eyJlIjoidHJhbi50aGkuYkBleGFtcGxlLnZuIiwidCI6Im5ld3MifQ.Z5OHwg.x7Yk2-Pq_R9sLm0aBcDeFgHiJkL"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def crlf(data: bytes) -> bytes:
    return lf(data).replace(b"\n", b"\r\n")


def failures(report: Report) -> list[tuple[str, str | None, str | None, str]]:
    return [(f.address, f.status, f.action, f.kind) for f in report.failures]


# ------------------------------------------------------------------ samples, table

# (sample, kind, failures as (address, status, action, kind), message_ids, feedback_type, complainant)
CASES = [
    pytest.param(
        "dsn_hard_511_postfix.eml",
        "dsn",
        [("khong.ton.tai@example.vn", "5.1.1", "failed", "hard")],
        ("<173682076011.4242.1552713901@gateway.example.com>",),
        None,
        None,
        id="BN-1-dsn-5.1.1-postfix-hard",
    ),
    pytest.param(
        "dsn_two_recipients.eml",
        "dsn",
        [
            ("nguoi.cu@example.vn", "5.1.1", "failed", "hard"),
            ("hop.thu.day@example.com", "4.2.2", "delayed", "soft"),
        ],
        ("<173690985701.9.8812@gateway.example.com>",),
        None,
        None,
        id="BN-1-BN-3-dsn-two-recipients-hard-and-soft",
    ),
    pytest.param(
        "dsn_policy_571.eml",
        "dsn",
        [("thu.nghiem@example.vn", "5.7.26", "failed", "policy")],
        ("<173699100801.77.4411@gateway.example.com>",),
        None,
        None,
        id="BN-2-dsn-5.7.x-dmarc-policy-not-suppressed",
    ),
    pytest.param(
        "dsn_delayed_447.eml",
        "dsn",
        [("cham.tre@example.com", "4.4.7", "delayed", "soft")],
        ("<173708269101.12.3030@gateway.example.com>",),
        None,
        None,
        id="BN-3-dsn-4.4.7-delayed-soft",
    ),
    pytest.param(
        "arf_abuse.eml",
        "arf",
        [],
        ("<173736059801.311.7070@gateway.example.com>",),
        "abuse",
        "phan.nan@example.com",  # no Original-Rcpt-To: the To of the original message
        id="BN-4-arf-abuse-complainant-from-original-to",
    ),
    pytest.param(
        "arf_not_spam.eml",
        "arf",
        [],
        ("<173743333001.5.6161@gateway.example.com>",),
        "not-spam",
        "binh.an@example.vn",  # Original-Rcpt-To
        id="BN-4-arf-not-spam-is-not-abuse",
    ),
    pytest.param(
        "qmail_bounce.eml",
        "detected",
        [
            ("het.han@example.vn", None, "failed", "hard"),
            ("da.nghi.viec@example.vn", None, "failed", "hard"),
        ],
        ("<173751384801.3.1234@gateway.example.com>",),  # from the inline copy
        None,
        None,
        id="BN-5-qmail-detected-by-flufl",
    ),
    pytest.param(
        "exim_bounce.eml",
        "detected",
        [("chu.cu@example.vn", None, "failed", "hard")],
        ("<173762312901.8.5150@gateway.example.com>",),
        None,
        None,
        id="BN-5-exim-x-failed-recipients-detected-by-flufl",
    ),
    pytest.param(
        "refusal_mailto.eml",
        "refusal",
        [],
        (),
        None,
        "tran.thi.b@example.vn",
        id="ST-3-mailto-refusal",
    ),
    pytest.param(
        "garbage_truncated.eml",
        "unreadable",
        [],
        (),
        None,
        None,
        id="BN-5-garbage-unreadable-not-a-crash",
    ),
    pytest.param(
        "out_of_office.eml",
        "unreadable",
        [],
        (),
        None,
        None,
        id="BN-5-out-of-office-is-not-a-bounce",
    ),
]


@pytest.mark.parametrize("ending", [lf, crlf], ids=["LF", "CRLF"])
@pytest.mark.parametrize(
    ("name", "kind", "expected", "message_ids", "feedback_type", "complainant"), CASES
)
def test_sample(name, kind, expected, message_ids, feedback_type, complainant, ending) -> None:
    report = parse_report(ending(sample(name)))
    assert report.kind == kind, report.reason
    assert sorted(failures(report)) == sorted(expected)
    assert report.message_ids == message_ids
    assert report.feedback_type == feedback_type
    assert report.complainant == complainant
    assert report.reason and "\n" not in report.reason and len(report.reason) <= 300


def test_BN_1_diagnostic_is_one_trimmed_line_without_type() -> None:
    (failure,) = parse_report(sample("dsn_hard_511_postfix.eml")).failures
    assert failure.diagnostic == (
        "550 5.1.1 <khong.ton.tai@example.vn>: Recipient address rejected:"
        " User unknown in virtual mailbox table"
    )
    long = sample("dsn_hard_511_postfix.eml").replace(
        b"virtual mailbox table\n", b"virtual mailbox table " + b"x" * 500 + b"\n"
    )
    (failure,) = parse_report(long).failures
    assert len(failure.diagnostic) <= 200 and "\n" not in failure.diagnostic


def test_ST_3_refusal_report_carries_the_token() -> None:
    report = parse_report(sample("refusal_mailto.eml"))
    assert report.token == TOKEN
    assert refusal_token(sample("refusal_mailto.eml")) == ("tran.thi.b@example.vn", TOKEN)


def test_BN_5_unreadable_reasons_are_specific() -> None:
    assert "automatic reply" in parse_report(sample("out_of_office.eml")).reason
    assert parse_report(b"Subject: hello\n\njust a note\n").reason == (
        "not a delivery report (no multipart/report and no known bounce format)"
    )
    assert parse_report(b"").kind == "unreadable"
    mdn = (
        b"From: a@example.vn\nMIME-Version: 1.0\nContent-Type: multipart/report;"
        b' report-type=disposition-notification; boundary="b"\n\n--b\n'
        b"Content-Type: message/disposition-notification\n\n"
        b"Final-Recipient: rfc822; a@example.vn\nDisposition: manual-action/MDN-sent-manually;"
        b" displayed\n\n--b--\n"
    )
    report = parse_report(mdn)
    assert (report.kind, report.failures) == ("unreadable", ())
    assert "read receipt" in report.reason


def test_BN_5_dsn_prefers_original_recipient_and_reads_status_from_diagnostic() -> None:
    data = (
        b"From: MAILER-DAEMON@mx.example.com\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        b"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.com\n\n"
        b"Final-Recipient: rfc822; alias-target@internal.example.com\n"
        b"Original-Recipient: rfc822; <Sent.To@Example.vn>\n"
        b"Action: failed\n"
        b"Diagnostic-Code: smtp; 550 5.2.1 mailbox disabled\n\n"
        b"Final-Recipient: rfc822; ok@example.vn\nAction: delivered\nStatus: 2.0.0\n\n--b--\n"
    )
    report = parse_report(data)
    assert report.kind == "dsn"
    assert failures(report) == [
        ("sent.to@example.vn", "5.2.1", "failed", "hard"),
        ("ok@example.vn", "2.0.0", "delivered", "ignore"),
    ]


def test_BN_5_flufl_delay_warnings_are_soft() -> None:
    data = (
        b"From: postmaster@mail.example.vn\nTo: bounces@example.com\n"
        b"Subject: Delivery delayed\n\n"
        b"Delivery to the following recipient has been delayed:\n\n"
        b"     cham@example.vn\n\nMessage will be retried for 2 more day(s)\n"
    )
    report = parse_report(data)
    assert report.kind == "detected"
    assert failures(report) == [("cham@example.vn", None, "delayed", "soft")]


# ------------------------------------------------------------------ classification table


@pytest.mark.parametrize(
    ("status", "action", "kind"),
    [
        pytest.param("5.1.1", "failed", "hard", id="BN-1-5.1.1-bad-mailbox"),
        pytest.param("5.1.10", "failed", "hard", id="BN-1-5.1.10-null-mx"),
        pytest.param("5.1.2", None, "hard", id="BN-1-5.1.2-bad-domain-no-action"),
        pytest.param("5.2.1", "failed", "hard", id="BN-1-5.2.1-mailbox-disabled"),
        pytest.param("5.4.4", "failed", "hard", id="BN-1-other-5.x.x-hard"),
        pytest.param("5.0.0", "failed", "hard", id="BN-1-5.0.0-hard"),
        pytest.param("5.2.2", "failed", "soft", id="BN-3-5.2.2-mailbox-full-soft"),
        pytest.param("5.7.1", "failed", "policy", id="BN-2-5.7.1-policy"),
        pytest.param("5.7.26", "failed", "policy", id="BN-2-5.7.26-dmarc-policy"),
        pytest.param("4.2.2", "delayed", "soft", id="BN-3-4.2.2-delayed"),
        pytest.param("4.4.7", "failed", "soft", id="BN-3-4.4.7-expired-failed-is-soft"),
        pytest.param("5.1.1", "delayed", "soft", id="BN-3-delayed-wins-over-5.x.x"),
        pytest.param(None, "failed", "hard", id="BN-5-detected-permanent-hard"),
        pytest.param(None, "delayed", "soft", id="BN-5-detected-temporary-soft"),
        pytest.param(None, None, "soft", id="BN-3-unknown-never-hard"),
        pytest.param("2.0.0", "delivered", "ignore", id="BN-1-delivered-ignore"),
        pytest.param(None, "relayed", "ignore", id="BN-1-relayed-ignore"),
        pytest.param("2.1.5", "expanded", "ignore", id="BN-1-expanded-ignore"),
    ],
)
def test_failure_kind(status, action, kind) -> None:
    assert Failure("a@example.vn", status, action, "").kind == kind


# ------------------------------------------------------------------ VERP and refusals


def test_BN_5_verp_tokens() -> None:
    recipients = [
        "bounces+AbC123_q-9@example.com",
        "Bounces+Second-Tok@Example.COM",
        "<bounces+Third@example.com>",
        "bounces+AbC123_q-9@example.com",  # once only
        "bounces@example.com",  # no token
        "bounces+bad.token@example.com",  # "." is not a VERP token character
        "other+tok@example.com",
        "xbounces+tok@example.com",
        "bounces+tok@a@example.com",
        "",
    ]
    assert verp_tokens(recipients, "bounces") == ["AbC123_q-9", "Second-Tok", "Third"]
    assert verp_tokens(recipients, "BOUNCES") == ["AbC123_q-9", "Second-Tok", "Third"]
    assert verp_tokens([], "bounces") == []


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        pytest.param(b"Subject: unsubscribe " + TOKEN.encode(), b"", TOKEN, id="ST-3-subject"),
        pytest.param(
            b"Subject: Re: UNSUBSCRIBE abc.DEF_1-2", b"", "abc.DEF_1-2", id="ST-3-re-upper"
        ),
        pytest.param(b"Subject: Fwd: [x] Unsubscribe: tok.1", b"", "tok.1", id="ST-3-colon"),
        pytest.param(b"Subject: unsubscribe%20tok-2", b"", "tok-2", id="ST-3-undecoded-mailto"),
        pytest.param(
            b"Subject: =?utf-8?q?H=E1=BB=A7y_unsubscribe_tok3?=", b"", "tok3", id="ST-3-rfc2047"
        ),
        pytest.param(b"Subject: unsubscribe tok4.", b"", "tok4", id="ST-3-trailing-dot"),
        pytest.param(
            b"Subject: please remove me",
            b"\n\nunsubscribe tok5\nsecond line unsubscribe other\n",
            "tok5",
            id="ST-3-first-body-line",
        ),
        pytest.param(
            b"Subject: hi", b"hello\nunsubscribe tok6\n", None, id="ST-3-only-first-body-line"
        ),
        pytest.param(b"Subject: unsubscribe", b"", None, id="ST-3-no-token"),
        pytest.param(b"Subject: unsubscribed tok", b"", None, id="ST-3-whole-word"),
    ],
)
def test_ST_3_refusal_token(headers: bytes, body: bytes, expected: str | None) -> None:
    data = b"From: Ba Nguyen <Ba.Nguyen@Example.VN>\nTo: unsubscribe@example.com\n" + headers
    data += b"\nContent-Type: text/plain; charset=utf-8\n\n" + body
    assert refusal_token(data) == ("ba.nguyen@example.vn", expected)
    assert refusal_token(crlf(data)) == ("ba.nguyen@example.vn", expected)


def test_ST_3_refusal_token_never_raises() -> None:
    assert refusal_token(b"") == (None, None)
    assert refusal_token(b"\xff\xfe\x00garbage") == (None, None)
    assert refusal_token(b"From: <>\nSubject: unsubscribe t\n\n") == (None, "t")


# ------------------------------------------------------------------ never raise


def check(report: Report) -> None:
    assert isinstance(report, Report)
    assert report.kind in KINDS
    assert "\n" not in report.reason and report.reason
    for failure in report.failures:
        assert failure.kind in FAILURE_KINDS
        assert failure.address == failure.address.lower() and "@" in failure.address
        assert "\n" not in failure.diagnostic and len(failure.diagnostic) <= 200


def test_BN_5_random_bytes_never_raise() -> None:
    rnd = random.Random(3464)
    for _ in range(300):
        size = rnd.choice([0, 1, 10, 100, 1000, 5000])
        check(parse_report(rnd.randbytes(size)))
    assert parse_report("not bytes").kind in KINDS  # type: ignore[arg-type]
    assert parse_report(None).kind == "unreadable"  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.eml")))
def test_BN_5_truncated_and_mutated_samples_never_raise(name: str) -> None:
    data = sample(name)
    rnd = random.Random(name)
    for cut in range(0, len(data), max(1, len(data) // 60)):
        check(parse_report(data[:cut]))
        check(parse_report(data[cut:]))
    for _ in range(60):
        mutated = bytearray(data)
        for _ in range(rnd.randint(1, 20)):
            pos = rnd.randrange(len(mutated))
            mutated[pos] = rnd.choice(b'\x00\xff\r\n:;<>@"=-. \tabc5')
        check(parse_report(bytes(mutated)))
        refusal_token(bytes(mutated))


def test_BN_5_deeply_nested_multipart_never_raises() -> None:
    depth = 2000
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i) for i in range(depth)
    )
    check(parse_report(b"From: x@example.vn\nMIME-Version: 1.0\n" + head + b"text\n"))


# ------------------------------------------------------------------ inbound listener


def test_parse_hostport() -> None:
    assert parse_hostport("127.0.0.1:2525") == ("127.0.0.1", 2525)
    assert parse_hostport(" 0.0.0.0:25 ") == ("0.0.0.0", 25)
    assert parse_hostport("mx.example.com:25") == ("mx.example.com", 25)
    assert parse_hostport("[::1]:25") == ("::1", 25)
    assert parse_hostport(":2525") == ("127.0.0.1", 2525)
    assert parse_hostport("2525") == ("127.0.0.1", 2525)
    assert parse_hostport("localhost:0") == ("localhost", 0)
    for bad in [
        "",
        "localhost",
        "host:",
        "host:x",
        "host:70000",
        "::1:25",
        "[::1]",
        "[zz]:25",
        "a b:25",
        "host:-1",
        "[::1]25",
        "h:²",
    ]:
        with pytest.raises(ConfigError) as info:
            parse_hostport(bad)
        assert "\n" not in str(info.value) and "host:port" in str(info.value)


ACCEPTED = ("bounces", "unsubscribe")


def accept(address: str) -> bool:
    local, _, domain = address.lower().partition("@")
    return domain == "example.com" and local.partition("+")[0] in ACCEPTED


def no_asyncio_errors(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


async def test_inbound_handler_gets_exact_bytes(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[str, list[str], bytes]] = []

    async def handle(mail_from: str, rcpt_tos: list[str], data: bytes) -> str | None:
        calls.append((mail_from, rcpt_tos, data))
        return None

    data = sample("dsn_two_recipients.eml") + b"..a line that started with a dot\r\n"
    assert data.endswith(b"\r\n") and b"\n" not in data.replace(b"\r\n", b"")
    async with InboundServer("127.0.0.1", 0, handle, accept_rcpt=accept) as server:
        assert server.port != 0
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port) as client:
            errors, reply = await client.sendmail(  # null sender, as bounces have
                "", ["Bounces+AbC123_q-9@example.com", "unsubscribe@example.com"], data
            )
        assert errors == {} and reply == "OK"
    assert calls == [("", ["Bounces+AbC123_q-9@example.com", "unsubscribe@example.com"], data)]
    assert verp_tokens(calls[0][1], "bounces") == ["AbC123_q-9"]
    assert parse_report(calls[0][2]).kind == "dsn"
    no_asyncio_errors(caplog)


async def test_inbound_handler_reply_is_passed_through() -> None:
    async def handle(mail_from: str, rcpt_tos: list[str], data: bytes) -> str | None:
        return "250 2.0.0 recorded"

    async with InboundServer("127.0.0.1", 0, handle) as server:  # no filter: all accepted
        _, reply = await aiosmtplib.send(
            b"Subject: x\r\n\r\nbody\r\n",
            sender="a@example.vn",
            recipients=["anyone@anywhere.example"],
            hostname="127.0.0.1",
            port=server.port,
        )
    assert reply == "2.0.0 recorded"


async def test_inbound_refuses_unknown_recipients_with_550() -> None:
    async def handle(mail_from: str, rcpt_tos: list[str], data: bytes) -> str | None:
        raise AssertionError("not called")

    async with InboundServer("127.0.0.1", 0, handle, accept_rcpt=accept) as server:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port) as client:
            await client.mail("")
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as info:
                await client.rcpt("victim@elsewhere.example")
            assert info.value.code == 550
            assert info.value.message == "5.1.1 no such mailbox here"
            with pytest.raises(aiosmtplib.SMTPRecipientRefused):
                await client.rcpt("bounces@example.org")
            with pytest.raises(aiosmtplib.SMTPResponseException) as data_info:
                await client.data(b"Subject: x\r\n\r\nx\r\n")  # no accepted recipient
            assert data_info.value.code == 503
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await aiosmtplib.send(
                b"Subject: x\r\n\r\nx\r\n",
                sender="a@example.vn",
                recipients=["postmaster@elsewhere.example"],
                hostname="127.0.0.1",
                port=server.port,
            )


async def test_inbound_handler_error_is_451_and_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    received: list[bytes] = []

    async def handle(mail_from: str, rcpt_tos: list[str], data: bytes) -> str | None:
        if b"BOOM" in data:
            raise RuntimeError("database is locked")
        received.append(data)
        return None

    def flaky_accept(address: str) -> bool:
        if address.startswith("explode"):
            raise ValueError("lookup failed")
        return accept(address)

    caplog.set_level(logging.INFO, logger="gateway.inbound")
    async with InboundServer("127.0.0.1", 0, handle, accept_rcpt=flaky_accept) as server:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port) as client:
            with pytest.raises(aiosmtplib.SMTPDataError) as info:
                await client.sendmail("", ["bounces@example.com"], b"Subject: BOOM\r\n\r\nx\r\n")
            assert info.value.code == 451
            assert info.value.message == "4.3.0 temporary failure, try again later"
            # same connection, next message
            await client.sendmail("", ["bounces@example.com"], b"Subject: fine\r\n\r\n1\r\n")
            await client.mail("")
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as rcpt_info:
                await client.rcpt("explode@example.com")
            assert rcpt_info.value.code == 451
        # a new connection
        await aiosmtplib.send(
            b"Subject: fine\r\n\r\n2\r\n",
            sender="mailer-daemon@example.vn",
            recipients=["bounces@example.com"],
            hostname="127.0.0.1",
            port=server.port,
        )
    assert received == [b"Subject: fine\r\n\r\n1\r\n", b"Subject: fine\r\n\r\n2\r\n"]
    logged = [r for r in caplog.records if r.name == "gateway.inbound" and r.exc_info]
    assert len(logged) == 2
    assert "database is locked" in caplog.text
    no_asyncio_errors(caplog)


async def test_inbound_oversize_is_552() -> None:
    received: list[bytes] = []

    async def handle(mail_from: str, rcpt_tos: list[str], data: bytes) -> str | None:
        received.append(data)
        return None

    big = b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" + b"y" * 2000 + b"\r\n"
    async with InboundServer("127.0.0.1", 0, handle, max_size=1000) as server:
        # aiosmtplib announces SIZE= on MAIL FROM: refused before the data is sent
        with pytest.raises(aiosmtplib.SMTPResponseException) as info:
            await aiosmtplib.send(
                big,
                sender="mailer-daemon@example.vn",
                recipients=["bounces@example.com"],
                hostname="127.0.0.1",
                port=server.port,
            )
        assert info.value.code == 552
        # a client that does not announce the size is refused after DATA
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port) as client:
            await client.mail("")
            await client.rcpt("bounces@example.com")
            with pytest.raises(aiosmtplib.SMTPDataError) as data_info:
                await client.data(big)
            assert data_info.value.code == 552
            await client.sendmail("", ["bounces@example.com"], b"Subject: small\r\n\r\nok\r\n")
    assert received == [b"Subject: small\r\n\r\nok\r\n"]


async def test_inbound_stop_with_open_connection_and_running_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handle(mail_from: str, rcpt_tos: list[str], data: bytes) -> str | None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return None

    server = InboundServer("127.0.0.1", 0, handle)
    await server.start()
    idle = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port)
    await idle.connect()
    busy = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port)
    await busy.connect()
    sending = asyncio.create_task(
        busy.sendmail("", ["bounces@example.com"], b"Subject: slow\r\n\r\nx\r\n")
    )
    await asyncio.wait_for(started.wait(), 5)
    await server.stop()
    assert cancelled.is_set()
    with pytest.raises(aiosmtplib.SMTPException):
        await sending
    with pytest.raises(aiosmtplib.SMTPException):
        await idle.noop()
    idle.close()
    busy.close()
    await server.stop()  # idempotent
    with pytest.raises(OSError):
        await aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, timeout=2).connect()
    no_asyncio_errors(caplog)
