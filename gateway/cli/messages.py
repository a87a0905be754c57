"""What happened: `contacts list`, `messages list`, `messages show`."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from .. import addresses, listings
from ..core import Gateway
from ..errors import InvalidInput, NotFound
from ._common import Commands, add_topic, audit_read, command, group, out


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts)) if ts else "-"


def _table(columns: tuple[str, ...], rows: Sequence[tuple[str, ...]], empty: str) -> None:
    """Aligned columns under a header, nothing cut short (a Message-ID is copied from here);
    one row per line, so `grep` and `head` work on it."""
    if not rows:
        print(empty)
        return
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    for line in (columns, *rows):
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


def _add_limit(p: argparse.ArgumentParser, cursor: str, cursor_help: str) -> None:
    p.add_argument(
        "--limit",
        type=int,
        default=100,
        metavar="N",
        help="show at most N rows (default 100); the last line says how to see the next ones",
    )
    p.add_argument(f"--{cursor}", type=int, default=None, metavar="ID", help=cursor_help)


def _check_limit(limit: int) -> int:
    if limit < 1:
        raise InvalidInput("--limit must be 1 or more")
    return limit


# -- contacts ------------------------------------------------------------------------------


async def cmd_contacts_list(gw: Gateway, args: argparse.Namespace) -> int:
    limit = _check_limit(args.limit)
    rows, total = await listings.contacts(
        gw, topic=args.topic, after_id=args.after or 0, limit=limit
    )
    # Promise 9: a list of people is a read of their data, recorded like the API's.
    await audit_read(gw, "contacts.list", None)
    if args.json:
        out(args, {"contacts": rows, "total": total, "more": len(rows) == limit}, "")
        return 0
    columns: tuple[str, ...] = ("id", "email", "name", "language", "status", "added")
    if args.topic:
        columns += ("subscription",)
    lines = [
        (
            str(r["id"]),
            r["email"],
            r["name"] or "",
            r["language"],
            r["status"],
            _when(r["created_at"]),
            *((r["subscription"],) if args.topic else ()),
        )
        for r in rows
    ]
    empty = (
        f"no contact has a subscription to {args.topic}"
        if args.topic
        else "no contacts yet: add one with `gateway contacts add ADDR`"
    )
    _table(columns, lines, empty)
    if rows and len(rows) == limit:
        print(f"{len(rows)} of {total} shown; the next ones: --after {rows[-1]['id']}")
    elif rows:
        print(f"{total} contact(s)")
    return 0


# -- messages ------------------------------------------------------------------------------


async def cmd_messages_list(gw: Gateway, args: argparse.Namespace) -> int:
    limit = _check_limit(args.limit)
    email = addresses.normalize(args.to) if args.to else None
    rows = await listings.messages(
        gw, email=email, campaign_id=args.campaign, before_id=args.before, limit=limit
    )
    await audit_read(gw, "messages.list", email)
    if args.json:
        out(args, {"messages": [_public(r) for r in rows], "more": len(rows) == limit}, "")
        return 0
    lines = [
        (
            _id(r),
            _when(r["created_at"]),
            r["email"] or "(erased)",
            r["category"] + (f" {r['topic']}" if r["topic"] else ""),
            r["state"],
            _why(r) or "",
        )
        for r in rows
    ]
    _table(("id", "accepted", "to", "category", "state", "why"), lines, "no messages found")
    if rows and len(rows) == limit:
        print(f"the {limit} newest shown; older ones: --before {rows[-1]['log_id']}")
    return 0


def _id(r: dict[str, Any]) -> str:
    """A message's name for `messages show`: its Message-ID, or #N for one refused at accept
    (it never got a Message-ID)."""
    return r["message_id"] or f"#{r['log_id']}"


def _why(r: dict[str, Any]) -> str | None:
    """Why it is held or was refused, in the words recorded when it happened."""
    if r["state"] == "queued" and r["last_error"]:
        return f"{r['last_error']}; next attempt {_when(r['next_attempt_at'])}"
    return r["reason"] or r["last_error"]


def _said(data: dict[str, Any]) -> bool:
    """The last reply is already told by the why line."""
    return bool(data["last_reply"] and (data["why"] or "").startswith(data["last_reply"]))


def _public(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": _id(r),
        "message_id": r["message_id"],
        "to": r["email"],
        "category": r["category"],
        "topic": r["topic"],
        "campaign_id": r["campaign_id"],
        "subject": r["subject"],
        "state": r["state"],
        "attempts": r["attempts"] or 0,
        "accepted_at": r["created_at"],
        "next_attempt_at": r["next_attempt_at"] if r["state"] == "queued" else None,
        "last_reply": r["last_error"],
        "why": _why(r),
        "source": r["source"],
    }


async def cmd_messages_show(gw: Gateway, args: argparse.Namespace) -> int:
    ref = args.id.strip()
    number = ref.removeprefix("#")
    if number.isdigit():
        found = await listings.message(gw, log_id=int(number))
    else:
        message_id = ref if ref.startswith("<") else f"<{ref}>"
        found = await listings.message(gw, message_id=message_id)
    if found is None:
        raise NotFound(
            f"no message {ref}: give a Message-ID (as `gateway send` and `messages list` print"
            " it) or the #number `messages list` shows for a message refused at accept"
        )
    await audit_read(gw, "messages.show", found["email"])
    data = _public(found)
    data["history"] = found["history"]
    if args.json:
        out(args, data, "")
        return 0
    fields = [
        ("message", data["id"]),
        ("to", data["to"] or "(erased)"),
        ("category", data["category"] + (f", topic {data['topic']}" if data["topic"] else "")),
        ("campaign", str(data["campaign_id"]) if data["campaign_id"] else None),
        ("subject", data["subject"]),
        ("handed in by", data["source"]),
        ("state", data["state"]),
        ("attempts", str(data["attempts"])),
        ("next attempt", _when(data["next_attempt_at"]) if data["next_attempt_at"] else None),
        ("last reply", None if _said(data) else data["last_reply"]),
        ("why", data["why"]),
    ]
    for name, value in fields:
        if value:
            print(f"{name + ':':<14}{value}")
    for step in data["history"]:
        reason = f": {step['reason']}" if step["reason"] else ""
        print(f"  {_when(step['at'])}  {step['status']}{reason}")
    return 0


# -- the parser ----------------------------------------------------------------------------


def register_contacts_list(csub: Commands) -> None:
    p = command(
        csub,
        "list",
        cmd_contacts_list,
        "list contacts by id, with headers (or --json); with --topic, those with a "
        "subscription to it and its state",
    )
    add_topic(p, "only contacts with a subscription to this topic (any state)")
    _add_limit(p, "after", "start after this contact id (the last line gives it)")


def register(sub: Commands) -> None:
    msub = group(sub, "messages", "see what happened to messages: listed, or one in full")
    p = command(
        msub,
        "list",
        cmd_messages_list,
        "list messages newest first: when accepted, to whom, state, and why held or refused",
        epilog="A message refused when it was handed in (suppressed, blocked) has no "
        "Message-ID: it is listed as #N, which `gateway messages show` takes too. Example: "
        "gateway messages list --to an@example.vn",
    )
    p.add_argument("--to", metavar="ADDR", help="only messages to this address")
    p.add_argument("--campaign", type=int, metavar="ID", help="only this campaign's messages")
    _add_limit(p, "before", "only messages listed before this one (the last line gives it)")
    p = command(
        msub,
        "show",
        cmd_messages_show,
        "one message: state, attempts, the receiving server's last reply, why it is held or "
        "was refused, who handed it in, and each step it went through",
    )
    p.add_argument("id", metavar="ID", help="its Message-ID, or #N from `messages list`")
