"""The transport a URL names: SMTP pool, maildir or memory."""

from __future__ import annotations

from .base import Transport, _bad, _parse_maildir
from .local import MaildirTransport, MemoryTransport
from .smtp import SMTPTransport


def transport_from_url(url: str, *, concurrency: int = 4) -> Transport:
    """Build a transport from a URL; raises ConfigError (a ValueError) for a bad one.

    smtp://[user:pass@]host[:port]   STARTTLS if offered; ?starttls=1 requires it (port 587),
                                     ?starttls=0 never uses it (default port 25); with a
                                     user name STARTTLS is required, and ?tls=none (for a
                                     loopback relay only) sends without it
    smtps://[user:pass@]host[:port]  implicit TLS (default port 465)
        both also take ?timeout=SECONDS and ?verify=0 (skip certificate checks)
    maildir:///abs/path, maildir://./relative/path, memory://
    """
    if not isinstance(url, str) or "://" not in url:
        raise _bad(str(url), "missing scheme://")
    scheme = url.partition("://")[0].lower()
    if scheme in ("smtp", "smtps"):
        return SMTPTransport(url, concurrency=concurrency)
    if scheme == "maildir":
        return MaildirTransport(_parse_maildir(url))
    if scheme == "memory":
        if url.partition("://")[2]:
            raise _bad(url, "memory:// takes nothing after the scheme")
        return MemoryTransport()
    raise _bad(url, f"unknown scheme {scheme!r}")
