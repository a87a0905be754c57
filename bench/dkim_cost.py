"""Cost of one DKIM signature: dkimpy alone against gateway.dkim (OpenSSL private-key step).

    .venv/bin/python bench/dkim_cost.py            # n=2000 (dkimpy alone: 100)
    .venv/bin/python bench/dkim_cost.py --n 500
    .venv/bin/python bench/dkim_cost.py --size 5100   # a campaign message's size

Importable (bench/ on sys.path): `from dkim_cost import measure`; `measure(n)` returns
microseconds per signature, keys generated fresh, on a ~2 KB marketing message (text and
HTML parts, List-Unsubscribe folded over two lines). Keys and message are made outside the
timed loops; the timed loops include everything `sign` does per message (parse,
canonicalize, hash, sign, fold).
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from gateway.dkim import DKIMSigner

DOMAIN, SELECTOR = "first.vn", "s2025"


def sample_message(size: int = 2048) -> bytes:
    """A CRLF marketing message of about `size` bytes, shaped like the renderer's output."""
    head = (
        b"From: =?utf-8?b?Q+G7rWEgaMOgbmcgQW4=?= <news@first.vn>\r\n"
        b"To: an@example.vn\r\n"
        b"Subject: =?utf-8?b?W1FDXSBLaHV54bq/biBtw6NpIHRow6FuZyA1?=\r\n"
        b"Date: Mon, 05 May 2025 10:00:00 GMT\r\n"
        b"Message-ID: <3f2a9c1e5b7d4e0f8a6b2c1d9e8f7a6b@first.vn>\r\n"
        b"List-Unsubscribe: <https://mail.first.vn/unsubscribe/eyJjIjoxLCJ0IjoibmV3cyJ9.Zx1>,\r\n"
        b" <mailto:unsubscribe@first.vn?subject=unsubscribe%20eyJjIjoxLCJ0IjoibmV3cyJ9.Zx1>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        b"List-Id: =?utf-8?b?VGluIHThu6lj?= <news.first.vn>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="=_0123456789abcdef01234567"\r\n'
        b"\r\n"
        b"--=_0123456789abcdef01234567\r\n"
        b'Content-Type: text/plain; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    line = b"Tu=E1=BA=A7n n=C3=A0y gi=E1=BA=A3m gi=C3=A1 30% cho kh=C3=A1ch h=C3=A0ng.\r\n"
    html_head = (
        b"\r\n--=_0123456789abcdef01234567\r\n"
        b'Content-Type: text/html; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    tail = b"--=_0123456789abcdef01234567--\r\n"
    lines = max(1, (size - len(head) - len(html_head) - len(tail)) // len(line))
    text = line * (lines // 2)
    html = b"<p>" + line * (lines - lines // 2) + b"</p>\r\n"
    return head + text + html_head + html + tail


def _per_call_us(call: Callable[[], object], n: int) -> float:
    call()  # warm up
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n * 1e6


def measure(n: int = 2000, n_dkimpy: int = 100, size: int = 2048) -> dict[str, float]:
    """Microseconds per signature of the sample message of about `size` bytes:
    `dkimpy_rsa2048_us` (dkim.sign, pure-Python RSA; n_dkimpy iterations),
    `gateway_rsa2048_us`, `gateway_ed25519_us` (DKIMSigner.sign; n iterations),
    plus `message_bytes` and `speedup_rsa` (dkimpy / ours)."""
    message = sample_message(size)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    ed_pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ours_rsa = DKIMSigner(DOMAIN, SELECTOR, rsa_pem)
    ours_ed = DKIMSigner(DOMAIN, SELECTOR, ed_pem)
    signed = ours_rsa.sign(message)
    tags = dkim.util.parse_tag_value(dkim.rfc822_parse(signed)[0][0][1])
    include = re.split(rb"\s*:\s*", tags[b"h"].strip())  # the same h= for dkimpy

    def dkimpy_rsa() -> bytes:
        header: bytes = dkim.sign(
            message,
            SELECTOR.encode(),
            DOMAIN.encode(),
            rsa_pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
        )
        return header + message

    figures = {
        "message_bytes": float(len(message)),
        "dkimpy_rsa2048_us": _per_call_us(dkimpy_rsa, n_dkimpy),
        "gateway_rsa2048_us": _per_call_us(lambda: ours_rsa.sign(message), n),
        "gateway_ed25519_us": _per_call_us(lambda: ours_ed.sign(message), n),
    }
    figures["speedup_rsa"] = figures["dkimpy_rsa2048_us"] / figures["gateway_rsa2048_us"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="iterations for gateway.dkim")
    parser.add_argument("--n-dkimpy", type=int, default=100, help="iterations for dkimpy")
    parser.add_argument(
        "--size", type=int, default=2048, help="bytes of the sample message (default 2048)"
    )
    args = parser.parse_args()
    f = measure(args.n, args.n_dkimpy, args.size)
    print(f"DKIM signature cost, {int(f['message_bytes'])}-byte message (us per signature)")
    print(f"  {'dkimpy alone, RSA-2048':<28}{f['dkimpy_rsa2048_us']:>10.0f}")
    print(f"  {'gateway.dkim, RSA-2048':<28}{f['gateway_rsa2048_us']:>10.0f}")
    print(f"  {'gateway.dkim, Ed25519':<28}{f['gateway_ed25519_us']:>10.0f}")
    print(f"  {'RSA speedup':<28}{f['speedup_rsa']:>9.1f}x")


if __name__ == "__main__":
    main()
