"""Transports against a real aiosmtpd server on 127.0.0.1: bytes, pooling, errors, URLs."""

from __future__ import annotations

import asyncio
import mailbox
import shutil
import ssl
import subprocess
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from smtp_server import RecordingSMTPServer  # tests/ is on sys.path (see conftest.py)

from gateway.transport import (
    Envelope,
    MaildirTransport,
    MemoryTransport,
    Outcome,
    SMTPTransport,
    Transport,
    transport_from_url,
)

pytestmark = pytest.mark.asyncio

SECRET = "s3cr3t-P4ss"


def message(n: int = 0, *, body: bytes = b"Hello.\r\n") -> bytes:
    return (
        b"From: Sender <sender@example.org>\r\n"
        b"To: rcpt%d@example.com\r\n"
        b"Subject: message %d\r\n"
        b"Message-ID: <%d@example.org>\r\n"
        b"\r\n" % (n, n, n)
    ) + body


def envelope(n: int = 0, *, rcpt: str | None = None, data: bytes | None = None) -> Envelope:
    return Envelope(
        sender="bounces@example.org",
        recipient=rcpt or f"rcpt{n}@example.com",
        data=data if data is not None else message(n),
    )


@asynccontextmanager
async def smtp_transport(url: str, **kwargs):
    transport = SMTPTransport(url, **kwargs)
    await transport.open()
    try:
        yield transport
    finally:
        await transport.close()


# --------------------------------------------------------------------------- delivery


async def test_message_arrives_byte_exactly_with_envelope_addresses():
    body = (
        b"Gr\xc3\xbc\xc3\x9fe, caf\xc3\xa9 \xe2\x82\xac\r\n"  # 8-bit UTF-8
        b".leading dot survives dot-stuffing\r\n"
        b".\r\n"  # a lone dot line must not end DATA early
        b"..two dots\r\n"
        b"DKIM-Signature: v=1; a=rsa-sha256; b=abc\r\n"
        + b"x"
        * 1500  # longer than RFC 5321 allows; must still pass through unchanged
        + b"\r\n\r\n"
        b"trailing whitespace   \r\n"
    )
    data = message(1, body=body)
    async with RecordingSMTPServer() as srv, smtp_transport(srv.url) as transport:
        [outcome] = await transport.deliver([envelope(1, data=data)])
        assert outcome == Outcome(ok=True, code=250, message="OK", permanent=False)
        await srv.wait_for(1)
    [got] = srv.messages
    assert got.data == data
    assert got.mail_from == "bounces@example.org"
    assert got.rcpt_tos == ["rcpt1@example.com"]
    assert "BODY=8BITMIME" in got.mail_options


async def test_null_reverse_path_sender_is_accepted():
    async with RecordingSMTPServer() as srv, smtp_transport(srv.url) as transport:
        bounce = Envelope(sender="", recipient="a@example.com", data=message())
        [outcome] = await transport.deliver([bounce])
        assert outcome.ok
    assert srv.messages[0].mail_from == "<>"  # aiosmtpd keeps the null path as written
    assert srv.messages[0].data == message()


async def test_outcomes_follow_input_order():
    rejected = {"rcpt3@example.com", "rcpt7@example.com"}
    async with (
        RecordingSMTPServer(reject=lambda a: (550, "5.1.1 no") if a in rejected else None) as srv,
        smtp_transport(srv.url, concurrency=3) as transport,
    ):
        outcomes = await transport.deliver([envelope(i) for i in range(10)])
    assert [o.ok for o in outcomes] == [f"rcpt{i}@example.com" not in rejected for i in range(10)]
    assert sorted(m.rcpt_tos[0] for m in srv.messages) == sorted(
        f"rcpt{i}@example.com" for i in range(10) if f"rcpt{i}@example.com" not in rejected
    )


async def test_empty_batch_returns_empty_list_without_connecting():
    async with RecordingSMTPServer() as srv, smtp_transport(srv.url) as transport:
        assert await transport.deliver([]) == []
    assert srv.connections == 0


# --------------------------------------------------------------------------- pooling


async def test_200_messages_at_concurrency_4_reuse_at_most_4_connections():
    async with RecordingSMTPServer() as srv, smtp_transport(srv.url, concurrency=4) as transport:
        first = await transport.deliver([envelope(i) for i in range(100)])
        second = await transport.deliver([envelope(i) for i in range(100, 200)])
        await srv.wait_for(200)
    assert all(o.ok for o in first + second)
    assert 1 <= srv.connections <= 4
    assert sorted(m.data for m in srv.messages) == sorted(message(i) for i in range(200))


async def test_batch_is_spread_over_several_connections():
    async with RecordingSMTPServer() as srv, smtp_transport(srv.url, concurrency=4) as transport:
        await transport.deliver([envelope(i) for i in range(40)])
    assert srv.connections == 4
    assert len({m.peer for m in srv.messages}) == 4


async def test_concurrent_deliver_calls_share_the_pool_limit():
    async with RecordingSMTPServer() as srv, smtp_transport(srv.url, concurrency=2) as transport:
        batches = await asyncio.gather(
            *(transport.deliver([envelope(b * 100 + i) for i in range(30)]) for b in range(3))
        )
    assert all(o.ok for batch in batches for o in batch)
    assert srv.received == 90
    assert srv.connections <= 2


# --------------------------------------------------------------------------- SMTP errors


async def test_550_for_one_recipient_is_permanent_and_the_rest_of_the_batch_arrives():
    def reject(addr: str):
        return (550, "5.1.1 user unknown") if addr == "rcpt2@example.com" else None

    async with (
        RecordingSMTPServer(reject=reject) as srv,
        smtp_transport(srv.url, concurrency=1) as transport,
    ):
        outcomes = await transport.deliver([envelope(i) for i in range(5)])
        await srv.wait_for(4)
    assert outcomes[2] == Outcome(ok=False, code=550, message="5.1.1 user unknown", permanent=True)
    assert all(o.ok for i, o in enumerate(outcomes) if i != 2)
    assert [m.rcpt_tos for m in srv.messages] == [[f"rcpt{i}@example.com"] for i in (0, 1, 3, 4)]
    assert srv.connections == 1  # the rejection did not cost the connection


async def test_451_is_temporary_with_code():
    async with (
        RecordingSMTPServer(reject=lambda a: (451, "4.3.0 try again later")) as srv,
        smtp_transport(srv.url) as transport,
    ):
        [outcome] = await transport.deliver([envelope()])
    assert outcome == Outcome(ok=False, code=451, message="4.3.0 try again later", permanent=False)
    assert srv.messages == []


async def test_connection_dropped_mid_transaction_is_temporary_and_next_deliver_reconnects():
    async with (
        RecordingSMTPServer(drop=lambda a: a == "drop@example.com") as srv,
        smtp_transport(srv.url, concurrency=1) as transport,
    ):
        outcomes = await transport.deliver(
            [envelope(0), envelope(rcpt="drop@example.com"), envelope(2)]
        )
        assert outcomes[0].ok and outcomes[2].ok
        assert outcomes[1].ok is False
        assert outcomes[1].code is None
        assert outcomes[1].permanent is False
        assert srv.connections == 2  # dropped connection replaced within the batch

        [again] = await transport.deliver([envelope(3)])
        assert again.ok
        assert srv.connections == 2  # the replacement is reused
    assert [m.rcpt_tos[0] for m in srv.messages] == [
        "rcpt0@example.com",
        "rcpt2@example.com",
        "rcpt3@example.com",
    ]


async def test_server_restart_between_batches_is_handled_on_a_fresh_connection():
    srv = await RecordingSMTPServer().start()
    transport = SMTPTransport(srv.url, concurrency=2)
    try:
        assert all(o.ok for o in await transport.deliver([envelope(i) for i in range(4)]))
        await srv.stop()  # closes the listener and aborts the pooled connections
        srv = await RecordingSMTPServer(port=srv.port).start()
        await asyncio.sleep(0.05)
        outcomes = await transport.deliver([envelope(i) for i in range(4, 8)])
        assert all(o.ok for o in outcomes), outcomes
        assert srv.received == 4
        assert 1 <= srv.connections <= 2
    finally:
        await transport.close()
        await srv.stop()


async def test_unreachable_server_gives_temporary_outcome_for_every_message():
    srv = await RecordingSMTPServer().start()
    url = srv.url
    await srv.stop()  # nothing listens on this port any more
    async with smtp_transport(url + "?timeout=2", concurrency=3) as transport:
        outcomes = await transport.deliver([envelope(i) for i in range(7)])
    assert len(outcomes) == 7
    for outcome in outcomes:
        assert outcome.ok is False and outcome.code is None and outcome.permanent is False
        assert outcome.message.startswith("connect:")


async def test_server_that_never_answers_times_out_as_temporary():
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # accept the connection, never send a greeting

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with smtp_transport(f"smtp://127.0.0.1:{port}?timeout=0.3") as transport:
            [outcome] = await transport.deliver([envelope()])
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
        await server.wait_closed()
    assert outcome.ok is False and outcome.code is None and outcome.permanent is False
    assert "time" in outcome.message.lower()


async def test_credentials_from_url_are_used_for_auth():
    password = "p@ss/w:rd ü"
    quoted = "p%40ss%2Fw%3Ard%20%C3%BC"
    async with RecordingSMTPServer(credentials={"mailer": password}) as srv:
        url = f"smtp://mailer:{quoted}@127.0.0.1:{srv.port}?tls=none"
        async with smtp_transport(url, concurrency=1) as transport:
            outcomes = await transport.deliver([envelope(0), envelope(1)])
    assert all(o.ok for o in outcomes)
    assert srv.logins == ["mailer"]


async def test_wrong_password_is_temporary_and_does_not_leak_the_password():
    async with RecordingSMTPServer(credentials={"mailer": "right"}) as srv:
        url = f"smtp://mailer:{SECRET}@127.0.0.1:{srv.port}?tls=none"
        async with smtp_transport(url) as transport:
            [outcome] = await transport.deliver([envelope()])
            assert SECRET not in repr(transport)
    assert outcome.ok is False and outcome.permanent is False
    assert outcome.code == 535
    assert SECRET not in outcome.message
    assert srv.messages == []


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory) -> ssl.SSLContext:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not available to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


async def test_smtps_implicit_tls_delivers(server_tls):
    async with RecordingSMTPServer(tls=server_tls) as srv:
        assert srv.url.startswith("smtps://")
        async with smtp_transport(srv.url + "?verify=0") as transport:
            [outcome] = await transport.deliver([envelope()])
    assert outcome.ok
    assert srv.messages[0].data == message()


async def test_starttls_required_upgrades_before_sending(server_tls):
    async with RecordingSMTPServer(starttls=server_tls, require_starttls=True) as srv:
        async with smtp_transport(srv.url + "?starttls=1&verify=0", concurrency=1) as transport:
            outcomes = await transport.deliver([envelope(0), envelope(1)])
    assert all(o.ok for o in outcomes)
    assert srv.connections == 1


async def test_starttls_required_but_not_offered_fails_temporarily():
    async with RecordingSMTPServer() as srv:
        async with smtp_transport(srv.url + "?starttls=1") as transport:
            [outcome] = await transport.deliver([envelope()])
    assert outcome.ok is False and outcome.permanent is False
    assert srv.messages == []


async def test_untrusted_certificate_is_refused_unless_verify_0(server_tls):
    async with RecordingSMTPServer(tls=server_tls) as srv:
        async with smtp_transport(srv.url) as transport:
            [outcome] = await transport.deliver([envelope()])
    assert outcome.ok is False and outcome.code is None and outcome.permanent is False
    assert srv.messages == []


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://relay.example", ("relay.example", 25, None, None, False, None, True, None)),
        ("smtp://127.0.0.1:2525", ("127.0.0.1", 2525, None, None, False, None, True, None)),
        (
            "smtp://user:pa%40ss%2F@relay.example:2525",
            ("relay.example", 2525, "user", "pa@ss/", False, None, True, None),
        ),
        (
            "smtp://relay.example?starttls=1",
            ("relay.example", 587, None, None, False, True, True, None),
        ),
        (
            "smtp://relay.example?starttls=0",
            ("relay.example", 25, None, None, False, False, True, None),
        ),
        (
            "smtp://u%20x:p@relay.example:26?starttls=1&timeout=10&verify=0",
            ("relay.example", 26, "u x", "p", False, True, False, 10.0),
        ),
        ("smtps://u:p@relay.example", ("relay.example", 465, "u", "p", True, None, True, None)),
        (
            "smtps://relay.example:1465?verify=0",
            ("relay.example", 1465, None, None, True, None, False, None),
        ),
        ("SMTP://[::1]:2525", ("::1", 2525, None, None, False, None, True, None)),
    ],
)
async def test_transport_from_url_parses_smtp_forms(url, expected):
    transport = transport_from_url(url, concurrency=7)
    assert isinstance(transport, SMTPTransport)
    assert isinstance(transport, Transport)
    assert transport.concurrency == 7
    s = transport.settings
    got = (s.host, s.port, s.username, s.password, s.use_tls, s.start_tls, s.verify, s.timeout)
    assert got == expected


async def test_timeout_in_url_overrides_default():
    assert transport_from_url("smtp://h?timeout=2.5").timeout == 2.5
    assert SMTPTransport("smtp://h", timeout=7).timeout == 7
    assert SMTPTransport("smtp://h").timeout == 30.0


async def test_transport_from_url_parses_maildir_and_memory(tmp_path, monkeypatch):
    absolute = transport_from_url(f"maildir://{tmp_path}/box")
    assert isinstance(absolute, MaildirTransport)
    assert absolute.path == f"{tmp_path}/box"
    assert absolute.concurrency == 1

    relative = transport_from_url("maildir://./spool/box")
    assert isinstance(relative, MaildirTransport)
    assert relative.path == "spool/box"
    monkeypatch.chdir(tmp_path)
    assert (await relative.deliver([envelope()]))[0].ok
    assert len(mailbox.Maildir(tmp_path / "spool" / "box", factory=None, create=False)) == 1

    memory = transport_from_url("memory://")
    assert isinstance(memory, MemoryTransport)
    assert isinstance(memory, Transport)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "relay.example:25",
        f"ftp://user:{SECRET}@relay.example",
        f"smtp://user:{SECRET}@",
        f"smtp://user:{SECRET}@relay.example:notaport",
        f"smtp://user:{SECRET}@relay.example:99999",
        f"smtp://user:{SECRET}@relay.example:0",
        f"smtp://user:{SECRET}@relay.example/path",
        f"smtp://user:{SECRET}/with/slash@relay.example",
        f"smtp://user:{SECRET}@relay.example?starttls=maybe",
        f"smtp://user:{SECRET}@relay.example?timeout=0",
        f"smtp://user:{SECRET}@relay.example?timeout=soon",
        f"smtp://user:{SECRET}@relay.example?verify=perhaps",
        f"smtp://user:{SECRET}@relay.example?tls=1",
        f"smtp://:{SECRET}@relay.example",
        f"smtps://user:{SECRET}@relay.example?starttls=1",
        f"smtp://user:{SECRET}@[::1",
        "maildir://",
        "maildir:///",
        "maildir://./",
        "maildir://host/path",
        "maildir:///var/mail?x=1",
        "memory://something",
    ],
)
async def test_transport_from_url_rejects_bad_urls_without_showing_the_password(url):
    with pytest.raises(ValueError) as info:
        transport_from_url(url)
    text = str(info.value)
    assert SECRET not in text
    assert "\n" not in text
    assert "smtp://" in text and "maildir://" in text  # shows the expected forms


# --------------------------------------------------------------------------- maildir, memory


async def test_maildir_writes_exact_bytes_readable_by_mailbox(tmp_path):
    messages = [message(0), message(1, body=b"caf\xc3\xa9\r\n.dot\r\n"), message(2)]
    transport = MaildirTransport(tmp_path / "box")
    await transport.open()
    outcomes = await transport.deliver([envelope(i, data=m) for i, m in enumerate(messages)])
    await transport.close()
    assert all(o.ok and o.code == 250 for o in outcomes)
    box = mailbox.Maildir(tmp_path / "box", factory=None, create=False)
    assert sorted(box.get_bytes(key) for key in box.keys()) == sorted(messages)
    files = sorted(p.read_bytes() for p in Path(tmp_path / "box" / "new").iterdir())
    assert files == sorted(messages)


async def test_maildir_write_failure_is_a_temporary_outcome(tmp_path):
    transport = MaildirTransport(tmp_path / "box")
    await transport.open()
    (tmp_path / "box" / "tmp").rmdir()
    (tmp_path / "box" / "tmp").write_bytes(b"")  # not a directory: every write fails
    [outcome] = await transport.deliver([envelope()])
    await transport.close()
    assert outcome.ok is False and outcome.permanent is False and outcome.code is None
    assert outcome.message.startswith("maildir:")


async def test_memory_transport_records_sent_and_applies_fail_hook():
    refused = Outcome(ok=False, code=550, message="5.1.1 nope", permanent=True)
    transport = MemoryTransport(fail=lambda e: refused if e.recipient.startswith("bad") else None)
    await transport.open()
    outcomes = await transport.deliver([envelope(0), envelope(rcpt="bad@example.com"), envelope(2)])
    await transport.close()
    assert [o.ok for o in outcomes] == [True, False, True]
    assert outcomes[1] is refused
    assert [e.recipient for e in transport.sent] == ["rcpt0@example.com", "rcpt2@example.com"]
