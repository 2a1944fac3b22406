"""``server.max_header_bytes``: a request head past it gets 431 in OpenAI's error shape, through
the real server (uvicorn + httptools has no limit of its own), on every route."""

from __future__ import annotations

import socket

import httpx
import orjson

from tests.support.e2e import AUTH, assert_error_shape
from tests.support.procs import Proc

LIMIT = 32768  # the packaged gateway/config/gateway.yaml


def exchange(proc: Proc, method: str, path: str, head_size: int, body: bytes = b"") -> bytes:
    """Send a request whose head is exactly ``head_size`` bytes; the raw answer."""
    line = f"{method} {path} HTTP/1.1\r\n"
    fixed = [("Host", "t"), ("Connection", "close")]
    if body:
        fixed += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    fixed += [("Authorization", AUTH["Authorization"])]
    head = line + "".join(f"{k}: {v}\r\n" for k, v in fixed)
    pad_name = "X-Pad"
    missing = head_size - len(head) - len(f"{pad_name}: \r\n") - 2
    assert missing >= 0
    head += f"{pad_name}: {'a' * missing}\r\n\r\n"
    data = head.encode()
    assert len(data) == head_size
    with socket.create_connection(("127.0.0.1", proc.port), timeout=30) as s:
        s.sendall(data + body)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def status_and_body(raw: bytes) -> tuple[int, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_head_at_the_limit_is_served(gateway: Proc) -> None:
    status, body = status_and_body(exchange(gateway, "GET", "/healthz", LIMIT))
    assert status == 200, body


def test_head_one_byte_over_gets_431_naming_the_limit(gateway: Proc) -> None:
    status, body = status_and_body(exchange(gateway, "GET", "/healthz", LIMIT + 1))
    assert status == 431
    err = assert_error_shape(orjson.loads(body))
    assert err["code"] == "request_header_fields_too_large"
    assert err["type"] == "invalid_request_error"
    assert str(LIMIT) in err["message"] and "server.max_header_bytes" in err["message"]


def test_hot_path_at_and_over_the_limit(gateway: Proc) -> None:
    chat = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    status, body = status_and_body(exchange(gateway, "POST", "/v1/chat/completions", LIMIT, chat))
    assert status == 200, body
    assert orjson.loads(body)["choices"][0]["message"]["content"]
    status, body = status_and_body(
        exchange(gateway, "POST", "/v1/chat/completions", LIMIT + 1, chat)
    )
    assert status == 431, body
    assert assert_error_shape(orjson.loads(body))["code"] == "request_header_fields_too_large"


def test_one_megabyte_header_gets_431(gateway: Proc) -> None:
    r = httpx.get(gateway.url + "/v1/models", headers={**AUTH, "X-Big": "a" * 1024 * 1024})
    assert r.status_code == 431
    assert assert_error_shape(r.json())["code"] == "request_header_fields_too_large"
    assert r.headers["connection"] == "close"
    # The server is still fine for the next client.
    assert httpx.get(gateway.url + "/v1/models", headers=AUTH).status_code == 200
