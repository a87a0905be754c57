"""The dashboard (issue 13): per-day counts kept by the real paths as things happen, never by
reading the message log; rates, alerts and the backlog; the page under /admin with its
charts as inline SVG and no script."""

from __future__ import annotations

import calendar
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from console_helpers import console_client
from smtp_server import RecordingSMTPServer

from gateway import Gateway
from gateway.stats import dashboard, window
from gateway.store.tally import backfill_sql, utc_day
from gateway.web.app import create_app

BASE = "https://mail.first.vn"
ONE_CLICK = {"content-type": "application/x-www-form-urlencoded"}


def refusing(rcpt: str) -> tuple[int, str] | None:
    """The receiving side: no such user for gone@, a sender-side refusal for strict@."""
    if rcpt.startswith("gone@"):
        return (550, "5.1.1 user unknown")
    if rcpt.startswith("strict@"):
        return (550, "5.7.1 message refused: DMARC policy")
    return None


@pytest.fixture
async def smtp() -> AsyncIterator[RecordingSMTPServer]:
    async with RecordingSMTPServer(reject=refusing) as server:
        yield server


async def counts(gw: Gateway, days: int = 2) -> dict[str, int]:
    """Every metric over yesterday and today (a test may cross midnight, UTC), read from
    daily_counts alone."""
    first, last = window(days, time.time())[0], utc_day(time.time())
    found: dict[str, int] = {}
    for (_, metric), n in (await gw.store.daily_counts(first, last, METRICS)).items():
        found[metric] = found.get(metric, 0) + n
    return found


METRICS = (
    "accepted", "sent", "bounced", "failed", "suppressed", "blocked", "complained", "refused",
    "unsubscribed", "sender_refused",
)  # fmt: skip


async def subscribed(gw: Gateway, *addresses: str) -> None:
    for address in addresses:
        await gw.add_contact(address, subscribe=["news"], source="test")


async def ad(gw: Gateway, to: str) -> str:
    result = await gw.send(to, "Tin mới", text="Xin chào", category="marketing", topic="news")
    return result.status


async def test_counts_follow_accept_and_delivery_as_they_happen(gw: Gateway, smtp):
    await subscribed(gw, "an@example.vn", "gone@example.vn", "strict@example.vn")
    for to in ("an@example.vn", "gone@example.vn", "strict@example.vn"):
        assert await ad(gw, to) == "queued"
    assert await counts(gw) == {"accepted": 3}
    await gw.deliver(until_idle=True)
    # a 5.1.1 is a bounce (and suppresses); a 5.7.1 fails the message and is an alert (BN-2)
    assert await counts(gw) == {"accepted": 3, "sent": 1, "bounced": 1, "failed": 1,
                                "sender_refused": 1}  # fmt: skip
    # accept refuses the bounced address now, and a message that names a third-party host
    assert await ad(gw, "gone@example.vn") == "suppressed"
    blocked = await gw.send("an@example.vn", "Tin", html='<img src="https://evil.example/x.png">')
    assert blocked.status == "blocked"
    found = await counts(gw)
    assert (found["suppressed"], found["blocked"], found["accepted"]) == (1, 1, 3)


async def test_counts_a_complaint_and_a_refusal_by_email(gw: Gateway, smtp):
    from test_feedback import arf  # the same report the feedback tests use

    await subscribed(gw, "angry@example.vn")
    assert await ad(gw, "angry@example.vn") == "queued"
    await gw.deliver(until_idle=True)
    message_id = [m for m in smtp.messages if "angry@example.vn" in m.rcpt_tos][-1].message_id
    await gw.ingest(arf("angry@example.vn", message_id or ""), trusted=True)
    await gw.ingest(arf("angry@example.vn", message_id or ""), trusted=True)  # the same again
    found = await counts(gw)
    assert (found.get("complained"), found.get("refused")) == (1, None)


async def test_one_click_refusal_through_the_web_route_is_counted_once(gw: Gateway, smtp):
    contact, _, _ = await gw.add_contact("an@example.vn", subscribe=["news"], source="test")
    url = gw.renderer.links(contact, await gw.accepter.topic("news"))["unsubscribe_url"]
    app = create_app(gw, worker=False)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as web:
        for _ in range(2):  # OC-2: the second changes nothing, so it counts nothing
            answer = await web.post(url[len(BASE) :], content=b"List-Unsubscribe=One-Click",
                                    headers=ONE_CLICK)  # fmt: skip
            assert answer.status_code == 200
    found = await counts(gw)
    # the refusal, and its one confirmation mail accepted (ST-2)
    assert (found.get("refused"), found.get("accepted")) == (1, 1)


async def test_a_topic_opt_out_on_the_preference_page_counts_as_unsubscribed(gw: Gateway):
    contact, _, _ = await gw.add_contact("an@example.vn", subscribe=["news", "deals"], source="t")
    await gw.preferences.update(contact, topics={"deals"}, stop_all=False, language=None)
    assert await counts(gw) == {"unsubscribed": 1}


async def test_a_rolled_back_transaction_counts_nothing(gw: Gateway):
    with pytest.raises(RuntimeError):
        async with gw.store.transaction():
            await gw.store.tally([(time.time(), "sent")])
            raise RuntimeError("changed my mind")
    assert await counts(gw) == {}
    await gw.store.tally([(time.time(), "sent"), (time.time() - 3 * 86400, "sent")])  # outside one
    assert await counts(gw) == {"sent": 1} and await counts(gw, days=4) == {"sent": 2}


async def test_the_upgrade_to_version_5_counts_what_the_database_already_holds(gw: Gateway, smtp):
    """A database made before the per-day counts gets them from its log, suppressions,
    bounce reports and subscriptions: the same numbers the live counting gave."""
    from test_feedback import arf

    await subscribed(gw, "an@example.vn", "gone@example.vn", "strict@example.vn", "angry@ex.vn")
    for to in ("an@example.vn", "gone@example.vn", "strict@example.vn", "angry@ex.vn"):
        assert await ad(gw, to) == "queued"
    await gw.deliver(until_idle=True)
    message_id = [m for m in smtp.messages if "angry@ex.vn" in m.rcpt_tos][-1].message_id
    await gw.ingest(arf("angry@ex.vn", message_id or ""), trusted=True)
    an = await gw.store.get_contact("an@example.vn")
    assert an is not None
    await gw.preferences.refuse(an, source="link")
    await gw.preferences.update(an, topics=set(), stop_all=True, language=None)
    assert await ad(gw, "gone@example.vn") == "suppressed"
    everything = ("day, metric, n", "daily_counts ORDER BY day, metric")
    live = await gw.store.rows(f"SELECT {everything[0]} FROM {everything[1]}")
    assert {m for _, m, _ in live} >= {"sent", "bounced", "failed", "complained", "refused",
                                       "unsubscribed", "sender_refused", "suppressed"}  # fmt: skip
    await gw.store.run("DELETE FROM daily_counts")
    await gw.store.run(backfill_sql("sqlite" if gw.store.is_sqlite else "postgresql"))
    assert await gw.store.rows(f"SELECT {everything[0]} FROM {everything[1]}") == live
    await gw.store.run(backfill_sql("sqlite" if gw.store.is_sqlite else "postgresql"))
    assert await gw.store.rows(f"SELECT {everything[0]} FROM {everything[1]}") == live  # once


# -- the figures ---------------------------------------------------------------------------------


async def put(gw: Gateway, day: str, **metrics: int) -> None:
    for metric, n in metrics.items():
        when = calendar.timegm(time.strptime(day + " 12", "%Y-%m-%d %H"))  # noon, UTC
        await gw.store.tally([(when, metric)] * n)


async def test_dashboard_series_rates_and_thresholds(gw: Gateway):
    now = time.time()
    days = window(30, now)
    await put(gw, days[0], sent=1000, bounced=10, complained=1, refused=3)
    await put(gw, days[-1], sent=500, bounced=5, complained=4)
    await put(gw, window(31, now)[0], sent=99999)  # the day before the window: left out
    board = await dashboard(gw, days=30, now=now)
    assert board.days == days and len(board.series["sent"]) == 30
    assert board.series["sent"][0] == 1000 and board.series["sent"][-1] == 500
    assert board.totals["sent"] == 1500 and board.totals["refused"] == 3
    assert board.bounce_rate == pytest.approx(15 / 1515)
    assert board.complaint_rate == pytest.approx(5 / 1500)  # 0.33%: above Gmail's 0.3%
    assert [(a.kind, a.level) for a in board.alerts] == [("complaint_rate", "error")]
    assert board.alerts_24h == 0 and board.backlog is not None and board.backlog.queued == 0


async def test_dashboard_warns_of_bounces_and_of_complaints_between_the_lines(gw: Gateway):
    now = time.time()
    await put(gw, window(1, now)[0], sent=1000, bounced=30, complained=2)
    board = await dashboard(gw, days=7, now=now)
    assert [(a.kind, a.level) for a in board.alerts] == [
        ("complaint_rate", "warning"),
        ("bounce_rate", "warning"),
    ]


async def test_dashboard_backlog_counts_waiting_mail_and_its_age(gw: Gateway, smtp):
    await subscribed(gw, "an@example.vn", "binh@example.vn")
    for to in ("an@example.vn", "binh@example.vn"):
        assert await ad(gw, to) == "queued"
    board = await dashboard(gw, now=time.time() + 120)
    assert board.backlog is not None
    assert (board.backlog.queued, board.backlog.due, board.backlog.sending) == (2, 2, 0)
    assert board.backlog.oldest_age is not None and 119 <= board.backlog.oldest_age < 200
    await gw.deliver(until_idle=True)
    empty = await dashboard(gw)
    assert empty.backlog is not None and empty.backlog.queued == 0
    assert empty.backlog.oldest_age is None and empty.totals["sent"] == 2


# -- the page ------------------------------------------------------------------------------------


async def test_the_dashboard_page_shows_charts_alerts_and_backlog_without_any_script(
    gw: Gateway, smtp
):
    """CO-3: the charts are inline SVG drawn on the server: no script, nothing loaded from
    another origin, each chart a labelled image with its numbers in a table."""
    await subscribed(gw, "an@example.vn", "strict@example.vn")
    for to in ("an@example.vn", "strict@example.vn"):
        assert await ad(gw, to) == "queued"
    await gw.deliver(until_idle=True)  # one sent, one 5.7.1: an alert
    assert await ad(gw, "an@example.vn") == "queued"  # one waiting in the outbox
    async with console_client(gw, "viewer") as web:
        page = await web.get("/admin")
        chosen = await web.post_form("/admin/language", {"language": "en", "next": "/admin"})
        english = await web.get("/admin?days=7")
    assert page.status_code == 200, page.text
    html = page.text
    assert "<script" not in html.lower() and "javascript:" not in html.lower()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert html.count("<svg") == 4 and html.count('role="img"') == 4
    for metric in ("sent", "bounced", "complained", "refused"):
        assert f'aria-labelledby="chart-{metric}-title chart-{metric}-desc"' in html
        assert f'<title id="chart-{metric}-title">' in html
    assert html.count("<rect") == 1  # one day with one message sent; the others draw nothing
    today = utc_day(time.time())
    assert f"<title>{today}: 1</title>" in html  # the bar says its day and number
    assert f'<th scope="row">{today}</th>' in html  # and so does the table
    assert "5.7.x" in html and 'class="error"' in html  # the sender-side refusal alert
    assert "Thư đã gửi mỗi ngày" in html  # GATEWAY_DEFAULT_LANGUAGE: Vietnamese
    assert chosen.status_code == 303 and english.status_code == 200
    assert "Messages sent per day" in english.text and "The last 7 days" in english.text


async def test_the_dashboard_asks_for_a_login_and_refuses_a_bad_span(gw: Gateway):
    app = create_app(gw, worker=False)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as anonymous:
        answer = await anonymous.get("/admin")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/admin/login")
    async with console_client(gw, "viewer", app=app) as web:
        bad = await web.get("/admin?days=-3")
        huge = await web.get("/admin?days=100000")
    assert bad.status_code == 400 and "days must be a whole number" in bad.text
    assert huge.status_code == 400 and "<script" not in bad.text.lower()
