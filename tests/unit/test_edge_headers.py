"""``HeaderReader.read`` (decoded names and plain values kept) against ``header_map``: for any
sequence of requests' headers, repeated or not, any bounds, the same dict each time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.edge.asgi import _PLAIN_VALUES, HeaderReader, header_map

NAMES = [n.encode() for n in sorted(_PLAIN_VALUES)] + [
    b"authorization",
    b"x-api-key",
    b"x-request-id",
    b"x-glm-prefer",
    b"\xe9t\xe9",
]
VALUES = [b"", b"1", b"application/json", b"Bearer sk-1", b"caf\xe9", b"\xff\x00"]
header = st.tuples(
    st.sampled_from(NAMES) | st.binary(max_size=6), st.sampled_from(VALUES) | st.binary(max_size=6)
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(header, max_size=8), min_size=1, max_size=6),
    st.integers(0, 4),
    st.integers(0, 4),
)
def test_read_is_header_map(
    requests: list[list[tuple[bytes, bytes]]], names: int, values: int
) -> None:
    reader = HeaderReader(names, values)
    for headers in requests + requests:  # the second time round, from what was kept
        scope = {"headers": [(bytes(k), bytes(v)) for k, v in headers]}
        got = reader.read(scope)
        assert got == header_map(scope)
        assert list(got) == list(header_map(scope))


def test_secrets_are_not_kept() -> None:
    reader = HeaderReader()
    reader.read({"headers": [(b"authorization", b"Bearer sk-secret"), (b"host", b"h")]})
    assert reader._values == {b"h": "h"}
    assert set(reader._names) == {b"authorization", b"host"}


def test_the_bounds_hold() -> None:
    reader = HeaderReader(2, 3)
    for i in range(10):
        got = reader.read({"headers": [(b"x-%d" % i, b"v"), (b"content-length", b"%d" % i)]})
        assert got == {f"x-{i}": "v", "content-length": str(i)}
    assert len(reader._names) == 2 and len(reader._values) == 3
