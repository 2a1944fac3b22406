"""Host dialects: how a provider's surface differs from OpenAI's, declared as data.

- :mod:`.spec` — one :class:`DialectSpec` per dialect (the table a provider's ``dialect:`` picks);
- :mod:`.request` — :func:`adapt_request`: the body made fit for a deployment, every change named
  (reported in ``X-GLM-Adapted`` and the access log);
- :mod:`.thinking` — the one reasoning switch, in each host's form;
- :mod:`.response` — :func:`normalise_response` / :func:`normalise_chunk`: answers OpenAI-shaped;
- :mod:`.stream` — :class:`StreamNormaliser`: per-stream state (tags cut across chunks, usage);
- :mod:`.tags` — GLM-4.5V ``<think>`` / box tags.
"""

from __future__ import annotations

import orjson

from gateway.catalogue.target import Target
from gateway.providers.dialects.request import adapt_request, client_wants_usage
from gateway.providers.dialects.response import normalise_chunk, normalise_response
from gateway.providers.dialects.spec import (
    DIALECTS,
    DialectSpec,
    ThinkingForm,
    can_force_tool_choice,
    spec_for,
    tags_in_content,
)
from gateway.providers.dialects.stream import StreamNormaliser

__all__ = [
    "DIALECTS",
    "DialectSpec",
    "StreamNormaliser",
    "ThinkingForm",
    "adapt_request",
    "can_force_tool_choice",
    "client_wants_usage",
    "model_rewriter",
    "normalise_chunk",
    "normalise_response",
    "spec_for",
    "tags_in_content",
]


def model_rewriter(target: Target) -> tuple[tuple[bytes, bytes], ...]:
    """Byte replacements that put the variant id in place of the host's model id."""
    if target.model == target.variant.id:
        return ()
    up = orjson.dumps(target.model)
    ours = orjson.dumps(target.variant.id)
    return ((b'"model":' + up, b'"model":' + ours), (b'"model": ' + up, b'"model": ' + ours))
