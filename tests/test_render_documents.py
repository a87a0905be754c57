"""What a customer's HTML becomes: whole documents kept as written, the gateway's own links
always first party, and a text part a reader can follow (issue: tried as a new user would)."""

from __future__ import annotations

import email
import email.policy

from smtp_server import RecordingSMTPServer

from gateway import Gateway

DOCUMENT = (
    "<!DOCTYPE html>\n"
    '<html lang="vi" xmlns:v="urn:schemas-microsoft-com:vml">\n'
    '<head><meta charset="utf-8"><title>Tin th\u00e1ng 12</title>\n'
    "<style>td { padding: 0 } a[x-apple-data-detectors] { color: inherit }</style>\n"
    "<!--[if mso]><xml><o:OfficeDocumentSettings><o:PixelsPerInch>96</o:PixelsPerInch>"
    "</o:OfficeDocumentSettings></xml><![endif]-->\n"
    "</head>\n"
    '<body style="margin:0" background="https://first.vn/bg.png">\n'
    '<table role="presentation"><tr><td><img src="https://first.vn/logo.png" alt="An" '
    'srcset="https://first.vn/logo@2x.png 2x">\n'
    "<p>Xin ch\u00e0o &amp; ch\u00fac m\u1eebng</p></td></tr></table>\n"
    "</body>\n"
    "</html>\n"
)


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


async def deliver_one(gw: Gateway, smtp: RecordingSMTPServer, html: str) -> tuple[str, str]:
    await gw.add_contact("an@example.vn", name="An", subscribe=["news"])
    result = await gw.send(
        "an@example.vn", "Tin th\u00e1ng 12", html, category="marketing", topic="news"
    )
    assert result.status == "queued", result.reason
    await gw.deliver(until_idle=True)
    msg = parse(smtp.messages[-1].data)
    html_part = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text_part = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    # Mail has CRLF line ends on the wire; the customer wrote LF.
    return html_part.replace("\r\n", "\n"), text_part.replace("\r\n", "\n")


async def test_a_whole_document_arrives_byte_for_byte_with_the_footer_inside_its_body(
    gw: Gateway, smtp: RecordingSMTPServer
):
    html, _ = await deliver_one(gw, smtp, DOCUMENT)
    assert "&lt;" not in html  # the customer's markup is not escaped into text
    end = DOCUMENT.rfind("</body>")
    assert html.startswith(DOCUMENT[:end])
    assert html.endswith(DOCUMENT[end:])
    footer = html[end : len(html) - len(DOCUMENT[end:])]
    assert "/unsubscribe/" in footer and "/preferences/" in footer  # AD-2, inside <body>
    assert html.count("<body") == 1 and html.count("</html>") == 1


async def test_a_document_without_an_end_tag_for_body_gets_the_footer_before_html_end(
    gw: Gateway, smtp: RecordingSMTPServer
):
    doc = "<!doctype html><html><body><p>Ch\u00e0o</p></html>"
    html, _ = await deliver_one(gw, smtp, doc)
    assert html.startswith("<!doctype html><html><body><p>Ch\u00e0o</p>")
    assert html.endswith("</html>") and "/unsubscribe/" in html
    assert "&lt;" not in html


async def test_tp5_first_party_list_never_blocks_the_gateways_own_links(
    env: dict[str, str], smtp: RecordingSMTPServer
):
    # The base URL's host (mail.first.vn) is not in the list, nor under a listed domain.
    env.update(
        GATEWAY_SMTP_URL=smtp.url,
        GATEWAY_BASE_URL="https://prefs.mailer.example",
        GATEWAY_FIRST_PARTY_DOMAINS="first.vn",
    )
    async with Gateway.from_env(env) as gw:
        await gw.add_topic("news", "Tin t\u1ee9c")
        await gw.add_contact("an@example.vn", name="An", subscribe=["news"])
        result = await gw.send("an@example.vn", "Tin", DOCUMENT, category="marketing", topic="news")
        assert result.status == "queued", result.reason
        assert gw.settings.first_party_domains[-1] == "prefs.mailer.example"
        await gw.deliver(until_idle=True)
    assert b"https://prefs.mailer.example/unsubscribe/" in smtp.messages[0].data


async def test_tp5_an_ip_base_url_is_first_party_beside_the_list(
    env: dict[str, str], smtp: RecordingSMTPServer
):
    env.update(
        GATEWAY_SMTP_URL=smtp.url,
        GATEWAY_BASE_URL="http://127.0.0.1:8000",
        GATEWAY_FIRST_PARTY_DOMAINS="first.vn",
    )
    async with Gateway.from_env(env) as gw:
        await gw.add_topic("news", "Tin t\u1ee9c")
        await gw.add_contact("an@example.vn", name="An", subscribe=["news"])
        result = await gw.send(
            "an@example.vn", "Tin", "<p>Ch\u00e0o</p>", category="marketing", topic="news"
        )
        assert result.status == "queued", result.reason


async def test_the_text_part_made_from_html_keeps_every_link_address(
    gw: Gateway, smtp: RecordingSMTPServer
):
    html = (
        '<p>Xem <a href="https://first.vn/privacy">ch\u00ednh s\u00e1ch b\u1ea3o m\u1eadt</a>,'
        ' <a href="https://first.vn/sale">https://first.vn/sale</a>,'
        ' <a href="mailto:help@first.vn">h\u1ed7 tr\u1ee3</a>'
        ' v\u00e0 <a href="#top">\u0111\u1ea7u trang</a>.</p>'
    )
    _, text = await deliver_one(gw, smtp, html)
    assert "ch\u00ednh s\u00e1ch b\u1ea3o m\u1eadt (https://first.vn/privacy)" in text
    assert text.count("https://first.vn/sale") == 1  # a link that shows its address: once
    assert "h\u1ed7 tr\u1ee3 (help@first.vn)" in text
    assert "#top" not in text
