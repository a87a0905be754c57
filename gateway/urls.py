"""URLs and hosts as a browser reads them, and whether a host is first party (pure: no I/O)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from string import hexdigits
from urllib.parse import unquote_to_bytes

import idna

_SETTING = "GATEWAY_FIRST_PARTY_DOMAINS"
# WHATWG "special" schemes: "\" is a path separator and the authority slashes are optional.
_SPECIAL = frozenset({"http", "https", "ftp", "ws", "wss", "file"})
# Hostless schemes that never load anything from a third party.
_HOSTLESS_OK = frozenset({"mailto", "tel", "sms", "cid"})
SCRIPT_SCHEMES = frozenset({"javascript", "vbscript"})
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_TAB_NL = str.maketrans("", "", "\t\n\r")  # browsers drop these anywhere in a URL
_C0_SPACE = "".join(map(chr, range(0x21)))  # ...and strip these at both ends
# WHATWG forbidden domain code points (after percent-decoding and IDNA).
_FORBIDDEN = frozenset("\x00\t\n\r #%/:<>?@[\\]^|\x7f") | frozenset(map(chr, range(0x20)))


@dataclass(frozen=True, slots=True)
class Finding:
    url: str  # the URL as it appears after entity decoding
    host: str | None  # normalized host, or None for hostless schemes and invalid hosts
    where: str  # where it was found, e.g. "html <img src>"
    reason: str  # one human sentence naming the problem and the fix


class InvalidHost(ValueError):
    pass


def _host_text(text: str) -> str:
    """Normalize an authority's host part the way a browser does (WHATWG host parser)."""
    if text.startswith("["):
        if not text.endswith("]"):
            raise InvalidHost(f"unterminated IPv6 literal {text!r}")
        try:
            return f"[{ipaddress.IPv6Address(text[1:-1]).compressed}]"
        except ValueError as e:
            raise InvalidHost(str(e)) from None
    try:  # %65vil.com is evil.com; bytes that are not UTF-8 make no valid host
        text = unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidHost(f"{text!r} percent-decodes to invalid UTF-8") from None
    if text.isascii():
        host = text.lower()  # ASCII needs no UTS-46 mapping; keeps "_" legal as browsers do
    else:
        try:  # UTS-46 maps full-width letters and dots; look-alikes become xn--
            host = idna.encode(text, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError) as e:
            raise InvalidHost(f"{text!r} is not a valid international name ({e})") from None
    if host.endswith("."):
        host = host[:-1]
    if not host or "" in host.split(".") or _FORBIDDEN.intersection(host):
        raise InvalidHost(f"{text!r} is not a valid host name")
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
            raise InvalidHost(f"{host!r} is neither a domain nor an IPv4 address") from None
    if (
        len(numbers) > 4
        or max(numbers[:-1], default=0) > 255
        or numbers[-1] >= 256 ** (5 - len(numbers))
    ):
        raise InvalidHost(f"{host!r} is not a valid IPv4 address")
    value = numbers[-1] + sum(n << (8 * (3 - i)) for i, n in enumerate(numbers[:-1]))
    return str(ipaddress.IPv4Address(value))


def _authority_host(authority: str) -> str:
    hostport = authority.rpartition("@")[2]  # the last "@" ends the userinfo
    cut = hostport.find("]") + 1 if hostport.startswith("[") else 0  # IPv6 has colons
    rest, _, port = hostport[cut:].partition(":")
    host = hostport[:cut] + rest
    if not host or not (port.isascii() and port.isdigit() or not port):
        raise InvalidHost(f"{authority!r} has no host or an invalid port")
    return _host_text(host)


def _until(text: str, stops: str) -> str:
    return text[: next((i for i, c in enumerate(text) if c in stops), len(text))]


def split_scheme(raw_url: str) -> tuple[str | None, str]:
    """(lowercased scheme or None if relative, the rest) of a URL cleaned as browsers do."""
    url = raw_url.strip(_C0_SPACE).translate(_TAB_NL)
    name, sep, rest = url.partition(":")
    if sep and _SCHEME.fullmatch(name):
        return name.lower(), rest
    return None, url


def url_hosts(scheme: str | None, rest: str) -> tuple[str, ...]:
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
        except InvalidHost:
            pass  # that reading loads nothing at all
    return tuple(dict.fromkeys(hosts))


def normalize_host(raw_url: str) -> str | None:
    """Host of a URL as a browser resolves it (lowercase, punycode, no trailing dot).

    None when the URL has no host (relative, mailto:, data:, ...); ValueError when the
    host is invalid (a browser would not load it, but the scan blocks it all the same).
    """
    hosts = url_hosts(*split_scheme(raw_url))
    return hosts[0] if hosts else None


def is_ip(host: str) -> bool:
    return host.startswith("[") or host.replace(".", "").isdigit()


@lru_cache(maxsize=32)
def _domains(domains: tuple[str, ...]) -> frozenset[str]:
    out = set()
    for domain in domains:
        try:
            out.add(_host_text(domain.strip()))
        except InvalidHost:
            continue  # a bad setting entry matches nothing
    return frozenset(out)


def is_first_party(host: str, domains: Sequence[str]) -> bool:
    """True if host is a listed domain or a subdomain of one (whole labels only)."""
    host = host.lower().removesuffix(".")
    listed = _domains(tuple(domains))
    if is_ip(host):  # an address has no subdomains and no owner we can check
        return host in listed
    return any(host == d or host.endswith("." + d) for d in listed)


def check(url: str, where: str, domains: Sequence[str], data_image_ok: bool) -> Finding | None:
    # A campaign's messages repeat the same URLs: decide each (url, place) once.
    return _check_cached(url, where, tuple(domains), data_image_ok)


@lru_cache(maxsize=8192)
def _check_cached(
    url: str, where: str, domains: tuple[str, ...], data_image_ok: bool
) -> Finding | None:
    scheme, rest = split_scheme(url)
    if scheme in SCRIPT_SCHEMES:
        return Finding(url, None, where, f"{scheme}: URLs are never allowed in mail: remove it")
    if scheme == "data":
        if data_image_ok and rest.lstrip().lower().startswith("image/"):
            return None
        why = "data: URLs are allowed only as inline images (<img src>): link a first-party URL"
        return Finding(url, None, where, why)
    try:
        hosts = url_hosts(scheme, rest)
    except InvalidHost as e:
        return Finding(url, None, where, f"the URL has an invalid host: {e}; fix the URL")
    for host in hosts:
        if is_first_party(host, domains):
            continue
        if is_ip(host):
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
