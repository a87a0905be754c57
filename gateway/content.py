"""Third-party content scan of rendered mail (pure: no I/O)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from string import hexdigits
from urllib.parse import unquote_to_bytes

import idna
import tinycss2
from selectolax.lexbor import LexborHTMLParser, LexborNode

__all__ = ["Finding", "is_first_party", "normalize_host", "scan"]

_SETTING = "GATEWAY_FIRST_PARTY_DOMAINS"
# WHATWG "special" schemes: "\" is a path separator and the authority slashes are optional.
_SPECIAL = frozenset({"http", "https", "ftp", "ws", "wss", "file"})
# Hostless schemes that never load anything from a third party.
_HOSTLESS_OK = frozenset({"mailto", "tel", "sms", "cid"})
_SCRIPT = frozenset({"javascript", "vbscript"})
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
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_TAB_NL = str.maketrans("", "", "\t\n\r")  # browsers drop these anywhere in a URL
_C0_SPACE = "".join(map(chr, range(0x21)))  # ...and strip these at both ends
# WHATWG forbidden domain code points (after percent-decoding and IDNA).
_FORBIDDEN = frozenset("\x00\t\n\r #%/:<>?@[\\]^|\x7f") | frozenset(map(chr, range(0x20)))
# Bare URLs a mail client would autolink in text: scheme:// forms and www. hosts.
# Bare text is only a link where a mail client makes it one: web and ftp URLs and "www.".
# Other schemes in prose (a "sqlite:///" path in a how-to) are not content.
_TEXT_URL = re.compile(r"(?i)(?<![\w@.+\-])(?:(?:https?|ftp):[/\\]{2}|www\.)[^\s<>\"'`]+")
_TRAILING_PUNCT = ".,;:!?)]}'\"*"
_NO_AUTOLINK = frozenset({"a", "script", "style", "title", "textarea"})
_CSS_URL_FUNCS = frozenset({"url", "src", "image-set", "-webkit-image-set"})


@dataclass(frozen=True, slots=True)
class Finding:
    url: str  # the URL as it appears after entity decoding
    host: str | None  # normalized host, or None for hostless schemes and invalid hosts
    where: str  # where it was found, e.g. "html <img src>"
    reason: str  # one human sentence naming the problem and the fix


class _InvalidHost(ValueError):
    pass


def _host_text(text: str) -> str:
    """Normalize an authority's host part the way a browser does (WHATWG host parser)."""
    if text.startswith("["):
        if not text.endswith("]"):
            raise _InvalidHost(f"unterminated IPv6 literal {text!r}")
        try:
            return f"[{ipaddress.IPv6Address(text[1:-1]).compressed}]"
        except ValueError as e:
            raise _InvalidHost(str(e)) from None
    try:  # %65vil.com is evil.com; bytes that are not UTF-8 make no valid host
        text = unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise _InvalidHost(f"{text!r} percent-decodes to invalid UTF-8") from None
    if text.isascii():
        host = text.lower()  # ASCII needs no UTS-46 mapping; keeps "_" legal as browsers do
    else:
        try:  # UTS-46 maps full-width letters and dots; look-alikes become xn--
            host = idna.encode(text, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError) as e:
            raise _InvalidHost(f"{text!r} is not a valid international name ({e})") from None
    if host.endswith("."):
        host = host[:-1]
    if not host or "" in host.split(".") or _FORBIDDEN.intersection(host):
        raise _InvalidHost(f"{text!r} is not a valid host name")
    last = host.rsplit(".", 1)[-1]
    if last.isdigit() or (last[:2] == "0x" and all(c in hexdigits for c in last[2:])):
        # WHATWG: a host that ends in a number is IPv4, whatever its spelling
        return _ipv4(host)
    return host


def _ipv4(host: str) -> str:
    """WHATWG IPv4 parser: 2130706433, 0x7f.1 and 0177.0.0.1 are all 127.0.0.1."""
    numbers = []
    for part in host.split("."):
        base, digits = 10, part
        if part[:2] == "0x":
            base, digits = 16, part[2:] or "0"
        elif len(part) > 1 and part.startswith("0"):
            base, digits = 8, part[1:]
        try:
            numbers.append(int(digits, base))
        except ValueError:
            raise _InvalidHost(f"{host!r} is neither a domain nor an IPv4 address") from None
    if (
        len(numbers) > 4
        or max(numbers[:-1], default=0) > 255
        or numbers[-1] >= 256 ** (5 - len(numbers))
    ):
        raise _InvalidHost(f"{host!r} is not a valid IPv4 address")
    value = numbers[-1] + sum(n << (8 * (3 - i)) for i, n in enumerate(numbers[:-1]))
    return str(ipaddress.IPv4Address(value))


def _authority_host(authority: str) -> str:
    hostport = authority.rpartition("@")[2]  # the last "@" ends the userinfo
    cut = hostport.find("]") + 1 if hostport.startswith("[") else 0  # IPv6 has colons
    rest, _, port = hostport[cut:].partition(":")
    host = hostport[:cut] + rest
    if not host or not (port.isascii() and port.isdigit() or not port):
        raise _InvalidHost(f"{authority!r} has no host or an invalid port")
    return _host_text(host)


def _until(text: str, stops: str) -> str:
    return text[: next((i for i, c in enumerate(text) if c in stops), len(text))]


def _split_scheme(raw_url: str) -> tuple[str | None, str]:
    """(lowercased scheme or None if relative, the rest) of a URL cleaned as browsers do."""
    url = raw_url.strip(_C0_SPACE).translate(_TAB_NL)
    name, sep, rest = url.partition(":")
    if sep and _SCHEME.fullmatch(name):
        return name.lower(), rest
    return None, url


def _hosts(scheme: str | None, rest: str) -> tuple[str, ...]:
    """Every host a client could resolve the URL to; () if it has none."""
    # Relative URLs resolve against an http(s) page, so they parse like a special scheme.
    special = scheme is None or scheme in _SPECIAL
    seps = "/\\" if special else "/"
    if scheme in (None, "file") or not special:
        if len(rest) < 2 or rest[0] not in seps or rest[1] not in seps:
            return ()  # "/path", "a.png", "mailto:x", "file:/x"
    if special and scheme != "file":
        # WHATWG skips any run of "/" and "\" here: "https:evil.com", "///evil.com" too.
        authority = _until(rest.lstrip(seps), seps + "?#")
    else:
        authority = _until(rest[2:], seps + "?#")
        if not authority:
            return ()  # file:///etc/passwd is local; foo:///x has no host either
    hosts = [_authority_host(authority)]
    # Parsers that predate WHATWG (RFC 3986) treat "\" as data, so for
    # "https://first.vn\@evil.com" they go to evil.com: check that reading too.
    if "\\" in rest and rest.startswith("//"):
        try:
            hosts.append(_authority_host(_until(rest[2:], "/?#")))
        except _InvalidHost:
            pass  # that reading loads nothing at all
    return tuple(dict.fromkeys(hosts))


def normalize_host(raw_url: str) -> str | None:
    """Host of a URL as a browser resolves it (lowercase, punycode, no trailing dot).

    None when the URL has no host (relative, mailto:, data:, ...); ValueError when the
    host is invalid (a browser would not load it, but the scan blocks it all the same).
    """
    hosts = _hosts(*_split_scheme(raw_url))
    return hosts[0] if hosts else None


def _is_ip(host: str) -> bool:
    return host.startswith("[") or host.replace(".", "").isdigit()


@lru_cache(maxsize=32)
def _domains(domains: tuple[str, ...]) -> frozenset[str]:
    out = set()
    for domain in domains:
        try:
            out.add(_host_text(domain.strip()))
        except _InvalidHost:
            continue  # a bad setting entry matches nothing
    return frozenset(out)


def is_first_party(host: str, domains: Sequence[str]) -> bool:
    """True if host is a listed domain or a subdomain of one (whole labels only)."""
    host = host.lower().removesuffix(".")
    listed = _domains(tuple(domains))
    if _is_ip(host):  # an address has no subdomains and no owner we can check
        return host in listed
    return any(host == d or host.endswith("." + d) for d in listed)


def _check(url: str, where: str, domains: Sequence[str], data_image_ok: bool) -> Finding | None:
    # A campaign's messages repeat the same URLs: decide each (url, place) once.
    return _check_cached(url, where, tuple(domains), data_image_ok)


@lru_cache(maxsize=8192)
def _check_cached(
    url: str, where: str, domains: tuple[str, ...], data_image_ok: bool
) -> Finding | None:
    scheme, rest = _split_scheme(url)
    if scheme in _SCRIPT:
        return Finding(url, None, where, f"{scheme}: URLs are never allowed in mail: remove it")
    if scheme == "data":
        if data_image_ok and rest.lstrip().lower().startswith("image/"):
            return None
        why = "data: URLs are allowed only as inline images (<img src>): link a first-party URL"
        return Finding(url, None, where, why)
    try:
        hosts = _hosts(scheme, rest)
    except _InvalidHost as e:
        return Finding(url, None, where, f"the URL has an invalid host: {e}; fix the URL")
    for host in hosts:
        if is_first_party(host, domains):
            continue
        if _is_ip(host):
            why = f"{host} is an IP address, never first party: use a name under {_SETTING}"
        else:
            why = (
                f"{host} is not a first-party domain: host the file yourself"
                f" or add the domain to {_SETTING}"
            )
        return Finding(url, host, where, why)
    if hosts or scheme is None or scheme in _HOSTLESS_OK:
        return None
    why = f"{scheme}: URLs are not allowed in mail: use an https URL on a domain in {_SETTING}"
    return Finding(url, None, where, why)


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
    scheme, rest = _split_scheme(value)
    if scheme in _SCRIPT or scheme == "data":
        return True
    return rest[:1] in ("/", "\\") and rest[1:2] in ("/", "\\")


# -- a linear bound on nesting, checked before the HTML5 parser runs -------------------------
# An HTML5 tree builder looks down the stack of open elements at most start and end tags, so
# 200,000 nested <div>s cost it minutes. A message nested more than _MAX_DEPTH deep (Chromium
# stops nesting at 512) is refused unread. The estimate below models the stack with the
# tokenizer's rules and pops less than a browser would, so it errs towards "too deep".
_MAX_DEPTH = 512
_WALK = 16  # how far down the modelled stack an end tag looks for its element
_TAG = re.compile(
    r"<!--(?:-?>|.*?(?:--!?>|\Z))"  # a comment; "<!-->" and "<!--->" end at once
    r"|<!\[CDATA\[(.*?)(?:\]\]>|\Z)"  # CDATA in SVG/MathML, a bogus comment elsewhere
    r"|<(/?)([A-Za-z][^\t\n\f\r />]*)"  # a tag and its attributes, as the tokenizer reads them
    r"((?>[\t\n\f\r /]+|[^\t\n\f\r />][^\t\n\f\r />=]*+"
    r"(?>[\t\n\f\r ]*=[\t\n\f\r ]*(?>\"[^\"]*\"?|'[^']*'?|[^\t\n\f\r >]*))?)*+)(>?)"
    r"|<[!?/][^>]*>?",  # a bogus comment (<!x>, <?x>, </1>)
    re.S,
)
_SCRIPT_STATE = re.compile(r"<!--(?:-*>)?|-->|<(/?)script(?=[\t\n\f\r />])", re.I)
_VOID = frozenset(
    "area base basefont bgsound br col embed frame hr image img input keygen link meta param"
    " source track wbr".split()
)
_RAW = frozenset("style textarea title xmp iframe noembed noframes".split())
_SPECIAL_TAGS = frozenset(
    "address applet area article aside base basefont bgsound blockquote body br button caption"
    " center col colgroup dd details dialog dir div dl dt embed fieldset figcaption figure footer"
    " form frame frameset h1 h2 h3 h4 h5 h6 head header hgroup hr html iframe img input keygen li"
    " link listing main marquee menu meta nav noembed noframes noscript object ol p param"
    " plaintext pre script search section select source style summary table tbody td template"
    " textarea tfoot th thead title tr track ul wbr xmp mi mo mn ms mtext annotation-xml"
    " foreignobject desc".split()
)
_TABLE_PARTS = frozenset("caption colgroup tbody thead tfoot tr td th".split())
# A start tag that closes an open element of these names (table parts close across each other).
_CLOSES = {name: frozenset({name}) for name in "p option h1 h2 h3 h4 h5 h6".split()}
_CLOSES |= {"li": frozenset({"li"}), "dd": frozenset({"dd", "dt"}), "dt": frozenset({"dd", "dt"})}
_CLOSES |= {"td": frozenset({"td", "th"}), "th": frozenset({"td", "th"}), "tr": frozenset({"tr"})}
_CLOSES |= {t: frozenset({"tbody", "thead", "tfoot"}) for t in ("tbody", "thead", "tfoot")}
_BREAKOUT = frozenset(
    "b big blockquote body br center code dd div dl dt em embed h1 h2 h3 h4 h5 h6 head hr i img"
    " li listing menu meta nobr ol p pre ruby s small span strong strike sub sup table tt u ul"
    " var".split()
)
_INTEGRATION = frozenset("foreignobject desc title mi mo mn ms mtext annotation-xml".split())
_FONT_BREAKOUT = re.compile(r"(?:^|[\t\n\f\r /])(?:color|face|size)(?=[\t\n\f\r /=]|$)", re.I)


def _pop_to(stack: list[tuple[str, bool]], names: frozenset[str], through: frozenset[str]) -> None:
    """Pop up to the nearest element named in names if only `through` or non-special ones
    are above it, within _WALK; else leave the stack as it is (a browser would pop more)."""
    for i in range(len(stack) - 1, max(len(stack) - 1 - _WALK, -1), -1):
        name, foreign = stack[i]
        if name in names:
            del stack[i:]
            return
        if not foreign and name in _SPECIAL_TAGS and name not in through:
            return


def _too_deep(html: str) -> bool:
    """Whether the HTML may nest elements more than _MAX_DEPTH deep (linear time)."""
    if html.count("<") <= _MAX_DEPTH:
        return False
    stack: list[tuple[str, bool]] = []  # (name, SVG/MathML)
    pos, n = 0, len(html)
    while pos < n:
        m = _TAG.search(html, pos)
        if m is None:
            return False
        pos = m.end()
        if m.group(1) is not None:  # CDATA: whatever it hides may be start tags
            if _too_deep_starts(m.group(1), len(stack)):
                return True
            continue
        closing, name, attrs, complete = m.group(2, 3, 4, 5)
        if name is None or not complete:
            continue  # a comment, a bogus comment, or a tag cut off by the end of the input
        name = name.lower()
        if closing and stack and stack[-1][0] == name:  # the common case: well nested
            stack.pop()
            continue
        foreign = bool(stack) and stack[-1][1] and stack[-1][0] not in _INTEGRATION
        if closing:
            through = _TABLE_PARTS if name in _TABLE_PARTS or name == "table" else frozenset()
            _pop_to(stack, frozenset({name}), through)
            continue
        if foreign and (name in _BREAKOUT or name == "font" and _FONT_BREAKOUT.search(attrs)):
            while stack and stack[-1][1]:
                stack.pop()
            foreign = False
        if foreign or name in ("svg", "math"):
            if not attrs.rstrip().endswith("/"):
                stack.append((name, True))
        elif name == "plaintext":
            return False  # the rest of the input is text
        elif name not in _VOID:
            if name in _CLOSES:
                _pop_to(stack, _CLOSES[name], _TABLE_PARTS if name in _TABLE_PARTS else frozenset())
            stack.append((name, False))
            if name == "script":
                pos = _script_end(html, pos)
            elif name in _RAW:
                end = re.compile(rf"</{name}(?=[\t\n\f\r />])", re.I).search(html, pos)
                pos = end.start() if end else n
        if len(stack) > _MAX_DEPTH:
            return True
    return False


def _too_deep_starts(text: str, depth: int) -> bool:
    starts = sum(1 for m in _TAG.finditer(text) if m.group(3) and not m.group(2))
    return depth + starts > _MAX_DEPTH


def _script_end(html: str, pos: int) -> int:
    """Where a <script>'s text ends (the tokenizer's escaped and double-escaped states)."""
    escaped = double = False
    for m in _SCRIPT_STATE.finditer(html, pos):
        token = m.group()
        if token.startswith("<!--"):
            escaped = escaped or not token.endswith(">")
        elif token == "-->":
            escaped = double = False
        elif m.group(1):  # </script
            if not double:
                return m.start()
            double = False
        elif escaped:  # <script inside <!--
            double = True
    return len(html)


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
        if depth >= _MAX_NESTING or _too_deep(html):
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
                f" or elements more than {_MAX_DEPTH}, too deep to check: flatten the markup"
            )
            findings[(url, where)] = Finding(url, None, where, why)
            return
        # Mail clients link a bare "www.host" in text as http://www.host.
        www = url[:4].lower() == "www." and where.endswith((" text", "text part"))
        domains = link_ok if kind == _LINK else first_party
        finding = _check("http://" + url if www else url, where, domains, kind == _IMAGE)
        if finding is None:
            return
        reason = finding.reason
        if finding.host and kind != _LINK and is_first_party(finding.host, link_domains):
            reason = (
                f"{finding.host} is allowed for links only (GATEWAY_LINK_DOMAINS), never for"
                " images, stylesheets, fonts, forms or frames: host the file yourself"
            )
        findings[(url, where)] = Finding(url, finding.host, where, reason)

    if html and _too_deep(html):
        why = (
            f"the HTML nests elements more than {_MAX_DEPTH} deep, which no mail client shows"
            " as written: flatten the markup"
        )
        findings[("", "html")] = Finding(html[:80], None, "html", why)
    elif html:
        _Walker(emit).document(html, "html")
    for url in _text_urls(text or ""):
        emit(url, "text part", _LINK)
    return list(findings.values())
