"""The public surface is what the docs say, and imports point one way."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway

PACKAGE = Path(gateway.__file__).parent


def test_public_names():
    assert set(gateway.__all__) >= {"Gateway", "SendResult", "GatewayError", "InvalidInput"}
    for name in gateway.__all__:
        assert hasattr(gateway, name)


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def modules_importing(library: str) -> set[str]:
    return {
        str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if library in imports(path)
    }


def test_only_the_store_talks_to_databases():
    assert {m.split("/")[0] for m in modules_importing("databases")} <= {"store"}
    assert {m.split("/")[0] for m in modules_importing("sqlalchemy")} <= {"store"}


def test_only_the_transport_talks_smtp():
    assert {m.split("/")[0] for m in modules_importing("aiosmtplib")} <= {"transport"}


def test_only_the_web_package_uses_starlette():
    assert {m.split("/")[0] for m in modules_importing("starlette")} <= {"web"}


def test_pure_modules_do_no_io():
    for module in ("policy.py", "content.py", "mime.py", "addresses.py"):
        assert not imports(PACKAGE / module) & {
            "databases",
            "aiosmtplib",
            "asyncio",
            "os",
            "socket",
        }, module
