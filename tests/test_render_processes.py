"""Campaign pages rendered in child processes (`campaign send --processes N`): the same bytes
as rendered here, the same scan, the same deadlines, and a child that dies loses nothing."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from smtp_server import RecordingSMTPServer
from test_campaigns import audience, campaign, recipients
from test_cli import run as gateway_cli

from gateway import Gateway, render_processes, render_threads
from gateway.records import Contact
from gateway.render import Draft, OutOfTime, Rendered
from gateway.render_processes import RenderProcesses

# Random or time-based per message: its id and the multipart boundary. (The Date header and
# the signed links' timestamps have whole seconds: both renders run within one second.)
RANDOM = [
    (re.compile(rb"Message-ID: <[^@>]+@"), b"Message-ID: <ID@"),
    (re.compile(rb"=_[0-9a-f]{24}"), b"=_BOUNDARY"),
]


def fixed(raw: bytes) -> bytes:
    raw, ids = RANDOM[0][0].subn(RANDOM[0][1], raw)
    raw, boundaries = RANDOM[1][0].subn(RANDOM[1][1], raw)
    assert ids == 1 and boundaries in (0, 4), raw[:400]  # 4: multipart
    return raw


def same_but_random(here: Rendered, there: Rendered) -> None:
    assert (here.subject, here.findings) == (there.subject, there.findings)
    assert here.message_id != there.message_id  # each made its own
    assert fixed(here.raw) == fixed(there.raw)


async def pool_of(gw: Gateway, size: int) -> RenderProcesses:
    pool = gw.campaigns.processes
    assert isinstance(pool, RenderProcesses) and len(pool.pids) == size
    return pool


def killed(pid: int) -> None:
    """SIGKILL, and wait until it is gone (its parent, the fork server, reaps it)."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)


async def test_a_page_rendered_in_child_processes_is_byte_identical_to_one_rendered_here(
    gw: Gateway,
):
    topic = await gw.accepter.topic("news")
    people = [
        (Contact(1, "uid-an", "an@example.vn", "Nguyễn Văn An", "vi", "active"), {"city": "Huế"}),
        (Contact(2, "uid-bob", "bob@example.com", 'Bob <b> & "Co"', "en", "active"), {}),
        (Contact(3, "uid-3", "ba@example.vn", None, "vi", "active"), {"city": "Đà Nẵng " * 30}),
        (Contact(4, "uid-4", "x@example.vn", "X", "en", "active"), {"city": "https://evil.com/x"}),
    ]
    html = (
        "<h1>Chào {{ contact.name }}</h1><p>Ở {{ contact.attributes.city }}: "
        "<a href='https://first.vn/sale'>Xem</a> hoặc <a href='{{ preferences_url }}'>tùy chọn</a></p>"
    )
    drafts = [
        lambda to: Draft(to, "Ưu đãi cho {{ contact.name }}", html, None, "marketing", topic),
        lambda to: Draft(
            to,
            "Tin {{ contact.attributes.city }}",
            html,
            "Chào {{ contact.name }}!\n",
            "marketing",
            topic,
        ),
        lambda to: Draft(to, "Hóa đơn #42", None, "Cảm ơn {{ contact.name }}.", "transactional"),
    ]
    items = [(make(c.email), c, a) for make in drafts for c, a in people]
    async with gw.campaigns.render_processes(2):
        pool = await pool_of(gw, 2)
        for _ in range(5):
            second = int(time.time())
            here = await render_threads.render_many(gw.renderer, 5.0, items)
            there = await pool.render_many(5.0, items)
            if int(time.time()) == second:
                break
        else:
            pytest.fail("could not render both within one second")
    assert len(here) == len(there) == len(items)
    for a, b in zip(here, there, strict=True):
        same_but_random(a, b)
    assert [bool(r.findings) for r in there] == [
        c.id == 4 and d < 2 for d in range(3) for c, _ in people
    ]


async def test_the_published_templates_render_in_a_child_as_they_do_here(gw: Gateway):
    """Inputs nobody here wrote: the 25 published templates of tests/corpus, whole
    documents, as a campaign page rendered in children and in this process's threads."""
    from test_corpus import TEMPLATES, source

    topic = await gw.accepter.topic("news")
    contact = Contact(1, "uid-an", "an@example.vn", "Nguyễn Văn An", "vi", "active")
    items = [
        (Draft(contact.email, path.stem, source(path), None, "marketing", topic), contact, {})
        for path in TEMPLATES
    ]
    async with gw.campaigns.render_processes(2):
        pool = await pool_of(gw, 2)
        for _ in range(5):
            second = int(time.time())
            here = await render_threads.render_many(gw.renderer, 5.0, items)
            there = await pool.render_many(5.0, items)
            if int(time.time()) == second:
                break
        else:
            pytest.fail("could not render both within one second")
    assert len(there) == len(TEMPLATES) == 25
    for a, b in zip(here, there, strict=True):
        same_but_random(a, b)


async def test_tp3_a_recipients_own_third_party_url_is_blocked_when_rendered_in_a_child(
    gw: Gateway, smtp: RecordingSMTPServer
):
    """TP-3 in a child process: an attribute holding a third-party URL blocks that one
    recipient's message; everyone else's goes out."""
    await gw.add_contact("ok@example.vn", name="An", subscribe=["news"], attributes={"city": "Huế"})
    await gw.add_contact(
        "bad@example.vn", name="Bình", subscribe=["news"], attributes={"city": "https://evil.com/x"}
    )
    await gw.add_contact("ok2@example.vn", name="Chi", subscribe=["news"])
    cid = await campaign(gw)
    await gw.campaigns.start(cid)
    async with gw.campaigns.render_processes(2):
        await pool_of(gw, 2)
        await gw.deliver(until_idle=True)
    assert recipients(smtp) == Counter(["ok@example.vn", "ok2@example.vn"])
    counts = (await gw.campaigns.status(cid)).counts
    assert (counts["sent"], counts["blocked"]) == (2, 1)
    rows = await gw.store.list_messages(email="bad@example.vn")
    assert [r["state"] for r in rows] == ["blocked"]
    assert "https://evil.com/x" in rows[0]["reason"]


async def test_a_killed_render_process_loses_no_message_and_is_replaced(
    gw: Gateway, smtp: RecordingSMTPServer, tmp_path: Path
):
    """Both children are killed before the first page: the page is rendered here instead,
    new children take the next pages, and every recipient gets exactly one message."""
    emails = await audience(gw, tmp_path, 250)
    cid = await campaign(gw)
    await gw.campaigns.start(cid)
    async with gw.campaigns.render_processes(2):
        pool = await pool_of(gw, 2)
        first = pool.pids
        for pid in first:
            killed(pid)
        await gw.deliver(until_idle=True)
        assert len(pool.pids) == 2 and not set(pool.pids) & set(first)
        assert not pool.broken
    assert recipients(smtp) == Counter(emails)
    assert (await gw.campaigns.status(cid)).state == "done"


async def test_a_child_killed_in_the_middle_of_a_render_gives_the_same_messages(gw: Gateway):
    """Killed while (or just before) it renders its chunk: the chunk is rendered here."""
    # about 0.2 s each: the kill lands while the first child is at its chunk of two
    slow = "{% for i in range(1000) %}{% for j in range(3000) %}{% endfor %}{% endfor %}"
    slow += "<p>Chào {{ contact.name }}</p>"
    people = [
        Contact(i, f"uid-{i}", f"p{i}@example.vn", f"Người {i}", "vi", "active") for i in range(4)
    ]
    items = [(Draft(c.email, "s", slow, None, "transactional"), c, {}) for c in people]
    async with gw.campaigns.render_processes(2):
        pool = await pool_of(gw, 2)
        before = pool.pids
        rendering = asyncio.create_task(pool.render_many(5.0, items))
        await asyncio.sleep(0.1)
        killed(before[0])
        there = await rendering
        assert before[0] not in pool.pids and len(pool.pids) == 2
    assert [r.subject for r in there] == ["s"] * 4
    for r, c in zip(there, people, strict=True):
        body = email.message_from_bytes(r.raw, policy=email.policy.default)
        assert body["To"] == c.email
        assert f"Người {c.id}" in body.get_body(("plain",)).get_content()  # type: ignore[attr-defined]


async def test_a_chunk_that_cannot_cross_the_pipe_is_rendered_here_and_its_child_replaced(
    gw: Gateway,
):
    """Not only a death: a chunk the pipe cannot carry (here an attribute that cannot be
    pickled) leaves the child in an unknown state; it is replaced, the chunk rendered here,
    and the pool keeps its size (no child lost for good, no later chunk waiting for it)."""
    people = [
        Contact(i, f"uid-{i}", f"p{i}@example.vn", f"Người {i}", "vi", "active") for i in range(4)
    ]
    odd = {"note": lambda: "cannot be pickled"}
    items = [
        (Draft(c.email, "s", "<p>Chào {{ contact.name }}</p>", None, "transactional"), c, odd)
        for c in people
    ]
    async with gw.campaigns.render_processes(2):
        pool = await pool_of(gw, 2)
        before = set(pool.pids)
        there = await pool.render_many(5.0, items)  # type: ignore[arg-type]
        assert len(pool.pids) == 2 and set(pool.pids) != before
        again = await pool.render_many(5.0, [(d, c, {}) for d, c, _ in items])
    for rendered in (there, again):
        assert [email.message_from_bytes(r.raw)["To"] for r in rendered] == [
            c.email for c in people
        ]


@pytest.fixture
async def quick_gw(env: dict[str, str], smtp: RecordingSMTPServer):
    env |= {"GATEWAY_SMTP_URL": smtp.url, "GATEWAY_RENDER_TIMEOUT": "1"}
    async with Gateway.from_env(env) as gateway:
        await gateway.add_topic("news", "Tin tức")
        yield gateway


async def test_a_recipient_whose_render_runs_past_its_time_in_a_child_fails_alone(
    quick_gw: Gateway, smtp: RecordingSMTPServer
):
    gw = quick_gw
    for name in ("an", "binh", "chi"):
        slow = {"slow": "1"} if name == "binh" else {}
        await gw.add_contact(f"{name}@example.vn", name=name, subscribe=["news"], attributes=slow)
    loop = "{% for i in range(100000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"
    html = (
        f"<p>Chào {{{{ contact.name }}}}</p>{{% if contact.attributes.slow %}}{loop}{{% endif %}}"
    )
    cid = await campaign(gw, html=html)
    await gw.campaigns.start(cid)
    start = time.monotonic()
    async with gw.campaigns.render_processes(2):
        await gw.deliver(until_idle=True)
    assert time.monotonic() - start < 8
    assert recipients(smtp) == Counter(["an@example.vn", "chi@example.vn"])
    counts = (await gw.campaigns.status(cid)).counts
    assert (counts["sent"], counts["failed"]) == (2, 1)
    rows = await gw.store.list_messages(email="binh@example.vn")
    assert [r["state"] for r in rows] == ["failed"]
    assert "longer than 1 s" in rows[0]["reason"]


async def test_a_child_that_does_not_answer_in_time_is_killed_and_the_render_refused(
    quick_gw: Gateway, monkeypatch: pytest.MonkeyPatch
):
    """A child stuck where its own deadline checks cannot reach is stopped by the parent
    (here the parent's patience is cut short instead, to the same effect)."""
    monkeypatch.setattr(render_processes, "GRACE", -0.8)  # answer within 0.2 s
    slow = "{% for i in range(100000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"
    contact = Contact(1, "uid-1", "an@example.vn", "An", "vi", "active")
    items = [(Draft(contact.email, "s", slow, None, "transactional"), contact, {})]
    async with quick_gw.campaigns.render_processes(2):
        pool = await pool_of(quick_gw, 2)
        before = set(pool.pids)
        start = time.monotonic()
        with pytest.raises(OutOfTime, match="longer than 1 s"):
            await pool.render_many(1.0, items)
        assert time.monotonic() - start < 0.9  # the child's own deadline is 1 s
        assert len(set(pool.pids) - before) == 1 and len(pool.pids) == 2
        ok = [(Draft(contact.email, "s", "<p>ok</p>", None, "transactional"), contact, {})]
        monkeypatch.setattr(render_processes, "GRACE", 0.5)
        assert len(await pool.render_many(1.0, ok * 4)) == 4


def test_campaign_send_with_processes_from_the_command_line(env: dict[str, str], tmp_path: Path):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return gateway_cli(env, *args)

    (tmp_path / "body.html").write_text("<p>Xin chào {{ contact.name }}</p>", encoding="utf-8")
    people = "email,name\n" + "".join(f"p{i}@example.vn,Người {i}\n" for i in range(3))
    (tmp_path / "people.csv").write_text(people, encoding="utf-8")
    assert run("topics", "add", "news", "--name", "Tin tức").returncode == 0
    assert run("contacts", "import", "people.csv", "--subscribe", "news").returncode == 0
    cid = run(
        "campaign",
        "create",
        "--name",
        "n",
        "--topic",
        "news",
        "--subject",
        "Chào",
        "--html",
        "body.html",
    ).stdout.strip()
    refused = run("campaign", "send", cid, "--processes", "0")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .endswith("--processes must be 1 or more (1 renders in this process)")
    )
    assert "os.cpu_count()" in run("campaign", "send", "--help").stdout
    sent = run("campaign", "send", cid, "--processes", "2", "--json")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["counts"]["sent"] == 3
    assert len(list((tmp_path / "mail" / "new").iterdir())) == 3


async def test_children_are_forked_from_a_fork_server_never_from_this_threaded_process(
    gw: Gateway,
):
    """This process runs an event loop and database and render threads: a child forked from
    it could inherit a lock held by a thread that does not exist in the child."""
    assert render_processes.start_method() == "forkserver"
    async with gw.campaigns.render_processes(2):
        pool = await pool_of(gw, 2)
        for pid in pool.pids:
            stat = Path(f"/proc/{pid}/stat").read_text()
            parent = int(stat.rpartition(")")[2].split()[1])
            assert parent != os.getpid()
            assert Path(f"/proc/{parent}/cmdline").read_bytes().find(b"forkserver") > 0


def test_a_campaign_whose_render_processes_cannot_start_is_left_as_it_was(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    """The processes start before the campaign does: when they cannot, `campaign send`
    exits 1 with one line and the campaign is still a draft (not left sending, with no one
    to deliver it)."""
    from gateway.cli import main

    async def setup() -> int:
        async with Gateway.from_env(env) as gw:
            await gw.add_topic("news", "Tin tức")
            await audience(gw, tmp_path, 3)
            return await campaign(gw)

    campaign_id = asyncio.run(setup())

    async def cannot(self: RenderProcesses) -> None:
        raise OSError("Cannot allocate memory")

    monkeypatch.setattr(RenderProcesses, "start", cannot)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["campaign", "send", str(campaign_id), "--processes", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not start 2 render processes" in err[0], err

    async def state() -> str:
        async with Gateway.from_env(env) as gw:
            return (await gw.campaigns.status(campaign_id)).state

    assert asyncio.run(state()) == "draft"
