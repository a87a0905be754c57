"""The admin API's OpenAPI 3.1 document: its paths, and the schemas the routes enforce."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from .schemas import EMAIL, ID, MAX_PAGE, REQUESTS, RESPONSES, SLUG, Schema, ref, text
from .validate import MAX_INTEGER

ERRORS = {
    400: "the body is not well-formed (not JSON, not UTF-8, or a bad query value)",
    401: "no API key, or an unknown or revoked one",
    404: "nothing with that id or address",
    409: "the change conflicts with the current state",
    413: "the body is too large",
    415: "the body has the wrong Content-Type",
    422: "the input is well-formed but not acceptable: the message says which field and why",
}
CSV: Schema = {"type": "string", "description": "CSV text, UTF-8"}


def query(name: str, schema: Schema, description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description, **extra}


def path(name: str, schema: Schema) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


PAGING = [
    query("after", {"type": "integer", "minimum": 0, "maximum": MAX_INTEGER}, "the last id seen"),
    query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
        f"items per page (default 100, at most {MAX_PAGE})",
    ),
]
CONTACT_ID = path("id", ID)
CAMPAIGN_ID = path("id", ID)
TOPIC_SLUG = path("slug", SLUG)


def operation(
    summary: str,
    tag: str,
    ok: int,
    response: str | None,
    errors: tuple[int, ...],
    *,
    body: str | None = None,
    body_required: bool = True,
    csv_body: bool = False,
    csv_response: bool = False,
    parameters: list[dict[str, Any]] | None = None,
    description: str | None = None,
    also: dict[int, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag]}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": ref(body)}},
        }
    if csv_body:
        op["requestBody"] = {"required": True, "content": {"text/csv": {"schema": CSV}}}
    responses: dict[str, Any] = {}
    if csv_response:
        responses[str(ok)] = {"description": "CSV text", "content": {"text/csv": {"schema": CSV}}}
    elif response is not None:
        responses[str(ok)] = {
            "description": "done",
            "content": {"application/json": {"schema": ref(response)}},
        }
    for status, (text_, schema) in (also or {}).items():
        responses[str(status)] = {
            "description": text_,
            "content": {"application/json": {"schema": ref(schema)}},
        }
    for status in sorted({401, 405, *errors}):
        responses[str(status)] = {
            "description": ERRORS.get(status, "the method is not allowed on this path"),
            "content": {"application/json": {"schema": ref("Error")}},
        }
    op["responses"] = responses
    return op


JSON_ERRORS = (400, 413, 415, 422)

PATHS: dict[str, Any] = {
    "/contacts": {
        "get": operation(
            "one contact by ?email=, or a page of contacts by id",
            "contacts",
            200,
            None,
            (400, 404, 422),
            parameters=[query("email", EMAIL, "the contact with this address"), *PAGING],
            description="Every call is recorded in the audit log (promise 9).",
            also={200: ("the contact, or a page of contacts", "ContactOrPage")},
        ),
        "post": operation(
            "create a contact and opt them in to topics (consent source api)",
            "contacts",
            201,
            "Contact",
            (*JSON_ERRORS, 409),
            body="ContactCreate",
        ),
    },
    "/contacts/import": {
        "post": operation(
            "import contacts from CSV (header email,name,phone,address,language,topics)",
            "contacts",
            200,
            "ImportReport",
            (400, 413, 415, 422),
            csv_body=True,
            parameters=[
                query(
                    "subscribe",
                    {"type": "array", "items": SLUG, "maxItems": 20},
                    "opt every row in to these topics",
                    style="form",
                    explode=True,
                )
            ],
            description="Good rows are imported; bad ones are reported by line.",
        ),
    },
    "/contacts/{id}": {
        "parameters": [CONTACT_ID],
        "get": operation(
            "one contact", "contacts", 200, "Contact", (404,), description="Audited (promise 9)."
        ),
        "patch": operation(
            "change name, phone, address, language or attributes",
            "contacts",
            200,
            "Contact",
            (*JSON_ERRORS, 404),
            body="ContactUpdate",
        ),
        "delete": operation(
            "erase the person now (PD-3): only a keyed hash stays, so they are never mailed",
            "contacts",
            200,
            "Erased",
            (404,),
        ),
    },
    "/contacts/{id}/export": {
        "parameters": [CONTACT_ID],
        "get": operation(
            "everything held about the person (PD-2)",
            "contacts",
            200,
            "ContactExport",
            (404,),
            description="Audited (promise 9).",
        ),
    },
    "/contacts/{id}/subscriptions/{slug}": {
        "parameters": [CONTACT_ID, TOPIC_SLUG],
        "post": operation(
            "opt the contact in to a topic (pending first for a double opt-in topic)",
            "contacts",
            200,
            "Subscription",
            (404, 422),
        ),
        "delete": operation(
            "opt the contact out of a topic", "contacts", 200, "Subscription", (404,)
        ),
    },
    "/topics": {
        "get": operation("topics with their subscriber counts", "topics", 200, "TopicList", ()),
        "post": operation(
            "create a topic", "topics", 201, "Topic", (*JSON_ERRORS, 409), body="TopicCreate"
        ),
    },
    "/suppressions": {
        "get": operation(
            "a page of the suppression list",
            "suppressions",
            200,
            "SuppressionPage",
            (400, 422),
            parameters=PAGING,
            description="Audited (promise 9).",
        ),
        "post": operation(
            "suppress an address (a refusal reason such as phone stops promotional mail; "
            "anything else all mail)",
            "suppressions",
            201,
            "SuppressionAdded",
            JSON_ERRORS,
            body="SuppressionCreate",
            also={200: ("the same suppression already stood", "SuppressionAdded")},
        ),
    },
    "/suppressions/{email}": {
        "parameters": [path("email", EMAIL)],
        "delete": operation(
            "lift the suppressions of an address (never an erasure)",
            "suppressions",
            200,
            "SuppressionRemoved",
            (404, 409, 422),
        ),
    },
    "/suppressions.csv": {
        "get": operation(
            "the whole suppression list as CSV",
            "suppressions",
            200,
            None,
            (),
            csv_response=True,
            description="Audited (promise 9).",
        ),
    },
    "/suppressions/import": {
        "post": operation(
            "suppress every address of a CSV of email[,reason] (an optional header line)",
            "suppressions",
            200,
            "SuppressionImportReport",
            (400, 413, 415, 422),
            csv_body=True,
        ),
    },
    "/messages": {
        "post": operation(
            "accept one message: the same checks as the Python send()",
            "messages",
            202,
            "SendResult",
            JSON_ERRORS,
            body="MessageCreate",
            description="202 when queued; 200 with status suppressed or blocked and the reason.",
            also={200: ("not queued: suppressed or blocked, with the reason", "SendResult")},
        ),
    },
    "/messages/{message_id}": {
        "parameters": [path("message_id", text(255, 1))],
        "get": operation(
            "delivery state of a queued message", "messages", 200, "MessageStatus", (404,)
        ),
    },
    "/campaigns": {
        "get": operation("all campaigns", "campaigns", 200, "CampaignList", ()),
        "post": operation(
            "create a campaign (its template is checked for undefined fields and third-party "
            "content now)",
            "campaigns",
            201,
            "CampaignStatus",
            JSON_ERRORS,
            body="CampaignCreate",
        ),
    },
    "/campaigns/{id}": {
        "parameters": [CAMPAIGN_ID],
        "get": operation("state and counts", "campaigns", 200, "CampaignStatus", (404,)),
    },
    "/campaigns/{id}/preview": {
        "parameters": [CAMPAIGN_ID],
        "get": operation(
            "the message one contact would get, rendered now",
            "campaigns",
            200,
            "Preview",
            (400, 404, 422),
            parameters=[query("email", EMAIL, "the contact", required=True)],
            description="Audited (promise 9).",
        ),
    },
    "/campaigns/{id}/send": {
        "parameters": [CAMPAIGN_ID],
        "post": operation(
            "start sending (or schedule with at)",
            "campaigns",
            200,
            "CampaignStatus",
            (*JSON_ERRORS, 404, 409),
            body="CampaignSend",
            body_required=False,
        ),
    },
}
PATHS["/policies"] = {
    "post": operation(
        "publish a privacy policy version; an adverse one emails every contact with data stored",
        "policies",
        201,
        "PolicyReport",
        (*JSON_ERRORS, 409),
        body="PolicyPublish",
        description="PD-5: notices go even to people who refused marketing, never to an "
        "erased address; each is recorded. Publishing a version twice answers 409.",
    )
}
for _action, _what in (
    ("pause", "stop delivering at once; waiting messages stay queued"),
    ("resume", "continue a paused campaign"),
    ("cancel", "stop for good; waiting messages are dropped"),
):
    PATHS[f"/campaigns/{{id}}/{_action}"] = {
        "parameters": [CAMPAIGN_ID],
        "post": operation(_what, "campaigns", 200, "CampaignStatus", (404, 409)),
    }

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Gateway admin API",
        "version": "1",
        "description": "Contacts, topics, suppressions, messages and campaigns. JSON in and "
        'out; every error is {"error": "..."}. Strings never contain NUL. Reads of a '
        "person's data are recorded in the audit log: who, what, when, never the data.",
    },
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}],
    "paths": PATHS,
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "a key made with `gateway apikey create NAME`",
            }
        },
        "schemas": {**REQUESTS, **RESPONSES},
    },
}


async def serve(request: Request) -> JSONResponse:
    """GET /openapi.json, without a key: the document describes, it reveals nothing."""
    return JSONResponse(DOCUMENT)
