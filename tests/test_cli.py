"""The `gateway` command: real subprocesses, one-line errors, --json output, --help everywhere."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC
from pathlib import Path

import pytest


def run(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [
        line
        for line in proc.stderr.splitlines()
        if not line.startswith("gateway: GATEWAY_SECRET_KEYS")
    ]
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def audit_entries(env: dict[str, str]) -> list[dict[str, object]]:
    """The audit log, read through the store (SQLite or PostgreSQL alike)."""
    from gateway import Gateway

    async def read() -> list[dict[str, object]]:
        async with Gateway.from_env(env) as gw:
            return await gw.store.audit_entries()

    return asyncio.run(read())


@pytest.fixture
def cli_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    (tmp_path / "body.html").write_text("<p>Xin chào {{ contact.name }}</p>", encoding="utf-8")
    return env


def test_a_whole_session_from_the_command_line(cli_env, tmp_path):
    assert run(cli_env, "init").returncode == 0
    assert run(cli_env, "topics", "add", "news", "--name", "Tin tức").returncode == 0
    added = run(
        cli_env, "contacts", "add", "an@example.vn", "--name", "An", "--subscribe", "news", "--json"
    )
    assert json.loads(added.stdout) == {
        "email": "an@example.vn",
        "created": True,
        "subscriptions_started": 1,
    }
    sent = run(
        cli_env,
        "send",
        "--to",
        "an@example.vn",
        "--subject",
        "Tin",
        "--html",
        "body.html",
        "--category",
        "marketing",
        "--topic",
        "news",
        "--json",
    )
    result = json.loads(sent.stdout)
    assert result["status"] == "queued" and result["message_id"].startswith("<")
    assert set(result) == {"status", "reason", "message_id"}
    listed = json.loads(run(cli_env, "topics", "list", "--json").stdout)
    assert listed == [{"slug": "news", "name": "Tin tức", "double_opt_in": False, "subscribers": 1}]
    worker = run(cli_env, "worker", "--until-idle", "--json")
    assert json.loads(worker.stdout)["sent"] == 1
    assert len(list((tmp_path / "mail" / "new").iterdir())) == 1


def test_send_reports_suppressed_with_its_reason_and_a_nonzero_exit(cli_env):
    run(cli_env, "topics", "add", "news", "--name", "News")
    proc = run(
        cli_env,
        "send",
        "--to",
        "x@example.vn",
        "--subject",
        "Hi",
        "--html",
        "body.html",
        "--category",
        "marketing",
        "--topic",
        "news",
        "--json",
    )
    assert proc.returncode == 3
    assert json.loads(proc.stdout)["status"] == "suppressed"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ("send", "--to", "nobody", "--subject", "Hi", "--html", "body.html"),
            ("not a valid email address",),
        ),
        (
            ("send", "--to", "a@example.vn", "--subject", "Hi", "--html", "missing.html"),
            ("cannot read the HTML file", "missing.html"),
        ),
        (
            (
                "send",
                "--to",
                "a@example.vn",
                "--subject",
                "Hi",
                "--html",
                "body.html",
                "--category",
                "marketing",
            ),
            ("needs a topic",),
        ),
        (
            (
                "send",
                "--to",
                "a@example.vn",
                "--subject",
                "Hi",
                "--html",
                "body.html",
                "--category",
                "marketing",
                "--topic",
                "x",
            ),
            ("unknown topic 'x'",),
        ),
        (("send", "--to", "a@example.vn", "--subject", "Hi"), ("no body",)),
        (
            (
                "send",
                "--to",
                "a@example.vn",
                "--subject",
                "Hi",
                "--text",
                "body.html",
                "--header",
                "X-A: b\r\nBcc: c",
            ),
            ("line break",),
        ),
        (("send", "--subject", "Hi"), ("required", "--to")),
        (
            ("send", "--to", "a@example.vn", "--subject", "Hi", "--category", "spam"),
            ("invalid choice",),
        ),
        (("contacts", "add", "bad@@example.vn"), ("not a valid email address",)),
        (("contacts", "import", "nope.csv"), ("cannot read", "nope.csv")),
        (("suppress", "remove", "a@example.vn"), ("not on the suppression list",)),
        (("topics", "add", "bad slug", "--name", "x"), ("letters, digits",)),
        (("worker", "--concurrency", "many"), ("invalid int value",)),
        (("frobnicate",), ("invalid choice",)),
    ],
)
def test_bad_input_exits_nonzero_with_one_line_and_no_traceback(cli_env, args, words):
    assert_one_line_error(run(cli_env, *args), *words)


def test_an_unusable_database_url_is_one_line(cli_env):
    cli_env["GATEWAY_DATABASE_URL"] = "sqlite:////nonexistent-dir/x/gateway.db"
    assert_one_line_error(run(cli_env, "init"), "cannot open database")


def test_a_bad_smtp_url_is_one_line(cli_env):
    cli_env["GATEWAY_SMTP_URL"] = "ftp://example.vn"
    assert_one_line_error(run(cli_env, "worker", "--until-idle"), "GATEWAY_SMTP_URL")


def test_an_http_base_url_outside_localhost_is_refused(cli_env):
    cli_env["GATEWAY_BASE_URL"] = "http://mail.first.vn"
    assert_one_line_error(run(cli_env, "init"), "must use https")


@pytest.mark.parametrize(
    "command",
    [
        (),
        ("init",),
        ("serve",),
        ("worker",),
        ("send",),
        ("topics", "add"),
        ("topics", "list"),
        ("contacts", "add"),
        ("contacts", "import"),
        ("suppress", "add"),
        ("suppress", "list"),
        ("suppress", "remove"),
        ("settings",),
    ],
)
def test_every_command_has_help(cli_env, command):
    proc = run(cli_env, *command, "--help")
    assert proc.returncode == 0
    assert "usage: gateway" in proc.stdout


def test_suppress_add_list_remove(cli_env):
    assert run(cli_env, "suppress", "add", "An@Example.vn", "--reason", "phone").returncode == 0
    again = run(cli_env, "suppress", "add", "an@example.vn", "--reason", "phone", "--json")
    assert json.loads(again.stdout) == {"added": False}
    rows = json.loads(run(cli_env, "suppress", "list", "--json").stdout)
    assert [(r["email"], r["scope"], r["reason"]) for r in rows] == [
        ("an@example.vn", "marketing", "phone")
    ]
    assert run(cli_env, "suppress", "remove", "an@example.vn").returncode == 0
    assert json.loads(run(cli_env, "suppress", "list", "--json").stdout) == []


def test_contacts_import_reports_bad_rows_and_exits_nonzero(cli_env, tmp_path):
    (tmp_path / "c.csv").write_text("email,name\nan@example.vn,An\nbroken,B\n", encoding="utf-8")
    proc = run(cli_env, "contacts", "import", "c.csv", "--json")
    assert proc.returncode == 4
    report = json.loads(proc.stdout)
    assert report["created"] == 1
    assert report["bad_rows"][0]["line"] == 3


def test_a_campaign_scheduled_from_the_command_line_starts_when_due(cli_env, tmp_path):
    import time
    from datetime import datetime

    run(cli_env, "topics", "add", "news", "--name", "Tin tức")
    run(cli_env, "contacts", "add", "an@example.vn", "--name", "An", "--subscribe", "news")
    created = run(
        cli_env,
        "campaign",
        "create",
        "--name",
        "Noel",
        "--topic",
        "news",
        "--subject",
        "Giáng sinh",
        "--html",
        "body.html",
    )
    assert created.returncode == 0, created.stderr
    cid = created.stdout.strip()
    assert_one_line_error(run(cli_env, "campaign", "send", cid, "--at", "next tuesday"), "--at")
    due = time.time() + 5
    at = datetime.fromtimestamp(due, UTC).isoformat()
    scheduled = run(cli_env, "campaign", "send", cid, "--at", at, "--json")
    assert json.loads(scheduled.stdout)["state"] == "scheduled"
    early = json.loads(run(cli_env, "worker", "--until-idle", "--json").stdout)["sent"]
    if time.time() < due:  # a loaded machine may take longer than that to run the worker
        assert early == 0  # not before its time
    time.sleep(max(0.0, due - time.time()) + 0.2)
    late = json.loads(run(cli_env, "worker", "--until-idle", "--json").stdout)["sent"]
    assert early + late == 1
    status = json.loads(run(cli_env, "campaign", "status", cid, "--json").stdout)
    assert status["state"] == "done" and status["counts"]["sent"] == 1


def test_campaign_preview_shows_one_contacts_message_and_is_audited(cli_env):
    run(cli_env, "topics", "add", "news", "--name", "Tin tức")
    run(cli_env, "contacts", "add", "an@example.vn", "--name", "Nguyễn An", "--subscribe", "news")
    cid = run(
        cli_env,
        "campaign",
        "create",
        "--name",
        "n",
        "--topic",
        "news",
        "--subject",
        "Chào {{ contact.name }}",
        "--html",
        "body.html",
    ).stdout.strip()
    shown = json.loads(
        run(cli_env, "campaign", "preview", cid, "--email", "an@example.vn", "--json").stdout
    )
    assert shown["subject"] == "[QC] Chào Nguyễn An"
    assert "Xin chào Nguyễn An" in shown["text"] and shown["blocked_urls"] == []
    assert_one_line_error(
        run(cli_env, "campaign", "preview", cid, "--email", "x@example.vn"), "no contact"
    )
    rows = [(e["actor"], e["action"], e["subject"]) for e in audit_entries(cli_env)]
    assert [(a.startswith("cli:"), action) for a, action, _ in rows] == [
        (True, "campaigns.preview")
    ]
    assert "an@example.vn" not in str(rows)
