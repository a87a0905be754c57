"""The `gateway` command line: every command explains itself with --help and fails in one line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import NoReturn

from ..core import Gateway
from ..errors import GatewayError
from ..preflight import cmd_check, run_check
from . import admin, campaigns, mail, messages, people, staff
from .mail import cmd_serve, serve


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line that names the problem and where to read more, instead of usage noise.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> Parser:
    parser = Parser(
        prog="gateway",
        description="Email gateway and preference center: every message is checked against "
        "suppression lists and consent, scanned for third-party content, and delivered from a "
        "durable outbox. Configure with GATEWAY_* variables (`gateway settings` lists them).",
    )
    # Subparsers are built with the parser's own class, so every command fails in one line too.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # In the order `gateway --help` lists them: setting up, mail, people, campaigns, running.
    admin.register_init(sub)
    mail.register(sub)
    people.register(sub)
    mail.register_bounces(sub)
    messages.register(sub)
    campaigns.register(sub)
    admin.register(sub)
    staff.register(sub)
    return parser


async def run(gw: Gateway, args: argparse.Namespace) -> int:
    async with gw:
        return await args.handler(gw, args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        # `gateway` or `gateway topics` alone: show what there is to do.
        getattr(args, "help_of", parser).print_help()
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
