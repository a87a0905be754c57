"""The admin API's OpenAPI 3.1 document, made from its route table (`api.routes`) and the
pydantic models the routes validate with: what is published is what is enforced."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, Field, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema
from starlette.requests import Request
from starlette.responses import JSONResponse

from . import models as m
from .api import routes

ERRORS = {
    400: "the body is not well-formed (not JSON, not UTF-8, or a bad query value)",
    401: "no API key, or an unknown or revoked one",
    404: "nothing with that id or address",
    405: "the method is not allowed on this path",
    409: "the change conflicts with the current state",
    413: "the body is too large",
    415: "the body has the wrong Content-Type",
    422: "the input is well-formed but not acceptable: the message says which field and why",
}
JSON_ERRORS = (400, 413, 415, 422)
CSV: JsonSchemaValue = {"type": "string", "description": "CSV text, UTF-8"}
AUDITED = "Every call is recorded in the audit log: who read whose data, and when."


class Schemas(GenerateJsonSchema):
    """pydantic's JSON Schema, said the way a client generator reads it best."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False  # a field's title would only repeat its name

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        found = super().default_schema(schema)
        if "default" in found and found["default"] is None:
            del found["default"]  # models.ABSENT: the field may be left out, not sent as null
        return found

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        # pydantic spells a pattern on keys as patternProperties, which lets any key that
        # misses it through unchecked; the routes refuse such a key (a header name)
        found = super().dict_schema(schema)
        if patterns := found.pop("patternProperties", None):
            ((pattern, values),) = patterns.items()
            found["propertyNames"] = {**found.get("propertyNames", {}), "pattern": pattern}
            found["additionalProperties"] = values
        return found


def schema_of(kind: Any) -> JsonSchemaValue:
    return TypeAdapter(kind).json_schema(schema_generator=Schemas)


def ref(model: type[BaseModel]) -> JsonSchemaValue:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def query(name: str, kind: Any, description: str, **extra: Any) -> dict[str, Any]:
    schema = schema_of(kind)
    return {"name": name, "in": "query", "schema": schema, "description": description, **extra}


PATH_PARAMETERS = {
    "id": m.Id,
    "slug": m.Slug,
    "email": m.Email,
    "message_id": Annotated[str, Field(min_length=1, max_length=255)],
}
PAGING = [
    query("after", Annotated[int, Field(ge=0, le=m.MAX_INTEGER)], "the last id seen"),
    query(
        "limit",
        Annotated[int, Field(ge=1, le=m.MAX_PAGE)],
        f"items per page (default 100, at most {m.MAX_PAGE})",
    ),
]


@dataclass(frozen=True)
class Op:
    """What one route takes and answers; `errors` are the 4xx statuses it may answer."""

    summary: str
    tag: str
    answer: type[BaseModel] | None
    ok: int = 200
    errors: tuple[int, ...] = ()
    body: type[m.Body] | None = None
    body_required: bool = True
    csv: bool = False  # the body is CSV text
    parameters: list[dict[str, Any]] = field(default_factory=list)
    description: str | None = None
    also: dict[int, tuple[str, type[BaseModel]]] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        op: dict[str, Any] = {"summary": self.summary, "tags": [self.tag]}
        if self.description:
            op["description"] = self.description
        if self.parameters:
            op["parameters"] = self.parameters
        if self.body is not None:
            content = {"application/json": {"schema": ref(self.body)}}
            op["requestBody"] = {"required": self.body_required, "content": content}
        if self.csv:
            op["requestBody"] = {"required": True, "content": {"text/csv": {"schema": CSV}}}
        answers = {self.ok: ("done" if self.answer else "CSV text", self.answer), **self.also}
        op["responses"] = {
            str(status): {
                "description": text,
                "content": {"application/json": {"schema": ref(model)}}
                if model is not None
                else {"text/csv": {"schema": CSV}},
            }
            for status, (text, model) in answers.items()
        }
        for status in sorted({401, 405, *self.errors}):
            op["responses"][str(status)] = {
                "description": ERRORS[status],
                "content": {"application/json": {"schema": ref(m.Error)}},
            }
        return op


CAMPAIGN_ACTIONS = {
    "pause": "stop delivering at once; waiting messages stay queued",
    "resume": "continue a paused campaign",
    "cancel": "stop for good; waiting messages are dropped",
}
OPERATIONS: dict[tuple[str, str], Op] = {
    ("/contacts", "get"): Op(
        "one contact by ?email=, or a page of contacts by id",
        "contacts",
        m.ContactOrPage,
        errors=(400, 404, 422),
        parameters=[query("email", m.Email, "the contact with this address"), *PAGING],
        description=AUDITED,
        also={200: ("the contact, or a page of contacts", m.ContactOrPage)},
    ),
    ("/contacts", "post"): Op(
        "create a contact and opt them in to topics (consent source api)",
        "contacts",
        m.Contact,
        ok=201,
        errors=(*JSON_ERRORS, 409),
        body=m.ContactCreate,
    ),
    ("/contacts/import", "post"): Op(
        "import contacts from CSV (header email,name,phone,address,language,topics)",
        "contacts",
        m.ImportReport,
        errors=(400, 413, 415, 422),
        csv=True,
        parameters=[
            query(
                "subscribe",
                Annotated[list[m.Slug], Field(max_length=20)],
                "opt every row in to these topics",
                style="form",
                explode=True,
            )
        ],
        description="Good rows are imported; bad ones are reported by line.",
    ),
    ("/contacts/{id}", "get"): Op(
        "one contact",
        "contacts",
        m.Contact,
        errors=(404,),
        description="Audited: who read it, and when.",
    ),
    ("/contacts/{id}", "patch"): Op(
        "change name, phone, address, language or attributes",
        "contacts",
        m.Contact,
        errors=(*JSON_ERRORS, 404),
        body=m.ContactUpdate,
    ),
    ("/contacts/{id}", "delete"): Op(
        "erase the person now: only a keyed hash stays, so they are never mailed again",
        "contacts",
        m.Erased,
        errors=(404,),
    ),
    ("/contacts/{id}/export", "get"): Op(
        "everything held about the person (their right of access)",
        "contacts",
        m.ContactExport,
        errors=(404,),
        description="Audited: who read it, and when.",
    ),
    ("/contacts/{id}/subscriptions/{slug}", "post"): Op(
        "opt the contact in to a topic (pending first for a double opt-in topic)",
        "contacts",
        m.Subscription,
        errors=(404, 422),
    ),
    ("/contacts/{id}/subscriptions/{slug}", "delete"): Op(
        "opt the contact out of a topic", "contacts", m.Subscription, errors=(404,)
    ),
    ("/topics", "get"): Op("topics with their subscriber counts", "topics", m.TopicList),
    ("/topics", "post"): Op(
        "create a topic",
        "topics",
        m.Topic,
        ok=201,
        errors=(*JSON_ERRORS, 409),
        body=m.TopicCreate,
    ),
    ("/suppressions", "get"): Op(
        "a page of the suppression list",
        "suppressions",
        m.SuppressionPage,
        errors=(400, 422),
        parameters=PAGING,
        description="Audited: who read it, and when.",
    ),
    ("/suppressions", "post"): Op(
        "suppress an address (a refusal reason such as phone stops promotional mail; "
        "anything else all mail)",
        "suppressions",
        m.SuppressionAdded,
        ok=201,
        errors=JSON_ERRORS,
        body=m.SuppressionCreate,
        also={200: ("the same suppression already stood", m.SuppressionAdded)},
    ),
    ("/suppressions/{email}", "delete"): Op(
        "lift the suppressions of an address (never an erasure)",
        "suppressions",
        m.SuppressionRemoved,
        errors=(404, 409, 422),
    ),
    ("/suppressions.csv", "get"): Op(
        "the whole suppression list as CSV",
        "suppressions",
        None,
        description="Audited: who read it, and when.",
    ),
    ("/suppressions/import", "post"): Op(
        "suppress every address of a CSV of email[,reason] (an optional header line)",
        "suppressions",
        m.SuppressionImportReport,
        errors=(400, 413, 415, 422),
        csv=True,
    ),
    ("/messages", "post"): Op(
        "accept one message: the same checks as the Python send()",
        "messages",
        m.SendResult,
        ok=202,
        errors=JSON_ERRORS,
        body=m.MessageCreate,
        description="202 when queued; 200 with status suppressed or blocked and the reason.",
        also={200: ("not queued: suppressed or blocked, with the reason", m.SendResult)},
    ),
    ("/messages/{message_id}", "get"): Op(
        "delivery state of a queued message", "messages", m.MessageStatus, errors=(404,)
    ),
    ("/policies", "post"): Op(
        "publish a privacy policy version; an adverse one emails every contact with data stored",
        "policies",
        m.PolicyReport,
        ok=201,
        errors=(*JSON_ERRORS, 409),
        body=m.PolicyPublish,
        description="Notices go even to people who refused marketing, never to an "
        "erased address; each is recorded. Publishing a version twice answers 409.",
    ),
    ("/campaigns", "get"): Op("all campaigns", "campaigns", m.CampaignList),
    ("/campaigns", "post"): Op(
        "create a campaign (its template is checked for undefined fields and third-party "
        "content now)",
        "campaigns",
        m.CampaignStatus,
        ok=201,
        errors=JSON_ERRORS,
        body=m.CampaignCreate,
    ),
    ("/campaigns/{id}", "get"): Op(
        "state and counts", "campaigns", m.CampaignStatus, errors=(404,)
    ),
    ("/campaigns/{id}/preview", "get"): Op(
        "the message one contact would get, rendered now",
        "campaigns",
        m.Preview,
        errors=(400, 404, 422),
        parameters=[query("email", m.Email, "the contact", required=True)],
        description="Audited: who read it, and when.",
    ),
    ("/campaigns/{id}/send", "post"): Op(
        "start sending (or schedule with at)",
        "campaigns",
        m.CampaignStatus,
        errors=(*JSON_ERRORS, 404, 409),
        body=m.CampaignSend,
        body_required=False,
    ),
    **{
        (f"/campaigns/{{id}}/{action}", "post"): Op(
            what, "campaigns", m.CampaignStatus, errors=(404, 409)
        )
        for action, what in CAMPAIGN_ACTIONS.items()
    },
}


def paths() -> dict[str, Any]:
    """Every route of the table, each with its operation; a route without one fails here."""
    found: dict[str, Any] = {}
    for route in routes:
        item = found.setdefault(route.path, {})
        if route.param_convertors:
            item["parameters"] = [
                {"name": name, "in": "path", "required": True, "schema": schema_of(kind)}
                for name, kind in PATH_PARAMETERS.items()
                if name in route.param_convertors
            ]
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                item[method.lower()] = OPERATIONS[(route.path, method.lower())].document()
    return found


def schemas() -> dict[str, JsonSchemaValue]:
    """Every model an operation names, and the models inside them."""
    named: set[type[BaseModel] | None] = {m.Error}
    for op in OPERATIONS.values():
        named |= {op.body, op.answer, *(model for _, model in op.also.values())}
    chosen = sorted((model for model in named if model is not None), key=lambda k: k.__name__)
    _, found = models_json_schema(
        [(model, "validation") for model in chosen],
        ref_template="#/components/schemas/{model}",
        schema_generator=Schemas,
        union_format="primitive_type_array",
    )
    return dict(found["$defs"])


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
    "paths": paths(),
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "a key made with `gateway apikey create NAME`",
            }
        },
        "schemas": schemas(),
    },
}


async def serve(request: Request) -> JSONResponse:
    """GET /openapi.json, without a key: the document describes, it reveals nothing."""
    return JSONResponse(DOCUMENT)
