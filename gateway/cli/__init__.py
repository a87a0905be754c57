"""The `gateway` command line: every command explains itself with --help and fails in one line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

from . import addresses
from .config import SETTINGS
from .core import Gateway
from .errors import GatewayError, NotFound
from .feedback import Ingested
from .preflight import cmd_check, run_check

Handler = Callable[[Gateway, argparse.Namespace], Awaitable[int]]


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line that names the problem and where to read more, instead of usage noise.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def out(args: argparse.Namespace, data: Any, human: str) -> None:
    print(json.dumps(data, ensure_ascii=False) if getattr(args, "json", False) else human)


def read_file(path: str | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GatewayError(
            f"cannot read the {what} file {path}: {exc.strerror if isinstance(exc, OSError) else exc}"
        ) from None


# -- commands ------------------------------------------------------------------------------


async def cmd_init(gw: Gateway, args: argparse.Namespace) -> int:
    assert gw.migrated is not None  # opening the gateway created or migrated the schema
    found, version = gw.migrated
    state = (
        "created"
        if found is None
        else ("up to date" if found == version else f"migrated from {found}")
    )
    out(
        args,
        {"schema_version": version, "previous": found, "database": gw.store.display_url},
        f"database {gw.store.display_url}: schema version {version} ({state})",
    )
    return 0


async def cmd_send(gw: Gateway, args: argparse.Namespace) -> int:
    html = read_file(args.html, "HTML")
    text = read_file(args.text, "text")
    headers: dict[str, str] = {}
    for item in args.header or []:
        name, sep, value = item.partition(":")
        if not sep:
            raise GatewayError(f"--header {item!r} must look like 'Name: value'")
        headers[name.strip()] = value.strip()
    result = await gw.send(
        args.to,
        args.subject,
        html,
        text,
        category=args.category,
        topic=args.topic,
        headers=headers,
        idempotency_key=args.idempotency_key,
    )
    human = (
        f"{result.status}: {result.message_id}"
        if result.queued
        else f"{result.status}: {result.reason}"
    )
    out(args, result.as_dict(), human)
    return 0 if result.queued else 3


async def cmd_worker(gw: Gateway, args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with console.status("delivering…") as status:
        stats = await gw.deliver(
            until_idle=args.until_idle,
            stop=stop,
            progress=lambda s: status.update(
                f"delivering… sent {s.sent}, retrying {s.retried}, failed {s.failed}, suppressed {s.suppressed}"
            ),
        )
    out(
        args,
        stats.as_dict(),
        f"sent {stats.sent}, retry later {stats.retried}, failed {stats.failed}, suppressed {stats.suppressed}",
    )
    return 0


async def cmd_topics_add(gw: Gateway, args: argparse.Namespace) -> int:
    topic = await gw.add_topic(args.slug, args.name, double_opt_in=args.double_opt_in)
    out(
        args,
        {
            "id": topic.id,
            "slug": topic.slug,
            "name": topic.name,
            "double_opt_in": topic.double_opt_in,
        },
        f"topic {topic.slug} added",
    )
    return 0


async def cmd_topics_list(gw: Gateway, args: argparse.Namespace) -> int:
    rows = await gw.topics()
    if args.json:
        out(
            args,
            [
                {"slug": t.slug, "name": t.name, "double_opt_in": t.double_opt_in, "subscribers": n}
                for t, n in rows
            ],
            "",
        )
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("slug", "name", "double opt-in", "subscribers")
    for t, n in rows:
        table.add_row(t.slug, t.name, "yes" if t.double_opt_in else "no", str(n))
    Console().print(
        table if rows else "no topics yet: add one with `gateway topics add SLUG --name NAME`"
    )
    return 0


async def cmd_contacts_add(gw: Gateway, args: argparse.Namespace) -> int:
    attributes = {}
    for item in args.attr or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise GatewayError(f"--attr {item!r} must look like key=value")
        attributes[key.strip()] = value
    contact, created, started = await gw.add_contact(
        args.address,
        name=args.name,
        phone=args.phone,
        address=args.postal_address,
        language=args.language,
        attributes=attributes,
        subscribe=args.subscribe or [],
        source=args.source,
    )
    out(
        args,
        {"email": contact.email, "created": created, "subscriptions_started": started},
        f"contact {'added' if created else 'updated'}; {started} subscription(s) started",
    )
    return 0


async def cmd_contacts_import(gw: Gateway, args: argparse.Namespace) -> int:
    from rich.progress import Progress

    with Progress(transient=True, console=None, disable=args.json) as progress:
        task = progress.add_task("importing", total=None)
        report = await gw.import_contacts(
            args.file,
            subscribe=args.subscribe or [],
            source=args.source,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    human = f"created {report.created}, updated {report.updated}, subscriptions started {report.subscribed}"
    if report.bad_rows:
        human += f", {len(report.bad_rows)} bad row(s):\n" + "\n".join(
            f"  line {line}: {reason}" for line, reason in report.bad_rows
        )
    out(args, report.as_dict(), human)
    return 0 if not report.bad_rows else 4


async def cmd_suppress_add(gw: Gateway, args: argparse.Namespace) -> int:
    added = await gw.suppress(args.address, reason=args.reason, scope=args.scope)
    out(args, {"added": added}, "suppressed" if added else "already suppressed")
    return 0


async def cmd_suppress_remove(gw: Gateway, args: argparse.Namespace) -> int:
    removed = await gw.unsuppress(args.address)
    out(args, {"removed": removed}, f"removed {removed} suppression(s)")
    return 0


async def cmd_suppress_list(gw: Gateway, args: argparse.Namespace) -> int:
    rows, after = [], 0
    while True:
        page = await gw.suppressions(limit=1000, after_id=after)
        if not page:
            break
        rows += page
        after = page[-1]["id"]
    # Promise 9: a list of addresses is a read of many people's data, recorded like the API's.
    await gw.store.record_audit(f"cli:{_login()}", "suppressions.list", "list", time.time())
    if args.json:
        out(args, rows, "")
        return 0
    for r in rows:
        topic = f" topic={r['topic']}" if r["topic"] else ""
        print(f"{r['email'] or '(erased)'}\t{r['scope']}{topic}\t{r['reason']}\t{r['source']}")
    return 0


async def cmd_contact_export(gw: Gateway, args: argparse.Namespace) -> int:
    data = await gw.export_contact(args.address)
    # Promise 9: the read is recorded (who, when, a keyed hash of whose), never the data.
    subject = gw.signer.address_hash(addresses.normalize(args.address))
    await gw.store.record_audit(f"cli:{_login()}", "contacts.export", subject, time.time())
    # Always JSON: --json makes it one line, otherwise it is indented for reading.
    print(json.dumps(data, ensure_ascii=False, indent=None if args.json else 2))
    return 0


def _login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in this environment
        return "unknown"


async def _erased(gw: Gateway, address: str) -> str | None:
    """The normalized address if only an erasure tombstone is left of it."""
    email = addresses.normalize(address)
    standing = (await gw.store.standings({email: gw.signer.address_hashes(email)}))[email]
    return email if standing.erased else None


async def cmd_contact_erase(gw: Gateway, args: argparse.Namespace) -> int:
    try:
        await gw.erase_contact(args.address)
    except NotFound:
        email = await _erased(gw, args.address)
        if email is None:
            raise
        out(args, {"email": email, "erased": False, "already_erased": True}, "already erased")
        return 0
    email = addresses.normalize(args.address)
    out(
        args,
        {"email": email, "erased": True, "already_erased": False},
        f"erased {email}: profile, attributes, subscriptions and message log entries are gone; "
        "a keyed hash keeps the address from ever being mailed or imported again",
    )
    return 0


async def cmd_purge(gw: Gateway, args: argparse.Namespace) -> int:
    days = gw.settings.retention_days  # Settings refuses a negative one
    from rich.console import Console

    with Console(stderr=True).status("erasing contacts past their retention…"):
        erased = await gw.purge()
    out(
        args,
        {"erased": erased, "retention_days": days},
        f"erased {erased} contact(s) stopped more than {days} day(s) ago",
    )
    return 0


def _report_files(paths: list[str]) -> list[Path]:
    """The files named, a maildir's or directory's messages in place of the directory."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            inner = [path / d for d in ("new", "cur") if (path / d).is_dir()] or [path]
            files.extend(sorted(f for d in inner for f in d.iterdir() if f.is_file()))
        elif path.exists():
            files.append(path)
        else:
            raise GatewayError(f"cannot read {name}: no such file or directory")
    return files


async def cmd_bounces_ingest(gw: Gateway, args: argparse.Namespace) -> int:
    results: list[dict[str, Any]] = []
    for path in _report_files(args.files):
        try:
            data = path.read_bytes()
        except OSError as exc:
            outcome = Ingested("unreadable", reason=exc.strerror or str(exc))
        else:
            outcome = await gw.ingest(data, trusted=True)
        results.append({"file": str(path), **outcome.as_dict()})
        if not args.json:
            done = "; ".join(outcome.actions) or f"nothing done: {outcome.reason}"
            print(f"{path}: {outcome.kind}: {done}")
    acted = sum(1 for r in results if r["actions"])
    if args.json:
        print(json.dumps({"files": results, "acted": acted}, ensure_ascii=False))
    else:
        print(f"{len(results)} file(s) read, {acted} acted on", file=sys.stderr)
    return 0


async def cmd_serve(gw: Gateway, args: argparse.Namespace) -> int:
    # Only a check that the gateway opens and its settings hold (a bad database, DKIM key or
    # inbound address is one line, not a traceback); `serve()` runs the server on its own loop.
    gw.dkim_signer()
    if gw.settings.inbound_smtp:
        from .inbound import parse_hostport

        parse_hostport(gw.settings.inbound_smtp)
    return 0


def serve(gw: Gateway, args: argparse.Namespace) -> int:
    import uvicorn

    from .web.app import create_app

    app = create_app(gw, worker=not args.no_worker, own=True)
    print(f"Gateway preference center on http://{args.host}:{args.port}", flush=True)
    # uvicorn picks uvloop and httptools when installed (uvicorn[standard]): about three
    # times the plain asyncio server here.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", lifespan="on")
    return 0


# -- campaigns -----------------------------------------------------------------------------


async def cmd_campaign_create(gw: Gateway, args: argparse.Namespace) -> int:
    campaign_id = await gw.campaigns.create(
        name=args.name,
        topic=args.topic,
        subject=args.subject,
        html=read_file(args.html, "HTML"),
        text=read_file(args.text, "text"),
    )
    out(args, {"id": campaign_id}, str(campaign_id))
    return 0


def _counts_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in counts.items())


async def cmd_campaign_status(gw: Gateway, args: argparse.Namespace) -> int:
    status = await gw.campaigns.status(args.id)
    out(
        args,
        status.as_dict(),
        f"campaign {status.id} ({status.name}, topic {status.topic}): "
        f"{status.state}; {_counts_line(status.counts)}",
    )
    return 0


async def cmd_campaign_list(gw: Gateway, args: argparse.Namespace) -> int:
    rows = await gw.store.list_campaigns()
    if args.json:
        out(args, rows, "")
        return 0
    for r in rows:
        print(f"{r['id']}\t{r['state']}\t{r['topic']}\t{r['name']}")
    return 0


async def cmd_campaign_send(gw: Gateway, args: argparse.Namespace) -> int:
    at = _when(args.at) if args.at else None
    state = await gw.campaigns.start(args.id, rate=args.rate, at=at)
    if state == "scheduled" and not args.detach:
        out(
            args,
            {"id": args.id, "state": state, "at": at},
            f"campaign {args.id} is scheduled; running workers start it at {args.at}",
        )
        return 0
    if args.detach:
        out(
            args,
            {"id": args.id, "state": state},
            f"campaign {args.id} is {state}; running workers deliver it",
        )
        return 0
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    total = await gw.campaigns.audience_size(args.id)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.0f} msg/s"),
        TimeRemainingColumn(),
    )
    started = asyncio.get_running_loop().time()
    with Progress(*columns, transient=False, disable=args.json) as progress:
        task = progress.add_task(f"campaign {args.id}", total=total, rate=0.0)

        async def watch() -> None:
            while not stop.is_set():
                status = await gw.campaigns.status(args.id)
                done = sum(v for k, v in status.counts.items() if k != "queued")
                elapsed = max(asyncio.get_running_loop().time() - started, 1e-6)
                progress.update(task, completed=done, rate=status.counts["sent"] / elapsed)
                if status.state in ("done", "cancelled", "paused"):
                    stop.set()
                    break
                await asyncio.sleep(0.25)

        watcher = asyncio.create_task(watch())
        await gw.deliver(stop=stop)
        await watcher
    status = await gw.campaigns.status(args.id)
    out(
        args,
        status.as_dict(),
        f"campaign {status.id}: {status.state}; {_counts_line(status.counts)}",
    )
    return 0


def _when(text: str) -> float:
    """An ISO 8601 time (2026-12-24T08:00+07:00); without an offset, Vietnam time."""
    from datetime import datetime, timedelta, timezone

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise GatewayError(f"--at {text!r} is not a time like 2026-12-24T08:00+07:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone(timedelta(hours=7)))
    return moment.timestamp()


def _stop_on_signals(stop: asyncio.Event) -> None:
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def cmd_campaign_preview(gw: Gateway, args: argparse.Namespace) -> int:
    import email
    import email.policy
    import time

    from . import addresses

    address = addresses.normalize(args.email)
    rendered = await gw.campaigns.preview(args.id, address)
    # Promise 9: reading a person's message is a read of their data.
    await gw.store.record_audit(
        f"cli:{_login()}", "campaigns.preview", gw.signer.address_hash(address), time.time()
    )
    message = email.message_from_bytes(rendered.raw, policy=email.policy.default)
    parts = {}
    for kind in ("plain", "html"):
        body = message.get_body((kind,))  # type: ignore[attr-defined]
        parts[kind] = body.get_content() if body is not None else None
    blocked = list(dict.fromkeys(f.url for f in rendered.findings))
    data = {
        "subject": rendered.subject,
        "text": parts["plain"],
        "html": parts["html"],
        "blocked_urls": blocked,
    }
    human = f"Subject: {rendered.subject}\n\n{parts['plain'] or ''}"
    if blocked:
        human += "\nBLOCKED (third-party content): " + ", ".join(blocked)
    out(args, data, human)
    return 0


async def cmd_campaign_test(gw: Gateway, args: argparse.Namespace) -> int:
    result = await gw.campaigns.test_send(args.id, args.to)
    human = f"{result.status}: {result.message_id or result.reason}"
    out(args, result.as_dict(), human + ("; the worker delivers it" if result.queued else ""))
    return 0 if result.queued else 3


async def cmd_campaign_pause(gw: Gateway, args: argparse.Namespace) -> int:
    await gw.campaigns.pause(args.id)
    out(args, {"id": args.id, "state": "paused"}, f"campaign {args.id} paused")
    return 0


async def cmd_campaign_resume(gw: Gateway, args: argparse.Namespace) -> int:
    await gw.campaigns.resume(args.id)
    out(args, {"id": args.id, "state": "sending"}, f"campaign {args.id} resumed")
    return 0


async def cmd_campaign_cancel(gw: Gateway, args: argparse.Namespace) -> int:
    await gw.campaigns.cancel(args.id)
    out(args, {"id": args.id, "state": "cancelled"}, f"campaign {args.id} cancelled")
    return 0


# -- privacy policy versions (promise 10, PD-5) ----------------------------------------------


async def _policy_notices(gw: Gateway, args: argparse.Namespace, start: Any) -> Any:
    """Run `start(progress)` with a progress bar of the notices (hidden with --json)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, transient=True, disable=args.json) as progress:
        task = progress.add_task("policy notices", total=None)
        return await start(lambda done, total: progress.update(task, completed=done, total=total))


def _notices_line(report: Any) -> str:
    return f"{report.queued} notice(s) queued, {report.suppressed} suppressed (each recorded)"


async def cmd_policy_publish(gw: Gateway, args: argparse.Namespace) -> int:
    text = read_file(args.text, "policy text")
    report = await _policy_notices(
        gw,
        args,
        lambda progress: gw.policies.publish(
            args.version, text or "", args.adverse, progress=progress
        ),
    )
    human = f"published policy version {report.version}"
    human += (
        f" (adverse): {_notices_line(report)}" if report.adverse else " (not adverse: no email)"
    )
    out(args, report.as_dict(), human)
    return 0


async def cmd_policy_notify(gw: Gateway, args: argparse.Namespace) -> int:
    report = await _policy_notices(
        gw, args, lambda progress: gw.policies.notify(args.version, progress=progress)
    )
    human = (
        f"policy version {report.version}: {_notices_line(report)} now"
        if report.adverse
        else f"policy version {report.version} is not adverse: nobody is notified"
    )
    out(args, report.as_dict(), human)
    return 0


async def cmd_policy_list(gw: Gateway, args: argparse.Namespace) -> int:
    rows = await gw.policies.versions()
    current = await gw.policies.current_version()
    if args.json:
        out(args, {"current": current, "versions": rows}, "")
        return 0
    if not rows:
        print(f"no version published; consent is recorded under {current} (GATEWAY_POLICY_VERSION)")
        return 0
    from datetime import UTC, datetime

    for r in rows:
        when = datetime.fromtimestamp(r["published_at"], UTC).strftime("%Y-%m-%d %H:%M UTC")
        adverse = "adverse" if r["adverse"] else "-"
        notices = r["notices"]
        mark = " (current)" if r["version"] == current else ""
        print(
            f"{r['version']}{mark}\t{when}\t{adverse}\t"
            f"notices queued {notices['queued']}, suppressed {notices['suppressed']}"
        )
    return 0


async def cmd_settings(gw: Gateway, args: argparse.Namespace) -> int:
    rows = [{"name": s.env, "default": s.default, "help": s.help} for s in SETTINGS]
    out(
        args,
        rows,
        "\n".join(f"{s.env}  (default: {s.default or 'unset'})\n    {s.help}" for s in SETTINGS),
    )
    return 0


async def cmd_apikey_create(gw: Gateway, args: argparse.Namespace) -> int:
    from . import apikeys

    key = await apikeys.create(gw.store, args.name)
    print(f"API key {args.name!r} created; it is shown only this once, store it now:")
    print(key)  # alone on the last line, for scripts
    return 0


async def cmd_apikey_list(gw: Gateway, args: argparse.Namespace) -> int:
    from . import apikeys

    rows = await apikeys.listing(gw.store)
    if args.json:
        out(args, rows, "")
        return 0
    for r in rows:
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["created_at"]))
        revoked = (
            "revoked " + time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["revoked_at"]))
            if r["revoked_at"]
            else "live"
        )
        print(f"{r['name']}\t{r['prefix']}…\t{created} UTC\t{revoked}")
    if not rows:
        print("no API keys yet: make one with `gateway apikey create NAME`")
    return 0


async def cmd_apikey_revoke(gw: Gateway, args: argparse.Namespace) -> int:
    from . import apikeys

    await apikeys.revoke(gw.store, args.name)
    out(args, {"name": args.name, "revoked": True}, f"API key {args.name!r} revoked")
    return 0


# -- the parser ----------------------------------------------------------------------------


def build_parser() -> Parser:
    parser = Parser(
        prog="gateway",
        description="Email gateway and preference center: every message is checked against "
        "suppression lists and consent, scanned for third-party content, and delivered from a "
        "durable outbox. Configure with GATEWAY_* variables (`gateway settings` lists them).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def command(
        parent: Any,
        name: str,
        handler: Handler,
        help: str,
        json_flag: bool = True,
        epilog: str | None = None,
        aliases: tuple[str, ...] = (),
    ) -> Parser:
        p = parent.add_parser(
            name, help=help, description=help, epilog=epilog, aliases=list(aliases)
        )
        p.set_defaults(handler=handler)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        return p

    command(sub, "init", cmd_init, "create or migrate the database (safe to run again)")
    p = command(
        sub,
        "serve",
        cmd_serve,
        "run the preference center and the delivery worker",
        json_flag=False,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--no-worker",
        action="store_true",
        help="serve pages only; deliver with `gateway worker` elsewhere",
    )

    p = command(sub, "worker", cmd_worker, "deliver due messages from the outbox")
    p.add_argument(
        "--until-idle",
        action="store_true",
        help="exit once nothing is due (messages waiting for a later retry don't count)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help="SMTP connections kept open and used in parallel (default 4)",
    )

    p = command(
        sub, "send", cmd_send, "accept one message into the outbox (the worker delivers it)"
    )
    p.add_argument("--to", required=True, help="recipient address (one recipient per message)")
    p.add_argument("--subject", required=True, help="subject; a template like the bodies")
    p.add_argument("--html", metavar="FILE", help="HTML body template file ('-' for stdin)")
    p.add_argument(
        "--text", metavar="FILE", help="text body template file (made from the HTML when omitted)"
    )
    p.add_argument(
        "--category",
        default="transactional",
        choices=("transactional", "marketing", "policy"),
        help="transactional (default), marketing (needs --topic and an opt-in) or policy",
    )
    p.add_argument("--topic", metavar="SLUG", help="topic of a marketing message")
    p.add_argument(
        "--header", action="append", metavar="'NAME: VALUE'", help="extra header (repeatable)"
    )
    p.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="a second send with the same key is not queued again",
    )

    topics = command(sub, "topics", None, "manage topics people subscribe to", json_flag=False)  # type: ignore[arg-type]
    tsub = topics.add_subparsers(dest="subcommand", metavar="ACTION", parser_class=Parser)
    p = command(tsub, "add", cmd_topics_add, "add a topic")
    p.add_argument("slug", metavar="SLUG", help="short name used in commands and links, e.g. news")
    p.add_argument("--name", required=True, help="name shown to people on the preference page")
    p.add_argument(
        "--double-opt-in",
        action="store_true",
        help="new subscriptions wait for a confirmation click",
    )
    command(tsub, "list", cmd_topics_list, "list topics with their number of subscribers")

    contacts = command(
        sub,
        "contacts",
        None,  # type: ignore[arg-type]
        "manage contacts: add, import, export or erase one person's data",
        json_flag=False,
        aliases=("contact",),
    )
    csub = contacts.add_subparsers(dest="subcommand", metavar="ACTION", parser_class=Parser)
    p = command(csub, "add", cmd_contacts_add, "add or update a contact")
    p.add_argument("address", metavar="ADDR", help="email address")
    p.add_argument("--name")
    p.add_argument("--phone")
    p.add_argument(
        "--address", dest="postal_address", metavar="POSTAL_ADDRESS", help="postal address"
    )
    p.add_argument("--language", choices=("vi", "en"))
    p.add_argument(
        "--attr",
        action="append",
        metavar="KEY=VALUE",
        help="attribute the person supplied (repeatable)",
    )
    p.add_argument(
        "--subscribe", action="append", metavar="SLUG", help="opt in to a topic (repeatable)"
    )
    p.add_argument("--source", default="admin", help="where the consent came from (default admin)")
    p = command(
        csub,
        "import",
        cmd_contacts_import,
        "import contacts from CSV (header: email,name,phone,address,language,topics; topics ';'-separated)",
    )
    p.add_argument("file", metavar="FILE.csv")
    p.add_argument(
        "--subscribe",
        action="append",
        metavar="SLUG",
        help="opt every row in to a topic (repeatable)",
    )
    p.add_argument(
        "--source", default="import", help="where the consent came from (default import)"
    )

    p = command(
        csub,
        "export",
        cmd_contact_export,
        "print everything held about one person as JSON (PD-2): profile, attributes with "
        "their source, subscriptions, consent history, suppressions and messages",
        epilog="The output is always JSON: indented, or on one line with --json. It answers "
        "a person's access request; the person can also do this themselves from the "
        "preference page. Example: gateway contact export an@example.vn > an.json",
    )
    p.add_argument("address", metavar="ADDR", help="the person's email address")
    p = command(
        csub,
        "erase",
        cmd_contact_erase,
        "erase one person now (PD-3): profile, attributes, subscriptions, the personal data "
        "in the message log and outbox, and mail still waiting for them",
        epilog="Only a keyed hash of the address stays on the suppression list (reason "
        "erased), so the address is never mailed again and neither `contacts add` nor an "
        "import can bring it back; consent records stay, tied to that hash. This cannot be "
        "undone. Erasing an address that is already erased succeeds and changes nothing.",
    )
    p.add_argument("address", metavar="ADDR", help="the person's email address")

    supp = command(sub, "suppress", None, "manage the suppression list", json_flag=False)  # type: ignore[arg-type]
    ssub = supp.add_subparsers(dest="subcommand", metavar="ACTION", parser_class=Parser)
    p = command(
        ssub,
        "add",
        cmd_suppress_add,
        "never mail an address again (takes effect for mail already queued)",
    )
    p.add_argument("address", metavar="ADDR")
    p.add_argument(
        "--reason",
        default="manual",
        help="why, e.g. manual (default: blocks all mail) or phone/email (a refusal: stops promotional mail)",
    )
    p.add_argument("--scope", choices=("all", "marketing"), help="override what the reason stops")
    p = command(
        ssub,
        "remove",
        cmd_suppress_remove,
        "lift a suppression you added, or a bounce (never an erasure or the person's own "
        "refusal: only they can lift that)",
    )
    p.add_argument("address", metavar="ADDR")
    command(ssub, "list", cmd_suppress_list, "list suppressions")

    command(
        sub,
        "purge",
        cmd_purge,
        "erase every contact marked as no longer using the service for longer than "
        "GATEWAY_RETENTION_DAYS (PD-4) and print how many",
        epilog="Each one is erased exactly like `gateway contact erase`. Consent and refusal "
        "records are kept, tied to a keyed hash. Run it daily, e.g. from cron.",
    )
    bounce = command(sub, "bounces", None, "read bounces and complaint reports", json_flag=False)  # type: ignore[arg-type]
    bsub = bounce.add_subparsers(dest="subcommand", metavar="ACTION", parser_class=Parser)
    p = command(
        bsub,
        "ingest",
        cmd_bounces_ingest,
        "act on bounce (DSN), complaint (ARF) and unsubscribe messages saved as files",
        epilog="For bounces fetched from your own mailbox (one message per file; a maildir or "
        "a directory reads every file in it). Matched by the signed return path, then by the "
        "original Message-ID, then, for other bounce formats, by the failed address if the "
        "gateway mailed it in the last 30 days. A permanent failure suppresses the address "
        "(hard_bounce), a complaint stops marketing to it, a 5.7.x refusal is reported as an "
        "alert. Unreadable files are reported and skipped. With GATEWAY_INBOUND_SMTP set, "
        "`gateway serve` receives these by SMTP instead.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="message files or directories")
    camp = command(sub, "campaign", None, "create, send and watch campaigns", json_flag=False)  # type: ignore[arg-type]
    msub = camp.add_subparsers(dest="subcommand", metavar="ACTION", parser_class=Parser)
    p = command(
        msub,
        "create",
        cmd_campaign_create,
        "create a campaign (prints its id); the template is checked for undefined fields "
        "and third-party content now",
    )
    p.add_argument("--name", required=True, help="a name for you; recipients never see it")
    p.add_argument(
        "--topic", required=True, metavar="SLUG", help="who receives it: the topic's subscribers"
    )
    p.add_argument("--subject", required=True, help="subject template (the [QC] label is added)")
    p.add_argument(
        "--html",
        required=True,
        metavar="FILE",
        help="HTML template; sees contact.name, contact.email, contact.language, "
        "contact.attributes, unsubscribe_url, preferences_url",
    )
    p.add_argument("--text", metavar="FILE", help="text template (made from the HTML when omitted)")
    p = command(
        msub,
        "send",
        cmd_campaign_send,
        "start a campaign and deliver it from here with a progress bar (other workers help)",
    )
    p.add_argument("id", type=int, metavar="ID")
    p.add_argument("--rate", type=float, metavar="N", help="at most N messages per second")
    p.add_argument(
        "--detach", action="store_true", help="start it and return; running workers deliver it"
    )
    p.add_argument(
        "--at",
        metavar="TIME",
        help="schedule it instead: an ISO 8601 time such as 2026-12-24T08:00+07:00 "
        "(Vietnam time when no offset is given); running workers start it then",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help="SMTP connections kept open and used in parallel (default 4)",
    )
    p = command(
        msub,
        "test",
        cmd_campaign_test,
        "send the campaign as ADDR would get it, marked [TEST]; only to your own domains",
    )
    p.add_argument("id", type=int, metavar="ID")
    p.add_argument("--to", required=True, metavar="ADDR", help="an address of your own domains")
    p = command(
        msub,
        "preview",
        cmd_campaign_preview,
        "show the message one contact would get, rendered now",
    )
    p.add_argument("id", type=int, metavar="ID")
    p.add_argument("--email", required=True, metavar="ADDR", help="the contact")
    for name, handler, text in (
        (
            "status",
            cmd_campaign_status,
            "state and counts (queued, sent, suppressed, blocked, failed, bounced)",
        ),
        ("pause", cmd_campaign_pause, "stop delivering at once; waiting messages stay queued"),
        ("resume", cmd_campaign_resume, "continue a paused campaign"),
        ("cancel", cmd_campaign_cancel, "stop for good; waiting messages are dropped"),
    ):
        p = command(msub, name, handler, text)
        p.add_argument("id", type=int, metavar="ID")
    command(msub, "list", cmd_campaign_list, "list campaigns")

    pol = command(sub, "policy", None, "publish privacy policy versions", json_flag=False)  # type: ignore[arg-type]
    psub = pol.add_subparsers(dest="subcommand", metavar="ACTION", parser_class=Parser)
    p = command(
        psub,
        "publish",
        cmd_policy_publish,
        "publish a new policy version; consent is recorded under it from now on",
        epilog="With --adverse, every contact with data stored is emailed a notice with the "
        "new text (category policy: it reaches people who refused promotional mail too; "
        "erased addresses and hard bounces are never mailed), and each notice is recorded. "
        "A version cannot be published twice. Example: gateway policy publish 2025.08 "
        "--text policy-2025.08.txt --adverse",
    )
    p.add_argument("version", metavar="VERSION", help="e.g. 2025.08 (letters, digits, . - _)")
    p.add_argument(
        "--text", required=True, metavar="FILE", help="the full policy text ('-' for stdin)"
    )
    p.add_argument(
        "--adverse",
        action="store_true",
        help="the change is to people's disadvantage: email every contact (promise 10)",
    )
    p = command(
        psub,
        "notify",
        cmd_policy_notify,
        "send the notices of an adverse version still missing (after an interrupted publish)",
    )
    p.add_argument("version", metavar="VERSION")
    command(psub, "list", cmd_policy_list, "list published versions and their notices")

    keys = command(sub, "apikey", None, "manage keys of the admin API", json_flag=False)  # type: ignore[arg-type]
    ksub = keys.add_subparsers(dest="subcommand", metavar="ACTION", parser_class=Parser)
    p = command(
        ksub,
        "create",
        cmd_apikey_create,
        "make a key for the admin API; it is printed once, alone on the last line",
        json_flag=False,
        epilog="Only a hash of the key is stored: a lost key cannot be shown again, revoke "
        "it and make another. Use it as `Authorization: Bearer <key>`.",
    )
    p.add_argument("name", metavar="NAME", help="who or what uses it, e.g. crm or an-staff")
    command(ksub, "list", cmd_apikey_list, "list keys: name, prefix, created, revoked")
    p = command(ksub, "revoke", cmd_apikey_revoke, "revoke a key at once")
    p.add_argument("name", metavar="NAME")

    command(sub, "settings", cmd_settings, "list the GATEWAY_* environment variables")
    p = command(
        sub,
        "check",
        cmd_check,
        "check the settings for what would hurt delivery or break the law; exit 1 on any error",
        epilog="Reads the settings only (and DNS with --dns), so it runs when the database is"
        " down too. GATEWAY_DNS_RESOLVER=host:port sends the lookups to a chosen DNS server.",
    )
    p.add_argument("--dns", action="store_true", help="also look up DKIM, SPF, DMARC and MX")
    return parser


async def run(gw: Gateway, args: argparse.Namespace) -> int:
    async with gw:
        return await args.handler(gw, args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        # `gateway` or `gateway topics` alone: show what there is to do.
        target = parser
        if args.command:
            target = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore[union-attr,index]
        target.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING, format="gateway: %(message)s")
    try:
        if args.handler is cmd_check:  # no Gateway: it must run when settings are broken
            return run_check(args)
        gw = Gateway.from_env(concurrency=getattr(args, "concurrency", 4))
        code = asyncio.run(run(gw, args))
        if args.handler is cmd_serve:
            # The web app opens and closes the gateway in its own lifespan.
            code = serve(gw, args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # `gateway … | head`: the reader has what it wanted. Quiet, as other Unix tools are
        # (they die of SIGPIPE: 128 + 13); output still buffered goes nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except GatewayError as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a traceback: one line, and how to get the details
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        print(f"gateway: error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
