"""OC-4: tokens are signed, scoped by purpose, rotate keys, expire per purpose, carry no address."""

from __future__ import annotations

import base64
import time

import pytest
from itsdangerous import TimestampSigner

from gateway.tokens import InvalidToken, Signer


def test_oc4_a_token_round_trips_and_reveals_no_address():
    signer = Signer(["k1"])
    token = signer.sign("unsubscribe", ["Q2c3xYz", "news"])
    assert signer.verify("unsubscribe", token) == ["Q2c3xYz", "news"]
    payload = base64.urlsafe_b64decode(token.split(".")[0] + "==")
    assert b"@" not in payload


def test_oc4_every_single_changed_byte_is_rejected():
    signer = Signer(["k1"])
    token = signer.sign("unsubscribe", ["uid", "news"])
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    for position in range(len(token)):
        for char in alphabet:
            if char == token[position]:
                continue
            forged = token[:position] + char + token[position + 1 :]
            with pytest.raises(InvalidToken):
                signer.verify("unsubscribe", forged)


def test_a_token_of_one_purpose_is_refused_for_another():
    signer = Signer(["k1"])
    token = signer.sign("unsubscribe", "uid")
    for purpose in ("preferences", "export", "erase"):
        with pytest.raises(InvalidToken):
            signer.verify(purpose, token)


def test_old_keys_still_verify_after_rotation_and_new_tokens_use_the_newest():
    old = Signer(["old"])
    token = old.sign("unsubscribe", "uid")
    rotated = Signer(["new", "old"])
    assert rotated.verify("unsubscribe", token) == "uid"
    fresh = rotated.sign("unsubscribe", "uid")
    assert Signer(["new"]).verify("unsubscribe", fresh) == "uid"
    with pytest.raises(InvalidToken):
        Signer(["new"]).verify("unsubscribe", token)  # the old key is gone


def test_unsubscribe_tokens_do_not_expire_but_export_links_do(monkeypatch):
    signer = Signer(["k"])
    now = time.time()
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(now - 400 * 86400))
    old_unsubscribe = signer.sign("unsubscribe", "uid")
    old_preferences = signer.sign("preferences", "uid")
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(now - 2 * 3600))
    old_export = signer.sign("export", "uid")
    monkeypatch.undo()
    assert signer.verify("unsubscribe", old_unsubscribe) == "uid"  # OC-4: while the key is kept
    with pytest.raises(InvalidToken, match="expired"):
        signer.verify("preferences", old_preferences)
    with pytest.raises(InvalidToken, match="expired"):
        signer.verify("export", old_export)


def test_address_hashes_are_keyed_and_cover_every_key():
    a, b = Signer(["k1", "k0"]), Signer(["k2"])
    assert len(a.address_hashes("an@example.vn")) == 2
    assert a.address_hash("an@example.vn") != b.address_hash("an@example.vn")
    assert a.address_hashes("an@example.vn")[1] == Signer(["k0"]).address_hash("an@example.vn")


def test_oc4_a_sign_up_link_shows_nothing_about_the_person_who_it_is_for():
    """The confirmation token carries the pending sign-up (address, name, IP) until the
    mailbox confirms it: encrypted as well as signed, so a logged URL reveals none of it."""
    from itsdangerous import URLSafeTimedSerializer

    pending = ["an@example.vn", "Nguyễn Văn An", "vi", ["news"], "1", 1, "203.0.113.9", "f"]
    signer = Signer(["k" * 40])
    token = signer.sign("confirm", pending)
    _, visible = URLSafeTimedSerializer("not the key", salt="gateway.confirm").loads_unsafe(token)
    for secret in ("an@example.vn", "example", "Nguy", "203.0.113.9", "news"):
        assert secret not in repr(visible)
    assert signer.verify("confirm", token) == pending
    assert Signer(["n" * 40, "k" * 40]).verify("confirm", token) == pending  # after rotation
    with pytest.raises(InvalidToken):
        Signer(["n" * 40]).verify("confirm", token)
