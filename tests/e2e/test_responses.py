"""OpenAI Responses (``/v1/responses``, stateless) through a real gateway with the real
``openai`` SDK: every answer parsed by the SDK's own types and checked against the schemas."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.support.e2e import AUTH, MASTER_KEY, directive, nonce, sim_requests, wait_log_for
from tests.support.openapi import validate
from tests.support.procs import Proc

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


@pytest.fixture(scope="module")
def client(gateway: Proc) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0) as c:
        yield c


def test_create_answers_a_valid_response(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(model="glm-4.7", input="hi", store=True)
    validate("Response", raw.http_response.json())
    resp = raw.parse()
    assert resp.status == "completed" and resp.output_text.startswith("Hello from glm-4.7")
    assert raw.headers["x-glm-variant"] == "glm-4.7" and raw.headers["x-glm-attempts"] == "1"
    assert raw.headers["x-glm-stored"].startswith("false") and resp.store is False


def test_stream_ends_completed_with_reasoning(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model="glm-4.7",
        input="hi",
        reasoning={"effort": "high", "summary": "auto"},
        include=["reasoning.encrypted_content"],
    ) as stream:
        kinds = [ev.type for ev in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [o.type for o in final.output] == ["reasoning", "message"]


def test_a_tool_round_trip_replays_reasoning_unmodified(
    client: openai.OpenAI, simulator: Proc
) -> None:
    tag = nonce()
    first = client.responses.create(
        model="glm-4.7",
        input=f"weather in Paris? {tag}",
        tools=TOOLS,  # type: ignore[arg-type]
        reasoning={"effort": "high"},
        include=["reasoning.encrypted_content"],
    )
    call = next(o for o in first.output if o.type == "function_call")
    reasoning = next(o for o in first.output if o.type == "reasoning")
    again = client.responses.create(
        model="glm-4.7",
        tools=TOOLS,  # type: ignore[arg-type]
        input=[
            {"role": "user", "content": f"weather in Paris? {tag}"},
            *[o.model_dump(exclude_none=True) for o in first.output],  # type: ignore[misc]
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert again.status == "completed" and again.output_text
    sent = [q["body"] for q in sim_requests(simulator, tag)][-1]
    assistant = next(m for m in sent["messages"] if m["role"] == "assistant")
    assert assistant["tool_calls"][0]["id"] == call.call_id
    assert reasoning.encrypted_content and assistant.get("reasoning_content")


def test_parse_with_a_model(client: openai.OpenAI) -> None:
    class City(BaseModel):
        city: str

    parsed = client.responses.parse(model="auto", input="a city", text_format=City)
    assert isinstance(parsed.output_parsed, City)


def test_the_gateway_keeps_no_state(client: openai.OpenAI, gateway: Proc) -> None:
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="glm-4.7", input="hi", previous_response_id="resp_1")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_1")


def test_failure_after_the_first_byte_is_response_failed(client: openai.OpenAI) -> None:
    tag = nonce()
    rule = {"match": {"provider": "vllm"}, "cut_after_chunks": 1}
    body = f"one two three four five six seven {tag} " + directive(rule, tag)
    with (
        pytest.raises(openai.APIError),
        client.responses.stream(
            model="glm-4-9b", input=body, extra_headers={"X-GLM-Providers": "vllm"}
        ) as stream,
    ):
        for _ in stream:
            pass


def test_route_explains_a_responses_body(gateway: Proc) -> None:
    r = httpx.post(
        gateway.url + "/v1/route?api=responses",
        json={"model": "auto", "input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "https://example.com/cat.png"}]}]},
        headers=AUTH,
        timeout=30,
    )  # fmt: skip
    assert r.status_code == 200 and "vision" in r.json()["needs"]["capabilities"]


def test_compact_seals_a_summary_that_comes_back_as_input(
    client: openai.OpenAI, gateway: Proc, simulator: Proc
) -> None:
    tag = nonce()
    r = httpx.post(
        gateway.url + "/v1/responses/compact",
        json={"model": "glm-4.7", "input": [{"role": "user", "content": f"build a site {tag}"}]},
        headers=AUTH,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    validate("CompactResource", body)
    (item,) = body["output"]
    assert item["type"] == "compaction" and item["encrypted_content"]
    again = client.responses.create(
        model="glm-4.7",
        input=[item, {"role": "user", "content": f"continue {tag}"}],  # type: ignore[list-item]
    )
    assert again.status == "completed"
    sent = sim_requests(simulator, f"continue {tag}")[-1]["body"]
    assert "<conversation-checkpoint>" in sent["messages"][0]["content"]
    forged = {**item, "encrypted_content": item["encrypted_content"][:-4] + "AAAA"}
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="glm-4.7", input=[forged])  # type: ignore[list-item]
    no_model = httpx.post(
        gateway.url + "/v1/responses/compact", json={"input": "x"}, headers=AUTH, timeout=30
    )
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"


def test_fallback_before_the_first_byte_is_invisible(client: openai.OpenAI) -> None:
    tag = nonce()
    rule = {"match": {"provider": "zai"}, "status": 500, "times": 2}  # and its retry
    with client.responses.with_streaming_response.create(
        model="glm-4.7",
        input=f"hi {tag} " + directive(rule, tag),
        stream=True,
        extra_headers={"X-GLM-Providers": "zai,deepinfra"},
    ) as raw:
        assert raw.headers["x-glm-attempts"] == "3"
        assert raw.headers["x-glm-provider"] == "deepinfra"
        assert "zai" in raw.headers["x-glm-fallback-reason"]
        kinds = [line for line in raw.iter_lines() if line.startswith("event: ")]
    assert kinds[0] == "event: response.created" and kinds[-1] == "event: response.completed"


def test_max_output_tokens_is_incomplete(client: openai.OpenAI) -> None:
    resp = client.responses.create(
        model="glm-4.7", input="tell me a long story " * 20, max_output_tokens=16
    )
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"


def test_the_access_log_and_metrics_name_the_api(client: openai.OpenAI, gateway: Proc) -> None:
    rid = "req-" + nonce()
    client.responses.create(model="glm-4.7", input="hi", extra_headers={"X-Request-Id": rid})
    assert wait_log_for(gateway, rid)["api"] == "responses"
    text = httpx.get(gateway.url + "/metrics", timeout=30).text
    assert 'api="responses"' in text


def test_a_pdf_is_read_as_its_text(client: openai.OpenAI, simulator: Proc) -> None:
    import base64

    from tests.support.pdf import pdf_with_text

    tag = nonce()
    data = base64.b64encode(pdf_with_text(f"Invoice {tag}")).decode()
    resp = client.responses.create(
        model="auto",
        input=[{"role": "user", "content": [
            {"type": "input_file", "filename": "invoice.pdf",
             "file_data": "data:application/pdf;base64," + data},
            {"type": "input_text", "text": "What is the invoice number?"},
        ]}],  # type: ignore[list-item]
    )  # fmt: skip
    assert resp.status == "completed"
    assert f"Invoice {tag}" in str(sim_requests(simulator, f"Invoice {tag}")[-1]["body"])
