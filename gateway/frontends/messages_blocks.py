"""Anthropic ``messages`` (turns of content blocks) as OpenAI chat messages.

- ``text`` → text; several blocks of one turn are joined by a blank line;
- ``image`` (base64 or url source) → an ``image_url`` part (base64 as a ``data:`` URL);
- ``document`` with a ``text`` or ``content`` source → its text inlined; an inline PDF
  (``base64``) → its text (:mod:`.documents`); a PDF by url or file id → 400
  ``no_capable_variant``: no GLM-4 variant here reads documents;
- ``tool_use`` (assistant) → ``tool_calls`` with ``arguments`` = JSON of ``input`` (an object);
- ``tool_result`` (user) → a ``role: tool`` message before the turn's other content (OpenAI wants
  tool answers right after the call), its blocks flattened to text, ``is_error`` as an
  ``Error: `` prefix; images in it go into the user message that follows;
- ``thinking`` (assistant) whose signature this gateway made → ``reasoning_content``, verbatim and
  in order (several blocks concatenated as the host produced them); any other thinking block
  and every ``redacted_thinking`` are dropped and counted in the report, never a 400, so a
  session moved from Claude keeps working;
- ``mid_conv_system`` blocks and ``role: system`` turns → a system message in place;
- ``compaction`` with a summary → that text; server-tool blocks (``server_tool_use``,
  ``web_search_tool_result`` ...) → dropped and counted: the host cannot see those tools' state;
- ``cache_control`` anywhere → accepted and dropped.

Adjacent messages of the same role are merged (Anthropic allows consecutive turns of one role,
and a turn split across messages is one assistant message to GLM).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from gateway.errors import NoCapableVariant
from gateway.frontends.documents import pdf_text
from gateway.frontends.messages_fields import Ignored, array, bad, obj, string, text_of
from gateway.frontends.messages_ids import call_id
from gateway.frontends.messages_signature import verify_thinking

Part = dict[str, Any]

SERVER_BLOCKS = frozenset(
    {
        "server_tool_use", "web_search_tool_result", "web_fetch_tool_result",
        "code_execution_tool_result", "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result", "tool_search_tool_result", "container_upload",
        "mcp_tool_use", "mcp_tool_result", "advisor_tool_result",
    }
)  # fmt: skip
ROLES = ("user", "assistant", "system")


class Turns:
    """Translates one request's ``messages``; dropped blocks go to ``ignored``."""

    def __init__(self, key: bytes, ignored: Ignored) -> None:
        self.key = key
        self.ignored = ignored

    def chat_messages(self, messages: Any) -> list[dict[str, Any]]:
        """The chat messages for ``messages``; raises InvalidRequest naming the bad field."""
        if not array(messages, "messages"):
            raise bad("messages", "must hold at least one message.")
        out: list[dict[str, Any]] = []
        for i, message in enumerate(messages):
            path = f"messages[{i}]"
            m = obj(message, path)
            role = m.get("role")
            if role not in ROLES:
                raise bad(f"{path}.role", "must be 'user', 'assistant' or 'system'.")
            content = m.get("content")
            if not isinstance(content, str | list):
                raise bad(f"{path}.content", "must be a string or an array of blocks.")
            if role == "system":
                out.append({"role": "system", "content": text_of(content, f"{path}.content")})
            elif role == "user":
                out += self._user(content, f"{path}.content")
            else:
                out += self._assistant(content, f"{path}.content")
        if not out:
            raise bad("messages", "hold no content the model can read (every turn is empty).")
        return merge_adjacent(out)

    def _user(self, content: str | list[Any], path: str) -> list[dict[str, Any]]:
        if isinstance(content, str):
            return [{"role": "user", "content": content}]
        systems: list[dict[str, Any]] = []
        tools: list[dict[str, Any]] = []
        parts: list[Part] = []
        later: list[Part] = []
        for j, block in enumerate(content):
            where = f"{path}[{j}]"
            b = obj(block, where)
            kind = string(b.get("type"), f"{where}.type")
            if kind == "tool_result":
                tool, images = self._tool_result(b, where)
                tools.append(tool)
                later += images
            elif kind in ("tool_use", "thinking", "redacted_thinking"):
                raise bad(f"{where}.type", f"a {kind!r} block belongs in an assistant turn.")
            elif not self._common(kind, b, where, parts, systems):
                raise bad(f"{where}.type", f"unknown content block type {kind!r}.")
        parts += later
        user = [{"role": "user", "content": user_content(parts)}] if parts else []
        return systems + tools + user

    def _assistant(self, content: str | list[Any], path: str) -> list[dict[str, Any]]:
        if isinstance(content, str):
            return [{"role": "assistant", "content": content}]
        systems: list[dict[str, Any]] = []
        parts: list[Part] = []
        reasoning: list[str] = []
        calls: list[dict[str, Any]] = []
        for j, block in enumerate(content):
            where = f"{path}[{j}]"
            b = obj(block, where)
            kind = string(b.get("type"), f"{where}.type")
            if kind == "thinking":
                self._thinking(b, where, reasoning)
            elif kind == "redacted_thinking":
                self.ignored.block("redacted_thinking=dropped")
            elif kind == "tool_use":
                calls.append(tool_call(b, where))
            elif kind in ("image", "document", "tool_result"):
                raise bad(f"{where}.type", f"a {kind!r} block belongs in a user turn.")
            elif not self._common(kind, b, where, parts, systems):
                raise bad(f"{where}.type", f"unknown content block type {kind!r}.")
        text = "\n\n".join(p["text"] for p in parts)
        msg: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
        if calls:
            msg["tool_calls"] = calls
        if reasoning:
            msg["reasoning_content"] = "".join(reasoning)
        return [*systems, msg]

    def _common(
        self, kind: str, b: dict[str, Any], where: str, parts: list[Part], systems: list[Any]
    ) -> bool:
        """Blocks either role may carry; False when ``kind`` is unknown."""
        if kind == "text":
            parts.append(text_part(string(b.get("text"), f"{where}.text")))
        elif kind == "image":
            parts.append(image_part(b, where))
        elif kind == "document":
            parts += document_parts(b, where)
        elif kind == "search_result":
            parts.append(text_part(search_result_text(b, where)))
        elif kind == "mid_conv_system":
            text = text_of(b.get("content"), f"{where}.content")
            systems.append({"role": "system", "content": text})
        elif kind == "compaction" and isinstance(b.get("content"), str) and b["content"]:
            parts.append(text_part(b["content"]))
        elif kind in SERVER_BLOCKS or kind == "compaction":
            self.ignored.block(f"{kind}=dropped")
        else:
            return False
        return True

    def _thinking(self, b: dict[str, Any], where: str, reasoning: list[str]) -> None:
        text = string(b.get("thinking"), f"{where}.thinking")
        signature = b.get("signature")
        if isinstance(signature, str) and verify_thinking(text, signature, self.key):
            reasoning.append(text)
        else:
            self.ignored.block("thinking=unverified")

    def _tool_result(self, b: dict[str, Any], where: str) -> tuple[dict[str, Any], list[Part]]:
        use_id = string(b.get("tool_use_id"), f"{where}.tool_use_id")
        content = b.get("content")
        texts: list[str] = []
        images: list[Part] = []
        if isinstance(content, str):
            texts.append(content)
        elif content is not None:
            for k, item in enumerate(array(content, f"{where}.content")):
                self._result_item(item, f"{where}.content[{k}]", texts, images)
        text = "\n\n".join(texts)
        is_error = b.get("is_error")
        if is_error is not None and not isinstance(is_error, bool):
            raise bad(f"{where}.is_error", "must be a boolean.", "invalid_type")
        if is_error:
            text = f"Error: {text}" if text else "Error"
        return {"role": "tool", "tool_call_id": call_id(use_id), "content": text}, images

    def _result_item(self, item: Any, where: str, texts: list[str], images: list[Part]) -> None:
        b = obj(item, where)
        kind = b.get("type")
        if kind == "image":
            images.append(image_part(b, where))
        elif kind == "tool_reference":
            self.ignored.block("tool_reference=dropped")
        elif kind in ("text", "document", "search_result"):
            scratch: list[Part] = []
            self._common(kind, b, where, scratch, [])
            texts += [p["text"] for p in scratch if p["type"] == "text"]
            images += [p for p in scratch if p["type"] == "image_url"]
        else:
            raise bad(f"{where}.type", f"unknown tool_result content type {kind!r}.")


def text_part(text: str) -> Part:
    return {"type": "text", "text": text}


def user_content(parts: list[Part]) -> str | list[Part]:
    """A plain string when every part is text (every GLM host takes it), else the part list."""
    if all(p["type"] == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


def image_part(b: dict[str, Any], where: str) -> Part:
    """An ``image`` block as an ``image_url`` part; raises InvalidRequest for other sources."""
    source = obj(b.get("source"), f"{where}.source")
    kind = source.get("type")
    if kind == "base64":
        media = string(source.get("media_type"), f"{where}.source.media_type")
        data = string(source.get("data"), f"{where}.source.data")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if kind == "url":
        url = string(source.get("url"), f"{where}.source.url")
        return {"type": "image_url", "image_url": {"url": url}}
    raise bad(f"{where}.source.type", "image sources here are 'base64' or 'url'.")


def document_parts(b: dict[str, Any], where: str) -> list[Part]:
    """A text document inlined as text parts; a PDF is a 400 (no variant here reads one)."""
    source = obj(b.get("source"), f"{where}.source")
    kind = source.get("type")
    title = b.get("title")
    head = [text_part(title)] if isinstance(title, str) and title else []
    if kind == "text":
        return [*head, text_part(string(source.get("data"), f"{where}.source.data"))]
    if kind == "content":
        content = source.get("content")
        if isinstance(content, str):
            return [*head, text_part(content)]
        parts = head
        for k, item in enumerate(array(content, f"{where}.source.content")):
            at = f"{where}.source.content[{k}]"
            it = obj(item, at)
            if it.get("type") == "image":
                parts.append(image_part(it, at))
            elif it.get("type") == "text":
                parts.append(text_part(string(it.get("text"), f"{at}.text")))
            else:
                raise bad(f"{at}.type", "must be 'text' or 'image'.")
        return parts
    if kind == "base64" and source.get("media_type") == "application/pdf":
        data = string(source.get("data"), f"{where}.source.data")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise bad(f"{where}.source.data", "is not base64.") from None
        return [*head, text_part(pdf_text(raw, f"{where}.source.data"))]
    raise NoCapableVariant(
        f"{where}: no GLM variant served here reads {kind!r} documents; send the PDF inline "
        "(a 'base64' source) or the document's text (a 'text' source).",
        param=f"{where}.source",
    )


def search_result_text(b: dict[str, Any], where: str) -> str:
    """A ``search_result`` block as text: title, source, then its text blocks."""
    body = text_of(b.get("content"), f"{where}.content")
    title = b.get("title")
    source = b.get("source")
    head = " — ".join(s for s in (title, source) if isinstance(s, str) and s)
    return f"{head}\n\n{body}" if head else body


def tool_call(b: dict[str, Any], where: str) -> dict[str, Any]:
    """A ``tool_use`` block as an OpenAI tool call; ``input`` must be an object."""
    use_id = string(b.get("id"), f"{where}.id")
    name = string(b.get("name"), f"{where}.name")
    args = b.get("input")
    if not isinstance(args, dict):
        raise bad(f"{where}.input", "must be an object (the tool's arguments).", "invalid_type")
    try:
        arguments = orjson.dumps(args).decode()
    except TypeError:  # orjson: integers beyond 64 bits, nesting deeper than 255
        raise bad(f"{where}.input", "holds a value JSON cannot carry here.") from None
    return {
        "id": call_id(use_id),
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def merge_adjacent(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adjacent user turns, and adjacent assistant turns, merged into one message each."""
    out: list[dict[str, Any]] = []
    for m in messages:
        prev = out[-1] if out else None
        if prev is None or prev["role"] != m["role"] or m["role"] not in ("user", "assistant"):
            out.append(m)
        elif m["role"] == "user":
            out[-1] = {"role": "user", "content": user_content(_parts(prev) + _parts(m))}
        else:
            out[-1] = _merge_assistant(prev, m)
    return out


def _parts(m: dict[str, Any]) -> list[Part]:
    content = m["content"]
    return [text_part(content)] if isinstance(content, str) else list(content)


def _merge_assistant(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    texts = [t for t in (a["content"], b["content"]) if t]
    calls = a.get("tool_calls", []) + b.get("tool_calls", [])
    out: dict[str, Any] = {
        "role": "assistant",
        "content": "\n\n".join(texts) or (None if calls else ""),
    }
    if calls:
        out["tool_calls"] = calls
    reasoning = a.get("reasoning_content", "") + b.get("reasoning_content", "")
    if reasoning:
        out["reasoning_content"] = reasoning
    return out
