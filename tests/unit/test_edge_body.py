"""The endpoint's body read (the usual one-message body taken without ``read_body``'s
coroutine) against ``read_body``: for any sequence of ``http.request`` messages, body split,
empty parts, missing or null ``body``, a disconnect and any size limit, the endpoint reads the
body ``read_body`` reads (the 404 naming the body's model says which) or refuses it the same
way (413, the empty body's 400, the cancellation)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.catalogue.loader import load_config
from gateway.catalogue.schema import AuthConfig
from gateway.edge.asgi import read_body
from gateway.errors import BodyTooLarge
from tests.support.procs import CONFIG

MASTER = "sk-edge-body-master"
APP: Any = None


def app() -> Any:
    global APP
    if APP is None:
        config = load_config(CONFIG, demo_simulator_url="http://127.0.0.1:9")
        auth = AuthConfig(enabled=True, master_key=MASTER)
        gateway = config.gateway.model_copy(update={"auth": auth})
        APP = create_app(dataclasses.replace(config, gateway=gateway))
    return APP


def scope() -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "query_string": b"",
        "headers": [(b"authorization", b"Bearer " + MASTER.encode())],
    }


async def served(messages: list[dict[str, Any]], limit: int) -> Any:
    """The endpoint's answer to ``messages``: (status, error body) or the exception raised."""
    endpoint = app().services.generation.routes["/v1/chat/completions"]
    endpoint._limit = limit
    queue = list(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)  # the disconnect watch waits here
        raise AssertionError("unreachable")

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    try:
        await endpoint(scope(), receive, send)
    except asyncio.CancelledError as err:
        return ("cancelled", str(err))
    return sent[0]["status"], orjson.loads(sent[1]["body"])["error"]


async def expected(messages: list[dict[str, Any]], limit: int) -> Any:
    """What the endpoint answers once ``read_body`` read ``messages``."""
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    try:
        raw = await read_body(receive, limit)
    except asyncio.CancelledError as err:
        return ("cancelled", str(err))
    except BodyTooLarge as err:
        return 413, err.body()["error"]
    if not raw:
        return 400, {
            "message": "The request body is empty; send a JSON object.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_json",
        }
    model = orjson.loads(raw)["model"]
    return 404, model


def body_of(model: str) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})


ONE = body_of("no-such-a")


@st.composite
def messages(draw: st.DrawFn) -> list[dict[str, Any]]:
    model = "no-such-" + draw(st.text("abcxyz0123", min_size=1, max_size=40))
    raw = b"" if draw(st.integers(0, 9)) == 0 else body_of(model)
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=4)))
    parts = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    out: list[dict[str, Any]] = []
    for i, part in enumerate(parts):
        msg: dict[str, Any] = {"type": "http.request"}
        form = draw(st.integers(0, 5))
        if part or form > 1:
            msg["body"] = part
        elif form == 1:
            msg["body"] = None
        last = i == len(parts) - 1
        if not last or draw(st.booleans()):
            msg["more_body"] = not last
        out.append(msg)
    if draw(st.integers(0, 7)) == 0:
        out.insert(draw(st.integers(0, len(out) - 1)), {"type": "http.disconnect"})
    return out


def same(got: Any, want: Any) -> bool:
    if want[0] == 404:
        return (
            got[0] == 404
            and got[1]["code"] == "model_not_found"
            and repr(want[1]) in (got[1]["message"])
        )
    return bool(got == want)


@settings(max_examples=150, deadline=None)
@given(messages(), st.integers(0, 160))
def test_the_endpoint_reads_what_read_body_reads(msgs: list[dict[str, Any]], limit: int) -> None:
    async def check() -> None:
        want = await expected(msgs, limit)
        got = await served([dict(m) for m in msgs], limit)
        assert same(got, want), (got, want)

    asyncio.run(check())


@pytest.mark.parametrize(
    ("msgs", "limit", "status"),
    [
        ([{"type": "http.request", "body": ONE}], 10_000, 404),
        ([{"type": "http.request", "body": ONE}], len(ONE), 404),
        ([{"type": "http.request", "body": ONE}], len(ONE) - 1, 413),
        ([{"type": "http.request"}], 10, 400),
        ([{"type": "http.request", "body": None}], 10, 400),
        ([{"type": "http.request", "body": b"", "more_body": False}], 0, 400),
        ([{"type": "http.request", "body": b"{", "more_body": True},
          {"type": "http.request", "body": body_of("no-such-b")[1:]}], 10_000, 404),
        ([{"type": "http.disconnect"}], 10, None),
    ],
)  # fmt: skip
def test_named_bodies(msgs: list[dict[str, Any]], limit: int, status: int | None) -> None:
    async def check() -> None:
        want = await expected(msgs, limit)
        got = await served([dict(m) for m in msgs], limit)
        assert same(got, want), (got, want)
        assert got[0] == (status or "cancelled")

    asyncio.run(check())


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([(b"authorization", b"Bearer " + MASTER.encode())], 404),
        ([(b"x-api-key", MASTER.encode())], 404),  # Anthropic's header, as a bearer
        ([(b"authorization", b"Bearer " + MASTER.encode()), (b"x-api-key", b"nope")], 404),
        ([(b"authorization", b"Bearer nope"), (b"x-api-key", MASTER.encode())], 401),
        ([(b"x-api-key", b"")], 401),
        ([], 401),
    ],
)
def test_the_key_is_read_from_either_header(
    headers: list[tuple[bytes, bytes]], status: int
) -> None:
    endpoint = app().services.generation.routes["/v1/chat/completions"]
    endpoint._limit = 10_000
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": ONE}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    asyncio.run(endpoint({**scope(), "headers": headers}, receive, send))
    assert sent[0]["status"] == status
