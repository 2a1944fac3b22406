"""The auto-pipeline against a real redis-server: order, errors in their slot, lost scripts.

Calls made in one event-loop turn go out as one write on a pooled connection; every caller
gets its own reply, a script error stays with the call that made it, and a server that lost
its scripts (a restart without persistence: SCRIPT FLUSH here) is given them again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from gateway.catalogue.schema import BreakerConfig
from gateway.state import lua
from gateway.state.autopipe import LATE, AutoPipeline
from gateway.state.base import (
    LATENCY_ALPHA,
    DeploymentAsk,
    KeyAsk,
    Lease,
    Outcome,
    Report,
    Ticket,
    View,
)
from gateway.state.circuits import error_bucket_s
from gateway.state.codec import breaker_doc, decode_view, encode_report, encode_ticket
from gateway.state.redis import _with_id
from tests.support.redis_server import RedisServer

SCRIPTS = {
    "echo": "return ARGV[1]",
    "fail": "return redis.error_reply('no: ' .. ARGV[1])",
    "incr": "return redis.call('INCRBY', ARGV[1], ARGV[2])",
}


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    srv = RedisServer()
    yield srv
    srv.stop()


@pytest_asyncio.fixture
async def client(server: RedisServer) -> AsyncIterator[Redis]:
    r = Redis.from_url(server.url)
    await r.flushall()
    yield r
    await r.aclose()


async def test_a_turns_calls_share_one_write_and_each_gets_its_reply(client: Redis) -> None:
    auto = AutoPipeline(client, SCRIPTS)
    await client.script_load(SCRIPTS["echo"])
    assert await auto.call("echo", ["warm"]) == b"warm"  # its connection is open from here
    before = (await client.info("stats"))["total_commands_processed"]
    calls = [auto.call("echo", [f"v{i}"]) for i in range(20)]
    assert await asyncio.gather(*calls) == [f"v{i}".encode() for i in range(20)]
    after = (await client.info("stats"))["total_commands_processed"]
    assert after - before == 20 + 1  # the 20 EVALSHA and the first INFO, no reload, no retry
    await auto.aclose()


async def test_a_script_error_stays_with_its_call(client: Redis) -> None:
    auto = AutoPipeline(client, SCRIPTS)
    for name in SCRIPTS:
        await client.script_load(SCRIPTS[name])
    good, bad, also = (
        auto.call("echo", ["a"]),
        auto.call("fail", ["b"]),
        auto.call("incr", ["n", 5]),
    )
    assert await good == b"a"
    with pytest.raises(ResponseError, match="no: b"):
        await bad
    assert await also == 5
    # the connection went back to the pool in step: the next turn's replies are its own
    assert await asyncio.gather(auto.call("echo", ["c"]), auto.call("incr", ["n", 1])) == [b"c", 6]
    await auto.aclose()


async def test_scripts_a_restarted_server_lost_are_loaded_again(client: Redis) -> None:
    auto = AutoPipeline(client, SCRIPTS)
    assert await auto.call("incr", ["m", 2]) == 2  # never loaded: NOSCRIPT, loaded, run once
    assert auto._wire is not None  # the next batch goes on the connection taken over
    await client.script_flush()
    got = await asyncio.gather(auto.call("incr", ["m", 3]), auto.call("echo", ["x"]))
    assert got == [5, b"x"]
    assert int(await client.get("m")) == 5  # each ran exactly once
    await auto.aclose()


async def test_a_dead_server_fails_every_call_of_the_turn(server: RedisServer) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    auto = AutoPipeline(dead, SCRIPTS)
    calls = [auto.call("echo", ["a"]), auto.call("echo", ["b"])]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results), results
    await auto.aclose()
    await dead.aclose()


async def _on_wire(auto: AutoPipeline, on_wire: bool) -> None:
    """``on_wire``: one batch first, so that the next ones go on the connection it took over
    (else the next batch is the first: a task on a pooled connection)."""
    if on_wire:
        assert await auto.call("echo", ["warm"]) == b"warm"
        assert auto._wire is not None and auto._wire.alive


@pytest.mark.parametrize("on_wire", [False, True])
async def test_a_stalled_server_fails_the_batch_at_its_timeout(
    server: RedisServer, on_wire: bool
) -> None:
    r = Redis.from_url(server.url)  # no socket timeout: the batch's own bounds the wait
    auto = AutoPipeline(r, SCRIPTS, timeout=0.3)
    await r.script_load(SCRIPTS["echo"])
    await _on_wire(auto, on_wire)
    wire = auto._wire
    order: list[str] = []

    async def watchdog() -> None:  # only fires if the batch outlives its timeout many times
        await asyncio.sleep(5)
        order.append("server resumed")
        server.resume()

    server.pause()
    guard = asyncio.create_task(watchdog())
    try:
        results = await asyncio.gather(
            auto.call("echo", ["a"]), auto.call("echo", ["b"]), return_exceptions=True
        )
        order.append("batch ended")
    finally:
        if not guard.done():
            guard.cancel()
            server.resume()
    # Checked by order, not seconds: the batch ended while the server was still stalled.
    assert order == ["batch ended"]
    assert all(isinstance(x, TimeoutError) for x in results), results
    assert await auto.call("echo", ["c"]) == b"c"  # the stalled connection was dropped
    if wire is not None:
        assert not wire.alive and auto._wire is not wire
    await auto.aclose()
    await r.aclose()


async def test_a_wire_connection_lost_fails_its_batches_and_the_next_goes_on_a_new_one(
    server: RedisServer,
) -> None:
    """The connection taken over is lost with batches in flight on it (closed under them while
    the server is stalled): each of their calls fails as a connection error, at once, not at a
    timeout; the next batch goes on a new connection, which is taken over in turn. One the
    server closes (CLIENT KILL) is seen gone before anything else is written to it."""
    r = Redis.from_url(server.url)
    auto = AutoPipeline(r, SCRIPTS, timeout=30)
    await r.script_load(SCRIPTS["echo"])
    await _on_wire(auto, True)
    wire = auto._wire
    assert wire is not None
    server.pause()
    try:
        calls = [auto.call("echo", ["a"]), auto.call("echo", ["b"])]
        await asyncio.sleep(0)  # (written: one batch)
        later = auto.call("echo", ["c"])
        await asyncio.sleep(0)  # (a second batch in flight on it)
        assert len(wire.pending) == 2 and not later.done()
        wire.transport.abort()
        results = await asyncio.wait_for(asyncio.gather(*calls, later, return_exceptions=True), 5)
    finally:
        server.resume()
    assert all(isinstance(x, RedisConnectionError) for x in results), results
    assert not wire.alive and auto._wire is None
    assert await auto.call("echo", ["d"]) == b"d"
    second = auto._wire
    assert second is not None and second is not wire and second.alive
    port = second.transport.get_extra_info("sockname")[1]
    assert await r.client_kill(f"127.0.0.1:{port}")
    for _ in range(100):  # the server's close reaches the loop
        if not second.alive:
            break
        await asyncio.sleep(0.01)
    assert not second.alive
    assert await auto.call("echo", ["e"]) == b"e"
    assert auto._wire is not None and auto._wire.alive and auto._wire is not second
    await auto.aclose()
    await r.aclose()


@pytest.mark.parametrize("on_wire", [False, True])
async def test_a_call_past_late_s_is_answered_late_and_its_handler_gets_the_answer(
    server: RedisServer, on_wire: bool
) -> None:
    """With ``late_s``, a call with a ``late`` handler that the server has not answered in
    time is answered LATE (its caller goes on); the handler is told the answer when it lands.
    A call without a handler, in the same batch, waits for its answer."""
    r = Redis.from_url(server.url)
    auto = AutoPipeline(r, SCRIPTS, timeout=30, late_s=0.05)
    await r.script_load(SCRIPTS["echo"])
    await _on_wire(auto, on_wire)
    told: asyncio.Future[asyncio.Future[object]] = asyncio.get_running_loop().create_future()
    server.pause()
    try:
        first = auto.call("echo", ["a"], late=told.set_result)
        patient = auto.call("echo", ["b"])
        assert await asyncio.wait_for(first, 5) is LATE
        assert not patient.done() and not told.done()
    finally:
        server.resume()
    assert await asyncio.wait_for(patient, 5) == b"b"
    assert (await asyncio.wait_for(told, 5)).result() == b"a"
    fast = auto.call("echo", ["c"], late=told.set_result)
    assert await fast == b"c"  # answered in time: the handler is not told
    await auto.aclose()
    await r.aclose()


@pytest.mark.parametrize("on_wire", [False, True])
async def test_closing_with_calls_in_flight_tells_a_late_calls_handler(
    server: RedisServer, on_wire: bool
) -> None:
    """``aclose`` with a batch in flight: a call already answered LATE has its handler told it
    failed (the backend journals such a report); a call still awaited ends too (cancelled on
    the wire, as a queued call is; failed in a task, as its task is cancelled)."""
    r = Redis.from_url(server.url)
    auto = AutoPipeline(r, SCRIPTS, timeout=30, late_s=0.05)
    await r.script_load(SCRIPTS["echo"])
    await _on_wire(auto, on_wire)
    told: asyncio.Future[asyncio.Future[object]] = asyncio.get_running_loop().create_future()
    server.pause()
    try:
        first = auto.call("echo", ["a"], late=told.set_result)
        patient = auto.call("echo", ["b"])
        assert await asyncio.wait_for(first, 5) is LATE
        await auto.aclose()
        outcome = await asyncio.wait_for(told, 5)
    finally:
        server.resume()
    assert isinstance(outcome.exception(), RuntimeError)
    if on_wire:
        assert patient.cancelled()
    else:
        assert isinstance(patient.exception(), RuntimeError)
    await r.aclose()


def test_a_report_given_an_id_keeps_every_other_field() -> None:
    lease = Lease("k", 1, 2, 3, "day", 4.0, "d", ("p",), False)
    r = Report((Outcome("d", False, 0.1, "transient", 5.0, True),), ("d",), lease, "d", 7, 8)
    assert _with_id(r, "rid") == replace(r, id="rid")


def test_commands_are_packed_as_redis_py_packs_them() -> None:
    auto = AutoPipeline(None, SCRIPTS)
    args = ["glmgw", repr(1_900_000_000.125), b'{"cands":[]}', 5, 2.5, "é", b""]
    ours = auto._evalsha("echo", args)
    theirs = b"".join(Connection().pack_command("EVALSHA", auto._sha["echo"], 0, *args))
    assert ours == theirs


async def test_a_lingering_call_goes_at_once_when_nothing_else_is_in_flight(
    client: Redis,
) -> None:
    auto = AutoPipeline(client, SCRIPTS)
    assert await auto.call("echo", ["warm"]) == b"warm"  # script loaded, connection open
    await client.ping()  # and that batch is over: nothing in flight
    order: list[str] = []
    held = auto.call("echo", ["x"], linger=5.0)
    held.add_done_callback(lambda _: order.append("lingering call answered"))
    # Checked by order, not seconds: answered before three round trips begun after it on
    # another connection (a call that lingered would still be waiting for its 5 s).
    for _ in range(3):
        await client.ping()
    order.append("three other round trips")
    assert order == ["lingering call answered", "three other round trips"]
    assert held.result() == b"x"
    await auto.aclose()


async def test_under_load_a_lingering_call_rides_ahead_in_the_next_batch(client: Redis) -> None:
    auto = AutoPipeline(client, SCRIPTS)
    first = auto.call("echo", ["a"])
    await asyncio.sleep(0)  # flushed: a batch is in flight
    held = auto.call("incr", ["k", 1], linger=5.0)
    assert await first == b"a"
    await asyncio.sleep(0.05)
    assert not held.done()  # no batch of its own
    later = auto.call("incr", ["k", 10])
    assert await asyncio.gather(held, later) == [1, 11]  # the held (older) call went first
    await auto.aclose()


async def test_a_lingering_call_goes_alone_when_its_time_is_up(client: Redis) -> None:
    auto = AutoPipeline(client, SCRIPTS)
    first = auto.call("echo", ["a"])
    await asyncio.sleep(0)
    held = auto.call("echo", ["b"], linger=0.05)
    assert await first == b"a"
    assert await asyncio.wait_for(held, 2.0) == b"b"
    await auto.aclose()


FOLD = ("before", "after", "batch")
STATE_SCRIPTS = {"before": lua.BEFORE, "after": lua.AFTER, "batch": lua.BATCH}


def _ticket() -> Ticket:
    key = KeyAsk("k1", rpm=100, tpm=100_000, budget_micros=10**9, cost_micros=500)
    cands = (DeploymentAsk("d/limited", rpm=50, tpm=50_000), DeploymentAsk("d/free"))
    return Ticket(cands, 300, key)


async def _evalshas(client: Redis) -> int:
    return int((await client.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0))


async def _dump(client: Redis, prefix: str) -> dict[str, object]:
    """Every key under ``prefix`` (prefix cut off) and its value, TTLs left out."""
    out: dict[str, object] = {}
    async for name in client.scan_iter(match=f"{prefix}:*"):
        kind = (await client.type(name)).decode()
        if kind == "hash":
            value: object = await client.hgetall(name)
        elif kind == "zset":
            value = await client.zrange(name, 0, -1, withscores=True)
        elif kind == "set":
            value = await client.smembers(name)
        else:
            value = await client.get(name)
        out[name.decode()[len(prefix) :]] = value
    return out


async def test_a_turns_reports_ride_in_its_before_and_answer_as_alone(client: Redis) -> None:
    """With ``fold``, a turn's ``after`` reports and ``before`` tickets are one EVALSHA
    (lua.BATCH); every caller gets the answer it gets unfolded, and Redis ends up the same.
    Latencies are the one exception: a batch answers each deployment's once, in the first
    ticket that asks (View.latency_s only feeds the replica's snapshot), so the tickets'
    latencies merged in order are what the unfolded calls' are."""
    breaker = BreakerConfig()
    cfg = breaker_doc(breaker)
    now = 1_900_000_000.25
    views: dict[str, list[object]] = {}
    for src in STATE_SCRIPTS.values():
        await client.script_load(src)
    for prefix, fold in (("a", FOLD), ("b", None)):
        auto = AutoPipeline(client, STATE_SCRIPTS, fold=fold)
        await client.hset(f"{prefix}:key:k1", mapping={"json": "{}", "revoked": "0"})
        ticket = _ticket()
        args = [prefix, repr(now), *encode_ticket(ticket, breaker)]
        lease = decode_view(await auto.call("before", args), ticket).lease
        assert lease is not None and lease.deployment == "d/limited"
        settle = Report((Outcome("d/limited", True, 0.2),), ("d/limited",), lease, "d/limited",
                        250, 400, "r1")  # fmt: skip
        failed = Report((Outcome("d/free", False, 0.1, "transient"),), id="r2")
        counted = await _evalshas(client)
        mine = _with_id(replace(settle, lease=None, tokens=10), "0123456789abcdef-1ffff")
        got = await asyncio.gather(
            auto.call("after", [prefix, repr(now + 1), encode_report(settle), cfg]),
            auto.call("before", [prefix, repr(now + 2), *encode_ticket(ticket, breaker)]),
            auto.call("after", [prefix, repr(now + 1.5), encode_report(failed), cfg]),
            auto.call("after", [prefix, repr(now + 3), encode_report(settle), cfg]),  # again
            auto.call("after", [prefix, repr(now + 3), encode_report(mine), cfg]),
            auto.call("before", [prefix, repr(now + 3), *encode_ticket(ticket, breaker)]),
            auto.call("after", [prefix, repr(now + 3), encode_report(mine), cfg]),  # again
        )
        assert await _evalshas(client) - counted == (1 if fold else 7)
        assert got[0] == 1 and got[2] == 1 and got[3] == 0  # the repeated report is skipped
        assert got[4] == 1 and got[6] == 0  # a process's report id: one bit, skipped too
        views[prefix] = [decode_view(got[1], ticket), decode_view(got[5], ticket)]
        await auto.aclose()
    folded, alone = views["a"], views["b"]
    assert folded[0].latency_s == alone[0].latency_s == alone[1].latency_s
    assert folded[0].latency_s.keys() == {"d/limited"}  # d/free has only failed
    assert folded[1].latency_s == {}  # answered in the first ticket of the batch
    assert [replace(v, latency_s={}) for v in folded] == [replace(v, latency_s={}) for v in alone]
    dumped = await _dump(client, "a")
    assert len(dumped) > 10 and dumped == await _dump(client, "b")


async def test_a_folded_call_that_fails_fails_every_call_it_stands_for(client: Redis) -> None:
    """A script error in the folded call is every folded caller's (a report applied before it
    is skipped when the journal replays it: each carries an id)."""
    scripts = {"before": "return 'b'", "after": "return 1", "batch": "error('no')"}
    auto = AutoPipeline(client, scripts, fold=FOLD)
    got = await asyncio.gather(
        auto.call("before", ["p", "1", b"{}"]),
        auto.call("after", ["p", "1", b"{}", b"{}"]),
        auto.call("before", ["p", "2", b"{}"]),
        auto.call("before", ["q", "2", b"{}"]),  # another prefix: not folded
        return_exceptions=True,
    )
    assert all(isinstance(g, ResponseError) for g in got[:3])
    assert got[3] == b"b"
    await auto.aclose()


async def test_replies_read_here_are_those_redis_py_reads(client: Redis) -> None:
    """The replies read with the connection's hiredis reader here (the fast path) are those
    redis-py's ``read_response`` gives: values, a script error in its slot, NOSCRIPT reloaded,
    a folded batch handed out, and a batch larger than one read of the socket."""
    scripts = {**SCRIPTS, "before": "return ARGV[2]", "after": "return 1"}
    scripts["batch"] = "local t = {} for i = 4, #ARGV, 2 do t[#t + 1] = ARGV[i] end return t"
    big = b"x" * 200_000
    got: dict[bool, list[object]] = {}
    for direct in (True, False):
        await client.script_flush()
        auto = AutoPipeline(client, scripts, fold=FOLD)
        auto._direct = direct
        turn = [
            auto.call("echo", ["a"]),
            auto.call("fail", ["b"]),
            auto.call("before", ["p", "1", b"{}"]),
            auto.call("after", ["p", "2", b"{}", b"c"]),
            auto.call("incr", [f"n{direct}", 5]),
            auto.call("echo", [big]),
            auto.call("before", ["p", "3", b"{}"]),
        ]
        out = await asyncio.gather(*turn, return_exceptions=True)
        got[direct] = [f"{type(o).__name__}: {o}" if isinstance(o, Exception) else o for o in out]
        again = await asyncio.gather(auto.call("echo", ["d"]), auto.call("incr", [f"n{direct}", 1]))
        got[direct].append(again)
        await auto.aclose()
    assert got[True] == got[False]
    assert got[True][0] == b"a" and got[True][5] == big
    assert str(got[True][1]).startswith("ResponseError") and "no: b" in str(got[True][1])
    assert got[True][2:5] == [b"1", b"2", 5] and got[True][6] == b"3"
    assert got[True][7] == [b"d", 6]


async def test_batches_in_flight_share_one_timer_for_late_and_timeout(server: RedisServer) -> None:
    """Several batches stalled at once: each one's calls are answered LATE in turn, then each
    batch fails at its timeout, its handlers told so; the pipeline works again afterwards."""
    r = Redis.from_url(server.url)
    auto = AutoPipeline(r, SCRIPTS, timeout=0.4, late_s=0.05)
    await r.script_load(SCRIPTS["echo"])
    loop = asyncio.get_running_loop()
    told: list[asyncio.Future[asyncio.Future[object]]] = [loop.create_future() for _ in range(3)]
    server.pause()
    try:
        first = auto.call("echo", ["a"], late=told[0].set_result)
        patient = auto.call("echo", ["b"])
        await asyncio.sleep(0)  # flushed: a batch in flight
        second = auto.call("echo", ["c"], late=told[1].set_result)
        third = auto.call("echo", ["d"], late=told[2].set_result, linger=0.01)  # rides along
        assert await asyncio.wait_for(first, 5) is LATE
        assert await asyncio.wait_for(second, 5) is LATE
        assert await asyncio.wait_for(third, 5) is LATE
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(patient, 5)
        outcomes = [await asyncio.wait_for(t, 5) for t in told]
    finally:
        server.resume()
    assert all(isinstance(o.exception(), TimeoutError) for o in outcomes)
    assert not auto._watched
    assert await auto.call("echo", ["e"]) == b"e"
    await auto.aclose()
    await r.aclose()


async def test_a_push_on_the_connection_is_not_taken_for_a_reply(client: Redis) -> None:
    """RESP3 (redis-py's default): a push the server sends on a pipeline's connection (here a
    client tracking invalidation) is not answered to a call: left to redis-py's parser on a
    pooled connection, skipped on the wire (the connection taken over after a batch)."""
    scripts = {**SCRIPTS, "get": "return redis.call('GET', ARGV[1])"}
    for direct in (True, False):
        auto = AutoPipeline(client, scripts)
        auto._direct = direct
        for name in scripts:
            await client.script_load(scripts[name])
        conn = client.connection_pool.make_connection()
        await conn.connect()
        assert conn.protocol == 3
        await conn.send_command("CLIENT", "TRACKING", "ON")
        assert await conn.read_response() in (b"OK", "OK", True)
        await client.set("tracked", "1")
        await conn.send_command("GET", "tracked")  # read: tracked on that connection
        assert await conn.read_response() == b"1"
        auto._idle.append(conn)  # the pipeline's first batch goes on it
        assert await auto.call("echo", ["warm"]) == b"warm"
        wire = auto._wire
        assert (wire is not None and wire.conn is conn) == direct
        assert auto._idle == ([] if direct else [conn])
        await client.set("tracked", "2")  # the server pushes an invalidation to it
        await client.ping()  # (after the push was sent)
        got = await asyncio.gather(auto.call("echo", ["x"]), auto.call("get", ["tracked"]))
        assert got == [b"x", b"2"], direct
        assert auto._wire is wire  # (the wire was not dropped for it)
        await auto.aclose()


async def test_a_batch_reads_the_tripped_circuits_again_after_a_probe(client: Redis) -> None:
    """A batch call reads the tripped circuits once for its tickets and again after one of
    them takes a half-open circuit's probe: the next ticket sees that circuit held, as it does
    unfolded; the report-id bitmap a batch writes keeps its day-long TTL."""
    breaker = BreakerConfig()
    cfg = breaker_doc(breaker)
    now = 1_900_000_000.25
    for src in STATE_SCRIPTS.values():
        await client.script_load(src)
    views: dict[str, list[View]] = {}
    for prefix, fold in (("pa", FOLD), ("pb", None)):
        auto = AutoPipeline(client, STATE_SCRIPTS, fold=fold)
        tripped = Report((Outcome("d/free", False, 0.1, "rate_limited", 5.0),), id="t1")
        assert await auto.call("after", [prefix, repr(now), encode_report(tripped), cfg]) == 1
        ticket = Ticket((DeploymentAsk("d/free"), DeploymentAsk("d/other")), 10)
        later = repr(now + 6)  # the circuit's cooldown is over: half-open, one probe
        got = await asyncio.gather(
            auto.call("before", [prefix, later, *encode_ticket(ticket, breaker)]),
            auto.call("before", [prefix, later, *encode_ticket(ticket, breaker)]),
            auto.call("after", [prefix, later, encode_report(_with_id(Report(), "ab-1")), cfg]),
        )
        views[prefix] = [decode_view(g, ticket) for g in got[:2]]
        ttl = await client.ttl(f"{prefix}:dn:ab:0")
        assert 86400 < ttl <= 86400 + 3600
        await auto.aclose()
    folded, alone = views["pa"], views["pb"]
    first, second = folded
    assert first.lease is not None and first.lease.probes == ("d/free",)
    assert second.lease is not None and second.lease.probes == ()
    assert second.open_circuits.keys() == {"d/free"}  # held by the first ticket's probe
    assert [replace(v, latency_s={}) for v in folded] == [replace(v, latency_s={}) for v in alone]


async def test_a_batchs_reports_on_one_deployment_move_its_latency_in_order(
    client: Redis,
) -> None:
    """A batch reads and writes a deployment's mean latency once for all its reports: the
    mean is the one the reports make one after another, and the tickets after them read it."""
    breaker = BreakerConfig()
    cfg = breaker_doc(breaker)
    now = 1_900_000_000.25
    for src in STATE_SCRIPTS.values():
        await client.script_load(src)
    for prefix, fold in (("la", FOLD), ("lb", None)):
        auto = AutoPipeline(client, STATE_SCRIPTS, fold=fold)
        ticket = Ticket((DeploymentAsk("d/x"),), 10, reserve=False)
        got = await asyncio.gather(
            *(
                auto.call("after", [prefix, repr(now), encode_report(Report((ok,))), cfg])
                for ok in (Outcome("d/x", True, 1.0), Outcome("d/x", True, 2.0))
            ),
            auto.call("after", [prefix, repr(now), encode_report(Report((fail(),))), cfg]),
            auto.call("after", [prefix, repr(now), encode_report(Report((slow(),))), cfg]),
            auto.call("before", [prefix, repr(now), *encode_ticket(ticket, breaker)]),
        )
        want = 1.2 + LATENCY_ALPHA * (4.0 - 1.2)  # 1.0, then 2.0 (alpha 0.2), then 4.0
        assert float(await client.hget(f"{prefix}:lat", "d/x")) == pytest.approx(want)
        assert decode_view(got[-1], ticket).latency_s == {"d/x": pytest.approx(want)}
        await auto.aclose()


def fail() -> Outcome:
    return Outcome("d/x", False, 9.0, "transient")


def slow() -> Outcome:
    return Outcome("d/x", True, 4.0)


async def test_tickets_of_a_batch_keep_their_own_candidates(client: Redis) -> None:
    """A batch decodes each distinct candidates' part once and shares it: tickets with other
    candidates, in between, still get theirs (the deployment their lease counts against)."""
    breaker = BreakerConfig()
    await client.script_load(lua.BATCH)
    auto = AutoPipeline(client, STATE_SCRIPTS, fold=FOLD)
    one = Ticket((DeploymentAsk("d/a", rpm=9),), 10)
    other = Ticket((DeploymentAsk("d/b", rpm=9), DeploymentAsk("d/c", rpm=9)), 10)
    tickets = [one, other, one, Ticket((DeploymentAsk("d/a", rpm=9),), 10), other]
    now = repr(1_900_000_000.25)
    got = await asyncio.gather(
        *(auto.call("before", ["pc", now, *encode_ticket(t, breaker)]) for t in tickets)
    )
    leases = [decode_view(g, t).lease for g, t in zip(got, tickets, strict=True)]
    assert [lease.deployment if lease else None for lease in leases] == [
        "d/a", "d/b", "d/a", "d/a", "d/b"
    ]  # fmt: skip
    assert await client.hget("pc:rl:d:d/a:r", str(int(1_900_000_000.25))) == b"3"
    await auto.aclose()


async def test_a_batchs_successes_on_a_quiet_circuit_count_as_they_do_alone(
    client: Redis,
) -> None:
    """Successes on a closed circuit with nothing to reset are summed per deployment and
    window bucket and written once per batch; a failure in between, a second bucket, a new
    deployment, a probe's release and a success while the circuit is still open (then one
    after it) still leave Redis as the same reports sent one by one."""
    breaker = BreakerConfig()
    cfg = breaker_doc(breaker)
    now = 1_900_000_000.25
    size = error_bucket_s(breaker)
    for src in STATE_SCRIPTS.values():
        await client.script_load(src)

    def ok(tid: str, lat: float = 0.5) -> Report:
        return Report((Outcome(tid, True, lat),))

    probe = Lease(None, int(now), 0, probes=("d/x",))
    reports = [
        (now, ok("d/x", 1.0)),
        (now, ok("d/x", 2.0)),
        (now + 0.1, ok("d/new")),
        (now, ok("d/x", 3.0)),
        (now, Report((Outcome("d/x", False, 0.1, "transient"),))),
        (now + size, ok("d/x", 4.0)),  # the next error-window bucket
        (now + size, ok("d/x", 5.0)),
        (now, ok("d/new")),
        (now + size, Report((Outcome("d/y", True, 0.2),), lease=probe)),
        (now + size, ok("d/x", 6.0)),
        (now, Report((Outcome("d/z", False, 0.1, "rate_limited", 5.0),))),  # open for 5 s
        (now + 1, ok("d/z")),  # while open: nothing reset, so not quiet
        (now + 10, ok("d/z")),  # after: the circuit is reset
        (now + 11, ok("d/z")),
    ]
    for prefix, fold in (("qa", FOLD), ("qb", None)):
        auto = AutoPipeline(client, STATE_SCRIPTS, fold=fold)
        got = await asyncio.gather(
            *(auto.call("after", [prefix, repr(t), encode_report(r), cfg]) for t, r in reports),
            auto.call("before", [prefix, repr(now + size), *encode_ticket(Ticket(), breaker)]),
        )
        assert got[:-1] == [1] * len(reports)
        await auto.aclose()
    assert await client.hget("qa:cb:d/x", "requests") == b"7"
    assert await client.hget("qa:cb:d/new", "requests") == b"2"
    assert await client.smembers("qa:cb:ids") == {b"d/x", b"d/new", b"d/y", b"d/z"}
    assert await client.hget("qa:cb:d/z", "trips") == b"0"
    window = await client.hgetall("qa:ew:d/x:r")
    assert sorted(int(v) for v in window.values()) == [3, 4]
    assert 0 < await client.ttl("qa:ew:d/x:r") <= 13 * size
    dumped = await _dump(client, "qa")
    assert dumped == await _dump(client, "qb")


async def test_a_failure_in_a_batch_sees_the_successes_summed_before_it(client: Redis) -> None:
    """The error rate a failure is judged by counts the batch's earlier successes: 10 of 20
    failed before the batch; 5 successes, then a failure, is 11 of 26 (no trip), where
    without those successes it would be 11 of 22 (a trip at 0.5)."""
    breaker = BreakerConfig()
    assert (breaker.error_rate, breaker.error_min_requests) == (0.5, 20)
    cfg = breaker_doc(breaker)
    now = 1_900_000_000.25
    for src in STATE_SCRIPTS.values():
        await client.script_load(src)
    ok = Report((Outcome("d/x", True, 0.5),))
    bad = Report((Outcome("d/x", False, 0.1, "transient"),))
    auto = AutoPipeline(client, STATE_SCRIPTS, fold=FOLD)
    prefix, ticket = "ra", Ticket((DeploymentAsk("d/x"),), 1)
    for i in range(20):  # one at a time: 10 failed of 20, never 5 in a row
        report = encode_report(bad if i % 2 == 0 else ok)
        assert await auto.call("after", [prefix, repr(now), report, cfg]) == 1
    counted = await _evalshas(client)
    got = await asyncio.gather(
        *(auto.call("after", [prefix, repr(now), encode_report(r), cfg]) for r in [ok] * 5 + [bad])
    )
    assert got == [1] * 6 and await _evalshas(client) - counted == 1  # one batch
    answer = await auto.call("before", [prefix, repr(now), *encode_ticket(ticket, breaker)])
    view = decode_view(answer, ticket)
    assert view.open_circuits == {}
    assert await client.hget("ra:cb:d/x", "requests") == b"26"
    await auto.aclose()


async def test_an_error_window_nobody_reads_keeps_one_windows_buckets(client: Redis) -> None:
    """A deployment that only succeeds has its error window written and never read (no failure
    and no health read sums it): each new bucket sweeps the stale ones, so the hash holds about
    one window of buckets, not one per bucket since it was made; in one batch too."""
    breaker = BreakerConfig()
    cfg = breaker_doc(breaker)
    size = error_bucket_s(breaker)
    now = 1_900_000_000.25
    await client.script_load(lua.AFTER)
    await client.script_load(lua.BATCH)
    ok = encode_report(Report((Outcome("d/w", True, 0.1),)))
    auto = AutoPipeline(client, STATE_SCRIPTS, fold=FOLD)
    for i in range(60):  # one batch each, a bucket apart: 5 windows' worth
        assert await auto.call("after", ["sw", repr(now + i * size), ok, cfg]) == 1
    assert await client.hlen("sw:ew:d/w:r") <= 14  # n + 2 (was 60)
    got = await asyncio.gather(  # 60 more buckets in one batch
        *(auto.call("after", ["sw", repr(now + (60 + i) * size), ok, cfg]) for i in range(60))
    )
    assert got == [1] * 60 and await client.hlen("sw:ew:d/w:r") <= 14
    assert await client.hget("sw:cb:d/w", "requests") == b"120"
    await auto.aclose()
