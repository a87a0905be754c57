"""DKIM signing: verification with dkimpy (no real DNS), LU-5 coverage, tamper detection,
byte-exactness, and byte-identity with dkimpy's own signer for the same timestamp."""

from __future__ import annotations

import base64
import hashlib
import re
import types
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from gateway import mime
from gateway.dkim import DKIMSigner
from gateway.errors import ConfigError, InvalidMessage

DOMAIN = "first.vn"
SELECTOR = "s2025"
NOW = 1_746_000_000
_PEM = serialization.Encoding.PEM
_NONE = serialization.NoEncryption()

# A throwaway 512-bit key (cryptography refuses to generate one), to test the size check.
RSA_512_PEM = b"""-----BEGIN RSA PRIVATE KEY-----
MIIBOwIBAAJBANGehgEvLKtFOW1Klyfc6cXjpOJLVj8whY+EVb1/dQf7Qs5MpZNW
6DXCeoT9048n4XJ9vFGMSD0SBXs0YiTmQlECAwEAAQJBAMiIRtpLLwiKKO4NNZ3F
ET9nEA4M1G2PFba+eufWTzdZw1yWQvZUe/p41k17qgKYVjbQp9zijwg+7q4EeMF9
vyECIQD7GaCaSu6oDRT2MbnMeBoXnZnuNt/DS/3wSxuQ3HsrmwIhANW1rZTJPhHo
ojYhebMEGScYYavABF+oqs5ZRn0taPaDAiBYrKwy0NOHNVd5ugXLV36faGC751UO
Ov/qpBuQBMzakQIgMtCLIIilUJ7PCy30gQNlc61RdAQpRhGV45DIuPT2Mz8CIQDY
sgkQouVetF3E48FXzgwDjy3hUWLFtuCPAuQAe45u8w==
-----END RSA PRIVATE KEY-----
"""


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def pkcs1(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(_PEM, serialization.PrivateFormat.TraditionalOpenSSL, _NONE)


def pkcs8(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, _NONE)


def rsa_txt(key: rsa.RSAPrivateKey) -> bytes:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def ed_txt(key: ed25519.Ed25519PrivateKey) -> bytes:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)


def dns(txt: bytes) -> Callable[..., bytes | None]:
    """A dnsfunc for dkim.verify: the record for our selector, nothing for anything else."""
    expected = f"{SELECTOR}._domainkey.{DOMAIN}.".encode()

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return txt if name == expected else None

    return lookup


def marketing_message() -> bytes:
    """The shape gateway/render.py produces for marketing mail, written out by hand."""
    return (
        "From: =?utf-8?b?Q+G7rWEgaMOgbmcgQW4=?= <news@first.vn>\r\n"
        "To: an@example.vn\r\n"
        "Subject: =?utf-8?b?W1FDXSBLaHV54bq/biBtw6NpIHRow6FuZyA1OiBnaeG6o20gZ2nDoSAz?=\r\n"
        " =?utf-8?b?MCUgY2hvIGtow6FjaCBow6BuZyB0aMOibiB0aGnhur90?=\r\n"
        "Date: Mon, 05 May 2025 10:00:00 GMT\r\n"
        "Message-ID: <3f2a9c1e5b7d4e0f8a6b2c1d9e8f7a6b@first.vn>\r\n"
        "List-Unsubscribe: <https://mail.first.vn/unsubscribe/eyJjIjoxLCJ0IjoibmV3cyJ9.Zx1.abc>,\r\n"
        " <mailto:unsubscribe@first.vn?subject=unsubscribe%20eyJjIjoxLCJ0IjoibmV3cyJ9.Zx1.abc>\r\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        "List-Id: =?utf-8?b?VGluIHThu6lj?= <news.first.vn>\r\n"
        "X-Gateway-Campaign: 17\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="=_0123456789abcdef01234567"\r\n'
        "\r\n"
        "--=_0123456789abcdef01234567\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"
        "Xin ch=C3=A0o An,\r\n"
        "\r\n"
        "Tu=E1=BA=A7n n=C3=A0y gi=E1=BA=A3m gi=C3=A1 30% cho kh=C3=A1ch h=C3=A0ng th=\r\n"
        "=C3=A2n thi=E1=BA=BFt.\r\n"
        "\r\n"
        "H=E1=BB=A7y =C4=91=C4=83ng k=C3=BD: https://mail.first.vn/unsubscribe/eyJj=\r\n"
        "IjoxLCJ0IjoibmV3cyJ9.Zx1.abc\r\n"
        "\r\n"
        "--=_0123456789abcdef01234567\r\n"
        'Content-Type: text/html; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"
        '<!doctype html><html lang=3D"vi"><body><p>Xin ch=C3=A0o An,</p>\r\n'
        "<p>Tu=E1=BA=A7n n=C3=A0y gi=E1=BA=A3m gi=C3=A1 30%.</p>\r\n"
        '<p><a href=3D"https://mail.first.vn/unsubscribe/eyJjIjoxLCJ0IjoibmV3cyJ9.Zx1.a=\r\n'
        'bc">H=E1=BB=A7y =C4=91=C4=83ng k=C3=BD</a></p></body></html>\r\n'
        "--=_0123456789abcdef01234567--\r\n"
    ).encode("ascii")


def transactional_message() -> bytes:
    """A plain-text message from the project's own MIME builder, no List-* headers."""
    headers = [
        ("From", mime.format_address("Cửa hàng An", "orders@first.vn")),
        ("To", "an@example.vn"),
        ("Subject", mime.encode_text("Đơn hàng #1042 đã được giao")),
        ("Date", "Mon, 05 May 2025 10:00:00 GMT"),
        ("Message-ID", "<0a1b2c3d@first.vn>"),
        ("Reply-To", "support@first.vn"),
    ]
    return mime.build(headers, "Cảm ơn bạn đã mua hàng.\n" * 20, None)


def h_tag(signed: bytes) -> list[str]:
    sig = dict(
        dkim.util.parse_tag_value(dkim.rfc822_parse(signed)[0][0][1])  # first header
    )
    return [name.strip().decode() for name in re.split(rb"\s*:\s*", sig[b"h"])]


def header_of(signed: bytes, original: bytes) -> bytes:
    assert signed.endswith(original)
    return signed[: len(signed) - len(original)]


# ---------------------------------------------------------------- verification


@pytest.mark.parametrize("message", [marketing_message, transactional_message])
def test_rsa_2048_signature_verifies(
    rsa_key: rsa.RSAPrivateKey, message: Callable[[], bytes]
) -> None:
    signer = DKIMSigner(DOMAIN, SELECTOR, pkcs1(rsa_key))
    assert signer.algorithm == "rsa-sha256"
    signed = signer.sign(message())
    assert b"a=rsa-sha256; c=relaxed/relaxed; d=first.vn;" in signed
    assert dkim.verify(signed, dnsfunc=dns(rsa_txt(rsa_key))) is True


@pytest.mark.parametrize("message", [marketing_message, transactional_message])
def test_ed25519_signature_verifies(
    ed_key: ed25519.Ed25519PrivateKey, message: Callable[[], bytes]
) -> None:
    pytest.importorskip("nacl", reason="dkimpy verifies ed25519-sha256 with PyNaCl")
    signer = DKIMSigner(DOMAIN, SELECTOR, pkcs8(ed_key))
    assert signer.algorithm == "ed25519-sha256"
    signed = signer.sign(message())
    assert b"a=ed25519-sha256; c=relaxed/relaxed;" in signed
    assert dkim.verify(signed, dnsfunc=dns(ed_txt(ed_key))) is True


def test_ed25519_signature_checks_out_with_cryptography(ed_key: ed25519.Ed25519PrivateKey) -> None:
    """Independent of PyNaCl: recompute RFC 8463's signed digest with dkimpy's own
    verifier-side helpers and check the b= value with cryptography."""
    signed = DKIMSigner(DOMAIN, SELECTOR, pkcs8(ed_key)).sign(marketing_message())
    d = dkim.DKIM(signed)
    sig, include, sigheaders = d.verify_headerprep()
    policy = dkim.CanonicalizationPolicy.from_c_value(sig[b"c"])
    hasher = hashlib.sha256()
    dkim.hash_headers(
        hasher, policy, policy.canonicalize_headers(d.headers), include, sigheaders[0], sig
    )
    signature = base64.b64decode(re.sub(rb"\s+", b"", sig[b"b"]))
    ed_key.public_key().verify(signature, hasher.digest())  # raises InvalidSignature if wrong


def test_dns_txt_is_the_record_to_publish(
    rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    rsa_signer = DKIMSigner(DOMAIN, SELECTOR, pkcs8(rsa_key))
    assert rsa_signer.dns_txt().encode() == rsa_txt(rsa_key)
    assert rsa_signer.dns_name == "s2025._domainkey.first.vn"
    assert DKIMSigner(DOMAIN, SELECTOR, pkcs8(ed_key)).dns_txt().encode() == ed_txt(ed_key)


# ---------------------------------------------------------------- h= and LU-5


def test_lu5_h_covers_list_unsubscribe_and_post_and_oversigns_them(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    """LU-5: h= covers list-unsubscribe and list-unsubscribe-post; with From they are
    named once more (oversigned) so another copy cannot be added after signing."""
    signed = DKIMSigner(DOMAIN, SELECTOR, pkcs1(rsa_key)).sign(marketing_message())
    assert h_tag(signed) == [
        "from", "to", "subject", "date", "message-id",
        "list-unsubscribe", "list-unsubscribe-post", "list-id",
        "mime-version", "content-type",
        "from", "list-unsubscribe", "list-unsubscribe-post",
    ]  # fmt: skip


def test_h_lists_only_headers_present(rsa_key: rsa.RSAPrivateKey) -> None:
    signed = DKIMSigner(DOMAIN, SELECTOR, pkcs1(rsa_key)).sign(transactional_message())
    # Reply-To is present but not in the list; no List-* header, so none is named.
    assert h_tag(signed) == [
        "from", "to", "subject", "date", "message-id", "mime-version", "content-type", "from",
    ]  # fmt: skip


def test_message_without_from_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    message = marketing_message().replace(b"From: ", b"Sender: ", 1)
    with pytest.raises(InvalidMessage, match="without a From header"):
        DKIMSigner(DOMAIN, SELECTOR, pkcs1(rsa_key)).sign(message)


# ---------------------------------------------------------------- tampering


def _flip(signed: bytes, marker: bytes) -> bytes:
    """Change one byte, the one right after `marker` (the first occurrence after the
    DKIM-Signature header)."""
    start = signed.index(b"\r\nFrom:")
    at = signed.index(marker, start) + len(marker)
    changed = b"X" if signed[at : at + 1] != b"X" else b"Y"
    return signed[:at] + changed + signed[at + 1 :]


def _above_from(signed: bytes, header: bytes) -> bytes:
    at = signed.index(b"\r\nFrom:") + 2
    return signed[:at] + header + b"\r\n" + signed[at:]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda s: _flip(s, b"List-Unsubscribe: <https://"), id="list-unsubscribe-url"),
        pytest.param(
            lambda s: _flip(s, b" <mailto:unsubscribe@"), id="list-unsubscribe-folded-line"
        ),
        pytest.param(
            lambda s: _flip(s, b"List-Unsubscribe-Post: List-Unsubscribe="),
            id="list-unsubscribe-post",
        ),
        pytest.param(lambda s: _flip(s, b"Xin ch"), id="body-text-part"),
        pytest.param(lambda s: _flip(s, b"<p>Tu"), id="body-html-part"),
        pytest.param(lambda s: _flip(s, b"Subject: =?utf-8?b?"), id="subject"),
        # Added above the signed instances: verifiers pick instances bottom-up, so only
        # the oversigned (second) h= entry catches these.
        pytest.param(
            lambda s: _above_from(s, b"List-Unsubscribe: <https://evil.example/u>"),
            id="list-unsubscribe-added",
        ),
        pytest.param(
            lambda s: _above_from(s, b"List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
            id="list-unsubscribe-post-added",
        ),
        pytest.param(lambda s: _above_from(s, b"From: boss@first.vn"), id="second-from-added"),
    ],
)
@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_any_change_after_signing_fails_verification(
    rsa_key: rsa.RSAPrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
    algorithm: str,
    tamper: Callable[[bytes], bytes],
) -> None:
    if algorithm == "ed25519":
        pytest.importorskip("nacl", reason="dkimpy verifies ed25519-sha256 with PyNaCl")
        signer, txt = DKIMSigner(DOMAIN, SELECTOR, pkcs8(ed_key)), ed_txt(ed_key)
    else:
        signer, txt = DKIMSigner(DOMAIN, SELECTOR, pkcs1(rsa_key)), rsa_txt(rsa_key)
    signed = signer.sign(marketing_message())
    assert dkim.verify(signed, dnsfunc=dns(txt)) is True
    changed = tamper(signed)
    assert changed != signed and len(changed) >= len(signed)
    assert dkim.verify(changed, dnsfunc=dns(txt)) is False


# ---------------------------------------------------------------- exact bytes


@pytest.mark.parametrize("message", [marketing_message, transactional_message])
def test_output_is_input_with_one_header_prepended(
    rsa_key: rsa.RSAPrivateKey, message: Callable[[], bytes]
) -> None:
    data = message()
    signed = DKIMSigner(DOMAIN, SELECTOR, pkcs1(rsa_key)).sign(data)
    header = header_of(signed, data)
    assert header.startswith(b"DKIM-Signature: v=1; ")
    assert header.endswith(b"\r\n")
    lines = header[:-2].split(b"\r\n")
    assert b"\n" not in header.replace(b"\r\n", b"") and b"\r" not in header.replace(b"\r\n", b"")
    assert all(line[:1] in (b" ", b"\t") for line in lines[1:])  # one header, folded
    assert all(0 < len(line) <= 78 for line in lines)
    assert header.isascii()


def test_signing_is_deterministic_and_tracks_timestamp(rsa_key: rsa.RSAPrivateKey) -> None:
    signer = DKIMSigner(DOMAIN, SELECTOR, pkcs1(rsa_key))
    data = marketing_message()
    assert signer.sign(data, timestamp=NOW) == signer.sign(data, timestamp=NOW)
    later = signer.sign(data, timestamp=NOW + 1)
    assert f"t={NOW + 1};".encode() in later.replace(b"\r\n ", b" ")
    assert later != signer.sign(data, timestamp=NOW)


@pytest.mark.parametrize("message", [marketing_message, transactional_message])
def test_rsa_header_is_byte_identical_to_dkimpy(
    rsa_key: rsa.RSAPrivateKey, message: Callable[[], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seam is faithful: with the same t= and h=, dkimpy's own pure-Python signer
    produces the very same header (RSA PKCS#1 v1.5 is deterministic)."""
    data = message()
    ours = header_of(DKIMSigner(DOMAIN, SELECTOR, pkcs8(rsa_key)).sign(data, timestamp=NOW), data)
    monkeypatch.setattr(dkim, "time", types.SimpleNamespace(time=lambda: NOW + 0.75))
    theirs = dkim.sign(
        data,
        SELECTOR.encode(),
        DOMAIN.encode(),
        pkcs1(rsa_key),  # dkimpy reads PKCS#1 only
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[name.encode() for name in h_tag(ours + data)],
    )
    assert ours == theirs


@pytest.mark.parametrize("message", [marketing_message, transactional_message])
def test_ed25519_header_is_byte_identical_to_dkimpy(
    ed_key: ed25519.Ed25519PrivateKey, message: Callable[[], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same for ed25519-sha256 (Ed25519 is deterministic too); dkimpy signs it with PyNaCl."""
    pytest.importorskip("nacl", reason="dkimpy signs ed25519-sha256 with PyNaCl")
    data = message()
    ours = header_of(DKIMSigner(DOMAIN, SELECTOR, pkcs8(ed_key)).sign(data, timestamp=NOW), data)
    raw = ed_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, _NONE)
    monkeypatch.setattr(dkim, "time", types.SimpleNamespace(time=lambda: NOW))
    theirs = dkim.sign(
        data,
        SELECTOR.encode(),
        DOMAIN.encode(),
        base64.b64encode(raw),
        signature_algorithm=b"ed25519-sha256",
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[name.encode() for name in h_tag(ours + data)],
    )
    assert ours == theirs


def test_rsa_signature_is_pkcs1v15_over_sha256(rsa_key: rsa.RSAPrivateKey) -> None:
    """b= checks out with cryptography's verifier over dkimpy's canonical header input."""
    signed = DKIMSigner(DOMAIN, SELECTOR, pkcs1(rsa_key)).sign(marketing_message())
    d = dkim.DKIM(signed)
    sig, include, sigheaders = d.verify_headerprep()
    policy = dkim.CanonicalizationPolicy.from_c_value(sig[b"c"])
    collected: list[bytes] = []
    sink = types.SimpleNamespace(update=collected.append)
    dkim.hash_headers(
        sink, policy, policy.canonicalize_headers(d.headers), include, sigheaders[0], sig
    )
    signature = base64.b64decode(re.sub(rb"\s+", b"", sig[b"b"]))
    rsa_key.public_key().verify(signature, b"".join(collected), padding.PKCS1v15(), hashes.SHA256())


# ---------------------------------------------------------------- keys and configuration


@pytest.mark.parametrize("form", ["pkcs1", "pkcs8"])
def test_from_file_reads_rsa_in_pkcs1_and_pkcs8(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, form: str
) -> None:
    path = tmp_path / "dkim.pem"
    path.write_bytes(pkcs1(rsa_key) if form == "pkcs1" else pkcs8(rsa_key))
    signer = DKIMSigner.from_file(DOMAIN, SELECTOR, path)
    assert (signer.domain, signer.selector, signer.algorithm) == (DOMAIN, SELECTOR, "rsa-sha256")
    assert dkim.verify(signer.sign(marketing_message()), dnsfunc=dns(rsa_txt(rsa_key)))


def test_from_file_reads_ed25519(tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey) -> None:
    path = tmp_path / "dkim.pem"
    path.write_bytes(pkcs8(ed_key))
    assert DKIMSigner.from_file(DOMAIN, SELECTOR, str(path)).algorithm == "ed25519-sha256"


def _encrypted(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        _PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )


def _public(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(_PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(None, "cannot be read (No such file or directory)", id="missing"),
        pytest.param(b"", "is empty", id="empty"),
        pytest.param(b"\x00\x01garbage\xff" * 10, "is not PEM", id="garbage"),
        pytest.param(
            b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
            "could not be read as a PEM private key",
            id="corrupt-pem",
        ),
        pytest.param(
            lambda rsa_key: pkcs8(ec.generate_private_key(ec.SECP256R1())),
            "holds an EC (secp256r1) key, DKIM signs with RSA (2048 bits) or Ed25519 keys only",
            id="ec-p256",
        ),
        pytest.param(RSA_512_PEM, "RSA key of 512 bits, DKIM needs at least 1024", id="rsa-512"),
        pytest.param(_public, "holds a public key", id="public-key"),
        pytest.param(_encrypted, "encrypted private key", id="encrypted"),
    ],
)
def test_from_file_errors_are_one_line_config_errors(
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    content: bytes | Callable[[rsa.RSAPrivateKey], bytes] | None,
    problem: str,
) -> None:
    path = tmp_path / "keys" / "dkim.pem"
    if content is not None:
        path.parent.mkdir()
        path.write_bytes(content(rsa_key) if callable(content) else content)
    with pytest.raises(ConfigError) as raised:
        DKIMSigner.from_file(DOMAIN, SELECTOR, path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"DKIM key file {path} ")
    assert problem in message


def test_from_file_on_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^DKIM key file .* cannot be read \(Is a directory\)$"):
        DKIMSigner.from_file(DOMAIN, SELECTOR, tmp_path)


def test_constructor_errors_name_the_key(ed_key: ed25519.Ed25519PrivateKey) -> None:
    with pytest.raises(ConfigError, match="^DKIM private key is not PEM"):
        DKIMSigner(DOMAIN, SELECTOR, b"nope")
    with pytest.raises(ConfigError, match="DKIM domain 'first vn' is not a valid DNS name"):
        DKIMSigner("first vn", SELECTOR, pkcs8(ed_key))
    with pytest.raises(ConfigError, match="DKIM selector '' is not a valid DNS name"):
        DKIMSigner(DOMAIN, "", pkcs8(ed_key))


def test_idn_domain_is_signed_in_a_label_form(ed_key: ed25519.Ed25519PrivateKey) -> None:
    signer = DKIMSigner("cửahàng.vn", SELECTOR, pkcs8(ed_key))
    assert signer.domain == "xn--cahng-tqa2694c.vn"
    assert f"d={signer.domain};".encode() in signer.sign(marketing_message())
