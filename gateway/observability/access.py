"""One record per request: metrics, the dashboard's rolling stats, and one JSON log line.

Built once when a request ends (``Endpoint._finish``, edge/endpoint.py), from what routing
recorded (:class:`~gateway.observability.records.RouteRecord`, which the router's
``RouteState`` satisfies) and the stage marks
(:class:`gateway.observability.timing.StageTimes`). No prompt text unless
``logging.log_prompts`` is on.

This runs once per request, so it is kept cheap: the series a request bumps are looked up once
per distinct answer (variant, provider, status, stream) and kept; the metrics are plain numbers
(:mod:`gateway.observability.metrics`); the log line is one ``orjson`` call and leaves with the
rest of the event-loop turn's lines (:class:`~gateway.observability.logs.AccessWriter`).

Secrets: every attempt's failure text was redacted when the router recorded it. The line of a
request with a failed attempt (or that carries the prompt) goes through the
:class:`~gateway.observability.redact.Redactor` once more, as a whole; a successful request's
line does not (nothing upstream-written is in it but ``usage``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.catalogue.target import Target, bill
from gateway.observability.logs import ACCESS_LOGGER, ACCESS_WRITER, AccessWriter, UTCNow
from gateway.observability.metrics import HISTOGRAM_QUEUE, Metrics, PlainCounter, PlainHistogram
from gateway.observability.records import RouteRecord
from gateway.observability.redact import Redactor
from gateway.observability.stats import Stats
from gateway.observability.timing import StageTimes

LOGGER = ACCESS_LOGGER

_NO_TIMES = StageTimes()
"""Marks for a request that had none (read only)."""


class Record:
    """Everything known about one finished request (built once, read by every sink)."""

    __slots__ = (
        "api", "backoff", "cost_usd", "error", "fallback", "key_id", "overhead", "provider",
        "request_id", "rs", "status", "stream", "times", "tokens_cached", "tokens_in",
        "tokens_out", "total", "upstream", "variant",
    )  # fmt: skip

    def __init__(
        self,
        request_id: str,
        key_id: str,
        status: int,
        stream: bool,
        error: str | None,
        rs: RouteRecord | None,
        total: float,
        times: StageTimes,
        api: str = "chat",
    ) -> None:
        self.api = api
        self.request_id, self.key_id, self.status, self.stream = request_id, key_id, status, stream
        self.error, self.rs, self.times, self.total = error, rs, times, total
        upstream = times.relay_wait_s
        backoff = 0.0
        self.variant = self.provider = "none"
        self.tokens_in = self.tokens_out = self.tokens_cached = 0
        self.cost_usd = 0.0
        self.fallback: dict[str, str] | None = None
        if rs is not None:
            waited = 0.0  # summed apart first, as sum() did: the same float
            for a in rs.attempts:
                waited += a.duration_s
            upstream += waited
            backoff = rs.backoff_s
            self._answered_by(rs)
        self.upstream: float = upstream
        """Seconds waiting for providers: every attempt, and a stream's waits after commit."""
        self.backoff: float = backoff
        self.overhead: float = max(0.0, total - upstream - backoff)
        """The gateway's own seconds: total minus upstream and backoff."""

    def _answered_by(self, rs: RouteRecord) -> None:
        target = rs.target
        if target is not None:
            self.variant, self.provider = target.variant.id, target.provider
            billed = rs.bill or bill(target, rs.usage)  # worked out once, for the settlement
            self.tokens_in, self.tokens_out, self.tokens_cached = billed[0], billed[1], billed[2]
            self.cost_usd = billed[3] / 1e6  # target.cost_usd
        if len(rs.attempts) > 1:
            self.fallback = _fallback(rs, self.variant)

    @property
    def other(self) -> float:
        """Gateway seconds outside parse, route and the state call before forwarding (relay,
        adaptation, response); the state call after answering is not in the duration."""
        t = self.times
        return max(0.0, self.overhead - t.parse_s - t.route_s - t.before_s)

    def failed_providers(self) -> tuple[str, ...]:
        rs = self.rs
        if rs is None or not rs.attempts:
            return ()
        if len(rs.attempts) == 1 and rs.attempts[0].failure is None:
            return ()  # the common case, without a generator
        return tuple(a.target.provider for a in rs.attempts if a.failure)

    def line(self, now: str) -> dict[str, Any]:
        """The access-log object; ``now`` is the RFC 3339 time of writing."""
        rs = self.rs
        total_ms = _ms(self.total)
        return {
            "event": "request",
            "time": now,
            "request_id": self.request_id,
            "key_id": self.key_id,
            "status": self.status,
            "stream": self.stream,
            "variant": self.variant,
            "provider": self.provider,
            "attempts": [a.describe() for a in rs.attempts] if rs else [],
            "fallback": self.fallback,
            "adaptations": rs.adaptations if rs else [],
            "usage": rs.usage if rs else None,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "tokens_cached": self.tokens_cached,
            "cost_usd": _round(self.cost_usd, 1e8, 8),
            "duration_ms": total_ms,
            "durations": self.durations(total_ms),
            "error": self.error,
        }

    def durations(self, total_ms: float) -> dict[str, float | None]:
        t = self.times
        gap = t.gap_mean_s
        return {
            "total_ms": total_ms,
            "overhead_ms": _ms(self.overhead),
            "parse_ms": _ms(t.parse_s),
            "route_ms": _ms(t.route_s),
            "state_ms": _ms(t.state_s),
            "upstream_ms": _ms(self.upstream),
            "backoff_ms": _ms(self.backoff),
            "ttft_ms": None if t.ttft_s is None else _ms(t.ttft_s),
            "inter_chunk_mean_ms": None if gap is None else _ms(gap),
            "inter_chunk_max_ms": None if gap is None else _ms(t.gap_max_s),
        }


def _ms(seconds: float) -> float:
    """``round(seconds * 1000, 3)``: milliseconds to the microsecond (:func:`_round` with
    ``scale`` 1000, written out: ten of these per request)."""
    scaled = seconds * 1000.0 * 1000.0
    if 0.0 < scaled < 1e12:
        whole = scaled + _ROUNDER - _ROUNDER
        off = scaled - whole
        if off * off < 0.249:  # |off| < 0.499: no tie within reach of the product's error
            return whole / 1000.0
    return round(seconds * 1000.0, 3)


_ROUNDER = 6755399441055744.0
"""1.5 * 2**52: ``x + _ROUNDER - _ROUNDER`` is ``float(round(x))`` (half to even) for
``|x| < 2**51``, in float arithmetic: no int object, no ``round`` call."""


def _round(x: float, scale: float, digits: int) -> float:
    """``round(x, digits)`` (``scale`` is ``10.0 ** digits``), the same float in a quarter of
    the time.

    ``round`` rounds the exact decimal value of ``x``; an integer ``round`` of ``x * scale``
    agrees with it unless the float error of that product could cross a tie, i.e. unless it
    sits within 0.001 of one (or is out of range, inf or nan): those are left to ``round``, and
    so are negative values (one that rounds to ``-0.0`` keeps its sign there). Both
    divide an integer by ``scale`` correctly rounded.
    """
    if not x:
        return x  # (an unpriced request's cost)
    scaled = x * scale
    if 0.0 < scaled < 1e12:
        whole = scaled + _ROUNDER - _ROUNDER
        off = scaled - whole
        if off * off < 0.249:
            return whole / scale
    return round(x, digits)


@dataclass(slots=True)
class _Answered:
    """The series every request with one (variant, provider, status, stream) bumps (kept: the
    gateway never removes a series)."""

    requests: PlainCounter
    duration: PlainHistogram
    overhead: PlainHistogram


_CLEAN_LINE = b'{"event":"request","time":"%s.%06d+00:00","request_id":%s%s%s'
"""A clean request's line: the time (:meth:`UTCNow.parts`), the id, the middle of its
:class:`_Clean` and the rest of the object; ``_ON_SECOND``: a time with no fraction."""
_CLEAN_LINE_ON_SECOND = b'{"event":"request","time":"%s+00:00","request_id":%s%s%s'

CLEAN_KEPT = 4096
"""Clean-request handles kept (one per variant, provider, status, stream, api and key)."""


class _Clean:
    """What a clean request with one (variant, provider, status, stream, api, key) touches:
    the series (those only some requests bump are looked up at their first use, as the general
    path creates them) and the fixed middle of its log line (``key_id`` .. ``provider``)."""

    __slots__ = (
        "attempt_ok", "cached", "cost", "duration", "inter_chunk", "key", "middle", "n",
        "n_cached", "n_in", "n_out", "overhead", "provider", "queues", "requests", "tokens",
        "ttft", "upstream_wait", "variant",
    )  # fmt: skip

    def __init__(
        self,
        requests: PlainCounter,
        duration: PlainHistogram,
        overhead: PlainHistogram,
        upstream_wait: PlainHistogram,
        attempt_ok: PlainCounter,
        middle: bytes,
        variant: str,
        provider: str,
        key: str,
    ) -> None:
        self.requests, self.duration, self.overhead = requests, duration, overhead
        self.upstream_wait, self.attempt_ok, self.middle = upstream_wait, attempt_ok, middle
        self.variant, self.provider, self.key = variant, provider, key
        self.ttft: PlainHistogram | None = None
        self.inter_chunk: PlainHistogram | None = None
        self.tokens: tuple[PlainCounter, PlainCounter] | None = None
        self.cached: PlainCounter | None = None
        self.cost: PlainCounter | None = None
        self.queues = (duration._queued, overhead._queued, upstream_wait._queued)
        """The three histograms' queues: appended to as ``observe`` would (see
        :class:`~gateway.observability.metrics.PlainHistogram`)."""
        self.n = self.n_in = self.n_out = self.n_cached = 0
        """Requests (each one ``requests`` and one ``attempt_ok``) and tokens counted here
        and not yet added to their series (:meth:`AccessLog._fold`, before any read)."""

    def ttft_series(self, m: Metrics) -> PlainHistogram:
        self.ttft = m.ttft.labels(self.variant, self.provider)
        return self.ttft

    def inter_chunk_series(self, m: Metrics) -> PlainHistogram:
        self.inter_chunk = m.inter_chunk.labels(self.variant, self.provider)
        return self.inter_chunk

    def token_series(self, m: Metrics, fold: Callable[[], None]) -> None:
        v, p, k = self.variant, self.provider, m.key_label(self.key)
        self.tokens = (m.tokens.labels(v, p, k, "in"), m.tokens.labels(v, p, k, "out"))
        self.tokens[0].feed(fold)
        self.tokens[1].feed(fold)

    def cached_series(self, m: Metrics, fold: Callable[[], None]) -> None:
        self.cached = m.tokens.labels(self.variant, self.provider, m.key_label(self.key), "cached")
        self.cached.feed(fold)

    def cost_series(self, m: Metrics) -> PlainCounter:
        self.cost = m.cost.labels(self.variant, self.provider, m.key_label(self.key))
        return self.cost


class AccessLog:
    def __init__(
        self,
        metrics: Metrics,
        *,
        stats: Stats | None = None,
        log_prompts: bool = False,
        writer: AccessWriter | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self._m = metrics
        self._redact = redactor if redactor is not None else Redactor()
        self.stats = stats if stats is not None else Stats()
        self.log_prompts = log_prompts
        """When True the chat handler passes the messages and they are logged (off by default)."""
        self._writer = writer if writer is not None else ACCESS_WRITER
        self._now = UTCNow()
        self._answered: dict[tuple[str, str, int, bool, str], _Answered] = {}
        self._stages: tuple[PlainHistogram, ...] = ()
        """parse, route, state, other: created with the first planned request, as before."""
        self.ledger: Callable[[Record], None] | None = None
        """The spend ledger's hook (PostgreSQL records): every finished request, once."""
        self.fast = True
        """Clean requests (one attempt, answered, no error) take :meth:`_emit_clean`; False
        sends every request through the general path (the tests compare the two)."""
        self._clean: dict[tuple[str, str, int, bool, str, str], _Clean] = {}
        self._stage_queues: tuple[list[float], ...] = ()
        self._held: list[_Clean] = []
        """Clean handles with counts not yet added to their series (:meth:`_fold`)."""
        self._queues: dict[int, PlainHistogram] = {}
        """The histograms clean requests append to directly (counted every
        :data:`~gateway.observability.metrics.HISTOGRAM_QUEUE` clean requests)."""
        self._since = 0
        """Clean requests since those histograms were last counted."""

    def emit(
        self,
        *,
        request_id: str,
        key_id: str,
        status: int,
        stream: bool,
        duration_s: float,
        rs: RouteRecord | None,
        error: str | None,
        times: StageTimes | None = None,
        prompt: Any = None,
        client: str | None = None,
        api: str = "chat",
        unmet: list[str] | None = None,
    ) -> None:
        """Record one finished request: metrics, rolling stats, one JSON log line.

        ``client``: the caller's address (the peer, or what a trusted proxy forwarded);
        ``api``: the front-end it came in on (``chat``, ``messages``)."""
        self.finished(request_id, key_id, status, stream, duration_s, rs, error, times, prompt,
                      client, api, unmet)  # fmt: skip

    def finished(
        self,
        request_id: str,
        key_id: str,
        status: int,
        stream: bool,
        duration_s: float,
        rs: RouteRecord | None,
        error: str | None,
        times: StageTimes | None,
        prompt: Any,
        client: str | None,
        api: str,
        unmet: list[str] | None,
    ) -> None:
        """:meth:`emit` with its arguments in place: the request path's call (a call with a
        dozen keywords costs as much again as the same call without)."""
        if (
            rs is not None
            and error is None
            and times is not None
            and unmet is None
            and self.fast
            and (prompt is None or not self.log_prompts)
        ):
            attempts, target = rs.attempts, rs.target
            if (
                len(attempts) == 1
                and attempts[0].failure is None
                and attempts[0].target is target
                and target is not None
            ):
                self._emit_clean(
                    request_id, key_id, status, stream, duration_s, rs, target, times, client, api
                )
                return
        rec = Record(request_id, key_id, status, stream, error, rs, duration_s,
                     times or _NO_TIMES, api)  # fmt: skip
        self._observe_request(rec)
        self._observe_stages(rec)
        self._observe_routing(rec)
        self._observe_usage(rec)
        self._count(rec)
        if self.ledger is not None:
            self.ledger(rec)
        if self._writer.enabled():
            line = rec.line(self._now())
            line["api"] = api
            if unmet:
                line["unmet"] = unmet
            if client is not None:
                line["client"] = client
            unsure = bool(rec.failed_providers())  # upstream text is in the attempts
            if self.log_prompts and prompt is not None:
                line["prompt"] = prompt
                unsure = True
            data = orjson.dumps(line, default=str)
            if unsure:
                data = self._redact(data.decode()).encode()
            self._writer.add(data)

    def _emit_clean(
        self,
        request_id: str,
        key_id: str,
        status: int,
        stream: bool,
        total: float,
        rs: RouteRecord,
        target: Target,
        times: StageTimes,
        client: str | None,
        api: str,
    ) -> None:
        """:meth:`emit` for a request answered at its one attempt, with no error: what
        :class:`Record` and the sinks compute, in one pass over series looked up once per
        (variant, provider, status, stream, api, key). The same figures, series, stats and line
        as the general path (``tests/unit/test_access_fast.py``)."""
        attempt = rs.attempts[0]
        variant, provider = target.variant.id, target.provider
        upstream = times.relay_wait_s + attempt.duration_s
        backoff = rs.backoff_s
        overhead = max(0.0, total - upstream - backoff)
        usage = rs.usage
        tokens_in, tokens_out, cached, micros, _ = rs.bill or bill(target, usage)
        cost = micros / 1e6  # target.cost_usd
        key = (variant, provider, status, stream, api, key_id)
        h = self._clean.get(key) or self._clean_for(key, times.planned)
        # metrics: in the general path's order (a series is created where it would be there).
        # Whole counts are held on the handle and added before any read (:meth:`_fold`: the
        # same float, added at once); histogram values go on their queues, in order, as
        # ``observe`` puts them.
        if not h.n:
            self._held.append(h)
        h.n += 1  # requests and attempts ok
        queues = h.queues
        queues[0].append(total)
        queues[1].append(overhead)
        m = self._m
        if times.planned:
            stages = self._stage_queues or self._stage_queues_for()
            stages[0].append(times.parse_s)
            stages[1].append(times.route_s)
            stages[2].append(times.before_s + times.after_s)
            stages[3].append(max(0.0, overhead - times.parse_s - times.route_s - times.before_s))
        ttft = times.ttft_s
        if ttft is not None:
            (h.ttft or h.ttft_series(m)).observe(ttft)
        chunks = times.chunks
        if chunks:
            (h.inter_chunk or h.inter_chunk_series(m)).observe(times.relay_wait_s / chunks)
        queues[2].append(upstream)
        if tokens_in or tokens_out:
            if h.tokens is None:
                h.token_series(m, self._fold)
            if tokens_in < 0 or tokens_out < 0:  # what inc says of them (nothing is held)
                self._fold()
                assert h.tokens is not None
                h.tokens[0].inc(tokens_in)
                h.tokens[1].inc(tokens_out)
            h.n_in += tokens_in
            h.n_out += tokens_out
            if cached:
                if h.cached is None:
                    h.cached_series(m, self._fold)
                h.n_cached += cached
            if cost:
                (h.cost or h.cost_series(m)).inc(cost)
        self._since += 1
        if self._since >= HISTOGRAM_QUEUE:
            self._count_held()
        self.stats.count(
            status, variant, provider, total, overhead, False, tokens_in, tokens_out, cost,
            ttft, (), cached,
        )  # fmt: skip
        if self.ledger is not None:
            self.ledger(Record(request_id, key_id, status, stream, None, rs, total, times, api))
        if not self._writer.enabled():
            return
        total_ms = _ms(total)
        gap = None if not chunks else times.relay_wait_s / chunks
        attempt_ms = attempt.duration_s * 1000.0
        rest = {
            # attempt.describe() of an answered attempt (tests/unit/test_access_fast.py)
            "attempts": [
                {
                    "provider": provider,
                    "variant": variant,
                    "status": attempt.status,
                    "class": "ok",
                    "code": None,
                    "message": "ok",
                    "duration_ms": _round(attempt_ms, 10.0, 1),
                }
            ],
            "fallback": None,
            "adaptations": rs.adaptations,
            "usage": usage,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "tokens_cached": cached,
            "cost_usd": _round(cost, 1e8, 8),
            "duration_ms": total_ms,
            "durations": {
                "total_ms": total_ms,
                "overhead_ms": _ms(overhead),
                "parse_ms": _ms(times.parse_s),
                "route_ms": _ms(times.route_s),
                "state_ms": _ms(times.before_s + times.after_s),
                "upstream_ms": _ms(upstream),
                "backoff_ms": _ms(backoff) if backoff else backoff,
                "ttft_ms": None if ttft is None else _ms(ttft),
                "inter_chunk_mean_ms": None if gap is None else _ms(gap),
                "inter_chunk_max_ms": None if gap is None else _ms(times.gap_max_s),
            },
            "error": None,
            "api": api,
        }
        if client is not None:
            rest["client"] = client
        stamp, micros = self._now.parts()
        rid = orjson.dumps(request_id, default=str)
        tail = orjson.dumps(rest, default=str)[1:]
        if micros:
            self._writer.add(_CLEAN_LINE % (stamp, micros, rid, h.middle, tail))
        else:
            self._writer.add(_CLEAN_LINE_ON_SECOND % (stamp, rid, h.middle, tail))

    def _clean_for(self, key: tuple[str, str, int, bool, str, str], planned: bool) -> _Clean:
        """The series and line piece of a new clean (variant, provider, status, stream, api,
        key); not kept past :data:`CLEAN_KEPT` of them (then each is looked up afresh)."""
        variant, provider, status, stream, _, key_id = key
        m = self._m
        answered = self._answered.get(key[:5]) or self._answer(key[:5])
        if planned and not self._stages:
            self._stage_series()  # before upstream_wait, as the general path creates them
        middle = orjson.dumps(
            {
                "key_id": key_id,
                "status": status,
                "stream": stream,
                "variant": variant,
                "provider": provider,
            },
            default=str,
        )
        h = _Clean(
            answered.requests,
            answered.duration,
            answered.overhead,
            m.stage.labels("upstream_wait"),
            m.attempts.labels(variant, provider, "ok"),
            b"," + middle[1:-1] + b",",
            variant,
            provider,
            key_id,
        )
        h.requests.feed(self._fold)
        h.attempt_ok.feed(self._fold)
        for series in (h.duration, h.overhead, h.upstream_wait):
            self._queues[id(series)] = series
        if len(self._clean) < CLEAN_KEPT:
            self._clean[key] = h
        return h

    def _stage_queues_for(self) -> tuple[list[float], ...]:
        stages = self._stages or self._stage_series()
        for series in stages:
            self._queues[id(series)] = series
        self._stage_queues = tuple(series._queued for series in stages)
        return self._stage_queues

    def _fold(self) -> None:
        """Add the counts clean requests hold to their series (before any read of them)."""
        held = self._held
        if not held:
            return
        self._held = []
        for h in held:
            n, h.n = h.n, 0
            h.requests._count += n
            h.attempt_ok._count += n
            if h.tokens is not None:
                h.tokens[0]._count += h.n_in
                h.tokens[1]._count += h.n_out
                h.n_in = h.n_out = 0
            if h.cached is not None:
                h.cached._count += h.n_cached
                h.n_cached = 0

    def _count_held(self) -> None:
        """Every :data:`~gateway.observability.metrics.HISTOGRAM_QUEUE` clean requests: the
        held counts added and the queues they appended to counted (memory stays bounded)."""
        self._since = 0
        self._fold()
        for series in self._queues.values():
            series._count_queued()

    def note(
        self,
        *,
        request_id: str,
        status: int,
        duration_s: float,
        api: str,
        method: str,
        path: str,
        client: str,
        key_id: str = "-",
        error: str | None = None,
    ) -> None:
        """The access line of a request no front-end handled (models, route, health, metrics,
        admin, dashboard, an unknown path ...): the request line's fields, plus ``method`` and
        ``path``, redacted. No metrics and no dashboard stats: probes and scrapes would drown
        them."""
        if not self._writer.enabled():
            return
        rec = Record(request_id, key_id, status, False, error, None, duration_s, _NO_TIMES, api)
        line = rec.line(self._now())
        line["api"] = api
        line["method"] = method
        line["path"] = path
        line["client"] = client
        # The path is the client's text (a key pasted into a URL ...): redacted, as a whole.
        self._writer.add(self._redact(orjson.dumps(line, default=str).decode()).encode())

    def _count(self, rec: Record) -> None:
        self.stats.count(
            rec.status, rec.variant, rec.provider, rec.total, rec.overhead,
            rec.fallback is not None, rec.tokens_in, rec.tokens_out, rec.cost_usd,
            rec.times.ttft_s, rec.failed_providers(), rec.tokens_cached,
        )  # fmt: skip

    def _observe_request(self, rec: Record) -> None:
        key = (rec.variant, rec.provider, rec.status, rec.stream, rec.api)
        a = self._answered.get(key) or self._answer(key)
        a.requests.inc()
        if rec.error is not None:
            m = self._m
            m.errors.labels(m.error_label(rec.error)).inc()
        a.duration.observe(rec.total)
        a.overhead.observe(rec.overhead)

    def _answer(self, key: tuple[str, str, int, bool, str]) -> _Answered:
        """The series of a new (variant, provider, status, stream, api), created in today's
        order."""
        m = self._m
        variant, provider, status, stream, api = key
        s = "true" if stream else "false"
        a = _Answered(
            m.requests.labels(variant, provider, str(status), s, api),
            m.duration.labels(variant, s),
            m.overhead.labels(s),
        )
        self._answered[key] = a
        return a

    def _observe_stages(self, rec: Record) -> None:
        m, t = self._m, rec.times
        if t.planned:
            stages = self._stages or self._stage_series()
            stages[0].observe(t.parse_s)
            stages[1].observe(t.route_s)
            stages[2].observe(t.state_s)
            stages[3].observe(rec.other)
        if t.ttft_s is not None:
            m.ttft.labels(rec.variant, rec.provider).observe(t.ttft_s)
        gap = t.gap_mean_s
        if gap is not None:
            m.inter_chunk.labels(rec.variant, rec.provider).observe(gap)

    def _stage_series(self) -> tuple[PlainHistogram, ...]:
        stage = self._m.stage
        self._stages = tuple(stage.labels(s) for s in ("parse", "route", "state", "other"))
        return self._stages

    def _observe_routing(self, rec: Record) -> None:
        m, rs = self._m, rec.rs
        if rs is None or not rs.attempts:
            return
        m.stage.labels("upstream_wait").observe(rec.upstream)
        for a in rs.attempts:
            outcome = a.failure.cls.value if a.failure else "ok"
            m.attempts.labels(a.target.variant.id, a.target.provider, outcome).inc()
        f = rec.fallback
        if f is not None:
            m.fallbacks.labels(f["reason"], f["from_variant"], rec.variant).inc()

    def _observe_usage(self, rec: Record) -> None:
        if not (rec.tokens_in or rec.tokens_out):
            return
        m = self._m
        key = m.key_label(rec.key_id)
        m.tokens.labels(rec.variant, rec.provider, key, "in").inc(rec.tokens_in)
        m.tokens.labels(rec.variant, rec.provider, key, "out").inc(rec.tokens_out)
        if rec.tokens_cached:
            m.tokens.labels(rec.variant, rec.provider, key, "cached").inc(rec.tokens_cached)
        if rec.cost_usd:
            m.cost.labels(rec.variant, rec.provider, key).inc(rec.cost_usd)


def _fallback(rs: RouteRecord, answered: str) -> dict[str, str] | None:
    """A fallback: the first attempt failed and another was made (answered or not)."""
    first = rs.attempts[0]
    if first.failure is None:
        return None
    last = rs.target.id if rs.target is not None else "none"
    return {
        "reason": first.failure.cls.value,
        "from": first.target.id,
        "from_variant": first.target.variant.id,
        "to": last,
        "to_variant": answered,
    }
