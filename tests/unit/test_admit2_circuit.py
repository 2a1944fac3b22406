"""Circuit.record counts the attempt in its request window without Window.add's call when the
bucket is the one pruned last: the windows, and so every decision, as Window.add leaves them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.catalogue.schema import BreakerConfig
from gateway.state.base import LATENCY_ALPHA, Outcome
from gateway.state.circuits import Circuit


def _record_as_before(c: Circuit, cfg: BreakerConfig, o: Outcome, now: float) -> None:
    """Circuit.record as it was (462ffcb): the request counted by Window.add."""
    c.requests += 1
    c.window_r.add(now, 1)
    if o.ok:
        latency = c.latency
        lat = o.latency_s
        c.latency = lat if latency is None else latency + LATENCY_ALPHA * (lat - latency)
        c.consecutive = 0
        if c.open_until <= now:
            c.trips = 0
            c.open_until = c.probe_until = 0.0
    else:
        c._failure(cfg, o, now)


def _state(c: Circuit) -> tuple[object, ...]:
    w, f = c.window_r, c.window_f
    return (
        c.consecutive, c.trips, c.open_until, c.probe_until, c.latency, c.requests, c.failures,
        c.last_failure, list(w.buckets.items()), w.pruned, list(f.buckets.items()), f.pruned,
    )  # fmt: skip


steps = st.lists(
    st.tuples(
        st.one_of(
            st.floats(0, 3, allow_nan=False),  # within a bucket or two
            st.sampled_from([0.0, 4.999999, 5.0, 60.0, 61.0]),  # edges, and past the window
        ),
        st.booleans(),
        st.floats(0.001, 30, allow_nan=False),
        st.one_of(st.none(), st.floats(0.5, 90, allow_nan=False)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps=steps, start=st.floats(1e9, 2e9, allow_nan=False), size=st.sampled_from([1, 5]))
def test_record_leaves_what_window_add_left(
    steps: list[tuple[float, bool, float, float | None]], start: float, size: int
) -> None:
    cfg = BreakerConfig(error_window_s=size * 12, error_min_requests=3)
    got, want = Circuit(size), Circuit(size)
    now = start
    for dt, ok, lat, cooldown in steps:
        now += dt
        o = Outcome("t", ok, lat, None if ok else "server", None if ok else cooldown)
        got.record(cfg, o, now)
        _record_as_before(want, cfg, o, now)
        assert _state(got) == _state(want)


def test_the_named_cases() -> None:
    cfg = BreakerConfig()
    for times in (
        [100.0, 100.0, 100.5],  # the same bucket: the inline case after the first
        [100.0, 160.0, 160.0],  # a new bucket: pruned first
        [100.0, 99.0, 100.0],  # the clock went back a bucket: Window.add's path
        [0.0, 0.0],
    ):
        got, want = Circuit(5), Circuit(5)
        for now in times:
            got.record(cfg, Outcome("t", True, 0.2), now)
            _record_as_before(want, cfg, Outcome("t", True, 0.2), now)
            assert _state(got) == _state(want), times
    c = Circuit(5)
    for _ in range(3):
        c.record(cfg, Outcome("t", True, 0.2), 100.0)
    assert c.window_r.buckets == {20: 3} and c.requests == 3
