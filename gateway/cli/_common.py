"""What every group of commands shares: output, files, the options declared in many places."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..core import Gateway
from ..errors import GatewayError

Handler = Callable[[Gateway, argparse.Namespace], Awaitable[int]]
# What `add_subparsers()` returns; argparse names no public type for it.
Commands = Any


def out(args: argparse.Namespace, data: Any, human: str) -> None:
    print(json.dumps(data, ensure_ascii=False) if getattr(args, "json", False) else human)


def out_rows(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    line: Callable[[dict[str, Any]], str],
    header: str | None = None,
) -> None:
    """One JSON list with --json, else one line of text per row, under a header line."""
    if getattr(args, "json", False):
        out(args, rows, "")
        return
    if rows and header:
        print(header)
    for r in rows:
        print(line(r))


def read_file(path: str | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GatewayError(
            f"cannot read the {what} file {path}: {exc.strerror if isinstance(exc, OSError) else exc}"
        ) from None


def login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in this environment
        return "unknown"


async def audit_read(gw: Gateway, action: str, email: str | None) -> None:
    """Promise 9: a read of people's data from here is recorded like the API's, by login."""
    await gw.audit_read(f"cli:{login()}", action, email)


def confirm(args: argparse.Namespace, question: str) -> None:
    """Ask before something that cannot be undone, when a person is at a terminal; --yes
    skips the question. Without a terminal (a script, cron, a pipe) the command goes ahead
    as it always has: a script has no one to answer."""
    if not asks(args):
        return
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise GatewayError("nothing was done (answer y to go ahead, or add --yes)")


def asks(args: argparse.Namespace) -> bool:
    """Whether `confirm` would ask: a terminal, and no --yes."""
    return not getattr(args, "yes", False) and sys.stdin.isatty()


def add_yes(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--yes", "-y", action="store_true", help="do not ask for confirmation on a terminal"
    )


def settle_memory() -> None:
    """For a command that runs long (serve, worker, campaign send), once its start is done:
    what exists now (modules, templates, the app) is moved out of the garbage collector's
    reach, so a full collection no longer walks it. Measured on one-click refusals under
    load: the slowest 1% of answers took 2.07 times a bare endpoint's, 1.00 with this."""
    import gc

    gc.collect()
    gc.freeze()


def stop_on_signals(stop: asyncio.Event) -> None:
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


# -- the parser: commands, groups of commands, options used by several ---------------------


def command(
    parent: Commands,
    name: str,
    handler: Handler,
    help: str,
    json_flag: bool = True,
    epilog: str | None = None,
    aliases: tuple[str, ...] = (),
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = parent.add_parser(
        name, help=help, description=help, epilog=epilog, aliases=list(aliases)
    )
    p.set_defaults(handler=handler)
    if json_flag:
        add_json(p)
    return p


def group(parent: Commands, name: str, help: str, aliases: tuple[str, ...] = ()) -> Commands:
    """A command made of actions (`gateway topics add`); alone it prints its own help."""
    p: argparse.ArgumentParser = parent.add_parser(
        name, help=help, description=help, aliases=list(aliases)
    )
    p.set_defaults(handler=None, help_of=p)
    return p.add_subparsers(dest="subcommand", metavar="ACTION")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def add_address(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("address", metavar="ADDR", help=help)


def add_topic(p: argparse.ArgumentParser, help: str, required: bool = False) -> None:
    p.add_argument("--topic", required=required, metavar="SLUG", help=help)


def add_subscribe(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--subscribe", action="append", metavar="SLUG", help=help)


def add_source(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--source", default=default, help=f"where the consent came from (default {default})"
    )


def add_concurrency(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help="SMTP connections kept open and used in parallel (default 4)",
    )
