"""`gateway contact export|erase` and `gateway purge` (PD-2, PD-3, PD-4), as real subprocesses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_cli import assert_one_line_error, run

from gateway import Gateway
from gateway.store import schema as t

DAY = 86400


@pytest.fixture
def people(env: dict[str, str]) -> dict[str, str]:
    """A database with a topic and one contact who has a name, an attribute and a message."""
    assert run(env, "topics", "add", "news", "--name", "Tin tức").returncode == 0
    added = run(
        env,
        *("contacts", "add", "an@example.vn", "--name", "Nguyễn Văn An", "--phone", "0901234567"),
        *("--attr", "city=Huế", "--subscribe", "news", "--source", "form"),
    )
    assert added.returncode == 0, added.stderr
    (Path.cwd() / "body.txt").write_text("Hóa đơn của bạn", encoding="utf-8")
    sent = run(
        env, "send", "--to", "an@example.vn", "--subject", "Hóa đơn #42", "--text", "body.txt"
    )
    assert sent.returncode == 0, sent.stderr
    return env


async def table(env: dict[str, str], which) -> list[dict]:
    async with Gateway.from_env(env) as gw:
        return [dict(r._mapping) for r in await gw.store.db.fetch_all(which.select())]


def test_pd2_contact_export_prints_everything_held_as_json(people):
    proc = run(people, "contact", "export", "An@Example.vn")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("{\n")  # indented for reading
    data = json.loads(proc.stdout)
    assert data["profile"]["email"] == "an@example.vn"
    assert data["profile"]["name"] == "Nguyễn Văn An"
    assert data["profile"]["phone"] == "+84901234567"  # E.164, however it was typed
    assert [(a["key"], a["value"], a["source"]) for a in data["attributes"]] == [
        ("city", "Huế", "form")
    ]
    assert [(s["slug"], s["status"]) for s in data["subscriptions"]] == [("news", "subscribed")]
    assert [(c["topic"], c["action"], c["source"]) for c in data["consent"]] == [
        ("news", "opt_in", "form")
    ]
    assert [(m["subject"], m["category"]) for m in data["messages"]] == [
        ("Hóa đơn #42", "transactional")
    ]
    one_line = run(people, "contacts", "export", "an@example.vn", "--json")
    assert one_line.returncode == 0
    assert one_line.stdout.count("\n") == 1
    assert json.loads(one_line.stdout) == data


async def test_pd3_contact_erase_leaves_only_a_tombstone_and_blocks_every_way_back(
    people, tmp_path
):
    proc = run(people, "contact", "erase", "AN@example.vn", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "email": "an@example.vn",
        "erased": True,
        "already_erased": False,
    }
    assert await table(people, t.contacts) == []
    assert await table(people, t.contact_attributes) == []
    logs = await table(people, t.message_log)
    assert logs and all(r["email"] is None and r["subject"] is None for r in logs)
    assert all(r["email"] is None and r["raw"] is None for r in await table(people, t.outbox))
    assert await table(people, t.outbox_bodies) == []
    [tomb] = await table(people, t.suppressions)
    assert (tomb["email"], tomb["reason"], tomb["scope"]) == (None, "erased", "all")
    assert len(tomb["email_hash"]) == 64

    assert_one_line_error(run(people, "contact", "export", "an@example.vn"), "no contact")
    assert_one_line_error(
        run(people, "contacts", "add", "an@example.vn", "--subscribe", "news"), "erased"
    )
    (tmp_path / "c.csv").write_text("email,topics\nan@example.vn,news\n", encoding="utf-8")
    imported = run(people, "contacts", "import", "c.csv", "--json")
    assert imported.returncode == 4
    assert "erased" in json.loads(imported.stdout)["bad_rows"][0]["reason"]
    assert_one_line_error(run(people, "suppress", "remove", "an@example.vn"), "erased")
    sent = run(people, "send", "--to", "an@example.vn", "--subject", "Hi", "--text", "body.txt")
    assert sent.returncode == 3 and "erased" in sent.stdout
    listed = run(people, "suppress", "list")
    assert "(erased)" in listed.stdout and "an@example.vn" not in listed.stdout

    again = run(people, "contact", "erase", "an@example.vn")
    assert again.returncode == 0
    assert again.stdout.strip() == "already erased"
    assert len(await table(people, t.suppressions)) == 1


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("contact", "export", "nobody@example.vn"), ("no contact with that address",)),
        (("contact", "erase", "nobody@example.vn"), ("no contact with that address",)),
        (("contact", "erase", "not-an-address"), ("not a valid email address",)),
        (("contact", "export"), ("required", "ADDR")),
        (("contact", "frobnicate", "a@example.vn"), ("invalid choice",)),
        (("purge", "extra"), ("unrecognized arguments",)),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(env, args, words):
    assert_one_line_error(run(env, *args), *words)


@pytest.mark.parametrize(
    "command", [("contact", "export"), ("contact", "erase"), ("contacts", "erase"), ("purge",)]
)
def test_the_new_commands_teach_with_help(env, command):
    proc = run(env, *command, "--help")
    assert proc.returncode == 0
    assert "usage: gateway" in proc.stdout
    text = " ".join(proc.stdout.split())
    assert {"export": "right of access", "erase": "keyed hash", "purge": "GATEWAY_RETENTION_DAYS"}[
        command[-1]
    ] in text


async def test_pd4_purge_erases_contacts_stopped_longer_than_the_retention(env):
    env["GATEWAY_RETENTION_DAYS"] = "30"
    now = time.time()
    async with Gateway.from_env(env) as gw:
        for address in ("old@example.vn", "recent@example.vn", "active@example.vn"):
            await gw.add_contact(address, name=address.split("@")[0])
        for address, stopped in (("old@example.vn", 31), ("recent@example.vn", 29)):
            await gw.store.db.execute(
                t.contacts.update()
                .where(t.contacts.c.email == address)
                .values(status="stopped", stopped_at=now - stopped * DAY)
            )
    proc = run(env, "purge", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"erased": 1, "retention_days": 30}
    remaining = sorted(r["email"] for r in await table(env, t.contacts))
    assert remaining == ["active@example.vn", "recent@example.vn"]
    assert [r["reason"] for r in await table(env, t.suppressions)] == ["erased"]
    # nothing more to do: a second run erases nobody, and says so in words
    again = run(env, "purge")
    assert again.returncode == 0
    assert again.stdout.strip() == "erased 0 contact(s) stopped more than 30 day(s) ago"
    env["GATEWAY_RETENTION_DAYS"] = "28"
    assert json.loads(run(env, "purge", "--json").stdout)["erased"] == 1
    assert [r["email"] for r in await table(env, t.contacts)] == ["active@example.vn"]


@pytest.mark.parametrize(("value", "words"), [("soon", ("not a number",)), ("-1", ("0 or more",))])
def test_purge_refuses_a_bad_retention_in_one_line(env, value, words):
    env["GATEWAY_RETENTION_DAYS"] = value
    assert_one_line_error(run(env, "purge"), *words)
