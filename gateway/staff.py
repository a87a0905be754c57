"""Staff accounts of the web console: roles, Argon2 passwords, sessions, login limits.

A session is a random token in the staff member's cookie; only its SHA-256 is stored, with
the session's CSRF token. A session ends after `IDLE` seconds without a request, `ABSOLUTE`
seconds after login, at logout, when the member is removed, and when their password changes
(every other session of theirs). Failed logins are counted in memory per account and per
client over a sliding window: past the limit a login is refused without checking the
password, until the window has moved on (never for good)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
import string
import time
import weakref
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from . import addresses
from .errors import Conflict, InvalidInput, NotFound
from .store import Store

if TYPE_CHECKING:
    from .core import Gateway

ROLES = ("viewer", "marketer", "admin")  # each may do what the ones before it may
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # Argon2 would take any length; a megabyte password is an attack
IDLE = 2 * 3600.0
ABSOLUTE = 12 * 3600.0
# Refresh a session's last-seen time at most this often: not one write a request.
TOUCH_EVERY = 60.0
ACCOUNT_FAILURES = (5, 15 * 60.0)  # at most 5 failed logins per account in 15 minutes
CLIENT_FAILURES = (20, 15 * 60.0)  # and 20 per client address
_hasher = PasswordHasher()


@functools.cache
def _dummy() -> str:
    """Verifying a password against this keeps an unknown address as slow as a known one.
    Made on the first login, not on import: Argon2 takes 64 MiB and a part of a second, which
    every other command (an import, a worker) would pay for nothing."""
    return _hasher.hash("not a password of anyone " + secrets.token_hex(8))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"role must be admin, marketer or viewer, not {role!r}")
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a staff password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InvalidInput(f"a staff password has at most {MAX_PASSWORD} characters")
    if password != password.strip() or any(c in password for c in "\r\n\0"):
        raise InvalidInput("a staff password cannot start or end with a space or hold a line break")
    return password


def generate_password() -> str:
    """20 letters and digits (about 119 bits), easy to copy by hand."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(20))


def role_at_least(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True, slots=True)
class Session:
    """A live console session and whose it is."""

    id: int
    staff_id: int
    email: str
    role: str
    language: str | None
    csrf_token: str

    @property
    def actor(self) -> str:
        """Who the audit log names for what this session does."""
        return f"staff:{self.email}"

    def may(self, role: str) -> bool:
        return role_at_least(self.role, role)


@dataclass(frozen=True, slots=True)
class Login:
    """The outcome of a login: a session and its cookie token, or why not (`refused` is
    "wrong" for a wrong address or password, "limited" when too many failed meanwhile)."""

    session: Session | None = None
    token: str | None = None
    refused: str | None = None
    retry_after: int = 0


class FailureWindow:
    """Failed attempts per key over a sliding window, in memory; `clock` is injectable."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.hits: defaultdict[str, deque[float]] = defaultdict(deque)

    def _live(self, key: str) -> deque[float]:
        hits = self.hits[key]
        now = self.clock()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if not hits:
            del self.hits[key]
            return deque()
        return hits

    def retry_after(self, key: str) -> float:
        """0 when another attempt is allowed, else the seconds until one is."""
        hits = self._live(key)
        if len(hits) < self.limit:
            return 0.0
        return max(1.0, hits[len(hits) - self.limit] + self.window - self.clock())

    def fail(self, key: str) -> None:
        self.hits[key].append(self.clock())
        if len(self.hits) > 100_000:  # forget idle keys rather than grow without bound
            for k in list(self.hits):
                self._live(k)

    def clear(self, key: str) -> None:
        self.hits.pop(key, None)


class Staff:
    """Staff accounts and their sessions over `store`; `clock` (seconds since the epoch)
    is injectable so tests can move time on."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        # Argon2 takes a good part of a second and 64 MiB by design: in threads, off the event
        # loop that also serves the worker, the SMTP listeners and the API; two at a time.
        self._hashing = asyncio.Semaphore(2)
        self.account_failures = FailureWindow(*ACCOUNT_FAILURES, clock=self.now)
        self.client_failures = FailureWindow(*CLIENT_FAILURES, clock=self.now)

    def now(self) -> float:
        return self.clock()

    async def _hash(self, password: str) -> str:
        async with self._hashing:
            return await asyncio.to_thread(_hasher.hash, password)

    async def _verify(self, stored: str, password: str) -> bool:
        async with self._hashing:
            try:
                return await asyncio.to_thread(_hasher.verify, stored, password)
            except (VerificationError, InvalidHashError):
                return False

    # -- accounts --------------------------------------------------------------------------

    async def add(self, email: str, role: str, password: str) -> dict[str, Any]:
        email = addresses.normalize(email)
        check_role(role)
        check_password(password)
        staff_id = await self.store.add_staff(email, role, await self._hash(password), self.now())
        return {"id": staff_id, "email": email, "role": role}

    async def listing(self) -> list[dict[str, Any]]:
        return await self.store.list_staff()

    async def member(self, email: str) -> dict[str, Any]:
        found = await self.store.staff_member(addresses.normalize(email))
        if found is None:
            raise NotFound(f"no staff member {email}")
        found.pop("password_hash")
        return found

    async def remove(self, email: str, *, last_admin_ok: bool = False) -> None:
        """Remove the member; their sessions end. The last admin stays unless
        `last_admin_ok` (the CLI may, the console may not lock every admin out)."""
        email = addresses.normalize(email)
        found = await self.store.staff_member(email)
        if found is None:
            raise NotFound(f"no staff member {email}")
        if found["role"] == "admin" and not last_admin_ok and await self.store.count_admins() < 2:
            raise Conflict(f"{email} is the last admin: add another admin first")
        await self.store.remove_staff(email)

    async def set_password(
        self, email: str, password: str, keep_session: int | None = None
    ) -> None:
        """A new password; every session of the member but `keep_session` ends."""
        email = addresses.normalize(email)
        check_password(password)
        found = await self.store.staff_member(email)
        if found is None:
            raise NotFound(f"no staff member {email}")
        await self.store.set_staff_password(
            found["id"], await self._hash(password), self.now(), keep_session
        )

    async def set_language(self, session: Session, language: str) -> None:
        await self.store.set_staff_language(session.staff_id, language)

    # -- login and sessions ----------------------------------------------------------------

    async def login(self, email: str, password: str, client: str | None) -> Login:
        try:
            email = addresses.normalize(email)
        except InvalidInput:
            email = email.strip().lower()[:320]
        account_key, client_key = f"account:{email}", f"client:{client or '?'}"
        wait = max(
            self.account_failures.retry_after(account_key),
            self.client_failures.retry_after(client_key),
        )
        if wait:
            return Login(refused="limited", retry_after=int(wait + 0.999))
        found = await self.store.staff_member(email) if len(password) <= MAX_PASSWORD else None
        stored = found["password_hash"] if found else await asyncio.to_thread(_dummy)
        ok = await self._verify(stored, password[:MAX_PASSWORD]) and found is not None
        if not ok or found is None:
            self.account_failures.fail(account_key)
            self.client_failures.fail(client_key)
            return Login(refused="wrong")
        self.account_failures.clear(account_key)
        if _hasher.check_needs_rehash(stored):
            await self.store.rehash_staff_password(found["id"], stored, await self._hash(password))
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self.now()
        await self.store.create_staff_session(
            token_hash(token), found["id"], csrf, now, now + ABSOLUTE
        )
        session = await self.session(token)
        assert session is not None
        return Login(session=session, token=token)

    async def session(self, token: str | None) -> Session | None:
        """The live session of a cookie's token (None when unknown, idle too long or past
        its end; an ended session is deleted)."""
        if not token or len(token) > 200 or not token.isascii():
            return None
        row = await self.store.staff_session(token_hash(token))
        if row is None:
            return None
        now = self.now()
        if now >= row["expires_at"] or now - row["last_seen_at"] >= IDLE:
            await self.store.end_staff_session(row["session_id"])
            return None
        if now - row["last_seen_at"] >= TOUCH_EVERY:
            await self.store.touch_staff_session(row["session_id"], now)
        return Session(
            id=row["session_id"],
            staff_id=row["staff_id"],
            email=row["email"],
            role=row["role"],
            language=row["language"],
            csrf_token=row["csrf_token"],
        )

    async def logout(self, session: Session) -> None:
        await self.store.end_staff_session(session.id)


_services: weakref.WeakKeyDictionary[Gateway, Staff] = weakref.WeakKeyDictionary()


def of(gw: Gateway) -> Staff:
    """The staff service of an open gateway: one per gateway and process (its login limits
    live in memory, so the web app's requests must share it)."""
    found = _services.get(gw)
    if found is None:
        found = _services[gw] = Staff(gw.store)
    return found
