"""``parse_body`` walks the body for its depth only when its brackets could nest that deep: a
body is refused exactly when it nests deeper than ``limits.max_json_depth``."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.catalogue.body import parse_body
from gateway.catalogue.schema import RequestLimits
from gateway.errors import InvalidRequest

LIMITS = RequestLimits(max_json_depth=4)
_JSON = st.recursive(
    st.one_of(st.none(), st.integers(-5, 5), st.text(alphabet="{[]}ab", max_size=3)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=2), inner, max_size=3)
    ),
    max_leaves=12,
)


def depth(node: Any) -> int:
    if isinstance(node, dict):
        return 1 + max(map(depth, node.values()), default=0)
    if isinstance(node, list):
        return 1 + max(map(depth, node), default=0)
    return 0


@given(st.dictionaries(st.text(max_size=2), _JSON, max_size=3))
def test_refused_exactly_when_deeper_than_the_limit(obj: dict[str, Any]) -> None:
    raw = orjson.dumps(obj)
    if depth(obj) > LIMITS.max_json_depth:
        with pytest.raises(InvalidRequest, match="nested too deeply") as got:
            parse_body(raw, LIMITS)
        assert (got.value.code, got.value.param) == ("too_deep", "body")
    else:
        assert parse_body(raw, LIMITS) == obj


def test_brackets_in_strings_alone_do_not_refuse() -> None:
    raw = orjson.dumps({"a": "[[[[[[{{{{{{"})
    assert parse_body(raw, LIMITS) == {"a": "[[[[[[{{{{{{"}
    with pytest.raises(InvalidRequest, match="nested too deeply"):
        parse_body(b'{"a":[[[[{}]]]]}', LIMITS)
