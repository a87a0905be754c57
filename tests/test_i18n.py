"""The recipient pages' words live in gettext catalogs (templates/locale/LANG/LC_MESSAGES/
gateway.po) that a translator edits, and every word the pages show is in them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jinja2
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po

from gateway import i18n
from gateway.web.i18n import install_gettext

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "templates" / "locale"
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def template_msgids() -> set[str]:
    """What `_()` and `{% trans %}` ask for in the page templates (Babel's jinja extractor)."""
    found = set()
    for path in sorted((ROOT / "templates" / "web").glob("*.html")):
        for _line, msgid, _comments, _context in extract_from_file("jinja2", str(path)):
            found.add(msgid)
    return found


def code_msgids() -> set[str]:
    """The literal msgids of gettext(lang, "…"), N_("…") and page(…, lang, "title", …) in the
    web code (read from the syntax tree, so an f-string or a wrapped call is not missed)."""
    found = set()
    for path in sorted((ROOT / "gateway" / "web").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            index = {"gettext": 1, "N_": 0, "page": 3}.get(name or "")
            if index is None or len(node.args) <= index:
                continue
            arg = node.args[index]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
    return found


def catalog(lang: str):
    with (LOCALE / lang / "LC_MESSAGES" / "gateway.po").open("rb") as po:
        return read_po(po, locale=lang)


def test_every_word_of_the_pages_has_a_vietnamese_translation_in_the_catalog():
    used = template_msgids() | code_msgids()
    assert len(used) > 80  # the extraction itself works
    vi = catalog("vi")
    missing = sorted(m for m in used if m not in vi or not vi[m].string or vi[m].fuzzy)
    assert missing == []
    # English is the source language: its catalog lists the same messages, to edit the wording.
    assert {m.id for m in catalog("en") if m.id} == {m.id for m in vi if m.id}


def test_catalogs_hold_no_message_the_pages_no_longer_use():
    used = template_msgids() | code_msgids()
    assert sorted(m.id for m in catalog("vi") if m.id and m.id not in used) == []


def test_a_translation_keeps_every_placeholder_of_its_msgid():
    for lang in i18n.LANGUAGES:
        for message in catalog(lang):
            if message.id and message.string:
                wanted = sorted(PLACEHOLDER.findall(message.id))
                assert sorted(PLACEHOLDER.findall(message.string)) == wanted, message.id


def test_gettext_answers_in_the_language_asked_and_fills_placeholders():
    assert i18n.gettext("vi", "Sign up") == "Đăng ký"
    assert i18n.gettext("en", "Sign up") == "Sign up"
    assert (
        i18n.gettext("vi", "Current privacy policy version: %(version)s", version="2025.07")
        == "Phiên bản chính sách bảo mật hiện hành: 2025.07"
    )
    assert i18n.translations("vi") is i18n.translations("vi")  # read and compiled once


def test_templates_translate_with_the_page_language_and_escape_what_they_fill_in():
    env = jinja2.Environment(autoescape=True)
    install_gettext(env)
    page = env.from_string(
        "{{ _('Sign up') }} {% trans %}Choose which emails you want to receive from"
        " {{ sender }}.{% endtrans %}"
    )
    assert page.render(lang="vi", sender="<b>An</b>") == (
        "Đăng ký Chọn những loại thư bạn muốn nhận từ &lt;b&gt;An&lt;/b&gt;."
    )
    assert page.render(lang="en", sender="An") == (
        "Sign up Choose which emails you want to receive from An."
    )
