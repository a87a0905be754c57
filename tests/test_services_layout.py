"""Contacts and consent are services of their own, each catalog has one home, and the mail
the gateway queues as a template is rendered by accept, below the services that queue it."""

from __future__ import annotations

import ast
import email
import email.policy
from pathlib import Path
from typing import Any

import pytest
from smtp_server import RecordingSMTPServer

from gateway import Gateway
from gateway.catalog import SUBJECTS
from gateway.records import OutboxItem

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"


def modules() -> dict[str, ast.Module]:
    return {
        path.relative_to(PACKAGE).as_posix(): ast.parse(path.read_text())
        for path in PACKAGE.rglob("*.py")
        if "migrations" not in path.parts
    }


def relative_imports(tree: ast.Module) -> set[str]:
    """The sibling modules a top-level gateway module imports (`from .x import ...`)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(node.module.split(".")[0])
    return found


# -- one home for each catalog ----------------------------------------------------------------


def test_languages_subjects_time_zone_and_local_time_are_each_defined_once():
    homes: dict[str, set[str]] = {
        k: set() for k in ("LANGUAGES", "SUBJECTS", "UTC+7", "local_time")
    }
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id in ("LANGUAGES", "SUBJECTS"):
                        homes[target.id].add(name)
            elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("timedelta"):
                if any(k.arg == "hours" and ast.unparse(k.value) == "7" for k in node.keywords):
                    homes["UTC+7"].add(name)
            elif isinstance(node, ast.FunctionDef) and node.name == "local_time":
                homes["local_time"].add(name)
    assert homes == {
        "LANGUAGES": {"i18n.py"},
        "SUBJECTS": {"catalog.py"},
        "UTC+7": {"catalog.py"},
        "local_time": {"catalog.py"},
    }


# -- services: consent below the preference center, sign-up, feedback and contacts -------------

SERVICES = ("preferences", "feedback", "signup", "privacy", "contacts")


def test_services_that_record_consent_use_consent_py_and_not_each_other():
    trees = modules()
    for service in SERVICES:
        reached = relative_imports(trees[f"{service}.py"])
        assert "consent" in reached, service
        assert not reached & set(SERVICES), f"{service}.py imports {reached & set(SERVICES)}"


def test_pd1_the_current_policy_version_is_read_in_one_place():
    """Every consent entry is recorded under the version in force: one function finds it."""
    readers = {
        name
        for name, tree in modules().items()
        if not name.startswith("store/")
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "current_policy_version"
    }
    assert readers == {"consent.py"}


def test_policy_decision_and_privacy_policy_versions_have_names_that_say_which():
    assert (PACKAGE / "privacy.py").exists() and (PACKAGE / "store" / "privacy.py").exists()
    assert not (PACKAGE / "policies.py").exists()
    assert not (PACKAGE / "store" / "policy.py").exists()


def test_the_facade_and_the_store_keep_under_400_lines_a_module():
    long = {
        path.relative_to(PACKAGE).as_posix(): n
        for path in [PACKAGE / "core.py", *(PACKAGE / "store").glob("*.py")]
        if (n := len(path.read_text().splitlines())) > 400
    }
    assert not long


# -- behaviour through the new homes ----------------------------------------------------------


async def test_st2_a_refusal_confirmation_is_rendered_by_accept_just_before_delivery(
    gw: Gateway, smtp: RecordingSMTPServer, monkeypatch: pytest.MonkeyPatch
):
    """The worker's render callback is accept's: the confirmation queued by a refusal is
    rendered there, in the person's language, and delivered."""
    contact, _, _ = await gw.add_contact("an@example.vn", language="en", subscribe=["news"])
    rendered: list[str | None] = []
    real = gw.accepter.render_queued

    async def counting(item: OutboxItem) -> bytes:
        rendered.append(item.template)
        return await real(item)

    monkeypatch.setattr(gw.accepter, "render_queued", counting)
    assert await gw.preferences.refuse(contact, source="link")
    await gw.deliver(until_idle=True)
    assert rendered == ["refusal"]
    [message] = [
        email.message_from_bytes(m.data, policy=email.policy.default) for m in smtp.messages
    ]
    assert message["Subject"] == SUBJECTS["refusal"]["en"]


async def test_api_opt_in_to_a_double_opt_in_topic_waits_as_the_contacts_service_decides(
    gw: Gateway,
):
    """PD-1: an opt-in by staff to a double opt-in topic is pending until the person
    confirms; an opt-in or opt-out repeated changes nothing; each change is one ledger entry."""
    await gw.add_topic("weekly", "Hằng tuần", double_opt_in=True)
    contact, _, _ = await gw.add_contact("an@example.vn")
    weekly = await gw.accepter.topic("weekly")
    calls: list[tuple[str, bool]] = []
    for subscribe in (True, True, False, False):
        calls.append(
            await gw.contacts.subscription(contact, weekly, subscribe=subscribe, source="api")
        )
    assert calls == [
        ("pending", True),
        ("pending", False),
        ("unsubscribed", True),
        ("unsubscribed", False),
    ]
    history: list[dict[str, Any]] = await gw.store.consent_history(contact.id, topic_by="slug")
    assert [(h["topic"], h["action"], h["source"]) for h in history] == [
        ("weekly", "opt_in", "api"),
        ("weekly", "opt_out", "api"),
    ]
    assert {h["policy_version"] for h in history} == {await gw.consent.policy_version()}
