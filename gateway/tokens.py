"""Signed, expiring, key-rotating link tokens and keyed hashes of addresses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from itsdangerous import BadData, BadSignature, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.encoding import base64_decode, base64_encode

from .errors import ConfigError, GatewayError

DAY = 86400

# How long a link of each purpose keeps working. Unsubscribe links carry no expiry: they work
# for as long as the key that signed them is kept in GATEWAY_SECRET_KEYS (OC-4).
MAX_AGE: dict[str, int | None] = {
    "unsubscribe": None,
    "preferences": 365 * DAY,
    "export": 3600,
    "erase": 3600,
    "confirm": 7 * DAY,
}
# Purposes whose payload names a person (a sign-up carries the address, name and IP until the
# mailbox confirms it): their tokens are encrypted as well as signed, so the link, which ends
# up in server logs, scanners and browser history, shows nothing about anyone.
SEALED = frozenset({"confirm"})


class InvalidToken(GatewayError):
    """A link token that is tampered with, expired, of another purpose or unknown."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the link is not valid ({reason})")
        self.reason = reason


def _canonical(token: str) -> bool:
    """Base64 leaves spare bits in a final character, so two spellings can decode to the same
    signature. Only the spelling we issued is accepted: one changed byte is always refused (OC-4)."""
    try:
        return all(
            base64_encode(base64_decode(part)) == part.encode() for part in token.split(".") if part
        )
    except (BadData, UnicodeEncodeError):
        return False


class Signer:
    """Tokens carry opaque ids only, never an address. Each purpose is its own namespace
    (salt), so an unsubscribe token cannot be replayed as an erase token."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigError("GATEWAY_SECRET_KEYS is empty: set at least one key")
        self.keys = tuple(keys)  # newest first
        # itsdangerous signs with the last key and verifies with all of them.
        self._serializers = {
            purpose: URLSafeTimedSerializer(list(reversed(self.keys)), salt=f"gateway.{purpose}")
            for purpose in MAX_AGE
        }
        self._verp_keys = [
            hashlib.sha256(b"gateway.verp:" + k.encode()).digest() for k in self.keys
        ]
        # Until `use_address_keys` installs the database's own hashing key, addresses are
        # hashed the way releases before it did: under keys derived from the signing keys.
        self.derived_address_keys = [derived_address_key(k) for k in self.keys]
        self._hash_keys = list(self.derived_address_keys)

    def sign(self, purpose: str, payload: Any) -> str:
        if purpose in SEALED:
            payload = self._seal(purpose, payload)
        return self._serializers[purpose].dumps(payload)

    def verify(self, purpose: str, token: str) -> Any:
        if not _canonical(token):
            raise InvalidToken("bad signature")
        try:
            payload = self._serializers[purpose].loads(token, max_age=MAX_AGE[purpose])
        except SignatureExpired:
            raise InvalidToken("expired") from None
        except BadSignature:
            raise InvalidToken("bad signature") from None
        return self._unseal(purpose, payload) if purpose in SEALED else payload

    # -- sealed payloads: AES-GCM under a key per secret key and purpose, newest first ------

    def _seal_keys(self, purpose: str) -> list[bytes]:
        return [hashlib.sha256(f"gateway.seal.{purpose}:{k}".encode()).digest() for k in self.keys]

    def _seal(self, purpose: str, payload: Any) -> str:
        nonce = os.urandom(12)
        data = json.dumps(payload, separators=(",", ":")).encode()
        sealed = nonce + AESGCM(self._seal_keys(purpose)[0]).encrypt(nonce, data, purpose.encode())
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def _unseal(self, purpose: str, sealed: Any) -> Any:
        try:
            raw = base64.urlsafe_b64decode(str(sealed) + "=" * (-len(str(sealed)) % 4))
        except ValueError:
            raise InvalidToken("bad signature") from None
        for key in self._seal_keys(purpose):
            try:
                data = AESGCM(key).decrypt(raw[:12], raw[12:], purpose.encode())
            except (InvalidTag, ValueError):
                continue
            return json.loads(data)
        raise InvalidToken("bad signature")

    def use_address_keys(self, current: bytes, legacy: Sequence[bytes] = ()) -> None:
        """Hash addresses under the database's own key, which never rotates (the link-signing
        keys do, and dropping one must not lift a suppression or an erasure). `legacy` are the
        keys rows written before it were hashed under: still looked up, never written."""
        self._hash_keys = [current, *dict.fromkeys(k for k in legacy if k != current)]

    def address_hashes(self, email: str) -> list[str]:
        """Keyed hashes of a normalized address, current key first: the first is stored, all
        are looked up, so a row hashed under a legacy key is still found."""
        return [address_digest(k, email) for k in self._hash_keys]

    def address_hash(self, email: str) -> str:
        return self.address_hashes(email)[0]

    # -- VERP: one return path per message (BN-5) --------------------------------------------
    # `bounces+m1a2b-5f3c…@domain`: the outbox id in base 36 and 16 hex digits of an HMAC.
    # Lowercase only, as some servers lowercase the local part; short enough for any bounce.

    def verp_token(self, outbox_id: int) -> str:
        ident = _base36(outbox_id)
        return f"m{ident}-{self._verp_mac(self._verp_keys[0], ident)}"

    def verp_id(self, token: str) -> int | None:
        """The outbox id a return-path token names, or None when it is not one of ours."""
        head, sep, mac = token.lower().partition("-")
        if not sep or not head.startswith("m") or len(mac) != 16:
            return None
        ident = head[1:]
        if not any(hmac.compare_digest(mac, self._verp_mac(k, ident)) for k in self._verp_keys):
            return None
        try:
            return int(ident, 36)
        except ValueError:
            return None

    @staticmethod
    def _verp_mac(key: bytes, ident: str) -> str:
        return hmac.new(key, ident.encode(), hashlib.sha256).hexdigest()[:16]


def derived_address_key(secret: str) -> bytes:
    """The hashing key that releases before the database's own key derived from one signing
    key: rows they wrote stay findable under it."""
    return hashlib.sha256(b"gateway.address:" + secret.encode()).digest()


def address_digest(key: bytes, email: str) -> str:
    """The keyed hash of a normalized address under one hashing key."""
    return hmac.new(key, email.encode(), hashlib.sha256).hexdigest()


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out
