"""MF-1: hand-built messages parse back with the standard library to exactly what went in."""

from __future__ import annotations

import email
import email.policy
from email.header import decode_header, make_header

import pytest

from gateway import mime
from gateway.errors import HeaderInjection, InvalidMessage

SUBJECTS = [
    "Hello",
    "Xin chào",
    "Ưu đãi đặc biệt tháng 12 dành riêng cho khách hàng thân thiết của cửa hàng chúng tôi 🎉🎁",
    "A" * 200,
    "word " * 40,
    "=?utf-8?b?not really?= encoded",
    "tab\there",
    "emoji only 😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀",
]

BODIES = [
    "plain ascii\n",
    "Tiếng Việt có dấu: ă â đ ê ô ơ ư, Ấ Ầ Ẩ Ẫ Ậ\n",
    "x" * 3000 + "\n",  # longer than the 998 limit: must be wrapped by the encoding
    ".\n.leading dot\nFrom the start\n",
    "trailing spaces   \ntrailing tab\t\n",
    "mixed\r\nline\rends\n",
    "no final newline",
    "=3D looks encoded =\n",
    "😀 " * 500,
]


def roundtrip(headers, text, html):
    raw = mime.build(headers, text, html)
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF"
    assert b"\r" not in raw.replace(b"\r\n", b""), "bare CR"
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert raw.isascii()
    return email.message_from_bytes(raw, policy=email.policy.default)


def normal(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


@pytest.mark.parametrize("subject", SUBJECTS)
def test_mf1_subject_round_trips(subject):
    msg = roundtrip([("Subject", mime.encode_text(subject))], "x", None)
    assert msg["Subject"] == subject
    for line in mime.encode_text(subject).split("\r\n"):
        assert len(line) <= 78


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("with_html", [False, True])
def test_mf1_bodies_round_trip(body, with_html):
    html = f"<p>{body}</p>" if with_html else None
    msg = roundtrip([("Subject", "x")], body, html)
    assert normal(msg.get_body(("plain",)).get_content()).rstrip("\n") == normal(body).rstrip("\n")
    if with_html:
        assert msg.get_content_type() == "multipart/alternative"
        assert normal(msg.get_body(("html",)).get_content()).rstrip("\n") == normal(html).rstrip(
            "\n"
        )


@pytest.mark.parametrize(
    ("name", "address"),
    [
        ("Cửa hàng An", "news@first.vn"),
        ('Say "hi", friend', "a@first.vn"),
        ("Back\\slash", "a@first.vn"),
        ("Plain Name", "a@first.vn"),
        ("", "a@first.vn"),
        ("Công ty TNHH Thương mại và Dịch vụ Xuất nhập khẩu Sài Gòn Một Thành Viên", "a@first.vn"),
    ],
)
def test_mf1_addresses_round_trip(name, address):
    msg = roundtrip([("From", mime.format_address(name, address))], "x", None)
    parsed = msg["From"].addresses
    assert len(parsed) == 1
    assert parsed[0].addr_spec == address
    if name.isascii():
        assert parsed[0].display_name == name
    else:
        # The stdlib's address parser puts a space between adjacent encoded words, against
        # RFC 2047 section 6.2; its RFC 2047 decoder is the reference for the display name.
        phrase = mime.format_address(name, address).rsplit(" <", 1)[0]
        assert str(make_header(decode_header(phrase))) == name


def test_every_boundary_is_fresh():
    a = mime.build([], "x", "<p>x</p>")
    b = mime.build([], "x", "<p>x</p>")
    assert a != b


@pytest.mark.parametrize("value", ["a\r\nBcc: x@evil.com", "a\nb", "a\rb", "a\x00b"])
def test_mf2_line_breaks_in_header_values_are_refused(value):
    with pytest.raises(HeaderInjection):
        mime.check_header("X-Tag", value)


@pytest.mark.parametrize("name", ["X Tag", "X:Tag", "", "Tên"])
def test_invalid_header_names_are_refused(name):
    with pytest.raises(InvalidMessage):
        mime.check_header(name, "v")
