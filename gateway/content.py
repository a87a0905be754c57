"""Third-party content scan of rendered mail (pure: no I/O)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache

import tinycss2
from selectolax.lexbor import LexborHTMLParser, LexborNode

from .nesting import MAX_DEPTH, too_deep
from .urls import (
    SCRIPT_SCHEMES,
    Finding,
    check,
    is_first_party,
    is_ip,
    normalize_host,
    split_scheme,
)

__all__ = ["Finding", "is_first_party", "normalize_host", "scan"]

# Attributes holding one URL, on any element (VML v:fill/v:image/v:roundrect use src and href).
_URL_ATTRS = frozenset(
    "href src action formaction background poster cite longdesc xlink:href lowsrc dynsrc"
    " manifest codebase".split()
)
_SRCSET_ATTRS = frozenset({"srcset", "imagesrcset"})
_LIST_ATTRS = frozenset({"ping", "archive"})
# SVG presentation attributes that take a CSS url() (Chromium loads filter, clip-path, mask
# and marker documents; fill and stroke paint servers; cursor images).
_PRESENTATION_ATTRS = frozenset(
    "fill stroke filter clip-path mask marker marker-start marker-mid marker-end cursor".split()
)
# <param name=...> whose value is a URL for the plugins that read it.
_PARAM_URL_NAMES = frozenset(
    "movie src url href source filename data base codebase code archive".split()
)
_LINK_TAGS = frozenset({"a", "area"})
# What a URL's place does: an inline image (data: images pass), a plain link (GATEWAY_LINK_DOMAINS
# pass), any other load; or a place too deeply nested to check.
_IMAGE, _LINK, _RESOURCE, _TOO_DEEP = "image", "link", "resource", "too deep"
_MAX_NESTING = 8  # srcdoc documents and conditional comments inside each other
# Bare URLs a mail client would autolink in text: scheme:// forms and www. hosts.
# Bare text is only a link where a mail client makes it one: web and ftp URLs and "www.".
# Other schemes in prose (a "sqlite:///" path in a how-to) are not content.
_TEXT_URL = re.compile(r"(?i)(?<![\w@.+\-])(?:(?:https?|ftp):[/\\]{2}|www\.)[^\s<>\"'`]+")
_TRAILING_PUNCT = ".,;:!?)]}'\"*"
_NO_AUTOLINK = frozenset({"a", "script", "style", "title", "textarea"})
_CSS_URL_FUNCS = frozenset({"url", "src", "image-set", "-webkit-image-set"})


def _srcset(value: str) -> list[str]:
    """Candidate URLs of a srcset (HTML spec: a URL ends at whitespace, not at a comma)."""
    urls, i, n = [], 0, len(value)
    while i < n:
        while i < n and (value[i].isspace() or value[i] == ","):
            i += 1
        j = i
        while j < n and not value[j].isspace():
            j += 1
        url, i = value[i:j], j
        if url.endswith(","):
            url = url.rstrip(",")
        else:  # skip the descriptors ("2x", "100w") up to a comma outside parentheses
            depth = 0
            while i < n and (value[i] != "," or depth):
                depth += {"(": 1, ")": -1}.get(value[i], 0)
                i += 1
        if url:
            urls.append(url)
    return urls


def _refresh_url(content: str) -> str | None:
    """The URL of <meta http-equiv=refresh content="5; url='...'">, if any."""
    rest = content.strip().lstrip("0123456789.").lstrip()
    rest = rest[1:].lstrip() if rest[:1] in (";", ",") else rest
    if rest[:3].lower() == "url" and rest[3:].lstrip().startswith("="):
        rest = rest[3:].lstrip()[1:].lstrip()
    if rest[:1] in ("'", '"'):
        rest = rest[1:].partition(rest[0])[0]
    return rest.strip() or None


@lru_cache(maxsize=2048)
def _css_urls(css: str) -> tuple[tuple[str, str], ...]:
    """(kind, url) for each url()/image-set()/@import in CSS; comments are skipped."""
    if "(" not in css and "@" not in css and "\\" not in css:
        return ()  # no function, no at-rule, no escape: no URL (most style attributes)
    found: list[tuple[str, str]] = []

    def walk(tokens: list) -> None:
        importing = False  # just after @import: a string is a URL there
        for tok in tokens:
            if tok.type in ("whitespace", "comment"):
                continue
            kind = "@import" if importing else "url()"
            if tok.type == "url":
                found.append((kind, tok.value))
            elif tok.type == "string" and importing:
                found.append((kind, tok.value))
            elif tok.type == "function":
                if tok.lower_name in _CSS_URL_FUNCS:  # url("..."), image-set("..." 1x)
                    found.extend((kind, a.value) for a in tok.arguments if a.type == "string")
                walk(tok.arguments)
            elif tok.type.endswith("block"):
                walk(tok.content)
            importing = tok.type == "at-keyword" and tok.lower_value == "import"

    walk(tinycss2.parse_component_value_list(css, skip_comments=True))
    return tuple(found)


def _list_urls(value: str) -> list[str]:
    """The URLs of an attribute that lists several (ping: spaces; archive: commas or spaces)."""
    return value.replace(",", " ").split()


def _param_is_url(name: str, value: str) -> bool:
    """Whether a plugin's <param value> is a URL: by its name, or because it has a host."""
    if name.strip().lower() in _PARAM_URL_NAMES:
        return True
    scheme, rest = split_scheme(value)
    if scheme in SCRIPT_SCHEMES or scheme == "data":
        return True
    return rest[:1] in ("/", "\\") and rest[1:2] in ("/", "\\")


class _Walker:
    """Calls emit(url, where, kind) for each URL-bearing place of an HTML5 tree, in order.

    The tree is the one an HTML5 parser (Lexbor) builds, as browsers and mail clients do:
    comments, raw-text elements and SVG/MathML content end where they end there.
    """

    def __init__(self, emit: Callable[[str, str, str], None]) -> None:
        self._emit = emit

    def document(self, html: str, context: str, depth: int = 0) -> None:
        tree = LexborHTMLParser(html)  # scripting off: no mail client runs scripts
        root = tree.root
        if root is None:
            return
        # The document node: comments before <html> and after </html> belong to it.
        stack: list[tuple[LexborNode, bool]] = [(root.parent or root, False)]
        while stack:
            node, quiet = stack.pop()
            tag = node.tag or ""
            if tag == "-text":
                text = node.text_content
                if text and not quiet:  # clients autolink bare URLs in HTML text too
                    for url in _text_urls(text):
                        self._emit(url, f"{context} text", _LINK)
                continue
            if tag == "-comment":
                self._comment(node.comment_content or "", depth)
                continue
            if tag == "-doctype":
                continue
            children: list[LexborNode] = []
            if node.is_element_node:
                self._element(node, tag, context, depth)
                if tag == "template":  # its content is a fragment outside the tree
                    children += node.template_fragments()
                quiet = quiet or tag in _NO_AUTOLINK
            children[:0] = node.iter(include_text=True)
            stack.extend((child, quiet) for child in reversed(children))

    def _element(self, node: LexborNode, tag: str, context: str, depth: int) -> None:
        attrs = {name.lower(): value for name, value in node.attributes.items()}
        for name, value in attrs.items():
            if value is None:
                continue
            where = f"{context} <{tag} {name}>"
            if name in _URL_ATTRS or (name == "data" and tag == "object"):
                if tag in _LINK_TAGS and name in ("href", "xlink:href"):
                    kind = _LINK
                else:
                    kind = _IMAGE if tag == "img" and name == "src" else _RESOURCE
                self._emit(value, where, kind)
            elif name in _SRCSET_ATTRS:
                for url in _srcset(value):
                    self._emit(url, where, _RESOURCE)
            elif name in _LIST_ATTRS:
                for url in _list_urls(value):
                    self._emit(url, where, _RESOURCE)
            elif name == "style":
                for _, url in _css_urls(value):
                    self._emit(url, f"{context} style attribute", _RESOURCE)
            elif name in _PRESENTATION_ATTRS:  # SVG's fill="url(...)" and the like
                for _, url in _css_urls(value):
                    self._emit(url, where, _RESOURCE)
            elif name == "value" and tag == "param":
                if _param_is_url(attrs.get("name") or "", value):
                    self._emit(value, where, _RESOURCE)
            elif name == "content" and tag == "meta":
                if (attrs.get("http-equiv") or "").strip().lower() == "refresh":
                    refresh = _refresh_url(value)
                    if refresh:
                        self._emit(refresh, f"{context} <meta refresh>", _RESOURCE)
        if tag == "style":  # SVG's <style> applies to the page as HTML's does
            css = "".join(c.text_content or "" for c in node.iter(include_text=True))
            for kind, url in _css_urls(css):
                self._emit(url, f"{context} <style> {kind}", _RESOURCE)
        srcdoc = attrs.get("srcdoc")
        if tag == "iframe" and srcdoc is not None:
            self._nested(srcdoc, "iframe srcdoc", depth)

    def _comment(self, data: str, depth: int) -> None:
        # Outlook parses <!--[if mso]> ... <![endif]--> as HTML; other comments are not content.
        head, sep, body = data.partition("]>")
        if not sep or not head.lstrip().lower().startswith("[if"):
            return
        cut = body.lower().rfind("<![endif]")
        self._nested(body[:cut] if cut >= 0 else body, "mso conditional comment", depth)

    def _nested(self, html: str, context: str, depth: int) -> None:
        """A document inside the document: a srcdoc frame, an Outlook conditional comment."""
        if depth >= _MAX_NESTING or too_deep(html):
            self._emit(html[:80], context, _TOO_DEEP)
        elif html:
            for place in _nested_places(html, context, depth + 1):
                self._emit(*place)


@lru_cache(maxsize=1024)
def _nested_places(html: str, context: str, depth: int) -> tuple[tuple[str, str, str], ...]:
    """The places of a nested document, read once: templates repeat their Outlook comments."""
    places: list[tuple[str, str, str]] = []
    _Walker(lambda *place: places.append(place)).document(html, context, depth)
    return tuple(places)


def _text_urls(text: str) -> list[str]:
    return [m.group().rstrip(_TRAILING_PUNCT) for m in _TEXT_URL.finditer(text)]


def scan(
    html: str | None,
    text: str | None,
    first_party: Sequence[str],
    *,
    link_domains: Sequence[str] = (),
) -> list[Finding]:
    """Every offending URL in the HTML and text parts, in document order, once per place.

    Hosts in link_domains pass in plain links only (<a href>, <area href>, bare URLs in
    text), never where the client loads something (images, CSS, fonts, forms, frames).
    """
    findings: dict[tuple[str, str], Finding] = {}
    link_ok = (*first_party, *link_domains)

    def emit(url: str, where: str, kind: str) -> None:
        if (url, where) in findings:
            return
        if kind == _TOO_DEEP:
            why = (
                f"frames or Outlook conditional comments nest more than {_MAX_NESTING} deep,"
                f" or elements more than {MAX_DEPTH}, too deep to check: flatten the markup"
            )
            findings[(url, where)] = Finding(url, None, where, why)
            return
        # Mail clients link a bare "www.host" in text as http://www.host.
        www = url[:4].lower() == "www." and where.endswith((" text", "text part"))
        domains = link_ok if kind == _LINK else first_party
        finding = check("http://" + url if www else url, where, domains, kind == _IMAGE)
        if finding is None:
            return
        reason = finding.reason
        if finding.host and kind != _LINK and is_first_party(finding.host, link_domains):
            reason = (
                f"{finding.host} is allowed for links only (GATEWAY_LINK_DOMAINS), never for"
                " images, stylesheets, fonts, forms or frames: host the file yourself"
            )
        elif finding.host and kind == _LINK and not is_ip(finding.host):
            # A plain link loads nothing: the fix is to allow the domain, not to copy a page.
            reason = (
                f"{finding.host} is not a first-party domain: to allow plain links to it (a"
                " social page, say) add it to GATEWAY_LINK_DOMAINS, or to"
                " GATEWAY_FIRST_PARTY_DOMAINS if it is your own"
            )
        findings[(url, where)] = Finding(url, finding.host, where, reason)

    if html and too_deep(html):
        why = (
            f"the HTML nests elements more than {MAX_DEPTH} deep, which no mail client shows"
            " as written: flatten the markup"
        )
        findings[("", "html")] = Finding(html[:80], None, "html", why)
    elif html:
        _Walker(emit).document(html, "html")
    for url in _text_urls(text or ""):
        emit(url, "text part", _LINK)
    return list(findings.values())
