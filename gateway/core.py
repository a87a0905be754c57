"""`Gateway`: the one object application code, the CLI and the web app talk to."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from . import apikeys
from .accept import Accepter, SendRequest, SendResult
from .campaigns import Campaigns
from .config import Settings
from .consent import Consent
from .contacts import Contacts, ImportReport
from .errors import GatewayError, InvalidInput, InvalidMessage, StoreError
from .feedback import Feedback, Ingested
from .preferences import PreferenceCenter
from .privacy import Policies, PublishReport
from .records import Contact, Topic
from .render import Renderer
from .signup import Signups
from .store import Store
from .tokens import Signer
from .transport import Transport, transport_from_url
from .worker import Worker, WorkerStats

log = logging.getLogger("gateway")


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
        services = (settings, self.store, self.signer, self.accepter)
        self.consent = Consent(*services)
        self.contacts = Contacts(*services, self.consent)
        self.preferences = PreferenceCenter(*services, self.consent)
        self.campaigns = Campaigns(settings, self.store, self.accepter, self.renderer)
        self.policies = Policies(*services, self.consent)
        self.signups = Signups(*services, self.consent)
        self.feedback = Feedback(settings, self.store, self.signer, self.consent)
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
        try:
            legacy = self.signer.derived_address_keys
            self.migrated = await self.store.migrate(legacy_address_keys=legacy)
            # Addresses are hashed under the database's own key, which rotation never drops.
            self.signer.use_address_keys(*await self.store.address_keys(legacy))
        except BaseException as exc:
            # A connection left open keeps the driver's thread alive: the process would
            # print its error and then never exit.
            await self.store.disconnect()
            if isinstance(exc, Exception) and not isinstance(exc, GatewayError):
                raise StoreError(
                    f"could not open the database {self.store.display_url}: {exc}"
                    " (check GATEWAY_DATABASE_URL)"
                ) from exc
            raise

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
        source: str | None = None,
    ) -> SendResult:
        """Accept one message. Returns queued, suppressed or blocked with the reason; raises
        an `InvalidInput` for input that cannot be accepted (nothing is written then).
        `source` names who handed it in, for the message log (e.g. "apikey:crm")."""
        fields = (to, subject, html, text, category, topic, headers, context, idempotency_key)
        return await self.accepter.send(SendRequest(*fields, source=source))

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
        options.setdefault("render", self.accepter.render_queued)
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

    @contextlib.asynccontextmanager
    async def submitting(self) -> AsyncIterator[str | None]:
        """Take mail from applications by SMTP on GATEWAY_SUBMISSION_SMTP while inside
        (yields "host:port", or None when the setting is unset): see gateway.submission."""
        if not self.settings.submission_smtp:
            yield None
            return
        from .submission import listener

        async with listener(self.settings, self.store, self.accepter) as server:
            yield f"{server.host}:{server.port}"

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
        that topic's mail now (see `Consent.reception`)."""
        return await self.consent.reception(emails)

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
        """Create or update a contact and opt them in to topics; returns (contact, created,
        subscriptions started)."""
        return await self.contacts.add(
            email,
            name=name,
            phone=phone,
            address=address,
            language=language,
            attributes=attributes,
            subscribe=subscribe,
            source=source,
        )

    async def import_contacts(
        self,
        path: str | Path,
        *,
        subscribe: Iterable[str] = (),
        source: str = "import",
        progress: Callable[[int, int], Any] | None = None,
        batch_size: int = 500,
    ) -> ImportReport:
        """Import a CSV file; each bad row is reported by line (`Contacts.import_file`)."""
        return await self.contacts.import_file(
            path, subscribe=subscribe, source=source, progress=progress, batch_size=batch_size
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
        return await self.contacts.import_csv(
            text,
            subscribe=subscribe,
            source=source,
            progress=progress,
            batch_size=batch_size,
            name=name,
        )

    # -- suppressions ----------------------------------------------------------------------

    async def suppress(
        self, email: str, *, reason: str = "manual", scope: str | None = None, source: str = "admin"
    ) -> bool:
        """Add an address to the suppression list (ST-1); False when it already stood."""
        return await self.consent.suppress(email, reason=reason, scope=scope, source=source)

    async def unsuppress(self, email: str) -> int:
        """Lift the suppressions staff may lift; a person's own refusal or erasure stays,
        and when nothing else was there it is a `Conflict`."""
        return await self.consent.unsuppress(email)

    async def suppressions(self, limit: int = 1000, after_id: int = 0) -> list[dict[str, Any]]:
        return await self.consent.suppressions(limit, after_id)

    # -- a person's data (PD-2, PD-3, PD-4) ------------------------------------------------

    async def export_contact(self, email: str) -> dict[str, Any]:
        """Everything held about an address (PD-2), contact or not."""
        return await self.contacts.export(email)

    async def erase_contact(self, email: str) -> None:
        """Erase at once (PD-3), contact or not; a keyed hash stays so it is never mailed."""
        await self.contacts.erase(email)

    async def purge(self) -> int:
        """Erase contacts stopped for longer than the retention period; returns how many."""
        return await self.contacts.purge()

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
        return await self.consent.is_erased(email)

    async def list_campaigns(self) -> list[dict[str, Any]]:
        return await self.store.list_campaigns()

    async def create_api_key(self, name: str, scope: str = "admin") -> str:
        """A new API key (scope admin or send), to be shown once: only its hash is stored."""
        return await apikeys.create(self.store, name, scope)

    async def api_keys(self) -> list[dict[str, Any]]:
        return await apikeys.listing(self.store)

    async def revoke_api_key(self, name: str) -> int:
        return await apikeys.revoke(self.store, name)


__all__ = ["Gateway", "ImportReport", "SendRequest", "SendResult", "StoreError", "InvalidMessage"]
