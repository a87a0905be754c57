"""Where the gateway's own templates (pages and mail) and static files are found."""

from __future__ import annotations

from pathlib import Path


def templates_dir() -> Path:
    """`gateway/templates` in an installed wheel; `templates/` beside the package in a source
    checkout (also under an editable install)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "mail").is_dir() and (candidate / "web").is_dir():
            return candidate
    raise RuntimeError(
        f"the gateway's templates are missing (looked in {here / 'templates'} and"
        f" {here.parent / 'templates'}): reinstall the package"
    )


TEMPLATES = templates_dir()
