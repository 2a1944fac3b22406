"""Session keys are remembered (:func:`gateway.routing.affinity._digest`): the same strings as
hashing afresh, whatever was asked before. Replicas share them through Redis and affinity
state keeps them, so the strings themselves are pinned too."""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.routing import affinity
from gateway.routing.affinity import DIGESTS_KEPT, session_key


def fresh(kind: str, data: bytes) -> str:
    return kind + hashlib.blake2b(data, digest_size=16).hexdigest()


def chat(system: str, user: str) -> dict[str, Any]:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}


def test_the_keys_are_the_strings_earlier_releases_made() -> None:
    # Computed at 0639c4d, before keys were remembered: a replica of either release finds the
    # other's pins.
    assert session_key({"x-glm-session": "abc"}, None, {}, 1) == "hcf4ab791c62b8d2b2109c90275287816"
    assert session_key({"x-codex-window-id": "w1"}, None, {}, 1) == (
        "a87e637370b4957ecd43efe7fd11db6c0"
    )
    assert session_key({}, "u-1", {}, 1) == "b93654f6b44842cfd78725bf00be8c715"
    short = chat("You are terse.", "hi")
    assert session_key({}, None, short, 1) == "pf9f4851d463abc652e0d5744e0a443d0"
    assert session_key({}, None, chat("x" * 3000, "hi"), 1) == "pf7fe611a87abaaa2db5ddee6675c2b61"


def test_the_same_bytes_under_another_kind_is_another_key() -> None:
    value = "same-value"
    h = session_key({"x-glm-session": value}, None, {}, 1)
    a = session_key({"x-claude-code-session-id": value}, None, {}, 1)
    b = session_key({}, value, {}, 1)
    assert (h, a, b) == (
        fresh("h", b"same-value"),
        fresh("a", b"same-value"),
        fresh("b", b"same-value"),
    )


def test_past_what_is_kept_every_key_is_still_the_same() -> None:
    values = [f"session-{i}" for i in range(DIGESTS_KEPT + 50)]
    first = [session_key({"x-glm-session": v}, None, {}, 1) for v in values]
    again = [session_key({"x-glm-session": v}, None, {}, 1) for v in reversed(values)]
    assert first == [fresh("h", v.encode()) for v in values]
    assert again == first[::-1]
    assert affinity._digest.cache_info().currsize <= DIGESTS_KEPT


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(["x-glm-session", "x-claude-code-session-id", "x-codex-window-id"]),
    value=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40),
    repeat=st.integers(1, 3),
)
def test_a_header_key_is_its_blake2b_however_often_asked(
    kind: str, value: str, repeat: int
) -> None:
    prefix = "h" if kind == "x-glm-session" else "a"
    for _ in range(repeat):
        assert session_key({kind: value}, None, {}, 1) == fresh(prefix, value.encode())


@settings(max_examples=200, deadline=None)
@given(system=st.text(max_size=1500), user=st.text(max_size=300), repeat=st.integers(1, 3))
def test_a_prefix_key_is_its_blake2b_however_often_asked(
    system: str, user: str, repeat: int
) -> None:
    body = chat(system, user)
    stable = affinity._stable_prefix(body, 1)
    for _ in range(repeat):
        assert session_key({}, None, body, 1) == fresh("p", stable)
