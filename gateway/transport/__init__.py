"""Message transports: the protocol and records (base), an SMTP pool (smtp), a maildir and
memory (local), and the URL that picks one (factory)."""

from .base import Envelope, Outcome, SMTPSettings, Transport
from .factory import transport_from_url
from .local import MaildirTransport, MemoryTransport
from .smtp import SMTPTransport

__all__ = [
    "Envelope",
    "MaildirTransport",
    "MemoryTransport",
    "Outcome",
    "SMTPSettings",
    "SMTPTransport",
    "Transport",
    "transport_from_url",
]
