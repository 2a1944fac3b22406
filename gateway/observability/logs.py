"""Logging set-up: one JSON object per line (or readable text) on stderr, level from config.

The access log (``glm_gateway.access``) writes records that are already JSON; every other
record, uvicorn's included, becomes a small JSON object with its traceback as a field, so a log
pipeline never sees a multi-line entry in ``json`` format. The message and traceback of every
such record pass through a :class:`~gateway.observability.redact.Redactor` (the last line of
defence: an exception's text may quote a URL with a key in it); access lines are redacted where
they are built (:mod:`gateway.observability.access`).

Access lines do not go through ``logging`` one by one: :class:`AccessWriter` buffers them and
writes each event-loop turn's lines to the access logger's handlers at once.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO, TypeGuard

import orjson

from gateway.catalogue.schema import LoggingConfig
from gateway.observability.redact import Redactor

ACCESS_LOGGER = "glm_gateway.access"
SERVER_LOGGERS = ("uvicorn", "uvicorn.error")


def _time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JSONFormatter(logging.Formatter):
    """Access records pass through; others become ``{"event": "log", ...}`` objects, their
    message and traceback redacted."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redact = redactor if redactor is not None else Redactor()

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.name == ACCESS_LOGGER and msg.startswith("{"):
            return msg
        out: dict[str, Any] = {
            "event": "log",
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": self.redact(msg),
        }
        if record.exc_info:
            out["exc"] = self.redact(self.formatException(record.exc_info))
        if record.stack_info:
            out["stack"] = self.redact(self.formatStack(record.stack_info))
        return orjson.dumps(out).decode()


class TextFormatter(logging.Formatter):
    """For people at a terminal: access records as one short line, others as usual (redacted:
    message, traceback and all)."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self.redact = redactor if redactor is not None else Redactor()

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.name != ACCESS_LOGGER or not msg.startswith("{"):
            return self.redact(super().format(record))
        try:
            rec = orjson.loads(msg)
        except orjson.JSONDecodeError:
            return super().format(record)
        return f"{self.formatTime(record)} {record.levelname} access {access_line(rec)}"


def access_line(rec: dict[str, Any]) -> str:
    """``200 glm-4.7@deepinfra 331.2ms tokens=12/40 $0.0000748 key=master req=… [attempts]``"""
    attempts = " → ".join(f"{a['provider']}:{a['class']}" for a in rec.get("attempts") or [])
    parts = [
        str(rec.get("status")),
        f"{rec.get('variant')}@{rec.get('provider')}",
        f"{rec.get('duration_ms')}ms",
        f"tokens={rec.get('tokens_in', 0)}/{rec.get('tokens_out', 0)}",
        f"${rec.get('cost_usd', 0)}",
        f"key={rec.get('key_id')}",
        f"req={rec.get('request_id')}",
    ]
    if attempts:
        parts.append(f"[{attempts}]")
    if rec.get("error"):
        parts.append(f"error={rec['error']}")
    return " ".join(parts)


def configure_logging(level: str, cfg: LoggingConfig, redactor: Redactor | None = None) -> None:
    """Our loggers and uvicorn's to stderr in ``cfg.format``; ours at ``level``. ``redactor``
    (default: credential shapes only) cleans every record but the access lines."""
    handler = StderrHandler(sys.stderr)
    formatter = JSONFormatter(redactor) if cfg.format == "json" else TextFormatter(redactor)
    handler.setFormatter(formatter)
    root = logging.getLogger("glm_gateway")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    for name in SERVER_LOGGERS:
        server = logging.getLogger(name)
        server.handlers[:] = [handler]
        server.propagate = False


class StderrHandler(logging.StreamHandler[TextIO]):
    """``configure_logging``'s handler: access lines still queued for this loop turn are
    written before any other record, so stderr keeps the order things were logged in."""

    def emit(self, record: logging.LogRecord) -> None:
        ACCESS_WRITER.flush()
        super().emit(record)


class UTCNow:
    """Now as ``datetime.now(UTC)`` reads once orjson wrote it (RFC 3339, microseconds, and
    no fraction when they are 0), with the date and time of day formatted once a second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = b""

    def __call__(self) -> str:
        prefix, micros = self.parts()
        if micros:
            return f"{prefix.decode()}.{micros:06d}+00:00"
        return prefix.decode() + "+00:00"

    def parts(self) -> tuple[bytes, int]:
        """Now as the date and time of day to the second (``2026-12-06T18:00:00``, ASCII) and
        the microseconds past it: what :meth:`__call__` writes, for a caller that writes bytes
        (``.%06d+00:00`` after it, or ``+00:00`` when the microseconds are 0)."""
        second, micros = divmod(time.time_ns() // 1000, 1_000_000)  # floored, as datetime does
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
            self._second = second
        return self._prefix, micros


ATOMIC_WRITE = 4096
"""PIPE_BUF on Linux: a write to a pipe up to this size is never interleaved with another
process's. ``serve --workers N`` has N processes writing one stderr pipe."""


def _atomic_groups(lines: list[bytes]) -> list[list[bytes]]:
    """``lines`` in order, cut into groups of at most :data:`ATOMIC_WRITE` bytes with their
    newlines (a longer line stays alone), so that no write splits a line."""
    if len(lines) == 1 or sum(map(len, lines)) + len(lines) <= ATOMIC_WRITE:
        return [lines]  # (one line, however long, is one write anyway)
    groups: list[list[bytes]] = [[]]
    size = 0
    for line in lines:
        if groups[-1] and size + len(line) + 1 > ATOMIC_WRITE:
            groups.append([])
            size = 0
        groups[-1].append(line)
        size += len(line) + 1
    return groups


class AccessWriter:
    """Access lines buffered for the rest of the event-loop turn, then written at once.

    A line through ``logging`` costs a LogRecord, a handler lock, a format, a write and a flush;
    a burst of requests ending in the same loop turn now costs one write and one flush. The
    access logger stays the switch (its level: :meth:`enabled`) and its handlers stay the
    destination. When each of them is a plain stream handler (``configure_logging``'s, or a
    file) the lines go to its stream directly, through its formatter unless that is the JSON
    one (which passes access lines through). Any other set-up (a filter, another handler
    class, no handler at all: pytest's ``caplog``, say) gets each line through ``logging.info``
    at once, as before.

    The first line of a turn picks the handlers and schedules the flush (``call_soon``); with no
    running loop the line is written at once, and what is left at exit is written then.
    """

    def __init__(self, name: str = ACCESS_LOGGER) -> None:
        self.logger = logging.getLogger(name)
        self._pending: list[bytes] = []
        self._handlers: list[logging.StreamHandler[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        atexit.register(self.flush)

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def add(self, line: bytes) -> None:
        """Write one JSON line (orjson's bytes, no newline) after the ones already queued."""
        if not self._pending:
            handlers = _stream_handlers(self.logger)
            if handlers is None:
                self.logger.info(line.decode())
                return
            self._handlers = handlers
        self._pending.append(line)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if loop is not self._loop:  # none scheduled on this loop (or on one that stopped)
            loop.call_soon(self.flush)
            self._loop = loop

    def flush(self) -> None:
        """Write what is queued, in order; never raises (handlers report their own errors)."""
        self._loop = None
        lines = self._pending
        if not lines:
            return
        self._pending = []
        for group in (lines,) if len(lines) == 1 else _atomic_groups(lines):
            for handler in self._handlers:
                self._write(handler, group)

    def _write(self, handler: logging.StreamHandler[Any], lines: list[bytes]) -> None:
        """``StreamHandler.emit`` for many lines: one format, write and flush under the
        handler's lock; an error goes to ``handleError`` as it would there."""
        lock = handler.lock  # handler.acquire() and release(), without their two calls
        if lock:
            lock.acquire()
        try:
            stream = handler.stream
            stream.write(self._format(handler, lines))
            stream.flush()  # what handler.flush() does, without taking the lock again
        except RecursionError:
            raise
        except Exception:
            handler.handleError(self._record(lines[0]))
        finally:
            if lock:
                lock.release()

    def _format(self, handler: logging.StreamHandler[Any], lines: list[bytes]) -> str:
        end = handler.terminator
        f = handler.formatter
        if f is None or (type(f) is JSONFormatter and self.logger.name == ACCESS_LOGGER):
            sep = end.encode()  # the line is the message, and the message is what is written
            return (sep.join(lines) + sep).decode()
        return "".join(handler.format(self._record(line)) + end for line in lines)

    def _record(self, line: bytes) -> logging.LogRecord:
        return self.logger.makeRecord(
            self.logger.name, logging.INFO, "", 0, line.decode(), (), None
        )


_PLAIN_HANDLERS = (logging.StreamHandler, logging.FileHandler, StderrHandler)


def _stream_handlers(logger: logging.Logger) -> list[logging.StreamHandler[Any]] | None:
    """The handlers ``logger.info`` would write an INFO record to, when all of them are plain
    stream handlers with an open stream and no filter; else None (``logging`` decides)."""
    if logger.disabled or logger.filters:
        return None
    found: list[logging.StreamHandler[Any]] = []
    seen = 0
    current: logging.Logger | None = logger
    while current is not None:
        for h in current.handlers:
            seen += 1
            if not _plain(h):
                return None
            if h.level <= logging.INFO:
                found.append(h)
        current = current.parent if current.propagate else None
    return found if seen else None


def _plain(handler: logging.Handler) -> TypeGuard[logging.StreamHandler[Any]]:
    return (
        type(handler) in _PLAIN_HANDLERS
        and not handler.filters
        and hasattr(getattr(handler, "stream", None), "flush")
    )


ACCESS_WRITER = AccessWriter()
"""The process's access lines (one stderr per process)."""
