"""The gateway's exceptions, one small tree.

    GatewayError                 base of everything the gateway raises on purpose
    ├── ConfigError              a GATEWAY_* setting is missing or malformed (also ValueError)
    ├── InvalidInput             the caller gave something unusable (also ValueError)
    │   ├── InvalidAddress       an email address that does not parse
    │   ├── UnknownTopic         a topic slug that does not exist
    │   ├── InvalidMessage       empty body, marketing without a topic, reserved header, ...
    │   ├── HeaderInjection      CR or LF in a header value (MF-2)
    │   ├── TemplateError        a template that does not compile or render
    │   └── Conflict             already exists, e.g. a policy version published twice
    ├── NotFound                 a contact or row that is not there (also LookupError)
    └── StoreError               the database refused (not initialised, locked, ...)

Expected outcomes are values, not exceptions: a suppressed or blocked message is a
`SendResult` with a reason; `SendResult.raise_for_status()` turns it into `MessageRefused`.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class: `str(error)` is one line that says what is wrong and what to do."""


class ConfigError(GatewayError, ValueError):
    """Raised when a GATEWAY_* environment variable cannot be used."""


class InvalidInput(GatewayError, ValueError):
    """Raised when input from a caller cannot be accepted; nothing was written."""


class InvalidAddress(InvalidInput):
    """Raised for an email address that is not valid."""


class UnknownTopic(InvalidInput):
    """Raised for a topic slug that does not exist."""


class InvalidMessage(InvalidInput):
    """Raised for a message that cannot be accepted as given."""


class HeaderInjection(InvalidMessage):
    """Raised when a header value carries CR or LF (MF-2)."""


class TemplateError(InvalidMessage):
    """Raised when a subject or body template fails to compile or render."""


class Conflict(InvalidInput):
    """Raised when something that must be unique already exists (answered 409 on the web)."""

    status = 409


class NotFound(GatewayError, LookupError):
    """Raised when a named contact, topic or suppression does not exist."""


class StoreError(GatewayError):
    """Raised when the database cannot do what was asked."""


class MessageRefused(GatewayError):
    """Raised by `SendResult.raise_for_status()` for a suppressed or blocked message."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason
