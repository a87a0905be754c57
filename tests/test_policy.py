"""Who may be mailed what: the decision table of DESIGN.md's message categories."""

from __future__ import annotations

import pytest

from gateway.policy import decide
from gateway.store import Contact, Standing, Suppression

CONTACT = Contact(1, "uid", "an@example.vn", "An", "vi", "active")
NEWS, DEALS = 1, 2


def standing(*suppressions: Suppression, subscribed=(NEWS,), contact=CONTACT) -> Standing:
    return Standing(contact, list(suppressions), {t: "subscribed" for t in subscribed})


@pytest.mark.parametrize(
    ("category", "topic", "state", "allowed"),
    [
        ("marketing", NEWS, standing(), True),
        ("marketing", DEALS, standing(), False),  # AD-4: no opt-in to this topic
        ("marketing", NEWS, standing(contact=None, subscribed=()), False),
        ("marketing", NEWS, Standing(CONTACT, [], {NEWS: "pending"}), False),
        ("marketing", NEWS, Standing(CONTACT, [], {NEWS: "unsubscribed"}), False),
        ("marketing", NEWS, standing(Suppression("marketing", None, "unsubscribe")), False),
        ("marketing", NEWS, standing(Suppression("topic", NEWS, "preferences")), False),
        ("marketing", NEWS, standing(Suppression("topic", DEALS, "preferences")), True),
        ("marketing", NEWS, standing(Suppression("all", None, "hard_bounce")), False),
        ("marketing", NEWS, standing(Suppression("all", None, "erased")), False),
        (
            "transactional",
            None,
            standing(Suppression("marketing", None, "unsubscribe")),
            True,
        ),  # promise 6
        ("transactional", None, standing(Suppression("topic", NEWS, "preferences")), True),
        ("transactional", None, standing(contact=None, subscribed=()), True),
        ("transactional", None, standing(Suppression("all", None, "manual")), False),
        ("transactional", None, standing(Suppression("all", None, "hard_bounce")), False),
        ("transactional", None, standing(Suppression("all", None, "erased")), False),
        ("policy", None, standing(Suppression("marketing", None, "unsubscribe")), True),  # PD-5
        ("policy", None, standing(Suppression("all", None, "manual")), True),
        ("policy", None, standing(Suppression("all", None, "hard_bounce")), False),
        ("policy", None, standing(Suppression("all", None, "erased")), False),
        ("policy", None, standing(contact=None, subscribed=()), False),
    ],
)
def test_decision_table(category, topic, state, allowed):
    decision = decide(category, topic, state)
    assert decision.allowed is allowed
    assert bool(decision.reason) is (not allowed)
