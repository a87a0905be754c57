"""The gateway's exceptions, one small tree (all importable from `gateway`).

    GatewayError                 base of everything the gateway raises on purpose
    ├── ConfigError              a GATEWAY_* setting is missing or malformed, e.g. a DKIM
    │                            key file that does not load (also ValueError)
    ├── InvalidInput             the caller gave something unusable; nothing was written
    │   │                        (also ValueError)
    │   ├── InvalidAddress       an email address that does not parse
    │   ├── UnknownTopic         a topic slug that does not exist
    │   ├── InvalidMessage       empty body, marketing without a topic, reserved header, ...
    │   │   ├── HeaderInjection  CR or LF in a header value (MF-2)
    │   │   └── TemplateError    a template that does not compile or render
    │   │       └── OutOfTime    a render or scan that passed GATEWAY_RENDER_TIMEOUT
    │   │                        (defined in gateway.render)
    │   ├── TooLarge             over a size limit, e.g. a CSV with too many rows
    │   └── Conflict             already exists or already done: a policy version published
    │                            twice, a suppression that an erasure or refusal keeps
    ├── NotFound                 a contact, topic, API key or suppression that is not there
    │                            (also LookupError)
    ├── StoreError               the database refused: not initialised, locked, a row that
    │                            exists already or was made by another request meanwhile
    ├── InvalidToken             a link token that is tampered with, expired, of another
    │                            purpose or unknown (defined in gateway.tokens)
    └── MessageRefused           `SendResult.raise_for_status()` on a suppressed or blocked
                                 message

Expected outcomes are values, not exceptions: a suppressed or blocked message is a
`SendResult` with a reason; `SendResult.raise_for_status()` turns it into `MessageRefused`.
HTTP statuses are the web layer's business (gateway/web maps each class to one).
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


class TooLarge(InvalidInput):
    """Raised when an input is over a size limit (a CSV with more rows than taken at once)."""


class Conflict(InvalidInput):
    """Raised when something that must be unique already exists, or is already done."""


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
