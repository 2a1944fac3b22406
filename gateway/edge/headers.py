"""The request-head cap: request line + headers larger than ``server.max_header_bytes`` get 431.

httptools (uvicorn's parser here) has no limit of its own, and uvicorn offers none for it, so
the dispatcher measures the head from the ASGI scope: the sum of lengths, no copy.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from gateway.errors import GatewayError

_HEAD_EXTRA = len(b"  HTTP/1.1\r\n") + len(b"\r\n")  # the line's spaces, version, CRLF; blank line
_HEADER_EXTRA = len(b": \r\n")


class HeadersTooLarge(GatewayError):
    status = 431
    type = "invalid_request_error"
    code = "request_header_fields_too_large"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"The request line and headers are {size} bytes; this gateway accepts at most "
            f"{limit} (server.max_header_bytes). Send fewer or smaller headers.",
            headers={"Connection": "close"},
        )


def head_bytes(scope: MutableMapping[str, Any]) -> int:
    """Bytes of the request head, its closing blank line included, as a client writes it
    (``Name: value``; other spacing or obs-folds make it differ by a few bytes)."""
    headers = scope["headers"]
    path = scope.get("raw_path") or scope["path"]
    query = scope.get("query_string")
    size = len(scope["method"]) + len(path) + _HEAD_EXTRA + _HEADER_EXTRA * len(headers)
    if query:
        size += len(query) + 1
    for name, value in headers:
        size += len(name) + len(value)
    return size
