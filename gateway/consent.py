"""Consent: suppressions and who may lift them, refusals, the consent ledger (PD-1, ST-1..ST-3).

The preference center, sign-up, feedback, the contacts service and the admin tools all
record consent through here, under the one privacy-policy version in force (promise 10).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from . import addresses
from .accept import Accepter
from .catalog import subject
from .config import Settings
from .errors import Conflict, InvalidInput, NotFound
from .policy import decide
from .records import Contact, Topic
from .store import Store
from .tokens import InvalidToken, Signer

SUPPRESSION_SCOPES = ("all", "marketing")
# Refusals recorded by staff (ST-3) stop promotional mail, exactly like a one-click refusal;
# any other manual suppression blocks all mail to the address.
REFUSAL_REASONS = frozenset({"phone", "email", "refusal", "unsubscribe", "complaint"})
# Who may lift a suppression. Staff may lift what staff added (the CLI's and the API's
# sources) and bounces (the address may work again); a refusal the person made themselves
# (one-click, preference page, mailto:, a complaint) or an erasure is lifted only by the
# person: Decree 91 Art. 20 allows no more advertising after a refusal without new consent.
STAFF_SOURCES = frozenset({"admin", "api"})
BOUNCE_REASONS = frozenset({"hard_bounce", "soft_bounce"})
PERSONAL_REASONS = frozenset({"erased", "unsubscribe", "complaint"})


def staff_may_lift(reason: str, source: str) -> bool:
    """A suppression staff may remove: their own (manual, a phone refusal they typed in)
    or a bounce; never an erasure or the person's own refusal."""
    if reason == "erased":
        return False
    if reason in BOUNCE_REASONS:
        return True
    return source in STAFF_SOURCES and reason not in PERSONAL_REASONS


class Consent:
    """Suppressions, refusals and the consent ledger, for every service below."""

    def __init__(
        self, settings: Settings, store: Store, signer: Signer, accepter: Accepter
    ) -> None:
        self.settings = settings
        self.store = store
        self.signer = signer
        self.accepter = accepter

    async def policy_version(self) -> str:
        """The privacy policy version consents are recorded under now (promise 10): the one
        published last (`gateway policy publish`), else GATEWAY_POLICY_VERSION. Read on every
        consent, so a version another process published counts at once."""
        return await self.store.current_policy_version(self.settings.policy_version)

    async def link_holder(self, purpose: str, token: str) -> Contact:
        """The contact a link speaks for; `InvalidToken` when tampered, expired, of another
        purpose, or naming someone no longer here."""
        payload = self.signer.verify(purpose, token)
        uid = payload[0] if isinstance(payload, list) and payload else payload
        contact = await self.store.get_contact_by_uid(uid) if isinstance(uid, str) else None
        if contact is None:
            raise InvalidToken("unknown")
        return contact

    # -- the consent ledger ------------------------------------------------------------------

    async def record(
        self,
        contact: Contact,
        action: str,
        *,
        source: str,
        now: float,
        topic_id: int | None = None,
        ip: str | None = None,
        version: str | None = None,
    ) -> None:
        """One ledger entry under the address's keyed hash, so it outlives an erasure
        (`version` when the consent was given under an earlier one). Call inside a
        transaction."""
        await self.store.record_consent(
            contact,
            subject=self.signer.address_hash(contact.email),
            action=action,
            source=source,
            policy_version=version if version is not None else await self.policy_version(),
            now=now,
            topic_id=topic_id,
            ip=ip,
        )

    async def set_subscription(
        self,
        contact: Contact,
        topic: Topic,
        status: str,
        *,
        source: str,
        now: float,
        ip: str | None = None,
        version: str | None = None,
    ) -> bool:
        """A subscription change and its ledger entry; False when the status already was
        that (nothing written). Call inside a transaction."""
        return await self.store.set_subscription(
            contact,
            topic,
            status,
            subject=self.signer.address_hash(contact.email),
            source=source,
            policy_version=version if version is not None else await self.policy_version(),
            now=now,
            ip=ip,
        )

    # -- refusals ----------------------------------------------------------------------------

    async def refuse(
        self, contact: Contact, *, source: str, ip: str | None = None, reason: str = "unsubscribe"
    ) -> bool:
        """Stop all promotional mail to this person now (OC-5, ST-1): the suppression is
        committed before this returns, and the worker checks it before every hand-over.
        The first refusal is confirmed by one email (ST-2), queued in the same transaction;
        a repeated one changes nothing."""
        now = time.time()
        # ST-2's confirmation is queued as what renders it (the worker renders it at
        # dispatch): this request only writes rows, inside one short transaction.
        confirmation = self.accepter.queue_template(
            contact,
            template="refusal",
            subject=subject("refusal", contact.language),
            context={"received_at": now},
        )

        async def write() -> bool:
            added = await self.suppress_address(
                contact.email, scope="marketing", reason=reason, source=source, now=now
            )
            if not added:
                return False
            await self.record(contact, "opt_out", source=source, now=now, ip=ip)
            await self.accepter.commit(confirmation)
            return True

        # Refusals arriving together share one transaction and one fsync (group commit);
        # each is answered only once its own is committed. On SQLite the same writes run
        # as one step in the database's thread.
        in_thread = self.store.refusal_in_thread(
            email=contact.email,
            email_hash=self.signer.address_hash(contact.email),
            reason=reason,
            source=source,
            now=now,
            contact_id=contact.id,
            ip=ip,
            default_version=self.settings.policy_version,
            rows=confirmation.rows,
            logs=confirmation.logs,
        )
        return await self.store.grouped(write, in_thread)

    async def suppress_address(
        self,
        email: str,
        *,
        scope: str,
        reason: str,
        source: str,
        now: float,
        withheld: bool = False,
    ) -> bool:
        """Add one suppression under the address's keyed hash (and, unless `withheld`, the
        address: PD-3 keeps an erased or unconfirmed one out of the database); False when
        it already stood. Call inside a transaction."""
        return await self.store.add_suppression(
            email=None if withheld else email,
            email_hash=self.signer.address_hash(email),
            scope=scope,
            reason=reason,
            source=source,
            now=now,
        )

    # -- the suppression list, as staff keep it ----------------------------------------------

    async def suppress(
        self, email: str, *, reason: str = "manual", scope: str | None = None, source: str = "admin"
    ) -> bool:
        """Add an address to the suppression list; effective for mail already queued (ST-1).
        Returns False when the same suppression already stood."""
        email = addresses.normalize(email)
        reason = (reason or "manual").strip()
        scope = scope or ("marketing" if reason in REFUSAL_REASONS else "all")
        if scope not in SUPPRESSION_SCOPES:
            raise InvalidInput(f"scope must be one of {', '.join(SUPPRESSION_SCOPES)}")
        if scope == "marketing" and reason in REFUSAL_REASONS:
            contact = await self.store.get_contact(email)
            if contact is not None:
                # ST-3: a refusal by phone or email, recorded by staff, has exactly the
                # effect of a one-click refusal, confirmation email included (ST-2).
                return await self.refuse(contact, source=source, reason=reason)
        async with self.store.transaction():
            return await self.suppress_address(
                email, scope=scope, reason=reason, source=source, now=time.time()
            )

    async def unsuppress(self, email: str) -> int:
        """Lift the suppressions staff may lift (see `staff_may_lift`); a person's own
        refusal or erasure stays, and when nothing else was there it is a `Conflict`."""
        email = addresses.normalize(email)
        found = await self.store.suppressions_of(self.signer.address_hashes(email))
        if not found:
            raise NotFound("the address is not on the suppression list")
        mine = [r["id"] for r in found if staff_may_lift(r["reason"], r["source"])]
        removed = await self.store.delete_suppressions(mine) if mine else 0
        if removed == 0:
            if any(r["reason"] == "erased" for r in found):
                raise Conflict(
                    "this address was erased at the person's request: only their own fresh opt-in lifts it"
                )
            kept = found[0]
            raise Conflict(
                f"the person refused this mail themselves ({kept['reason']}, by {kept['source']}):"
                " only they can lift it, from their preference page or by signing up again"
            )
        return removed

    async def suppressions(self, limit: int = 1000, after_id: int = 0) -> list[dict[str, Any]]:
        return await self.store.list_suppressions(limit, after_id)

    # -- what the recorded consent means for mail now ----------------------------------------

    async def reception(self, emails: Sequence[str]) -> dict[str, dict[str, dict[str, str]]]:
        """Per address, per topic it has a subscription to, what will actually happen to
        that topic's mail now: {"state": "receiving"} or {"state": "stopped", "why": ...}.
        The recorded status can say subscribed while a refusal of all promotional mail, a
        block or an erasure stops the mail."""
        slugs = {topic.id: topic.slug for topic in await self.store.all_topics()}
        standings = await self.store.standings(
            {email: self.signer.address_hashes(email) for email in emails}
        )
        result: dict[str, dict[str, dict[str, str]]] = {}
        for email, standing in standings.items():
            per: dict[str, dict[str, str]] = {}
            for topic_id, status in standing.subscriptions.items():
                decision = decide("marketing", topic_id, standing)
                if decision.allowed:
                    per[slugs[topic_id]] = {"state": "receiving"}
                elif status != "subscribed":
                    why = "waiting for the person's confirmation" if status == "pending" else status
                    per[slugs[topic_id]] = {"state": "stopped", "why": why}
                else:
                    per[slugs[topic_id]] = {"state": "stopped", "why": decision.reason}
            result[email] = per
        return result

    async def is_erased(self, email: str) -> bool:
        """True when only the erasure tombstone (a keyed hash) is left of the address."""
        email = addresses.normalize(email)
        hashes = {email: self.signer.address_hashes(email)}
        return (await self.store.standings(hashes))[email].erased


class ConsentingService:
    """A service that records what people consented to, through `Consent`."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        signer: Signer,
        accepter: Accepter,
        consent: Consent,
    ) -> None:
        self.settings = settings
        self.store = store
        self.signer = signer
        self.accepter = accepter
        self.consent = consent
