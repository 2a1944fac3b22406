"""``normalise_response`` looks for the message fields it may change with three lookups instead
of ``_MESSAGE_FIELDS.isdisjoint``: the same answer for every mix of them."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest

from gateway.catalogue.loader import default_config_dir, load_config
from gateway.providers.dialects import response as rs

CONFIG = load_config(default_config_dir(), demo_simulator_url="http://127.0.0.1:9")
TARGET = sorted(CONFIG.catalogue.targets, key=lambda t: t.id)[0]
FIELDS: dict[str, Any] = {
    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {"a": 1}}}],
    "reasoning": "thought",
    "reasoning_details": [{"type": "x"}],
    "content": "hi",
    "name": "n",
}


def reference(obj: dict[str, Any]) -> None:
    """``normalise_response`` with the set test it had."""
    obj["model"] = TARGET.variant.id
    obj.setdefault("object", "chat.completion")
    if obj.get("created") is None:
        obj["created"] = 0
    for choice in obj["choices"]:
        choice.setdefault("logprobs", None)
        msg = choice["message"]
        msg.setdefault("refusal", None)
        if not rs._MESSAGE_FIELDS.isdisjoint(msg):
            rs.normalise_message(msg, stream=False)


@pytest.mark.parametrize("n", range(len(FIELDS) + 1))
def test_every_mix_of_message_fields_normalises_as_the_set_test_did(n: int) -> None:
    assert {"tool_calls", "reasoning", "reasoning_details"} == rs._MESSAGE_FIELDS
    for keys in itertools.combinations(FIELDS, n):
        msg = {"role": "assistant", **{k: copy.deepcopy(FIELDS[k]) for k in keys}}
        obj = {"id": "x", "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}]}
        want = copy.deepcopy(obj)
        reference(want)
        rs.normalise_response(obj, TARGET)
        assert obj == want, keys
