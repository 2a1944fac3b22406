"""The access record's clean-request path (one attempt, answered, no error) against the general
path: for any sequence of finished requests, the same log lines byte for byte, the same
``/metrics`` text (series created in the same order) and the same dashboard stats."""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from gateway.catalogue.loader import load_config
from gateway.catalogue.target import Target, bill, cached_tokens
from gateway.observability.access import AccessLog
from gateway.observability.logs import AccessWriter, UTCNow
from gateway.observability.metrics import HISTOGRAM_QUEUE, BoundedLabel, Metrics
from gateway.observability.stats import Stats
from gateway.observability.timing import StageTimes
from gateway.routing import failures as fl
from gateway.routing.planner import Plan
from gateway.routing.router import Attempt, RouteState
from tests.support.procs import CONFIG
from tests.unit.test_access_log import Stream

TARGETS = load_config(CONFIG, demo_simulator_url="http://127.0.0.1:9").catalogue.targets
PRICED = [t for t in TARGETS if t.price is not None and t.price.input > 0][:2]
PICKED: list[Target] = [*PRICED, *[t for t in TARGETS if t.price is None][:1], TARGETS[-1]]
BUSY = fl.Failure(fl.FailureClass.OVERLOADED, 503, "1305", "busy, key sk-abcdefghijklmnop1234")
_names = itertools.count()

seconds = st.floats(min_value=0.0, max_value=5.0, allow_nan=False)
small = st.floats(min_value=0.0, max_value=0.01, allow_nan=False)
counts = st.integers(min_value=0, max_value=100_000)
usages = st.one_of(
    st.none(),
    st.just({}),
    st.fixed_dictionaries(
        {"prompt_tokens": counts, "completion_tokens": counts},
        optional={
            "prompt_tokens_details": st.fixed_dictionaries({"cached_tokens": counts}),
            "total_tokens": counts,
            "cache_read_input_tokens": counts,
        },
    ),
)


@st.composite
def times(draw: st.DrawFn) -> StageTimes | None:
    if draw(st.integers(0, 9)) == 0:
        return None
    t = StageTimes(
        parse_s=draw(small), route_s=draw(small), before_s=draw(small), after_s=draw(small),
        planned=draw(st.booleans()),
    )  # fmt: skip
    if draw(st.booleans()):
        t.ttft_s = draw(seconds)
        for waited in draw(st.lists(small, max_size=5)):
            t.chunk_waited(waited)
    return t


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """One finished request as ``emit`` takes it; clean ones most of the time."""
    shape = draw(st.sampled_from(["clean"] * 5 + ["fell", "failed", "none", "cut"]))
    target = draw(st.sampled_from(PICKED))
    rs: RouteState | None = RouteState(Plan(candidates=[]))
    assert rs is not None
    status, error = 200, None
    ok = Attempt(target, 200, None, draw(small))
    if shape == "clean":
        rs.attempts, rs.target = [ok], target
    elif shape == "fell":
        other = draw(st.sampled_from(PICKED))
        rs.attempts, rs.target = [Attempt(other, 503, BUSY, draw(small)), ok], target
        rs.backoff_s = draw(small)
    elif shape == "failed":
        rs.attempts = [Attempt(target, 503, BUSY, draw(small))]
        status, error = 503, "all_candidates_failed"
    elif shape == "cut":  # answered, then the client went away
        rs.attempts, rs.target = [ok], target
        status, error = 499, "client_disconnected"
    else:
        rs, status, error = None, draw(st.sampled_from([400, 401, 429])), "invalid_request"
    if rs is not None:
        rs.usage = draw(usages)
        rs.adaptations = draw(st.sampled_from([[], ["max_tokens"], ["tool_choice", "top_k"]]))
    return {
        "request_id": draw(st.sampled_from(["req_1", 'odd "id"\n', "é" * 3])),
        "key_id": draw(st.sampled_from(["master", "team-a", "team-b"])),
        "status": status,
        "stream": draw(st.booleans()),
        "duration_s": draw(seconds),
        "rs": rs,
        "error": error,
        "times": draw(times()),
        "client": draw(st.sampled_from([None, "127.0.0.1", "203.0.113.9"])),
        "api": draw(st.sampled_from(["chat", "messages", "responses"])),
    }


def access_log(fast: bool) -> tuple[AccessLog, Stream]:
    logger = logging.getLogger(f"test_access_fast.{next(_names)}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    stream = Stream()
    logger.handlers[:] = [logging.StreamHandler(stream)]
    metrics = Metrics()
    metrics.key_label = BoundedLabel(2)  # the third key is "other" in the token series
    log = AccessLog(
        metrics, stats=Stats(clock=lambda: 1_000_000.0), writer=AccessWriter(logger.name)
    )
    log.fast = fast
    log._now = FixedNow()
    return log, stream


class FixedNow(UTCNow):
    """Times on one second: a fraction, none, a small one, in turn (both paths ask as often)."""

    __slots__ = ("_micros",)

    def __init__(self) -> None:
        super().__init__()
        self._micros = itertools.cycle([123456, 0, 7])

    def parts(self) -> tuple[bytes, int]:
        return b"2026-12-06T18:00:00", next(self._micros)


@settings(max_examples=150, deadline=None)
@given(st.lists(requests(), min_size=1, max_size=12))
def test_the_clean_path_writes_what_the_general_path_writes(batch: list[dict[str, Any]]) -> None:
    fast, fast_out = access_log(True)
    general, general_out = access_log(False)
    for req in batch:
        fast.emit(**req)
        general.emit(**req)
    assert fast_out.getvalue() == general_out.getvalue()
    assert generate_latest(fast._m.registry) == generate_latest(general._m.registry)
    assert fast.stats.snapshot() == general.stats.snapshot()


def test_the_clean_path_is_taken_and_keeps_its_series() -> None:
    log, out = access_log(True)
    target = PRICED[0]
    rs = RouteState(Plan(candidates=[]))
    rs.attempts, rs.target = [Attempt(target, 200, None, 0.002)], target
    rs.usage = {"prompt_tokens": 10, "completion_tokens": 5}
    for _ in range(3):
        log.emit(request_id="r", key_id="k", status=200, stream=False, duration_s=0.01,
                 rs=rs, error=None, times=StageTimes(planned=True))  # fmt: skip
    assert len(log._clean) == 1
    assert len(out.getvalue().splitlines()) == 3


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PICKED), usages)
def test_the_bill_is_what_settlement_and_access_each_worked_out(
    target: Target, usage: dict[str, Any] | None
) -> None:
    """``bill`` (worked out once by the router) against the figures settlement and the access
    record each computed for themselves before."""
    p = usage.get("prompt_tokens") if usage else None
    c = usage.get("completion_tokens") if usage else None
    tokens_in, tokens_out = (p if isinstance(p, int) else 0), (c if isinstance(c, int) else 0)
    cached = min(cached_tokens(usage), tokens_in)
    got = bill(target, usage)
    assert got[:3] == (tokens_in, tokens_out, cached)
    assert got[3] / 1e6 == target.cost_usd(tokens_in, tokens_out, cached)  # the access log's
    counted = isinstance(p, int) and isinstance(c, int)
    assert got[4] == counted
    if counted:  # the settlement's charge
        assert isinstance(p, int) and isinstance(c, int)
        want = math.ceil(target.cost_micros(p, c, cached_tokens(usage)))
        assert math.ceil(got[3]) == want


def _clean_request(target: Target, tokens: tuple[int, int, int]) -> dict[str, Any]:
    rs = RouteState(Plan(candidates=[]))
    rs.attempts, rs.target = [Attempt(target, 200, None, 0.002)], target
    details = {"cached_tokens": tokens[2]}
    rs.usage = {"prompt_tokens": tokens[0], "completion_tokens": tokens[1],
                "prompt_tokens_details": details}  # fmt: skip
    return {"request_id": "r", "key_id": "k", "status": 200, "stream": False, "duration_s": 0.01,
            "rs": rs, "error": None, "times": StageTimes(planned=True, parse_s=1e-4)}  # fmt: skip


def test_every_series_the_clean_path_holds_reads_its_counts_on_its_own() -> None:
    """Counts held on the clean handles are added when any one of their series is read by
    itself (not only when a whole registry is collected): each series read alone, first."""
    target = PRICED[0]
    v, p = target.variant.id, target.provider
    for name, labels in [
        ("requests", (v, p, "200", "false", "chat")),
        ("attempts", (v, p, "ok")),
        ("tokens", (v, p, "k", "in")),
        ("tokens", (v, p, "k", "out")),
        ("tokens", (v, p, "k", "cached")),
        ("duration", (v, "false")),
        ("stage", ("parse",)),
        ("stage", ("upstream_wait",)),
    ]:
        for n in (1, 3):
            fast, _ = access_log(True)
            general, _ = access_log(False)
            for log in (fast, general):
                for _ in range(n):
                    log.emit(**_clean_request(target, (10, 5, 4)))
            fast_read = list(getattr(fast._m, name).labels(*labels)._child_samples())
            general_read = list(getattr(general._m, name).labels(*labels)._child_samples())
            assert fast_read == general_read, (name, labels)


def test_the_clean_path_counts_what_it_holds_every_histogram_queue_requests() -> None:
    """Nothing read for a long while: what clean requests hold and queue stays bounded."""
    log, _ = access_log(True)
    req = _clean_request(PRICED[0], (10, 5, 0))
    for _ in range(HISTOGRAM_QUEUE * 3 + 7):
        log.emit(**req)
    assert len(log._held) <= 1
    assert all(len(s._queued) < HISTOGRAM_QUEUE for s in log._queues.values())
    assert log._since == 7
