"""The chat front-end's parse: its ``Inbound`` built slot by slot (``plain_inbound``) is the one
the dataclass builds, and the session is :func:`body_session`'s, with the call skipped when the
body names none."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.frontends.base import Inbound, body_session, plain_inbound
from gateway.frontends.chat import ChatFrontEnd

_VALUE = st.one_of(st.none(), st.text(max_size=3), st.integers(), st.just(["x"]))


@given(
    body=st.fixed_dictionaries(
        {"messages": st.just([{"role": "user", "content": "hi"}])},
        optional={
            "prompt_cache_key": _VALUE,
            "user": _VALUE,
            "stream": st.sampled_from([True, False, None]),
        },
    )
)
def test_parse_is_the_dataclass_s_inbound(body: dict[str, Any]) -> None:
    got = ChatFrontEnd().parse(body, {})
    want = Inbound(body, body.get("stream") is True, session=body_session(body))
    assert got == want  # every field (the dataclass's __eq__)
    assert got.chat is body and got.headers is not ChatFrontEnd().parse(body, {}).headers


def test_every_field_is_set() -> None:
    """A field added to :class:`Inbound` and not set by ``plain_inbound`` fails here."""
    got = plain_inbound({}, True, "s")
    for f in dataclasses.fields(Inbound):
        getattr(got, f.name)  # AttributeError when it misses one
    assert got == Inbound({}, True, session="s")
