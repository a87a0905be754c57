"""Third-party content scan of rendered mail (pure: no I/O)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser
from string import hexdigits
from urllib.parse import unquote_to_bytes

import idna
import tinycss2

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
_NO_AUTOLINK = frozenset({"a", "script", "title", "textarea"})
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


class _Collector(HTMLParser):
    """Calls emit(url, where, data_image_ok) for each URL-bearing place, in order."""

    def __init__(self, emit: Callable[[str, str, bool], None], context: str = "html") -> None:
        super().__init__(convert_charrefs=True)  # decodes entities in attribute values
        self._emit, self._ctx = emit, context
        self._style: list[str] | None = None
        self._quiet = 0  # inside <a>, <script>, <title>: text is not autolinked

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value for name, value in attrs if value is not None}
        for name, value in attrs:
            if value is None:
                continue
            where = f"{self._ctx} <{tag} {name}>"
            if name in _URL_ATTRS or (name == "data" and tag == "object"):
                self._emit(value, where, tag == "img" and name == "src")
            elif name in _SRCSET_ATTRS:
                for url in _srcset(value):
                    self._emit(url, where, False)
            elif name == "ping":
                for url in value.split():
                    self._emit(url, where, False)
            elif name == "style":
                for _, url in _css_urls(value):
                    self._emit(url, f"{self._ctx} style attribute", False)
            elif name == "content" and tag == "meta":
                if values.get("http-equiv", "").strip().lower() == "refresh":
                    refresh = _refresh_url(value)
                    if refresh:
                        self._emit(refresh, f"{self._ctx} <meta refresh>", False)
        if tag == "style":
            self._style = []
        elif tag in _NO_AUTOLINK:
            self._quiet += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._flush_style()
        elif tag in _NO_AUTOLINK:
            self._quiet = max(0, self._quiet - 1)

    def handle_data(self, data: str) -> None:
        if self._style is not None:
            self._style.append(data)
        elif not self._quiet:  # clients autolink bare URLs in HTML text as in the text part
            for url in _text_urls(data):
                self._emit(url, f"{self._ctx} text", False)

    def handle_comment(self, data: str) -> None:
        # Outlook parses <!--[if mso]> ... <![endif]--> as HTML; other comments are not content.
        head, sep, body = data.partition("]>")
        if not sep or not head.lstrip().lower().startswith("[if"):
            return
        cut = body.lower().rfind("<![endif]")
        inner = _Collector(self._emit, "mso conditional comment")
        inner.feed(body[:cut] if cut >= 0 else body)
        inner.close()

    def parse_marked_section(self, i: int, report: int = 1) -> int:
        # <![if !mso]>, <![endif]>, <![CDATA[: a bogus comment up to ">" as browsers parse
        # it (the stdlib would raise on unknown keywords); what follows is ordinary HTML.
        end = self.rawdata.find(">", i)
        return -1 if end < 0 else end + 1

    def close(self) -> None:
        if self._style is not None and self.cdata_elem:  # an unclosed <style> still applies
            self._style.append(self.rawdata)
            self.rawdata = ""
        super().close()
        self._flush_style()

    def _flush_style(self) -> None:
        if self._style is None:
            return
        css, self._style = "".join(self._style), None
        for kind, url in _css_urls(css):
            self._emit(url, f"{self._ctx} <style> {kind}", False)


def _text_urls(text: str) -> list[str]:
    return [m.group().rstrip(_TRAILING_PUNCT) for m in _TEXT_URL.finditer(text)]


def scan(html: str | None, text: str | None, first_party: Sequence[str]) -> list[Finding]:
    """Every offending URL in the HTML and text parts, in document order, once per place."""
    findings: dict[tuple[str, str], Finding] = {}

    def emit(url: str, where: str, data_image_ok: bool) -> None:
        if (url, where) in findings:
            return
        # Mail clients link a bare "www.host" in text as http://www.host.
        www = url[:4].lower() == "www." and where.endswith((" text", "text part"))
        finding = _check("http://" + url if www else url, where, first_party, data_image_ok)
        if finding is not None:
            findings[(url, where)] = Finding(url, finding.host, where, finding.reason)

    if html:
        collector = _Collector(emit)
        collector.feed(html)
        collector.close()
    for url in _text_urls(text or ""):
        emit(url, "text part", False)
    return list(findings.values())
