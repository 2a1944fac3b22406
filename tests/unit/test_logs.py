"""Log formatting: one JSON object per line (tracebacks included), readable text on request."""

from __future__ import annotations

import io
import logging
import sys

import orjson
import pytest

from gateway.catalogue.schema import LoggingConfig
from gateway.observability.logs import (
    ACCESS_LOGGER,
    JSONFormatter,
    TextFormatter,
    access_line,
    configure_logging,
)

ACCESS = {
    "event": "request",
    "request_id": "req_1",
    "key_id": "master",
    "status": 200,
    "variant": "glm-4.7",
    "provider": "deepinfra",
    "attempts": [
        {"provider": "together", "class": "overloaded"},
        {"provider": "deepinfra", "class": "ok"},
    ],
    "tokens_in": 12,
    "tokens_out": 40,
    "cost_usd": 7.48e-05,
    "duration_ms": 331.2,
    "error": None,
}


def record(name: str, msg: str, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, None, info)


def test_json_passes_access_records_through_and_wraps_the_rest() -> None:
    f = JSONFormatter()
    line = orjson.dumps(ACCESS).decode()
    assert f.format(record(ACCESS_LOGGER, line)) == line
    out = f.format(record("uvicorn.error", "Exception in ASGI application", exc=True))
    assert "\n" not in out
    obj = orjson.loads(out)
    assert obj["event"] == "log" and obj["level"] == "error" and obj["logger"] == "uvicorn.error"
    assert "ValueError: boom" in obj["exc"] and obj["time"].endswith("+00:00")
    # a "{" message from another logger is not mistaken for an access record
    assert orjson.loads(f.format(record("glm_gateway.x", "{not json")))["msg"] == "{not json"


def test_text_format_renders_access_records_as_one_short_line() -> None:
    out = TextFormatter().format(record(ACCESS_LOGGER, orjson.dumps(ACCESS).decode()))
    assert "access 200 glm-4.7@deepinfra 331.2ms tokens=12/40" in out
    assert "[together:overloaded → deepinfra:ok]" in out and "key=master" in out
    assert access_line({**ACCESS, "attempts": [], "error": "x"}).endswith("error=x")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_configure_logging_sets_level_and_format_for_ours_and_uvicorn(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level,
                 logging.getLogger(n).propagate)
             for n in ("glm_gateway", "uvicorn", "uvicorn.error")}  # fmt: skip
    try:
        configure_logging("warning", LoggingConfig(format=fmt))  # type: ignore[arg-type]
        logging.getLogger("glm_gateway.access").info("dropped below the level")
        logging.getLogger("uvicorn.error").warning("server says")
        lines = stream.getvalue().splitlines()
        assert len(lines) == 1 and "server says" in lines[0]
        assert lines[0].startswith("{") == (fmt == "json")
    finally:
        for n, (handlers, level, propagate) in saved.items():
            lg = logging.getLogger(n)
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate
