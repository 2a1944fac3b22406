"""The fields a client's body may carry to any upstream: an allowlist, never a denylist.

Everything else a client sends at the top level is dropped before any adapter sees the body,
so no client field can choose an upstream URL, key, header or LiteLLM option (``api_base``,
``base_url``, ``api_key``, ``extra_headers``, ``custom_llm_provider``, ``aws_*``, ``mock_response``
...), nor steer a host's own routing with the operator's key (OpenRouter's ``models`` /
``provider``). The drop is reported (``unknown_fields=dropped``) like every other adaptation.
"""

from __future__ import annotations

import re
from typing import Any, Final

OPENAI_FIELDS: Final = frozenset(
    {
        # OpenAI's CreateChatCompletionRequest (openai-openapi.yaml), every property.
        "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
        "max_completion_tokens", "max_tokens", "messages", "metadata", "modalities", "model",
        "moderation", "n", "parallel_tool_calls", "prediction", "presence_penalty",
        "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention", "reasoning_effort",
        "response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
        "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user",
        "verbosity", "web_search_options",
    }
)  # fmt: skip

HOST_FIELDS: Final = frozenset(
    {
        # The reasoning switch in each GLM host's form (translated by dialects.thinking).
        "thinking", "reasoning", "enable_thinking", "thinking_budget", "chat_template_kwargs",
        # GLM sampling and streaming extras the hosts document (research/glm-providers.md).
        "do_sample", "tool_stream", "top_k", "min_p", "repetition_penalty",
    }
)  # fmt: skip

FORWARDED: Final = OPENAI_FIELDS | HOST_FIELDS
CONSUMED: Final = frozenset({"route"})
"""The gateway's own fields: read by it, never forwarded, not reported as dropped."""

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,40}")
_NAMED_AT_MOST = 5


def forwardable(body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A shallow copy of ``body`` holding only :data:`FORWARDED` fields, and the change to
    report when something was dropped (names shown only when they are plain identifiers, so a
    client cannot put arbitrary bytes into a response header)."""
    if FORWARDED.issuperset(body):  # the usual body: nothing to drop (a set test in C)
        return dict(body), None
    out = {k: v for k, v in body.items() if k in FORWARDED}
    dropped = sorted(k for k in body if k not in FORWARDED and k not in CONSUMED)
    if not dropped:
        return out, None
    shown = [k for k in dropped if _NAME.fullmatch(k)][:_NAMED_AT_MOST]
    more = len(dropped) - len(shown)
    names = "+".join(shown) + (f"+{more}_more" if more else "") if shown else f"{more}_fields"
    return out, f"unknown_fields={names}:dropped"
