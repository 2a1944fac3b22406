"""Auto-pipelining for the hot-path scripts: calls made in one event-loop turn share a write.

Under load many requests reach ``before`` or ``after`` in the same turn of the loop; sending
their ``EVALSHA`` commands as one pipeline costs one write and one read instead of one each,
and each request still makes exactly one round trip. A call waits at most for the end of the
current turn, except one that may linger (``after``: the answer has gone out already) while
the process is busy, to ride along with the next batch instead of costing one of its own.
The client is the ``redis.asyncio`` one: its pool makes and connects the connections (AUTH,
SELECT, Sentinel, Cluster, TLS). With redis-py's hiredis parser, the connection of the first
batch is then taken over (:class:`_Wire`): later batches are written to its transport as they
are flushed and answered from its protocol's ``data_received``, in order, with no task or
stream per batch. Without one (none yet, it failed, no hiredis) a batch runs in a task on a
pooled connection, its replies read into that parser's ``hiredis.Reader`` here (else with the
connection's send / read methods). A call whose answer nobody awaits (a report) gives a
:class:`Sink` instead of getting a future.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import hiredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError, ResponseError

Late = Callable[["asyncio.Future[Any]"], None]
"""Told how a call that was answered ``LATE`` ended: a done future (its answer, its exception,
or cancelled)."""


class Sink(Protocol):
    """Where the answer of a call that nobody awaits goes (:meth:`AutoPipeline.send`): the part
    of a future the pipeline uses, told at once in the batch's own step (a future would schedule
    its done callbacks for another loop turn, and cost one more object)."""

    def done(self) -> bool: ...
    def cancelled(self) -> bool: ...
    def set_result(self, result: Any, /) -> None: ...
    def set_exception(self, exc: BaseException, /) -> None: ...
    def cancel(self) -> bool: ...


Call = tuple[str, list[Any], "asyncio.Future[Any] | Sink", Late | None]
Owner = Call | list[Call]
"""Whom a command's answer is for: its call, or the calls a folded command stands for."""
LATE: Any = object()
"""The answer of a call with a ``late`` handler that was not answered within ``late_s``."""
CLOCK_SLACK = 0.001
"""A step due this soon is taken now (a loop's timer may fire a little before its time)."""
MAX_IDLE = 32
"""Connections kept open between batches (more are opened while more batches are in flight)."""
READ_SIZE = 65536
PUSH = getattr(hiredis, "PushNotification", None)
"""hiredis's type of a RESP3 push (a client tracking invalidation, ...), if it has one."""


class AutoPipeline:
    def __init__(
        self,
        client: Any,
        scripts: dict[str, str],
        *,
        timeout: float = 5.0,
        fold: tuple[str, str, str] | None = None,
        late_s: float | None = None,
    ) -> None:
        self._client = client
        self._late_s = late_s
        """A call given a ``late`` handler and not answered this long after it was made is
        answered :data:`LATE` (its caller stops waiting; the handler is told how it ended):
        one timer for the batches in flight (:meth:`_sweeping`) instead of a timer and a
        second future per call."""
        self._fold = fold
        """``(before, after, batch)``: the ``before`` and ``after`` calls of a batch go as one
        ``batch`` call (:data:`gateway.state.lua.BATCH`): one EVALSHA, one reply."""
        self._timeout = timeout
        """The most one batch may take (write, replies, scripts loaded again): on the same
        timer (a pool whose sockets have a timeout makes redis-py arm a timer per reply and a
        task per write)."""
        self._source = scripts
        self._sha = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in scripts.items()}
        self._head = {
            name: b"*%%d\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$1\r\n0\r\n" % sha.encode()
            for name, sha in self._sha.items()
        }
        self._queue: list[Call] = []
        self._held: list[Call] = []
        self._queue_at = self._held_at = 0.0
        """loop.time() of the first call queued / held (its ``late_s`` counts from there)."""
        self._loop: Any = None  # an asyncio.AbstractEventLoop once a call was made
        """The loop of the queued / held calls (set by the first of them)."""
        self._held_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._watched: dict[_Watch, None] = {}
        """The batches in flight, oldest first, whose steps :meth:`_sweeping` takes."""
        self._sweep: asyncio.TimerHandle | None = None
        self._idle: list[Any] = []
        self._direct = True
        """Read replies with the connection's ``hiredis.Reader`` here (False: with redis-py's
        ``read_response``, as a connection without hiredis is; the tests compare the two)."""
        self._wire: _Wire | None = None
        """The connection taken over after its first batch (:class:`_Wire`): batches are written
        to it from :meth:`_flush` and answered from its ``data_received``; without one (none
        yet, it failed, or ``_direct`` is off) a batch runs in a task on a pooled connection."""
        self._landed = False
        """A wire batch was answered and its callers have not all run yet: a call made by one of
        them may linger, as one made while batches are in flight may (a task's batch counts
        as in flight until after its callers ran); cleared by the next handle in line."""

    def call(
        self, name: str, args: list[Any], *, linger: float = 0.0, late: Late | None = None
    ) -> asyncio.Future[Any]:
        """Queue one script call; the future gets its answer or its exception.

        ``linger``: while other batches are in flight (the process is busy), the call may wait
        up to that long for the next batch and ride along with it, ahead of that batch's own
        calls (it is older). An idle process sends it this turn, as any other call.
        ``late`` (with ``late_s``): past ``late_s`` the future is answered :data:`LATE` and
        ``late`` is told the real outcome when it comes.
        """
        if self._queue or self._held:  # a flush is due on the loop they were made on
            loop = self._loop
        else:  # (get_running_loop is a getpid() system call each time on CPython 3.11)
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._enqueue((name, args, future, late), loop, linger)
        return future

    def send(
        self,
        name: str,
        args: list[Any],
        into: Sink,
        *,
        linger: float = 0.0,
        late: Late | None = None,
    ) -> None:
        """Queue one script call whose answer nobody awaits: ``into`` is told it (or its
        exception, or that it is ``LATE``, or cancelled) as a future would be, but at once.
        ``linger`` and ``late`` as for :meth:`call`."""
        if not (self._queue or self._held):
            self._loop = asyncio.get_running_loop()
        self._enqueue((name, args, into, late), self._loop, linger)

    def _enqueue(self, call: Call, loop: Any, linger: float) -> None:
        if linger > 0 and (self._tasks or self._watched or self._landed):
            if not self._held:
                self._held_timer = loop.call_later(linger, self._flush)
                self._held_at = loop.time()
            self._held.append(call)
            return
        if not self._queue:
            loop.call_soon(self._flush)
            self._queue_at = loop.time()
        self._queue.append(call)

    def _flush(self) -> None:
        held, queue = self._held, self._queue
        batch = held + queue if held else queue
        self._held, self._queue = [], []
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        if not batch:  # taken by an earlier flush this turn
            return
        loop = self._loop
        steps: list[tuple[float, list[Call] | None]] = []
        if self._late_s is not None:
            if held:
                steps.append((self._held_at + self._late_s, held))
            if queue:
                steps.append((self._queue_at + self._late_s, queue))
        end = loop.time() + self._timeout
        i = len(steps)
        while i and steps[i - 1][0] > end:
            i -= 1
        steps.insert(i, (end, None))
        names: list[str] = []
        packed: list[bytes] = []
        owners: list[Owner] = []
        if self._fold is not None and len(batch) > 1:
            batch = self._folded(batch, names, packed, owners, *self._fold)
        evalsha = self._evalsha
        for call in batch:
            names.append(call[0])
            packed.append(evalsha(call[0], call[1]))
            owners.append(call)
        watch = _Watch(steps, names, packed, owners)
        self._watched[watch] = None
        wire = self._wire
        if wire is not None and wire.alive:
            wire.send(watch)
        else:
            self._start(self._run(watch), watch)
        if self._sweep is None or steps[0][0] < self._sweep.when():
            if self._sweep is not None:
                self._sweep.cancel()
            self._sweep = loop.call_at(steps[0][0], self._sweeping)

    def _sweeping(self) -> None:
        """The one timer of the batches in flight, armed for the first of their steps due:
        each batch's steps due by now are taken (:class:`_Watch`); then it is armed for the
        next one, if any. Under load it fires once per ``late_s`` at most, not per batch."""
        self._sweep = None
        loop = self._loop
        now = loop.time() + CLOCK_SLACK
        due = math.inf
        for watch in list(self._watched):
            when = watch.take(now)
            if when < due:
                due = when
        if due != math.inf:
            self._sweep = loop.call_at(due, self._sweeping)

    def _start(self, work: Any, watch: _Watch) -> None:
        """Run a batch (``work``, a :meth:`_run` coroutine) in a task of its own."""
        task = self._loop.create_task(work)
        watch.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _answered(self, watch: _Watch, error: BaseException | None) -> None:
        """A wire batch's replies are all in (``watch.results``), or it failed with ``error``
        (its connection did): each answer to the call it is for; scripts the server lost are
        loaded again and those commands sent once more in a task (as :meth:`_run` does)."""
        self._watched.pop(watch, None)
        if error is None:
            for r in watch.results:
                if isinstance(r, ResponseError) and _no_script(r):
                    self._watched[watch] = None  # its timeout still holds
                    self._start(self._run(watch, watch.results), watch)
                    return
        _hand_out(watch, watch.results, error)
        if not self._landed:  # (after the callers' wake-ups: they run first)
            self._landed = True
            self._loop.call_soon(self._calm)

    def _calm(self) -> None:
        self._landed = False

    def _lost(self, wire: _Wire) -> None:
        if self._wire is wire:
            self._wire = None

    def _folded(
        self,
        batch: list[Call],
        names: list[str],
        packed: list[bytes],
        owners: list[Owner],
        before: str,
        after: str,
        combined: str,
    ) -> list[Call]:
        """``batch`` with its ``before`` and ``after`` calls as one ``combined`` call (when that
        makes two or more calls one), all for the first one's key prefix (and, for reports,
        the first report's settings): ``[prefix, settings or "", number of befores, each
        before's now, document and candidates' part, each after's now and document]``; a
        ``before`` call's arguments are ``[prefix, now, document, candidates' part]``, an
        ``after``'s ``[prefix, now, document, settings]``. The combined command goes first (into
        ``names``, ``packed``, ``owners``: its answer, a list, the befores' then the afters',
        is handed out to the calls it stands for); the calls returned, the others in order,
        follow it."""
        ours = (before, after)
        prefix = cfg = None  # (loops, not next() over a generator: one left open is closed by
        for call in batch:  # throwing GeneratorExit into it, a traceback each batch)
            if call[0] in ours:
                prefix = call[1][0]
                break
        for call in batch:
            if call[0] == after and call[1][0] == prefix:
                cfg = call[1][3]
                break
        if cfg is None:
            cfg = ""
        befores: list[Call] = []
        afters: list[Call] = []
        rest: list[Call] = []
        for call in batch:
            name, a = call[0], call[1]
            if name not in ours or a[0] != prefix:
                rest.append(call)
            elif name == before:
                befores.append(call)
            elif a[3] == cfg:
                afters.append(call)
            else:
                rest.append(call)
        if len(befores) + len(afters) < 2:
            return batch
        args: list[Any] = [prefix, cfg, len(befores)]
        for c in befores:
            args += c[1][1:4]
        for c in afters:
            args += c[1][1:3]
        names.append(combined)
        packed.append(self._evalsha(combined, args))
        owners.append(befores + afters)
        return rest

    async def _run(self, watch: _Watch, results: list[Any] | None = None) -> None:
        """One batch, in one task (its late calls and its timeout are ``watch``'s steps, taken
        by :meth:`_sweeping`): its commands (``results``: their replies are in already, from
        the wire), the scripts the server lost loaded again and those commands sent once
        more, each answer handed to the call (or the folded calls) it is for."""
        names, packed = watch.names, watch.packed
        try:
            if results is None:
                results = await self._exchange(packed)
            missing: list[int] = []  # (a loop: a comprehension is a function made per batch)
            for i, r in enumerate(results):
                if isinstance(r, ResponseError) and _no_script(r):
                    missing.append(i)
            if missing:  # the server lost its scripts (a restart): load them, run those again
                for name in {names[i] for i in missing}:
                    await self._client.script_load(self._source[name])
                again = await self._exchange([packed[i] for i in missing])
                for i, r in zip(missing, again, strict=True):
                    results[i] = r
        except BaseException as exc:
            self._watched.pop(watch, None)
            failed: BaseException = exc
            if isinstance(exc, asyncio.CancelledError) and watch.expired:
                task = watch.task
                if task is not None and task.uncancel() == 0:  # our timer's, nobody else's
                    failed = TimeoutError(f"a batch took more than {self._timeout}s")
            _hand_out(watch, [], failed if isinstance(failed, Exception) else RuntimeError())
            if not isinstance(failed, Exception):
                raise
            return
        self._watched.pop(watch, None)
        _hand_out(watch, results, None)

    async def _exchange(self, packed: list[bytes]) -> list[Any]:
        """One write of every command, then their replies in order, on a pooled connection.

        What ``pipeline(transaction=False).execute(raise_on_error=False)`` does, minus its
        per-call bookkeeping (command stack, callbacks, reset). A reply that is an error
        (NOSCRIPT, a script error) is returned in its place; a connection that failed mid-way
        is dropped, not returned to the pool out of step. redis-py makes and connects the
        connection (AUTH, SELECT, Sentinel / Cluster discovery, TLS); with its hiredis parser,
        the write goes to the connection's stream writer and the replies are read from its
        stream into the parser's ``hiredis.Reader`` here: one coroutine, not three per reply.
        """
        # Connections of its own, made by the client's pool but kept here: taking one is a
        # list pop, not the pool's asyncio.Lock twice per batch.
        conn = self._idle.pop() if self._idle else self._client.connection_pool.make_connection()
        healthy = False
        try:
            if not conn.is_connected:  # connect(): a Sentinel / Cluster connection first
                await conn.connect()  # asks where the master is
            reader = getattr(conn._parser, "_reader", None)
            if not self._direct or type(reader) is not hiredis.Reader:
                general = await _talk_redis_py(conn, packed)
                healthy = True
                return general
            # As redis-py's send_packed_command and read_response would: an error reply is
            # returned in its place; a connection error (in a reply too) is raised, and so is
            # READONLY from a Sentinel master (it was demoted: SentinelManagedConnection).
            writer = conn._writer
            writer.write(b"".join(packed))
            if writer.transport.get_write_buffer_size():  # not all sent at once: wait till it is
                try:
                    await writer.drain()
                except OSError as exc:
                    raise RedisConnectionError(f"Error while writing: {exc.args}") from exc
            stream = conn._reader
            want = len(packed)
            results: list[Any] = []
            while True:
                got = reader.gets()
                if got is NOT_ENOUGH_DATA:
                    try:
                        data = await stream.read(READ_SIZE)
                    except OSError as exc:
                        raise RedisConnectionError(f"Error while reading: {exc.args}") from exc
                    if not data:
                        raise RedisConnectionError("Connection closed by server.")
                    reader.feed(data)
                    continue
                if isinstance(got, RedisError):
                    if isinstance(got, RedisConnectionError):
                        raise got
                    if isinstance(got, ReadOnlyError) and getattr(
                        getattr(conn, "connection_pool", None), "is_master", False
                    ):
                        raise RedisConnectionError("The previous master is now a slave")
                elif isinstance(got, list):
                    if type(got) is PUSH:  # RESP3: not a reply (redis-py's parser handles it)
                        await conn._parser.handle_push_response(got)
                        continue
                    if got and isinstance(got[0], RedisConnectionError):
                        raise got[0]
                results.append(got)
                if len(results) == want:
                    healthy = True
                    return results
        finally:
            if healthy and self._wire is None and _Wire.fits(conn, self._direct):
                self._wire = _Wire(self, conn)
            elif healthy and len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
            else:  # failed mid-way (its replies out of step), or one too many
                await conn.disconnect()

    async def settled(self) -> None:
        """Return once every call made so far has its answer (or its failure): the queued and
        held ones are sent now. For a caller off the hot path whose own read must see the
        calls sent before it without waiting for them (``RedisState.after``)."""
        if self._held or self._queue:
            self._flush()
        waits: list[asyncio.Future[Any]] = list(self._tasks)
        wire = self._wire
        if wire is not None and wire.pending:  # answered in order: the last one is enough
            done = self._loop.create_future()
            wire.pending[-1].waiters.append(done)
            waits.append(done)
        if waits:  # those in flight now, not any a busy process starts meanwhile
            await asyncio.wait(waits)

    async def drop_connections(self) -> None:
        """Close the idle connections (to a server that went away: they are dead)."""
        idle, self._idle = self._idle, []
        wire, self._wire = self._wire, None
        if wire is not None:
            wire.fail(RedisConnectionError("the connection was dropped"))
        for conn in idle:
            await conn.disconnect()

    def _evalsha(self, name: str, args: list[Any]) -> bytes:
        """``EVALSHA <sha> 0 <args...>`` in RESP, as redis-py's ``pack_command`` writes it
        (str as UTF-8, numbers as their repr) for the values the scripts take: str, bytes,
        int and float. Written here because redis-py's generic packer cost ~8 µs a call."""
        out = [self._head[name] % (3 + len(args))]
        for a in args:
            b = a if type(a) is bytes else a.encode() if type(a) is str else _encoded(a)
            out.append(b"$%d\r\n%b\r\n" % (len(b), b))
        return b"".join(out)

    async def aclose(self) -> None:
        if self._held_timer is not None:
            self._held_timer.cancel()
        for call in self._held + self._queue:
            call[2].cancel()
        self._held, self._queue = [], []
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        self._watched.clear()
        for task in list(self._tasks):
            task.cancel()
        wire, self._wire = self._wire, None
        if wire is not None:  # its calls in flight are cancelled, as the queued ones were
            wire.fail(None)
        await self.drop_connections()


def _encoded(a: Any) -> bytes:
    """An argument as redis-py packs it: bytes as they are, str as UTF-8, a number as its
    repr."""
    if isinstance(a, bytes):
        return a
    if isinstance(a, str):
        return a.encode()
    return repr(a).encode()


def _no_script(result: Any) -> bool:
    """redis-py answers a missing script with NoScriptError ("No matching script")."""
    return isinstance(result, Exception) and (
        type(result).__name__ == "NoScriptError" or "NOSCRIPT" in str(result)
    )


def _settle(owner: Owner, result: Any, exc: BaseException | None) -> None:
    """Give a command's answer (or ``exc``) to its call, or hand a folded command's answer
    out to the calls it stands for: each its part of the answer, or the exception."""
    if not isinstance(owner, list):
        _answer(owner, result, exc)
        return
    if exc is None and (not isinstance(result, list) or len(result) != len(owner)):
        exc = RuntimeError(f"a folded call answered {result!r}")
    for i, call in enumerate(owner):
        if exc is not None:
            _answer(call, None, exc)
        else:
            _answer(call, result[i], None)


def _answer(call: Call, result: Any, exc: BaseException | None) -> None:
    """Give ``call`` its answer (or ``exc``, its exception), or, when it was answered
    :data:`LATE`, tell its ``late`` handler. A call its caller gave up (cancelled) is left."""
    future = call[2]
    if not future.done():
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
        return
    late = call[3]
    if late is None or future.cancelled():
        return
    outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    if exc is not None:
        outcome.set_exception(exc)
    else:
        outcome.set_result(result)
    late(outcome)


class _Watch:
    """The timed steps of a batch in flight, in order. At a ``(when, calls)`` step those calls
    not answered yet (and with a ``late`` handler) are answered LATE; at the ``(when, None)``
    step (the batch's timeout) the batch's task is cancelled (it fails as TimeoutError)."""

    __slots__ = (
        "expired",
        "names",
        "owners",
        "packed",
        "results",
        "steps",
        "task",
        "waiters",
        "wire",
    )

    def __init__(
        self,
        steps: list[tuple[float, list[Call] | None]],
        names: list[str],
        packed: list[bytes],
        owners: list[Owner],
    ) -> None:
        self.steps = steps
        self.names, self.packed, self.owners = names, packed, owners
        """Its commands (their script names, as sent) and whom each answer is for."""
        self.task: asyncio.Task[None] | None = None
        self.expired = False
        self.wire: _Wire | None = None
        """The connection it was written to (a wire batch), whose replies it waits for."""
        self.results: list[Any] = []
        """A wire batch's replies so far."""
        self.waiters: list[asyncio.Future[Any]] = []
        """Futures told when it is done (:meth:`AutoPipeline.settled`)."""

    def take(self, now: float) -> float:
        """Take the steps due by ``now``; return when the next one is due (inf: none)."""
        steps = self.steps
        while steps and steps[0][0] <= now:
            calls = steps.pop(0)[1]
            if calls is None:
                self.expired = True
                if self.task is not None:
                    self.task.cancel()
                elif self.wire is not None:  # its connection is out of step: dropped
                    self.wire.fail(TimeoutError(f"a batch took more than {self.wire.timeout}s"))
            else:
                _mark_late(calls)
        return steps[0][0] if steps else math.inf


async def _talk_redis_py(conn: Any, packed: list[bytes]) -> list[Any]:
    """One write of ``packed`` and its replies with redis-py's ``send_packed_command`` and
    ``read_response``."""
    await conn.send_packed_command(packed, check_health=False)
    results: list[Any] = []
    for _ in packed:
        try:
            results.append(await conn.read_response())
        except ResponseError as exc:
            results.append(exc)
    return results


def _mark_late(calls: list[Call]) -> None:
    """Timer of a batch: its calls not answered yet (and with a ``late`` handler) are LATE."""
    for call in calls:
        if call[3] is not None and not call[2].done():
            call[2].set_result(LATE)


def consume(future: asyncio.Future[Any]) -> None:
    """Done callback for a future nobody awaits any more: take its exception, if any."""
    if not future.cancelled():
        future.exception()


def _hand_out(watch: _Watch, results: list[Any], error: BaseException | None) -> None:
    """A batch is done: each of its answers (or ``error``, for all) to the call or the folded
    calls it is for, then whoever waits for it is told (:func:`_release`)."""
    if error is not None:
        for owner in watch.owners:
            _settle(owner, None, error)
    else:
        for owner, result in zip(watch.owners, results, strict=True):
            if isinstance(result, Exception):
                _settle(owner, None, result)
            else:
                _settle(owner, result, None)
    _release(watch)


def _release(watch: _Watch) -> None:
    """Tell whoever waits for ``watch``'s batch to be done (:meth:`AutoPipeline.settled`)."""
    for waiter in watch.waiters:
        if not waiter.done():
            waiter.set_result(None)


class _Wire(asyncio.Protocol):
    """A pooled connection taken over after its first batch: redis-py connected it (AUTH,
    SELECT, Sentinel / Cluster discovery); then its transport's protocol is this one. A batch
    is written from :meth:`AutoPipeline._flush` and its replies parsed here as they arrive, in
    order, into the connection's ``hiredis.Reader``; each batch's answers are handed out from
    ``data_received``: no task, no stream reader and no loop turn per batch, and batches in
    flight share the one connection (Redis answers in order). Whatever breaks it (the
    connection lost, a connection error or READONLY from a demoted master in a reply, a batch
    past its timeout) fails every batch in flight on it and closes it; the next batch runs in
    a task on a new connection, which is taken over in turn."""

    @staticmethod
    def fits(conn: Any, direct: bool) -> bool:
        """A connection read with hiredis whose stream has nothing unread."""
        reader = getattr(getattr(conn, "_parser", None), "_reader", None)
        writer = getattr(conn, "_writer", None)
        stream = getattr(conn, "_reader", None)
        return (
            direct
            and type(reader) is hiredis.Reader
            and writer is not None
            and stream is not None
            and not getattr(stream, "_buffer", b"x")
            and hasattr(writer.transport, "set_protocol")
        )

    def __init__(self, pipe: AutoPipeline, conn: Any) -> None:
        self.pipe = pipe
        self.conn = conn
        self.reader: Any = conn._parser._reader
        self.timeout = pipe._timeout
        self.alive = True
        self.pending: deque[_Watch] = deque()
        self.master = bool(getattr(getattr(conn, "connection_pool", None), "is_master", False))
        """A Sentinel master's connection: READONLY in a reply means it was demoted."""
        self.transport: Any = conn._writer.transport
        self.inner: Any = self.transport.get_protocol()
        """redis-py's stream protocol, told when the connection is lost (its stream closed)."""
        self.transport.set_protocol(self)

    def send(self, watch: _Watch) -> None:
        watch.wire = self
        self.pending.append(watch)
        try:
            self.transport.write(b"".join(watch.packed))
        except Exception as exc:  # a transport closed under us
            self.fail(RedisConnectionError(f"Error while writing: {exc}"))

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        pending = self.pending
        while True:
            got = reader.gets()
            if got is NOT_ENOUGH_DATA:
                return
            if isinstance(got, RedisError):
                if isinstance(got, RedisConnectionError):
                    self.fail(got)
                    return
                if isinstance(got, ReadOnlyError) and self.master:
                    self.fail(RedisConnectionError("The previous master is now a slave"))
                    return
            elif isinstance(got, list):
                if type(got) is PUSH:  # RESP3, not a reply: nothing on these connections
                    continue  # subscribes or tracks, so no handler of redis-py's is skipped
                if got and isinstance(got[0], RedisConnectionError):
                    self.fail(got[0])
                    return
            if not pending:
                self.fail(RedisConnectionError("a reply no command was waiting for"))
                return
            watch = pending[0]
            watch.results.append(got)
            if len(watch.results) == len(watch.packed):
                pending.popleft()
                self.pipe._answered(watch, None)

    def eof_received(self) -> bool:
        return False  # the transport closes: connection_lost

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc else ""
        self.fail(RedisConnectionError(f"Connection closed by server{reason}."))
        self.inner.connection_lost(exc)

    def fail(self, error: BaseException | None) -> None:
        """Fail every batch in flight with ``error`` (None: cancel their calls, the pipeline
        is closing) and close the connection (what it reads next would be out of step)."""
        if self.alive:
            self.alive = False
            self.pipe._lost(self)
            self.conn._close()
        pending, self.pending = self.pending, deque()
        for watch in pending:
            if error is not None:
                self.pipe._answered(watch, error)
                continue
            closed = RuntimeError("the pipeline was closed")
            for owner in watch.owners:
                for call in owner if isinstance(owner, list) else (owner,):
                    if call[2].done():  # answered LATE: its handler is told it failed
                        _answer(call, None, closed)
                    else:
                        call[2].cancel()
            _release(watch)
