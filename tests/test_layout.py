"""The layout keeps its promises: pure modules load no database or network code."""

from __future__ import annotations

import subprocess
import sys

PURE = ["records", "policy", "content", "tokens", "mime", "render"]
IO = ("databases", "sqlalchemy", "aiosqlite", "asyncpg", "aiosmtplib", "aiosmtpd", "starlette")


def test_pure_modules_import_no_database_or_network_module():
    code = (
        "import sys\n"
        + "".join(f"import gateway.{name}\n" for name in PURE)
        + f"print(sorted(m for m in sys.modules if m.split('.')[0] in {IO!r}"
        " or m.startswith('gateway.store') or m.startswith('gateway.transport')))"
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
