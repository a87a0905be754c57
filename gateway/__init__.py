"""Gateway: an email preference center and mailing gateway that keeps a privacy policy's
promises for every message."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Where each public name lives. They are imported on first use, so importing a pure module
# (gateway.policy, gateway.render…) does not load the database or the network code.
_HOMES = {
    "Gateway": "core",
    "ImportReport": "core",
    "SendRequest": "accept",
    "SendResult": "accept",
    "Settings": "config",
    "GatewayError": "errors",
    "HeaderInjection": "errors",
    "InvalidAddress": "errors",
    "InvalidInput": "errors",
    "InvalidMessage": "errors",
    "MessageRefused": "errors",
    "TemplateError": "errors",
    "UnknownTopic": "errors",
}

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'gateway' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
