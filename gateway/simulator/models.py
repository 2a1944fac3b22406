"""The simulator's model table: which (provider, model id) pairs it serves, and how.

A :class:`SimModel` is what the simulator knows about one deployment: the URL prefix it answers
under, the provider's model id, the host dialect and the capabilities that decide whether a
request is refused. :class:`ModelTable` is the frozen lookup the request handlers use.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.catalogue.target import Target

DEFAULT_CONTEXT = 8192
"""Window assumed for a model whose context is unknown."""
TAGGED_VARIANTS = frozenset({"glm-4.5v"})
UNTAGGING_DIALECTS = frozenset({"vllm", "openrouter"})
"""Hosts that parse GLM-4.5V's tags themselves (vLLM's glm45 reasoning parser; OpenRouter)."""


@dataclass(frozen=True, slots=True)
class SimModel:
    """One model served by the simulator under ``/{provider}/...``."""

    provider: str
    """URL path prefix, e.g. ``"zai"``."""
    model: str
    """The provider's model id, e.g. ``"glm-4.7"`` or ``"zai-org/GLM-4.7"``."""
    variant: str
    """Gateway variant id, e.g. ``"glm-4.7"``."""
    dialect: str
    """``"openai"`` | ``"zhipu"`` | ``"openrouter"`` | ``"siliconflow"`` | ``"vllm"``."""
    context: int | None
    """Window in tokens (``None`` -> :data:`DEFAULT_CONTEXT`)."""
    max_output: int | None
    accepts_images: bool
    function_calling: bool
    """Accepts ``tools`` of type ``function``."""
    json_schema: bool
    """Honours ``response_format: {type: json_schema}`` natively."""
    thinking: bool
    """Emits reasoning unless the request turns it off (GLM-4.5 and later)."""
    tagged_content: bool = False
    """Writes ``<think>`` and ``<|begin_of_box|>`` tags into ``content`` (GLM-4.5V), instead of
    a reasoning field."""

    @property
    def window(self) -> int:
        """The context window in tokens, with the default applied."""
        return self.context if self.context is not None else DEFAULT_CONTEXT


def sim_models_from_targets(targets: Iterable[Target]) -> list[SimModel]:
    """One :class:`SimModel` per catalogue target, first wins for a repeated (provider, model)."""
    seen: set[tuple[str, str]] = set()
    out: list[SimModel] = []
    for t in targets:
        if (t.provider, t.model) in seen:
            continue
        seen.add((t.provider, t.model))
        out.append(
            SimModel(
                provider=t.provider,
                model=t.model,
                variant=t.variant.id,
                dialect=t.dialect,
                context=t.context,
                max_output=t.max_output,
                accepts_images=t.accepts_images,
                function_calling="function_calling" in t.capabilities,
                json_schema="structured_outputs" in t.capabilities and t.dialect != "zhipu",
                thinking=t.variant.thinking,
                tagged_content=t.variant.id in TAGGED_VARIANTS
                and t.dialect not in UNTAGGING_DIALECTS,
            )
        )
    return out


class ModelTable:
    """Read-only lookup of models by (provider, model id), and of each provider's dialect.

    A provider's dialect is that of its first model; the catalogue gives one dialect per provider.
    """

    __slots__ = ("_by_key", "_dialects", "_ids")

    def __init__(self, models: Iterable[SimModel]) -> None:
        self._by_key: dict[tuple[str, str], SimModel] = {}
        self._dialects: dict[str, str] = {}
        self._ids: dict[str, list[str]] = {}
        for m in models:
            if (m.provider, m.model) in self._by_key:
                continue
            self._by_key[(m.provider, m.model)] = m
            self._dialects.setdefault(m.provider, m.dialect)
            self._ids.setdefault(m.provider, []).append(m.model)

    def get(self, provider: str, model: object) -> SimModel | None:
        """The model ``provider`` serves as ``model``, or ``None``."""
        if not isinstance(model, str):
            return None
        return self._by_key.get((provider, model))

    def dialect(self, provider: str) -> str | None:
        """The provider's dialect, or ``None`` for a provider the table does not know."""
        return self._dialects.get(provider)

    def model_ids(self, provider: str) -> list[str]:
        """The provider's model ids in table order."""
        return list(self._ids.get(provider, ()))

    def __len__(self) -> int:
        return len(self._by_key)
