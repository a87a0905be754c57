"""A throwaway Postfix (Debian's `postfix` and `libsasl2-modules`) for tests: a null client
that relays every message to one SMTP server on 127.0.0.1, with STARTTLS required and SASL
AUTH, the way a business's own Postfix would relay through the gateway.

    async with Postfix(relay_port=srv.port, user="shop", password=key, ca_file=certs.ca_file) as pf:
        await pf.sendmail(message_bytes, ["an@example.vn"], sender="app@first.vn")
        outcome = await pf.outcome("<id@first.vn>", "an@example.vn")  # waits for the log line
        assert outcome.status == "sent", pf.report()

Each instance lives in a temp directory of its own (config, queue, data, pid and its log
file `maillog`) and never touches the system's Postfix: `postfix -c DIR`, a master.cf with
only the services a null client needs (no smtpd: it listens on no port, it is fed by
`sendmail -C DIR`, which hands the message to postdrop), no local delivery, and retries
every second. Running it needs root (the master and postdrop change users); without root or
without the packages `require_postfix()` skips the test, and fails it under CI=true.
"""

from __future__ import annotations

import asyncio
import atexit
import glob
import os
import re
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import pytest

__all__ = ["Outcome", "Postfix", "PostfixError", "postfix_missing", "require_postfix"]

SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
SASL_PLUGINS = ("libplain.so*", "liblogin.so*")
# Where Debian (and others) keep the Cyrus SASL client plugins Postfix's smtp client loads.
SASL_DIRS = ("/usr/lib/*/sasl2", "/usr/lib/sasl2", "/usr/lib64/sasl2")
INSTALL = "apt-get install -y postfix libsasl2-modules"

# Only what a null client uses: pickup/cleanup/qmgr move mail from `sendmail` to `smtp`;
# bounce/defer/trace, error and retry report what failed; flush serves `postqueue -f`,
# showq `postqueue -p`, postlog writes `maillog`. No smtpd (no listener), no local.
MASTER_CF = """\
# service  type  private unpriv  chroot  wakeup  maxproc command
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
tlsmgr     unix  -       -       n       1000?   1       tlsmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
"""

# A delivery's final line: "<QID>: to=<rcpt>, relay=..., delay=..., dsn=..., status=sent (...)"
_STATUS = re.compile(
    r"\b(?P<qid>[0-9A-Za-z]+): to=<(?P<rcpt>[^>]*)>,(?P<fields>.*?)"
    r" status=(?P<status>sent|bounced|deferred|expired|undeliverable) \((?P<reply>.*)\)$",
    re.MULTILINE,
)


class PostfixError(Exception):
    """A postfix command failed or Postfix did not do what a test waited for."""


def _binary(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join(SBIN))


def postfix_missing() -> str | None:
    """Why Postfix cannot run here (None when it can)."""
    missing = [
        name for name in ("postfix", "postconf", "postqueue", "sendmail") if not _binary(name)
    ]
    if missing:
        return f"Postfix is not installed ({', '.join(missing)} missing): {INSTALL}, or run scripts/test.sh as root"
    for plugin in SASL_PLUGINS:
        if not any(glob.glob(f"{d}/{plugin}") for d in SASL_DIRS):
            return (
                f"the SASL {plugin.split('.')[0][3:].upper()} plugin is missing: {INSTALL},"
                " or run scripts/test.sh as root"
            )
    if os.geteuid() != 0:
        return "a test Postfix needs root (its master and postdrop change users): run the tests as root"
    return None


def require_postfix() -> None:
    """Skip without Postfix (not installed, not root); under CI=true fail instead."""
    reason = postfix_missing()
    if reason is None:
        return
    message = f"Postfix relay test: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class Outcome:
    """What Postfix logged for one recipient of one message."""

    queue_id: str
    recipient: str
    status: str  # sent | bounced | deferred | expired | undeliverable
    reply: str  # e.g. "250 2.0.0 Ok: queued as 17" or "host 127.0.0.1[...] said: 550 5.7.1 ..."
    line: str


class Postfix:
    """One throwaway Postfix relaying to 127.0.0.1:relay_port (see the module docstring).

    user/password go into smtp_sasl_password_maps; ca_file (the test CA) lets the log say
    "Trusted TLS connection" when the relay's certificate chains to it, while with
    `smtp_tls_security_level = encrypt` (tls_level) TLS is required but an untrusted
    certificate is not refused. sasl_mechanisms ("plain", "login") limits what the client
    may pick. `settings` adds or overrides main.cf lines.
    """

    def __init__(
        self,
        relay_port: int,
        user: str,
        password: str,
        *,
        ca_file: Path | None = None,
        tls_level: str = "encrypt",
        sasl_mechanisms: str | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        if ":" in user or any(c.isspace() for c in user + password):
            raise ValueError("a SASL user may not hold ':' and neither may hold white space")
        self.relay_port = relay_port
        self.user = user
        self.password = password
        self.ca_file = ca_file
        self.tls_level = tls_level
        self.sasl_mechanisms = sasl_mechanisms
        self.settings = settings or {}
        self.root: Path | None = None
        self._master_pid: int | None = None

    # ----------------------------------------------------------------- paths and settings

    @property
    def config_dir(self) -> Path:
        return self._root / "etc"

    @property
    def queue_dir(self) -> Path:
        return self._root / "queue"

    @property
    def log_file(self) -> Path:
        return self._root / "maillog"

    @property
    def _root(self) -> Path:
        if self.root is None:
            raise PostfixError("this Postfix has not been started")
        return self.root

    def main_cf(self) -> dict[str, str]:
        """The main.cf of this instance."""
        root = self._root
        relay = f"[127.0.0.1]:{self.relay_port}"
        values = {
            "compatibility_level": "3.6",
            "queue_directory": str(root / "queue"),
            "data_directory": str(root / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "relay.postfix.test",
            "mydomain": "postfix.test",
            "myorigin": "$myhostname",
            # Mail to root@$myhostname (sendmail's default sender) is local, so it meets
            # local_transport (an error) instead of being relayed to the server under test.
            "mydestination": "$myhostname, localhost",
            "local_transport": "error:local delivery is disabled",
            # Bounce notices (null sender) to a relayed sender are discarded here, so that
            # the server under test receives only what a test sends.
            "sender_dependent_default_transport_maps": "inline:{<>=discard}",
            "alias_maps": "",
            "alias_database": "",
            "mynetworks": "127.0.0.0/8",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "relayhost": relay,
            "smtp_host_lookup": "native",
            "smtp_tls_security_level": self.tls_level,
            "smtp_tls_loglevel": "1",
            "smtp_sasl_auth_enable": "yes",
            "smtp_sasl_password_maps": f"texthash:{root / 'etc' / 'sasl_passwd'}",
            "smtp_sasl_security_options": "noanonymous",
            "smtp_sasl_tls_security_options": "noanonymous",
            "maillog_file": str(root / "maillog"),
            "maillog_file_prefixes": str(root),
            # Retry within seconds, not minutes, when a test makes the relay fail for a while.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "biff": "no",
        }
        if self.ca_file is not None:
            values["smtp_tls_CAfile"] = str(self.ca_file)
        if self.sasl_mechanisms:
            values["smtp_sasl_mechanism_filter"] = self.sasl_mechanisms
        values.update(self.settings)
        return values

    # ----------------------------------------------------------------- running

    async def _run(self, *args: str, stdin: bytes | None = None, check: bool = True) -> str:
        env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
        env["MAIL_CONFIG"] = str(self.config_dir)
        env["PATH"] = os.pathsep.join((*SBIN, env.get("PATH", "")))
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        out, _ = await asyncio.wait_for(proc.communicate(stdin), 60)
        text = out.decode("utf-8", "replace")
        if check and proc.returncode != 0:
            raise PostfixError(f"{' '.join(args)} exited {proc.returncode}: {text.strip()}")
        return text

    def _write_config(self, root: Path) -> None:
        (root / "etc").mkdir(mode=0o755)
        lines = [f"{k} = {v}" for k, v in self.main_cf().items()]
        (root / "etc" / "main.cf").write_text("\n".join(lines) + "\n")
        (root / "etc" / "master.cf").write_text(MASTER_CF)
        passwd = root / "etc" / "sasl_passwd"
        passwd.touch(mode=0o600)
        secret = f"{self.user}:{self.password}"
        passwd.write_text(
            "".join(
                f"{key} {secret}\n"
                for key in (f"[127.0.0.1]:{self.relay_port}", "[127.0.0.1]", "127.0.0.1")
            )
        )
        # Postfix waits (300 ms at a time) until a file it loads is over a second old, in
        # case it is still being written: date them back.
        past = time.time() - 10
        for path in (root / "etc").iterdir():
            os.utime(path, (past, past))

    async def start(self) -> Self:
        require_postfix()
        root = Path(tempfile.mkdtemp(prefix="gateway-postfix-"))
        # The daemons run as the postfix user: they must reach the queue and data folders.
        root.chmod(0o755)
        self.root = root
        try:
            (root / "data").mkdir(mode=0o700)
            shutil.chown(root / "data", "postfix")
            self._write_config(root)
            # A queue tree made once per test process (post-install takes seconds), copied
            # with its owners and modes; `quick-start` skips the checks that made it.
            await self._run("cp", "-a", str(await _queue_template()), str(self.queue_dir))
            (self.queue_dir / "quick-start").touch()
            await self._run("postfix", "-c", str(self.config_dir), "start")
            pid_file = self.queue_dir / "pid" / "master.pid"
            deadline = time.monotonic() + 10
            while not pid_file.exists() or not pid_file.read_text().strip():
                if time.monotonic() > deadline:
                    raise PostfixError(f"the Postfix master did not start\n{self.report()}")
                await asyncio.sleep(0.05)
            self._master_pid = int(pid_file.read_text().strip())
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        """Stop the master and every daemon of this instance, delete its directory."""
        if self.root is None:
            return
        try:
            pid = self._master_pid
            if pid is not None:
                # `postfix abort` signals the master, which ends its process group (all of
                # this instance's daemons); `postfix stop` would add a one-second sleep.
                await self._run("postfix", "-c", str(self.config_dir), "abort", check=False)
                deadline = time.monotonic() + 10
                while _group_alive(pid) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                if _group_alive(pid):
                    os.killpg(pid, signal.SIGKILL)
                self._master_pid = None
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------- mail

    async def sendmail(self, message: bytes, recipients: list[str], sender: str) -> None:
        """Hand a message to Postfix as an application would: `sendmail -C DIR -f SENDER -i`
        (postdrop puts it in the maildrop queue; pickup takes it from there)."""
        if not recipients:
            raise ValueError("sendmail needs at least one recipient")
        await self._run(
            "sendmail",
            "-C",
            str(self.config_dir),
            "-f",
            sender,
            "-i",
            "--",
            *recipients,
            stdin=message,
        )

    async def flush(self) -> None:
        """`postqueue -f`: try every deferred message now."""
        await self._run("postqueue", "-c", str(self.config_dir), "-f")

    async def queue(self) -> str:
        """`postqueue -p`: what is still queued, and why."""
        return await self._run("postqueue", "-c", str(self.config_dir), "-p", check=False)

    def log(self) -> str:
        """Postfix's log so far (its own maillog file)."""
        try:
            return self.log_file.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def report(self, lines: int = 60) -> str:
        """The end of the log, to show in a failing assertion why a message is stuck."""
        tail = "\n".join(self.log().splitlines()[-lines:])
        return f"--- Postfix log ({self.log_file}), last {lines} lines ---\n{tail}"

    async def wait_log(self, pattern: str | re.Pattern[str], timeout: float = 20) -> re.Match[str]:
        """Wait until the log has a line matching `pattern` (a regular expression)."""
        regex = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.log())
            if found:
                return found
            if time.monotonic() > deadline:
                queue = await self.queue()
                raise PostfixError(
                    f"no log line matched {regex.pattern!r} within {timeout:g} s\n"
                    f"{self.report()}\n--- postqueue -p ---\n{queue}"
                )
            await asyncio.sleep(0.1)

    async def queue_id(self, message_id: str, timeout: float = 20) -> str:
        """The queue id Postfix gave the message with this Message-ID (cleanup logs it)."""
        found = await self.wait_log(
            rf"\b([0-9A-Za-z]+): message-id={re.escape(message_id)}$", timeout
        )
        return found.group(1)

    def outcomes(self, queue_id: str) -> list[Outcome]:
        """Every delivery attempt logged so far for this queue id, oldest first."""
        return [
            Outcome(m["qid"], m["rcpt"], m["status"], m["reply"], m.group(0))
            for m in _STATUS.finditer(self.log())
            if m["qid"] == queue_id
        ]

    async def outcome(
        self, message_id: str, recipient: str, *, timeout: float = 20, final: bool = True
    ) -> Outcome:
        """What became of `recipient` of the message with this Message-ID: waits for its
        status line; with `final` (the default) a `deferred` one does not count, the queue
        is flushed and the wait goes on until sent, bounced or the timeout."""
        deadline = time.monotonic() + timeout
        qid = await self.queue_id(message_id, timeout)
        flushed = 0.0
        while True:
            for seen in self.outcomes(qid):
                if seen.recipient == recipient and (not final or seen.status != "deferred"):
                    return seen
            now = time.monotonic()
            if now > deadline:
                queue = await self.queue()
                raise PostfixError(
                    f"no final status for <{recipient}> of {message_id} ({qid}) within"
                    f" {timeout:g} s\n{self.report()}\n--- postqueue -p ---\n{queue}"
                )
            if any(o.status == "deferred" for o in self.outcomes(qid)) and now - flushed > 1:
                await self.flush()
                flushed = now
            await asyncio.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    """Whether a process of this process group (the master's: it runs setsid) still runs.
    Zombies do not count: once the master is gone nobody here reaps them."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:  # state, ppid, pgrp
            return True
    return False


_template: Path | None = None


async def _queue_template() -> Path:
    """A Postfix queue tree (maildrop, incoming, ..., public, private, pid) with Postfix's
    owners and modes, made once per test process by `postfix check` (which creates what is
    missing), removed when the process exits."""
    global _template
    if _template is None:
        root = Path(tempfile.mkdtemp(prefix="gateway-postfix-template-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        root.chmod(0o755)
        (root / "queue").mkdir(mode=0o755)
        (root / "data").mkdir(mode=0o700)
        shutil.chown(root / "data", "postfix")
        maker = Postfix(0, "template", "template")
        maker.root = root
        maker._write_config(root)
        await maker._run("postfix", "-c", str(maker.config_dir), "check")
        _template = root / "queue"
    return _template
