"""A plain install gets every module and every template (scripts/smoke-wheel.sh installs the
wheel and runs it; this checks the list it is built from)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def configured_packages() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(config["packages"])


def test_every_python_package_is_in_the_wheel():
    found = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "gateway").rglob("__init__.py")
    }
    assert found - configured_packages() == set()


def test_every_template_folder_is_in_the_wheel():
    found = {
        ".".join(("gateway", *path.relative_to(ROOT).parts))
        for path in [ROOT / "templates", *(ROOT / "templates").rglob("*")]
        if path.is_dir() and not path.name.startswith((".", "__"))
    }
    assert found - configured_packages() == set()
