"""The access line's roundings (``_ms``, ``_round``) against ``round`` itself, to the last bit:
any float, ties and near-ties, zeros of both signs, tiny negatives, inf and nan."""

from __future__ import annotations

import math
import struct

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.observability.access import _ms, _round


def bits(x: float) -> bytes:
    return b"nan" if x != x else struct.pack("d", x)


near_ties = st.builds(
    lambda k, scale, nudge: (k + 0.5) / scale + nudge,
    st.integers(-(10**9), 10**9),
    st.sampled_from([10.0, 1e6, 1e8]),
    st.sampled_from([0.0, 1e-15, -1e-15, 1e-13, -1e-13]),
)
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), near_ties)


@settings(max_examples=3000, deadline=None)
@given(values)
@example(0.0)
@example(-0.0)
@example(-1e-10)  # rounds to -0.0
@example(-2.5e-7)
@example(5e-324)
@example(math.inf)
@example(-math.inf)
@example(math.nan)
@example(1e9 - 0.0005)
@example(0.0005)
@example(0.0625)
def test_each_rounding_is_round_to_the_last_bit(v: float) -> None:
    assert bits(_ms(v)) == bits(round(v * 1000, 3)), v
    assert bits(_round(v, 1e8, 8)) == bits(round(v, 8)), v
    assert bits(_round(v, 10.0, 1)) == bits(round(v, 1)), v
    assert bits(_round(v, 1000.0, 3)) == bits(round(v, 3)), v
