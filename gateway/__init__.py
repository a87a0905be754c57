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
        ConfigError,
        Conflict,
        GatewayError,
        HeaderInjection,
        InvalidAddress,
        InvalidInput,
        InvalidMessage,
        MessageRefused,
        NotFound,
        StoreError,
        TemplateError,
        TooLarge,
        UnknownTopic,
    )
    from .render import OutOfTime
    from .tokens import InvalidToken

__version__ = "0.1.0"

# Where each public name lives. They are imported on first use, so importing a pure module
# (gateway.policy, gateway.render…) does not load the database or the network code.
_HOMES = {
    "Gateway": "core",
    "ImportReport": "core",
    "SendRequest": "accept",
    "SendResult": "accept",
    "Settings": "config",
    "ConfigError": "errors",
    "Conflict": "errors",
    "TooLarge": "errors",
    "GatewayError": "errors",
    "HeaderInjection": "errors",
    "InvalidAddress": "errors",
    "InvalidInput": "errors",
    "InvalidMessage": "errors",
    "MessageRefused": "errors",
    "NotFound": "errors",
    "StoreError": "errors",
    "TemplateError": "errors",
    "UnknownTopic": "errors",
    "InvalidToken": "tokens",
    "OutOfTime": "render",
}

__all__ = [
    "ConfigError",
    "Conflict",
    "TooLarge",
    "Gateway",
    "GatewayError",
    "HeaderInjection",
    "ImportReport",
    "InvalidAddress",
    "InvalidInput",
    "InvalidMessage",
    "InvalidToken",
    "MessageRefused",
    "NotFound",
    "OutOfTime",
    "SendRequest",
    "SendResult",
    "Settings",
    "StoreError",
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
