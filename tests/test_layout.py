"""The layout keeps its promises: each I/O library has one door, pure modules load no
database or network code, and packages keep their code in named modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PURE = ["records", "policy", "content", "tokens", "mime", "render"]
IO = ("databases", "sqlalchemy", "aiosqlite", "asyncpg", "aiosmtplib", "aiosmtpd", "starlette")


def test_pure_modules_import_no_database_or_network_module():
    code = (
        "import sys\n"
        + "".join(f"import gateway.{name}\n" for name in PURE)
        + f"print(sorted(m for m in sys.modules if m.split('.')[0] in {IO!r}"
        " or m.startswith(('gateway.store', 'gateway.transport', 'gateway.smtp', 'gateway.web'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_the_package_still_offers_its_public_names_at_the_top():
    import gateway

    assert gateway.Gateway.__name__ == "Gateway"
    assert set(gateway.__all__) == set(gateway._HOMES)
    assert set(gateway.__all__) <= set(dir(gateway))


# -- imports point one way ---------------------------------------------------------------------

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"
TESTS = Path(__file__).resolve().parent

# Each library that does I/O has one door in the package (STYLE.md, "Ours").
DOORS = {
    "databases": "store",
    "sqlalchemy": "store",
    "aiosmtplib": "transport",
    "aiosmtpd": "smtp",
    "starlette": "web",
}


def imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports in a file, at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def modules_importing(library: str) -> set[str]:
    return {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if library in imports(path)
    }


def test_each_io_library_is_imported_only_by_its_own_package():
    """Only store/ imports databases and sqlalchemy, only transport/ aiosmtplib, only smtp/
    aiosmtpd, only web/ starlette."""
    for library, door in DOORS.items():
        outside = {m for m in modules_importing(library) if m.split("/")[0] != door}
        assert not outside, f"{library} is imported outside gateway/{door}/: {sorted(outside)}"


def test_pure_modules_do_no_io():
    for module in ("policy.py", "content.py", "mime.py", "addresses.py"):
        assert not imports(PACKAGE / module) & {
            "databases",
            "aiosmtplib",
            "asyncio",
            "os",
            "socket",
        }, module


def test_package_inits_only_re_export_what_their_modules_define():
    """transport/ and smtp/ keep their code in named modules; the __init__ lists the names
    (with __all__) and holds no code that would make an import-order cycle."""
    for package in ("transport", "smtp"):
        init = PACKAGE / package / "__init__.py"
        body = ast.parse(init.read_text()).body
        for node in body[1:]:
            reexport = isinstance(node, ast.ImportFrom) and node.level == 1
            names = isinstance(node, ast.Assign) and [
                t.id for t in node.targets if isinstance(t, ast.Name)
            ] == ["__all__"]
            assert reexport or names, f"{init}: line {node.lineno} is not a re-export"
        assert "noqa: E402" not in init.read_text()


def test_the_smtp_protocol_of_aiosmtpd_is_customized_once_and_the_tests_server_uses_it():
    """One subclass of aiosmtpd's SMTP, in gateway/smtp/; the tests' recording server builds
    on the package's listener instead of copying it."""
    from smtp_server import RecordingSMTPServer

    from gateway.smtp.server import Listener

    subclasses = []
    for path in [*PACKAGE.rglob("*.py"), *TESTS.glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                ast.unparse(base).endswith("SMTP") for base in node.bases
            ):
                subclasses.append(f"{path.relative_to(PACKAGE.parent).as_posix()}:{node.name}")
    assert subclasses == ["gateway/smtp/server.py:SMTP"]
    assert issubclass(RecordingSMTPServer, Listener)
