"""`gateway check`: the settings that would hurt delivery or break the law, one finding each.

    findings = check()               # the settings alone: no database, no network
    findings = check(dns=True)       # and the DKIM, SPF, DMARC and MX records they rely on

Each finding is a level (`error`, `warning` or `ok`), a short name of what was checked and
one line of plain words: what is wrong and what to do. Settings that `Settings.from_env`
refuses are findings too (one error line each), never a traceback, and the checks that do
not depend on the refused variable still run. Nothing is written: the development secret
key is reported, not generated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import asdict

from .preflight_dns import check_dns
from .preflight_settings import Finding, check_settings

__all__ = ["Finding", "check", "check_dns", "cmd_check", "run_check"]

# The variables the DNS checks read: while Settings refuses one of them, nothing is looked up.
_DNS_READS = {"GATEWAY_FROM", "GATEWAY_BOUNCE_ADDRESS", "GATEWAY_REFUSAL_ADDRESS"}


def check(environ: Mapping[str, str] | None = None, *, dns: bool = False) -> list[Finding]:
    """Every finding about the settings in environ (default: os.environ), errors first."""
    env = dict(os.environ if environ is None else environ)
    found, settings, signer, dropped = check_settings(env)
    if dns:
        if settings is not None and not dropped & _DNS_READS:
            found += check_dns(settings, signer, env)
        else:
            found.warning("dns", "the DNS records were not looked up: fix the errors above first")
    order = {"error": 0, "warning": 1, "ok": 2}
    # A mistake both Settings refuses and a check of its own explains (a domain list
    # written with spaces) is one line, under the check's name.
    once = {(f.level, f.message): f for f in found}.values()
    return sorted(once, key=lambda f: order[f.level])


def run_check(args: argparse.Namespace) -> int:
    """`gateway check [--dns] [--json]`: print the findings; 1 when any is an error."""
    found = check(dns=bool(getattr(args, "dns", False)))
    ok = not any(f.level == "error" for f in found)
    if getattr(args, "json", False):
        print(json.dumps({"ok": ok, "findings": [asdict(f) for f in found]}, ensure_ascii=False))
        return 0 if ok else 1
    for f in found:
        print(f"{f.level + ':':<8} {f.message}")
    n = {level: sum(f.level == level for f in found) for level in ("error", "warning", "ok")}
    verdict = "nothing stops sending" if ok else "fix the errors before sending real mail"
    print(f"{n['error']} errors, {n['warning']} warnings, {n['ok']} ok: {verdict}")
    return 0 if ok else 1


async def cmd_check(gw_or_none: object, args: argparse.Namespace) -> int:
    """run_check as a `gateway` handler: it needs neither the gateway nor its database."""
    return await asyncio.to_thread(run_check, args)
