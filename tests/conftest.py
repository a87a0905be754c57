"""Shared fixtures: a real SQLite file per test, a real SMTP server, an opened Gateway."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

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


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment of a configured gateway whose files all live in tmp_path."""
    monkeypatch.chdir(tmp_path)
    values = {
        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
        "GATEWAY_SECRET_KEYS": "test-key-newest,test-key-older",
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
