"""The console's words: every `console-*.po` of a language merged into one catalog.

Each area of the console keeps its own catalog (console-core.po, console-dashboard.po, ...)
under templates/locale/LANG/LC_MESSAGES, apart from the recipient pages' gateway.po."""

from __future__ import annotations

import functools
import gettext as _gettext
from io import BytesIO
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from ...i18n import LANGUAGES, LOCALE_DIR


def catalog_files(lang: str) -> list[Path]:
    return sorted((LOCALE_DIR / lang / "LC_MESSAGES").glob("console-*.po"))


@functools.cache
def translations(lang: str) -> _gettext.GNUTranslations:
    """The console catalog of `lang`, compiled from its .po files the first time."""
    if lang not in LANGUAGES:
        raise ValueError(f"no catalog for language {lang!r}: use one of {', '.join(LANGUAGES)}")
    merged = Catalog(locale=lang, domain="console")
    for path in catalog_files(lang):
        with path.open("rb") as po:
            for message in read_po(po, locale=lang, domain="console"):
                if message.id:
                    merged[message.id] = message
    mo = BytesIO()
    write_mo(mo, merged)  # fuzzy entries are left out: they fall back to the English msgid
    mo.seek(0)
    return _gettext.GNUTranslations(mo)


def gettext(lang: str, msgid: str, /, **variables: object) -> str:
    """`msgid` (English) in the console's `lang`, its `%(name)s` placeholders filled."""
    text = translations(lang).gettext(msgid)
    return text % variables if variables else text


def ngettext(lang: str, singular: str, plural: str, n: int, /, **variables: object) -> str:
    text = translations(lang).ngettext(singular, plural, n)
    return text % ({"num": n} | variables)
