"""``Authenticator.known`` (who is calling, without a coroutine; the master key's usual header
matched whole) and ``identify`` built on it, against ``identify`` as it was: for any
``Authorization`` value, master key, auth switch and key book, the same caller or the same
error, and ``known`` answers None only when the book must ask the backend."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.catalogue.schema import AuthConfig, BreakerConfig, KeyLimits
from gateway.errors import AuthenticationFailed
from gateway.state.memory import MemoryState
from gateway.tenancy.auth import (
    ANONYMOUS_CALLER,
    MASTER_CALLER,
    Authenticator,
    Caller,
    KeyBook,
    _bearer,
    _virtual,
)
from gateway.tenancy.keys import KeyRecord, KeySpec, key_id_of, new_key

T = 1_700_000_000.0


async def old_identify(
    enabled: bool, master: str | None, keys: KeyBook, authorization: str | None
) -> Caller:
    """``Authenticator.identify`` before ``known`` (the reference)."""
    if not enabled:
        return ANONYMOUS_CALLER
    key = _bearer(authorization)
    if key is None:
        raise AuthenticationFailed("Missing API key: send 'Authorization: Bearer <key>'.")
    if master and hmac.compare_digest(key.encode(), master.encode()):
        return MASTER_CALLER
    key_id = key_id_of(key)
    record = await keys.find(key_id) if key_id is not None else None
    return _virtual(record, key)


async def outcome(call: Any) -> Any:
    try:
        got = await call
    except AuthenticationFailed as err:
        return ("error", type(err), err.message, err.status)
    except UnicodeError as err:  # a header with a lone surrogate: as it always raised
        return ("error", type(err), str(err))
    return ("caller", got.key_id, got.record)


def known_outcome(auth: Authenticator, authorization: str | None) -> Any:
    try:
        got = auth.known(authorization)
    except AuthenticationFailed as err:
        return ("error", type(err), err.message, err.status)
    except UnicodeError as err:
        return ("error", type(err), str(err))
    return None if got is None else ("caller", got.key_id, got.record)


TOKEN, RECORD = new_key(KeySpec(name="t"), KeyLimits(), T)
REVOKED_TOKEN, REVOKED = new_key(KeySpec(name="r"), KeyLimits(), T)
REVOKED = REVOKED.revoke(T + 1)
MASTERS = ["sk-master", " sk-master", "sk-master ", "sk master", "ß-kéy", "", None]


def headers(masters: list[str | None]) -> st.SearchStrategy[str | None]:
    secrets = [m for m in masters if m] + [TOKEN, REVOKED_TOKEN, TOKEN[:-1] + "x"]
    scheme = st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Bearer\t", ""])
    space = st.sampled_from([" ", "  ", "\t", ""])
    built = st.builds(
        lambda s, a, k, b: s + a + k + b,
        scheme,
        space,
        st.sampled_from(secrets) | st.text(max_size=8),
        st.sampled_from(["", " ", "\t", "\udc80", "x"]),
    )
    return st.none() | st.text(max_size=12) | built


async def book(cached: bool) -> KeyBook:
    state = MemoryState(BreakerConfig())
    for record in (RECORD, REVOKED):
        await state.put_key(record)
    keys = KeyBook(state)
    if cached:
        keys.put(RECORD)
        keys.put(REVOKED)
    return keys


@settings(max_examples=400, deadline=None)
@given(
    st.data(),
    st.sampled_from(MASTERS),
    st.booleans(),
    st.booleans(),
)
def test_identify_and_known_answer_as_identify_did(
    data: st.DataObject, master: str | None, enabled: bool, cached: bool
) -> None:
    authorization = data.draw(headers(MASTERS))

    async def check() -> None:
        keys = await book(cached)
        auth = Authenticator(AuthConfig(enabled=enabled, master_key=master), keys)
        ref_keys = await book(cached)
        want = await outcome(old_identify(enabled, master, ref_keys, authorization))
        fast = known_outcome(auth, authorization)
        if fast is None:  # only a virtual key the book has not read yet (identify reads it)
            assert not cached
        else:
            assert fast == want
        assert await outcome(auth.identify(authorization)) == want

    asyncio.run(check())


@pytest.mark.parametrize(
    ("master", "header", "who"),
    [
        ("sk-master", "Bearer sk-master", "master"),
        ("sk-master", "bearer sk-master", "master"),  # the general path's spelling
        ("sk-master", "Bearer  sk-master", "master"),
        ("sk-master", "Bearer sk-master ", "master"),
        ("sk-master", "Bearer sk-maste", None),
        ("sk-master", "Bearer sk-masterx", None),
        ("sk-master", "Bearer\tsk-master", None),
        (" sk-master", "Bearer  sk-master", None),  # a key with outer spaces never matches
        ("ß-kéy", "Bearer ß-kéy", "master"),
        ("ß-kéy", "Bearer ß-ké", None),
        ("", "Bearer ", None),
    ],
)
def test_the_master_key_header(master: str, header: str, who: str | None) -> None:
    auth = Authenticator(AuthConfig(master_key=master), KeyBook(None))
    if who is None:
        with pytest.raises(AuthenticationFailed):
            auth.known(header)
    else:
        assert auth.known(header) is MASTER_CALLER


def test_a_virtual_key_the_book_holds_needs_no_lookup() -> None:
    keys = KeyBook(None)
    keys.put(RECORD)
    auth = Authenticator(AuthConfig(master_key="sk-master"), keys)
    assert auth.known(f"Bearer {TOKEN}") == Caller(RECORD.id, RECORD)
    keys.put(RECORD.revoke(T + 2))  # a revocation this replica wrote counts at once
    with pytest.raises(AuthenticationFailed, match="revoked"):
        auth.known(f"Bearer {TOKEN}")


def test_a_record_not_read_yet_is_left_to_identify() -> None:
    async def check() -> KeyRecord | None:
        keys = await book(cached=False)
        auth = Authenticator(AuthConfig(master_key="sk-master"), keys)
        assert auth.known(f"Bearer {TOKEN}") is None
        return (await auth.identify(f"Bearer {TOKEN}")).record

    assert asyncio.run(check()) == RECORD
