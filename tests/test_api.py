"""The admin API (/api/v1): bearer keys, JSON in and out, every resource, every kind of bad
input answered 4xx with a reason, and the audit log of reads (promise 9).

In-process HTTP through httpx.ASGITransport against a real SQLite file and a real SMTP server.
"""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from smtp_server import RecordingSMTPServer

from gateway import Gateway, apikeys
from gateway.store import schema as t
from gateway.web import api
from gateway.web.app import create_app
from gateway.web.openapi import DOCUMENT

BASE = "https://mail.first.vn"
HTML = "<p>Chào {{ contact.name }}, xem <a href='https://first.vn/sale'>ưu đãi</a>.</p>"


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
async def key(gw: Gateway) -> str:
    return await apikeys.create(gw.store, "crm")


@pytest.fixture
def app(gw: Gateway) -> Any:
    return create_app(gw, worker=False)


@pytest.fixture
async def client(app: Any, key: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(
        transport=transport,
        base_url=BASE + "/api/v1",
        headers={"Authorization": f"Bearer {key}"},
    ) as c:
        yield c


@pytest.fixture
async def anonymous(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        yield c


async def rows(gw: Gateway, table: Any) -> list[dict[str, Any]]:
    found = await gw.store.db.fetch_all(table.select().order_by(*table.primary_key.columns))
    return [dict(r._mapping) for r in found]


def refused(response: httpx.Response, status: int, *words: str) -> str:
    """The response is a JSON error with this status whose message holds every word."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and body["error"].strip(), body
    for word in words:
        assert word in body["error"], body["error"]
    return str(body["error"])


async def new_contact(client: httpx.AsyncClient, addr: str = "an@example.vn", **kw: Any) -> dict:
    body = {"email": addr, "name": "Nguyễn Văn An", "topics": ["news"], **kw}
    response = await client.post("/contacts", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


# -- keys ---------------------------------------------------------------------------------------


async def test_a_request_without_a_key_is_refused_with_a_bearer_challenge(anonymous):
    response = await anonymous.get("/api/v1/topics")
    refused(response, 401, "Authorization: Bearer")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer gwk_not-a-real-key",
        "Bearer " + "x" * 5000,
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer ",
        "gwk_only-the-key",
    ],
)
async def test_a_wrong_key_is_refused(anonymous, key, header):
    response = await anonymous.get("/api/v1/topics", headers={"Authorization": header})
    refused(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_revoked_key_stops_working_at_once(gw, anonymous, key):
    auth = {"Authorization": f"Bearer {key}"}
    assert (await anonymous.get("/api/v1/topics", headers=auth)).status_code == 200
    await apikeys.revoke(gw.store, "crm")
    refused(await anonymous.get("/api/v1/topics", headers=auth), 401, "revoked")


async def test_only_a_hash_of_the_key_is_stored(gw, key):
    stored = await rows(gw, t.api_keys)
    assert len(stored) == 1
    assert key not in json.dumps(stored, default=str)
    assert stored[0]["key_hash"] == apikeys.key_hash(key)
    assert key.startswith(stored[0]["prefix"]) and len(stored[0]["prefix"]) < 16


async def test_the_openapi_document_is_served_without_a_key(anonymous):
    response = await anonymous.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "set-cookie" not in response.headers


def test_the_openapi_document_lists_exactly_the_routes_there_are():
    routed = {
        (route.path, method.lower())
        for route in api.routes
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {
        (path, method)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert routed == documented
    for path, item in DOCUMENT["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                name = body["schema"]["$ref"].rsplit("/", 1)[1]
                schema = DOCUMENT["components"]["schemas"][name]
                assert schema["additionalProperties"] is False, (path, method)
            assert "401" in op["responses"], (path, method)


async def test_unknown_paths_and_methods_answer_json(client):
    refused(await client.get("/nothing-here"), 404, "no such API path")
    response = await client.put("/topics")
    refused(response, 405, "PUT")
    assert "GET" in response.headers["allow"]


async def test_api_responses_set_no_cookie(client):
    for response in (await client.get("/topics"), await client.get("/nothing")):
        assert "set-cookie" not in response.headers


# -- contacts --------------------------------------------------------------------------------------


async def test_create_read_change_and_erase_a_contact(gw, client):
    made = await new_contact(
        client, "An@Example.vn", phone="0901 234 567", attributes={"city": "Huế"}, language="en"
    )
    assert made["email"] == "an@example.vn"
    assert made["subscriptions"] == {"news": "subscribed"}
    assert made["attributes"] == {"city": "Huế"}
    assert made["language"] == "en" and made["source"] == "api"
    consent = await rows(gw, t.consent_ledger)
    assert [(c["action"], c["source"]) for c in consent] == [("opt_in", "api")]

    got = (await client.get(f"/contacts/{made['id']}")).json()
    assert got == made
    found = await client.get("/contacts", params={"email": "AN@example.vn"})
    assert found.json() == made

    changed = await client.patch(
        f"/contacts/{made['id']}",
        json={"name": "An", "phone": None, "attributes": {"city": None, "tier": "gold"}},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["name"], body["phone"], body["attributes"]) == ("An", None, {"tier": "gold"})

    erased = await client.delete(f"/contacts/{made['id']}")
    assert erased.json() == {"id": made["id"], "erased": True}
    refused(await client.get(f"/contacts/{made['id']}"), 404)
    suppressions = await rows(gw, t.suppressions)
    assert [(s["email"], s["reason"]) for s in suppressions] == [(None, "erased")]
    # an erased person cannot be added back by the API either (PD-3)
    again = await client.post("/contacts", json={"email": "an@example.vn"})
    refused(again, 422, "erased")


async def test_a_second_create_of_the_same_address_conflicts(client):
    made = await new_contact(client)
    again = await client.post("/contacts", json={"email": "AN@example.vn"})
    refused(again, 409, f"PATCH /contacts/{made['id']}")


async def test_contacts_are_listed_in_pages_by_id(client):
    made = [await new_contact(client, f"p{i}@example.vn") for i in range(5)]
    seen, after, pages = [], 0, 0
    while after is not None:
        page = (await client.get("/contacts", params={"after": after, "limit": 2})).json()
        seen += [c["email"] for c in page["items"]]
        after = page["next"]
        pages += 1
    assert seen == [c["email"] for c in made]
    assert pages == 3


async def test_the_export_holds_everything_about_the_person(client):
    made = await new_contact(client)
    data = (await client.get(f"/contacts/{made['id']}/export")).json()
    assert data["profile"]["email"] == "an@example.vn"
    assert data["subscriptions"][0]["slug"] == "news"
    assert data["consent"][0]["source"] == "api"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"email": "an@example.vn", "nickname": "An"}, ["unknown field", "nickname"]),
        ({"email": "an@example.vn", "name": 5}, ["'name'", "string"]),
        ({"email": "an@example.vn", "attributes": {"city": 1}}, ["attributes.city"]),
        ({"email": "an@example.vn", "attributes": []}, ["attributes", "object"]),
        ({"email": "an@example.vn", "topics": "news"}, ["topics", "array"]),
        ({"email": "not an address"}, ["not a valid email address"]),
        ({"email": "an@example.vn", "topics": ["nope"]}, ["unknown topic", "nope"]),
        ({"email": "an@example.vn", "language": "fr"}, ["language", "vi, en"]),
        ({"name": "An"}, ["'email' is required"]),
        ({"email": "an@example.vn", "name": "a\x00b"}, ["NUL"]),
        ({"email": "an@example.vn", "name": "x" * 201}, ["longer than 200"]),
    ],
)
async def test_bad_contact_input_is_refused_with_the_reason(gw, client, body, words):
    refused(await client.post("/contacts", json=body), 422, *words)
    assert await rows(gw, t.contacts) == []


@pytest.mark.parametrize(
    ("content", "headers", "status", "words"),
    [
        (b'{"email": ', {"content-type": "application/json"}, 400, ["not valid JSON"]),
        (b"\xff\xfe", {"content-type": "application/json"}, 400, ["UTF-8"]),
        (b'{"email": NaN}', {"content-type": "application/json"}, 400, ["NaN"]),
        (b"[1, 2]", {"content-type": "application/json"}, 422, ["JSON object"]),
        (b"", {"content-type": "application/json"}, 400, ["required"]),
        (b'{"email": "an@example.vn"}', {"content-type": "text/plain"}, 415, ["application/json"]),
        (b'{"email": "an@example.vn"}', {}, 415, ["application/json"]),
        (
            b'{"email": "\\ud800@example.vn"}',
            {"content-type": "application/json"},
            422,
            ["Unicode"],
        ),
        (b"[" * 100_000 + b"]" * 100_000, {"content-type": "application/json"}, 400, ["JSON"]),
        (b'{"n": ' + b"9" * 5000 + b"}", {"content-type": "application/json"}, 400, ["JSON"]),
    ],
)
async def test_malformed_bodies_are_refused(client, content, headers, status, words):
    refused(await client.post("/contacts", content=content, headers=headers), status, *words)


async def test_a_body_too_large_is_refused_before_it_is_read(client):
    big = b'{"email": "' + b"a" * (17 * 1024 * 1024) + b'"}'
    refused(
        await client.post("/contacts", content=big, headers={"content-type": "application/json"}),
        413,
    )

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(17):
            yield b" " * (1024 * 1024)

    streamed = await client.post(
        "/contacts", content=chunks(), headers={"content-type": "application/json"}
    )
    refused(streamed, 413)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/contacts/0", 404),
        ("/contacts/abc", 404),
        ("/contacts/99999999999999999999999", 404),
        ("/contacts/-1", 404),
        ("/contacts?limit=0", 422),
        ("/contacts?limit=abc", 422),
        ("/contacts?after=99999999999999999999999", 422),
        ("/contacts?colour=red", 422),
        ("/contacts?email=nobody", 422),
        ("/contacts?email=nobody@example.vn", 404),
        ("/contacts?email=an@example.vn&limit=5", 422),
    ],
)
async def test_bad_ids_and_query_values_are_refused(client, path, status):
    refused(await client.get(path), status)


async def test_patch_refuses_unknown_fields_and_unknown_contacts(client):
    made = await new_contact(client)
    refused(await client.patch(f"/contacts/{made['id']}", json={"email": "x@y.vn"}), 422, "email")
    refused(await client.patch(f"/contacts/{made['id']}", json={"language": None}), 422)
    refused(await client.patch("/contacts/999", json={"name": "B"}), 404)


async def test_contacts_import_reports_bad_rows_by_line(gw, client):
    text = (
        "email,name,language,topics\r\n"
        "binh@example.vn,Bình,vi,news\r\n"
        "not-an-address,X,vi,\r\n"
        "chi@example.vn,Chi,fr,\r\n"
        "dung@example.vn,Dũng,en,nope\r\n"
        "em@example.vn,Em,,deals\r\n"
    )
    response = await client.post(
        "/contacts/import", content=text.encode(), headers={"content-type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["created"], report["updated"], report["subscribed"]) == (2, 0, 2)
    assert [r["line"] for r in report["bad_rows"]] == [3, 4, 5]
    assert "nope" in report["bad_rows"][2]["reason"]
    consent = await rows(gw, t.consent_ledger)
    assert {c["source"] for c in consent} == {"api"}


@pytest.mark.parametrize(
    ("content", "ctype", "status"),
    [
        (b"email\nan@example.vn\n", "application/json", 415),
        (b"mail,colour\nan@example.vn,red\n", "text/csv", 422),
        (b"email,colour\nan@example.vn,red\n", "text/csv", 422),
        (b"email\n\x00\n", "text/csv", 422),
        (b"\xff\xfe\xfa", "text/csv", 400),
        (b"", "text/csv", 422),
    ],
)
async def test_a_csv_that_cannot_be_imported_is_refused(client, content, ctype, status):
    response = await client.post(
        "/contacts/import", content=content, headers={"content-type": ctype}
    )
    refused(response, status)


async def test_import_can_opt_every_row_in_to_a_topic(client):
    response = await client.post(
        "/contacts/import?subscribe=deals",
        content=b"email\r\nbinh@example.vn\r\n",
        headers={"content-type": "text/csv"},
    )
    assert response.json()["subscribed"] == 1
    refused(
        await client.post(
            "/contacts/import?subscribe=nope",
            content=b"email\r\nbinh@example.vn\r\n",
            headers={"content-type": "text/csv"},
        ),
        422,
        "nope",
    )


# -- subscriptions and topics ----------------------------------------------------------------------


async def test_subscribe_and_unsubscribe_record_consent_from_the_api(gw, client):
    made = await new_contact(client, topics=[])
    path = f"/contacts/{made['id']}/subscriptions/deals"
    first = (await client.post(path)).json()
    assert first == {
        "contact_id": made["id"],
        "topic": "deals",
        "status": "subscribed",
        "changed": True,
    }
    assert (await client.post(path)).json()["changed"] is False
    gone = (await client.delete(path)).json()
    assert (gone["status"], gone["changed"]) == ("unsubscribed", True)
    consent = await rows(gw, t.consent_ledger)
    assert [(c["action"], c["source"]) for c in consent] == [("opt_in", "api"), ("opt_out", "api")]
    # never subscribed: nothing to record
    never = (await client.delete(f"/contacts/{made['id']}/subscriptions/news")).json()
    assert never["changed"] is False
    assert len(await rows(gw, t.consent_ledger)) == 2


async def test_a_double_opt_in_topic_starts_pending(gw, client):
    await gw.add_topic("vip", "VIP", double_opt_in=True)
    made = await new_contact(client, topics=[])
    body = (await client.post(f"/contacts/{made['id']}/subscriptions/vip")).json()
    assert body["status"] == "pending"


async def test_subscriptions_to_unknown_topics_or_contacts_are_404(client):
    made = await new_contact(client)
    refused(await client.post(f"/contacts/{made['id']}/subscriptions/nope"), 404, "nope")
    refused(await client.post(f"/contacts/{made['id']}/subscriptions/a%00b"), 404)
    refused(await client.post("/contacts/999/subscriptions/news"), 404)


async def test_topics_are_listed_and_created(client):
    await new_contact(client)
    listed = (await client.get("/topics")).json()
    assert {t["slug"]: t["subscribers"] for t in listed} == {"deals": 0, "news": 1}
    made = await client.post("/topics", json={"slug": "events", "name": "Sự kiện"})
    assert made.status_code == 201
    assert made.json() == {
        "slug": "events",
        "name": "Sự kiện",
        "double_opt_in": False,
        "subscribers": 0,
    }
    refused(await client.post("/topics", json={"slug": "events", "name": "x"}), 409)
    refused(await client.post("/topics", json={"slug": "a b", "name": "x"}), 422, "slug")
    refused(await client.post("/topics", json={"slug": "ok"}), 422, "'name' is required")
    refused(
        await client.post("/topics", json={"slug": "ok", "name": "x", "double_opt_in": "yes"}), 422
    )


# -- suppressions ----------------------------------------------------------------------------------


async def test_suppressions_are_added_listed_exported_and_removed(gw, client):
    first = await client.post("/suppressions", json={"email": "Spam@Example.vn", "reason": "phone"})
    assert first.status_code == 201
    assert first.json() == {"email": "spam@example.vn", "added": True}
    again = await client.post("/suppressions", json={"email": "spam@example.vn", "reason": "phone"})
    assert (again.status_code, again.json()["added"]) == (200, False)
    await client.post("/suppressions", json={"email": "b@example.vn"})
    stored = await rows(gw, t.suppressions)
    assert [(s["scope"], s["reason"], s["source"]) for s in stored] == [
        ("marketing", "phone", "api"),
        ("all", "manual", "api"),
    ]

    page = (await client.get("/suppressions", params={"limit": 1})).json()
    assert [s["email"] for s in page["items"]] == ["spam@example.vn"]
    rest = (await client.get("/suppressions", params={"after": page["next"]})).json()
    assert [s["email"] for s in rest["items"]] == ["b@example.vn"] and rest["next"] is None

    exported = await client.get("/suppressions.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["email"], r["scope"], r["reason"]) for r in table] == [
        ("spam@example.vn", "marketing", "phone"),
        ("b@example.vn", "all", "manual"),
    ]

    removed = await client.delete("/suppressions/SPAM@example.vn")
    assert removed.json() == {"email": "spam@example.vn", "removed": 1}
    refused(await client.delete("/suppressions/spam@example.vn"), 404)


async def test_an_erasure_cannot_be_lifted_or_imitated(gw, client):
    made = await new_contact(client)
    await client.delete(f"/contacts/{made['id']}")
    refused(await client.delete("/suppressions/an@example.vn"), 409, "erased")
    refused(
        await client.post("/suppressions", json={"email": "x@example.vn", "reason": "erased"}),
        422,
        "erase",
    )
    exported = await client.get("/suppressions.csv")
    assert exported.text.strip().splitlines() == ["email,scope,topic,reason,source,created_at"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"email": "bad"}, 422),
        ({"email": "a@example.vn", "scope": "topic"}, 422),
        ({"email": "a@example.vn", "reason": "Not Allowed!"}, 422),
        ({"email": "a@example.vn", "until": 5}, 422),
        ({}, 422),
    ],
)
async def test_bad_suppressions_are_refused(client, body, status):
    refused(await client.post("/suppressions", json=body), status)


async def test_suppressions_import_reports_bad_rows_by_line(gw, client):
    text = "email,reason\na@example.vn,phone\nnot-an-address\nb@example.vn\nc@example.vn,x,y\na@example.vn,phone\nd@example.vn,erased\n"
    response = await client.post(
        "/suppressions/import", content=text.encode(), headers={"content-type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["added"], report["already"]) == (2, 1)
    assert [r["line"] for r in report["bad_rows"]] == [3, 5, 7]
    stored = await rows(gw, t.suppressions)
    assert {(s["email"], s["reason"]) for s in stored} == {
        ("a@example.vn", "phone"),
        ("b@example.vn", "manual"),
    }


# -- messages --------------------------------------------------------------------------------------


async def test_a_message_is_queued_delivered_and_its_state_read(
    gw, client, smtp: RecordingSMTPServer
):
    response = await client.post(
        "/messages",
        json={
            "to": "khach@example.vn",
            "subject": "Đơn hàng {{ order }}",
            "text": "Cảm ơn {{ order }}",
            "context": {"order": "#42"},
            "headers": {"X-Order": "42"},
        },
    )
    assert response.status_code == 202, response.text
    result = response.json()
    assert result["status"] == "queued" and result["message_id"].startswith("<")
    await gw.deliver(until_idle=True)
    assert len(smtp.messages) == 1
    mail = parse(smtp.messages[0].data)
    assert str(mail["Subject"]) == "Đơn hàng #42" and mail["X-Order"] == "42"
    state = await client.get(f"/messages/{result['message_id']}")
    assert state.json()["state"] == "sent"
    bare = await client.get(f"/messages/{result['message_id'].strip('<>')}")
    assert bare.json()["state"] == "sent"
    refused(await client.get("/messages/nope@first.vn"), 404)
    refused(await client.get("/messages/%00"), 404)
    refused(await client.get("/messages/a%0Ab"), 404)  # a line break stays in the API: JSON


async def test_an_idempotent_send_is_queued_once(client):
    body = {"to": "khach@example.vn", "subject": "Hi", "text": "x", "idempotency_key": "k1"}
    first = (await client.post("/messages", json=body)).json()
    second = await client.post("/messages", json=body)
    assert second.status_code == 202
    assert second.json()["message_id"] == first["message_id"]


async def test_marketing_to_a_non_subscriber_is_suppressed(gw, client, smtp):
    await new_contact(client, topics=[])
    response = await client.post(
        "/messages",
        json={
            "to": "an@example.vn",
            "subject": "Ưu đãi",
            "html": HTML,
            "category": "marketing",
            "topic": "news",
        },
    )
    assert response.status_code == 200
    result = response.json()
    assert result["status"] == "suppressed" and "opt-in" in result["reason"]
    assert result["message_id"] is None
    await gw.deliver(until_idle=True)
    assert smtp.messages == []


async def test_third_party_content_blocks_a_message_with_the_urls(client):
    response = await client.post(
        "/messages",
        json={
            "to": "khach@example.vn",
            "subject": "Hi",
            "html": '<img src="https://tracker.evil.com/p.gif"><p>x</p>',
        },
    )
    assert response.status_code == 200
    result = response.json()
    assert result["status"] == "blocked"
    assert result["blocked_urls"] == ["https://tracker.evil.com/p.gif"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"to": "k@example.vn", "subject": "x", "text": "x", "cc": "b@example.vn"}, ["cc"]),
        ({"to": "k@example.vn", "subject": "x"}, ["no body"]),
        ({"to": "k@example.vn", "subject": "x", "text": "x", "category": "spam"}, ["category"]),
        ({"to": "k@example.vn", "subject": "x", "text": "x", "category": "marketing"}, ["topic"]),
        (
            {
                "to": "k@example.vn",
                "subject": "x",
                "text": "x",
                "category": "marketing",
                "topic": "nope",
            },
            ["unknown topic"],
        ),
        ({"to": "k@example.vn", "subject": "x", "text": "{{ nothing }}"}, ["undefined"]),
        ({"to": "k@example.vn", "subject": "x", "text": "{% if %}"}, ["template"]),
        (
            {
                "to": "k@example.vn",
                "subject": "x",
                "text": "x",
                "headers": {"X-A": "1\r\nBcc: e@x.vn"},
            },
            ["line break"],
        ),
        (
            {"to": "k@example.vn", "subject": "x", "text": "x", "headers": {"Bad Name": "1"}},
            ["Bad Name"],
        ),
        (
            {"to": "k@example.vn", "subject": "x", "text": "x", "headers": {"From": "e@x.vn"}},
            ["From"],
        ),
        ({"to": "k@example.vn, b@example.vn", "subject": "x", "text": "x"}, ["valid email"]),
        ({"to": "k@example.vn", "subject": 5, "text": "x"}, ["subject", "string"]),
    ],
)
async def test_bad_messages_are_refused_with_the_reason(gw, client, body, words):
    refused(await client.post("/messages", json=body), 422, *words)
    assert await rows(gw, t.outbox) == []


# -- campaigns -------------------------------------------------------------------------------------


async def campaign(client: httpx.AsyncClient, **kw: Any) -> dict:
    body = {
        "name": "Tháng 12",
        "topic": "news",
        "subject": "Ưu đãi cho {{ contact.name }}",
        "html": HTML,
        **kw,
    }
    response = await client.post("/campaigns", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_a_campaign_is_created_previewed_sent_and_counted(gw, client, smtp):
    await new_contact(client, "an@example.vn")
    await new_contact(client, "binh@example.vn", name="Bình")
    made = await campaign(client)
    assert made["state"] == "draft" and made["topic"] == "news"
    assert set(made["counts"]) == {"queued", "sent", "suppressed", "blocked", "failed", "bounced"}

    preview = await client.get(
        f"/campaigns/{made['id']}/preview", params={"email": "binh@example.vn"}
    )
    assert preview.status_code == 200, preview.text
    shown = preview.json()
    assert shown["subject"].startswith("[QC]") and "Bình" in shown["subject"]
    assert "Bình" in shown["html"] and "Bình" in shown["text"]
    assert shown["blocked_urls"] == []
    refused(
        await client.get(f"/campaigns/{made['id']}/preview", params={"email": "x@example.vn"}), 404
    )
    refused(await client.get(f"/campaigns/{made['id']}/preview"), 422, "email")

    listed = (await client.get("/campaigns")).json()
    assert [c["id"] for c in listed] == [made["id"]]

    started = await client.post(f"/campaigns/{made['id']}/send")
    assert started.json()["state"] == "sending"
    await gw.deliver(until_idle=True)
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == ["an@example.vn", "binh@example.vn"]
    status = (await client.get(f"/campaigns/{made['id']}")).json()
    assert (status["state"], status["counts"]["sent"]) == ("done", 2)
    refused(await client.post(f"/campaigns/{made['id']}/pause"), 409, "done")


async def test_a_campaign_is_scheduled_paused_resumed_and_cancelled(client):
    made = await campaign(client)
    path = f"/campaigns/{made['id']}"
    later = await client.post(f"{path}/send", json={"at": "2999-01-01T08:00:00+07:00", "rate": 5})
    assert later.json()["state"] == "scheduled"
    assert (await client.post(f"{path}/pause")).json()["state"] == "paused"
    refused(await client.post(f"{path}/pause"), 409, "paused")
    assert (await client.post(f"{path}/resume", json={})).json()["state"] == "sending"
    assert (await client.post(f"{path}/cancel")).json()["state"] == "cancelled"
    refused(await client.post(f"{path}/send"), 409, "cancelled")
    refused(await client.post(f"{path}/resume", json={"now": True}), 422)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"html": "<p>{{ contact.nickname }}</p>"}, 422, ["nickname"]),
        ({"html": "<p>{{ nothing.here }}</p>"}, 422, ["undefined"]),
        (
            {"html": '<p><img src="https://cdn.other.com/a.png"></p>'},
            422,
            ["third-party", "cdn.other.com"],
        ),
        ({"topic": "nope"}, 422, ["unknown topic"]),
        ({"html": 5}, 422, ["html"]),
        ({"audience": "all"}, 422, ["unknown field", "audience"]),
        ({"name": ""}, 422, ["name"]),
    ],
)
async def test_bad_campaigns_are_refused_with_the_reason(gw, client, body, status, words):
    full = {"name": "x", "topic": "news", "subject": "s", "html": "<p>x</p>", **body}
    refused(await client.post("/campaigns", json=full), status, *words)
    assert await rows(gw, t.campaigns) == []


@pytest.mark.parametrize(
    "body",
    [
        {"rate": 0},
        {"rate": -1},
        {"rate": "fast"},
        {"at": "tomorrow"},
        {"at": "2030-01-01T08:00:00"},
        {"at": True},
        {"when": 1},
    ],
)
async def test_bad_send_options_are_refused(client, body):
    made = await campaign(client)
    refused(await client.post(f"/campaigns/{made['id']}/send", json=body), 422)
    assert (await client.get(f"/campaigns/{made['id']}")).json()["state"] == "draft"


async def test_unknown_campaigns_are_404(client):
    for path in ("/campaigns/999", "/campaigns/abc"):
        refused(await client.get(path), 404)
    for action in ("send", "pause", "resume", "cancel"):
        refused(await client.post(f"/campaigns/999/{action}"), 404)
    refused(await client.get("/campaigns/999/preview", params={"email": "an@example.vn"}), 404)


# -- promise 9: the audit log ----------------------------------------------------------------------


async def test_every_read_of_personal_data_is_audited_without_the_data(gw, client):
    made = await new_contact(client, "an@example.vn")
    await client.post("/suppressions", json={"email": "spam@example.vn"})
    draft = await campaign(client)
    assert await rows(gw, t.audit_log) == []  # writes that only echo the input are not reads

    await client.get(f"/contacts/{made['id']}")
    await client.get("/contacts", params={"email": "an@example.vn"})
    await client.get("/contacts")
    await client.get(f"/contacts/{made['id']}/export")
    await client.get(f"/campaigns/{draft['id']}/preview", params={"email": "an@example.vn"})
    await client.get("/suppressions")
    await client.get("/suppressions.csv")
    await client.patch(f"/contacts/{made['id']}", json={"name": "An"})
    # reads that found nothing reveal nothing and are not recorded
    await client.get("/contacts/999")
    await client.get("/contacts", params={"email": "nobody@example.vn"})
    # neither are reads of no one in particular
    await client.get("/topics")
    await client.get(f"/campaigns/{draft['id']}")

    log = await rows(gw, t.audit_log)
    hashed = gw.signer.address_hash("an@example.vn")
    assert [(r["actor"], r["action"], r["subject"]) for r in log] == [
        ("apikey:crm", "contacts.get", hashed),
        ("apikey:crm", "contacts.get", hashed),
        ("apikey:crm", "contacts.list", "list"),
        ("apikey:crm", "contacts.export", hashed),
        ("apikey:crm", "campaigns.preview", hashed),
        ("apikey:crm", "suppressions.list", "list"),
        ("apikey:crm", "suppressions.export", "list"),
        ("apikey:crm", "contacts.update", hashed),
    ]
    dumped = json.dumps(log, default=str)
    for personal in ("an@example.vn", "spam@example.vn", "Nguyễn", "example.vn"):
        assert personal not in dumped


async def test_erasure_is_recorded_under_the_keyed_hash_only(gw, client):
    made = await new_contact(client)
    await client.delete(f"/contacts/{made['id']}")
    log = await rows(gw, t.audit_log)
    assert [(r["action"], r["subject"]) for r in log] == [
        ("contacts.erase", gw.signer.address_hash("an@example.vn"))
    ]


async def test_pd5_policies_published_through_the_api_notify_everyone_with_data_once(
    gw, client, smtp
):
    await new_contact(client, "an@example.vn")
    await new_contact(client, "binh@example.vn")
    await gw.suppress("binh@example.vn", reason="unsubscribe")  # refused marketing: still told
    body = {"version": "2026.12", "text": "Chúng tôi thay đổi chính sách.", "adverse": True}
    response = await client.post("/policies", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["notices"] == {"queued": 2, "suppressed": 0}
    again = await client.post("/policies", json=body)
    refused(again, 409, "2026.12")
    refused(await client.post("/policies", json={"version": "x"}), 422, "text")
    refused(
        await client.post("/policies", json={**body, "version": "2027", "extra": 1}),
        422,
        "extra",
    )
    await gw.deliver(until_idle=True)
    told = sorted(
        m.rcpt_tos[0] for m in smtp.messages if "2026.12" in m.data.decode("ascii", "replace")
    )
    assert told == ["an@example.vn", "binh@example.vn"]
