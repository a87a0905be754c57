"""The language of a page, and gettext for the page templates (`_()`, `{% trans %}`)."""

from __future__ import annotations

import jinja2

from ..i18n import LANGUAGES, translations


def pick_language(*candidates: str | None, accept_language: str = "") -> str:
    """The first candidate that is a supported language, else the browser's, else Vietnamese."""
    for lang in candidates:
        if lang in LANGUAGES:
            return lang  # type: ignore[return-value]
    for part in accept_language.split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return "vi"


# One environment serves both languages: the catalog is picked from the page's `lang`
# variable at render time, so a template is compiled once, not once per language.
@jinja2.pass_context
def _gettext(context: jinja2.runtime.Context, message: str) -> str:
    return translations(context["lang"]).gettext(message)


@jinja2.pass_context
def _ngettext(context: jinja2.runtime.Context, singular: str, plural: str, n: int) -> str:
    return translations(context["lang"]).ngettext(singular, plural, n)


def install_gettext(env: jinja2.Environment) -> None:
    """Give `env`'s templates `_()`, `gettext()` and `{% trans %}` in the page's language."""
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(  # type: ignore[attr-defined]
        _gettext, _ngettext, newstyle=True
    )
