"""The settings alone, judged with neither the database nor the network: one `Finding` for
each setting that would hurt delivery or break the law (the first half of `gateway check`)."""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import idna
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from .config import DEV_SECRET_FILE, MIN_SECRET_KEY_LENGTH, Settings, weak_secret_key
from .content import is_first_party
from .errors import ConfigError

if TYPE_CHECKING:  # imported when needed, not by every `gateway` command that imports this
    from .dkim import DKIMSigner

__all__ = ["Finding", "Findings", "check_settings", "dkim_tags", "local_domain"]

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


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning" | "ok"
    name: str  # what was checked, e.g. "from", "spf"
    message: str  # one line: what is wrong and what to do


class Findings(list[Finding]):
    def error(self, name: str, message: str) -> None:
        self.append(Finding("error", name, message))

    def warning(self, name: str, message: str) -> None:
        self.append(Finding("warning", name, message))

    def ok(self, name: str, message: str) -> None:
        self.append(Finding("ok", name, message))


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def local_domain(domain: str) -> str | None:
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


def dkim_tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = re.sub(r"\s+", "", value)
    return tags


def _load(env: Mapping[str, str], found: Findings) -> tuple[Settings | None, set[str]]:
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


def _secret_keys(env: Mapping[str, str], found: Findings) -> None:
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
        problem = {
            "short": f"is only {len(key)} characters long, it needs {MIN_SECRET_KEY_LENGTH}",
            "guessable": "repeats a few characters over and over, so it is easy to guess",
            None: None,
        }[weak_secret_key(key)]
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


def _domain_list(env: Mapping[str, str], name: str, found: Findings) -> None:
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


def _dkim(env: Mapping[str, str], found: Findings) -> DKIMSigner | None:
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
    tags = dkim_tags(signer.dns_txt())
    public = load_der_public_key(base64.b64decode(tags["p"])) if tags["k"] == "rsa" else None
    bits = public.key_size if isinstance(public, rsa.RSAPublicKey) else 2048
    if bits < 2048:
        found.warning(
            "dkim",
            f"the DKIM key has {bits} bits, which some receivers distrust: make a 2048-bit one"
            " and publish its record under a new selector",
        )
    return signer


def _with_settings(s: Settings, signer: DKIMSigner | None, found: Findings) -> None:
    from_domain = s.from_domain
    local = local_domain(from_domain)
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
    if local_domain(host):
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
        why = local_domain(domain) if domain != from_domain else None
        if why:
            found.error(
                var.lower().removeprefix("gateway_"),
                f"{var} {address} is on {domain}, {why}: mail to it cannot arrive; use an"
                " address on your own domain",
            )


def check_settings(
    env: Mapping[str, str],
) -> tuple[Findings, Settings | None, DKIMSigner | None, set[str]]:
    """The findings about the settings in env; the Settings they load into (None when they
    do not), the DKIM signer (None when off or broken) and the variables left out to load."""
    found = Findings()
    settings, dropped = _load(env, found)
    _secret_keys(env, found)
    _domain_list(env, "GATEWAY_FIRST_PARTY_DOMAINS", found)
    _domain_list(env, "GATEWAY_LINK_DOMAINS", found)
    signer = _dkim(env, found)
    if settings is not None:
        # A variable Settings refused was left out to load the rest: what depends on it
        # waits until it is fixed, rather than being judged on the default put in its place.
        judged = Findings()
        _with_settings(settings, signer, judged)
        found += [f for f in judged if not dropped & _reads(f.name, env)]
    return found, settings, signer, dropped


def _reads(name: str, env: Mapping[str, str]) -> set[str]:
    """The variables a finding of _with_settings depends on."""
    own = _READS.get(name, f"GATEWAY_{name.upper()}")
    derived = _DEFAULT_FROM.get(name) if not env.get(own, "").strip() else None
    return {own, derived} if derived else {own}
