"""Provider keys that hosts echo never leave the gateway: not to clients, not to logs or metrics.

A gateway of its own with real provider keys (no ``--simulator``: keys are sent as configured)
in front of the simulator, whose fault messages repeat the key the request carried
(``{api_key}``) along with a prefix, a suffix and OpenAI's masked form of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.e2e import (
    AUTH,
    assert_error_shape,
    chat_body,
    directive,
    module_gateway,
    nonce,
    parse_sse,
    text_msg,
)
from tests.support.procs import Proc

KEY = "sk-test-SECRET-1234567890abcdef"
FRAGMENTS = (KEY, KEY[:12], KEY[-12:], "SECRET-1234", "1234567890abcdef", "sk-test-S", "sk-test-*")
ECHO = (
    "Incorrect API key provided: {api_key}. You may mean "
    f"{KEY[:8]}{'*' * 16}{KEY[-4:]} ({KEY[:14]}... or ...{KEY[-14:]})."
)
PROVIDERS = ("zai", "deepinfra", "together", "fireworks", "novita", "siliconflow")
DIALECT = {"zai": "zhipu", "siliconflow": "siliconflow"}
MODEL = {
    "zai": "glm-4.7",
    "deepinfra": "zai-org/GLM-4.7",
    "together": "zai-org/GLM-4.7",
    "fireworks": "accounts/fireworks/models/glm-4p7",
    "novita": "zai-org/glm-4.7",
    "siliconflow": "Pro/zai-org/GLM-4.7",
}
CHAT = "/v1/chat/completions"


def providers_yaml(sim: Proc) -> str:
    rows = ["providers:"]
    for name in PROVIDERS:
        rows += [
            f"  {name}:",
            f"    name: {name}",
            f"    dialect: {DIALECT.get(name, 'openai')}",
            f"    base_url: {sim.url}/{name}/v1",
            f"    api_key_env: {name.upper()}_API_KEY",
            "    deployments:",
            f"      - {{variant: glm-4.7, model: {MODEL[name]}}}",
        ]
    return "\n".join(rows) + "\n"


@pytest.fixture(scope="module")
def gw(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with module_gateway(
        None,
        tmp_path_factory.mktemp("redact"),
        providers_yaml=providers_yaml(simulator),
        env={f"{p.upper()}_API_KEY": KEY for p in PROVIDERS},
        breaker={"failure_threshold": 1000},
    ) as proc:
        yield proc


def assert_clean(where: str, text: str) -> None:
    for fragment in FRAGMENTS:
        assert fragment not in text, f"{fragment!r} in {where}: {text[:2000]}"


def headers_text(r: httpx.Response) -> str:
    return "\n".join(f"{k}: {v}" for k, v in r.headers.items())


def ask(tag: str, rules: list[dict[str, Any]], providers: str, **extra: Any) -> dict[str, Any]:
    body = chat_body(text_msg(f"hi {tag} {directive(rules, tag)}"), model="glm-4.7", **extra)
    return {"json": body, "headers": {"X-GLM-Providers": providers}}


async def test_echoed_keys_reach_no_client_log_metric_or_page(gw: Proc) -> None:
    async with httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=60) as c:
        # 1. Z.ai says 401 repeating the key; DeepInfra answers: a fallback, with its reason.
        tag = nonce()
        auth = {"match": {"provider": "zai"}, "status": 401, "code": "1000", "message": ECHO}
        ok = await c.post(CHAT, **ask(tag, [auth], "zai,deepinfra"))
        assert ok.status_code == 200, ok.text
        assert ok.headers["x-glm-provider"] == "deepinfra"
        assert "zai/glm-4.7 auth 401" in ok.headers["x-glm-fallback-reason"]
        assert_clean("the fallback's headers", headers_text(ok))
        assert_clean("the fallback's body", ok.text)

        # 2. Every candidate fails with the key in its message: 502 with every attempt listed.
        tag = nonce()
        rules = [
            {"match": {"provider": "together"}, "status": 401, "message": ECHO},
            {"match": {"provider": "fireworks"}, "status": 500, "message": ECHO},
        ]
        failed = await c.post(CHAT, **ask(tag, rules, "together,fireworks"))
        assert failed.status_code == 502, failed.text
        err = assert_error_shape(failed.json())
        assert [a["provider"] for a in err["attempts"]] == ["together", "fireworks", "fireworks"]
        assert all("[REDACTED]" in a["message"] for a in err["attempts"]), err["attempts"]
        assert "[REDACTED]" in err["message"]
        assert_clean("the 502 body", failed.text)
        assert_clean("the 502 headers", headers_text(failed))

        # 3. A host refusing the request (caller class) is answered with its message: 400.
        tag = nonce()
        caller = {"match": {"provider": "siliconflow"}, "status": 400, "message": ECHO}
        refused = await c.post(CHAT, **ask(tag, [caller], "siliconflow"))
        assert refused.status_code == 400, refused.text
        assert "[REDACTED]" in assert_error_shape(refused.json())["message"]
        assert_clean("the 400 body", refused.text)
        assert_clean("the 400 headers", headers_text(refused))

        # 4. A stream that fails after its first token with the key in the error event.
        tag = nonce()
        cut = {
            "match": {"provider": "novita"},
            "cut_after_chunks": 1,
            "stream_error": {"code": "invalid_api_key", "message": ECHO},
        }
        streamed = await c.post(CHAT, **ask(tag, [cut], "novita", stream=True))
        assert streamed.status_code == 200
        events = parse_sse(streamed.text)
        assert "[DONE]" not in events and isinstance(events[-1], dict), events[-3:]
        assert events[-1]["error"]["code"] == "stream_interrupted"
        assert "[REDACTED]" in events[-1]["error"]["message"]
        assert_clean("the stream", streamed.text)
        assert_clean("the stream's headers", headers_text(streamed))

        # Everything else that leaves the process.
        route = await c.post("/v1/route", **ask(nonce(), [], ",".join(PROVIDERS)))
        assert route.status_code == 200
        assert_clean("/v1/route", route.text + headers_text(route))
        metrics = await c.get("/metrics")
        assert "glm_gateway_upstream_attempts_total" in metrics.text
        assert_clean("/metrics", metrics.text)
        page = await c.get("/dashboard/data")
        assert page.status_code == 200 and page.json()["circuits"]
        assert_clean("/dashboard/data", page.text)
        ready = await c.get("/readyz")
        assert_clean("/readyz", ready.text)

    log = gw.log_text()
    assert log.count('"event":"request"') >= 4 and "[REDACTED]" in log
    assert_clean("the gateway's log", log)
