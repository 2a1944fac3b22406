"""Responses over WebSocket: ``response.create`` messages in sequence on one connection, the
key from the upgrade's headers, the stream's events back as messages; ``previous_response_id``
is ``previous_response_not_found`` and the connection stays open."""

from __future__ import annotations

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.e2e import AUTH
from tests.support.openapi import validate
from tests.support.procs import Proc
from tests.unit.test_frontend_responses_stream import open_responses


def ws_url(gw: Proc, path: str = "/v1/responses") -> str:
    return gw.url.replace("http://", "ws://") + path


async def events_until_done(ws: object) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    while True:
        event = orjson.loads(await ws.recv())  # type: ignore[attr-defined]
        open_responses(event)  # every event, errors too, is an Open Responses event
        out.append(event)
        if event["type"] in ("response.completed", "response.failed", "error"):
            return out


async def test_several_responses_on_one_connection(gateway: Proc) -> None:
    async with connect(ws_url(gateway), additional_headers=AUTH) as ws:
        for text in ("hi", "again"):
            await ws.send(orjson.dumps({"type": "response.create", "model": "glm-4.7",
                                        "input": text}).decode())  # fmt: skip
            events = await events_until_done(ws)
            assert events[0]["type"] == "response.created"
            assert events[-1]["type"] == "response.completed"
            validate("Response", events[-1]["response"])
            seq = [e["sequence_number"] for e in events]
            assert seq == list(range(len(seq)))


async def test_previous_response_id_is_not_found_and_the_socket_stays_open(gateway: Proc) -> None:
    async with connect(ws_url(gateway), additional_headers=AUTH) as ws:
        await ws.send(
            orjson.dumps(
                {
                    "type": "response.create",
                    "model": "glm-4.7",
                    "input": "hi",
                    "previous_response_id": "resp_1",
                }
            ).decode()
        )
        err = orjson.loads(await ws.recv())
        assert err["type"] == "error" and err["sequence_number"] == 0
        assert err["error"]["code"] == "previous_response_not_found"  # type: ignore[index]
        open_responses(err)
        await ws.send(orjson.dumps({"type": "response.create", "model": "glm-4.7",
                                    "input": "hi"}).decode())  # fmt: skip
        assert (await events_until_done(ws))[-1]["type"] == "response.completed"


async def test_a_bad_key_is_an_error_event(gateway: Proc) -> None:
    async with connect(ws_url(gateway), additional_headers={"Authorization": "Bearer no"}) as ws:
        await ws.send(orjson.dumps({"type": "response.create", "model": "glm-4.7",
                                    "input": "hi"}).decode())  # fmt: skip
        err = orjson.loads(await ws.recv())
        assert err["type"] == "error" and err["status"] == 401
        open_responses(err)  # sequence_number and a full error payload (type, code, param)


async def test_bad_messages_are_open_responses_error_events(gateway: Proc) -> None:
    async with connect(ws_url(gateway), additional_headers=AUTH) as ws:
        for text in ("not json", '{"type": "response.cancel"}', '{"type": "response.create"}'):
            await ws.send(text)
            err = orjson.loads(await ws.recv())
            assert err["type"] == "error" and err["sequence_number"] == 0, err
            open_responses(err)


async def test_other_websocket_paths_are_refused(gateway: Proc) -> None:
    with pytest.raises(InvalidStatus):
        async with connect(ws_url(gateway, "/v1/chat/completions"), additional_headers=AUTH):
            pass
