"""The DNS records the settings rely on (DKIM, SPF, DMARC, MX), looked up and judged: the
second half of `gateway check`, run with ``--dns``."""

from __future__ import annotations

import base64
import os
import re
import socket
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)

from .errors import ConfigError
from .preflight_settings import Finding, dkim_tags, local_domain

if TYPE_CHECKING:  # dnspython is imported on the first lookup, not by every `gateway` command
    import dns.resolver

    from .config import Settings
    from .dkim import DKIMSigner

__all__ = ["LOOKUP_TIMEOUT", "check_dns"]

LOOKUP_TIMEOUT = 2.0  # seconds for each DNS lookup, retries included


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


def _public_key_forms(signer: DKIMSigner) -> set[bytes]:
    """Our public key as the bytes a `p=` may hold: SubjectPublicKeyInfo (or, for RSA, the
    PKCS#1 form some key generators publish), or the raw Ed25519 key."""
    der = base64.b64decode(dkim_tags(signer.dns_txt())["p"])
    key = load_der_public_key(der) if signer.algorithm == "rsa-sha256" else None
    if isinstance(key, rsa.RSAPublicKey):
        return {der, key.public_bytes(Encoding.DER, PublicFormat.PKCS1)}
    return {der}


def _dkim_record(resolver: dns.resolver.Resolver, signer: DKIMSigner) -> Finding:
    name = signer.dns_name
    publish = f"publish this TXT record at {name}: {signer.dns_txt()}"
    records = [dkim_tags(r) for r in _txt(resolver, name)]
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
    if not local_domain(domain):
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
        if not local_domain(mail_domain):
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
