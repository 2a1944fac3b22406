"""Helpers for end-to-end tests: fault directives, simulator admin, raw HTTP, SSE, configs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import yaml

from tests.support.procs import CONFIG, Proc, config_copy, start_gateway

MASTER_KEY = "sk-test-master"
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
GATEWAY_ENV = {"GLM_GATEWAY_MASTER_KEY": MASTER_KEY}


def sdk_client(proc: Proc, api_key: str = MASTER_KEY, timeout: float = 60) -> openai.AsyncOpenAI:
    """The real openai SDK pointed at a gateway (no retries: a test sees every answer).

    Use as ``async with sdk_client(proc) as c:``.
    """
    return openai.AsyncOpenAI(
        base_url=proc.url + "/v1", api_key=api_key, max_retries=0, timeout=timeout
    )


GLM_HEADERS = ("x-request-id", "x-glm-variant", "x-glm-provider", "x-glm-attempts")

VARIANTS = (
    "glm-4.7",
    "glm-4.6v",
    "glm-4.5v",
    "glm-4-code-9b",
    "glm-4-air-4b",
    "glm-4-32b",
    "glm-4.7-2501",
    "glm-4.5",
    "glm-4.7-flash",
    "glm-4.5-air",
    "glm-4.6",
    "glm-4-extreme",
    "glm-4-air",
    "glm-4-flash",
    "glm-4-9b",
    "glm-4v-9b",
)
"""The 16 variant ids of DESIGN.md, in models.yaml order."""

IMAGE = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwAB"
    "BAEAwS2OUAAAAABJRU5ErkJggg=="
)
FUNCTION_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def nonce() -> str:
    return "n" + uuid.uuid4().hex[:16]


def directive(rules: dict[str, Any] | list[dict[str, Any]], tag: str) -> str:
    """``<<sim:...>>`` whose text is unique to ``tag`` (so ``times`` counters are not shared).

    A trailing rule that matches no provider carries the tag; it never applies.
    """
    items = rules if isinstance(rules, list) else [rules]
    return "<<sim:" + orjson.dumps([*items, {"match": {"provider": tag}}]).decode() + ">>"


def text_msg(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def image_msg(text: str) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": IMAGE}},
            ],
        }
    ]


def sim_requests(sim: Proc, needle: str) -> list[dict[str, Any]]:
    """What upstream hosts received for requests whose body contains ``needle``, oldest first."""
    r = httpx.get(sim.url + "/_sim/requests", timeout=30)
    r.raise_for_status()
    return [q for q in r.json() if needle in orjson.dumps(q.get("body")).decode()]


def upstream_hits(sim: Proc, needle: str) -> list[tuple[str, str]]:
    """(provider, upstream model id) of every chat request the simulator saw for ``needle``."""
    return [
        (q["provider"], q["body"].get("model"))
        for q in sim_requests(sim, needle)
        if isinstance(q.get("body"), dict)
    ]


def assert_glm_headers(headers: Mapping[str, str]) -> None:
    lowered = {k.lower(): v for k, v in headers.items()}
    missing = [h for h in GLM_HEADERS if not lowered.get(h)]
    assert not missing, f"response lacks {missing}; headers: {dict(lowered)}"
    assert lowered["x-glm-attempts"].isdigit()


def assert_error_shape(body: Any, status: int | None = None) -> dict[str, Any]:
    """``{"error": {message, type, param, code}}`` with a non-empty message; returns the error."""
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    err: dict[str, Any] = body["error"]
    for key in ("message", "type", "param", "code"):
        assert key in err, f"error lacks {key!r}: {err}"
    assert isinstance(err["message"], str) and err["message"].strip()
    assert isinstance(err["type"], str) and err["type"]
    return err


def parse_sse(raw: str) -> list[Any]:
    """``data:`` payloads of an SSE body: parsed JSON, or the string ``"[DONE]"``."""
    out: list[Any] = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        data = "\n".join(line[5:].strip() for line in block.split("\n") if line.startswith("data:"))
        if not data:
            continue
        out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


def chat_body(messages: list[dict[str, Any]], model: str = "auto", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": messages, **extra}


def gateway_yaml(**sections: Mapping[str, Any]) -> str:
    """The shipped gateway.yaml with the given sections updated key by key."""
    data = yaml.safe_load((CONFIG / "gateway.yaml").read_text())
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return yaml.safe_dump(data, sort_keys=False)


@contextmanager
def module_gateway(
    sim: Proc | None,
    tmp: Path,
    *,
    providers_yaml: str | None = None,
    env: Mapping[str, str] | None = None,
    **sections: Mapping[str, Any],
) -> Iterator[Proc]:
    """A gateway of its own (own breakers and state) on a modified copy of the packaged config."""
    cfg = config_copy(tmp, gateway_yaml(**sections))
    if providers_yaml is not None:
        (cfg / "providers.yaml").write_text(providers_yaml)
    proc = start_gateway(sim.url if sim else None, cfg, env={**GATEWAY_ENV, **(env or {})})
    try:
        yield proc
    finally:
        proc.stop()


def log_records(proc: Proc) -> list[dict[str, Any]]:
    """The gateway's JSON access-log lines (other lines are skipped)."""
    out = []
    for line in proc.log_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict) and obj.get("event") == "request":
                out.append(obj)
    return out


def api_records(proc: Proc) -> list[dict[str, Any]]:
    """The access lines of front-end API requests (chat, Messages, Responses): not those of
    models, health, metrics, an unknown path ..., which carry a ``path``."""
    return [r for r in log_records(proc) if "path" not in r]


def log_for(proc: Proc, request_id: str) -> dict[str, Any] | None:
    found = [r for r in log_records(proc) if r.get("request_id") == request_id]
    return found[-1] if found else None


def wait_log_for(proc: Proc, request_id: str, within_s: float = 20.0) -> dict[str, Any]:
    """:func:`log_for`, once the line is there (it is written after the answer is out)."""
    end = time.monotonic() + within_s
    while (rec := log_for(proc, request_id)) is None:
        if time.monotonic() > end:
            raise AssertionError(f"no access-log line for {request_id} in {proc.log_path}")
        time.sleep(0.02)
    return rec


async def wait_for_log(proc: Proc, request_id: str, within_s: float = 20.0) -> dict[str, Any]:
    """:func:`wait_log_for` for async tests (the event loop keeps running)."""
    end = time.monotonic() + within_s
    while (rec := log_for(proc, request_id)) is None:
        if time.monotonic() > end:
            raise AssertionError(f"no access-log line for {request_id} in {proc.log_path}")
        await asyncio.sleep(0.05)
    return rec
