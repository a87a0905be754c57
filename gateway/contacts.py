"""Contacts: add, import a CSV, opt in and out of topics, export, erase, purge (PD-2..PD-4)."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import addresses
from .catalog import LANGUAGES
from .consent import ConsentingService
from .errors import InvalidInput, NotFound
from .records import Contact, Topic

# After loading this many rows at once, refresh the planner's statistics (PostgreSQL): with
# stale ones it reads a million-row table end to end for every batch of lookups.
BULK = 10_000
# Profile fields that are shown in headers and on one line: no C0 control character (line
# breaks, tabs, ...) and no DEL; a line break in a name breaks every subject it is used in.
PROFILE_FIELDS = {"name": "name", "phone": "phone", "address": "postal address"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
CSV_COLUMNS = {"email", "name", "phone", "address", "language", "topics"}
# PD-3: an admin import never brings back a person who asked to be erased.
ERASED = "this address was erased at the person's request; only their own opt-in can add it again"


def check_profile_text(field: str, value: str | None) -> None:
    """Refuse a name, phone or postal address holding a control character."""
    if value is not None and _CONTROL.search(value):
        label = PROFILE_FIELDS.get(field, field)
        raise InvalidInput(
            f"the {label} contains a line break, tab or other control character:"
            " give it on one line without them"
        )


def check_language(language: str | None) -> None:
    if language is not None and language not in LANGUAGES:
        raise InvalidInput(f"language must be vi or en, not {language!r}")


def opt_in_status(topic: Topic) -> str:
    """What an opt-in given by staff or an import starts: a double opt-in topic waits
    for the person's own confirmation."""
    return "pending" if topic.double_opt_in else "subscribed"


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


class Contacts(ConsentingService):
    # -- one contact -------------------------------------------------------------------------

    async def add(
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
        check_language(language)
        topics = [await self.accepter.topic(slug) for slug in subscribe]
        for field_name, text in (("name", name), ("phone", phone), ("address", address)):
            check_profile_text(field_name, text)
        phone = addresses.normalize_phone(phone)
        for value in (attributes or {}).values():
            if value is not None and "\x00" in value:
                raise InvalidInput("a field contains a NUL character")
        profile = {"name": name, "phone": phone, "postal_address": address, "language": language}
        async with self.store.transaction():
            return await self._add(email, profile, attributes or {}, topics, source)

    async def _add(
        self,
        email: str,
        profile: dict[str, str | None],
        attributes: Mapping[str, str],
        topics: Sequence[Topic],
        source: str,
    ) -> tuple[Contact, bool, int]:
        now = time.time()
        standing = (await self.store.standings({email: self.signer.address_hashes(email)}))[email]
        if standing.erased:
            raise InvalidInput(ERASED)
        if standing.contact is None and profile["language"] is None:
            profile["language"] = self.settings.default_language
        contact, created = await self.store.upsert_contact(
            email, profile=profile, attributes=attributes, source=source, now=now
        )
        started = 0
        for topic in topics:
            status = opt_in_status(topic)
            if await self.consent.set_subscription(contact, topic, status, source=source, now=now):
                started += 1
        return contact, created, started

    async def subscription(
        self, contact: Contact, topic: Topic, *, subscribe: bool, source: str
    ) -> tuple[str, bool]:
        """Opt a contact in to a topic (pending for a double opt-in topic, unless already
        subscribed) or out of it. Returns (status now, whether anything changed)."""
        current = (await self.store.subscriptions_of(contact.id)).get(topic.id)
        if subscribe:
            wanted = opt_in_status(topic) if current != "subscribed" else "subscribed"
        else:
            wanted = "unsubscribed"
        changed = False
        if current != wanted and (current is not None or wanted != "unsubscribed"):
            async with self.store.transaction():
                changed = await self.consent.set_subscription(
                    contact, topic, wanted, source=source, now=time.time()
                )
        return wanted, changed

    # -- many contacts: a CSV ----------------------------------------------------------------

    async def import_file(
        self,
        path: str | Path,
        *,
        subscribe: Iterable[str] = (),
        source: str = "import",
        progress: Callable[[int, int], Any] | None = None,
        batch_size: int = 500,
    ) -> ImportReport:
        """Import a CSV (header email,name,phone,address,language,topics with topics
        separated by ';'). Good rows are imported; each bad row is reported by line.
        The file is read twice, a record at a time, never held whole: a first pass checks
        its quoting (a quote left open imports nothing) and counts its rows, the second
        imports them `batch_size` at a time, so memory stays flat however long it is."""

        def reopen() -> TextIO:
            try:
                return open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115
            except OSError as exc:
                raise InvalidInput(f"cannot read {path}: {exc}") from None

        return await self._import(
            reopen, subscribe=subscribe, source=source, progress=progress,
            batch_size=batch_size, name=str(path),
        )  # fmt: skip

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
        """`import_file` for CSV text already in memory (the admin API's upload)."""
        return await self._import(
            lambda: io.StringIO(text, newline=""), subscribe=subscribe, source=source,
            progress=progress, batch_size=batch_size, name=name,
        )  # fmt: skip

    async def _import(
        self,
        reopen: Callable[[], TextIO],
        *,
        subscribe: Iterable[str],
        source: str,
        progress: Callable[[int, int], Any] | None,
        batch_size: int,
        name: str,
    ) -> ImportReport:
        # First pass: the whole file's quoting is checked and its rows counted before
        # anything is written.
        with reopen() as f:
            records = _csv_records(f, name)
            header = next(records, (0, []))[1]
            total = sum(1 for _ in records)
        fields = [f.strip().lower() for f in header]
        if "email" not in fields:
            raise InvalidInput(f"{name}: the first line must be a header with an 'email' column")
        unknown = set(fields) - CSV_COLUMNS
        if unknown:
            raise InvalidInput(f"{name}: unknown column(s) {', '.join(sorted(unknown))}")
        default_topics = [await self.accepter.topic(slug) for slug in subscribe]
        report = ImportReport()
        prepared: list[tuple[int, dict[str, Any]]] = []
        done = 0
        with reopen() as f:
            records = _csv_records(f, name)
            next(records, None)  # the header
            for line, cells in records:
                try:
                    prepared.append((line, await self._row(fields, cells, default_topics)))
                except InvalidInput as exc:
                    report.bad_rows.append((line, str(exc)))
                done += 1
                if len(prepared) >= batch_size or done >= total:
                    if prepared:
                        await self._import_chunk(prepared, source, report)
                    prepared = []
                    if progress is not None:
                        progress(done, max(done, total))
        if prepared:  # the file grew between the two passes
            await self._import_chunk(prepared, source, report)
        report.bad_rows.sort()
        if report.created >= BULK:
            await self.store.analyze("contacts", "subscriptions", "consent_ledger")
        return report

    async def _row(
        self, fields: list[str], cells: list[str], default_topics: list[Topic]
    ) -> dict[str, Any]:
        """One CSV row checked and made ready to import; `InvalidInput` says what is wrong."""
        row = {k: v.strip() for k, v in zip(fields, cells, strict=False) if k}
        if len(cells) > len(fields):
            raise InvalidInput("more fields than the header has")
        email = addresses.normalize(row.get("email", ""))
        for field_name in PROFILE_FIELDS:
            check_profile_text(field_name, row.get(field_name))
        language = row.get("language") or None
        check_language(language)
        slugs = [s.strip() for s in row.get("topics", "").split(";") if s.strip()]
        topics = default_topics + [await self.accepter.topic(s) for s in slugs]
        return dict(
            email=email,
            name=row.get("name") or None,
            phone=addresses.normalize_phone(row.get("phone")),
            address=row.get("address") or None,
            language=language,
            topics=list({t.id: t for t in topics}.values()),
        )

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
                    report.bad_rows.append((line, ERASED))
                    continue
                items.append(item)
            results = await self.store.import_batch(
                items,
                standings,
                source=source,
                policy_version=await self.consent.policy_version(),
                default_language=self.settings.default_language,
                subject_of={email: hs[0] for email, hs in hashes.items()},
                now=time.time(),
            )
        for created, started in results:
            report.created += created
            report.updated += not created
            report.subscribed += started

    # -- a person's data (PD-2, PD-3, PD-4) --------------------------------------------------

    async def export(self, email: str) -> dict[str, Any]:
        """Everything held about an address (PD-2), contact or not: someone who only ever
        received service mail still has a message log."""
        email = addresses.normalize(email)
        contact = await self.store.get_contact(email)
        data = await self.store.export(email, contact)
        if contact is None and not data["messages"] and not data["suppressions"]:
            raise NotFound("no contact with that address, and nothing else is held about it")
        return data

    async def erase(self, email: str) -> None:
        """Erase at once (PD-3), contact or not; a keyed hash stays so it is never mailed."""
        email = addresses.normalize(email)
        contact = await self.store.get_contact(email)
        if contact is None:
            if await self.consent.is_erased(email):
                raise NotFound("no contact with that address")
            # Mail recorded by the address's keyed hash alone (a sign-up confirmation nobody
            # confirmed yet) counts: the erasure withdraws the link it carried.
            if not await self.store.withheld_messages(self.signer.address_hashes(email)):
                await self.export(email)  # NotFound when nothing is held at all
        await self._erase(email, contact)

    async def _erase(self, email: str, contact: Contact | None) -> None:
        hashes = self.signer.address_hashes(email)
        async with self.store.transaction():
            await self.store.erase(email, contact, hashes, time.time())

    async def purge(self) -> int:
        """Erase contacts marked as no longer using the service for longer than the
        retention period; returns how many."""
        cutoff = time.time() - self.settings.retention_days * 86400
        erased = 0
        async with self.store.scrub_once():  # the database's files scrubbed once, at the end
            while batch := await self.store.stopped_before(cutoff):
                for contact in batch:
                    await self._erase(contact.email, contact)
                erased += len(batch)
        return erased


def _csv_records(f: TextIO, path: str) -> Iterator[tuple[int, list[str]]]:
    """The non-blank records of a CSV with the line each starts on, read as they come. A
    quote left open would swallow the lines after it into one field (a mangled address
    imported without a word): a record that spans lines, or any quoting the csv module's
    strict mode refuses, raises `InvalidInput` naming the line; the import's first pass
    reads the whole file this way before anything is imported."""
    reader = csv.reader(f, strict=True)
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
            yield start, cells
    except csv.Error as exc:
        raise InvalidInput(
            f"{path}, line {last + 1}: {exc} (a quote left open?); fix the file, nothing was imported"
        ) from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from None
