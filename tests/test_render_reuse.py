"""Work a campaign does once for every recipient gives the bytes it gave when done for each:
text parts built from a skeleton, footers and layout filled in, DKIM's shortcuts."""

from __future__ import annotations

import random

import dkim
import pytest
from dkim.canonicalization import CanonicalizationPolicy
from markupsafe import Markup, escape

from gateway import render
from gateway.config import Settings
from gateway.dkim import _relaxed_body, _split
from gateway.render import Renderer, html_to_text
from gateway.tokens import Signer

NAMES = [
    "Nguyễn Văn An",
    "Trần Thị Bình",
    "An",
    "Lê  Hà",
    " Lê Hà",
    "Phạm & Co",
    "amp; Bình",
    "amp Bình",
    "x<y",
    "Võ\tKhánh",
    "O'Neil Đức",
    "kh000001@example.vn",
    "#1 Bình",
    "Châu\u00a0Giang",
    "Nguye\u0302\u0303n Va\u0306n",
]
TEMPLATES = [
    "<h1>Xin chào {N},</h1><p>Giảm giá 50% tại <a href='https://first.vn/km'>first.vn</a>.</p>",
    "<p>{N}</p><ul><li>{N} <b>{E}</b></li></ul><p style='padding-left:2em'>x</p>",
    "<p>&amp;{N}</p>",
    "<p>&amp;</span>{N}</p>",
    "<table><tr><td>{N}</td><td>x</td></tr></table>",
    "<pre>{N}  x</pre>",
    "<p><a href='https://first.vn/{N}'>{N}</a></p>",
    "<p><a href='mailto:{E}'>{E}</a> {N}</p>",
    "<p><span style='display:none'>{N}</span>{N}</p>",
    "<!-- {N} --><p>{N}</p>",
    "<p>&#123{N}&lt;{N}&gt;</p>",
    "<q>{N}</q><blockquote>{N}<br>{N}</blockquote>",
    "<p>\ue0000\ue001 {N}</p>",  # the characters of a mark, in the document itself
]


@pytest.fixture
def renderer() -> Renderer:
    settings = Settings.from_env(
        {
            "GATEWAY_SECRET_KEYS": "test-key-4f8a2c6e0b9d1f3a7c5e9b3d7f1a5c0e",
            "GATEWAY_DATABASE_URL": "sqlite:///unused.db",
            "GATEWAY_BASE_URL": "https://mail.first.vn",
        }
    )
    return Renderer(settings, Signer(settings.secret_keys))


def test_text_part_from_skeleton_is_html_to_text_tp3(renderer: Renderer) -> None:
    """The text part of every recipient's HTML is what html_to_text gives for it, whether
    it came from another recipient's skeleton or not (TP-3: the text that is scanned and
    sent is this recipient's)."""
    for template in TEMPLATES:
        for i, name in enumerate(NAMES * 2):
            email = f"kh{i:06d}@example.vn"
            html = template.replace("{N}", str(escape(name))).replace("{E}", email)
            assert renderer._text_of(html, [name, email]) == html_to_text(html), (template, name)


def test_skeleton_is_used_for_a_greeting(renderer: Renderer, monkeypatch) -> None:
    calls = []
    real = render.html_to_text
    monkeypatch.setattr(render, "html_to_text", lambda html: calls.append(html) or real(html))
    for name in ("Nguyễn Văn An", "Trần Thị Bình", "Lê Văn Châu"):
        html = TEMPLATES[0].replace("{N}", name)
        assert renderer._text_of(html, [name]) == real(html)
    assert len(calls) == 1  # the skeleton's, once


def test_random_documents_text_unchanged(renderer: Renderer) -> None:
    rnd = random.Random(5)
    pieces = [
        "<p>",
        "</p>",
        "<b>",
        "</b>",
        "<br>",
        " ",
        "\n",
        "&amp;",
        "x",
        "{N}",
        "<li>",
        "</span>",
    ]
    for _ in range(300):
        template = "".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 12)))
        for name in rnd.sample(NAMES, 4):
            html = template.replace("{N}", str(escape(name)))
            assert renderer._text_of(html, [name]) == html_to_text(html), (template, name)


def test_footers_and_layout_filled_as_rendered(renderer: Renderer) -> None:
    links = {
        "unsubscribe_url": "https://mail.first.vn/unsubscribe/a.b-c_d",
        "preferences_url": "https://mail.first.vn/preferences/<&'\">",
    }
    for lang in ("vi", "en"):
        ctx = renderer._footer_ctx(links)
        text = renderer.text_env.get_template(f"{lang}/footer.txt").render(ctx)
        html = renderer.html_env.get_template(f"{lang}/footer.html").render(ctx)
        assert renderer.footer_text(lang, links) == text
        assert renderer.footer_html(lang, links) == html
        layout = renderer.html_env.get_template("layout.html")
        for footer in ("", Markup(html)):
            subject = "Ưu đãi <b>&'\" cho An"
            expected = layout.render(
                lang=lang, subject=subject, body=Markup("<p>x</p>"), footer=footer
            )
            assert renderer._layout("<p>x</p>", footer, lang, subject) == expected
    assert all(parts is not None for parts in renderer._skeletons.values())


def test_a_template_that_changes_a_value_is_rendered_each_time() -> None:
    parts = render._skeleton(lambda v: f"<a href='{v[0].upper()}'>", (True,))
    assert parts is None


def test_dkim_shortcuts_match_dkimpy() -> None:
    relaxed = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    rnd = random.Random(3)
    alphabet = [b"a", b" ", b"\t", b"\r\n", b"\n", b"\r", b"=20"]
    for _ in range(5000):
        body = b"".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 10)))
        assert _relaxed_body(body) == relaxed.canonicalize_body(body), body
        message = b"From: a\r\nTo: b\r\n c\r\n" + rnd.choice([b"\r\n", b"", b"X: y\r\n\r\n"]) + body
        try:
            expected = dkim.rfc822_parse(message)
        except dkim.MessageFormatError:
            with pytest.raises(dkim.MessageFormatError):
                _split(message)
            continue
        assert _split(message) == expected, message
