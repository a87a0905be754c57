"""People: `topics`, `contacts` (add, import, export, erase), `suppress`, `purge`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import addresses
from ..core import Gateway
from ..errors import GatewayError, NotFound
from ._common import (
    Commands,
    add_address,
    add_source,
    add_subscribe,
    add_yes,
    audit_read,
    command,
    confirm,
    group,
    out,
    out_rows,
)
from .messages import register_contacts_list


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


async def cmd_contact_export(gw: Gateway, args: argparse.Namespace) -> int:
    data = await gw.export_contact(args.address)
    # Promise 9: the read is recorded (who, when, a keyed hash of whose), never the data.
    await audit_read(gw, "contacts.export", addresses.normalize(args.address))
    # Always JSON: --json makes it one line, otherwise it is indented for reading.
    print(json.dumps(data, ensure_ascii=False, indent=None if args.json else 2))
    return 0


async def cmd_contact_erase(gw: Gateway, args: argparse.Namespace) -> int:
    confirm(
        args,
        f"Erase {addresses.normalize(args.address)} now? Their profile, subscriptions and "
        "messages are deleted; this cannot be undone.",
    )
    try:
        await gw.erase_contact(args.address)
    except NotFound:
        if not await gw.is_erased(args.address):
            raise
        email = addresses.normalize(args.address)
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
    await audit_read(gw, "suppressions.list", None)
    out_rows(args, rows, _suppression_line, "email\tscope\treason\tsource")
    return 0


def _suppression_line(r: dict[str, Any]) -> str:
    topic = f" topic={r['topic']}" if r["topic"] else ""
    return f"{r['email'] or '(erased)'}\t{r['scope']}{topic}\t{r['reason']}\t{r['source']}"


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


# -- the parser ----------------------------------------------------------------------------


def register(sub: Commands) -> None:
    tsub = group(sub, "topics", "manage topics people subscribe to")
    p = command(tsub, "add", cmd_topics_add, "add a topic")
    p.add_argument("slug", metavar="SLUG", help="short name used in commands and links, e.g. news")
    p.add_argument("--name", required=True, help="name shown to people on the preference page")
    p.add_argument(
        "--double-opt-in",
        action="store_true",
        help="new subscriptions wait for a confirmation click",
    )
    command(tsub, "list", cmd_topics_list, "list topics with their number of subscribers")
    _register_contacts(sub)
    _register_suppress(sub)
    command(
        sub,
        "purge",
        cmd_purge,
        "erase every contact marked as no longer using the service for longer than "
        "GATEWAY_RETENTION_DAYS (data is kept no longer than needed) and print how many",
        epilog="Each one is erased exactly like `gateway contact erase`. Consent and refusal "
        "records are kept, tied to a keyed hash. Run it daily, e.g. from cron.",
    )


def _register_contacts(sub: Commands) -> None:
    csub = group(
        sub,
        "contacts",
        "manage contacts: add, import or list them; export or erase one person's data",
        aliases=("contact",),
    )
    p = command(csub, "add", cmd_contacts_add, "add or update a contact")
    add_address(p, "email address")
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
    add_subscribe(p, "opt in to a topic (repeatable)")
    add_source(p, "admin")
    p = command(
        csub,
        "import",
        cmd_contacts_import,
        "import contacts from CSV (header: email,name,phone,address,language,topics; topics ';'-separated)",
    )
    p.add_argument("file", metavar="FILE.csv")
    add_subscribe(p, "opt every row in to a topic (repeatable)")
    add_source(p, "import")
    register_contacts_list(csub)

    p = command(
        csub,
        "export",
        cmd_contact_export,
        "print everything held about one person as JSON (their right of access): profile, "
        "attributes with "
        "their source, subscriptions, consent history, suppressions and messages",
        epilog="The output is always JSON: indented, or on one line with --json. It answers "
        "a person's access request; the person can also do this themselves from the "
        "preference page. Example: gateway contact export an@example.vn > an.json",
    )
    add_address(p, "the person's email address")
    p = command(
        csub,
        "erase",
        cmd_contact_erase,
        "erase one person now (their right to erasure): profile, attributes, subscriptions, "
        "the personal data "
        "in the message log and outbox, and mail still waiting for them",
        epilog="Only a keyed hash of the address stays on the suppression list (reason "
        "erased), so the address is never mailed again and neither `contacts add` nor an "
        "import can bring it back; consent records stay, tied to that hash. This cannot be "
        "undone: on a terminal it asks first (--yes skips the question; a script is not "
        "asked). Erasing an address that is already erased succeeds and changes nothing.",
    )
    add_address(p, "the person's email address")
    add_yes(p)


def _register_suppress(sub: Commands) -> None:
    ssub = group(sub, "suppress", "manage the suppression list")
    p = command(
        ssub,
        "add",
        cmd_suppress_add,
        "never mail an address again (takes effect for mail already queued)",
    )
    add_address(p)
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
    add_address(p)
    command(ssub, "list", cmd_suppress_list, "list suppressions")
