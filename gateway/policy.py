"""Who may be mailed what: suppression and consent decisions (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .records import Standing

CATEGORIES = ("marketing", "transactional", "policy")

# Suppression reasons that stop even a notice of a policy change (DESIGN: policy mail is
# stopped by erasure and hard bounce only; the law obliges us to tell everyone else).
STOPS_POLICY_MAIL = frozenset({"erased", "hard_bounce"})


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""
    # The person was erased (PD-3): whatever records this decision must not name them.
    erased: bool = False
    # What stopped it, for counting (a dry run): the suppression's reason (erased,
    # hard_bounce, complaint, one_click…), "not_contact" or "not_subscribed".
    code: str = ""


ALLOW = Decision(True)

DAY = 86400.0


def cap_words(cap: int) -> str:
    """The frequency cap in words, for the reason of a message it holds."""
    return (
        f"at most {cap} marketing messages to one address in 24 hours (GATEWAY_MARKETING_DAILY_CAP)"
    )


def cap_opens(times: Sequence[float], cap: int) -> float | None:
    """When one more marketing message may go to an address that was sent marketing mail
    at `times` (the last 24 hours' and any still ahead of it): None when it may go now."""
    if cap <= 0 or len(times) < cap:
        return None
    return sorted(times)[-cap] + DAY


def decide(
    category: str, topic_id: int | None, standing: Standing, *, opt_in_confirmation: bool = False
) -> Decision:
    """May a message of `category` (and `topic_id`, for marketing) go to this address now?
    The same answer at accept time and again just before SMTP (ST-1). The mail that asks
    an erased person to confirm their own new sign-up passes the tombstone (it is how they
    come back, PD-3); every other suppression for all mail stops it."""
    for s in standing.suppressions:
        if s.reason == "erased" and opt_in_confirmation and category == "transactional":
            continue
        if s.reason == "erased":
            return Decision(
                False, "erased: the person asked for their data to be deleted", True, "erased"
            )
        if category == "policy":
            if s.scope == "all" and s.reason in STOPS_POLICY_MAIL:
                return Decision(False, f"suppressed for all mail ({s.reason})", code=s.reason)
            continue
        if s.scope == "all":
            return Decision(False, f"suppressed for all mail ({s.reason})", code=s.reason)
        if category == "marketing":
            if s.scope == "marketing":
                return Decision(False, f"refused all promotional mail ({s.reason})", code=s.reason)
            if s.scope == "topic" and s.topic_id == topic_id:
                return Decision(False, f"refused this topic ({s.reason})", code=s.reason)
    if category == "marketing":
        if standing.contact is None:
            return Decision(
                False,
                "not a contact: marketing mail needs the person's recorded opt-in",
                code="not_contact",
            )
        status = standing.subscriptions.get(topic_id) if topic_id is not None else None
        if status != "subscribed":
            state = status or "no subscription"
            return Decision(
                False,
                f"not subscribed to the topic ({state}): marketing mail needs the person's opt-in",
                code="not_subscribed",
            )
    if category == "policy" and standing.contact is None:
        return Decision(
            False,
            "not a contact: policy notices go to people whose data we hold",
            code="not_contact",
        )
    return ALLOW
