"""Gateway: an email preference center and mailing gateway that keeps a privacy policy's
promises for every message."""

from .accept import SendRequest, SendResult
from .config import Settings
from .core import Gateway, ImportReport
from .errors import (
    GatewayError,
    HeaderInjection,
    InvalidAddress,
    InvalidInput,
    InvalidMessage,
    MessageRefused,
    TemplateError,
    UnknownTopic,
)

__version__ = "0.1.0"

__all__ = [
    "Gateway",
    "GatewayError",
    "HeaderInjection",
    "ImportReport",
    "InvalidAddress",
    "InvalidInput",
    "InvalidMessage",
    "MessageRefused",
    "SendRequest",
    "SendResult",
    "Settings",
    "TemplateError",
    "UnknownTopic",
]
