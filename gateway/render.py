"""Rendering: sandboxed jinja2 templates, mail layouts with the AD-2 footer, headers, bytes."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import jinja2
from inscriptis import get_text
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from markupsafe import Markup
from selectolax.lexbor import LexborHTMLParser

from . import content, mime
from .config import Settings
from .content import Finding
from .errors import TemplateError
from .records import Contact, Topic
from .resources import TEMPLATES
from .tokens import Signer

# Headers the gateway writes itself; a caller may not supply them. List-* headers from a
# caller are dropped instead (LU-1): only ours go out.
RESERVED = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "sender",
        "content-type",
        "content-transfer-encoding",
        "return-path",
        "dkim-signature",
    }
)
# Headers a caller's message loses, like a caller's List-* headers: read-receipt requests
# would make the recipient's client report when they opened the mail (a tracker).
DROPPED = frozenset({"disposition-notification-to", "return-receipt-to", "x-confirm-reading-to"})


# A caller's HTML that is a whole document rather than a fragment.
_DOCUMENT = re.compile(r"<!doctype|<html[\s>]|<body[\s>]|</body\s*>")


def html_to_text(html: str) -> str:
    """The text part made from an HTML body: every link keeps its address, written after the
    link's words ("privacy policy (https://…)"), so a text-only reader can still follow it."""
    if not html.strip():
        return "\n"
    tree = LexborHTMLParser(html)
    for link in tree.css("a[href], area[href]"):
        href = (link.attributes.get("href") or "").strip()
        if not href.lower().startswith(("http://", "https://", "mailto:")):
            continue  # "#top", relative and script links lead nowhere a reader can go
        shown = href[7:] if href.lower().startswith("mailto:") else href
        if link.text(deep=True).strip() != shown:
            link.insert_after(f" ({shown})")
    return get_text(tree.html or "").strip() + "\n"


class OutOfTime(TemplateError):
    """Raised inside a render that passed its deadline (see `Renderer.render`)."""


_clock = threading.local()  # .deadline: time.monotonic() by which this thread's render ends


def _check_clock() -> None:
    deadline = getattr(_clock, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise OutOfTime("the deadline passed")


class _Clock(Extension):
    """Every `{% for %}` of a template iterates through `iterate`, so a loop that makes no
    call and writes nothing still stops at the deadline."""

    def iterate(self, iterable: Any) -> Any:
        for i, item in enumerate(iterable):
            if not i & 255:
                _check_clock()
            yield item


class TimedEnvironment(SandboxedEnvironment):
    """The sandbox, stopped at the deadline of the render running in this thread: every
    call, attribute and item lookup and loop checks the clock, and `*` and `**` cannot make
    a value too large to compute in time."""

    intercepted_binops = frozenset({"*", "**"})
    MAX_PRODUCT = 10_000_000  # items of a str or list made by `*`
    MAX_EXPONENT = 10_000

    def __init__(self, **options: Any) -> None:
        super().__init__(extensions=[_Clock], **options)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            iterate = nodes.ExtensionAttribute(_Clock.identifier, "iterate")
            loop.iter = nodes.Call(iterate, [loop.iter], [], None, None)
        return tree

    def call(__self, __context: Any, __obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _check_clock()
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _check_clock()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _check_clock()
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_clock()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int):
                    if len(seq) * n > self.MAX_PRODUCT:
                        raise SecurityError(
                            f"a value of more than {self.MAX_PRODUCT} items is not allowed"
                        )
        elif operator == "**" and isinstance(right, int) and abs(right) > self.MAX_EXPONENT:
            raise SecurityError(f"an exponent above {self.MAX_EXPONENT} is not allowed")
        return super().call_binop(context, operator, left, right)


class Attributes(dict[str, str]):
    """A contact's attributes in templates: one a contact never gave renders empty, so a
    campaign can greet by city without failing for those who gave none."""

    def __missing__(self, key: str) -> str:
        return ""


@dataclass(frozen=True, slots=True)
class Draft:
    """A validated request to send one message; subject and bodies are templates."""

    to: str
    subject: str
    html: str | None
    text: str | None
    category: str
    topic: Topic | None = None
    headers: tuple[tuple[str, str], ...] = ()
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rendered:
    message_id: str
    subject: str
    raw: bytes
    findings: tuple[content.Finding, ...]


class Renderer:
    def __init__(self, settings: Settings, signer: Signer, templates: Path = TEMPLATES) -> None:
        self.settings = settings
        self.signer = signer
        # Autoescaped HTML; subject and text are not HTML, so they are not escaped.
        # Layouts are read once: no stat() of the template files on every message.
        self.html_env = TimedEnvironment(
            auto_reload=False,
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            loader=jinja2.FileSystemLoader(templates / "mail"),
            keep_trailing_newline=True,  # a customer's document is kept to its last byte
        )
        self.text_env = TimedEnvironment(
            auto_reload=False,
            autoescape=False,
            undefined=jinja2.StrictUndefined,
            loader=jinja2.FileSystemLoader(templates / "mail"),
            keep_trailing_newline=True,
        )
        self._compiled: dict[tuple[bool, str], jinja2.Template] = {}
        self._chrome: dict[tuple[str, bool, bool], tuple[content.Finding, ...]] = {}
        self._mail_texts: dict[tuple[str, str], str] = {}
        self._templates = templates
        self._sender = {
            "name": settings.sender_name,
            "email": settings.from_address,
            "phone": settings.sender_phone,
            "postal_address": settings.sender_postal_address,
            "website": settings.sender_website,
        }
        self._from = mime.format_address(settings.from_name, settings.from_address)

    def _template(self, source: str, html: bool, what: str) -> jinja2.Template:
        # A campaign renders one template for many recipients: compile it once.
        key = (html, source)
        template = self._compiled.get(key)
        if template is None:
            try:
                template = (self.html_env if html else self.text_env).from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(f"{what} template, line {exc.lineno}: {exc.message}") from None
            if len(self._compiled) > 256:
                self._compiled.clear()
            self._compiled[key] = template
        return template

    def _render(self, source: str, html: bool, what: str, ctx: Mapping[str, Any]) -> str:
        template = self._template(source, html, what)
        try:
            # Chunk by chunk, so a template that writes without end stops at the deadline.
            chunks = []
            for i, chunk in enumerate(template.generate(ctx)):
                chunks.append(chunk)
                if not i & 63:
                    _check_clock()
            return "".join(chunks)
        except OutOfTime:
            raise
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{what} template: {exc}") from None
        except Exception as exc:  # errors raised inside template code (e.g. division by zero)
            raise TemplateError(f"{what} template: {type(exc).__name__}: {exc}") from None

    def links(self, contact: Contact | None, topic: Topic | None) -> dict[str, str]:
        if contact is None:
            return {"unsubscribe_url": "", "preferences_url": ""}
        base = self.settings.base_url
        return {
            "unsubscribe_url": f"{base}/unsubscribe/"
            + self.signer.sign("unsubscribe", [contact.uid, topic.slug if topic else None]),
            "preferences_url": f"{base}/preferences/"
            + self.signer.sign("preferences", contact.uid),
        }

    def render(
        self,
        draft: Draft,
        contact: Contact | None,
        attributes: Mapping[str, str] | None = None,
        *,
        message_id: str | None = None,
        deadline: float | None = None,
    ) -> Rendered:
        """The message as bytes, scanned. With a `deadline` (a `time.monotonic()` value) a
        render still running then stops with `OutOfTime`; the caller runs it in a thread of
        its own (a render holds no lock and shares only caches)."""
        previous = getattr(_clock, "deadline", None)
        _clock.deadline = deadline
        try:
            return self._render_message(draft, contact, attributes, message_id)
        finally:
            _clock.deadline = previous

    def _render_message(
        self,
        draft: Draft,
        contact: Contact | None,
        attributes: Mapping[str, str] | None,
        message_id: str | None,
    ) -> Rendered:
        settings = self.settings
        marketing = draft.category == "marketing"
        lang = contact.language if contact else settings.default_language
        links = self.links(contact, draft.topic)
        ctx: dict[str, Any] = {
            **draft.context,
            "contact": {
                "name": (contact.name if contact else None) or "",
                "email": draft.to,
                "language": lang,
                "attributes": Attributes(attributes or {}),
            },
            **links,
        }
        subject = self._render(draft.subject, False, "subject", ctx).strip()
        mime.check_header("Subject", subject)  # an attribute must not smuggle a line break in
        if marketing and settings.ad_label and not subject.startswith(settings.ad_label):
            subject = f"{settings.ad_label} {subject}"  # AD-1

        html = self._render(draft.html, True, "html", ctx) if draft.html else None
        if draft.text:
            text = self._render(draft.text, False, "text", ctx)
        else:
            text = html_to_text(html or "")
        # TP-3: what this recipient's data went into is scanned for every message. The
        # layout and footer around it are the same for everyone but the signed token in
        # our own links, so they are scanned once per language (see _chrome_findings).
        findings = tuple(
            content.scan(
                html, text, settings.first_party_domains, link_domains=settings.link_domains
            )
        )
        findings += self._chrome_findings(lang, marketing, html is not None)

        footer_ctx = {"sender": self._sender, "refusal_address": settings.refusal_address, **links}
        if marketing:
            footer_text = self.text_env.get_template(f"{lang}/footer.txt").render(footer_ctx)
            text = text.rstrip("\n") + "\n" + footer_text
        if html is not None:
            footer = (
                Markup(self.html_env.get_template(f"{lang}/footer.html").render(footer_ctx))
                if marketing
                else ""
            )
            html = self._layout(html, footer, lang, subject)

        message_id = message_id or self.new_message_id()
        headers = [
            ("From", self._from),
            ("To", draft.to),
            ("Subject", mime.encode_text(subject)),
            ("Date", formatdate(usegmt=True)),
            ("Message-ID", message_id),
        ]
        if marketing and contact is not None and draft.topic is not None:
            headers += self._list_headers(links["unsubscribe_url"], draft.topic)
        headers += draft.headers
        return Rendered(message_id, subject, mime.build(headers, text, html), findings)

    def mail_text(self, lang: str, kind: str) -> str:
        """The source of one of the gateway's own text mails (templates/mail/LANG/KIND.txt),
        read once."""
        key = (lang, kind)
        if key not in self._mail_texts:
            path = self._templates / "mail" / lang / f"{kind}.txt"
            self._mail_texts[key] = path.read_text(encoding="utf-8")
        return self._mail_texts[key]

    def new_message_id(self) -> str:
        return f"<{uuid.uuid4().hex}@{self.settings.from_domain}>"

    def _chrome_findings(
        self, lang: str, marketing: bool, html: bool
    ) -> tuple[content.Finding, ...]:
        """The scan of the gateway's own layout and footer, once per language and kind,
        with sample links (their host is GATEWAY_BASE_URL's, whatever the token)."""
        key = (lang, marketing, html)
        found = self._chrome.get(key)
        if found is None:
            links = {
                "unsubscribe_url": f"{self.settings.base_url}/unsubscribe/sample",
                "preferences_url": f"{self.settings.base_url}/preferences/sample",
            }
            footer_ctx = {
                "sender": self._sender,
                "refusal_address": self.settings.refusal_address,
                **links,
            }
            text = ""
            page = None
            if marketing:
                text = self.text_env.get_template(f"{lang}/footer.txt").render(footer_ctx)
            if html:
                footer = (
                    Markup(self.html_env.get_template(f"{lang}/footer.html").render(footer_ctx))
                    if marketing
                    else ""
                )
                page = self._layout("", footer, lang, "")
            # The footer is the gateway's, filled from the operator's settings: a finding
            # there (a third-party GATEWAY_SENDER_WEBSITE) is a setting to fix, and says so.
            found = tuple(
                Finding(f.url, f.host, f"the gateway's footer ({f.where})", f.reason)
                for f in content.scan(
                    page,
                    text,
                    self.settings.first_party_domains,
                    link_domains=self.settings.link_domains,
                )
            )
            self._chrome[key] = found
        return found

    def _layout(self, body: str, footer: str, lang: str, subject: str) -> str:
        # A complete document from the caller is kept byte for byte; the footer goes in just
        # before its </body> (or, where the end tag is left out, its </html>, or the end),
        # so it lands inside the body. A fragment is placed in our layout. The pieces are
        # joined as plain str: str + Markup would escape the caller's document.
        lower = body.lower()
        if _DOCUMENT.search(lower):
            end = lower.rfind("</body")
            if end < 0:
                end = lower.rfind("</html")
            if end < 0:
                end = len(body)
            return str(body[:end]) + str(footer) + str(body[end:])
        return self.html_env.get_template("layout.html").render(
            lang=lang, subject=subject, body=Markup(body), footer=footer
        )

    def _list_headers(self, unsubscribe_url: str, topic: Topic) -> list[tuple[str, str]]:
        token = unsubscribe_url.rsplit("/", 1)[1]
        mailto = f"mailto:{self.settings.refusal_address}?subject=unsubscribe%20{token}"
        return [
            ("List-Unsubscribe", f"<{unsubscribe_url}>,\r\n <{mailto}>"),  # LU-2
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),  # LU-3
            (
                "List-Id",
                f"{mime.encode_text(topic.name)} <{topic.slug}.{self.settings.from_domain}>",
            ),
        ]
