"""`Gateway`: the one object application code, the CLI and the web app talk to."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from . import addresses, apikeys
from .accept import Accepter, SendRequest, SendResult
from .campaigns import Campaigns
from .config import Settings
from .errors import Conflict, InvalidInput, InvalidMessage, NotFound, StoreError
from .feedback import Feedback, Ingested
from .policies import Policies, PublishReport
from .policy import decide
from .preferences import PreferenceCenter
from .records import Contact, Topic
from .render import Renderer
from .signup import Signups
from .store import Store
from .tokens import Signer
from .transport import Transport, transport_from_url
from .worker import Worker, WorkerStats

log = logging.getLogger("gateway")

LANGUAGES = ("vi", "en")
# After loading this many rows at once, refresh the planner's statistics (PostgreSQL): with
# stale ones it reads a million-row table end to end for every batch of lookups.
BULK = 10_000
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
# Profile fields that are shown in headers and on one line: no C0 control character (line
# breaks, tabs, ...) and no DEL; a line break in a name breaks every subject it is used in.
PROFILE_FIELDS = {"name": "name", "phone": "phone", "address": "postal address"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_profile_text(field: str, value: str | None) -> None:
    """Refuse a name, phone or postal address holding a control character."""
    if value is not None and _CONTROL.search(value):
        label = PROFILE_FIELDS.get(field, field)
        raise InvalidInput(
            f"the {label} contains a line break, tab or other control character:"
            " give it on one line without them"
        )


def staff_may_lift(reason: str, source: str) -> bool:
    """A suppression staff may remove: their own (manual, a phone refusal they typed in)
    or a bounce; never an erasure or the person's own refusal."""
    if reason == "erased":
        return False
    if reason in BOUNCE_REASONS:
        return True
    return source in STAFF_SOURCES and reason not in PERSONAL_REASONS


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    subscribed: int = 0
    bad_rows: list[tuple[int, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "subscribed": self.subscribed,
            "bad_rows": [{"line": line, "reason": reason} for line, reason in self.bad_rows],
        }


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        transport: Transport | None = None,
        concurrency: int = 4,
    ) -> None:
        self.settings = settings
        self.store = Store(settings.database_url)
        self.signer = Signer(settings.secret_keys)
        self.renderer = Renderer(settings, self.signer)
        self.accepter = Accepter(settings, self.store, self.signer, self.renderer)
        self.preferences = PreferenceCenter(settings, self.store, self.signer, self.accepter)
        self.campaigns = Campaigns(settings, self.store, self.accepter, self.renderer)
        self.policies = Policies(settings, self.store, self.signer, self.accepter)
        self.signups = Signups(settings, self.store, self.signer, self.accepter)
        self.feedback = Feedback(settings, self.store, self.signer, self.preferences)
        self._dkim: Callable[[bytes], bytes] | None = None
        self._transport = transport
        self.concurrency = concurrency
        self.migrated: tuple[int | None, int] | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> Gateway:
        transport = kwargs.pop("transport", None)
        concurrency = kwargs.pop("concurrency", 4)
        return cls(
            Settings.from_env(environ, **kwargs), transport=transport, concurrency=concurrency
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        await self.store.connect()
        legacy = self.signer.derived_address_keys
        self.migrated = await self.store.migrate(legacy_address_keys=legacy)
        # Addresses are hashed under the database's own key, which key rotation never drops.
        self.signer.use_address_keys(*await self.store.address_keys(legacy))

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.close()
        await self.store.disconnect()

    async def __aenter__(self) -> Gateway:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            try:
                self._transport = transport_from_url(
                    self.settings.smtp_url, concurrency=self.concurrency
                )
            except ValueError as exc:
                raise InvalidInput(f"GATEWAY_SMTP_URL: {exc}") from None
        return self._transport

    # -- sending ---------------------------------------------------------------------------

    async def send(
        self,
        to: str,
        subject: str,
        html: str | None = None,
        text: str | None = None,
        *,
        category: str = "transactional",
        topic: str | None = None,
        headers: Mapping[str, str] | None = None,
        context: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> SendResult:
        """Accept one message. Returns queued, suppressed or blocked with the reason; raises
        an `InvalidInput` for input that cannot be accepted (nothing is written then)."""
        return await self.accepter.send(
            SendRequest(to, subject, html, text, category, topic, headers, context, idempotency_key)
        )

    async def send_many(self, requests: Sequence[SendRequest]) -> list[SendResult]:
        return await self.accepter.send_many(requests)

    async def deliver(
        self,
        *,
        until_idle: bool = False,
        stop: asyncio.Event | None = None,
        progress: Callable[[WorkerStats], Any] | None = None,
        **options: Any,
    ) -> WorkerStats:
        """Run the delivery worker (until idle, or until `stop` is set), feeding running
        campaigns from their audience beside it."""
        transport = self.transport
        await transport.open()
        options.setdefault("render", self.preferences.render_queued)
        options.setdefault("wake", self.campaigns.wake)
        options.setdefault("return_path", self.feedback.return_path)
        options.setdefault("report", self.feedback.apply)
        options.setdefault("sign", self.dkim_signer())
        worker = Worker(self.settings, self.store, self.signer, transport, **options)
        if until_idle:
            while True:
                more = await self.campaigns.tick_all()
                claimed = worker.stats.claimed
                stats = await worker.run(until_idle=True, stop=stop, progress=progress)
                if not more or (stop is not None and stop.is_set()):
                    await self.campaigns.tick_all()  # marks finished campaigns done
                    return stats
                if stats.claimed == claimed:
                    # Another process is feeding the campaign (it holds the lease) and
                    # nothing is due yet: wait a moment instead of asking again at once.
                    await asyncio.sleep(0.2)
        stop = stop or asyncio.Event()
        driver = asyncio.create_task(self.campaigns.drive(stop))
        try:
            return await worker.run(stop=stop, progress=progress)
        finally:
            stop.set()
            await driver

    async def message_status(self, message_id: str) -> dict[str, Any]:
        return await self.store.message_status(message_id)

    def dkim_signer(self) -> Callable[[bytes], bytes] | None:
        """The DKIM signing function when GATEWAY_DKIM_* is set (the key is read once)."""
        s = self.settings
        if self._dkim is None and s.dkim_domain:
            from .dkim import DKIMSigner

            self._dkim = DKIMSigner.from_file(s.dkim_domain, s.dkim_selector, s.dkim_key_file).sign
        return self._dkim

    # -- what comes back: bounces, complaints, refusals by email ------------------------------

    async def ingest(
        self, data: bytes, *, rcpt_tos: Sequence[str] = (), trusted: bool = False
    ) -> Ingested:
        """Act on one bounce, complaint report or refusal email (see gateway.feedback)."""
        return await self.feedback.ingest(data, rcpt_tos=rcpt_tos, trusted=trusted)

    @contextlib.asynccontextmanager
    async def listening(self) -> AsyncIterator[str | None]:
        """Receive bounces, complaints and refusal emails by SMTP on GATEWAY_INBOUND_SMTP
        while inside (yields "host:port", or None when the setting is unset)."""
        if not self.settings.inbound_smtp:
            yield None
            return
        from .smtp import InboundServer, parse_hostport

        host, port = parse_hostport(self.settings.inbound_smtp)

        async def handle(mail_from: str, rcpt_tos: list[str], data: bytes) -> str | None:
            # Untrusted: only reports tied to our own messages are acted on (BN-5).
            result = await self.ingest(data, rcpt_tos=rcpt_tos)
            for action in result.actions:
                log.info("inbound %s: %s", result.kind, action)
            if not result.actions:
                log.info("inbound %s: nothing done: %s", result.kind, result.reason)
            return None

        async with InboundServer(host, port, handle, accept_rcpt=self.feedback.accepts) as srv:
            yield f"{host}:{srv.port}"

    async def alerts(self, since: float) -> int:
        """Sender-side refusals (BN-2) recorded since `since`."""
        return await self.store.count_alerts(since)

    # -- privacy policy versions (promise 10, PD-5) ---------------------------------------

    async def publish_policy(
        self, version: str, text: str, adverse: bool = False, **options: Any
    ) -> PublishReport:
        """Publish a policy version; an adverse one is emailed to every contact with data
        stored, even those who refused promotional mail, and each notice is recorded."""
        return await self.policies.publish(version, text, adverse, **options)

    # -- topics ----------------------------------------------------------------------------

    async def add_topic(self, slug: str, name: str, *, double_opt_in: bool = False) -> Topic:
        slug = slug.strip()
        if not slug or not all(c.isascii() and (c.isalnum() or c in "-_") for c in slug):
            raise InvalidInput(f"topic slug {slug!r} must be letters, digits, - or _")
        if not name.strip():
            raise InvalidInput("a topic needs a --name")
        if any(ord(c) < 32 or ord(c) == 127 for c in name.strip()):
            # The name goes into the List-Id header of every message of the topic.
            raise InvalidInput("a topic name must be one line without control characters")
        return await self.store.add_topic(slug, name.strip(), double_opt_in, time.time())

    async def topics(self) -> list[tuple[Topic, int]]:
        return await self.store.list_topics()

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

    # -- contacts --------------------------------------------------------------------------

    async def add_contact(
        self,
        email: str,
        *,
        name: str | None = None,
        phone: str | None = None,
        address: str | None = None,
        language: str | None = None,
        attributes: Mapping[str, str] | None = None,
        subscribe: Iterable[str] = (),
        source: str = "admin",
    ) -> tuple[Contact, bool, int]:
        """Create or update a contact and opt them in to topics (recorded in the consent
        ledger). Returns (contact, created, subscriptions started)."""
        email = addresses.normalize(email)
        if language is not None and language not in LANGUAGES:
            raise InvalidInput(f"language must be vi or en, not {language!r}")
        topics = [await self.accepter.topic(slug) for slug in subscribe]
        for field_name, text in (("name", name), ("phone", phone), ("address", address)):
            check_profile_text(field_name, text)
        for value in (attributes or {}).values():
            if value is not None and "\x00" in value:
                raise InvalidInput("a field contains a NUL character")
        async with self.store.transaction():
            return await self._add_contact(
                email, name, phone, address, language, attributes or {}, topics, source
            )

    async def _add_contact(
        self,
        email: str,
        name: str | None,
        phone: str | None,
        address: str | None,
        language: str | None,
        attributes: Mapping[str, str],
        topics: Sequence[Topic],
        source: str,
    ) -> tuple[Contact, bool, int]:
        now = time.time()
        standing = (await self.store.standings({email: self.signer.address_hashes(email)}))[email]
        if standing.erased:
            # PD-3: an admin import never brings back a person who asked to be erased.
            raise InvalidInput(
                "this address was erased at the person's request; only their own opt-in can add it again"
            )
        profile = {"name": name, "phone": phone, "postal_address": address, "language": language}
        if standing.contact is None and language is None:
            profile["language"] = self.settings.default_language
        contact, created = await self.store.upsert_contact(
            email, profile=profile, attributes=attributes, source=source, now=now
        )
        started = 0
        for topic in topics:
            status = "pending" if topic.double_opt_in else "subscribed"
            if await self.store.set_subscription(
                contact,
                topic,
                status,
                subject=self.signer.address_hash(email),
                source=source,
                policy_version=await self.policies.current_version(),
                now=now,
            ):
                started += 1
        return contact, created, started

    async def import_contacts(
        self,
        path: str | Path,
        *,
        subscribe: Iterable[str] = (),
        source: str = "import",
        progress: Callable[[int, int], Any] | None = None,
        batch_size: int = 500,
    ) -> ImportReport:
        """Import a CSV (header email,name,phone,address,language,topics with topics
        separated by ';'). Good rows are imported; each bad row is reported by line."""
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read {path}: {exc}") from None
        return await self.import_csv(
            text,
            subscribe=subscribe,
            source=source,
            progress=progress,
            batch_size=batch_size,
            name=str(path),
        )

    async def import_csv(
        self,
        text: str,
        *,
        subscribe: Iterable[str] = (),
        source: str = "import",
        progress: Callable[[int, int], Any] | None = None,
        batch_size: int = 500,
        name: str = "the CSV",
    ) -> ImportReport:
        """`import_contacts` for CSV text already in memory (the admin API's upload)."""
        path = name
        records = _csv_records(text, path)
        header = records[0][1] if records else []
        fields = [f.strip().lower() for f in header]
        if "email" not in fields:
            raise InvalidInput(f"{path}: the first line must be a header with an 'email' column")
        unknown = set(fields) - {"email", "name", "phone", "address", "language", "topics"}
        if unknown:
            raise InvalidInput(f"{path}: unknown column(s) {', '.join(sorted(unknown))}")
        rows = records[1:]
        default_topics = [await self.accepter.topic(slug) for slug in subscribe]
        report = ImportReport()
        prepared: list[tuple[int, dict[str, Any]]] = []
        for line, cells in rows:
            row = {k: v.strip() for k, v in zip(fields, cells, strict=False) if k}
            try:
                if len(cells) > len(fields):
                    raise InvalidInput("more fields than the header has")
                email = addresses.normalize(row.get("email", ""))
                for field_name in PROFILE_FIELDS:
                    check_profile_text(field_name, row.get(field_name))
                language = row.get("language") or None
                if language is not None and language not in LANGUAGES:
                    raise InvalidInput(f"language must be vi or en, not {language!r}")
                slugs = [s.strip() for s in row.get("topics", "").split(";") if s.strip()]
                topics = default_topics + [await self.accepter.topic(s) for s in slugs]
            except InvalidInput as exc:
                report.bad_rows.append((line, str(exc)))
                continue
            prepared.append(
                (
                    line,
                    dict(
                        email=email,
                        name=row.get("name") or None,
                        phone=row.get("phone") or None,
                        address=row.get("address") or None,
                        language=language,
                        topics=list({t.id: t for t in topics}.values()),
                    ),
                )
            )
        done = len(rows) - len(prepared)
        for start in range(0, len(prepared), batch_size):
            chunk = prepared[start : start + batch_size]
            await self._import_chunk(chunk, source, report)
            done += len(chunk)
            if progress is not None:
                progress(done, len(rows))
        report.bad_rows.sort()
        if report.created >= BULK:
            await self.store.analyze("contacts", "subscriptions", "consent_ledger")
        return report

    async def _import_chunk(
        self, chunk: list[tuple[int, dict[str, Any]]], source: str, report: ImportReport
    ) -> None:
        # A later row for the same address wins, as if the rows were applied one by one.
        latest: dict[str, tuple[int, dict[str, Any]]] = {}
        for line, item in chunk:
            if item["email"] in latest:
                earlier = latest[item["email"]][1]
                item = {k: (v if v is not None else earlier[k]) for k, v in item.items()}
                item["topics"] = list(
                    {t.id: t for t in earlier["topics"] + item["topics"]}.values()
                )
            latest[item["email"]] = (line, item)
        hashes = {email: self.signer.address_hashes(email) for email in latest}
        async with self.store.transaction():
            standings = await self.store.standings(hashes)
            items = []
            for email, (line, item) in latest.items():
                if standings[email].erased:
                    # PD-3: an admin import never brings back a person who asked to be erased.
                    report.bad_rows.append(
                        (
                            line,
                            "this address was erased at the person's request; only their own opt-in can add it again",
                        )
                    )
                    continue
                items.append(item)
            results = await self.store.import_batch(
                items,
                standings,
                source=source,
                policy_version=await self.policies.current_version(),
                default_language=self.settings.default_language,
                subject_of={email: hs[0] for email, hs in hashes.items()},
                now=time.time(),
            )
        for created, started in results:
            report.created += created
            report.updated += not created
            report.subscribed += started

    # -- suppressions ----------------------------------------------------------------------

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
                return await self.preferences.refuse(contact, source=source, reason=reason)
        async with self.store.transaction():
            return await self.preferences.suppress_address(
                email, scope=scope, reason=reason, source=source, now=time.time()
            )

    async def unsuppress(self, email: str) -> int:
        """Lift the suppressions staff may lift (see `staff_may_lift`); a person's own
        refusal or erasure stays, and when nothing else was there it is a `Conflict`."""
        email = addresses.normalize(email)
        hashes = self.signer.address_hashes(email)
        found = await self.store.suppressions_of(hashes)
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

    # -- a person's data (PD-2, PD-3, PD-4) ------------------------------------------------

    async def export_contact(self, email: str) -> dict[str, Any]:
        """Everything held about an address (PD-2), contact or not: someone who only ever
        received service mail still has a message log."""
        email = addresses.normalize(email)
        contact = await self.store.get_contact(email)
        data = await self.store.export(email, contact)
        if contact is None and not data["messages"] and not data["suppressions"]:
            raise NotFound("no contact with that address, and nothing else is held about it")
        return data

    async def erase_contact(self, email: str) -> None:
        """Erase at once (PD-3), contact or not; a keyed hash stays so it is never mailed."""
        email = addresses.normalize(email)
        contact = await self.store.get_contact(email)
        if contact is None:
            standing = (await self.store.standings({email: self.signer.address_hashes(email)}))[
                email
            ]
            if standing.erased:
                raise NotFound("no contact with that address")
            # Mail recorded by the address's keyed hash alone (a sign-up confirmation nobody
            # confirmed yet) counts: the erasure withdraws the link it carried.
            if not await self.store.withheld_messages(self.signer.address_hashes(email)):
                await self.export_contact(email)  # NotFound when nothing is held at all
        await self.preferences.erase_address(email, contact)

    async def purge(self) -> int:
        """Erase contacts marked as no longer using the service for longer than the
        retention period; returns how many."""
        cutoff = time.time() - self.settings.retention_days * 86400
        erased = 0
        async with self.store.scrub_once():  # the database's files scrubbed once, at the end
            while batch := await self.store.stopped_before(cutoff):
                for contact in batch:
                    await self.preferences.erase(contact)
                erased += len(batch)
        return erased

    # -- for the command line and the admin API --------------------------------------------

    @property
    def database_display_url(self) -> str:
        """The database URL with any password hidden, for output."""
        return self.store.display_url

    async def audit_read(self, actor: str, action: str, email: str | None) -> None:
        """Promise 9: who read whose data and when. The subject is a keyed hash of the
        (normalized) address, or "list" for a read of many people; never the data itself."""
        subject = self.signer.address_hash(email) if email is not None else "list"
        await self.store.record_audit(actor, action, subject, time.time())

    async def is_erased(self, email: str) -> bool:
        """True when only the erasure tombstone (a keyed hash) is left of the address."""
        email = addresses.normalize(email)
        hashes = {email: self.signer.address_hashes(email)}
        return (await self.store.standings(hashes))[email].erased

    async def list_campaigns(self) -> list[dict[str, Any]]:
        return await self.store.list_campaigns()

    async def create_api_key(self, name: str) -> str:
        """A new admin API key, to be shown once: only its hash is stored."""
        return await apikeys.create(self.store, name)

    async def api_keys(self) -> list[dict[str, Any]]:
        return await apikeys.listing(self.store)

    async def revoke_api_key(self, name: str) -> int:
        return await apikeys.revoke(self.store, name)


def _csv_records(text: str, path: str) -> list[tuple[int, list[str]]]:
    """The non-blank records of a CSV with the line each starts on. A quote left open
    would swallow the lines after it into one field (a mangled address imported without
    a word): a record that spans lines, or any quoting the csv module's strict mode
    refuses, rejects the whole file, naming the line, before anything is imported."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, list[str]]] = []
    last = 0
    try:
        for cells in reader:
            start, last = last + 1, reader.line_num
            if not cells or not any(c.strip() for c in cells):
                continue
            if last != start or any("\n" in c or "\r" in c for c in cells):
                raise InvalidInput(
                    f"{path}, line {start}: a field runs over several lines (a quote left"
                    " open?); fix the file, nothing was imported"
                )
            records.append((start, cells))
    except csv.Error as exc:
        raise InvalidInput(
            f"{path}, line {last + 1}: {exc} (a quote left open?); fix the file, nothing was imported"
        ) from None
    return records


__all__ = ["Gateway", "ImportReport", "SendRequest", "SendResult", "StoreError", "InvalidMessage"]
