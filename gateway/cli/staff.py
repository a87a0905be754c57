"""Staff accounts of the web console: `gateway staff add|list|remove|password`."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..core import Gateway
from ..errors import GatewayError
from ..staff import ROLES, generate_password, of
from ._common import Commands, command, group, out, out_rows


def _password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password from stdin (its first line) with --password-stdin, else a generated one
    (True: print it)."""
    if not args.password_stdin:
        return generate_password(), True
    line = sys.stdin.readline()
    if not line:
        raise GatewayError("--password-stdin: nothing was read from standard input")
    return line.rstrip("\r\n"), False


async def cmd_staff_add(gw: Gateway, args: argparse.Namespace) -> int:
    password, generated = _password(args)
    member = await of(gw).add(args.email, args.role, password)
    if args.json:
        out(args, member | ({"password": password} if generated else {}), "")
        return 0
    print(f"staff member {member['email']} added ({member['role']})")
    if generated:
        print("their password is shown only this once; give it to them safely:")
        print(password)  # alone on the last line, for scripts
    return 0


async def cmd_staff_list(gw: Gateway, args: argparse.Namespace) -> int:
    rows = await of(gw).listing()
    if args.json:
        out(args, rows, "")
        return 0
    if not rows:
        print("no staff yet: add one with `gateway staff add EMAIL --role admin`")
        return 0
    print("EMAIL\tROLE\tLANGUAGE\tCREATED\tLAST SEEN")
    out_rows(args, rows, _line)
    return 0


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts)) if ts else "never"


def _line(r: dict[str, Any]) -> str:
    language = r["language"] or "default"
    return f"{r['email']}\t{r['role']}\t{language}\t{_when(r['created_at'])}\t{_when(r['seen_at'])}"


async def cmd_staff_remove(gw: Gateway, args: argparse.Namespace) -> int:
    # The command line may remove the last admin: it is how a locked-out console is repaired.
    await of(gw).remove(args.email, last_admin_ok=True)
    out(args, {"email": args.email, "removed": True}, f"staff member {args.email} removed")
    return 0


async def cmd_staff_password(gw: Gateway, args: argparse.Namespace) -> int:
    password, generated = _password(args)
    await of(gw).set_password(args.email, password)
    if args.json:
        out(args, {"email": args.email} | ({"password": password} if generated else {}), "")
        return 0
    print(f"password of {args.email} changed; their sessions have ended")
    if generated:
        print("the new password is shown only this once; give it to them safely:")
        print(password)  # alone on the last line, for scripts
    return 0


def register(sub: Commands) -> None:
    ssub = group(sub, "staff", "manage staff accounts of the web console (/admin)")
    p = command(
        ssub,
        "add",
        cmd_staff_add,
        "add a staff member; without --password-stdin a password is made and printed once",
        epilog="Roles: admin (everything, including staff and API keys), marketer (campaigns, "
        "contacts, topics, suppressions), viewer (reads only). Passwords have at least 12 "
        "characters. Example: gateway staff add an@first.vn --role marketer",
    )
    p.add_argument("email", metavar="EMAIL", help="the staff member's address, their login")
    p.add_argument(
        "--role", required=True, metavar="|".join(reversed(ROLES)), help="what they may do"
    )
    _password_flag(p)
    command(ssub, "list", cmd_staff_list, "list staff: address, role, language, last seen")
    p = command(ssub, "remove", cmd_staff_remove, "remove a staff member; their sessions end")
    p.add_argument("email", metavar="EMAIL")
    p = command(
        ssub,
        "password",
        cmd_staff_password,
        "set a new password (made and printed once without --password-stdin); sessions end",
    )
    p.add_argument("email", metavar="EMAIL")
    _password_flag(p)


def _password_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )
