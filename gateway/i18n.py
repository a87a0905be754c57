"""The gateway's words in Vietnamese and English: gettext catalogs under templates/locale."""

from __future__ import annotations

import functools
import gettext as _gettext
from io import BytesIO

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from .resources import TEMPLATES

LANGUAGES = ("vi", "en")
DOMAIN = "gateway"
LOCALE_DIR = TEMPLATES / "locale"


def check_language(lang: str) -> str:
    if lang not in LANGUAGES:
        raise ValueError(f"no catalog for language {lang!r}: use one of {', '.join(LANGUAGES)}")
    return lang


def compiled(catalog: Catalog) -> _gettext.GNUTranslations:
    """A catalog as gettext reads it. Compiled when first asked for: the .po a translator
    edits is what the pages show, with no build step to forget."""
    mo = BytesIO()
    write_mo(mo, catalog)  # fuzzy entries are left out: they fall back to the English msgid
    mo.seek(0)
    return _gettext.GNUTranslations(mo)


@functools.cache
def translations(lang: str) -> _gettext.GNUTranslations:
    """The recipient pages' catalog of `lang` (gateway.po)."""
    path = LOCALE_DIR / check_language(lang) / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as po:
        return compiled(read_po(po, locale=lang, domain=DOMAIN))


def gettext(lang: str, msgid: str, /, **variables: object) -> str:
    """`msgid` (English) in `lang`, its `%(name)s` placeholders filled from `variables`."""
    text = translations(lang).gettext(msgid)
    return text % variables if variables else text


def N_(msgid: str) -> str:
    """Marks a msgid for extraction where it is translated later (by name, in a table)."""
    return msgid
