"""The public surface is what the docs say: every name, and every exception the gateway raises."""

from __future__ import annotations

import importlib
import pkgutil
import re

import gateway
from gateway.errors import GatewayError

# DESIGN.md's "Public surface": the facade, its records, and the whole error tree.
PUBLIC = {
    "Gateway",
    "ImportReport",
    "SendRequest",
    "SendResult",
    "Settings",
    "GatewayError",
    "ConfigError",
    "InvalidInput",
    "InvalidAddress",
    "UnknownTopic",
    "InvalidMessage",
    "HeaderInjection",
    "TemplateError",
    "OutOfTime",
    "Conflict",
    "TooLarge",
    "NotFound",
    "StoreError",
    "InvalidToken",
    "MessageRefused",
}


def gateway_errors() -> set[type[GatewayError]]:
    """Every GatewayError subclass defined anywhere in the package."""
    for module in pkgutil.walk_packages(gateway.__path__, "gateway."):
        # __main__ runs the CLI; migration scripts run only inside alembic
        if module.name != "gateway.__main__" and ".migrations" not in module.name:
            importlib.import_module(module.name)
    found: set[type[GatewayError]] = set()
    todo = [GatewayError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("gateway.") and cls not in found:
            found.add(cls)
            todo.extend(cls.__subclasses__())
    return found


def test_public_names():
    assert set(gateway.__all__) >= {"Gateway", "SendResult", "GatewayError", "InvalidInput"}
    for name in gateway.__all__:
        assert hasattr(gateway, name)


def test_the_public_surface_is_exactly_the_documented_names():
    assert set(gateway.__all__) == PUBLIC
    assert len(gateway.__all__) == len(PUBLIC)


def test_every_exception_the_gateway_raises_is_importable_from_the_package():
    for cls in gateway_errors():
        assert cls.__name__ in gateway.__all__, cls
        assert getattr(gateway, cls.__name__) is cls


def drawn_tree() -> dict[str, int]:
    """Class name -> indentation of each node drawn in errors.py's docstring, for the nodes
    that say when the class is raised (the text after the name)."""
    doc = importlib.import_module("gateway.errors").__doc__ or ""
    nodes = (re.match(r"^([\s│├└─]*)([A-Z]\w+) {2,}\S", line) for line in doc.splitlines())
    return {node[2]: len(node[1]) for node in nodes if node}


def test_the_error_tree_in_errors_docstring_draws_every_exception_and_says_when():
    tree = drawn_tree()
    for cls in gateway_errors():
        assert cls.__name__ in tree, f"{cls.__name__} is not drawn in gateway/errors.py"
        parent = next(base for base in cls.__mro__[1:] if issubclass(base, Exception))
        if parent is not Exception:
            # drawn one level below its parent, and after it
            assert tree[cls.__name__] > tree[parent.__name__], (parent, cls)
            assert list(tree).index(parent.__name__) < list(tree).index(cls.__name__)


def test_the_core_names_no_http_status():
    """The web layer maps exception classes to statuses (gateway/web); an error class
    carries no 4xx or 5xx of its own."""
    for cls in gateway_errors():
        status = getattr(cls, "status", None)
        assert not isinstance(status, int), f"{cls.__name__}.status = {status}"
