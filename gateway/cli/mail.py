"""Mail in and out: `send`, `worker`, `serve`, `bounces ingest`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from ..core import Gateway
from ..errors import GatewayError
from ..feedback import Ingested
from ._common import (
    Commands,
    add_concurrency,
    add_topic,
    command,
    group,
    out,
    read_file,
    settle_memory,
    stop_on_signals,
)


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
        f"{result.status}: {result.message_id}" + (f"; {result.reason}" if result.reason else "")
        if result.queued
        else f"{result.status}: {result.reason}"
    )
    out(args, result.as_dict(), human)
    return 0 if result.queued else 3


async def cmd_worker(gw: Gateway, args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    stop = asyncio.Event()
    stop_on_signals(stop)
    settle_memory()
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


async def cmd_serve(gw: Gateway, args: argparse.Namespace) -> int:
    # Only a check that the gateway opens and its settings hold (a bad database, DKIM key or
    # inbound address is one line, not a traceback); `serve()` runs the server on its own loop.
    gw.dkim_signer()
    if gw.settings.inbound_smtp:
        from ..smtp import parse_hostport

        parse_hostport(gw.settings.inbound_smtp)
    if gw.settings.submission_smtp:
        from ..smtp import parse_hostport
        from ..smtp.submission import server_tls

        parse_hostport(gw.settings.submission_smtp, "GATEWAY_SUBMISSION_SMTP")
        server_tls(gw.settings.tls_cert, gw.settings.tls_key)
    return 0


def _say_check_errors() -> None:
    """The errors `gateway check` finds, at start: the server runs all the same (the
    defaults are fine for trying it out), but nobody starts it without seeing them."""
    from ..preflight import check

    errors = [f for f in check() if f.level == "error"]
    for f in errors:
        print(f"gateway: check: {f.message}", file=sys.stderr)
    if errors:
        print(
            f"gateway: {len(errors)} setting(s) would hurt delivery or break the law: fix them"
            " before sending real mail (`gateway check` lists them)",
            file=sys.stderr,
            flush=True,
        )


def serve(gw: Gateway, args: argparse.Namespace) -> int:
    import uvicorn

    from ..web.app import create_app

    _say_check_errors()
    app = create_app(gw, worker=not args.no_worker, own=True)
    print(f"Gateway preference center on http://{args.host}:{args.port}", flush=True)
    settle_memory()
    # uvicorn picks uvloop and httptools when installed (uvicorn[standard]): about three
    # times the plain asyncio server here.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", lifespan="on")
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


# -- the parser ----------------------------------------------------------------------------


def register(sub: Commands) -> None:
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
    add_concurrency(p)

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
    add_topic(p, "topic of a marketing message")
    p.add_argument(
        "--header", action="append", metavar="'NAME: VALUE'", help="extra header (repeatable)"
    )
    p.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="a second send with the same key is not queued again",
    )


def register_bounces(sub: Commands) -> None:
    bsub = group(sub, "bounces", "read bounces and complaint reports")
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
