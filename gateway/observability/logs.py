"""Logging set-up: JSON lines (or plain text) on stderr, level from config."""

from __future__ import annotations

import logging
import sys

from gateway.catalogue.schema import LoggingConfig


class _JSONPassthrough(logging.Formatter):
    """Access records are already JSON; other records become small JSON objects."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if msg.startswith("{"):
            return msg
        import orjson

        return orjson.dumps(
            {"event": "log", "level": record.levelname.lower(), "logger": record.name, "msg": msg}
        ).decode()


def configure_logging(level: str, cfg: LoggingConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if cfg.format == "json":
        handler.setFormatter(_JSONPassthrough())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("glm_gateway")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
