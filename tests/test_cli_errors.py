"""A command that fails says why in one line and exits: it never hangs on what it opened."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pg

pytestmark = pg.sqlite_only("a damaged SQLite file is the case")


def test_a_file_that_is_not_a_database_gives_one_line_and_the_process_exits(tmp_path: Path):
    (tmp_path / "bad.db").write_bytes(os.urandom(5000))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_DATABASE_URL"] = f"sqlite:///{tmp_path / 'bad.db'}"
    env["GATEWAY_SECRET_KEYS"] = "cli-errors-key-0123456789abcdefghijklmnop"
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "init"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # before the fix the error was printed and the process never exited
        check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "GATEWAY_DATABASE_URL" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
