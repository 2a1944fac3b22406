"""Caps on what one request may make the process hold (issue 13, point 5), and shapes checked
before use (point 7): each breach a 400 in OpenAI's shape naming the limit or the field."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.e2e import AUTH, assert_error_shape, module_gateway, text_msg
from tests.support.procs import Proc

LIMITS = {
    "max_messages": 10,
    "max_images": 2,
    "max_image_bytes": 30_000,
    "max_image_url_chars": 200,
    "max_json_depth": 12,
    "max_tools": 3,
}


@pytest.fixture(scope="module")
def small(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp: Path = tmp_path_factory.mktemp("limits")
    with module_gateway(simulator, tmp, limits=LIMITS) as proc:
        yield proc


def post(proc: Proc, body: Any, path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(proc.url + path, json=body, headers=AUTH, timeout=30)


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def data_url(n: int) -> str:
    return "data:image/png;base64," + base64.b64encode(b"\0" * n).decode()


def vision(*parts: dict[str, Any]) -> dict[str, Any]:
    content = [{"type": "text", "text": "what is this?"}, *parts]
    return {"model": "auto", "messages": [{"role": "user", "content": content}]}


def refused(r: httpx.Response, code: str, param: str | None = None) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    err = assert_error_shape(r.json(), 400)
    assert err["code"] == code, err
    if param is not None:
        assert err["param"] == param
    return err


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/route"])
def test_too_many_messages(small: Proc, path: str) -> None:
    msgs = text_msg("hi") * 11
    err = refused(post(small, {"model": "auto", "messages": msgs}, path), "too_many_messages")
    assert "11 messages" in err["message"] and "limits.max_messages" in err["message"]
    assert post(small, {"model": "auto", "messages": text_msg("hi") * 10}, path).status_code == 200


def test_too_many_tools(small: Proc) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    body = {"model": "auto", "messages": text_msg("hi"), "tools": [tool] * 4}
    refused(post(small, body), "too_many_tools", "tools")
    body["tools"] = [tool] * 3
    assert post(small, body).status_code == 200


def test_too_many_images(small: Proc) -> None:
    url = "https://example.com/cat.png"
    err = refused(post(small, vision(image(url), image(url), image(url))), "too_many_images")
    assert "limits.max_images" in err["message"]
    assert post(small, vision(image(url), image(url))).status_code == 200


def test_an_inline_image_too_large(small: Proc) -> None:
    err = refused(post(small, vision(image(data_url(40_000)))), "image_too_large")
    assert err["param"] == "messages[0].content[1]"
    assert post(small, vision(image(data_url(20_000)))).status_code == 200


def test_an_image_url_too_long(small: Proc) -> None:
    refused(post(small, vision(image("https://e.com/" + "a" * 300))), "image_url_too_long")


def test_nesting_too_deep(small: Proc) -> None:
    deep: Any = "x"
    for _ in range(20):
        deep = {"k": deep}
    body = {"model": "auto", "messages": text_msg("hi"), "metadata": deep}
    err = refused(post(small, body), "too_deep")
    assert "limits.max_json_depth" in err["message"]


def test_nesting_past_the_parsers_own_ceiling(small: Proc) -> None:
    raw = b'{"model":"auto","messages":[],"x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = httpx.post(small.url + "/v1/chat/completions", content=raw, headers=AUTH, timeout=30)
    refused(r, "too_deep")


@pytest.mark.parametrize("kind", [{"a": 1}, ["image_url"], 7, None, True])
def test_a_content_part_type_of_the_wrong_shape(small: Proc, kind: Any) -> None:
    """Schemathesis found this one (OpenAI's schema): it was a 500 (unhashable type)."""
    body = {"model": "auto", "messages": [{"role": "user", "content": [{"type": kind}]}]}
    err = refused(post(small, body), "invalid_value", "messages[0].content[0]")
    assert "string 'type'" in err["message"]


@pytest.mark.parametrize("part", ["text", 3, ["x"]])
def test_a_content_part_that_is_not_an_object(small: Proc, part: Any) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": [part]}]}
    refused(post(small, body), "invalid_value", "messages[0].content[0]")


def test_functions_must_be_an_array(small: Proc) -> None:
    body = {"model": "auto", "messages": text_msg("hi"), "functions": {"name": "f"}}
    refused(post(small, body), "invalid_type", "functions")
