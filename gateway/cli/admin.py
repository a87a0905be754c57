"""Running the gateway: `init`, `policy`, `apikey`, `settings`, `check`."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any
from urllib.parse import urlsplit

from ..config import SETTINGS
from ..core import Gateway
from ..preflight import cmd_check
from ..privacy import audience
from ._common import Commands, add_yes, asks, command, confirm, group, out, out_rows, read_file


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
        {"schema_version": version, "previous": found, "database": gw.database_display_url},
        f"database {gw.database_display_url}: schema version {version} ({state})",
    )
    return 0


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
    if args.dry_run:
        return await _policy_dry_run(gw, args, text or "")
    if args.adverse and asks(args):
        count = (await audience(gw)).would_get
        confirm(
            args,
            f"Publish {args.version.strip()} as adverse and email a notice to {count} "
            "contact(s) now?",
        )
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


async def _policy_dry_run(gw: Gateway, args: argparse.Namespace, text: str) -> int:
    """`policy publish --dry-run`: the same refusals as a real publish, then who would be
    emailed; nothing is written or sent."""
    version, _ = await gw.policies.check(args.version, text)
    data: dict[str, Any] = {"version": version, "adverse": args.adverse, "dry_run": True}
    if not args.adverse:
        data.update(would_get=0, suppressed={}, suppressed_total=0)
        human = (
            f"policy version {version} can be published; it is not adverse, so nobody would "
            "be emailed; nothing was written"
        )
        out(args, data, human)
        return 0
    found = await audience(gw)
    data.update(found.as_dict())
    lines = found.lines("notice")
    human = f"policy version {version} (adverse) can be published: " + "\n".join(lines)
    out(args, data, human)
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

    print("version\tpublished\tadverse\tnotices")
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


# Unset, these take a value made from other settings: shown as it is in effect.
_DERIVED = {
    "GATEWAY_FIRST_PARTY_DOMAINS": lambda s: ",".join(s.first_party_domains),
    "GATEWAY_SENDER_NAME": lambda s: s.sender_name,
    "GATEWAY_SENDER_WEBSITE": lambda s: s.sender_website,
    "GATEWAY_REFUSAL_ADDRESS": lambda s: s.refusal_address,
    "GATEWAY_BOUNCE_ADDRESS": lambda s: s.bounce_address,
}


def _in_effect(gw: Gateway, name: str, default: str) -> tuple[str, str]:
    """The value a setting has in this process (secrets never shown), and where it comes
    from: "set", "default", or "derived" (made from other settings)."""
    raw = os.environ.get(name, "").strip()
    if name == "GATEWAY_SECRET_KEYS":
        if not raw:
            return "the development key in .gateway-secret", "default"
        return f"{len(gw.settings.secret_keys)} key(s), not shown", "set"
    if name == "GATEWAY_DATABASE_URL":
        return gw.database_display_url, "set" if raw else "default"
    if name == "GATEWAY_SMTP_URL" and raw:
        parts = urlsplit(raw)
        if parts.password:
            raw = raw.replace(f":{parts.password}@", ":***@", 1)
    if raw:
        return raw, "set"
    derived = _DERIVED.get(name)
    if derived is not None:
        return derived(gw.settings) or "unset", "derived"
    return default or "unset", "default"


_FROM = {
    "set": "",
    "default": "  (not set: the default)",
    "derived": "  (not set: made from the settings it names)",
}


async def cmd_settings(gw: Gateway, args: argparse.Namespace) -> int:
    rows = []
    for s in SETTINGS:
        value, source = _in_effect(gw, s.env, s.default)
        rows.append(
            {"name": s.env, "value": value, "from": source, "default": s.default, "help": s.help}
        )
    human = "\n".join(
        f"{r['name']} = {r['value']}{_FROM[r['from']]}"
        + (f"\n    default: {r['default']}" if r["from"] == "set" and r["default"] else "")
        + f"\n    {r['help']}"
        for r in rows
    )
    out(args, rows, human)
    return 0


async def cmd_apikey_create(gw: Gateway, args: argparse.Namespace) -> int:
    key = await gw.create_api_key(args.name, args.scope)
    what = "may only send mail" if args.scope == "send" else "may do everything"
    print(f"API key {args.name!r} created ({what}); it is shown only this once, store it now:")
    print(key)  # alone on the last line, for scripts
    return 0


async def cmd_apikey_list(gw: Gateway, args: argparse.Namespace) -> int:
    rows = await gw.api_keys()
    out_rows(args, rows, _key_line, "name\tscope\tprefix\tcreated\tstate")
    if not rows and not args.json:
        print("no API keys yet: make one with `gateway apikey create NAME`")
    return 0


def _key_line(r: dict[str, Any]) -> str:
    created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["created_at"]))
    revoked = (
        "revoked " + time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["revoked_at"]))
        if r["revoked_at"]
        else "live"
    )
    return f"{r['name']}\t{r['scope']}\t{r['prefix']}…\t{created} UTC\t{revoked}"


async def cmd_apikey_revoke(gw: Gateway, args: argparse.Namespace) -> int:
    await gw.revoke_api_key(args.name)
    out(args, {"name": args.name, "revoked": True}, f"API key {args.name!r} revoked")
    return 0


# -- the parser ----------------------------------------------------------------------------


def register_init(sub: Commands) -> None:
    command(sub, "init", cmd_init, "create or migrate the database (safe to run again)")


def register(sub: Commands) -> None:
    psub = group(sub, "policy", "publish privacy policy versions")
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
        help="the change is to people's disadvantage: email every contact with data stored "
        "(asks first on a terminal)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the version and text, and say how many would be emailed and how many "
        "not and why; nothing is published or sent",
    )
    add_yes(p)
    p = command(
        psub,
        "notify",
        cmd_policy_notify,
        "send the notices of an adverse version still missing (after an interrupted publish)",
    )
    p.add_argument("version", metavar="VERSION")
    command(psub, "list", cmd_policy_list, "list published versions and their notices")

    ksub = group(sub, "apikey", "manage keys of the admin API")
    p = command(
        ksub,
        "create",
        cmd_apikey_create,
        "make a key for the API or SMTP submission; printed once, alone on the last line",
        json_flag=False,
        epilog="Only a hash of the key is stored: a lost key cannot be shown again, revoke "
        "it and make another. Use it as `Authorization: Bearer <key>`, or for SMTP "
        "submission as the password with NAME as the user name. Example: "
        "gateway apikey create shop --scope send",
    )
    p.add_argument("name", metavar="NAME", help="who or what uses it, e.g. crm or an-staff")
    p.add_argument(
        "--scope",
        choices=("admin", "send"),
        default="admin",
        help="admin: everything the API offers (default); send: only sending mail, through "
        "POST /api/v1/messages or SMTP submission",
    )
    command(ksub, "list", cmd_apikey_list, "list keys: name, scope, prefix, created, revoked")
    p = command(ksub, "revoke", cmd_apikey_revoke, "revoke a key at once")
    p.add_argument("name", metavar="NAME")

    command(
        sub,
        "settings",
        cmd_settings,
        "list the GATEWAY_* environment variables: the value in effect, the default, what each does",
    )
    p = command(
        sub,
        "check",
        cmd_check,
        "check the settings for what would hurt delivery or break the law; exit 1 on any error",
        epilog="Reads the settings only (and DNS with --dns), so it runs when the database is"
        " down too. GATEWAY_DNS_RESOLVER=host:port sends the lookups to a chosen DNS server.",
    )
    p.add_argument("--dns", action="store_true", help="also look up DKIM, SPF, DMARC and MX")
