"""Responses ``input`` items → chat messages, and the sealing of reasoning the gateway returns.

Items map in order: ``message`` items (roles ``system``/``developer`` → ``system``, ``user``,
``assistant``) with their parts; ``function_call`` items become ``tool_calls`` of one assistant
turn (consecutive calls, and the assistant message right before them, share it);
``function_call_output`` becomes a ``role: tool`` message. A ``reasoning`` item's
``encrypted_content`` is unsealed (:func:`unseal`) and goes, unmodified, into the
``reasoning_content`` of the next assistant turn (several in a row are joined in order): GLM's
preserved thinking needs it back exactly. One the gateway cannot verify is dropped and counted
in ``ignored``.

A sealed token is ``glmgwr1.`` + base64url(text) + ``.`` + the Messages thinking signature of
the text (:func:`~gateway.frontends.messages_signature.sign_thinking`): the text is readable by
whoever holds it, and only this gateway's key makes a tag it accepts back.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

import orjson

from gateway.frontends.documents import pdf_text
from gateway.frontends.messages_fields import Ignored, array, bad, obj, string
from gateway.frontends.messages_signature import sign_thinking, verify_thinking

SEAL_PREFIX: Final = "glmgwr1."
_TEXT_MIME: Final = ("text/", "application/json")


def seal(text: str, key: bytes) -> str:
    """``text`` as a token only ``key`` verifies (:func:`unseal`)."""
    raw = text.encode("utf-8", "surrogatepass")
    body = base64.urlsafe_b64encode(raw).decode("ascii")
    return SEAL_PREFIX + body + "." + sign_thinking(text, key)


def unseal(token: Any, key: bytes) -> str | None:
    """The text sealed in ``token`` under ``key``, or None (never raises)."""
    if not isinstance(token, str) or not token.startswith(SEAL_PREFIX):
        return None
    body, dot, tag = token[len(SEAL_PREFIX) :].partition(".")
    if not dot or not body.isascii() or not tag.isascii():
        return None
    try:
        text = base64.urlsafe_b64decode(body.encode("ascii")).decode("utf-8", "surrogatepass")
    except (binascii.Error, ValueError):
        return None
    return text if verify_thinking(text, tag, key) else None


class Items:
    """One request's ``input`` → chat messages (one use)."""

    def __init__(self, key: bytes, ignored: Ignored, flat_name: Any) -> None:
        self._key = key
        self._ignored = ignored
        self._flat = flat_name
        """``(name, namespace, path) -> str``: a function's name as the host knows it."""
        self._out: list[dict[str, Any]] = []
        self._reasoning: list[str] = []
        self._unverified = 0

    def chat_messages(self, value: Any) -> list[dict[str, Any]]:
        """The chat messages of ``input`` (a string or an array of items)."""
        if isinstance(value, str):
            return [{"role": "user", "content": value}]
        if value is None:
            raise bad(
                "input",
                "is required (a string or an array of items): this gateway keeps no stored "
                "prompts or conversations.",
                "missing_field",
            )
        for i, item in enumerate(array(value, "input")):
            path = f"input[{i}]"
            self._item(obj(item, path), path)
        if self._reasoning:
            self._ignored.field("input.reasoning=trailing")
        if self._unverified:
            self._ignored.field(f"input.reasoning=unverified:{self._unverified}")
        if not self._out:
            raise bad("input", "must hold at least one message.")
        return self._out

    def _item(self, item: dict[str, Any], path: str) -> None:
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            self._message(item, path)
        elif kind == "function_call":
            self._call(item, path)
        elif kind == "function_call_output":
            call = string(item.get("call_id"), f"{path}.call_id")
            text = _output_text(item.get("output"), f"{path}.output")
            self._out.append({"role": "tool", "tool_call_id": call, "content": text})
        elif kind == "reasoning":
            unsealed = unseal(item.get("encrypted_content"), self._key)
            if unsealed is None:
                self._unverified += 1
            else:
                self._reasoning.append(unsealed)
        elif kind == "item_reference":
            self._reference(item, path)
        elif kind == "compaction":
            summary = unseal(item.get("encrypted_content"), self._key)
            if summary is None:
                raise bad(
                    f"{path}.encrypted_content",
                    "is not a compaction this gateway sealed (it keeps no state to restore).",
                )
            text = f"<conversation-checkpoint>\n{summary}\n</conversation-checkpoint>"
            self._out.append({"role": "user", "content": text})
        else:
            raise bad(f"{path}.type", f"unsupported input item type {kind!r}.")

    def _reference(self, item: dict[str, Any], path: str) -> None:
        """An ``item_reference`` to an item this gateway answered: a ``function_call`` id
        carries the call, sealed (expanded here); a reasoning or message id carries nothing
        to restore (dropped and named); anything else would need stored state (400)."""
        ref = string(item.get("id"), f"{path}.id")
        if ref.startswith("fc_"):
            unsealed = unseal(ref[3:], self._key)
            call = orjson.loads(unsealed) if unsealed is not None else None
            if isinstance(call, dict):
                self._call({k: v for k, v in call.items() if v is not None}, path)
                return
        elif ref.startswith(("rs_", "msg_")):
            self._ignored.field("input.item_reference=dropped")
            return
        raise bad(
            f"{path}.id",
            "refers to an item this gateway cannot restore (it keeps no state); send the item "
            "itself, or set store: false in the client.",
        )

    def _message(self, item: dict[str, Any], path: str) -> None:
        role = item.get("role")
        if role in ("system", "developer"):
            self._out.append({"role": "system", "content": _text(item.get("content"), path)})
        elif role == "user":
            self._out.append({"role": "user", "content": _user_content(item.get("content"), path)})
        elif role == "assistant":
            turn = self._assistant()
            text = _text(item.get("content"), path)
            turn["content"] = (turn["content"] or "") + text
        else:
            raise bad(f"{path}.role", "must be system, developer, user or assistant.")

    def _assistant(self) -> dict[str, Any]:
        """The assistant turn to add to: the last message if it is one still open for tool
        calls, else a new one (taking the pending reasoning)."""
        last = self._out[-1] if self._out else None
        if last is not None and last["role"] == "assistant" and not self._reasoning:
            return last
        turn: dict[str, Any] = {"role": "assistant", "content": None}
        if self._reasoning:
            turn["reasoning_content"] = "".join(self._reasoning)
            self._reasoning = []
        self._out.append(turn)
        return turn

    def _call(self, item: dict[str, Any], path: str) -> None:
        call_id = string(item.get("call_id"), f"{path}.call_id")
        name = string(item.get("name"), f"{path}.name")
        namespace = item.get("namespace")
        if namespace is not None:
            namespace = string(namespace, f"{path}.namespace")
        arguments = string(item.get("arguments", ""), f"{path}.arguments")
        turn = self._assistant()
        fn = {"name": self._flat(name, namespace, path), "arguments": arguments}
        turn.setdefault("tool_calls", []).append(
            {"id": call_id, "type": "function", "function": fn}
        )


def _text(content: Any, path: str) -> str:
    """A string, or the texts of ``input_text``/``output_text``/``refusal`` parts, joined."""
    if isinstance(content, str):
        return content
    texts = []
    for i, part in enumerate(array(content, f"{path}.content")):
        where = f"{path}.content[{i}]"
        p = obj(part, where)
        if p.get("type") in ("input_text", "output_text", "text"):
            texts.append(string(p.get("text"), f"{where}.text"))
        elif p.get("type") == "refusal":
            texts.append(string(p.get("refusal"), f"{where}.refusal"))
        else:
            raise bad(f"{where}.type", "must be a text part here.")
    return "".join(texts)


def _user_content(content: Any, path: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(array(content, f"{path}.content")):
        where = f"{path}.content[{i}]"
        p = obj(part, where)
        kind = p.get("type")
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": string(p.get("text"), f"{where}.text")})
        elif kind == "input_image":
            parts.append(_image(p, where))
        elif kind == "input_file":
            parts.append({"type": "text", "text": _file_text(p, where)})
        else:
            raise bad(f"{where}.type", f"unsupported content part type {kind!r}.")
    return parts


def _image(part: dict[str, Any], path: str) -> dict[str, Any]:
    url = part.get("image_url")
    if url is None:
        raise bad(f"{path}.image_url", "is required: the gateway keeps no files (file_id).")
    image: dict[str, Any] = {"url": string(url, f"{path}.image_url")}
    detail = part.get("detail")
    if detail is not None:
        if detail not in ("auto", "low", "high"):
            raise bad(f"{path}.detail", "must be auto, low or high.")
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _file_text(part: dict[str, Any], path: str) -> str:
    """The text of a file sent inline: plain text (``data:text/...;base64,``) as is, a PDF
    through :func:`~gateway.frontends.documents.pdf_text`; anything else is a 400."""
    data = part.get("file_data")
    head, comma, payload = (data if isinstance(data, str) else "").partition(",")
    if not comma or not head.startswith("data:") or not head.endswith(";base64"):
        raise bad(f"{path}.file_data", "only plain-text files sent inline as data URLs work.")
    pdf = head[5:].startswith("application/pdf")
    if not pdf and not head[5:].startswith(_TEXT_MIME):
        raise bad(f"{path}.file_data", "only plain-text and PDF files work (no images here).")
    try:
        raw = base64.b64decode(payload, validate=True)
        text = pdf_text(raw, f"{path}.file_data") if pdf else raw.decode("utf-8")
    except (binascii.Error, ValueError):
        raise bad(f"{path}.file_data", "is not base64 of UTF-8 text or of a PDF.") from None
    name = part.get("filename")
    return f"<file name={name!r}>\n{text}\n</file>" if isinstance(name, str) else text


def _output_text(output: Any, path: str) -> str:
    """A ``function_call_output``'s output as the string a tool message carries: parts (a type
    slip some clients make) are flattened to their text."""
    if isinstance(output, str):
        return output
    texts = []
    for i, part in enumerate(array(output, path)):
        p = obj(part, f"{path}[{i}]")
        if p.get("type") not in ("input_text", "output_text", "text"):
            raise bad(f"{path}[{i}].type", "only text parts work in a tool output here.")
        texts.append(string(p.get("text"), f"{path}[{i}].text"))
    return "".join(texts)
