"""`gateway check`: the settings that would hurt delivery or break the law, one finding each.

    findings = check()               # the settings alone: no database, no network
    findings = check(dns=True)       # and the DKIM, SPF, DMARC and MX records they rely on

Each finding is a level (`error`, `warning` or `ok`), a short name of what was checked and
one line of plain words: what is wrong and what to do. Settings that `Settings.from_env`
refuses are findings too (one error line each), never a traceback, and the checks that do
not depend on the refused variable still run. Nothing is written: the development secret
key is reported, not generated.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import json
import os
import re
import socket
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import idna
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)

from .config import DEV_SECRET_FILE, Settings
from .content import is_first_party
from .errors import ConfigError

if TYPE_CHECKING:  # imported when needed, not by every `gateway` command that imports this
    import dns.resolver

    from .dkim import DKIMSigner

__all__ = ["Finding", "check", "check_dns", "cmd_check", "run_check"]

LOOKUP_TIMEOUT = 2.0  # seconds for each DNS lookup, retries included
MIN_SECRET_KEY_LENGTH = 32  # as Settings.from_env requires
MAKE_KEY = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
DKIM_VARS = ("GATEWAY_DKIM_DOMAIN", "GATEWAY_DKIM_SELECTOR", "GATEWAY_DKIM_KEY_FILE")
# Loaded with a stand-in key: the keys are checked here on their own, and loading without
# one would generate .gateway-secret, and a check writes nothing.
_STAND_IN_KEY = "preflight-stand-in-key-0123456789abcdefghijklmnopqrstuvwxyz"
_LOCAL_SUFFIXES = (".localhost", ".test", ".invalid", ".example", ".local")
_LOCAL_NAMES = ("localhost", "test", "invalid", "example", "local")
# Findings of _with_settings are named after the variable they judge (from: GATEWAY_FROM);
# these read another one, always (dkim) or through the default it gives when theirs is unset.
_READS = {"dkim": "GATEWAY_FROM"}
_DEFAULT_FROM = {
    "sender_website": "GATEWAY_BASE_URL",
    "bounce_address": "GATEWAY_FROM",
    "refusal_address": "GATEWAY_FROM",
}
_DNS_READS = {"GATEWAY_FROM", "GATEWAY_BOUNCE_ADDRESS", "GATEWAY_REFUSAL_ADDRESS"}


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning" | "ok"
    name: str  # what was checked, e.g. "from", "spf"
    message: str  # one line: what is wrong and what to do


class _Findings(list[Finding]):
    def error(self, name: str, message: str) -> None:
        self.append(Finding("error", name, message))

    def warning(self, name: str, message: str) -> None:
        self.append(Finding("warning", name, message))

    def ok(self, name: str, message: str) -> None:
        self.append(Finding("ok", name, message))


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _local_domain(domain: str) -> str | None:
    """Why mail providers will not take `domain` as a sender's, or None."""
    name = domain.strip().strip("[]").lower().removesuffix(".")
    try:
        ipaddress.ip_address(name)
        return "an IP address, not a domain"
    except ValueError:
        pass
    if name in _LOCAL_NAMES or name.endswith(_LOCAL_SUFFIXES):
        return "a name reserved for local use"
    return None if "." in name else "a name without a dot"


# -- the settings alone ----------------------------------------------------------------------


def _load(env: Mapping[str, str], found: _Findings) -> tuple[Settings | None, set[str]]:
    """Settings from env (a finding per ConfigError), and the variables left out to go on."""
    trial = {k: v for k, v in env.items() if k not in DKIM_VARS}  # DKIM is checked below
    trial["GATEWAY_SECRET_KEYS"] = _STAND_IN_KEY
    dropped: set[str] = set()
    while True:
        try:
            return Settings.from_env(trial), dropped
        except ConfigError as error:
            found.error("settings", str(error))
            named = re.match(r"GATEWAY_[A-Z0-9_]+", str(error))
            if not named or named.group() not in trial:
                return None, dropped
            # Loaded again without it, so one bad variable hides no other finding.
            del trial[named.group()]
            dropped.add(named.group())


def _secret_keys(env: Mapping[str, str], found: _Findings) -> None:
    keys = _csv(env.get("GATEWAY_SECRET_KEYS", ""))
    if not keys:
        path = Path(DEV_SECRET_FILE).resolve()
        where = (
            f"the development key in {path}"
            if path.exists()
            else (f"a development key generated into {path} on first use")
        )
        found.warning(
            "secret_keys",
            f"GATEWAY_SECRET_KEYS is not set: {where} signs the unsubscribe and preference"
            " links, which is fine on your own machine only; before sending real mail set"
            f" GATEWAY_SECRET_KEYS to a key made with {MAKE_KEY} and keep it secret",
        )
        return
    before = len(found)
    for i, key in enumerate(keys, 1):
        problem = None
        if len(key) < MIN_SECRET_KEY_LENGTH:
            problem = f"is only {len(key)} characters long, it needs {MIN_SECRET_KEY_LENGTH}"
        elif len(set(key)) < 8:
            problem = "repeats a few characters over and over, so it is easy to guess"
        if problem:
            found.error(
                "secret_keys",
                f"GATEWAY_SECRET_KEYS: key {i} {problem}; anyone who guesses it can forge"
                f" unsubscribe and preference links: replace it with one made with {MAKE_KEY}",
            )
        if key in keys[: i - 1]:
            found.warning(
                "secret_keys",
                f"GATEWAY_SECRET_KEYS: key {i} is the same as key {keys.index(key) + 1}; list"
                " each key once (newest first, older ones only while their links must work)",
            )
    if len(found) == before:
        many = f"{len(keys)} keys" if len(keys) > 1 else "one key"
        found.ok("secret_keys", f"GATEWAY_SECRET_KEYS holds {many} long enough to be safe")


def _domain_list(env: Mapping[str, str], name: str, found: _Findings) -> None:
    for entry in _csv(env.get(name, "")):
        fix = None
        if any(c.isspace() for c in entry):
            fixed = ",".join(entry.split())
            fix = f"{entry!r} is read as one name: separate domains with commas, {fixed}"
        elif "/" in entry or "@" in entry:
            host = entry.split("://")[-1].split("/")[0].rpartition("@")[2]
            fix = f"{entry!r} is not a domain: write the domain alone, e.g. {host}"
        elif entry.startswith("*."):
            fix = f"{entry!r} matches nothing: write {entry[2:]}, its subdomains are included"
        else:
            try:
                ascii_name = entry if entry.isascii() else idna.encode(entry, uts46=True).decode()
            except (idna.IDNAError, UnicodeError):
                ascii_name = ""
            if not ascii_name or not is_first_party(ascii_name.lower(), (entry,)):
                fix = f"{entry!r} is not a domain name: fix or remove it"
        if fix:
            found.error(name.lower().removeprefix("gateway_"), f"{name}: {fix}")


def _dkim(env: Mapping[str, str], found: _Findings) -> DKIMSigner | None:
    values = {k: env.get(k, "").strip() for k in DKIM_VARS}
    if not any(values.values()):
        found.warning(
            "dkim",
            "DKIM signing is off: Gmail and Yahoo junk or refuse bulk mail that is not signed;"
            " set GATEWAY_DKIM_DOMAIN, GATEWAY_DKIM_SELECTOR and GATEWAY_DKIM_KEY_FILE"
            " (an RSA 2048-bit private key in PEM)",
        )
        return None
    if not all(values.values()):
        missing = ", ".join(k for k, v in values.items() if not v)
        found.error(
            "dkim",
            f"DKIM is half configured, so nothing is signed: set {missing} too (or none of the"
            " three)",
        )
        return None
    from .dkim import DKIMSigner

    domain, selector, path = values.values()
    try:
        signer = DKIMSigner.from_file(domain, selector, path)
    except ConfigError as error:
        found.error(
            "dkim", f"{error}; point GATEWAY_DKIM_KEY_FILE at the unencrypted PEM private key"
        )
        return None
    found.ok(
        "dkim", f"DKIM signs for {signer.domain}, selector {signer.selector} ({signer.algorithm})"
    )
    tags = _tags(signer.dns_txt())
    public = load_der_public_key(base64.b64decode(tags["p"])) if tags["k"] == "rsa" else None
    bits = public.key_size if isinstance(public, rsa.RSAPublicKey) else 2048
    if bits < 2048:
        found.warning(
            "dkim",
            f"the DKIM key has {bits} bits, which some receivers distrust: make a 2048-bit one"
            " and publish its record under a new selector",
        )
    return signer


def _with_settings(s: Settings, signer: DKIMSigner | None, found: _Findings) -> None:
    from_domain = s.from_domain
    local = _local_domain(from_domain)
    if local:
        found.error(
            "from",
            f"the From address {s.from_address} is on {from_domain}, {local}: mail providers"
            " refuse or junk it; set GATEWAY_FROM to an address on a domain you own, e.g."
            " 'Shop <news@shop.vn>'",
        )
    elif not is_first_party(from_domain, s.first_party_domains):
        found.error(
            "from",
            f"the From domain {from_domain} is not in GATEWAY_FIRST_PARTY_DOMAINS: links and"
            f" images on your own site would block messages; add {from_domain} to the list, or"
            " send from a domain on it",
        )
    else:
        found.ok("from", f"mail is sent from {s.from_address}")
    d = signer.domain.lower() if signer else from_domain
    if not local and not (
        f".{from_domain}".endswith(f".{d}") or f".{d}".endswith(f".{from_domain}")
    ):
        found.warning(
            "dkim",
            f"DKIM signs for {d} but mail is from {from_domain}: DMARC fails unless the two"
            f" match; set GATEWAY_DKIM_DOMAIN={from_domain}",
        )
    for var, what in (
        ("GATEWAY_SENDER_POSTAL_ADDRESS", "postal address"),
        ("GATEWAY_SENDER_PHONE", "phone number"),
    ):
        name = var.lower().removeprefix("gateway_")
        if getattr(s, name):
            found.ok(name, f"the marketing footer shows the sender's {what}")
        else:
            found.error(
                name,
                f"{var} is not set: advertising mail must show the sender's {what} in its"
                f" footer (Vietnam's Decree 91/2020 requires it); set {var}",
            )
    if not s.ad_label:
        found.warning(
            "ad_label",
            "GATEWAY_AD_LABEL is empty: advertising mail to people in Vietnam must start its"
            " subject with [QC]; leave GATEWAY_AD_LABEL unset there",
        )
    host = s.base_host
    if _local_domain(host):
        found.warning(
            "base_url",
            f"GATEWAY_BASE_URL is {s.base_url}: the unsubscribe and preference links in mail"
            " work only on this machine; before sending real mail set it to the public https"
            " address of the preference center, e.g. https://mail.shop.vn",
        )
    if is_first_party(host, s.first_party_domains):
        found.ok("base_url", f"links to {host}, the gateway's own, are first party")
    else:
        found.error(
            "base_url",
            f"the gateway's own host {host} is not first party, so every message with an"
            f" unsubscribe link would be blocked: add {host} to GATEWAY_FIRST_PARTY_DOMAINS",
        )
    site = urlsplit(s.sender_website if "//" in s.sender_website else "//" + s.sender_website)
    if site.hostname and not is_first_party(site.hostname, s.first_party_domains):
        found.error(
            "sender_website",
            f"GATEWAY_SENDER_WEBSITE is on {site.hostname}, which is not first party: the"
            " footer's link would block every marketing message; add"
            f" {site.hostname} to GATEWAY_FIRST_PARTY_DOMAINS",
        )
    for address, var in (
        (s.bounce_address, "GATEWAY_BOUNCE_ADDRESS"),
        (s.refusal_address, "GATEWAY_REFUSAL_ADDRESS"),
    ):
        domain = address.rpartition("@")[2]
        why = _local_domain(domain) if domain != from_domain else None
        if why:
            found.error(
                var.lower().removeprefix("gateway_"),
                f"{var} {address} is on {domain}, {why}: mail to it cannot arrive; use an"
                " address on your own domain",
            )


def check(environ: Mapping[str, str] | None = None, *, dns: bool = False) -> list[Finding]:
    """Every finding about the settings in environ (default: os.environ), errors first."""
    env = dict(os.environ if environ is None else environ)
    found = _Findings()
    settings, dropped = _load(env, found)
    _secret_keys(env, found)
    _domain_list(env, "GATEWAY_FIRST_PARTY_DOMAINS", found)
    _domain_list(env, "GATEWAY_LINK_DOMAINS", found)
    signer = _dkim(env, found)
    if settings is not None:
        # A variable Settings refused was left out to load the rest: what depends on it
        # waits until it is fixed, rather than being judged on the default put in its place.
        judged = _Findings()
        _with_settings(settings, signer, judged)
        found += [f for f in judged if not dropped & _reads(f.name, env)]
        if dns and not dropped & _DNS_READS:
            found += check_dns(settings, signer, env)
    if dns and (settings is None or dropped & _DNS_READS):
        found.warning("dns", "the DNS records were not looked up: fix the errors above first")
    order = {"error": 0, "warning": 1, "ok": 2}
    return sorted(found, key=lambda f: order[f.level])


def _reads(name: str, env: Mapping[str, str]) -> set[str]:
    """The variables a finding of _with_settings depends on."""
    own = _READS.get(name, f"GATEWAY_{name.upper()}")
    derived = _DEFAULT_FROM.get(name) if not env.get(own, "").strip() else None
    return {own, derived} if derived else {own}


# -- DNS ----------------------------------------------------------------------------------------


class _Unanswered(Exception):
    """A lookup that got no usable answer (timeout, SERVFAIL): the record is not known."""


def _resolver(env: Mapping[str, str]) -> dns.resolver.Resolver:
    import dns.resolver

    chosen = env.get("GATEWAY_DNS_RESOLVER", "").strip()
    if not chosen:
        try:
            resolver = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            raise ConfigError(
                "this machine has no DNS resolver configured (/etc/resolv.conf): set"
                " GATEWAY_DNS_RESOLVER=host:port, e.g. 1.1.1.1:53"
            ) from None
    else:
        host, sep, port = chosen.rpartition(":")
        try:
            if not sep or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError
            info = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_DGRAM)
        except (ValueError, OSError):
            raise ConfigError(
                f"GATEWAY_DNS_RESOLVER={chosen!r} is not host:port of a DNS server, e.g."
                " 1.1.1.1:53 or 127.0.0.1:5353"
            ) from None
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [str(info[0][4][0])]
        resolver.port = int(port)
    resolver.timeout = resolver.lifetime = LOOKUP_TIMEOUT
    return resolver


def _lookup(resolver: dns.resolver.Resolver, name: str, rdtype: str) -> list[Any] | None:
    """The records, [] when there are none of that type, None when the name does not exist."""
    import dns.exception
    import dns.resolver

    try:
        return list(resolver.resolve(name.rstrip(".") + ".", rdtype, search=False))
    except dns.resolver.NXDOMAIN:
        return None
    except dns.resolver.NoAnswer:
        return []
    except dns.exception.Timeout:
        raise _Unanswered(f"no answer within {LOOKUP_TIMEOUT:g} s") from None
    except dns.resolver.NoNameservers:
        raise _Unanswered("the DNS server failed to answer (SERVFAIL)") from None
    except dns.exception.DNSException as error:
        raise _Unanswered(str(error) or type(error).__name__) from None


def _txt(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    found = _lookup(resolver, name, "TXT") or []
    return [b"".join(r.strings).decode("utf-8", "replace") for r in found]


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = re.sub(r"\s+", "", value)
    return tags


def _public_key_forms(signer: DKIMSigner) -> set[bytes]:
    """Our public key as the bytes a `p=` may hold: SubjectPublicKeyInfo (or, for RSA, the
    PKCS#1 form some key generators publish), or the raw Ed25519 key."""
    der = base64.b64decode(_tags(signer.dns_txt())["p"])
    key = load_der_public_key(der) if signer.algorithm == "rsa-sha256" else None
    if isinstance(key, rsa.RSAPublicKey):
        return {der, key.public_bytes(Encoding.DER, PublicFormat.PKCS1)}
    return {der}


def _dkim_record(resolver: dns.resolver.Resolver, signer: DKIMSigner) -> Finding:
    name = signer.dns_name
    publish = f"publish this TXT record at {name}: {signer.dns_txt()}"
    records = [_tags(r) for r in _txt(resolver, name)]
    records = [tags for tags in records if "p" in tags]
    if not records:
        why = f"no DKIM record at {name}, so receivers cannot check the signature; {publish}"
        return Finding("error", "dkim_dns", why)
    p = records[0]["p"]
    try:
        published = base64.b64decode(p, validate=True)
    except ValueError:
        published = b""
    if published in _public_key_forms(signer):
        return Finding("ok", "dkim_dns", f"the DKIM record at {name} matches the key file")
    why = (
        f"the DKIM record at {name} is revoked (empty p=), so every signature fails: {publish}"
        if not p
        else f"the DKIM record at {name} holds another public key than GATEWAY_DKIM_KEY_FILE,"
        f" so every signature fails: {publish}, or sign with the key it was made from"
    )
    return Finding("error", "dkim_dns", why)


def _policy_record(resolver: dns.resolver.Resolver, kind: str, domain: str) -> Finding:
    name, prefix, example = {
        "SPF": (domain, "v=spf1", "'v=spf1 mx -all'"),
        "DMARC": (f"_dmarc.{domain}", "v=dmarc1", f"'v=DMARC1; p=none; rua=mailto:dmarc@{domain}'"),
    }[kind]
    records = [r for r in _txt(resolver, name) if re.match(prefix + r"(\s|;|$)", r, re.I)]
    if len(records) == 1:
        return Finding("ok", kind.lower(), f"{kind} record for {domain}: {records[0]}")
    why = (
        f"no {kind} record for {domain}: Gmail and Yahoo refuse or junk bulk mail without one;"
        f" publish a TXT record at {name} such as {example}"
        if not records
        else f"{domain} has {len(records)} {kind} records at {name}, so receivers ignore them"
        " all: merge them into one"
    )
    return Finding("error", kind.lower(), why)


def _mail_domain(resolver: dns.resolver.Resolver, domain: str, roles: str) -> Finding:
    records = _lookup(resolver, domain, "MX")
    if records and all(str(r.exchange) == "." for r in records):
        problem = "declares that it receives no mail (null MX)"
    elif records or any(_lookup(resolver, domain, t) for t in ("A", "AAAA")):
        return Finding("ok", "mx", f"{domain} receives mail ({roles})")
    else:
        problem = "does not exist" if records is None else "has no MX (or A) record"
    why = f"{domain} {problem}, so {roles} cannot be delivered: publish an MX record for it"
    return Finding("error", "mx", why)


def check_dns(
    settings: Settings, signer: DKIMSigner | None, environ: Mapping[str, str] | None = None
) -> list[Finding]:
    """The DNS records the settings rely on, looked up through GATEWAY_DNS_RESOLVER or the
    system's resolver; a lookup that times out or fails is a warning naming the record."""
    try:
        resolver = _resolver(os.environ if environ is None else environ)
    except ConfigError as error:
        return [Finding("error", "dns", str(error))]
    domain = settings.from_domain
    lookups: list[tuple[str, Callable[[], Finding]]] = []
    if signer is not None:
        lookups.append(
            (f"DKIM record (TXT at {signer.dns_name})", partial(_dkim_record, resolver, signer))
        )
    if not _local_domain(domain):
        lookups.append(
            (f"SPF record (TXT at {domain})", partial(_policy_record, resolver, "SPF", domain))
        )
        lookups.append(
            (
                f"DMARC record (TXT at _dmarc.{domain})",
                partial(_policy_record, resolver, "DMARC", domain),
            )
        )
    roles: dict[str, list[str]] = {}
    for what, address in (
        ("bounces", settings.bounce_address),
        ("refusals", settings.refusal_address),
    ):
        roles.setdefault(address.rpartition("@")[2], []).append(f"{what} to {address}")
    for mail_domain, said in roles.items():
        if not _local_domain(mail_domain):
            lookups.append(
                (
                    f"MX record of {mail_domain}",
                    partial(_mail_domain, resolver, mail_domain, " and ".join(said)),
                )
            )

    def run(item: tuple[str, Callable[[], Finding]]) -> Finding:
        try:
            return item[1]()
        except _Unanswered as error:
            return Finding(
                "warning",
                "dns",
                f"could not look up the {item[0]}: {error}; check again later, or through"
                " another DNS server (GATEWAY_DNS_RESOLVER=host:port)",
            )

    with ThreadPoolExecutor(max_workers=max(1, len(lookups))) as pool:
        return list(pool.map(run, lookups))


# -- the command ------------------------------------------------------------------------------


def run_check(args: argparse.Namespace) -> int:
    """`gateway check [--dns] [--json]`: print the findings; 1 when any is an error."""
    found = check(dns=bool(getattr(args, "dns", False)))
    ok = not any(f.level == "error" for f in found)
    if getattr(args, "json", False):
        print(json.dumps({"ok": ok, "findings": [asdict(f) for f in found]}, ensure_ascii=False))
        return 0 if ok else 1
    for f in found:
        print(f"{f.level + ':':<8} {f.message}")
    n = {level: sum(f.level == level for f in found) for level in ("error", "warning", "ok")}
    verdict = "nothing stops sending" if ok else "fix the errors before sending real mail"
    print(f"{n['error']} errors, {n['warning']} warnings, {n['ok']} ok: {verdict}")
    return 0 if ok else 1


async def cmd_check(gw_or_none: object, args: argparse.Namespace) -> int:
    """run_check as a `gateway` handler: it needs neither the gateway nor its database."""
    return await asyncio.to_thread(run_check, args)
