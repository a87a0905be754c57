"""Records built from database rows."""

from __future__ import annotations

from typing import Any

from ..records import Contact


def _contact(row: Any) -> Contact:
    return Contact(row["id"], row["uid"], row["email"], row["name"], row["language"], row["status"])
