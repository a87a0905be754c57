"""API keys: made from 32 random bytes, shown once, kept only as a hash.

A key has a scope: `admin` may do everything the API offers; `send` may only send (`POST
/api/v1/messages` and SMTP submission), anything else answers 403."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInput, NotFound
from .store import Store

PREFIX = "gwk_"
SHOWN = 10  # characters kept in the clear, to tell keys apart in `gateway apikey list`
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_KEY = 200
SCOPES = ("admin", "send")


@dataclass(frozen=True, slots=True)
class Key:
    """A live key, as authenticated: its owner's name and what it may do."""

    name: str
    scope: str

    def may(self, scope: str) -> bool:
        return self.scope == "admin" or self.scope == scope


def key_hash(key: str) -> str:
    # A plain digest is enough: the key is 256 random bits, so there is nothing to guess.
    return hashlib.sha256(key.encode()).hexdigest()


def check_name(name: str) -> str:
    if not NAME.fullmatch(name or ""):
        raise InvalidInput(
            f"API key name {name!r} must be 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise InvalidInput(
            f"scope must be admin (everything) or send (only sending mail), not {scope!r}"
        )
    return scope


async def create(store: Store, name: str, scope: str = "admin") -> str:
    """A new key for `name`; the caller shows it once, only its hash is stored."""
    check_name(name)
    check_scope(scope)
    key = PREFIX + secrets.token_urlsafe(32)
    await store.create_api_key(name, key[:SHOWN], key_hash(key), time.time(), scope)
    return key


async def revoke(store: Store, name: str) -> int:
    revoked = await store.revoke_api_key(check_name(name), time.time())
    if not revoked:
        raise NotFound(f"no live API key named {name!r}")
    return revoked


async def listing(store: Store) -> list[dict[str, Any]]:
    return await store.list_api_keys()


async def authenticate(store: Store, key: str) -> Key | None:
    """The live key, or None for a key that is unknown or revoked."""
    if not key.startswith(PREFIX) or len(key) > MAX_KEY or not key.isascii():
        return None
    found = await store.find_api_key(key_hash(key), time.time())
    return Key(*found) if found else None
