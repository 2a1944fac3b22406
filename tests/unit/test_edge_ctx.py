"""``Endpoint.__call__`` builds its request context without ``_Ctx.__init__`` (three slots
written out): what ``__init__`` sets must stay those three, and a served request's context
must hold what ``__init__`` would have given it."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from gateway.app import create_app
from gateway.catalogue.loader import load_config
from gateway.catalogue.schema import AuthConfig
from gateway.edge import endpoint as endpoint_module
from gateway.edge.endpoint import _Ctx
from gateway.observability.timing import StageTimes
from tests.support.procs import CONFIG


def test_init_sets_what_the_endpoint_writes_out() -> None:
    ctx = _Ctx("req_x", 1.5)
    assert vars(ctx).keys() == {"request_id", "started", "times"}
    assert ctx.times == StageTimes()


def test_a_served_request_gets_a_whole_context(monkeypatch: Any) -> None:
    config = load_config(CONFIG, demo_simulator_url="http://127.0.0.1:9")
    auth = AuthConfig(enabled=False)
    app = create_app(
        dataclasses.replace(config, gateway=config.gateway.model_copy(update={"auth": auth}))
    )
    endpoint = app.services.generation.routes["/v1/chat/completions"]
    seen: list[_Ctx] = []
    finished = endpoint._finished

    def spy(ctx: _Ctx, ended: float) -> None:
        seen.append(ctx)
        finished(ctx, ended)

    monkeypatch.setattr(endpoint, "_finished", spy)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}"}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "headers": [(b"x-request-id", b"req-given")]}  # fmt: skip
    asyncio.run(endpoint(scope, receive, send))
    (ctx,) = seen
    assert ctx.request_id == "req-given" and ctx.status == 400
    assert isinstance(ctx.started, float) and 0 < ctx.started <= endpoint_module.perf_counter()
    assert isinstance(ctx.times, StageTimes) and not ctx.times.planned
