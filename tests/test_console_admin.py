"""The console's admin area over HTTP (API keys, staff, the audit log with its filters), the
`gateway staff` commands, and the console's words in Vietnamese."""

from __future__ import annotations

import ast
import io
import json
import re
import sys
from pathlib import Path

import httpx
import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po
from console_helpers import (
    BASE_URL,
    cheap_hashing,  # noqa: F401  (a fixture)
    console_client,
    login,
    make_staff,
)

from gateway import Gateway, apikeys
from gateway.catalog import TIMEZONE
from gateway.cli import main
from gateway.web.admin import i18n
from gateway.web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
# Many logins: Argon2 at its least work (tests/test_console_auth.py checks the real one).
pytestmark = pytest.mark.usefixtures("cheap_hashing")


def said(gw: Gateway, msgid: str, **variables: object) -> str:
    return i18n.gettext(gw.settings.default_language, msgid, **variables)


async def audit_rows(gw: Gateway) -> list[tuple[str, str, str | None]]:
    rows = await gw.store.audit_page(limit=1000)
    return [(r["actor"], r["action"], r["subject"]) for r in reversed(rows)]


# -- API keys ---------------------------------------------------------------------------------


async def test_an_admin_makes_a_send_key_shown_once_and_revokes_it(gw):
    async with console_client(gw, "admin") as c:
        made = await c.post_form("/admin/keys/new", {"name": "shop", "scope": "send"})
        assert made.status_code == 200
        key = re.search(r'id="new-key">(gwk_[^<]+)<', made.text)[1]
        assert made.text.count(key) == 1
        found = await apikeys.authenticate(gw.store, key)
        assert found is not None and (found.name, found.scope) == ("shop", "send")
        # Only this answer showed it: the list has the prefix, never the key.
        listed = await c.get("/admin/keys")
        assert key not in listed.text and key[:10] in listed.text and "shop" in listed.text
        revoked = await c.post_form("/admin/keys/revoke", {"name": "shop"})
        assert revoked.status_code == 303
        assert (
            said(gw, "The key %(name)s is revoked.", name="shop")
            in (await c.get(revoked.headers["location"])).text
        )
        assert await apikeys.authenticate(gw.store, key) is None
        actor = f"staff:{c.email}"
    assert (actor, "apikeys.create", "shop") in await audit_rows(gw)
    assert (actor, "apikeys.revoke", "shop") in await audit_rows(gw)


async def test_a_key_made_in_the_console_with_admin_scope_may_use_the_whole_api(gw):
    async with console_client(gw, "admin") as c:
        made = await c.post_form("/admin/keys/new", {"name": "crm", "scope": "admin"})
        key = re.search(r'id="new-key">(gwk_[^<]+)<', made.text)[1]
        topics = await c.get("/api/v1/topics", headers={"Authorization": f"Bearer {key}"})
        assert topics.status_code == 200


async def test_a_bad_key_name_scope_or_a_name_in_use_is_said_and_nothing_is_made(gw):
    async with console_client(gw, "admin") as c:
        bad = await c.post_form("/admin/keys/new", {"name": "no spaces", "scope": "send"})
        assert bad.status_code == 400 and "must be 1-64 letters" in bad.text
        scope = await c.post_form("/admin/keys/new", {"name": "crm", "scope": "root"})
        assert scope.status_code == 400 and "scope must be admin" in scope.text
        assert (
            await c.post_form("/admin/keys/new", {"name": "crm", "scope": "send"})
        ).status_code == 200
        twice = await c.post_form("/admin/keys/new", {"name": "crm", "scope": "send"})
        assert twice.status_code == 409 and "already exists" in twice.text
        unknown = await c.post_form("/admin/keys/revoke", {"name": "nobody"})
        assert unknown.status_code == 404 and "no live API key named" in unknown.text
    assert [k["name"] for k in await gw.api_keys()] == ["crm"]


# -- staff ------------------------------------------------------------------------------------


async def test_an_admin_adds_a_marketer_who_signs_in_with_the_password_shown_once(gw):
    async with console_client(gw, "admin") as c:
        added = await c.post_form("/admin/staff/new", {"email": "Lan@First.vn", "role": "marketer"})
        assert added.status_code == 200
        password = re.search(r'id="new-password">([^<]+)<', added.text)[1]
        assert len(password) >= 12
        listed = await c.get("/admin/staff")
        assert "lan@first.vn" in listed.text and password not in listed.text
        again = await c.post_form("/admin/staff/new", {"email": "lan@first.vn", "role": "viewer"})
        assert again.status_code == 409 and "already exists" in again.text
        bad = await c.post_form("/admin/staff/new", {"email": "x@first.vn", "role": "owner"})
        assert bad.status_code == 400 and "role must be" in bad.text
        admin = c.email
    transport = httpx.ASGITransport(app=create_app(gw, worker=False))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as lan:
        assert (await login(lan, "lan@first.vn", password)).status_code == 303
    assert (f"staff:{admin}", "staff.add", "lan@first.vn (marketer)") in await audit_rows(gw)
    assert ("staff:lan@first.vn", "staff.login", None) in await audit_rows(gw)


async def test_an_admin_resets_a_password_and_removes_a_member_whose_sessions_end(gw):
    async with console_client(gw, "admin") as boss, console_client(gw, "viewer") as viewer:
        reset = await boss.post_form("/admin/staff/password", {"email": viewer.email})
        new = re.search(r'id="new-password">([^<]+)<', reset.text)[1]
        assert (await viewer.get("/admin/")).status_code == 303  # signed out
        viewer.cookies.clear()
        assert (await login(viewer, viewer.email)).status_code == 400
        assert (await login(viewer, viewer.email, new)).status_code == 303
        removed = await boss.post_form("/admin/staff/remove", {"email": viewer.email})
        assert removed.status_code == 303
        assert (await viewer.get("/admin/")).status_code == 303
        assert await gw.store.staff_member(viewer.email) is None
        missing = await boss.post_form("/admin/staff/remove", {"email": viewer.email})
        assert missing.status_code == 404
        actor = f"staff:{boss.email}"
        rows = await audit_rows(gw)
        assert (actor, "staff.password", viewer.email) in rows
        assert (actor, "staff.remove", viewer.email) in rows


async def test_the_last_admin_cannot_be_removed_from_the_console(gw):
    async with console_client(gw, "admin") as c:
        refused = await c.post_form("/admin/staff/remove", {"email": c.email})
        assert refused.status_code == 409 and "last admin" in refused.text
        assert await gw.store.staff_member(c.email) is not None
        other = await make_staff(gw, "admin")
        assert (await c.post_form("/admin/staff/remove", {"email": other})).status_code == 303


async def test_the_language_a_member_chooses_is_kept_with_their_account(gw):
    async with console_client(gw, "admin") as c:
        assert '<html lang="vi">' in (await c.get("/admin/staff")).text
        chosen = await c.post_form("/admin/language", {"language": "en", "next": "/admin/staff"})
        assert chosen.status_code == 303 and chosen.headers["location"] == "/admin/staff"
        page = (await c.get("/admin/staff")).text
        assert '<html lang="en">' in page and "Add a staff member" in page
        assert (await gw.store.staff_member(c.email))["language"] == "en"
        bad = await c.post_form("/admin/language", {"language": "fr"})
        assert bad.status_code == 400
        off = await c.post_form(
            "/admin/language", {"language": "vi", "next": "https://evil.example"}
        )
        assert off.headers["location"] == "/admin"


# -- the audit log ----------------------------------------------------------------------------


def moment(day: str, hour: int = 12) -> float:
    from datetime import datetime

    y, m, d = map(int, day.split("-"))
    return datetime(y, m, d, hour, tzinfo=TIMEZONE).timestamp()


async def test_the_audit_log_filters_by_actor_action_and_dates_and_pages(gw):
    store = gw.store
    await store.record_audit("apikey:crm", "contacts.get", "hash-a", moment("2026-11-01"))
    await store.record_audit("staff:an@first.vn", "contacts.export", "hash-b", moment("2026-11-02"))
    await store.record_audit(
        "staff:an@first.vn", "apikeys.create", "shop", moment("2026-11-03", 23)
    )
    await store.record_audit("cli:root", "contacts.get", "hash-c", moment("2026-11-04", 0))
    async with console_client(gw, "admin") as c:

        async def shown(query: str) -> list[str]:
            answer = await c.get(f"/admin/audit?{query}")
            assert answer.status_code == 200, answer.text
            return re.findall(
                r"<tr><td>[^<]*</td><td>[^<]*</td><td>[^<]*</td><td>([^<]*)</td>", answer.text
            )

        assert await shown("actor=staff:an@first.vn") == ["shop", "hash-b"]
        assert await shown("action=contacts.get") == ["hash-c", "hash-a"]
        assert await shown("action=contacts.*") == ["hash-c", "hash-b", "hash-a"]
        assert await shown("actor=staff:*&action=contacts.*") == ["hash-b"]
        # Whole days in Vietnam's time: the 3rd includes 23:00, the 4th starts at 00:00.
        assert await shown("from=2026-11-02&to=2026-11-03") == ["shop", "hash-b"]
        # (and the admin's own login of today, which has no subject)
        assert await shown("from=2026-11-04") == ["", "hash-c"]
        assert await shown("actor=nobody") == []
        bad = await c.get("/admin/audit?from=yesterday")
        assert bad.status_code == 400

        for n in range(60):
            await store.record_audit(
                "apikey:bulk", "contacts.get", f"h{n:02d}", moment("2026-11-05")
            )
        first = await c.get("/admin/audit?actor=apikey:bulk")
        rows = re.findall(r"<td>(h\d\d)</td>", first.text)
        assert rows == [f"h{n:02d}" for n in range(59, 9, -1)]
        older = re.search(
            r'<a href="(/admin/audit\?[^"]+)">' + re.escape(said(gw, "Older")), first.text
        )
        second = await c.get(older[1].replace("&amp;", "&"))
        assert re.findall(r"<td>(h\d\d)</td>", second.text) == [
            f"h{n:02d}" for n in range(9, -1, -1)
        ]
        assert said(gw, "Older") not in second.text.split("</table>")[1]


# -- gateway staff ------------------------------------------------------------------------------


@pytest.fixture
def cli_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["init"]) == 0
    return env


def run(
    capsys: pytest.CaptureFixture[str], *args: str, stdin: str | None = None
) -> tuple[int, str, str]:
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        code = main(list(args))
    finally:
        sys.stdin = sys.__stdin__
    out, err = capsys.readouterr()
    return code, out, err


async def can_login(env: dict[str, str], email: str, password: str) -> bool:
    async with Gateway.from_env(env) as gw:
        transport = httpx.ASGITransport(app=create_app(gw, worker=False))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as c:
            return (await login(c, email, password)).status_code == 303


def test_staff_add_prints_a_made_password_alone_on_the_last_line_once(cli_env, capsys):
    import asyncio

    code, out, err = run(capsys, "staff", "add", "An@First.vn", "--role", "admin")
    assert code == 0, err
    password = out.splitlines()[-1]
    assert len(password) >= 12 and password == password.strip() and out.count(password) == 1
    assert asyncio.run(can_login(cli_env, "an@first.vn", password))

    code, out, _ = run(capsys, "staff", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split("\t")[:2] == ["EMAIL", "ROLE"]
    assert lines[1].split("\t")[:2] == ["an@first.vn", "admin"] and password not in out
    code, out, _ = run(capsys, "staff", "list", "--json")
    assert [(m["email"], m["role"]) for m in json.loads(out)] == [("an@first.vn", "admin")]
    assert password not in out and "password_hash" not in out and '"password"' not in out


def test_staff_add_and_password_read_stdin_and_keep_the_policy(cli_env, capsys):
    import asyncio

    code, out, _ = run(
        capsys, "staff", "add", "lan@first.vn", "--role", "viewer", "--password-stdin",
        stdin="a long enough secret\n",
    )  # fmt: skip
    assert code == 0 and "a long enough secret" not in out
    assert asyncio.run(can_login(cli_env, "lan@first.vn", "a long enough secret"))
    code, _, err = run(
        capsys, "staff", "password", "lan@first.vn", "--password-stdin", stdin="too short\n"
    )
    assert code == 1 and err.count("\n") == 1 and "at least 12 characters" in err
    code, out, _ = run(capsys, "staff", "password", "lan@first.vn")
    assert code == 0
    new = out.splitlines()[-1]
    assert asyncio.run(can_login(cli_env, "lan@first.vn", new))
    assert not asyncio.run(can_login(cli_env, "lan@first.vn", "a long enough secret"))


def test_staff_commands_fail_in_one_line_with_exit_1(cli_env, capsys):
    assert run(capsys, "staff", "add", "an@first.vn", "--role", "admin")[0] == 0
    for args, words in (
        (("staff", "add", "an@first.vn", "--role", "viewer"), "already exists"),
        (("staff", "add", "not an address", "--role", "viewer"), "not"),
        (
            ("staff", "add", "x@first.vn", "--role", "owner"),
            "role must be admin, marketer or viewer",
        ),
        (("staff", "remove", "nobody@first.vn"), "no staff member nobody@first.vn"),
        (("staff", "password", "nobody@first.vn"), "no staff member nobody@first.vn"),
    ):
        code, out, err = run(capsys, *args)
        assert code == 1, args
        assert err.startswith("gateway: error: ") and err.count("\n") == 1, err
        assert words in err, (args, err)


def test_staff_remove_ends_the_session_and_may_remove_the_last_admin(cli_env, capsys):
    import asyncio

    async def signed_in_then_removed() -> tuple[int, int]:
        async with Gateway.from_env(cli_env) as gw:
            await make_staff(gw, "admin", "boss@first.vn")
            async with console_client(gw, "admin", "boss@first.vn") as c:
                before = (await c.get("/admin/staff")).status_code
                await asyncio.to_thread(run, capsys, "staff", "remove", "boss@first.vn")
                return before, (await c.get("/admin/staff")).status_code

    assert asyncio.run(signed_in_then_removed()) == (200, 303)


# -- words ------------------------------------------------------------------------------------


def console_msgids() -> set[str]:
    """What the console's templates and code ask to translate."""
    found: set[str] = set()
    for path in sorted((ROOT / "templates" / "admin").glob("*.html")):
        for _line, msgid, _comments, _context in extract_from_file("jinja2", str(path)):
            found.add(msgid if isinstance(msgid, str) else msgid[0])
    index = {"N_": 0, "words": 1, "page": 2, "message": 1, "refusal": 3}
    for path in sorted((ROOT / "gateway" / "web" / "admin").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                at = index.get(name or "")
                if at is not None and len(node.args) > at:
                    arg = node.args[at]
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        found.add(arg.value)
    return found


def test_every_word_of_the_console_has_a_vietnamese_translation():
    used = console_msgids()
    assert len(used) > 60  # the extraction itself works
    translated: set[str] = set()
    for path in i18n.catalog_files("vi"):
        with path.open("rb") as po:
            translated |= {
                m.id if isinstance(m.id, str) else m.id[0]
                for m in read_po(po, locale="vi")
                if m.id and m.string and not m.fuzzy
            }
    assert sorted(used - translated) == []
    assert i18n.gettext("vi", "Sign in") == "Đăng nhập"
    assert i18n.gettext("en", "Sign in") == "Sign in"


async def test_pages_with_no_session_use_the_default_language_or_the_one_asked(gw):
    transport = httpx.ASGITransport(app=create_app(gw, worker=False))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as c:
        default = (await c.get("/admin/login")).text
        english = (await c.get("/admin/login?lang=en")).text
    assert gw.settings.default_language == "vi"
    assert '<html lang="vi">' in default and "<h1>Đăng nhập</h1>" in default
    assert '<html lang="en">' in english and "<h1>Sign in</h1>" in english
