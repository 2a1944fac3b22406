"""OpenTelemetry traces from a real gateway, exported by the real OTLP/HTTP exporter to a
receiver on loopback that decodes them with the official protobuf definitions.

A gateway with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, two providers served by the simulator under
real-looking keys, the real ``openai`` and ``anthropic`` SDKs. Each request is found in the
export by its request id: one SERVER span, one CLIENT span per upstream attempt below it, and
the ``traceparent`` the simulator received names the attempt span.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anthropic
import openai
import orjson
import pytest
import pytest_asyncio

from tests.support.e2e import MASTER_KEY, directive, module_gateway, nonce, sdk_client, text_msg
from tests.support.e2e import sim_requests as sim_log
from tests.support.otlp import OTLPReceiver, ReceivedSpan
from tests.support.procs import Proc, free_port

ZAI_KEY = "sk-zai-SECRET-0123456789abcdef"
DEEPINFRA_KEY = "sk-deepinfra-SECRET-fedcba9876543210"
SERVER, CLIENT = 2, 3  # OTLP span kinds
ERROR = 2  # OTLP status code
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_PARENT = "b7ad6b7169203331"


def providers_yaml(sim: Proc) -> str:
    return f"""providers:
  zai:
    name: Z.ai
    dialect: zhipu
    base_url: {sim.url}/zai/v1
    anthropic_base_url: {sim.url}/zai/anthropic
    api_key_env: ZAI_API_KEY
    deployments:
      - {{variant: glm-4.7, model: glm-4.7}}
  deepinfra:
    name: DeepInfra
    base_url: {sim.url}/deepinfra/v1
    api_key_env: DEEPINFRA_API_KEY
    deployments:
      - {{variant: glm-4.7, model: zai-org/GLM-4.7}}
"""


def otel_env(endpoint: str, **more: str) -> dict[str, str]:
    return {
        "ZAI_API_KEY": ZAI_KEY,
        "DEEPINFRA_API_KEY": DEEPINFRA_KEY,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test",
        **more,
    }


@pytest_asyncio.fixture(scope="module")
async def receiver() -> AsyncIterator[OTLPReceiver]:
    r = OTLPReceiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture(scope="module")
def gw(
    simulator: Proc, receiver: OTLPReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proc]:
    with module_gateway(
        None,
        tmp_path_factory.mktemp("traces"),
        providers_yaml=providers_yaml(simulator),
        env=otel_env(receiver.url),
        breaker={"failure_threshold": 1000},
    ) as proc:
        yield proc


@pytest_asyncio.fixture
async def client(gw: Proc) -> AsyncIterator[openai.AsyncOpenAI]:
    async with sdk_client(gw) as c:
        yield c


async def request_spans(
    receiver: OTLPReceiver, request_id: str, attempts: int = 1
) -> tuple[ReceivedSpan, list[ReceivedSpan]]:
    """The request's SERVER span and its attempts' CLIENT spans, in the order they started."""
    (top,) = await receiver.wait_for(lambda s: s.attrs.get("glm.request_id") == request_id)
    below = await receiver.wait_for(lambda s: s.parent_span_id == top.span_id, attempts)
    assert len(below) == attempts, below
    return top, sorted(below, key=lambda s: s.start_ns)


def upstream_traceparents(sim: Proc, tag: str) -> list[str]:
    return [q["headers"].get("traceparent", "") for q in sim_log(sim, tag)]


async def test_chat_request_and_attempt_spans(
    client: openai.AsyncOpenAI, receiver: OTLPReceiver, simulator: Proc
) -> None:
    tag = nonce()
    raw = await client.chat.completions.with_raw_response.create(
        model="glm-4.7", messages=text_msg(f"hi {tag}"), max_tokens=64, temperature=0.5
    )
    top, (attempt,) = await request_spans(receiver, raw.headers["x-request-id"])
    provider = raw.headers["x-glm-provider"]
    assert top.kind == SERVER and attempt.kind == CLIENT
    assert top.name == "chat glm-4.7"
    assert top.resource["service.name"] == "glm-gateway"
    assert top.resource["deployment.environment.name"] == "test"
    a = top.attrs
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "glm-4.7"
    assert a["gen_ai.response.model"] == "glm-4.7"
    assert a["gen_ai.provider.name"] == provider
    assert a["gen_ai.request.max_tokens"] == 64 and a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.request.stream"] is False
    assert a["glm.api"] == "chat" and a["glm.key_id"] == "master"
    assert a["glm.candidates.count"] == 2
    assert sorted(a["glm.candidates"].split(",")) == ["deepinfra/glm-4.7", "zai/glm-4.7"]
    assert a["glm.variant"] == "glm-4.7" and a["glm.attempts"] == 1
    assert a["http.response.status_code"] == 200 and top.status_code != ERROR
    assert "gen_ai.input.messages" not in a  # no prompt text unless configured
    b = attempt.attrs
    assert b["gen_ai.provider.name"] == b["gen_ai.system"] == provider
    assert b["gen_ai.operation.name"] == "chat" and b["glm.variant"] == "glm-4.7"
    assert b["gen_ai.request.model"] in ("glm-4.7", "zai-org/GLM-4.7")  # the host's model id
    assert b["server.address"] == "127.0.0.1" and b["http.response.status_code"] == 200
    assert b["gen_ai.usage.output_tokens"] == a["gen_ai.usage.output_tokens"]
    assert top.start_ns <= attempt.start_ns <= attempt.end_ns <= top.end_ns
    # The host got the attempt span's context (sampled), not anything the client sent.
    (sent,) = upstream_traceparents(simulator, tag)
    version, trace_id, parent, flags = sent.split("-")
    assert (version, trace_id, parent) == ("00", top.trace_id, attempt.span_id)
    assert int(flags, 16) & 1


async def test_stream_span_ends_with_the_stream(
    client: openai.AsyncOpenAI, receiver: OTLPReceiver
) -> None:
    tag = nonce()
    raw = await client.chat.completions.with_raw_response.create(
        model="glm-4.7",
        messages=text_msg(f"hi {tag}"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in raw.parse()]
    assert chunks[-1].usage is not None
    top, (attempt,) = await request_spans(receiver, raw.headers["x-request-id"])
    a = top.attrs
    assert a["gen_ai.request.stream"] is True
    assert a["gen_ai.usage.output_tokens"] == chunks[-1].usage.completion_tokens
    assert 0 < a["gen_ai.response.time_to_first_chunk"] < (top.end_ns - top.start_ns) / 1e9
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert attempt.end_ns <= top.end_ns


async def test_a_stream_cut_after_its_first_token_is_an_error_span(
    client: openai.AsyncOpenAI, receiver: OTLPReceiver
) -> None:
    tag = nonce()
    cut = directive({"match": {"provider": "zai"}, "cut_after_chunks": 2}, tag)
    raw = await client.chat.completions.with_raw_response.create(
        model="glm-4.7",
        messages=text_msg(f"hi {tag} {cut}"),
        stream=True,
        extra_headers={"X-GLM-Providers": "zai"},
    )
    with pytest.raises(openai.APIError):
        async for _ in raw.parse():
            pass
    top, (attempt,) = await request_spans(receiver, raw.headers["x-request-id"])
    assert top.status_code == ERROR and top.attrs["http.response.status_code"] == 502
    assert top.attrs["error.type"].startswith("stream_")
    assert attempt.status_code == ERROR and attempt.attrs["error.type"] == "transient"
    assert attempt.end_ns <= top.end_ns


async def test_anthropic_messages_span(gw: Proc, receiver: OTLPReceiver, simulator: Proc) -> None:
    tag = nonce()
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0) as c:
        raw = await c.messages.with_raw_response.create(
            model="glm-4.7",
            max_tokens=64,
            messages=[{"role": "user", "content": f"hi {tag}"}],
            extra_headers={"X-GLM-Providers": "zai"},  # Z.ai takes Messages natively
        )
    top, (attempt,) = await request_spans(receiver, raw.headers["x-request-id"])
    assert top.attrs["glm.api"] == "messages"
    assert top.attrs["gen_ai.response.finish_reasons"] == ["end_turn"]
    (tp,) = upstream_traceparents(simulator, tag)
    assert tp.split("-")[1:3] == [top.trace_id, attempt.span_id]
    assert sim_log(simulator, tag)[0]["api"] == "messages"


async def test_client_traceparent_is_continued(
    client: openai.AsyncOpenAI, receiver: OTLPReceiver, simulator: Proc
) -> None:
    tag = nonce()
    raw = await client.chat.completions.with_raw_response.create(
        model="glm-4.7",
        messages=text_msg(f"hi {tag}"),
        extra_headers={
            "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01",
            "tracestate": "vendor=opaque",
        },
    )
    top, (attempt,) = await request_spans(receiver, raw.headers["x-request-id"])
    assert top.trace_id == CLIENT_TRACE and top.parent_span_id == CLIENT_PARENT
    (sent,) = sim_log(simulator, tag)
    assert sent["headers"]["traceparent"] == f"00-{CLIENT_TRACE}-{attempt.span_id}-01"
    assert sent["headers"].get("tracestate") == "vendor=opaque"


async def test_an_unsampled_client_trace_is_propagated_not_exported(
    client: openai.AsyncOpenAI, receiver: OTLPReceiver, simulator: Proc
) -> None:
    tag = nonce()
    trace_id = nonce().encode().hex()[:32].rjust(32, "1")
    await client.chat.completions.create(
        model="glm-4.7",
        messages=text_msg(f"hi {tag}"),
        extra_headers={"traceparent": f"00-{trace_id}-{CLIENT_PARENT}-00"},
    )
    (sent,) = upstream_traceparents(simulator, tag)
    assert sent.split("-")[1] == trace_id and sent.endswith("-00")
    # Spans leave in the order they ended: once a later request's are in, this one's would be.
    later = await client.chat.completions.with_raw_response.create(
        model="glm-4.7", messages=text_msg(f"hi {nonce()}")
    )
    await request_spans(receiver, later.headers["x-request-id"])
    assert not [s for s in receiver.spans if s.trace_id == trace_id]


@pytest.mark.parametrize(
    "traceparent", ["00-zz-bad", f"00-{'0' * 32}-{CLIENT_PARENT}-01", "ff-" + "a" * 50]
)
async def test_a_malformed_traceparent_starts_a_new_trace(
    client: openai.AsyncOpenAI, receiver: OTLPReceiver, traceparent: str
) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="glm-4.7",
        messages=text_msg(f"hi {nonce()}"),
        extra_headers={"traceparent": traceparent},
    )
    assert raw.http_response.status_code == 200
    top, _ = await request_spans(receiver, raw.headers["x-request-id"])
    assert top.parent_span_id == "" and top.trace_id not in ("0" * 32, CLIENT_TRACE)


async def test_fallback_gives_an_attempt_span_each_with_its_reason(
    client: openai.AsyncOpenAI, receiver: OTLPReceiver, simulator: Proc
) -> None:
    tag = nonce()
    echo = "Incorrect API key provided: {api_key}."  # the host repeats the key it got
    rule = {"match": {"provider": "zai"}, "status": 401, "code": "1000", "message": echo}
    raw = await client.chat.completions.with_raw_response.create(
        model="glm-4.7",
        messages=text_msg(f"hi {tag} {directive(rule, tag)}"),
        extra_headers={"X-GLM-Providers": "zai,deepinfra"},
    )
    assert raw.headers["x-glm-provider"] == "deepinfra"
    top, (failed, ok) = await request_spans(receiver, raw.headers["x-request-id"], 2)
    assert failed.attrs["gen_ai.provider.name"] == "zai"
    assert ok.attrs["gen_ai.provider.name"] == "deepinfra"
    assert failed.status_code == ERROR and ok.status_code != ERROR
    assert failed.attrs["error.type"] == "auth"
    assert failed.attrs["http.response.status_code"] == 401
    assert failed.attrs["glm.fallback_reason"] == "auth 401 code=1000"
    assert "[REDACTED]" in failed.attrs["glm.failure"]
    assert "glm.fallback_reason" not in ok.attrs
    assert top.attrs["glm.fallback_reason"] == "zai/glm-4.7 auth 401 code=1000"
    assert top.attrs["glm.attempts"] == 2 and top.attrs["gen_ai.provider.name"] == "deepinfra"
    assert failed.end_ns <= ok.start_ns
    sent = upstream_traceparents(simulator, tag)
    assert [tp.split("-")[2] for tp in sent] == [failed.span_id, ok.span_id]


async def test_content_only_when_configured_and_redacted(
    simulator: Proc, receiver: OTLPReceiver, tmp_path: Path
) -> None:
    """``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``: prompt and answer text on the
    request span, in the conventions' role + parts JSON, a key in the prompt redacted."""
    env = otel_env(receiver.url, OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true")
    tag = nonce()
    with module_gateway(None, tmp_path, providers_yaml=providers_yaml(simulator), env=env) as proc:
        async with sdk_client(proc) as c:
            raw = await c.chat.completions.with_raw_response.create(
                model="glm-4.7", messages=text_msg(f"hi {tag}, my key is {ZAI_KEY}")
            )
    top, _ = await request_spans(receiver, raw.headers["x-request-id"])
    (sent,) = orjson.loads(top.attrs["gen_ai.input.messages"])
    assert sent["role"] == "user" and tag in sent["parts"][0]["content"]
    assert ZAI_KEY not in top.attrs["gen_ai.input.messages"]
    (answered,) = orjson.loads(top.attrs["gen_ai.output.messages"])
    assert answered["role"] == "assistant" and answered["finish_reason"] == "stop"
    got, said = answered["parts"][0]["content"], raw.parse().choices[0].message.content
    assert said.startswith(got.split("[REDACTED]")[0]) and tag in got
    assert ZAI_KEY[:8] in said and ZAI_KEY[:8] not in got  # the simulator echoed a piece of it


def stop_within(proc: Proc, seconds: float) -> int:
    """SIGTERM (no grace configured) and the exit code, waiting at most ``seconds``."""
    proc.proc.send_signal(signal.SIGTERM)
    try:
        return proc.proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.proc.kill()
        proc.proc.wait(5)
        raise AssertionError(f"the gateway did not exit within {seconds}s") from None


@pytest.mark.parametrize("collector", ["refused", "silent"])
async def test_a_collector_that_is_away_costs_requests_nothing(
    simulator: Proc, tmp_path: Path, collector: str
) -> None:
    """Connection refused, or a collector that accepts and never answers (the exporter told to
    wait 60 s per export): every request is answered, and the process still exits at once."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # connections queue in the backlog; nothing ever reads them
        port = silent.getsockname()[1] if collector == "silent" else free_port()
        env = otel_env(
            f"http://127.0.0.1:{port}",
            OTEL_BSP_MAX_QUEUE_SIZE="8",
            OTEL_BSP_MAX_EXPORT_BATCH_SIZE="4",
            OTEL_EXPORTER_OTLP_TIMEOUT="60",  # seconds, as the Python SDK reads it
        )
        with module_gateway(
            None,
            tmp_path,
            providers_yaml=providers_yaml(simulator),
            env=env,
            server={"shutdown_grace_s": 0},
        ) as proc:
            async with sdk_client(proc, timeout=30) as c:
                for i in range(3):
                    await asyncio.gather(
                        *(
                            c.chat.completions.create(
                                model="glm-4.7", messages=text_msg(f"hi {i} {j}")
                            )
                            for j in range(10)
                        )
                    )
                    await asyncio.sleep(0.1)  # the exporter's thread takes its batches
            assert stop_within(proc, 10) == 0


async def test_no_secret_is_exported(
    client: openai.AsyncOpenAI, receiver: OTLPReceiver, simulator: Proc
) -> None:
    """Every byte the collector got: this module's requests, the echoed key and the prompt
    holding one included (the collector-away tests export elsewhere)."""
    raw = await client.chat.completions.with_raw_response.create(
        model="glm-4.7", messages=text_msg(f"hi {nonce()}")
    )
    await request_spans(receiver, raw.headers["x-request-id"])
    exported = b"".join(receiver.bodies)
    assert exported
    for secret in (ZAI_KEY, DEEPINFRA_KEY, MASTER_KEY, "SECRET-"):
        assert secret.encode() not in exported, secret
    assert b"Bearer" not in exported and b"authorization" not in exported.lower()
