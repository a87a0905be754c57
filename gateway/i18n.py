"""The gateway's words in Vietnamese and English: gettext catalogs under templates/locale."""

from __future__ import annotations

import functools
import gettext as _gettext
from io import BytesIO

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from .resources import TEMPLATES

LANGUAGES = ("vi", "en")
DOMAIN = "gateway"
LOCALE_DIR = TEMPLATES / "locale"


@functools.cache
def translations(lang: str) -> _gettext.GNUTranslations:
    """The catalog of `lang`, compiled from its .po the first time it is asked for: the .po
    a translator edits is what the pages show, with no build step to forget."""
    if lang not in LANGUAGES:
        raise ValueError(f"no catalog for language {lang!r}: use one of {', '.join(LANGUAGES)}")
    path = LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as po:
        catalog = read_po(po, locale=lang, domain=DOMAIN)
    mo = BytesIO()
    write_mo(mo, catalog)  # fuzzy entries are left out: they fall back to the English msgid
    mo.seek(0)
    return _gettext.GNUTranslations(mo)


def gettext(lang: str, msgid: str, /, **variables: object) -> str:
    """`msgid` (English) in `lang`, its `%(name)s` placeholders filled from `variables`."""
    text = translations(lang).gettext(msgid)
    return text % variables if variables else text


def N_(msgid: str) -> str:
    """Marks a msgid for extraction where it is translated later (by name, in a table)."""
    return msgid
