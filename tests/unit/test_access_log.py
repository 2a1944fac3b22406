"""The access line after the per-request trimming: the same fields and values as the record
built through ``logging`` one line at a time, written once per event-loop turn to the access
logger's own handlers, in order, with the logger's level as the switch."""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import math
import random
import re
import struct
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from _pytest.logging import LogCaptureHandler

from gateway.catalogue.loader import load_config
from gateway.catalogue.schema import LoggingConfig
from gateway.catalogue.target import Target
from gateway.observability.access import AccessLog, _ms, _round
from gateway.observability.logs import (
    ATOMIC_WRITE,
    AccessWriter,
    StderrHandler,
    UTCNow,
    configure_logging,
)
from gateway.observability.metrics import Metrics
from gateway.observability.stats import Sample, Stats
from gateway.observability.timing import StageTimes
from gateway.routing import failures as fl
from gateway.routing.planner import Plan
from gateway.routing.router import Attempt, RouteState
from tests.support.procs import CONFIG

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$")
_names = itertools.count()


@pytest.fixture(scope="module")
def targets() -> tuple[Target, ...]:
    return load_config(CONFIG, demo_simulator_url="http://127.0.0.1:9").catalogue.targets


class Stream(io.StringIO):
    """A stream that counts writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A fresh logger, INFO, not propagating (the gateway's set-up without the global one)."""
    lg = logging.getLogger(f"test_access_log.{next(_names)}")
    lg.setLevel(logging.INFO)
    lg.propagate = False
    yield lg
    lg.handlers.clear()


def plain(logger: logging.Logger, formatter: logging.Formatter | None = None) -> Stream:
    """A stream handler on ``logger`` (no formatter writes the message as it is)."""
    stream = Stream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    without_pytest(logger)
    logger.addHandler(handler)
    return stream


def without_pytest(logger: logging.Logger) -> None:
    """pytest adds its capture handler to every logger that does not propagate, which sends
    access lines down the ``logging`` path; these tests are about the other one."""
    logger.handlers[:] = [h for h in logger.handlers if not isinstance(h, LogCaptureHandler)]


def writer_for(logger: logging.Logger) -> AccessWriter:
    assert logger.name
    return AccessWriter(logger.name)


# --- the line ------------------------------------------------------------------------------


def reference_line(
    status: int, stream: bool, duration_s: float, rs: RouteState | None, error: str | None,
    times: StageTimes | None,
) -> dict[str, Any]:  # fmt: skip
    """The line as ``AccessLog`` built it before (Durations/Record), without ``time``."""
    t = times or StageTimes()
    upstream, backoff = t.relay_wait_s, 0.0
    if rs is not None:
        upstream += sum(a.duration_s for a in rs.attempts)
        backoff = rs.backoff_s
    overhead = max(0.0, duration_s - upstream - backoff)
    variant = provider = "none"
    tin = tout = 0
    cost = 0.0
    target = rs.target if rs else None
    if rs is not None and target is not None:
        variant, provider = target.variant.id, target.provider
        u = rs.usage or {}
        p, c = u.get("prompt_tokens"), u.get("completion_tokens")
        tin, tout = (p if isinstance(p, int) else 0), (c if isinstance(c, int) else 0)
        cost = target.cost_usd(tin, tout)
    first = rs.attempts[0] if rs is not None and len(rs.attempts) > 1 else None
    fallback = None
    if rs is not None and first is not None and first.failure is not None:
        fallback = {"reason": first.failure.cls.value, "from": first.target.id,
                    "from_variant": first.target.variant.id,
                    "to": rs.target.id if rs.target is not None else "none",
                    "to_variant": variant}  # fmt: skip

    def ms(s: float) -> float:
        return round(s * 1000, 3)

    return {
        "event": "request", "request_id": "req_1", "key_id": "team-a", "status": status,
        "stream": stream, "variant": variant, "provider": provider,
        "attempts": [a.describe() for a in rs.attempts] if rs else [], "fallback": fallback,
        "adaptations": rs.adaptations if rs else [], "usage": rs.usage if rs else None,
        "tokens_in": tin, "tokens_out": tout, "tokens_cached": 0, "cost_usd": round(cost, 8),
        "duration_ms": ms(duration_s),
        "durations": {
            "total_ms": ms(duration_s), "overhead_ms": ms(overhead), "parse_ms": ms(t.parse_s),
            "route_ms": ms(t.route_s), "state_ms": ms(t.state_s), "upstream_ms": ms(upstream),
            "backoff_ms": ms(backoff), "ttft_ms": None if t.ttft_s is None else ms(t.ttft_s),
            "inter_chunk_mean_ms": None if t.gap_mean_s is None else ms(t.gap_mean_s),
            "inter_chunk_max_ms": ms(t.gap_max_s) if t.chunks else None,
        },
        "error": error, "api": "chat",
    }  # fmt: skip


def scenarios(targets: tuple[Target, ...]) -> Iterator[tuple[Any, ...]]:
    """(status, stream, duration, route state, error, times) for the shapes a request ends in."""
    rng = random.Random(5)
    priced = next(t for t in targets if t.price is not None and t.price.input > 0)
    other = next(t for t in targets if t.variant.id != priced.variant.id)
    busy = fl.Failure(fl.FailureClass.OVERLOADED, 503, "1305", "busy")
    for _ in range(40):
        times = StageTimes(parse_s=rng.random() / 1e3, route_s=rng.random() / 1e4,
                           before_s=rng.random() / 1e4, after_s=rng.random() / 1e4,
                           planned=True)  # fmt: skip
        rs = RouteState(Plan(candidates=[]))
        rs.attempts = [Attempt(priced, 200, None, rng.random() / 10)]
        rs.target, rs.adaptations = priced, ["max_tokens"]
        rs.usage = {"prompt_tokens": rng.randrange(5000), "completion_tokens": rng.randrange(900)}
        yield 200, False, rng.random(), rs, None, times
        streamed = StageTimes(**{**vars_of(times), "ttft_s": rng.random()})
        for _ in range(rng.randrange(1, 30)):
            streamed.chunk_waited(rng.random() / 100)
        fell = RouteState(Plan(candidates=[]))
        fell.attempts = [Attempt(other, 503, busy, rng.random() / 50), *rs.attempts]
        fell.target, fell.usage, fell.backoff_s = priced, rs.usage, rng.random() / 10
        yield 200, True, 1 + rng.random(), fell, None, streamed
        failed = RouteState(Plan(candidates=[]))
        failed.attempts = fell.attempts[:1] * 2
        yield 503, False, rng.random(), failed, "all_candidates_failed", times
    yield 401, False, 0.0004, None, "invalid_api_key", None


def vars_of(t: StageTimes) -> dict[str, Any]:
    return {k: getattr(t, k) for k in StageTimes.__slots__}  # type: ignore[attr-defined]


def test_the_line_has_the_same_fields_and_values_as_before(
    targets: tuple[Target, ...], logger: logging.Logger
) -> None:
    stream = plain(logger)
    log = AccessLog(Metrics(), writer=writer_for(logger))
    expected = []
    for status, streamed, duration, rs, error, times in scenarios(targets):
        expected.append(reference_line(status, streamed, duration, rs, error, times))
        log.emit(request_id="req_1", key_id="team-a", status=status, stream=streamed,
                 duration_s=duration, rs=rs, error=error, times=times)  # fmt: skip
    lines = stream.getvalue().splitlines()
    assert len(lines) == len(expected)
    for line, want in zip(lines, expected, strict=True):
        got = orjson.loads(line)
        assert RFC3339.match(got.pop("time"))
        assert list(got) == list(want)  # same keys, same order
        assert got == want
        assert orjson.dumps(got) == orjson.dumps(want)


def test_rounding_matches_round_to_the_last_bit() -> None:
    rng = random.Random(3)
    values = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e-12, 1e20, 0.0625, 0.0005, 2.5e-6]
    for _ in range(20000):
        k = rng.randrange(10**8)
        values += [rng.lognormvariate(-5, 3), (k + 0.5) / 1e6, (k + 0.5) / 1e8, -rng.random()]
        values.append((k + 0.5) / 1e6 + rng.choice([-1, 1]) * rng.random() * 1e-15)
        values += [(k % 10**5 + 0.5) / 10, (k % 10**5 + 0.5) / 10 + rng.random() * 1e-12]

    def bits(x: float) -> bytes:
        return b"nan" if x != x else struct.pack("d", x)

    for v in values:
        assert bits(_ms(v)) == bits(round(v * 1000, 3)), v
        assert bits(_round(v, 1e8, 8)) == bits(round(v, 8)), v
        if v > 0:  # an attempt's duration_ms (a negative one goes to round itself)
            assert bits(_round(v, 10.0, 1)) == bits(round(v, 1)), v


def test_time_is_written_as_orjson_wrote_datetime_now_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    now = UTCNow()
    rng = random.Random(9)
    for _ in range(2000):
        ns = rng.randrange(1_600_000_000 * 10**9, 2_000_000_000 * 10**9)
        if rng.random() < 0.2:
            ns -= ns % 10**9  # on the second: no fraction
        monkeypatch.setattr(time, "time_ns", lambda ns=ns: ns)
        micros = ns // 1000
        dt = datetime.fromtimestamp(micros // 10**6, UTC).replace(microsecond=micros % 10**6)
        assert orjson.dumps(now()) == orjson.dumps(dt)


def test_stats_count_is_stats_add_without_the_sample() -> None:
    clock = lambda: 1_000_000.0  # noqa: E731
    a, b = Stats(clock), Stats(clock)
    for i in range(50):
        s = Sample(status=(200, 429, 502)[i % 3], variant=f"v{i % 4}", provider="p",
                   duration_s=i / 100, overhead_s=i / 1e4, fallback=i % 5 == 0,
                   tokens_in=i, tokens_out=2 * i, cost_usd=i / 1e5,
                   ttft_s=None if i % 2 else i / 50,
                   failed_providers=("zai",) if i % 5 == 0 else ())  # fmt: skip
        a.add(s)
        b.count(s.status, s.variant, s.provider, s.duration_s, s.overhead_s, s.fallback,
                s.tokens_in, s.tokens_out, s.cost_usd, s.ttft_s, s.failed_providers)  # fmt: skip
    a._clock = b._clock = lambda: 1_000_001.0
    assert a.snapshot() == b.snapshot()


# --- writing -----------------------------------------------------------------------------------


def test_a_burst_in_one_loop_turn_is_one_write_in_order(logger: logging.Logger) -> None:
    stream = plain(logger)
    w = writer_for(logger)

    async def burst() -> None:
        for i in range(16):
            w.add(orjson.dumps({"n": i}))
        assert stream.writes == 0  # still this turn
        await asyncio.sleep(0)
        assert stream.writes == 1
        w.add(b'{"n":16}')
        await asyncio.sleep(0)

    asyncio.run(burst())
    assert stream.writes == 2
    assert [orjson.loads(x)["n"] for x in stream.getvalue().splitlines()] == list(range(17))


def test_a_burst_over_pipe_buf_is_cut_at_lines_into_atomic_writes(logger: logging.Logger) -> None:
    # serve --workers N: N processes write one stderr pipe; a write over PIPE_BUF may be
    # interleaved with another's, so no write may be longer, nor split a line.
    stream = plain(logger)
    w = writer_for(logger)
    sizes: list[int] = []
    real_write = stream.write

    def write(s: str) -> int:
        sizes.append(len(s.encode()))
        return real_write(s)

    stream.write = write  # type: ignore[method-assign]

    async def burst() -> None:
        for i in range(60):
            w.add(orjson.dumps({"n": i, "pad": "x" * (i * 7 % 300)}))
        w.add(orjson.dumps({"n": 60, "pad": "y" * 5000}))  # longer than one atomic write
        await asyncio.sleep(0)

    asyncio.run(burst())
    assert len(sizes) > 2
    assert all(n <= ATOMIC_WRITE for n in sizes[:-1]) and sizes[-1] > ATOMIC_WRITE
    written = stream.getvalue()
    assert written.endswith("\n") and all(chunk.endswith("\n") for chunk in _chunks(written, sizes))
    assert [orjson.loads(x)["n"] for x in written.splitlines()] == list(range(61))


def _chunks(text: str, sizes: list[int]) -> list[str]:
    data, out, at = text.encode(), [], 0
    for n in sizes:
        out.append(data[at : at + n].decode())
        at += n
    return out


def test_without_a_running_loop_each_line_is_written_at_once(logger: logging.Logger) -> None:
    stream = plain(logger)
    w = writer_for(logger)
    w.add(b'{"a":1}')
    assert stream.getvalue() == '{"a":1}\n'


def test_lines_left_on_a_loop_that_stopped_are_written_with_the_next_ones(
    logger: logging.Logger,
) -> None:
    stream = plain(logger)
    w = writer_for(logger)
    stopped = asyncio.new_event_loop()

    async def one(n: int) -> None:
        w.add(orjson.dumps({"n": n}))

    stopped.run_until_complete(one(0))  # the flush was queued; the loop never runs it
    stopped.close()
    asyncio.run(one(1))
    assert [orjson.loads(x)["n"] for x in stream.getvalue().splitlines()] == [0, 1]


def test_the_loggers_level_is_the_switch(logger: logging.Logger) -> None:
    stream = plain(logger)
    log = AccessLog(Metrics(), writer=writer_for(logger))
    logger.setLevel(logging.WARNING)
    log.emit(request_id="r", key_id="k", status=200, stream=False, duration_s=0.1, rs=None,
             error=None)  # fmt: skip
    assert stream.getvalue() == ""
    logger.setLevel(logging.INFO)
    log.emit(request_id="r", key_id="k", status=200, stream=False, duration_s=0.1, rs=None,
             error=None)  # fmt: skip
    assert orjson.loads(stream.getvalue())["request_id"] == "r"


def test_the_text_format_writes_the_short_line(configure: Callable[[str], Stream]) -> None:
    stream = configure("text")
    AccessLog(Metrics()).emit(
        request_id="req_9", key_id="k", status=401, stream=False, duration_s=0.0012, rs=None,
        error="invalid_api_key",
    )  # fmt: skip
    line = stream.getvalue()
    assert " INFO access 401 none@none 1.2ms tokens=0/0 $0.0 key=k req=req_9" in line
    assert line.endswith("error=invalid_api_key\n") and line.count("\n") == 1


def test_a_handler_above_info_gets_nothing(logger: logging.Logger) -> None:
    loud, quiet = plain(logger), plain(logger)
    logger.handlers[-1].setLevel(logging.WARNING)
    writer_for(logger).add(b'{"a":1}')
    assert loud.getvalue() == '{"a":1}\n' and quiet.getvalue() == ""


def test_any_other_handler_gets_each_line_through_logging_at_once(
    logger: logging.Logger,
) -> None:
    got: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record.getMessage())

    stream = plain(logger)
    logger.addHandler(Keep())
    w = writer_for(logger)

    async def two() -> None:
        w.add(b'{"a":1}')
        w.add(b'{"a":2}')
        assert got == ['{"a":1}', '{"a":2}']  # not held for the end of the turn

    asyncio.run(two())
    assert stream.getvalue() == '{"a":1}\n{"a":2}\n'  # and the stream still gets them


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Stream]]:
    """``configure_logging("info", <format>)`` onto a stream, undone afterwards."""
    names = ("glm_gateway", "uvicorn", "uvicorn.error")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level,
                 logging.getLogger(n).propagate) for n in names}  # fmt: skip

    def setup(fmt: str) -> Stream:
        stream = Stream()
        monkeypatch.setattr(sys, "stderr", stream)
        configure_logging("info", LoggingConfig(format=fmt))  # type: ignore[arg-type]
        for name in names:
            without_pytest(logging.getLogger(name))
        return stream

    yield setup
    for n, (handlers, level, propagate) in saved.items():
        lg = logging.getLogger(n)
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


def test_the_gateways_set_up_writes_the_json_line_and_keeps_the_order(
    configure: Callable[[str], Stream],
) -> None:
    configured = configure("json")
    assert isinstance(logging.getLogger("glm_gateway").handlers[0], StderrHandler)
    log = AccessLog(Metrics())

    async def turn() -> None:
        for n in (1, 2):
            log.emit(request_id=f"req_{n}", key_id="k", status=200, stream=False,
                     duration_s=0.01, rs=None, error=None)  # fmt: skip
            logging.getLogger("uvicorn.error").warning("after request %d", n)
        assert configured.writes == 4  # each warning wrote the access line before it first
        log.emit(request_id="req_3", key_id="k", status=200, stream=False, duration_s=0.01,
                 rs=None, error=None)  # fmt: skip
        await asyncio.sleep(0)

    asyncio.run(turn())
    got = [orjson.loads(x) for x in configured.getvalue().splitlines()]
    assert [r.get("request_id") or r["msg"] for r in got] == [
        "req_1",
        "after request 1",
        "req_2",
        "after request 2",
        "req_3",
    ]
    assert got[0]["event"] == "request" and RFC3339.match(got[0]["time"])
