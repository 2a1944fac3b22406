"""Tool calls assembled from a stream's chunks, for the translating front-ends.

OpenAI chunks carry each call's pieces by ``index`` (id and name first, argument fragments
after, several calls possibly interleaved). Anthropic blocks and Responses items cannot
interleave, so the translators collect every call here and emit each whole at the end, in
order of first appearance, with its own id, name and fragments: the streaming bugs other
gateways had (calls merged, ids mixed, arguments lost) cannot happen by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Call:
    id: str | None = None
    name: str = ""
    fragments: list[str] = field(default_factory=list)


class ToolCalls:
    """The calls of one stream, in order of first appearance."""

    __slots__ = ("_by_index", "calls")

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._by_index: dict[int, Call] = {}

    def feed(self, calls: Any) -> None:
        """A chunk's ``delta.tool_calls`` (ignored unless a list)."""
        if isinstance(calls, list):
            for position, call in enumerate(calls):
                if isinstance(call, dict):
                    self._one(call, position)

    def _one(self, call: dict[str, Any], position: int) -> None:
        index = call.get("index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else position
        cid = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
        current = self._by_index.get(index)
        if current is None or (cid is not None and current.id is not None and cid != current.id):
            current = Call()  # a new call, or a host reusing an index with a new id
            self._by_index[index] = current
            self.calls.append(current)
        if cid is not None and current.id is None:
            current.id = cid
        fn = call.get("function")
        if isinstance(fn, dict):
            if isinstance(fn.get("name"), str) and fn["name"] and not current.name:
                current.name = fn["name"]
            if isinstance(fn.get("arguments"), str) and fn["arguments"]:
                current.fragments.append(fn["arguments"])
