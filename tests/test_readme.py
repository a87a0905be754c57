"""The README's commands and snippets run as written, on the defaults a new user has."""

from __future__ import annotations

import email
import email.policy
import os
import re
import subprocess
import sys
from pathlib import Path

import pg
import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
BIN = Path(sys.executable).parent

pytestmark = pg.sqlite_only("the README's quick start runs on the embedded SQLite default")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


@pytest.fixture
def shell_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A new user's shell: the venv activated, no GATEWAY_* settings, an empty folder."""
    monkeypatch.chdir(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command, shell=True, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{command!r} failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_quick_start_commands_deliver_a_message_on_the_defaults(
    shell_env: dict[str, str], tmp_path: Path
):
    quick = blocks("sh")[1]
    assert "gateway send" in quick
    run("gateway init", shell_env)  # what scripts/run.sh does before serving
    for line in quick.splitlines():
        command = line.split("  #", 1)[0].strip()
        if command and not command.startswith("ls "):
            run(command, shell_env)
    run("gateway worker --until-idle", shell_env)  # the running server's worker, in the README
    delivered = list((tmp_path / "var" / "mail" / "new").iterdir())
    assert len(delivered) == 1
    msg = email.message_from_bytes(delivered[0].read_bytes(), policy=email.policy.default)
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Xin chào Nguyễn Văn An!" in html


def test_python_snippet_runs_as_written(shell_env: dict[str, str], tmp_path: Path):
    snippet = next(b for b in blocks("python") if "Gateway.from_env" in b)
    assert "Gateway.from_env" in section("Sending from Python")
    run("gateway init", shell_env)
    (tmp_path / "snippet.py").write_text(snippet, encoding="utf-8")
    done = run(f"{sys.executable} snippet.py", shell_env)
    assert done.stdout.split()[0] == "queued", done.stdout
