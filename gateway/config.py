"""Settings read once from GATEWAY_* environment variables."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

log = logging.getLogger("gateway")

DEV_SECRET_FILE = ".gateway-secret"
_WARNED: set[str] = set()  # development key files already warned about in this process
MIN_SECRET_KEY_LENGTH = 32


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _domains(name: str, value: str) -> tuple[str, ...]:
    """A comma-separated list of domains. "a.vn b.vn" would be one name matching nothing,
    so every link to either would quietly block mail: refused with the list to write."""
    found = _csv(value.lower())
    for entry in found:
        if any(c.isspace() for c in entry):
            fixed = ",".join(entry.split())
            raise ConfigError(
                f"{name}: {entry!r} is read as one name: separate domains with commas, {fixed}"
            )
    return found


def _duration(value: str) -> float:
    """Seconds, or a number with a unit: 90, 90s, 15m, 12h, 3d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = value.strip().lower()
    scale = units.get(text[-1:], None)
    number = text[:-1] if scale else text
    return float(number) * (scale or 1)


def _is_local(host: str) -> bool:
    return host in ("localhost", "127.0.0.1", "::1") or host.endswith((".localhost", ".test"))


@dataclass(frozen=True)
class Setting:
    env: str
    default: str
    help: str


# Declared as data so `gateway settings` (and the README) can show every knob with its help.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "GATEWAY_DATABASE_URL",
        "sqlite:///./gateway.db",
        "database; postgresql://… for several workers",
    ),
    Setting(
        "GATEWAY_SMTP_URL",
        "maildir://./var/mail",
        "smtp://user:pass@host:port[?starttls=1], smtps://…, or maildir:///path; with a user"
        " and password TLS is required (?tls=none allows plain text to a relay on this machine)",
    ),
    Setting(
        "GATEWAY_SECRET_KEYS",
        "",
        "comma-separated signing keys, each at least 32 characters: the first signs new links,"
        " the others only verify links signed before (keep an old key listed while its links"
        " must work); a development key is kept in .gateway-secret when unset",
    ),
    Setting(
        "GATEWAY_BASE_URL", "http://127.0.0.1:8000", "public base URL of the preference center"
    ),
    Setting("GATEWAY_FROM", "Gateway <no-reply@localhost>", "default sender"),
    Setting(
        "GATEWAY_FIRST_PARTY_DOMAINS",
        "",
        "comma-separated domains (and their subdomains) whose links and images are allowed;"
        " the list replaces the default, the domain of GATEWAY_FROM, and adds to the host of"
        " GATEWAY_BASE_URL, which is always first party",
    ),
    Setting(
        "GATEWAY_LINK_DOMAINS",
        "",
        "comma-separated domains that plain links (<a href>, URLs in the text part) may point"
        " to, e.g. facebook.com,zalo.me; adds to GATEWAY_FIRST_PARTY_DOMAINS for links only,"
        " never for images, stylesheets, fonts, forms or frames",
    ),
    Setting(
        "GATEWAY_SENDER_NAME",
        "",
        "sender's name in the marketing footer (default: the display name of GATEWAY_FROM)",
    ),
    Setting("GATEWAY_SENDER_POSTAL_ADDRESS", "", "sender's postal address in the marketing footer"),
    Setting(
        "GATEWAY_SENDER_PHONE",
        "",
        "sender's phone in the marketing footer; also where refusals by phone go",
    ),
    Setting(
        "GATEWAY_SENDER_WEBSITE",
        "",
        "sender's website in the marketing footer (default: GATEWAY_BASE_URL)",
    ),
    Setting(
        "GATEWAY_REFUSAL_ADDRESS",
        "",
        "mailbox of the mailto: unsubscribe (default: unsubscribe@ the From domain)",
    ),
    Setting(
        "GATEWAY_INBOUND_SMTP",
        "",
        "host:port where bounces, complaints and mailto refusals are received (off when unset)",
    ),
    Setting(
        "GATEWAY_SUBMISSION_SMTP",
        "",
        "host:port where applications submit mail by SMTP (STARTTLS, then AUTH with an API key"
        " NAME as user and the key as password); off when unset",
    ),
    Setting(
        "GATEWAY_TLS_CERT",
        "",
        "certificate (PEM, with its chain) for STARTTLS on the submission port",
    ),
    Setting("GATEWAY_TLS_KEY", "", "private key (PEM) of GATEWAY_TLS_CERT"),
    Setting(
        "GATEWAY_SUBMISSION_MAX_BYTES",
        "26214400",
        "largest message accepted by SMTP submission, in bytes (announced with SIZE; 25 MB)",
    ),
    Setting(
        "GATEWAY_BOUNCE_ADDRESS",
        "",
        "envelope sender; each message gets its own signed return path, local+TOKEN@domain,"
        " so bounces find it (default: bounces@ the From domain)",
    ),
    Setting("GATEWAY_DKIM_DOMAIN", "", "DKIM signing domain"),
    Setting("GATEWAY_DKIM_SELECTOR", "", "DKIM selector"),
    Setting("GATEWAY_DKIM_KEY_FILE", "", "DKIM private key (PEM)"),
    Setting(
        "GATEWAY_RETRY_SCHEDULE",
        "60,300,1800,7200",
        "comma-separated waits between delivery attempts after a temporary failure (seconds,"
        " or 15m, 2h); the last one repeats until GATEWAY_RETRY_MAX_AGE",
    ),
    Setting("GATEWAY_RETRY_MAX_AGE", "3d", "give up on a message this long after it was accepted"),
    Setting(
        "GATEWAY_SOFT_BOUNCE_LIMIT",
        "3",
        "messages to one address that give up on temporary failures within 30 days before it is"
        " suppressed (soft_bounce); 0 never suppresses",
    ),
    Setting(
        "GATEWAY_LEASE_SECONDS",
        "300",
        "how long a worker holds the messages it claimed; a crashed worker's return after it",
    ),
    Setting(
        "GATEWAY_MARKETING_DAILY_CAP",
        "3",
        "marketing messages to one address in any 24 hours; 0 turns the cap off",
    ),
    Setting(
        "GATEWAY_AD_LABEL",
        "[QC]",
        "subject label of advertising mail (Decree 91/2020); empty turns it off",
    ),
    Setting(
        "GATEWAY_DEFAULT_LANGUAGE",
        "vi",
        "language of new contacts and of mail to unknown addresses (vi or en)",
    ),
    Setting(
        "GATEWAY_POLICY_VERSION", "1", "version of the privacy policy recorded with each consent"
    ),
    Setting(
        "GATEWAY_RENDER_TIMEOUT",
        "5",
        "seconds one message may take to render and scan; a template that takes longer is"
        " refused and nothing is queued",
    ),
    Setting(
        "GATEWAY_MAX_BODY_BYTES",
        "2000000",
        "largest html and largest text body of one message, in bytes (UTF-8)",
    ),
    Setting(
        "GATEWAY_DNS_RESOLVER",
        "",
        "host:port of the DNS server `gateway check --dns` asks (default: the system's)",
    ),
    Setting(
        "GATEWAY_RETENTION_DAYS",
        "365",
        "`gateway purge` erases contacts who stopped using the service this many days ago",
    ),
)


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///./gateway.db"
    smtp_url: str = "maildir://./var/mail"
    secret_keys: tuple[str, ...] = ()
    base_url: str = "http://127.0.0.1:8000"
    from_address: str = "no-reply@localhost"
    from_name: str = "Gateway"
    first_party_domains: tuple[str, ...] = ()
    link_domains: tuple[str, ...] = ()
    sender_name: str = "Gateway"
    sender_postal_address: str = ""
    sender_phone: str = ""
    sender_website: str = ""
    refusal_address: str = ""
    inbound_smtp: str = ""
    submission_smtp: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    submission_max_bytes: int = 25 * 1024 * 1024
    dkim_domain: str = ""
    dkim_selector: str = ""
    dkim_key_file: str = ""
    retry_schedule: tuple[float, ...] = (60, 300, 1800, 7200)
    retry_max_age: float = 3 * 86400
    soft_bounce_limit: int = 3
    lease_seconds: float = 300.0
    bounce_address: str = ""
    marketing_daily_cap: int = 3
    ad_label: str = "[QC]"
    default_language: str = "vi"
    policy_version: str = "1"
    retention_days: int = 365
    render_timeout: float = 5.0
    max_body_bytes: int = 2_000_000
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def from_domain(self) -> str:
        return self.from_address.rpartition("@")[2].lower()

    @property
    def base_host(self) -> str:
        return (urlsplit(self.base_url).hostname or "").lower()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = dict(os.environ if environ is None else environ)

        def get(name: str) -> str:
            default = next(s.default for s in SETTINGS if s.env == name)
            return env.get(name, "").strip() or default

        name, address = parseaddr(get("GATEWAY_FROM"))
        if "@" not in address:
            raise ConfigError(
                f"GATEWAY_FROM={get('GATEWAY_FROM')!r} has no email address; use 'Name <addr@domain>'"
            )
        base_url = get("GATEWAY_BASE_URL").rstrip("/")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"GATEWAY_BASE_URL={base_url!r} must be an http(s) URL such as https://mail.example.vn"
            )
        if parts.scheme == "http" and not _is_local(parts.hostname):
            # LU-2: one-click links are https, except on a developer's own machine.
            raise ConfigError(
                f"GATEWAY_BASE_URL={base_url!r} must use https (http is for localhost only)"
            )

        def number(name: str, parse: Callable[[str], Any]) -> Any:
            try:
                value = parse(get(name))
            except ValueError:
                raise ConfigError(f"{name}={get(name)!r} is not a number") from None
            if (isinstance(value, tuple) and any(v < 0 for v in value)) or (
                not isinstance(value, tuple) and value < 0
            ):
                raise ConfigError(f"{name}={get(name)!r} must be 0 or more")
            return value

        schedule = number("GATEWAY_RETRY_SCHEDULE", lambda v: tuple(_duration(x) for x in _csv(v)))
        max_age = number("GATEWAY_RETRY_MAX_AGE", _duration)
        cap = number("GATEWAY_MARKETING_DAILY_CAP", int)
        soft_limit = number("GATEWAY_SOFT_BOUNCE_LIMIT", int)
        lease = number("GATEWAY_LEASE_SECONDS", _duration)
        if lease < 1:
            raise ConfigError("GATEWAY_LEASE_SECONDS must be at least 1")
        dkim = {
            k: get(k)
            for k in ("GATEWAY_DKIM_DOMAIN", "GATEWAY_DKIM_SELECTOR", "GATEWAY_DKIM_KEY_FILE")
        }
        if any(dkim.values()) and not all(dkim.values()):
            missing = ", ".join(k for k, v in dkim.items() if not v)
            raise ConfigError(f"DKIM is half configured: set {missing} too (or none of the three)")
        bounce_address = (
            get("GATEWAY_BOUNCE_ADDRESS") or f"bounces@{address.rpartition('@')[2].lower()}"
        )
        if bounce_address.count("@") != 1 or "+" in bounce_address.partition("@")[0]:
            raise ConfigError(
                f"GATEWAY_BOUNCE_ADDRESS={bounce_address!r} must be one address without '+'"
                " (the gateway adds +TOKEN per message)"
            )
        retention = number("GATEWAY_RETENTION_DAYS", int)
        render_timeout = number("GATEWAY_RENDER_TIMEOUT", _duration)
        if render_timeout <= 0:
            raise ConfigError("GATEWAY_RENDER_TIMEOUT must be more than 0 seconds, e.g. 5")
        max_body = number("GATEWAY_MAX_BODY_BYTES", int)
        if max_body < 1:
            raise ConfigError("GATEWAY_MAX_BODY_BYTES must be at least 1, e.g. 2000000")
        submission_max = number("GATEWAY_SUBMISSION_MAX_BYTES", int)
        if submission_max < 1024:
            raise ConfigError(
                "GATEWAY_SUBMISSION_MAX_BYTES must be at least 1024, e.g. 26214400 (25 MB)"
            )
        submission = get("GATEWAY_SUBMISSION_SMTP")
        tls = {k: get(k) for k in ("GATEWAY_TLS_CERT", "GATEWAY_TLS_KEY")}
        if any(tls.values()) and not all(tls.values()):
            missing = ", ".join(k for k, v in tls.items() if not v)
            raise ConfigError(f"TLS is half configured: set {missing} too (or neither)")
        if submission and not all(tls.values()):
            raise ConfigError(
                "GATEWAY_SUBMISSION_SMTP needs GATEWAY_TLS_CERT and GATEWAY_TLS_KEY: applications"
                " send an API key as their password, so the submission port speaks only after"
                " STARTTLS"
            )
        language = get("GATEWAY_DEFAULT_LANGUAGE")
        if language not in ("vi", "en"):
            raise ConfigError("GATEWAY_DEFAULT_LANGUAGE must be vi or en")
        from_domain = address.rpartition("@")[2].lower()
        # The gateway's own links (GATEWAY_BASE_URL) are always first party: the list adds to
        # them, it never takes them away. Unset, the From domain is first party too.
        first_party = tuple(
            dict.fromkeys(
                d
                for d in (
                    *(
                        _domains("GATEWAY_FIRST_PARTY_DOMAINS", get("GATEWAY_FIRST_PARTY_DOMAINS"))
                        or (from_domain,)
                    ),
                    (parts.hostname or "").lower(),
                )
                if d
            )
        )
        values: dict[str, object] = dict(
            database_url=get("GATEWAY_DATABASE_URL"),
            smtp_url=get("GATEWAY_SMTP_URL"),
            secret_keys=_csv(get("GATEWAY_SECRET_KEYS")),
            base_url=base_url,
            from_address=address,
            from_name=name,
            first_party_domains=first_party,
            link_domains=_domains("GATEWAY_LINK_DOMAINS", get("GATEWAY_LINK_DOMAINS")),
            sender_name=get("GATEWAY_SENDER_NAME") or name or from_domain,
            sender_postal_address=get("GATEWAY_SENDER_POSTAL_ADDRESS"),
            sender_phone=get("GATEWAY_SENDER_PHONE"),
            sender_website=get("GATEWAY_SENDER_WEBSITE") or base_url,
            refusal_address=get("GATEWAY_REFUSAL_ADDRESS") or f"unsubscribe@{from_domain}",
            inbound_smtp=get("GATEWAY_INBOUND_SMTP"),
            submission_smtp=submission,
            tls_cert=tls["GATEWAY_TLS_CERT"],
            tls_key=tls["GATEWAY_TLS_KEY"],
            submission_max_bytes=submission_max,
            dkim_domain=get("GATEWAY_DKIM_DOMAIN"),
            dkim_selector=get("GATEWAY_DKIM_SELECTOR"),
            dkim_key_file=get("GATEWAY_DKIM_KEY_FILE"),
            retry_schedule=schedule or (60.0,),
            retry_max_age=max_age,
            marketing_daily_cap=cap,
            soft_bounce_limit=soft_limit,
            lease_seconds=lease,
            bounce_address=bounce_address.lower(),
            ad_label=env.get("GATEWAY_AD_LABEL", "[QC]").strip(),
            default_language=language,
            policy_version=get("GATEWAY_POLICY_VERSION"),
            retention_days=retention,
            render_timeout=render_timeout,
            max_body_bytes=max_body,
        )
        known = {f.name for f in fields(cls)}
        for key, value in overrides.items():
            if key not in known:
                raise ConfigError(f"unknown setting {key!r}")
            values[key] = value
        settings = cls(**values)  # type: ignore[arg-type]
        _check_header_settings(env)
        if not settings.secret_keys:
            return _with_dev_key(settings)
        for i, key in enumerate(settings.secret_keys, 1):
            _check_secret_key(key, i)
        return settings


def weak_secret_key(key: str) -> str | None:
    """Why a signing key is too weak ("short" or "guessable"), or None: the one rule that
    settings (which refuse it) and `gateway check` (which reports it) both apply."""
    if len(key) < MIN_SECRET_KEY_LENGTH:
        return "short"
    if len(set(key)) < 8:
        return "guessable"
    return None


def _check_secret_key(key: str, position: int) -> None:
    """A key signs every unsubscribe and preference link: one that can be guessed lets a
    stranger forge them. Refused with the way to make a good one."""
    problem = {
        "short": f"is {len(key)} characters long; it needs at least {MIN_SECRET_KEY_LENGTH}",
        "guessable": "repeats a few characters: it is easy to guess",
        None: None,
    }[weak_secret_key(key)]
    if problem:
        raise ConfigError(
            f"GATEWAY_SECRET_KEYS: key {position} {problem}; make one with"
            ' python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )


def _check_header_settings(env: Mapping[str, str]) -> None:
    """Settings that are written into message headers or the footer hold no control
    characters: a line break there would start a header of its own in every message."""
    for name in (
        "GATEWAY_FROM",
        "GATEWAY_SENDER_NAME",
        "GATEWAY_SENDER_POSTAL_ADDRESS",
        "GATEWAY_SENDER_PHONE",
        "GATEWAY_SENDER_WEBSITE",
        "GATEWAY_REFUSAL_ADDRESS",
        "GATEWAY_BOUNCE_ADDRESS",
        "GATEWAY_AD_LABEL",
        "GATEWAY_DKIM_DOMAIN",
        "GATEWAY_DKIM_SELECTOR",
    ):
        value = env.get(name, "").strip()
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ConfigError(
                f"{name} holds a line break or another control character: write it on one line"
            )


def _with_dev_key(settings: Settings) -> Settings:
    """Keep a generated key beside the database so links survive restarts in development."""
    from dataclasses import replace

    path = Path(DEV_SECRET_FILE)
    if path.exists():
        key = path.read_text().strip()
    else:
        key = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
    if str(path.resolve()) not in _WARNED:  # once per process, not once per Settings
        _WARNED.add(str(path.resolve()))
        log.warning(
            "GATEWAY_SECRET_KEYS is unset: using the development key in %s, fine on this"
            " machine only (`gateway check` says what to set before sending real mail)",
            path.resolve(),
        )
    return replace(settings, secret_keys=(key,))
