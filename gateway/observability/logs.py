"""Logging set-up: one JSON object per line (or readable text) on stderr, level from config.

The access log (``glm_gateway.access``) writes records that are already JSON; every other
record, uvicorn's included, becomes a small JSON object with its traceback as a field, so a log
pipeline never sees a multi-line entry in ``json`` format.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.catalogue.schema import LoggingConfig

ACCESS_LOGGER = "glm_gateway.access"
SERVER_LOGGERS = ("uvicorn", "uvicorn.error")


def _time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JSONFormatter(logging.Formatter):
    """Access records pass through; others become ``{"event": "log", ...}`` objects."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.name == ACCESS_LOGGER and msg.startswith("{"):
            return msg
        out: dict[str, Any] = {
            "event": "log",
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": msg,
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


class TextFormatter(logging.Formatter):
    """For people at a terminal: access records as one short line, others as usual."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.name != ACCESS_LOGGER or not msg.startswith("{"):
            return super().format(record)
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


def configure_logging(level: str, cfg: LoggingConfig) -> None:
    """Our loggers and uvicorn's to stderr in ``cfg.format``; ours at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if cfg.format == "json" else TextFormatter())
    root = logging.getLogger("glm_gateway")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    for name in SERVER_LOGGERS:
        server = logging.getLogger(name)
        server.handlers[:] = [handler]
        server.propagate = False
