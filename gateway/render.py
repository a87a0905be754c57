"""Rendering: sandboxed jinja2 templates, mail layouts with the AD-2 footer, headers, bytes."""

from __future__ import annotations

import base64
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any, TypeVar

import jinja2
from inscriptis import get_text
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from markupsafe import Markup, escape
from selectolax.lexbor import LexborHTMLParser

from . import content, mime, submitted
from .config import Settings
from .content import Finding
from .errors import TemplateError
from .records import Contact, Topic
from .resources import TEMPLATES
from .submitted import Submitted
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


# An HTML comment, or one left open to the end (which a browser ends there too).
_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)

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


_K = TypeVar("_K")
_V = TypeVar("_V")


class _Kept(dict[_K, _V]):
    """Results kept by their exact input (text parts, scans), forgotten all at once when
    their inputs reach `limit` characters (a few MB however large the messages)."""

    def __init__(self, limit: int = 1_000_000) -> None:
        super().__init__()
        self.limit = limit
        self.size = 0

    def keep(self, key: _K, value: _V, size: int) -> None:
        if self.size + size > self.limit:
            self.clear()
            self.size = 0
        self[key] = value
        self.size += size


_LINK_SLOTS = ("unsubscribe_url", "preferences_url")
_MARK = "\ue000{}\ue001"  # private-use characters: in no template, unchanged by escaping
_MARKS = re.compile("\ue000(\\d+)\ue001")


def _skeleton(
    render: Callable[[list[str]], str], escaped: tuple[bool, ...]
) -> tuple[str, ...] | None:
    """What `render(values)` gives, split at each value's place (literal, index, literal,
    ...), or None when filling it would not give what `render` gives: checked once with
    samples that need escaping, so a template that prints a value anything but once as it
    is (escaped where `escaped` says) is rendered every time."""
    try:
        out = render([_MARK.format(i) for i in range(len(escaped))])
        samples = [f"<b a='{i}'>&\"x{i}" for i in range(len(escaped))]
        expected = render(samples)
    except Exception:
        return None
    parts = tuple(_MARKS.split(out))
    if any("\ue000" in part or "\ue001" in part for part in parts[::2]):
        return None
    return parts if _fill(parts, samples, escaped) == expected else None


def _fill(parts: tuple[str, ...], values: list[str], escaped: tuple[bool, ...]) -> str:
    """A skeleton with each value in its place (one pass: the values are not searched)."""
    out = [parts[0]]
    for i in range(1, len(parts), 2):
        n = int(parts[i])
        out.append(str(escape(values[n])) if escaped[n] else values[n])
        out.append(parts[i + 1])
    return "".join(out)


_date: tuple[int, str] = (0, "")


def _date_now() -> str:
    """The Date header for now, formatted once a second (it has whole seconds)."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True))
    return _date[1]


# Where a recipient's value may stand in a text skeleton: inline and block elements whose
# text html_to_text writes as it is, whatever its length (no table, whose columns are as
# wide as their longest cell, no <pre>, nothing hidden or raw text).
_PLAIN_TAGS = frozenset(
    "html body p div span a b strong i em u s strike small big tt br hr h1 h2 h3 h4 h5 h6"
    " ul ol li blockquote address article aside footer header main nav section figure"
    " figcaption font center sup sub mark abbr cite code q label time ins del img".split()
)
_TAG = re.compile(r"<\s*/?\s*([^\s/>]*)")
_PLAIN_VALUE = re.compile(r"[^\s<>&\"'\ue000-\uf8ff]+(?: [^\s<>&\"'\ue000-\uf8ff]+)*")
_IN_ENTITY = re.compile(r"&(?:#?[0-9A-Za-z]*|amp;|AMP;|#0*38;|#[xX]0*26;)$")
_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);")


def _marked(html: str, values: Sequence[str]) -> tuple[str, list[str]]:
    """`html` with each of `values` that is plain text (no markup character, no space at
    either end or twice in a row, not only ASCII letters and digits, so never a tag,
    attribute or entity name) replaced by a mark wherever it occurs, and the values
    replaced, in mark order. Longest first: a value inside another is replaced after it."""
    plain = {
        v
        for v in values
        if isinstance(v, str)
        and len(v) > 1
        and not (v.isascii() and v.isalnum())
        and _PLAIN_VALUE.fullmatch(v)
    }
    used: list[str] = []
    if "\ue000" in html or "\ue001" in html:
        return html, used  # a mark's characters in the document itself
    for value in sorted(plain, key=len, reverse=True):
        start = html.find(value)
        if start < 0:
            continue
        while start >= 0:
            # An occurrence that ends an entity's name ("&amp" + "; An"): no.
            if _IN_ENTITY.search(html, max(0, start - 32), start):
                return html, []
            start = html.find(value, start + 1)
        html = html.replace(value, _MARK.format(len(used)))
        used.append(value)
    return html, used


def _text_skeleton(marked: str, n: int) -> tuple[str, ...] | None:
    """`html_to_text(marked)` split at its marks, when filling each mark with its value
    gives what html_to_text gives for the HTML with the values: every tag is one whose
    text is written as it is, every mark is in text (an HTML5 parser's text nodes, not an
    attribute or a comment) and comes out once in the text. Else None."""
    if "<!" in marked:  # comments, doctypes, CDATA: not worth the doubt
        return None
    if marked.count("&") != len(_ENTITY.findall(marked)):
        return None  # an & that is not a whole character reference: parsers differ there
    if any(tag.lower() not in _PLAIN_TAGS for tag in _TAG.findall(marked)):
        return None
    root = LexborHTMLParser(marked).root
    in_text = 0
    if root is not None:
        for node in root.traverse(include_text=True):
            if node.tag == "-text":
                data = node.text_content or ""
                if "\ue000" in data and "&" in data:
                    # html_to_text reads its tree's HTML again, where a text's "&" is bare:
                    # followed by a value it could start a character reference.
                    return None
                in_text += data.count("\ue000")
    if in_text != marked.count("\ue000") or in_text == 0:
        return None
    parts = tuple(_MARKS.split(html_to_text(marked)))
    if sorted(parts[1::2]) != sorted(_MARKS.findall(marked)):
        return None  # a mark hidden (display: none) or repeated
    if any("\ue000" in part or "\ue001" in part for part in parts[::2]):
        return None
    return parts if all(int(i) < n for i in parts[1::2]) else None


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
    # A message the application built itself (SMTP submission): sent as it is built, not
    # rendered from templates; subject, html and text above are not used then.
    message: Submitted | None = None


@dataclass(frozen=True, slots=True)
class Rendered:
    message_id: str
    subject: str
    raw: bytes
    findings: tuple[content.Finding, ...]


def with_text_footer(text: str, footer: str) -> str:
    """A text body with the footer after its last line."""
    return text.rstrip("\n") + "\n" + footer


def with_html_footer(html: str, footer: str) -> str:
    """An HTML document kept byte for byte with the footer just before its </body> (or,
    where the end tag is left out, its </html>, or the end), so it lands inside the body.
    Joined as plain str: str + Markup would escape the caller's document."""
    # A "</body>" inside a comment is not the end of the body: look past comments.
    lower = _COMMENT.sub(lambda m: " " * len(m.group()), html.lower())
    end = lower.rfind("</body")
    if end < 0:
        end = lower.rfind("</html")
    if end < 0:
        end = len(html)
    return str(html[:end]) + str(footer) + str(html[end:])


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
        # A campaign renders the same HTML for every recipient whose data it shows is the
        # same (the same first name, or none at all): its text part and its scan are pure
        # functions of the HTML and text, so they are kept for the next such recipient.
        self._texts: _Kept[str, str] = _Kept()
        self._scans: _Kept[tuple[str | None, str | None], tuple[Finding, ...]] = _Kept()
        self._text_skeletons: _Kept[str, tuple[str, ...] | None] = _Kept()
        # The footers and the layout, rendered once with a mark where each recipient's
        # links (or subject, body and footer) go; None where marks cannot stand in for them.
        self._skeletons: dict[tuple[str, ...], tuple[str, ...] | None] = {}
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
        if draft.message is not None:
            return self._render_submitted(draft, draft.message, contact, message_id)
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
        subject = self.labelled(subject, draft.category)

        html = self._render(draft.html, True, "html", ctx) if draft.html else None
        if draft.text:
            text = self._render(draft.text, False, "text", ctx)
        else:
            contact_data = ctx["contact"]
            text = self._text_of(
                html or "",
                [
                    contact_data["name"],
                    draft.to,
                    *contact_data["attributes"].values(),
                    *links.values(),
                    *(v for v in draft.context.values() if isinstance(v, str)),
                ],
            )
        # TP-3: what this recipient's data went into is scanned for every message (the scan
        # of these exact bytes, kept when an earlier recipient's were the same). The layout
        # and footer around it are the same for everyone but the signed token in our own
        # links, so they are scanned once per language (see _chrome_findings).
        findings = self._scan(html, text)
        findings += self._chrome_findings(lang, marketing, html is not None)

        if marketing:
            text = with_text_footer(text, self.footer_text(lang, links))
        if html is not None:
            html = self._layout(
                html, self.footer_html(lang, links) if marketing else "", lang, subject
            )

        message_id = message_id or self.new_message_id()
        headers = self.headers_of(draft, contact, subject, message_id, links)
        headers += draft.headers
        return Rendered(message_id, subject, mime.build(headers, text, html), findings)

    def _render_submitted(
        self,
        draft: Draft,
        message: Submitted,
        contact: Contact | None,
        message_id: str | None,
    ) -> Rendered:
        """A submitted message for one recipient: the application's MIME kept, with what the
        gateway adds to every message of its category (see gateway.submitted)."""
        settings = self.settings
        marketing = draft.category == "marketing"
        lang = contact.language if contact else settings.default_language
        links = self.links(contact, draft.topic)
        subject = self.labelled(draft.subject, draft.category)
        message_id = message_id or self.new_message_id()
        gateway_headers = (
            self.list_headers(links["unsubscribe_url"], draft.topic)
            if marketing and contact is not None and draft.topic is not None
            else []
        )
        html_footer = self.footer_html(lang, links) if marketing else None
        raw = submitted.rewrite(
            message,
            to=draft.to,
            marketing=marketing,
            subject=subject,
            message_id=message_id,
            gateway_headers=gateway_headers,
            text_footer=self.footer_text(lang, links) if marketing else None,
            html_footer=(lambda html: with_html_footer(html, html_footer))
            if html_footer is not None
            else None,
        )
        _check_clock()
        bodies = message.bodies
        # TP-3: every body part the recipient reads is scanned, as for send(); a cid: image
        # is the message's own part, first party.
        findings = tuple(
            content.scan(
                bodies.html,
                bodies.text,
                settings.first_party_domains,
                link_domains=settings.link_domains,
            )
        )
        findings += self._chrome_findings(lang, marketing, bodies.html is not None)
        return Rendered(message_id, subject, raw, findings)

    def footer_text(self, lang: str, links: Mapping[str, str]) -> str:
        """The marketing footer of the text part: who sends, how to refuse (AD-2)."""
        template = self.text_env.get_template(f"{lang}/footer.txt")
        return self._filled(
            ("footer.txt", lang),
            lambda v: template.render(self._footer_ctx(dict(zip(_LINK_SLOTS, v, strict=True)))),
            [links["unsubscribe_url"], links["preferences_url"]],
            (False, False),
        )

    def footer_html(self, lang: str, links: Mapping[str, str]) -> Markup:
        """The marketing footer of the HTML part."""
        template = self.html_env.get_template(f"{lang}/footer.html")
        return Markup(
            self._filled(
                ("footer.html", lang),
                lambda v: template.render(self._footer_ctx(dict(zip(_LINK_SLOTS, v, strict=True)))),
                [links["unsubscribe_url"], links["preferences_url"]],
                (True, True),
            )
        )

    def _text_of(self, html: str, values: Sequence[str] = ()) -> str:
        """`html_to_text(html)`, kept for the next message with the same HTML. For HTML
        that differs from an earlier message's only by the recipient's `values` (a name in
        a paragraph), the earlier text with this recipient's values in their places: see
        _marked and _text_skeleton for when that is exactly what html_to_text gives."""
        text = self._texts.get(html)
        if text is None:
            marked, used = _marked(html, values)
            if used:
                if marked in self._text_skeletons:
                    parts = self._text_skeletons.get(marked)  # (None if cleared meanwhile)
                else:
                    parts = _text_skeleton(marked, len(used))
                    self._text_skeletons.keep(marked, parts, 2 * len(marked))
                if parts is not None:
                    text = _fill(parts, used, (False,) * len(used))
            if text is None:
                text = html_to_text(html)
            self._texts.keep(html, text, len(html) + len(text))
        return text

    def _scan(self, html: str | None, text: str | None) -> tuple[Finding, ...]:
        """`content.scan` of these parts, kept for the next message with the same parts."""
        key = (html, text)
        found = self._scans.get(key)
        if found is None:
            settings = self.settings
            found = tuple(
                content.scan(
                    html, text, settings.first_party_domains, link_domains=settings.link_domains
                )
            )
            self._scans.keep(key, found, len(html or "") + len(text or ""))
        return found

    def _filled(
        self,
        key: tuple[str, ...],
        render: Callable[[list[str]], str],
        values: list[str],
        escaped: tuple[bool, ...],
    ) -> str:
        """`render(values)`, made from a skeleton rendered once per `key` (see _skeleton)."""
        if key not in self._skeletons:
            self._skeletons[key] = _skeleton(render, escaped)
        parts = self._skeletons[key]
        if parts is None:
            return render(values)
        return _fill(parts, values, escaped)

    def _footer_ctx(self, links: Mapping[str, str]) -> dict[str, Any]:
        return {
            "sender": self._sender,
            "refusal_address": self.settings.refusal_address,
            **links,
        }

    def headers_of(
        self,
        draft: Draft,
        contact: Contact | None,
        subject: str,
        message_id: str,
        links: Mapping[str, str],
    ) -> list[tuple[str, str]]:
        """From, To, Subject, Date, Message-ID and, on marketing mail to a contact, the
        List-* headers (one-click refusal)."""
        headers = [
            ("From", self._from),
            ("To", draft.to),
            ("Subject", mime.encode_text(subject)),
            ("Date", _date_now()),
            ("Message-ID", message_id),
        ]
        if draft.category == "marketing" and contact is not None and draft.topic is not None:
            headers += self.list_headers(links["unsubscribe_url"], draft.topic)
        return headers

    def labelled(self, subject: str, category: str) -> str:
        """The subject as sent: advertising mail carries the label (AD-1)."""
        label = self.settings.ad_label
        if category == "marketing" and label and not subject.startswith(label):
            return f"{label} {subject}"
        return subject

    def mail_text(self, lang: str, kind: str) -> str:
        """The source of one of the gateway's own text mails (templates/mail/LANG/KIND.txt),
        read once."""
        key = (lang, kind)
        if key not in self._mail_texts:
            path = self._templates / "mail" / lang / f"{kind}.txt"
            self._mail_texts[key] = path.read_text(encoding="utf-8")
        return self._mail_texts[key]

    def new_message_id(self) -> str:
        # 120 random bits (a version-4 UUID has 122) in 24 base32 characters instead of 32
        # hex ones: the id is stored four times per message (outbox and log, each indexed).
        token = base64.b32encode(secrets.token_bytes(15)).decode("ascii").lower()
        return f"<{token}@{self.settings.from_domain}>"

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
            text = self.footer_text(lang, links) if marketing else ""
            page = None
            if html:
                page = self._layout(
                    "", self.footer_html(lang, links) if marketing else "", lang, ""
                )
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
        if _DOCUMENT.search(body.lower()):
            return with_html_footer(body, footer)
        template = self.html_env.get_template("layout.html")
        if footer and not isinstance(footer, Markup):
            return template.render(lang=lang, subject=subject, body=Markup(body), footer=footer)

        def render(v: list[str]) -> str:
            return template.render(
                lang=lang,
                subject=v[0],
                body=Markup(v[1]),
                footer=Markup(v[2]) if len(v) > 2 else "",
            )

        if footer:  # the subject is escaped, the body and our footer are HTML
            return self._filled(
                ("layout", lang, "footer"), render, [subject, body, footer], (True, False, False)
            )
        return self._filled(("layout", lang), render, [subject, body], (True, False))

    def list_headers(self, unsubscribe_url: str, topic: Topic) -> list[tuple[str, str]]:
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
