"""The request body's shape and size, checked before anything reads it for routing.

Two jobs, both on the parsed body and both cheap on ordinary requests:

- **Limits** (``limits:`` in gateway.yaml): messages, tools, image parts, one image's size and
  the nesting depth. Each breach is a 400 naming the limit and the config key that sets it.
- **Shapes** the gateway itself reads (content parts, tool entries): a value of the wrong type
  is a 400 naming where it is, never an exception deeper in.

The depth walk runs only when the raw bytes hold more brackets than the depth limit (so a body
could be that deep): a ``bytes.count`` decides, in C.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from gateway.catalogue.schema import RequestLimits
from gateway.errors import InvalidRequest

IMAGE_PART_TYPES: Final = frozenset({"image_url", "video_url", "input_image"})
_DEFAULT_LIMITS: Final = RequestLimits()
_BASE64_PER_BYTE: Final = 4 / 3


def _limit(what: str, key: str, value: int, param: str, code: str) -> InvalidRequest:
    return InvalidRequest(
        f"{what}; this gateway accepts at most {value} (limits.{key} in gateway.yaml).",
        param=param,
        code=code,
    )


def parse_body(raw: bytes, limits: RequestLimits = _DEFAULT_LIMITS) -> dict[str, Any]:
    """The request body as a JSON object (any API), nested no deeper than the limit; 400
    ``invalid_json`` / ``too_deep`` otherwise."""
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # orjson's own ceiling (1024) is past any configured one
            raise _limit(
                "The request body is nested too deeply",
                "max_json_depth",
                limits.max_json_depth,
                "body",
                "too_deep",
            ) from None
        raise InvalidRequest(
            f"The request body is not valid JSON: {exc}.", code="invalid_json"
        ) from None
    if not isinstance(obj, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    if raw.count(b"{") + raw.count(b"[") > limits.max_json_depth:  # (check_depth's own test)
        check_depth(raw, obj, limits)
    return obj


def check_depth(raw: bytes, obj: Any, limits: RequestLimits) -> None:
    """Objects and arrays nested deeper than ``limits.max_json_depth``: 400."""
    most = limits.max_json_depth
    if raw.count(b"{") + raw.count(b"[") <= most:
        return
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > most:
            raise _limit(
                "The request body is nested too deeply", "max_json_depth", most, "body", "too_deep"
            )
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))


def check_counts(messages: Any, tools: Any, functions: Any, limits: RequestLimits) -> None:
    """Messages and tools per request (the body's ``messages``, ``tools`` and ``functions``)."""
    if isinstance(messages, list) and len(messages) > limits.max_messages:
        raise _limit(
            f"The request has {len(messages)} messages",
            "max_messages",
            limits.max_messages,
            "messages",
            "too_many_messages",
        )
    if isinstance(tools, list) and len(tools) > limits.max_tools:
        raise _too_many_tools(tools, "tools", limits)
    if isinstance(functions, list) and len(functions) > limits.max_tools:
        raise _too_many_tools(functions, "functions", limits)


def _too_many_tools(tools: list[Any], key: str, limits: RequestLimits) -> InvalidRequest:
    return _limit(
        f"The request has {len(tools)} {key}", "max_tools", limits.max_tools, key, "too_many_tools"
    )


class ImageTally:
    """Counts and sizes the image parts of one request as the message walk meets them."""

    __slots__ = ("count", "limits")

    def __init__(self, limits: RequestLimits) -> None:
        self.limits = limits
        self.count = 0

    def part(self, part: dict[str, Any], where: str) -> None:
        lim = self.limits
        self.count += 1
        if self.count > lim.max_images:
            raise _limit(
                "The request has more image parts than allowed",
                "max_images",
                lim.max_images,
                where,
                "too_many_images",
            )
        url = _image_url(part.get(part["type"]) or part.get("image_url"))
        if url is None:
            return
        if url.startswith("data:"):
            decoded = int((len(url) - url.find(",") - 1) / _BASE64_PER_BYTE)
            if decoded > lim.max_image_bytes:
                raise _limit(
                    f"{where} is an inline image of about {decoded} bytes",
                    "max_image_bytes",
                    lim.max_image_bytes,
                    where,
                    "image_too_large",
                )
        elif len(url) > lim.max_image_url_chars:
            raise _limit(
                f"{where} has an image URL of {len(url)} characters",
                "max_image_url_chars",
                lim.max_image_url_chars,
                where,
                "image_url_too_long",
            )


def _image_url(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        url = value.get("url")
        return url if isinstance(url, str) else None
    return None


def check_parts(content: list[Any], i: int, images: ImageTally) -> bool:
    """One message's content parts: each an object with a string ``type``. True if any is an
    image (counted and sized on ``images``)."""
    found = False
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str):
            raise InvalidRequest(
                f"messages[{i}].content[{j}] must be an object with a string 'type' "
                "(for example 'text' or 'image_url').",
                param=f"messages[{i}].content[{j}]",
                code="invalid_value",
            )
        if kind in IMAGE_PART_TYPES:
            images.part(part, f"messages[{i}].content[{j}]")
            found = True
    return found
