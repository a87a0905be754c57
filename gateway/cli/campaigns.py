"""Campaigns: `campaign create|send|test|preview|status|pause|resume|cancel|list`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import os

from .. import addresses
from ..core import Gateway
from ..errors import GatewayError
from ._common import (
    Commands,
    add_concurrency,
    add_topic,
    audit_read,
    command,
    group,
    out,
    out_rows,
    read_file,
    settle_memory,
    stop_on_signals,
)


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
    out_rows(
        args,
        await gw.list_campaigns(),
        lambda r: f"{r['id']}\t{r['state']}\t{r['topic']}\t{r['name']}",
        "id\tstate\ttopic\tname",
    )
    return 0


async def cmd_campaign_send(gw: Gateway, args: argparse.Namespace) -> int:
    at = _when(args.at) if args.at else None
    if args.dry_run:
        return await _campaign_dry_run(gw, args)
    if args.processes < 1:
        raise GatewayError("--processes must be 1 or more (1 renders in this process)")
    # The render processes start before the campaign does: when they cannot, it stays as it
    # was. Detached or scheduled, this process renders nothing.
    processes = 1 if args.detach or at is not None else args.processes
    async with gw.campaigns.render_processes(processes):
        return await _start_and_deliver(gw, args, at)


async def _start_and_deliver(gw: Gateway, args: argparse.Namespace, at: float | None) -> int:
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
    stop_on_signals(stop)
    settle_memory()
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
            loop = asyncio.get_running_loop()
            while not stop.is_set():
                asked = loop.time()
                status = await gw.campaigns.status(args.id)
                # The counts read every message of the campaign (about 0.15 s at a million,
                # holding the database connection the delivery writes through): asked at
                # most a twentieth of the time.
                pause = max(0.25, 20 * (loop.time() - asked))
                done = sum(v for k, v in status.counts.items() if k != "queued")
                elapsed = max(loop.time() - started, 1e-6)
                progress.update(task, completed=done, rate=status.counts["sent"] / elapsed)
                if status.state in ("done", "cancelled", "paused"):
                    stop.set()
                    break
                with contextlib.suppress(TimeoutError):  # Ctrl-C ends the wait at once
                    await asyncio.wait_for(stop.wait(), min(pause, 5.0))

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


async def _campaign_dry_run(gw: Gateway, args: argparse.Namespace) -> int:
    """`campaign send --dry-run`: who would get it now and who not and why; nothing is
    started, sent or written."""
    from ..audience import for_campaign

    if args.rate is not None and args.rate <= 0:
        raise GatewayError("--rate must be a positive number of messages per second")
    c, found = await for_campaign(gw, args.id)
    data = {"id": c["id"], "name": c["name"], "topic": c["topic"], "state": c["state"]}
    human = f"campaign {c['id']} ({c['name']}, topic {c['topic']}, {c['state']}): " + "\n".join(
        found.lines("campaign")
    )
    if args.rate and found.would_get:
        human += f"\n  at {args.rate:g} a second it would take about {_duration(found.would_get / args.rate)}"
    out(args, {**data, **found.as_dict()}, human)
    return 0


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} second(s)"
    if seconds < 5400:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


def _when(text: str) -> float:
    """An ISO 8601 time (2026-12-24T08:00+07:00); without an offset, Vietnam time."""
    from datetime import datetime

    from ..catalog import TIMEZONE

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise GatewayError(f"--at {text!r} is not a time like 2026-12-24T08:00+07:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=TIMEZONE)
    return moment.timestamp()


async def cmd_campaign_preview(gw: Gateway, args: argparse.Namespace) -> int:
    address = addresses.normalize(args.email)
    rendered = await gw.campaigns.preview(args.id, address)
    # Promise 9: reading a person's message is a read of their data.
    await audit_read(gw, "campaigns.preview", address)
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


# -- the parser ----------------------------------------------------------------------------


def _add_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", type=int, metavar="ID")


def register(sub: Commands) -> None:
    msub = group(sub, "campaign", "create, send and watch campaigns")
    p = command(
        msub,
        "create",
        cmd_campaign_create,
        "create a campaign (prints its id); the template is checked for undefined fields "
        "and third-party content now",
    )
    p.add_argument("--name", required=True, help="a name for you; recipients never see it")
    add_topic(p, "who receives it: the topic's subscribers", required=True)
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
    _add_id(p)
    p.add_argument("--rate", type=float, metavar="N", help="at most N messages per second")
    p.add_argument(
        "--detach", action="store_true", help="start it and return; running workers deliver it"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="say how many would get it now and how many are suppressed, by reason; "
        "nothing is started or sent",
    )
    p.add_argument(
        "--at",
        metavar="TIME",
        help="schedule it instead: an ISO 8601 time such as 2026-12-24T08:00+07:00 "
        "(Vietnam time when no offset is given); running workers start it then",
    )
    cores = os.cpu_count() or 1
    p.add_argument(
        "--processes",
        type=int,
        default=cores,
        metavar="N",
        help="render and check the messages in N processes beside this one, which keeps the "
        "database and the delivery, so every core works "
        f"(default: the number of cores, os.cpu_count(), {cores} here); "
        "1 renders in this process's threads",
    )
    add_concurrency(p)
    p = command(
        msub,
        "test",
        cmd_campaign_test,
        "send the campaign as ADDR would get it, marked [TEST]; only to your own domains",
    )
    _add_id(p)
    p.add_argument("--to", required=True, metavar="ADDR", help="an address of your own domains")
    p = command(
        msub,
        "preview",
        cmd_campaign_preview,
        "show the message one contact would get, rendered now",
    )
    _add_id(p)
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
        _add_id(command(msub, name, handler, text))
    command(msub, "list", cmd_campaign_list, "list campaigns")
