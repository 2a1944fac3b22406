"""A chat completion → a Responses ``Response`` object (shared by answers and streams).

The object carries every field OpenAI's schema and the Open Responses schema require, the
request's settings echoed (:attr:`~gateway.frontends.responses.ResponsesRequest.echo`).
Output items go in order: ``reasoning`` (a ``summary_text`` when a summary was asked, the
sealed text when ``include`` asked ``reasoning.encrypted_content``), the ``message``, then one
``function_call`` per tool call with its name mapped back out of the namespace flattening.
"""

from __future__ import annotations

import time
from os import urandom
from typing import TYPE_CHECKING, Any, Final

import orjson

from gateway.frontends.responses_items import seal

if TYPE_CHECKING:
    from gateway.frontends.responses import ResponsesRequest


def new_id(prefix: str) -> str:
    """A fresh item id such as ``resp_…`` or ``msg_…`` (128 bits from the system's randomness,
    as ``secrets.token_hex(16)`` draws them, without its two calls in between)."""
    return f"{prefix}_{urandom(16).hex()}"


def new_ids(first: str, second: str) -> tuple[str, str]:
    """Two fresh ids, as :func:`new_id` makes them, from one draw of the system's randomness
    (a stream's response and its first message item)."""
    drawn = urandom(32).hex()
    return f"{first}_{drawn[:32]}", f"{second}_{drawn[32:]}"


def skeleton(req: ResponsesRequest, rid: str, created: int) -> dict[str, Any]:
    """A ``Response`` with no output yet (``status: in_progress``)."""
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "completed_at": None,
        "status": "in_progress",
        "incomplete_details": None,
        "error": None,
        "model": req.requested_model,
        "output": [],
        "usage": usage_of(None),  # OpenAI's schema has no null here
        **req.echo,  # previous_response_id ... prompt_cache_key
    }


INCOMPLETE: Final = {"length": "max_output_tokens", "content_filter": "content_filter"}
"""The host's finish reasons that leave a ``Response`` incomplete → its
``incomplete_details.reason``; any other finish completes it."""


def finish(response: dict[str, Any], finish_reason: Any, usage: Any) -> dict[str, Any]:
    """Set status, ``completed_at``/``incomplete_details`` and usage from the host's finish."""
    reason = INCOMPLETE.get(finish_reason) if isinstance(finish_reason, str) else None
    if reason is not None:
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": reason}
    else:
        response["status"] = "completed"
        response["completed_at"] = int(time.time())
    response["usage"] = usage_of(usage)
    return response


def token_count(node: Any, key: str) -> int:
    value = node.get(key) if type(node) is dict else None
    return value if type(value) is int and value > 0 else 0  # (not a bool: type, not isinstance)


def usage_of(usage: Any) -> dict[str, Any]:
    """Responses usage from chat usage (missing counts are 0)."""
    if usage is None:  # every stream's skeleton: the counts below, all 0, without the calls
        return {
            "input_tokens": 0,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 0,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 0,
        }
    if type(usage) is not dict:
        usage = {}
    inp, out = token_count(usage, "prompt_tokens"), token_count(usage, "completion_tokens")
    cached = token_count(usage.get("prompt_tokens_details"), "cached_tokens")
    details = usage.get("completion_tokens_details")
    return {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": token_count(details, "reasoning_tokens")},
        "total_tokens": inp + out,
    }


def reasoning_item(req: ResponsesRequest, text: str, rid: str) -> dict[str, Any]:
    """The ``reasoning`` output item for ``text``."""
    item: dict[str, Any] = {"type": "reasoning", "id": rid, "summary": []}
    if req.summary:
        item["summary"] = [{"type": "summary_text", "text": text}]
    if req.encrypted:
        item["encrypted_content"] = seal(text, req.key)
    return item


def message_item(text: str, mid: str, status: str = "completed") -> dict[str, Any]:
    """The assistant ``message`` output item holding ``text``."""
    return {
        "type": "message",
        "id": mid,
        "role": "assistant",
        "status": status,
        "content": [output_text(text)],
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(
    req: ResponsesRequest, call_id: str, flat: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    """A ``function_call`` output item, its name mapped back out of the flattening."""
    name, namespace = req.names.back(flat)
    sealed = {"call_id": call_id, "name": name, "namespace": namespace, "arguments": arguments}
    item: dict[str, Any] = {
        "type": "function_call",
        # the id carries the call itself, sealed: a client that sends it back as an
        # ``item_reference`` (the AI SDK does) gets it expanded with no state kept here
        "id": "fc_" + seal(orjson.dumps(sealed).decode(), req.key),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }
    if namespace is not None:
        item["namespace"] = namespace
    return item


def from_chat(completion: Any, req: ResponsesRequest) -> dict[str, Any]:
    """The ``Response`` for a chat completion (an OpenAI chat completion object)."""
    response = skeleton(req, new_id("resp"), _created(completion))
    choices = completion.get("choices") if isinstance(completion, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    out = response["output"]
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        out.append(reasoning_item(req, reasoning, new_id("rs")))
    text = message.get("content")
    if isinstance(text, str) and text:
        out.append(message_item(text, new_id("msg")))
    for call in message.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            args = fn.get("arguments")
            cid = call.get("id") if isinstance(call.get("id"), str) else new_id("call")
            out.append(
                call_item(
                    req, cid, str(fn.get("name") or ""), args if isinstance(args, str) else "{}"
                )
            )
    finish_reason = choice.get("finish_reason") if isinstance(choice, dict) else None
    usage = completion.get("usage") if isinstance(completion, dict) else None
    return finish(response, finish_reason, usage)


def _created(completion: Any) -> int:
    created = completion.get("created") if isinstance(completion, dict) else None
    return created if isinstance(created, int) and created > 0 else int(time.time())
