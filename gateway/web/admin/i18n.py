"""The console's words: every `console-*.po` of a language merged into one catalog.

Each area of the console keeps its own catalog (console-core.po, console-dashboard.po, ...)
under templates/locale/LANG/LC_MESSAGES, apart from the recipient pages' gateway.po."""

from __future__ import annotations

import functools
import gettext as _gettext
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po

from ...i18n import LOCALE_DIR, check_language, compiled


def catalog_files(lang: str) -> list[Path]:
    return sorted((LOCALE_DIR / lang / "LC_MESSAGES").glob("console-*.po"))


@functools.cache
def translations(lang: str) -> _gettext.GNUTranslations:
    """The console catalog of `lang`: its .po files merged, compiled the first time."""
    merged = Catalog(locale=check_language(lang), domain="console")
    for path in catalog_files(lang):
        with path.open("rb") as po:
            for message in read_po(po, locale=lang, domain="console"):
                if message.id:
                    merged[message.id] = message
    return compiled(merged)


def gettext(lang: str, msgid: str, /, **variables: object) -> str:
    """`msgid` (English) in the console's `lang`, its `%(name)s` placeholders filled."""
    text = translations(lang).gettext(msgid)
    return text % variables if variables else text


def ngettext(lang: str, singular: str, plural: str, n: int, /, **variables: object) -> str:
    text = translations(lang).ngettext(singular, plural, n)
    return text % ({"num": n} | variables)
