"""Consent at sign-up (AD-4, PD-1) and the privacy policy page (promise 10).

`POST /subscribe` is a form a business can embed on its own site (a post from any other site
is refused); `GET /subscribe` is our own page with it. Topics are never pre-ticked. Every
topic waits for the link mailed to the person: `GET /confirm/subscribe/{token}` shows a
button, `POST` confirms. The form is answered before anything is looked up, so neither the
answer nor its timing tells whether an address is known.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..catalog import local_time
from ..content import is_first_party
from ..core import Gateway
from ..errors import InvalidInput, NotFound
from ..i18n import LANGUAGES, gettext
from ..signup import SignupRequest
from .pages import SAFE_METHODS, RateLimit, client_ip, lang_of, page, read_form, too_many


def _limits(request: Request) -> dict[str, RateLimit]:
    """Per address and per client, like /manage: a form anyone can post must not become a
    way to flood someone's inbox with confirmation emails."""
    state = request.app.state
    limits: dict[str, RateLimit] | None = getattr(state, "subscribe_limits", None)
    if limits is None:
        limits = {
            "address": RateLimit(limit=3, window=3600),
            "client": RateLimit(limit=30, window=3600),
        }
        state.subscribe_limits = limits
    return limits


log = logging.getLogger("gateway.web.subscribe")


def foreign_origin(request: Request) -> str | None:
    """The host of the site a POST came from when that is not a first-party one (the base
    URL's host, GATEWAY_FIRST_PARTY_DOMAINS and their subdomains), else None. A browser
    sends Origin (or at least Referer) with a cross-site form; a post with neither (a
    client without JavaScript's help, curl) is let through."""
    gw: Gateway = request.app.state.gateway
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return None
    try:
        host = urlsplit(source.strip()).hostname or ""
    except ValueError:
        host = ""
    domains = (*gw.settings.first_party_domains, gw.settings.base_host)
    if host and is_first_party(host, domains):
        return None
    return host or source.strip()[:100] or "?"


async def _sign_up_later(gw: Gateway, signup: SignupRequest, ip: str | None) -> None:
    try:
        await gw.signups.sign_up(signup, ip=ip)
    except Exception:  # the answer has gone: a failure is for the operator's log
        log.exception("a sign-up could not be processed")


async def _form_page(request: Request, lang: str, *, status: int = 200, **ctx: Any) -> Response:
    gw: Gateway = request.app.state.gateway
    return page(
        request,
        "subscribe.html",
        lang,
        "Sign up for our email",
        status=status,
        topics=await gw.store.all_topics(),
        policy_version=await gw.consent.policy_version(),
        **ctx,
    )


async def subscribe(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    lang = lang_of(request)
    if request.method in SAFE_METHODS:
        return await _form_page(request, lang)
    foreign = foreign_origin(request)
    if foreign is not None:
        return page(
            request,
            "message.html",
            lang,
            "This form cannot be sent from another website",
            status=403,
            paragraphs=[
                gettext(
                    lang,
                    "The sign-up form was sent from %(host)s, which is not %(sender)s's own"
                    " website; nothing was changed. Please sign up on our own page.",
                    host=foreign,
                    sender=gw.settings.sender_name,
                )
            ],
            link={
                "href": f"/subscribe?lang={lang}",
                "text": gettext(lang, "Sign up for our email"),
            },
        )
    form = await read_form(request)
    limits = _limits(request)
    if not limits["client"].allow(client_ip(request) or "?"):
        return too_many(request, lang)
    email = str(form.get("email") or "")
    name = str(form.get("name") or "")
    language = form.get("language")
    try:
        signup = await gw.signups.validate(
            email,
            name,
            language if isinstance(language, str) else None,
            [str(v) for v in form.getlist("topic")],
        )
    except InvalidInput as exc:
        # Nothing is written; the form comes back with the reason (and no box ticked).
        error = f"{gettext(lang, 'This form could not be used; nothing was changed.')} ({exc})"
        return await _form_page(
            request, lang, status=400, error=error, email=email[:320], name=name[:200]
        )
    # Known and unknown addresses count alike, so a 429 tells nothing either.
    if not limits["address"].allow(signup.email):
        return too_many(request, lang)
    # The same answer whether or not the address is known or a confirmation is sent, and at
    # the same moment: the lookup and the mail happen after the answer has gone.
    answer_lang = signup.language or lang
    response = page(
        request,
        "message.html",
        answer_lang,
        "Thank you for signing up",
        paragraphs=[
            gettext(answer_lang, "We have recorded your request."),
            gettext(
                answer_lang,
                "If this address can receive our email, a confirmation link has just been sent"
                " to it: the emails start only when you press the button on that link's page"
                " (it works for 7 days). If you do not see it, look in your spam folder.",
            ),
        ],
    )
    response.background = BackgroundTask(_sign_up_later, gw, signup, client_ip(request))
    return response


async def confirm_subscription(request: Request) -> Response:
    """GET shows a button (mail scanners prefetch links); POST starts the subscriptions."""
    gw: Gateway = request.app.state.gateway
    pending = await gw.signups.pending(request.path_params["token"])
    lang = lang_of(request, pending.contact) if pending.contact else pending.language
    if request.query_params.get("lang") in LANGUAGES:
        lang = request.query_params["lang"]
    if request.method in SAFE_METHODS:
        topics = ", ".join(topic.name for topic in pending.topics)
        sender = gw.settings.sender_name
        body = (
            gettext(
                lang,
                "Press the button to start receiving email from %(sender)s about: %(topics)s.",
                sender=sender,
                topics=topics,
            )
            if topics
            else gettext(
                lang,
                "Press the button to receive promotional email from %(sender)s again.",
                sender=sender,
            )
        )
        return page(
            request,
            "confirm.html",
            lang,
            "Confirm your subscription",
            body=body,
            button=gettext(lang, "Confirm my subscription"),
            action=request.url.path,
            danger=False,
        )
    await read_form(request)
    changed = await gw.signups.confirm(pending, ip=client_ip(request))
    paragraphs = [
        gettext(
            lang,
            "Thank you. You can change your choices or refuse at any time with the link at the"
            " end of every email.",
        )
    ]
    if not changed:
        paragraphs.append(
            gettext(lang, "This subscription was already confirmed; nothing changed.")
        )
    return page(
        request, "message.html", lang, "Your subscription is confirmed", paragraphs=paragraphs
    )


async def policy(request: Request) -> Response:
    """The privacy policy: the current version, or `?version=` one published earlier."""
    gw: Gateway = request.app.state.gateway
    lang = lang_of(request)
    version = request.query_params.get("version")
    if version:
        try:
            current: dict[str, Any] | None = await gw.policies.get(version)
        except NotFound:
            raise HTTPException(404, gettext(lang, "Page not found")) from None
    else:
        current = await gw.policies.current()
    if current is None:
        return page(
            request,
            "policy.html",
            lang,
            "Privacy policy",
            policy=None,
            version=gw.settings.policy_version,
        )
    paragraphs = [
        block.splitlines() for block in current["text"].replace("\r\n", "\n").split("\n\n")
    ]
    return page(
        request,
        "policy.html",
        lang,
        "Privacy policy",
        policy=current,
        when=local_time(current["published_at"], lang),
        paragraphs=[p for p in paragraphs if p],
    )
