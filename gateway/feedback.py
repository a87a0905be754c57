"""What receiving servers and people tell us back, turned into suppressions (BN-1..BN-5, ST-3).

Three roads lead here: the worker's SMTP replies, the inbound listener (DSNs, complaint
reports, mail to the refusal address) and `gateway bounces ingest` for files fetched from
a mailbox. Each report becomes `Event`s, and `apply()` records them and suppresses in the
caller's transaction.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

from . import bounces
from .bounces import Event
from .config import Settings
from .consent import Consent
from .errors import GatewayError
from .store import Store
from .tokens import Signer

log = logging.getLogger("gateway.feedback")

DAY = 86400.0
SOFT_WINDOW = 30 * DAY  # BN-3: soft bounces count within this window
RECENT = 30 * DAY  # BN-5: an unmatched bounce acts only on an address mailed this recently


@dataclass
class Ingested:
    """What one inbound message or file did."""

    kind: str  # dsn | arf | detected | refusal | unreadable | ignored
    actions: list[str] = field(default_factory=list)
    reason: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "actions": self.actions, "reason": self.reason}


class Feedback:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        signer: Signer,
        consent: Consent,
    ) -> None:
        self.settings = settings
        self.store = store
        self.signer = signer
        self.consent = consent
        local, _, domain = settings.bounce_address.partition("@")
        self.bounce_local, self.bounce_domain = local, domain

    # -- the envelope sender of each message ----------------------------------------------

    def return_path(self, outbox_id: int) -> str:
        return f"{self.bounce_local}+{self.signer.verp_token(outbox_id)}@{self.bounce_domain}"

    def accepts(self, rcpt: str) -> bool:
        """Whether the inbound listener takes mail for this address (it relays nothing)."""
        address = rcpt.strip("<>").lower()
        if address == self.settings.refusal_address.lower():
            return True
        local, _, domain = address.rpartition("@")
        return domain == self.bounce_domain and (
            local == self.bounce_local or local.startswith(self.bounce_local + "+")
        )

    # -- acting on events ---------------------------------------------------------------------

    async def apply(
        self, events: Sequence[Event], now: float | None = None, withheld: Collection[str] = ()
    ) -> list[str]:
        """Record and act; call inside a transaction. Returns one line per action taken.
        Events about an address in `withheld` (an erased person's, or one a stranger typed
        into the sign-up form and nobody confirmed) are recorded without it: the bounce
        keeps its kind and status, a hard bounce or a complaint suppresses the keyed hash
        alone, and the lines returned name the hash, not the address (PD-3). Such an
        address cannot be counted towards BN-3 (its soft bounces name nobody) nor matched
        by BN-5."""
        if not events:
            return []
        now = time.time() if now is None else now
        await self.store.record_bounces(
            [
                {
                    "email": None if e.email in withheld else e.email,
                    "message_id": e.message_id,
                    "kind": e.kind,
                    "status": e.status,
                    "detail": None if e.email in withheld else e.detail[:500],
                    "source": e.source,
                    "created_at": now,
                }
                for e in events
            ]
        )
        actions: list[str] = []
        for e in events:
            if e.outbox_id is not None and e.source != "smtp" and e.kind == "hard":
                # (a withheld address's report keeps its status alone: it may quote it)
                line = (e.status or e.kind) if e.email in withheld else _line(e)
                await self.store.mark_bounced(e.outbox_id, line, now)
            if e.email in withheld:
                actions += await self._apply_withheld(e, now)
                continue
            if e.kind == "hard":
                if await self._suppress(e.email, "all", "hard_bounce", e.source, now):
                    actions.append(f"suppressed {e.email}: hard bounce {e.status or ''}".rstrip())
            elif e.kind == "complaint":
                if await self._suppress(e.email, "marketing", "complaint", e.source, now):
                    await self._record_opt_out(e.email, now)
                    actions.append(f"suppressed marketing to {e.email}: complaint")
            elif e.kind == "soft":
                limit = self.settings.soft_bounce_limit
                count = await self.store.count_bounces(e.email, "soft", now - SOFT_WINDOW)
                if limit and count >= limit:
                    if await self._suppress(e.email, "all", "soft_bounce", e.source, now):
                        actions.append(f"suppressed {e.email}: {count} soft bounces in 30 days")
            elif e.kind == "policy":
                # BN-2: the receiving server refuses the sender (authentication, reputation,
                # policy). Not the recipient's fault: nobody is suppressed; someone must look.
                # The log names the message and a keyed hash of the recipient, never the
                # address: logs travel further than the database and outlive an erasure.
                log.warning(
                    "ALERT: %s refused mail (%s, recipient %s) for a sender-side reason: %s",
                    e.source,
                    f"outbox id {e.outbox_id}" if e.outbox_id is not None else e.message_id,
                    self.signer.address_hash(e.email)[:16],
                    _scrub(_line(e), e.email),
                )
                actions.append(
                    f"alert for {e.email}: sender-side refusal {e.status or ''}".rstrip()
                )
        return actions

    async def _apply_withheld(self, e: Event, now: float) -> list[str]:
        """`apply` for an address that must not be written: BN-1 and BN-4 by its keyed hash
        only (as an erasure tombstone is kept), BN-2 alerts as usual."""
        who = f"address {self.signer.address_hash(e.email)[:16]} (kept as a keyed hash only)"
        if e.kind in ("hard", "complaint"):
            hard = e.kind == "hard"
            added = await self.consent.suppress_address(
                e.email,
                scope="all" if hard else "marketing",
                reason="hard_bounce" if hard else "complaint",
                source=e.source,
                now=now,
                withheld=True,
            )
            what = f"hard bounce {e.status or ''}".rstrip() if hard else "complaint"
            return [f"suppressed {who}: {what}"] if added else []
        if e.kind == "policy":
            log.warning(
                "ALERT: %s refused mail (%s, recipient %s) for a sender-side reason: %s",
                e.source,
                e.message_id,
                self.signer.address_hash(e.email)[:16],
                e.status or "no status",
            )
            return [f"alert for {who}: sender-side refusal {e.status or ''}".rstrip()]
        return []

    async def _suppress(self, email: str, scope: str, reason: str, source: str, now: float) -> bool:
        return await self.consent.suppress_address(
            email, scope=scope, reason=reason, source=source, now=now
        )

    async def _record_opt_out(self, email: str, now: float) -> None:
        contact = await self.store.get_contact(email)
        if contact is not None:
            await self.consent.record(contact, "opt_out", source="complaint", now=now)

    # -- inbound mail ---------------------------------------------------------------------------

    async def ingest(
        self,
        data: bytes,
        *,
        rcpt_tos: Sequence[str] = (),
        trusted: bool = False,
    ) -> Ingested:
        """Act on one inbound message. The listener is open to the world, so it acts only on
        reports it can tie to a message of ours (signed return path, then Message-ID);
        `trusted` (the operator's own mailbox) also acts on detected bounces naming an
        address mailed in the last 30 days (BN-5). Never raises on bad input."""
        recipients = [r.strip("<>").lower() for r in rcpt_tos] or _header_recipients(data)
        if self.settings.refusal_address.lower() in recipients:
            return await self._refusal(data)
        report = bounces.parse_report(data)
        if report.kind == "unreadable":
            log.info("inbound report skipped: %s", report.reason)
            return Ingested("unreadable", reason=report.reason)
        message = await self._match(recipients, report.message_ids)
        events = self._events(report, message)
        if message is None and trusted:
            events = await self._recent(report)
        if not events:
            reason = report.reason or "nothing to act on"
            if message is None:
                reason = "no signed return path or known Message-ID: " + reason
            return Ingested(report.kind, reason=reason)
        # A message recorded by the keyed hash of its address alone stays that way.
        withheld = {e.email for e in events} if message and message["email"] is None else set()
        async with self.store.transaction():
            actions = await self.apply(events, withheld=withheld)
        return Ingested(report.kind, actions=actions, reason=report.reason)

    async def _match(self, recipients: Sequence[str], message_ids: Sequence[str]) -> dict | None:
        for token in bounces.verp_tokens(recipients, self.bounce_local):
            outbox_id = self.signer.verp_id(token)
            if outbox_id is not None:
                found = await self.store.find_message(outbox_id=outbox_id)
                if found is not None and (found["email"] or found["email_hash"]):
                    return found
        for message_id in message_ids:
            found = await self.store.find_message(message_id=message_id)
            if found is not None and (found["email"] or found["email_hash"]):
                return found
        return None

    def _events(self, report: bounces.Report, message: dict | None) -> list[Event]:
        if message is None:
            return []
        email, mid, oid = message["email"], message["message_id"], message["id"]
        if email is None:
            # Recorded by its keyed hash alone (a sign-up confirmation nobody confirmed, an
            # erased person's): the report acts only on an address it names that has it.
            named = [report.complainant] + [f.address for f in report.failures]
            email = next(
                (a for a in named if a and message["email_hash"] in self.signer.address_hashes(a)),
                None,
            )
            if email is None:
                return []
        if report.kind == "arf":
            if (report.feedback_type or "").lower() != "abuse":
                return []
            return [Event(email, "complaint", "arf", None, "abuse report", mid, oid)]
        # The report is about our message: its failure for our recipient decides.
        failures = [f for f in report.failures if f.kind != "ignore"]
        mine = [f for f in failures if f.address == email] or failures[:1]
        return [
            Event(email, f.kind, report.kind, f.status, f.diagnostic, mid, oid)
            for f in mine
            if f.kind in ("hard", "soft", "policy")
        ]

    async def _recent(self, report: bounces.Report) -> list[Event]:
        """A report tied to none of our messages, from the operator's own mailbox: act on
        the addresses it names if the gateway mailed them in the last 30 days (BN-5)."""
        if report.kind == "arf":
            abuse = (report.feedback_type or "").lower() == "abuse"
            named = [report.complainant] if abuse and report.complainant else []
            mailed = await self.store.mailed_since(named, time.time() - RECENT)
            return [
                Event(a, "complaint", "arf", None, "abuse report") for a in named if a in mailed
            ]
        failures = [f for f in report.failures if f.kind in ("hard", "soft", "policy")]
        mailed = await self.store.mailed_since([f.address for f in failures], time.time() - RECENT)
        return [
            Event(f.address, f.kind, report.kind, f.status, f.diagnostic)
            for f in failures
            if f.address in mailed
        ]

    async def _refusal(self, data: bytes) -> Ingested:
        """ST-3: "unsubscribe TOKEN" mailed to the refusal address from the address that got
        the message has the effect of a one-click refusal, confirmation included."""
        sender, token = bounces.refusal_token(data)
        if not token:
            return Ingested("refusal", reason="no unsubscribe token in the subject or body")
        try:
            contact = await self.consent.link_holder("unsubscribe", token)
        except GatewayError as exc:
            return Ingested("refusal", reason=str(exc))
        if sender != contact.email:
            return Ingested(
                "refusal", reason="the sender is not the address the message was sent to"
            )
        changed = await self.consent.refuse(contact, source="email", reason="email")
        action = f"refusal by email from {contact.email}" + ("" if changed else " (already)")
        return Ingested("refusal", actions=[action])


def _line(e: Event) -> str:
    detail = " ".join(e.detail.split())
    if e.status and e.status not in detail:
        detail = f"{e.status} {detail}"
    return detail[:300] or e.kind


def _scrub(text: str, email: str) -> str:
    """`text` without the address (servers often quote the recipient in their reply)."""
    if not email:
        return text
    return re.sub(re.escape(email), "<recipient>", text, flags=re.IGNORECASE)


def _header_recipients(data: bytes) -> list[str]:
    """Where a bounce in a file was delivered: the return path is in these headers."""
    try:
        headers = BytesHeaderParser(policy=compat32).parsebytes(data[:65536])
        values = [
            str(v)
            for name in ("Delivered-To", "X-Original-To", "Envelope-To", "To")
            for v in headers.get_all(name, [])
        ]
        return [a.lower() for _, a in getaddresses(values) if a]
    except Exception:
        return []
