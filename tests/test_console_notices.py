"""A link cannot make a console page say something that did not happen."""

from __future__ import annotations

import pytest
from console_helpers import cheap_hashing, console_client  # noqa: F401

from gateway import Gateway

pytestmark = pytest.mark.usefixtures("cheap_hashing")


async def test_a_link_cannot_put_its_own_words_on_the_staff_or_keys_page(gw: Gateway):
    """Content injection: ?removed= / ?revoked= are shown as a notice whatever they say."""
    lure = "Your password expired: call 0900 000 000 to restore access"
    async with console_client(gw, "admin") as c:
        for path in (f"/admin/staff?removed={lure}", f"/admin/keys?revoked={lure}"):
            r = await c.get(path)
            assert lure not in r.text, path
