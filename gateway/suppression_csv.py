"""A CSV of suppressions (email[,reason], with or without a header line) added to the list:
what the admin API and the console's upload both do. Bad rows are reported by line and
skipped; the file as a whole is refused only when it cannot be read or is too long."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import addresses
from .errors import InvalidInput, TooLarge

if TYPE_CHECKING:
    from .core import Gateway

MAX_ROWS = 100_000


@dataclass
class Imported:
    added: int = 0
    already: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line, why)


async def import_suppressions(
    gw: Gateway, text: str, *, source: str, check_reason: Callable[[str], str], parts: str
) -> Imported:
    """Add every good row with `source`; `check_reason` refuses a reason the caller does not
    take (InvalidInput); `parts` says how to split a file that is too long."""
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as exc:
        raise InvalidInput(f"the CSV cannot be read: {exc}") from None
    if len(rows) > MAX_ROWS:
        raise TooLarge(f"the CSV has more than {MAX_ROWS} rows: {parts}")
    done = Imported()
    for line, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or (line == 1 and cells[0].lower() == "email"):
            continue
        try:
            if len(cells) > 2:
                raise InvalidInput("more than two fields: expected email[,reason]")
            email = addresses.normalize(cells[0])
            reason = check_reason(cells[1] if len(cells) > 1 and cells[1] else "manual")
        except InvalidInput as exc:
            done.bad.append((line, str(exc)))
            continue
        if await gw.suppress(email, reason=reason, source=source):
            done.added += 1
        else:
            done.already += 1
    if done.added >= 1000:
        await gw.store.analyze("suppressions")
    return done
