"""DKIM signing of whole batches in the signer's own process: what it signs verifies with
dkimpy against the public key and is byte-identical to in-process signing; a child that
dies, or never starts, costs no signature and no message."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

import gateway.dkim as gdkim
import gateway.dkim_pool as pool_mod
from gateway import Gateway, SendRequest
from gateway.dkim import DKIMSigner
from gateway.dkim_pool import POOL_MIN_BATCH, pool_of, sign_batch, sign_many
from gateway.errors import InvalidMessage
from tests.smtp_server import RecordingSMTPServer

DOMAIN, SELECTOR = "first.vn", "s2025"
NOW = 1_746_000_000
BATCH = POOL_MIN_BATCH + 8


@pytest.fixture(scope="module")
def rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def lookup(signer: DKIMSigner) -> Callable[..., bytes | None]:
    """A dnsfunc for dkim.verify answering the signer's own record."""
    expected, txt = f"{signer.dns_name}.".encode(), signer.dns_txt().encode()

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return txt if name == expected else None

    return dns


def message(i: int) -> bytes:
    """A renderer-shaped message that differs per recipient in a header and the body."""
    return (
        f"From: =?utf-8?b?Q+G7rWEgaMOgbmcgQW4=?= <news@first.vn>\r\n"
        f"To: person{i}@example.vn\r\n"
        f"Subject: =?utf-8?b?VGluIHRow6FuZyAxMg==?= {i}\r\n"
        f"Date: Mon, 05 May 2025 10:00:00 GMT\r\n"
        f"Message-ID: <{i:08x}@first.vn>\r\n"
        f"List-Unsubscribe: <https://mail.first.vn/unsubscribe/t{i}>\r\n"
        f"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        f"MIME-Version: 1.0\r\n"
        f'Content-Type: text/plain; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: quoted-printable\r\n"
        f"\r\n"
        f"Xin ch=C3=A0o {i},\r\n" + "Tu=E1=BA=A7n n=C3=A0y gi=E1=BA=A3m gi=C3=A1 30%.\r\n" * (i % 5)
    ).encode("ascii")


def child_of(signer: DKIMSigner) -> pool_mod._Child | None:
    return pool_of(signer).child


def start_child(signer: DKIMSigner) -> pool_mod._Child:
    """The first big batch starts the child (and is signed in this process meanwhile)."""
    sign_many(signer, [message(i) for i in range(POOL_MIN_BATCH)])
    child = child_of(signer)
    assert child is not None
    return child


def only_in_the_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on a signature made in this process raises: what comes back signed was
    signed by the child (a separate interpreter, which this patch does not reach)."""

    def refuse(self: DKIMSigner, data: bytes, timestamp: int | None) -> bytes:
        raise AssertionError("signed in the gateway process")

    monkeypatch.setattr(DKIMSigner, "_signature_header", refuse)


def signed_by_the_child(
    signer: DKIMSigner, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[bytes], list[bytes | Exception]]:
    """A batch signed by the signer's process alone, checked equal to what `sign` gives
    here for the same t=."""
    batch = [message(i) for i in range(BATCH)]
    expected = [signer.sign(m, timestamp=NOW) for m in batch]
    start_child(signer)
    only_in_the_child(monkeypatch)
    signed = sign_many(signer, batch, timestamp=NOW)
    assert signed == expected
    return batch, signed


def test_a_batch_signed_in_the_child_verifies_and_matches_in_process_signing(
    rsa_pem: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LU-5 holds for what the process signs: every message verifies with dkimpy against
    the published key, and the bytes are those `sign` gives for the same t=."""
    signer = DKIMSigner(DOMAIN, SELECTOR, rsa_pem)
    batch, signed = signed_by_the_child(signer, monkeypatch)
    dns = lookup(signer)
    for data, out in zip(batch, signed, strict=True):
        assert isinstance(out, bytes) and out.endswith(data)
        assert b"h=from : to : subject" in out.replace(b"\r\n ", b" ")
        assert dkim.verify(out, dnsfunc=dns) is True
    # and the next batch reuses the same process
    pid = child_of(signer).proc.pid  # type: ignore[union-attr]
    assert all(isinstance(o, bytes) for o in sign_many(signer, batch))
    assert child_of(signer).proc.pid == pid  # type: ignore[union-attr]
    pool_of(signer).close()


def test_ed25519_batches_are_signed_in_the_child_too(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nacl", reason="dkimpy verifies ed25519-sha256 with PyNaCl")
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    signer = DKIMSigner(DOMAIN, SELECTOR, pem)
    _, signed = signed_by_the_child(signer, monkeypatch)
    assert all(dkim.verify(s, dnsfunc=lookup(signer)) for s in signed)  # type: ignore[arg-type]
    pool_of(signer).close()


def test_a_message_that_cannot_be_signed_fails_alone(
    rsa_pem: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = DKIMSigner(DOMAIN, SELECTOR, rsa_pem)
    batch = [message(i) for i in range(BATCH)]
    batch[3] = batch[3].replace(b"From: ", b"Sender: ", 1)
    expected = [signer.sign(m, timestamp=NOW) for i, m in enumerate(batch) if i != 3]
    start_child(signer)
    only_in_the_child(monkeypatch)
    signed = sign_many(signer, batch, timestamp=NOW)
    assert isinstance(signed[3], InvalidMessage)
    assert "without a From header" in str(signed[3])
    assert [s for i, s in enumerate(signed) if i != 3] == expected
    pool_of(signer).close()


def test_a_small_batch_starts_no_process(rsa_pem: bytes) -> None:
    signer = DKIMSigner(DOMAIN, SELECTOR, rsa_pem)
    batch = [message(i) for i in range(POOL_MIN_BATCH - 1)]
    assert sign_many(signer, batch, timestamp=NOW) == [signer.sign(m, timestamp=NOW) for m in batch]
    assert child_of(signer) is None


def test_a_killed_child_loses_no_signature_and_is_replaced(rsa_pem: bytes) -> None:
    signer = DKIMSigner(DOMAIN, SELECTOR, rsa_pem)
    batch = [message(i) for i in range(BATCH)]
    expected = [signer.sign(m, timestamp=NOW) for m in batch]
    first = start_child(signer)
    assert sign_many(signer, batch, timestamp=NOW) == expected  # by the child
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait()
    # The dead child is found out by this batch, which is signed here instead.
    assert sign_many(signer, batch, timestamp=NOW) == expected
    assert child_of(signer) is None and pool_of(signer).failures == 1
    # The next batch starts a new child, and the one after uses it.
    assert sign_many(signer, batch, timestamp=NOW) == expected
    second = child_of(signer)
    assert second is not None and second.proc.pid != first.proc.pid
    assert sign_many(signer, batch, timestamp=NOW) == expected
    assert child_of(signer) is second and pool_of(signer).failures == 1
    pool_of(signer).close()


def test_a_child_killed_in_the_middle_of_a_batch_loses_no_signature(rsa_pem: bytes) -> None:
    """Whenever the kill lands (before, during or after the child's work), every message of
    the batch comes back signed and verifying."""
    signer = DKIMSigner(DOMAIN, SELECTOR, rsa_pem)
    child = start_child(signer)
    batch = [message(i) for i in range(300)]
    killer = threading.Timer(0.02, os.kill, (child.proc.pid, signal.SIGKILL))
    killer.start()
    signed = sign_many(signer, batch, timestamp=NOW)
    killer.join()
    assert len(signed) == len(batch)
    dns = lookup(signer)
    for data, out in zip(batch, signed, strict=True):
        assert isinstance(out, bytes) and out.endswith(data)
        assert dkim.verify(out, dnsfunc=dns) is True
    pool_of(signer).close()


def test_a_child_that_cannot_start_falls_back_for_good(
    rsa_pem: bytes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(pool_mod, "_CHILD_CODE", "raise SystemExit(3)")
    signer = DKIMSigner(DOMAIN, SELECTOR, rsa_pem)
    batch = [message(i) for i in range(POOL_MIN_BATCH)]
    expected = [signer.sign(m, timestamp=NOW) for m in batch]
    # Each attempt takes two batches: one starts the child, the next finds it gone.
    for _ in range(2 * (pool_mod._RESTARTS + 1) + 2):
        assert sign_many(signer, batch, timestamp=NOW) == expected
    assert pool_of(signer).failures == pool_mod._RESTARTS + 1  # no further attempt after that
    assert child_of(signer) is None
    assert "all the next ones" in caplog.text


def test_two_threads_signing_at_once_both_get_every_signature(rsa_pem: bytes) -> None:
    """A batch that finds the child busy is signed in its own thread meanwhile."""
    signer = DKIMSigner(DOMAIN, SELECTOR, rsa_pem)
    batches = [[message(i + 1000 * k) for i in range(BATCH)] for k in range(2)]
    results: list[list[bytes | Exception]] = [[], []]

    def run(k: int) -> None:
        results[k] = sign_many(signer, batches[k], timestamp=NOW)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(2):
        assert results[k] == [signer.sign(m, timestamp=NOW) for m in batches[k]]
    pool_of(signer).close()


def test_closing_the_signer_ends_its_child(rsa_pem: bytes) -> None:
    signer = DKIMSigner(DOMAIN, SELECTOR, rsa_pem)
    child = start_child(signer)
    del signer  # its finalizer closes the pipes; the child exits at the end of its input
    deadline = time.monotonic() + 5
    while child.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert child.proc.returncode == 0


async def test_sign_batch_uses_any_sign_function_in_a_thread() -> None:
    calls: list[int] = []

    def sign(data: bytes) -> bytes:
        calls.append(threading.get_ident())
        if not data:
            raise InvalidMessage("empty")
        return b"X: 1\r\n" + data

    out = await sign_batch(sign, [b"a", b"", b"b"])
    assert out[0] == b"X: 1\r\na" and out[2] == b"X: 1\r\nb"
    assert isinstance(out[1], InvalidMessage)
    assert threading.get_ident() not in calls


async def test_lu5_worker_delivers_every_message_signed_across_a_child_crash(
    env: dict[str, str],
    smtp: RecordingSMTPServer,
    tmp_path: Path,
    rsa_pem: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LU-5 end to end: the worker's batches are signed by the signing process and reach
    the SMTP server verifying; a crash of that process loses no message and no signature."""
    (tmp_path / "dkim.pem").write_bytes(rsa_pem)
    env.update(
        GATEWAY_SMTP_URL=smtp.url,
        GATEWAY_DKIM_DOMAIN=DOMAIN,
        GATEWAY_DKIM_SELECTOR=SELECTOR,
        GATEWAY_DKIM_KEY_FILE=str(tmp_path / "dkim.pem"),
    )
    rounds = 3

    def requests(k: int) -> list[SendRequest]:
        return [
            SendRequest(f"person{i}@example.vn", f"Đơn hàng #{i}", text=f"Cảm ơn bạn {i}.")
            for i in range(k * BATCH, (k + 1) * BATCH)
        ]

    async with Gateway.from_env(env) as gw:
        signer = getattr(gw.dkim_signer(), "__self__", None)
        assert isinstance(signer, DKIMSigner)
        # 1: the first batch starts the child and is signed in the gateway meanwhile.
        await gw.send_many(requests(0))
        assert (await gw.deliver(until_idle=True)).sent == BATCH
        child = child_of(signer)
        assert child is not None
        # 2: signed by the child alone (a signature made here would fail the message).
        with monkeypatch.context() as patch:
            only_in_the_child(patch)
            await gw.send_many(requests(1))
            assert (await gw.deliver(until_idle=True)).sent == BATCH
        # 3: the child is killed; the next batch meets the crash and is signed here.
        os.kill(child.proc.pid, signal.SIGKILL)
        child.proc.wait()
        await gw.send_many(requests(2))
        assert (await gw.deliver(until_idle=True)).sent == BATCH
        assert pool_of(signer).failures == 1
        pool_of(signer).close()
    received = smtp.messages
    assert sorted(r.rcpt_tos[0] for r in received) == sorted(
        f"person{i}@example.vn" for i in range(rounds * BATCH)
    )
    dns = lookup(signer)
    assert all(r.data.startswith(b"DKIM-Signature: ") for r in received)
    assert all(dkim.verify(r.data, dnsfunc=dns) for r in received)


@pytest.mark.parametrize(
    "value",
    [
        b" plain value",
        b" folded\r\n over\r\n\tthree lines",
        b"  leading and trailing  \t",
        b" tab\there and  two spaces",
        b" bare\nLF and bare\rCR and \r\r\n mixed",
        b"\r\n starts folded",
        b" ends with CRLF\r\n",
        b"",
        b" \t \r\n \t ",
        b" =?utf-8?b?VGluIHRow6FuZyAxMg==?=\r\n =?utf-8?b?MCUgY2hvIGtow6FjaA==?=",
        b" \x0bvertical\x0ctab and form feed\x0c",
    ],
)
def test_relaxed_header_canonicalization_is_dkimpys(value: bytes) -> None:
    """The regex-free canonicalization of a header field gives dkimpy's bytes exactly."""
    from dkim.canonicalization import Relaxed

    for name in (b"Subject", b"List-Unsubscribe ", b"FROM"):
        assert [gdkim._relaxed_header(name, value)] == Relaxed.canonicalize_headers([(name, value)])


def test_headers_with_tabs_folds_and_double_spaces_sign_as_dkimpy_does(
    rsa_pem: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Byte-identity with dkimpy's own signer where the header canonicalization has work
    to do (the fast path of clean values is covered by tests/test_dkim.py)."""
    import types

    data = message(7).replace(
        b"Subject: ", b"Subject:  \tTin  th\xc3\xa1ng\t 12\r\n  \t(ti\xe1\xba\xbfp)  ", 1
    )
    data = data.replace(b"To: ", b"To:\t ", 1)
    signer = DKIMSigner(DOMAIN, SELECTOR, rsa_pem)
    ours = signer.sign(data, timestamp=NOW)
    monkeypatch.setattr(dkim, "time", types.SimpleNamespace(time=lambda: NOW))
    h = ours.split(b"h=", 1)[1].split(b";", 1)[0]
    include = [x.strip() for x in h.replace(b"\r\n", b"").split(b":")]
    theirs = dkim.sign(
        data,
        SELECTOR.encode(),
        DOMAIN.encode(),
        rsa_pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=include,
    )
    assert ours == theirs + data
    assert dkim.verify(ours, dnsfunc=lookup(signer)) is True


def test_a_hung_child_is_ended_and_its_batch_signed_here(
    rsa_pem: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool_mod, "CHILD_TIMEOUT", 0.3)
    signer = DKIMSigner(DOMAIN, SELECTOR, rsa_pem)
    child = start_child(signer)
    os.kill(child.proc.pid, signal.SIGSTOP)  # alive, but never answers
    batch = [message(i) for i in range(BATCH)]
    started = time.monotonic()
    assert sign_many(signer, batch, timestamp=NOW) == [signer.sign(m, timestamp=NOW) for m in batch]
    assert time.monotonic() - started < 5
    assert child.proc.wait(timeout=5) == -signal.SIGKILL
    assert child_of(signer) is None and pool_of(signer).failures == 1
