"""Published HTML email templates (tests/corpus, none written here) sent end to end.

Each template is a whole document with the markup real senders use: Outlook conditional
comments, VML, <style> in <head>, web fonts, background images. Sent as marketing, it must
reach the SMTP server as written, with only the footer added just before its </body> (TP-1:
the gateway never strips or rewrites a customer's markup)."""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from selectolax.lexbor import LexborHTMLParser
from smtp_server import RecordingSMTPServer

from gateway import Gateway

CORPUS = Path(__file__).parent / "corpus"
TEMPLATES = sorted((CORPUS / "templates").glob("*.html"))
SUBJECT = "Bản tin tháng 12"

# What a mail client never loads or follows, so its hosts need not be first party (TP-1):
# the DOCTYPE, plain HTML comments (not <!--[if mso]> ones, which Outlook reads), CSS
# comments, XML namespaces and microdata types. `<!-->` is a whole (empty) comment.
_NOT_CONTENT = re.compile(
    r"(?is)<!doctype[^>]*>|<!--(?:>|->|(?!\s*\[if).*?-->)|/\*.*?\*/"
    r"|\s(?:xmlns(?::[\w-]+)?|itemtype)\s*=\s*(?:\"[^\"]*\"|'[^']*')"
)
# A host after "//" (with or without a scheme), or a bare www. name a client would autolink.
_HOST = re.compile(
    r"(?i)(?:https?:)?//([a-z0-9-]+(?:\.[a-z0-9-]+)+)|(?<![\w./@-])(www\.[a-z0-9-]+(?:\.[a-z0-9-]+)+)"
)
_URL = re.compile(r"(?i)(?:https?:)?//[^\s\"'()<>]+")
_TAG = re.compile(r"<[^>]+>")


def source(path: Path) -> str:
    """The template as published: bytes decoded, no newline translation."""
    return path.read_bytes().decode("utf-8")


def own_hosts(template: str) -> list[str]:
    """The hosts of the template's own links and assets."""
    found = _HOST.findall(_NOT_CONTENT.sub(" ", template))
    return sorted({(a or b).lower() for a, b in found})


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def first_difference(got: str, want: str) -> str:
    """Where two long strings part, with a little of each around it."""
    at = next(
        (k for k, (x, y) in enumerate(zip(got, want, strict=False)) if x != y),
        min(len(got), len(want)),
    )
    lo = max(at - 40, 0)
    return f"first difference at {at}: got {got[lo : at + 60]!r}, want {want[lo : at + 60]!r}"


@asynccontextmanager
async def gateway(env: dict[str, str], smtp: RecordingSMTPServer, first_party: str):
    env["GATEWAY_SMTP_URL"] = smtp.url
    env["GATEWAY_FIRST_PARTY_DOMAINS"] = first_party
    async with Gateway.from_env(env) as gw:
        await gw.add_topic("news", "Tin tức")
        yield gw


def check_delivered(raw: bytes, template: str) -> None:
    """The delivered message holds the template untouched, with only the footer added
    inside its <body>, and a text part."""
    msg = parse(raw)
    assert str(msg["Subject"]) == f"[QC] {SUBJECT}"
    unsubscribe = re.findall(r"<(https://[^>]+)>", str(msg["List-Unsubscribe"]))[0]
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    # SMTP carries CRLF line ends; the published files have none, so this is the only change
    # the wire itself may make.
    assert "\r" not in template
    html = html.replace("\r\n", "\n")

    i = template.lower().rfind("</body")
    assert i > 0
    assert html.startswith(template[:i]), first_difference(html, template)
    assert html.endswith(template[i:]), f"ends {html[-80:]!r}, want {template[-80:]!r}"
    footer = html[i : len(html) - (len(template) - i)]
    assert html == template[:i] + footer + template[i:]
    # The footer is the gateway's (AD-2) and sits inside <body>: after the last <body ...>
    # start tag, before </body>, and the HTML5 parser sees its links as elements of the body.
    assert unsubscribe in footer and "https://mail.first.vn/preferences/" in footer
    assert "Công ty TNHH An" in footer
    assert template.lower().rfind("<body") < i
    links = LexborHTMLParser(html).css("a[href]")
    unsub = [a for a in links if a.attributes.get("href") == unsubscribe]
    assert unsub, "the footer's unsubscribe link is not an element of the parsed document"
    ancestors = []
    node = unsub[0].parent
    while node is not None:
        ancestors.append(node.tag)
        node = node.parent
    assert "body" in ancestors
    # Nothing was escaped: no "&lt;" the template did not already have.
    assert "&lt;!" not in html
    assert html.count("&lt;") == template.count("&lt;") + footer.count("&lt;")
    # Every tag and every URL of the template is there, exactly as written.
    assert Counter(_TAG.findall(html)) >= Counter(_TAG.findall(template))
    assert Counter(_URL.findall(html)) >= Counter(_URL.findall(template))
    # The text part exists and ends with the footer's opt-out section.
    assert msg.get_content_type() == "multipart/alternative"
    assert unsubscribe in text
    assert text.rstrip().endswith("hoặc gọi +84 28 1234 5678.")


def test_the_corpus_holds_20_published_templates_unmodified_and_listed_in_sources():
    listed = (CORPUS / "SOURCES.md").read_text(encoding="utf-8")
    assert len(TEMPLATES) >= 20
    for path in TEMPLATES:
        row = re.search(rf"^\| `templates/{re.escape(path.name)}` \|.*$", listed, re.M)
        assert row, f"{path.name} is not listed in SOURCES.md"
        data = path.read_bytes()
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        assert f"`{blob}`" in row.group(), f"{path.name} differs from the published file"
        template = source(path)
        assert re.search(r"(?i)<!doctype html", template) and "</body>" in template.lower()
        # Not Jinja: the template is rendered as a sandboxed Jinja template.
        assert not re.search(r"\{[{%#]", template), path.name


def ids(paths: list[Path]) -> Iterator[str]:
    return (p.stem for p in paths)


@pytest.mark.parametrize("path", TEMPLATES, ids=list(ids(TEMPLATES)))
async def test_tp1_published_template_sent_as_marketing_arrives_byte_for_byte_with_the_footer(
    path: Path, env: dict[str, str], smtp: RecordingSMTPServer
):
    """send(category="marketing") of a whole published document to a subscribed contact,
    and a campaign of it to two contacts, each delivered through the real SMTP server."""
    template = source(path)
    first_party = ",".join([*own_hosts(template), "first.vn"])
    async with gateway(env, smtp, first_party) as gw:
        for address in ("an@example.vn", "binh@example.vn"):
            await gw.add_contact(address, name="Nguyễn Văn An", subscribe=["news"])

        result = await gw.send(
            "an@example.vn", SUBJECT, template, category="marketing", topic="news"
        )
        assert result.status == "queued", result.reason
        assert (await gw.deliver(until_idle=True)).sent == 1
        assert [m.rcpt_tos for m in smtp.messages] == [["an@example.vn"]]
        check_delivered(smtp.messages[0].data, template)

        smtp.messages.clear()
        cid = await gw.campaigns.create(
            name="Tháng 12", topic="news", subject=SUBJECT, html=template
        )
        await gw.campaigns.start(cid)
        assert (await gw.deliver(until_idle=True)).sent == 2
        status = await gw.campaigns.status(cid)
        assert (status.counts["sent"], status.counts["blocked"]) == (2, 0)
        assert sorted(m.rcpt_tos[0] for m in smtp.messages) == ["an@example.vn", "binh@example.vn"]
        for message in smtp.messages:
            check_delivered(message.data, template)


async def test_tp5_first_party_domains_set_to_others_never_block_the_gateways_own_links(
    env: dict[str, str], smtp: RecordingSMTPServer
):
    """GATEWAY_FIRST_PARTY_DOMAINS naming only a template's hosts and the sender's website,
    none of which covers GATEWAY_BASE_URL's mail.first.vn: the footer's unsubscribe and
    preference links still pass, and a real finding never names mail.first.vn."""
    template = source(CORPUS / "templates" / "cerberus-hybrid.html")
    env["GATEWAY_SENDER_WEBSITE"] = "https://www.an-shop.vn"  # not under first.vn
    async with gateway(env, smtp, ",".join([*own_hosts(template), "an-shop.vn"])) as gw:
        await gw.add_contact("an@example.vn", name="An", subscribe=["news"])
        result = await gw.send(
            "an@example.vn", SUBJECT, template, category="marketing", topic="news"
        )
        assert result.status == "queued", result.reason
        await gw.deliver(until_idle=True)
        html = parse(smtp.messages[0].data).get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert "https://mail.first.vn/unsubscribe/" in html
        assert "https://mail.first.vn/preferences/" in html
        # A real third-party image still blocks, and the finding names only that image.
        blocked = await gw.send(
            "an@example.vn",
            SUBJECT,
            template.replace("</body>", "<img src='https://cdn.evil.com/p.gif'></body>"),
            category="marketing",
            topic="news",
        )
        assert blocked.status == "blocked"
        assert blocked.blocked_urls == ("https://cdn.evil.com/p.gif",)
        assert "mail.first.vn" not in blocked.reason


@pytest.mark.parametrize("path", TEMPLATES, ids=list(ids(TEMPLATES)))
async def test_tp1_published_template_submitted_over_smtp_arrives_with_only_the_footer_added(
    path: Path, env: dict[str, str], smtp: RecordingSMTPServer, tmp_path: Path
):
    """The same documents as an application builds them (text and HTML alternatives, the
    marketing headers) submitted over SMTP with STARTTLS and a send key: they arrive as the
    application sent them with only the footer added, exactly as through send()."""
    import asyncio
    import smtplib
    from email.message import EmailMessage

    from test_submission import submission_env

    template = source(path)
    certs = submission_env(env, smtp, tmp_path)
    async with gateway(env, smtp, ",".join([*own_hosts(template), "first.vn"])) as gw:
        await gw.add_contact("an@example.vn", name="Nguyễn Văn An", subscribe=["news"])
        key = await gw.create_api_key("shop", "send")
        message = EmailMessage()
        message["From"] = "Cửa hàng An <news@first.vn>"
        message["To"] = "an@example.vn"
        message["Subject"] = SUBJECT
        message["X-Gateway-Category"] = "marketing"
        message["X-Gateway-Topic"] = "news"
        message.set_content("Bản tin tháng 12 của cửa hàng An.")
        message.add_alternative(template, subtype="html")

        def submit(port: int) -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.starttls(context=certs.client_context())
                client.login("shop", key)
                client.mail("news@first.vn")
                client.rcpt("an@example.vn")
                return client.data(message.as_bytes(policy=email.policy.SMTP))

        async with gw.submitting() as where:
            assert where is not None
            code, reply = await asyncio.to_thread(submit, int(where.rpartition(":")[2]))
        assert code == 250, reply
        assert (await gw.deliver(until_idle=True)).sent == 1
        # What the application put in its HTML part: Python's email package ends a text
        # part with a newline when the document has none.
        sent = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert sent in (template, template + "\n")
        check_delivered(smtp.messages[0].data, sent)
