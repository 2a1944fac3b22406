"""Helpers for the Messages end-to-end tests: the real ``anthropic`` SDK and raw HTTP against a
gateway, request bodies with fault directives, and what the upstream hosts received."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson

from tests.support.e2e import (
    MASTER_KEY,
    directive,
    module_gateway,
    sim_requests,
)
from tests.support.procs import Proc

VERSION = {"anthropic-version": "2023-06-01"}
KEYED = {"x-api-key": MASTER_KEY, **VERSION}
MESSAGES = "/v1/messages"
SONNET = "claude-sonnet-4-5-20250929"
BASH = {
    "name": "Bash",
    "description": "Run a shell command",
    "input_schema": {
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
    },
}
READ = {
    "name": "Read",
    "description": "Read a file",
    "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
}


@contextmanager
def messages_gateway(sim: Proc, tmp: Path, **sections: Any) -> Iterator[Proc]:
    """A gateway of its own (its log holds only this module's traffic): auth on with the
    master key, breakers that open only on explicit cooldowns (never on counts or rates: the
    faults one test injects must not close hosts to the next), a 3 s time to first token."""
    sections.setdefault("routing", {"ttft_timeout_s": 3.0})
    sections.setdefault("breaker", {"failure_threshold": 1000, "error_min_requests": 100_000})
    with module_gateway(sim, tmp, **sections) as proc:
        yield proc


def sdk(proc: Proc, *, key: str = MASTER_KEY, bearer: bool = False) -> anthropic.AsyncAnthropic:
    """The real SDK (no retries): the key as ``x-api-key``, or as ``Authorization: Bearer``
    (Claude Code's ``ANTHROPIC_AUTH_TOKEN``). Use as ``async with sdk(gw) as c:``."""
    if bearer:
        return anthropic.AsyncAnthropic(
            base_url=proc.url, auth_token=key, api_key=None, max_retries=0, timeout=60
        )
    return anthropic.AsyncAnthropic(base_url=proc.url, api_key=key, max_retries=0, timeout=60)


def said(text: str, tag: str, rule: dict[str, Any] | list[dict[str, Any]] | None = None) -> str:
    """``text`` with ``tag`` (to find the request upstream) and a directive when given."""
    return f"{text} {tag}" + (f" {directive(rule, tag)}" if rule is not None else "")


def body(text: str, model: str = SONNET, max_tokens: int = 1024, **kw: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}],
        **kw,
    }


async def post(
    proc: Proc,
    payload: Any,
    headers: dict[str, str] | None = None,
    path: str = MESSAGES,
) -> httpx.Response:
    """One raw POST (``payload`` bytes are sent as is), the master key as ``x-api-key``."""
    hdrs = {**KEYED, **(headers or {})}
    content = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    hdrs.setdefault("content-type", "application/json")
    return await request(proc, "POST", path, content=content, headers=hdrs)


async def request(proc: Proc, method: str, path: str, **kw: Any) -> httpx.Response:
    """Any request to ``proc`` (no key unless given in ``headers``)."""
    async with httpx.AsyncClient(base_url=proc.url, timeout=60) as c:
        return await c.request(method, path, **kw)


def upstream_bodies(sim: Proc, tag: str) -> list[dict[str, Any]]:
    """The chat bodies upstream hosts received for ``tag``, oldest first."""
    return [q["body"] for q in sim_requests(sim, tag) if isinstance(q.get("body"), dict)]


def lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}
