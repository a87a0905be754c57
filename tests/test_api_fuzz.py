"""Schemathesis against /openapi.json of a real `gateway serve --no-worker`: whatever it sends,
valid or not, the admin API never answers 5xx, and what it answers matches the document.

Bounded: fuzzing only, a few examples per operation (about 200 requests in all), seeded.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import negative_data_rejection  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402

from gateway.web.openapi import DOCUMENT  # noqa: E402

# The same requests every run. FUZZ_SEED and FUZZ_EXAMPLES=150 explore further by hand
# (7,500 requests in under a minute).
SEED = int(os.environ.get("FUZZ_SEED", "20251201"))
# 25 operations, valid and invalid input: about 200 requests in all
EXAMPLES_PER_MODE = int(os.environ.get("FUZZ_EXAMPLES", "4"))


def cli(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A served gateway with a key, a topic, a contact and a campaign to find."""
    cli(env, "init")
    cli(env, "topics", "add", "news", "--name", "Tin tức")
    cli(env, "contacts", "add", "an@example.vn", "--name", "An", "--subscribe", "news")
    (tmp_path / "c.html").write_text("<p>Chào {{ contact.name }}</p>", encoding="utf-8")
    cli(
        env,
        "campaign",
        "create",
        "--name",
        "c",
        "--topic",
        "news",
        "--subject",
        "s",
        "--html",
        "c.html",
    )
    key = cli(env, "apikey", "create", "fuzz").splitlines()[-1]
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--no-worker",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield base, key
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_no_input_makes_the_api_fail(server: tuple[str, str]) -> None:
    base, key = server
    started = time.monotonic()
    # Valid-looking input may still be refused for what a schema cannot say (an address
    # email_validator refuses, an unknown topic, a template naming an undefined field): a
    # 422 with the reason, so "schema-valid means accepted" is not checked. Every other
    # check is: no 5xx, statuses, content types and bodies as documented, invalid refused.
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "checks": {
                "positive_data_acceptance": {"enabled": False},
                # 413 is a refusal too: a body past the size cap is not read at all
                "negative_data_rejection": {
                    "expected-statuses": [400, 401, 404, 405, 409, 413, 415, 422]
                },
            },
        }
    )
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", config=config)
    auth = {"Authorization": f"Bearer {key}"}
    requests = 0
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        body = DOCUMENT["paths"][operation.path][operation.method.lower()].get("requestBody")
        # Any text is a CSV body (what is wrong in it is reported by line): nothing to negate.
        csv_body = body is not None and "text/csv" in body["content"]
        for mode in (GenerationMode.POSITIVE,) if csv_body else GenerationMode:

            @seed(SEED)
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_MODE,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.generate],
            )
            def check(case: Any) -> None:
                nonlocal requests
                requests += 1
                response = case.call(headers=auth, timeout=10)
                where = f"{case.method} {case.formatted_path}"
                assert response.status_code < 500, f"{where}: {response.text}"
                # A query value of [] or None never goes on the wire: the request the server
                # got was valid, so it cannot be blamed for accepting it.
                unsent = any(v in ([], None) for v in (case.query or {}).values())
                case.validate_response(
                    response, excluded_checks=[negative_data_rejection] if unsent else None
                )

            try:
                check()
            except Unsatisfiable:
                continue  # nothing invalid can be made for an operation without input
            except (AssertionError, BaseExceptionGroup) as exc:  # report every failing one
                failures.append(f"{operation.label} ({mode}): {exc!s:.3000}")
    assert not failures, "\n\n".join(failures)
    assert 50 < requests <= 50 * EXAMPLES_PER_MODE + 20
    assert time.monotonic() - started < 60 * max(1, EXAMPLES_PER_MODE // 4)
