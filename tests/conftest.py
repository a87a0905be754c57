"""Shared fixtures: a real SQLite file per test (or, with GATEWAY_TEST_DATABASE=postgresql, a
fresh database per test on a throwaway PostgreSQL cluster), a real SMTP server, a Gateway."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import pg  # noqa: E402
from smtp_server import RecordingSMTPServer  # noqa: E402

from gateway import Gateway  # noqa: E402

SENDER = {
    "GATEWAY_FROM": "Cửa hàng An <news@first.vn>",
    "GATEWAY_BASE_URL": "https://mail.first.vn",
    "GATEWAY_SENDER_NAME": "Công ty TNHH An",
    "GATEWAY_SENDER_POSTAL_ADDRESS": "12 Lê Lợi, Quận 1, TP. Hồ Chí Minh",
    "GATEWAY_SENDER_PHONE": "+84 28 1234 5678",
    "GATEWAY_SENDER_WEBSITE": "https://first.vn",
    "GATEWAY_REFUSAL_ADDRESS": "unsubscribe@first.vn",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "empty_database: on PostgreSQL, start from a database without tables (by default a"
        " test's database is a copy of one migrated once for the session)",
    )
    if pg.CHOSEN != "sqlite":
        try:
            pg.check()
        except pg.PostgresUnavailable as exc:  # one clear message, not a skip per test
            raise pytest.UsageError(str(exc)) from None


def pytest_report_header(config: pytest.Config) -> str:
    return f"gateway test database: {'postgresql' if pg.ON_POSTGRES else 'sqlite'}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg.Databases]:
    """The throwaway cluster, started once for the session, stopped and deleted at the end."""
    cluster = pg.Cluster()
    try:
        try:
            cluster.start()
        except pg.PostgresUnavailable as exc:
            pytest.exit(f"could not start the test PostgreSQL cluster: {exc}", returncode=1)
        databases = pg.Databases(cluster)
        try:
            yield databases
        finally:
            databases.close()
    finally:
        cluster.stop()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """GATEWAY_DATABASE_URL of an empty database of this test's own."""
    if not pg.ON_POSTGRES:
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
        return
    databases: pg.Databases = request.getfixturevalue("postgres")
    name = databases.create(empty=request.node.get_closest_marker("empty_database") is not None)
    yield databases.cluster.url(name)
    databases.drop(name)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str) -> dict[str, str]:
    """Environment of a configured gateway whose files all live in tmp_path."""
    monkeypatch.chdir(tmp_path)
    values = {
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_SECRET_KEYS": "test-key-newest-6f1c2a9e4b7d3f8a5c0e,test-key-older-2b8e5d1a7c4f9e3b6a0d",
        "GATEWAY_SMTP_URL": f"maildir://{tmp_path / 'mail'}",
        **SENDER,
    }
    for key in list(os.environ):
        if key.startswith("GATEWAY_"):
            monkeypatch.delenv(key)
    return values


@pytest.fixture
async def smtp() -> AsyncIterator[RecordingSMTPServer]:
    async with RecordingSMTPServer() as server:
        yield server


@pytest.fixture
async def gw(env: dict[str, str], smtp: RecordingSMTPServer) -> AsyncIterator[Gateway]:
    env["GATEWAY_SMTP_URL"] = smtp.url
    async with Gateway.from_env(env) as gateway:
        await gateway.add_topic("news", "Tin tức")
        await gateway.add_topic("deals", "Khuyến mãi")
        yield gateway
