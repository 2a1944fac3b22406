"""Each host dialect's surface, declared as data: what it accepts and how it answers.

A provider names its dialect in ``providers.yaml`` (``dialect: zhipu``); everything the
gateway does differently for that host follows from one :class:`DialectSpec` row below. No
code path compares provider names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from gateway.catalogue.target import Target


class ThinkingForm(StrEnum):
    """How a host takes the reasoning switch."""

    THINKING = "thinking"
    """Z.ai / BigModel: ``thinking: {type: enabled|disabled}``."""
    REASONING = "reasoning"
    """OpenRouter: ``reasoning: {enabled, effort?}``."""
    ENABLE_THINKING = "enable_thinking"
    """SiliconFlow: ``enable_thinking: bool``."""
    CHAT_TEMPLATE_KWARGS = "chat_template_kwargs"
    """vLLM / SGLang: ``chat_template_kwargs: {enable_thinking: bool}``."""
    REASONING_EFFORT = "reasoning_effort"
    """OpenAI's own field (``none`` turns reasoning off)."""


@dataclass(frozen=True, slots=True)
class DialectSpec:
    """One host dialect. Defaults describe a host that speaks OpenAI exactly."""

    name: str
    raw_chunks: bool = True
    """Stream chunks need no change but ``model``: relayed as bytes, parsed only when special."""
    temperature_range: tuple[float, float] | None = None
    top_p_range: tuple[float, float] | None = None
    stop_max: int | None = None
    """Most ``stop`` entries the host takes."""
    tool_choice_forcing: bool = True
    """Honours ``tool_choice: "required"`` / a named function. The planner ranks hosts that can
    force a tool first when a request forces one; others get ``auto`` (reported)."""
    native_json_schema: bool = True
    """Takes ``response_format: json_schema``; otherwise json_object plus the schema in a prompt."""
    max_tokens_only: bool = False
    """Knows ``max_tokens`` but not ``max_completion_tokens``."""
    cap_max_tokens: bool = False
    """Refuses a ``max_tokens`` above the deployment's max output: cap it."""
    drop_fields: tuple[str, ...] = ()
    """Top-level fields the host rejects."""
    drop_image_detail: bool = False
    drop_function_strict: bool = False
    user_field: str | None = None
    """Where OpenAI ``user`` goes (only when 6-128 characters); None keeps ``user``."""
    request_id: bool = False
    """Send a fresh ``request_id`` with every attempt (a reused one is error 1231)."""
    thinking_form: ThinkingForm = ThinkingForm.REASONING_EFFORT
    usage_always: bool = False
    """Streams always end with usage on the finish chunk; ``stream_options`` is not sent."""

    rewrites_fields: bool = field(init=False, default=False)
    """Computed: does any field rule differ from OpenAI's? False lets the hot path skip them."""

    def __post_init__(self) -> None:
        rules = {f: DialectSpec.__dataclass_fields__[f].default for f in _FIELD_RULES}
        differs = any(getattr(self, f) != default for f, default in rules.items())
        object.__setattr__(self, "rewrites_fields", differs)


_FIELD_RULES: Final = (
    "temperature_range", "top_p_range", "stop_max", "tool_choice_forcing", "native_json_schema",
    "max_tokens_only", "cap_max_tokens", "drop_fields", "drop_image_detail",
    "drop_function_strict", "user_field",
)  # fmt: skip


# Fields the client may set to OpenAI's default without meaning anything: dropping them is not
# reported (LangChain sends ``n: 1`` on every call).
NO_OP_VALUES: Final = {
    "n": 1,
    "logprobs": False,
    "frequency_penalty": 0,
    "presence_penalty": 0,
}

DIALECTS: Final[dict[str, DialectSpec]] = {
    "openai": DialectSpec("openai"),
    "vllm": DialectSpec("vllm", thinking_form=ThinkingForm.CHAT_TEMPLATE_KWARGS),
    "siliconflow": DialectSpec("siliconflow", thinking_form=ThinkingForm.ENABLE_THINKING),
    "openrouter": DialectSpec("openrouter", raw_chunks=False, thinking_form=ThinkingForm.REASONING),
    "zhipu": DialectSpec(
        "zhipu",
        raw_chunks=False,
        temperature_range=(0.0, 1.0),
        top_p_range=(0.01, 1.0),
        stop_max=1,
        tool_choice_forcing=False,
        native_json_schema=False,
        max_tokens_only=True,
        cap_max_tokens=True,
        drop_fields=(
            "n",
            "logprobs",
            "top_logprobs",
            "seed",
            "frequency_penalty",
            "presence_penalty",
            "logit_bias",
            "parallel_tool_calls",
        ),
        drop_image_detail=True,
        drop_function_strict=True,
        user_field="user_id",
        request_id=True,
        thinking_form=ThinkingForm.THINKING,
        usage_always=True,
    ),
}

TAGGED_CONTENT_VARIANTS: Final = frozenset({"glm-4.5v"})
"""Variants whose chat template writes ``<think>`` and ``<|begin_of_box|>`` tags into content."""


def spec_for(target: Target) -> DialectSpec:
    return DIALECTS[target.dialect]


def can_force_tool_choice(target: Target) -> bool:
    """For the planner: can this deployment honour a forced ``tool_choice``?"""
    return DIALECTS[target.dialect].tool_choice_forcing


def tags_in_content(target: Target) -> bool:
    """Does this deployment's content need ``<think>`` / box tags unwrapped?"""
    return target.variant.id in TAGGED_CONTENT_VARIANTS
