"""`gateway apikey create|list|revoke` in real subprocesses, and the key at work on the API;
`gateway contact export` leaves an audit row (promise 9)."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from typing import Any

import httpx

from gateway import Gateway
from gateway.store import schema as t
from gateway.web.app import create_app


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def status_with(env: dict[str, str], key: str) -> int:
    """What the admin API answers this key, served from the same database file."""
    async with Gateway.from_env(env) as gw:
        transport = httpx.ASGITransport(app=create_app(gw, worker=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            response = await c.get("/api/v1/topics", headers={"Authorization": f"Bearer {key}"})
            return response.status_code


async def table(env: dict[str, str], which: Any) -> list[dict[str, Any]]:
    async with Gateway.from_env(env) as gw:
        return [dict(r._mapping) for r in await gw.store.db.fetch_all(which.select())]


async def test_create_prints_the_key_alone_on_the_last_line_once(env):
    assert run(env, "init").returncode == 0
    made = run(env, "apikey", "create", "crm")
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    key = lines[-1]
    assert key == key.strip() and key.startswith("gwk_") and len(key) >= 43
    assert made.stdout.count(key) == 1
    assert await status_with(env, key) == 200

    listed = run(env, "apikey", "list")
    assert listed.returncode == 0
    assert "crm" in listed.stdout and "live" in listed.stdout
    assert key not in listed.stdout and key[:10] in listed.stdout
    as_json = json.loads(run(env, "apikey", "list", "--json").stdout)
    assert [(k["name"], k["prefix"], k["revoked_at"]) for k in as_json] == [("crm", key[:10], None)]
    stored = await table(env, t.api_keys)
    assert key not in json.dumps(stored, default=str)


async def test_revoke_makes_the_key_answer_401(env):
    run(env, "init")
    key = run(env, "apikey", "create", "crm").stdout.splitlines()[-1]
    other = run(env, "apikey", "create", "shop").stdout.splitlines()[-1]
    revoked = run(env, "apikey", "revoke", "crm")
    assert revoked.returncode == 0, revoked.stderr
    assert await status_with(env, key) == 401
    assert await status_with(env, other) == 200
    listed = run(env, "apikey", "list", "--json").stdout
    assert [k["revoked_at"] is not None for k in json.loads(listed)] == [True, False]


def test_bad_names_and_unknown_keys_fail_in_one_line(env):
    run(env, "init")
    assert run(env, "apikey", "create", "crm").returncode == 0
    for args, words in (
        (("apikey", "create", "crm"), "already exists"),
        (("apikey", "create", "bad name"), "must be"),
        (("apikey", "revoke", "nobody"), "no live API key"),
    ):
        proc = run(env, *args)
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("gateway: error")]
        assert len(errors) == 1 and words in errors[0], proc.stderr


async def test_contact_export_from_the_cli_is_audited_without_the_address(env):
    run(env, "init")
    run(env, "contacts", "add", "an@example.vn", "--name", "An")
    exported = run(env, "contact", "export", "an@example.vn", "--json")
    assert json.loads(exported.stdout)["profile"]["email"] == "an@example.vn"
    log = await table(env, t.audit_log)
    async with Gateway.from_env(env) as gw:
        hashed = gw.signer.address_hash("an@example.vn")
    assert [(r["actor"], r["action"], r["subject"]) for r in log] == [
        (f"cli:{getpass.getuser()}", "contacts.export", hashed)
    ]
    assert "an@example.vn" not in json.dumps(log, default=str)
