"""What the worker's records leave out: an address that must not be written down (PD-3)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .bounces import classify_reply
from .records import OutboxItem
from .store import Store
from .tokens import Signer

# The mail that asks an address to confirm a sign-up from the public form. Sent to an address
# nobody has confirmed, it is recorded without the address once final (see `withheld`).
OPT_IN_CONFIRMATION = "confirm"
# What stands in for a server's reply in a record that must not name the recipient: the
# reply's free text often quotes the address ("550 5.1.1 <an@...>: unknown").
WITHHELD = "reply text not kept: it may quote the address"


async def withheld(
    store: Store, signer: Signer, items: Sequence[OutboxItem]
) -> tuple[set[int], set[int]]:
    """The rows of a batch whose records must not hold the address (PD-3), and of those
    the rows an erasure scrubbed while they were on the wire. Withheld: mail to an
    address under an erasure tombstone (the person erased meanwhile, or a confirmation
    of their own new sign-up), and a sign-up confirmation to an address no contact
    holds (a stranger may have typed it into the form). Ordinary mail without a contact
    (a guest's receipt) keeps its address: bounces are matched and counted by it
    (BN-3, BN-5). Runs inside the outcome's transaction, after taking each address's
    lock: an erasure committed meanwhile is seen here, and one starting now waits for
    this transaction, then scrubs what it wrote."""
    if not items:
        return set(), set()
    hashes = {item.email: signer.address_hashes(item.email) for item in items if item.email}
    gone, erased = await store.erasures_among([item.id for item in items], hashes)
    unconfirmed = {
        item.email
        for item in items
        if item.template == OPT_IN_CONFIRMATION and item.contact_id is None and item.email
    }
    known = await store.contact_addresses(sorted(unconfirmed)) if unconfirmed else set()
    withheld = {
        item.id
        for item in items
        if item.id in gone
        or not item.email
        or item.email in erased
        or (item.email in unconfirmed and item.email not in known)
    }
    return withheld, gone & withheld


def without_address(text: str, email: str | None, said: str | None) -> str:
    """`text` (a reason the worker wrote) with the server's free text replaced by its
    enhanced status code alone, and the address itself (in any case) taken out."""
    if said:
        _, status = classify_reply(None, said)
        text = text.replace(said, f"{status} ({WITHHELD})" if status else f"({WITHHELD})")
    if email:
        text = re.sub(re.escape(email), "<recipient>", text, flags=re.IGNORECASE)
    return text
