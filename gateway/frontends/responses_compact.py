"""``POST /v1/responses/compact`` (Codex calls it when a session grows long), stateless.

The routed model writes the summary of the whole ``input``; the answer is one ``compaction``
item whose ``encrypted_content`` the gateway sealed itself (:func:`.responses_items.seal`). When
that item comes back as input, :mod:`.responses_items` unseals it into the conversation: no
state is kept anywhere. A body without ``model`` is a 400, as OpenAI's is.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

import orjson

from gateway.errors import InvalidRequest
from gateway.frontends.base import Inbound
from gateway.frontends.responses_answer import new_id, usage_of
from gateway.frontends.responses_frontend import ResponsesFrontEnd
from gateway.frontends.responses_items import seal

PROMPT: Final = (
    "Write a checkpoint of the conversation above so that it can continue from it alone: the "
    "user's goal and constraints, what has been done and decided, the current state of the work "
    "(files, commands, results), and what remains to do. Be complete and concise; plain text."
)


class CompactFrontEnd(ResponsesFrontEnd):
    """The Responses front-end, asked for a summary and answering a ``response.compaction``."""

    name = "responses_compact"

    def parse(self, body: dict[str, Any], headers: Mapping[str, str]) -> Inbound:
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise InvalidRequest(
                "'model' is required: the model that writes the compaction.",
                param="model",
                code="missing_field",
            )
        body = {k: v for k, v in body.items() if k not in ("stream", "tools", "tool_choice")}
        inbound = super().parse(body, headers)
        inbound.chat["messages"].append({"role": "user", "content": PROMPT})
        return inbound

    def render(
        self, answer: bytes | dict[str, Any], inbound: Inbound, native: bool = False
    ) -> bytes:
        completion = answer if isinstance(answer, dict) else orjson.loads(answer)
        choices = completion.get("choices") or [{}]
        message = choices[0].get("message") or {}
        content = message.get("content")
        summary: str = content if isinstance(content, str) else ""
        item = {
            "type": "compaction",
            "id": new_id("cmp"),
            "encrypted_content": seal(summary, self._key),
            "created_by": "glm-gateway",
        }
        return orjson.dumps(
            {
                "id": new_id("resp"),
                "object": "response.compaction",
                "created_at": int(time.time()),
                "output": [item],
                "usage": usage_of(completion.get("usage")),
            }
        )
