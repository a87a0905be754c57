"""Console pages of privacy policy versions (admin only): the list, and publishing a new one
after a dry run that shows who its notice would reach and who not, and why.

The text is pasted or uploaded; the dry run checks it as publishing would (`Policies.check`)
and counts the audience (`privacy.audience`) without writing anything. Publishing records the
version at once; an adverse version's notices are queued after the answer (page by page,
resumable: `Policies.notify` never tells anyone twice), and the list shows them as they grow.
"""

from __future__ import annotations

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ...audience import reason_words
from ...i18n import N_
from ...privacy import audience
from .people_common import (
    MAX_UPLOAD,
    Refused,
    audit_change,
    done_message,
    form_fields,
    gateway,
    guarded,
    moment,
    need,
    render,
)

VERSION_LIMIT = 32
# Why someone would not be told, in the staff member's words (others as audience.py says).
WHY = {
    "erased": N_("erased at their request: nothing is left to tell"),
    "hard_bounce": N_("their address bounced (hard bounce)"),
}


async def _versions(request: Request) -> list[dict[str, object]]:
    gw = gateway(request)
    rows = []
    for v in reversed(await gw.policies.versions()):
        left = 0
        if v["adverse"]:
            policy = await gw.policies.get(str(v["version"]))
            cursor = await gw.store.notice_cursor(policy["id"])
            left = await gw.store.count_policy_audience(cursor, policy["published_at"])
        rows.append({**v, "when": moment(float(v["published_at"])), "left": left})
    return rows


@guarded
async def policies(request: Request) -> Response:
    """GET: every version, newest first, with its notices; the form for a new one."""
    await need(request, "admin")
    gw = gateway(request)
    versions = await _versions(request)
    return render(
        request,
        "policies.html",
        N_("Policy versions"),
        versions=versions,
        current=await gw.policies.current_version(),
        refresh=any(v["left"] for v in versions) and request.query_params.get("done") is not None,
        done=done_message(request),
    )


async def _proposal(request: Request) -> tuple[str, str, bool]:
    gw = gateway(request)
    fields = await form_fields(request, limit=MAX_UPLOAD, files=("text_file",))
    text = fields.get("text_file", "").strip() or fields.get("text", "")
    # A browser sends a form's line breaks as CRLF: the text is kept with plain ones.
    text = text.replace("\r\n", "\n")
    version = fields.get("version", "")[: VERSION_LIMIT * 4]
    adverse = fields.get("adverse") == "on"
    version, text = await gw.policies.check(version, text)
    return version, text, adverse


@guarded
async def dry_run(request: Request) -> Response:
    """POST: check the version and count who its notice would reach; nothing is written.
    The page shows the counts and the button that publishes exactly this text."""
    await need(request, "admin")
    gw = gateway(request)
    version, text, adverse = await _proposal(request)
    found = await audience(gw)
    suppressed = sorted(found.suppressed.items(), key=lambda kv: (-kv[1], kv[0]))
    await audit_change(request, "policies.dry_run", f"policy:{version}")
    return render(
        request,
        "policies_dry_run.html",
        N_("Publish a policy version: dry run"),
        version=version,
        text=text,
        adverse=adverse,
        would_get=found.would_get,
        suppressed=[(WHY.get(code) or reason_words(code), n) for code, n in suppressed],
        suppressed_total=sum(found.suppressed.values()),
    )


@guarded
async def publish(request: Request) -> Response:
    """POST (from the dry run's page): publish; an adverse version's notices are queued
    after the answer, and the list shows them as they are."""
    await need(request, "admin")
    gw = gateway(request)
    version, text, adverse = await _proposal(request)
    report = await gw.policies.publish(version, text, adverse, send_notices=False)
    await audit_change(request, "policies.publish", f"policy:{report.version}")
    if not adverse:
        return RedirectResponse("/admin/policies?done=published", status_code=303)
    return RedirectResponse(
        "/admin/policies?done=notifying",
        status_code=303,
        background=BackgroundTask(gw.policies.notify, report.version),
    )


@guarded
async def notify(request: Request) -> Response:
    """POST: queue the notices of an adverse version not sent yet (after an interruption)."""
    await need(request, "admin")
    gw = gateway(request)
    version = request.path_params["version"]
    policy = await gw.policies.get(version)
    if not policy["adverse"]:
        raise Refused(409, f"policy version {version} is not adverse: nobody is notified")
    await audit_change(request, "policies.notify", f"policy:{version}")
    return RedirectResponse(
        "/admin/policies?done=notifying",
        status_code=303,
        background=BackgroundTask(gw.policies.notify, version),
    )


routes: list[BaseRoute] = [
    Route("/policies", policies, methods=["GET"]),
    Route("/policies/dry-run", dry_run, methods=["POST"]),
    Route("/policies/publish", publish, methods=["POST"]),
    Route("/policies/{version:str}/notify", notify, methods=["POST"]),
]
