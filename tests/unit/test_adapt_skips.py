"""Request adaptation skips the rules whose fields a body lacks: same body, same changes.

``adapt_request`` runs a dialect's field rules only for the fields present (and the image
rule only when a message has content parts). The reference here runs every rule, in order,
whatever the body holds (what it did before); random bodies over every shipped deployment
must come out identical, field order and change list included.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from gateway.catalogue.loader import default_config_dir, load_config
from gateway.catalogue.needs import resolve_needs
from gateway.catalogue.target import Target
from gateway.errors import GatewayError
from gateway.providers.dialects import request as rq
from gateway.providers.dialects.spec import spec_for
from gateway.providers.dialects.thinking import apply_switch

CONFIG = load_config(default_config_dir(), demo_simulator_url="http://127.0.0.1:9")
TARGETS = sorted(CONFIG.catalogue.targets, key=lambda t: t.id)


def every_rule(body: dict[str, Any], target: Target) -> tuple[dict[str, Any], list[str]]:
    """``adapt_request`` running every field rule (no ``request_id``: it is fresh each time)."""
    spec = spec_for(target)
    out, dropped = rq.forwardable(body)
    out["model"] = target.model
    changes: list[str] = [dropped] if dropped else []
    if spec.rewrites_fields:
        rq._sampling(out, spec, changes)
        rq._max_tokens(out, spec, target, changes)
        rq._tools(out, spec, changes)
        rq._response_format(out, spec, changes)
        if spec.drop_image_detail:
            messages = out.get("messages")
            if isinstance(messages, list):
                new = [rq._message_without_detail(m) for m in messages]
                if any(n is not m for n, m in zip(new, messages, strict=True)):
                    out["messages"] = new
                    changes.append("image_url.detail=dropped")
        rq._drop_fields(out, spec, changes)
        rq._user(out, spec, changes)
    apply_switch(out, spec.thinking_form, target.variant.thinking, changes)
    rq._stream_options(out, spec)
    return out, changes


TEXT = {"role": "user", "content": "hi"}
IMAGE = {
    "role": "user",
    "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
    ],
}
OPTIONAL: list[tuple[str, list[Any]]] = [
    ("temperature", [0.2, 1.7, 0, "x"]),
    ("top_p", [0.0, 0.5, 1.0]),
    ("stop", ["END", ["a", "b"], ["a"]]),
    ("max_tokens", [16, 10**7, "x"]),
    ("max_completion_tokens", [32, 10**7]),
    ("tool_choice", ["auto", "none", "required", {"type": "function", "function": {"name": "f"}}]),
    (
        "tools",
        [
            [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            [{"type": "function", "function": {"name": "f", "strict": True}}],
        ],
    ),
    (
        "response_format",
        [
            {"type": "json_object"},
            {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}},
        ],
    ),
    ("n", [1, 2]),
    ("logprobs", [False, True]),
    ("seed", [7]),
    ("frequency_penalty", [0, 0.5]),
    ("parallel_tool_calls", [False]),
    ("user", ["ab", "user-123456"]),
    ("stream", [True, False]),
    ("stream_options", [{"include_usage": False}, {"include_usage": True}]),
    ("thinking", [{"type": "enabled"}]),
    ("reasoning_effort", ["none", "high"]),
    ("api_base", ["http://x"]),
    ("route", [{"prefer": "cost"}]),
]


def random_body(rng: random.Random) -> dict[str, Any]:
    messages = [copy.deepcopy(rng.choice([TEXT, IMAGE])) for _ in range(rng.randrange(1, 4))]
    body: dict[str, Any] = {"model": "auto", "messages": messages}
    for name, values in rng.sample(OPTIONAL, rng.randrange(0, 6)):
        body[name] = copy.deepcopy(rng.choice(values))
    return body


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.id)
def test_skipping_absent_fields_adapts_as_every_rule_does(target: Target) -> None:
    rng = random.Random(target.id)
    for _ in range(60):
        body = random_body(rng)
        before = copy.deepcopy(body)
        got, changes = rq.adapt_request(body, target)
        got.pop("request_id", None)
        want, want_changes = every_rule(copy.deepcopy(body), target)
        assert body == before  # the client's body is never mutated
        assert list(got.items()) == list(want.items()), body
        assert changes == want_changes, body
        # the needs' walk tells the router whether any message has content parts: told so,
        # adapting skips the image scan and must come out the same
        try:
            parts = resolve_needs(body, {}, CONFIG).content_parts
        except GatewayError:
            continue
        told, told_changes = rq.adapt_request(body, target, parts)
        told.pop("request_id", None)
        assert list(told.items()) == list(want.items()), body
        assert told_changes == want_changes, body
