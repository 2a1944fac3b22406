"""What one simulator app remembers: models, request log, faults, stream counts, id counter."""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web

from gateway.simulator.faults import FaultBook
from gateway.simulator.models import ModelTable, SimModel
from gateway.simulator.plans import PlanBook
from gateway.simulator.prefix_cache import PrefixCache
from gateway.simulator.streams import StreamBook

LOG_SIZE = 200
SEEN_IDS = 10_000
REDACTED_HEADERS = frozenset({"authorization", "x-api-key"})


class SimState:
    """Everything one simulator app remembers: models, request log, faults, id counter."""

    __slots__ = (
        "_ids",
        "_prefix",
        "_seen",
        "_seen_order",
        "closing",
        "faults",
        "plans",
        "prefix_cache",
        "requests",
        "streams",
        "table",
    )

    def __init__(self, models: Iterable[SimModel]) -> None:
        self.table = ModelTable(models)
        self.faults = FaultBook()
        self.plans = PlanBook()
        self.prefix_cache = PrefixCache()
        self.streams = StreamBook()
        self.requests: deque[dict[str, Any]] = deque(maxlen=LOG_SIZE)
        self.closing = False
        self._ids = itertools.count(1)
        self._prefix = f"{int(time.time()) & 0xFFFFFF:06x}"
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()

    def fresh_request_id(self, request_id: str) -> bool:
        """Remember a client ``request_id``; False when it was seen before (Zhipu error 1231)."""
        if request_id in self._seen:
            return False
        self._seen.add(request_id)
        self._seen_order.append(request_id)
        if len(self._seen_order) > SEEN_IDS:
            self._seen.discard(self._seen_order.popleft())
        return True

    def next_uid(self) -> str:
        """A fresh id suffix, unique within this simulator."""
        return f"sim{self._prefix}{next(self._ids):08x}"

    async def read_body(self, request: web.Request, provider: str, api: str) -> Any:
        """Read the request's JSON body and log the request; ``None`` when the body is not
        JSON (logged as text)."""
        raw = await request.read()
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self.record(request, provider, raw.decode(errors="replace") if body is None else body, api)
        return body

    def record(self, request: web.Request, provider: str, body: Any, api: str = "chat") -> None:
        """Append a request to the log, ``Authorization`` and ``x-api-key`` values replaced by
        ``<redacted>``; ``api`` names the surface it came in on (``chat``, ``models``,
        ``messages``)."""
        # str(k): multidict keys are ``istr``, a str subclass orjson refuses.
        headers = {
            str(k): ("<redacted>" if k.lower() in REDACTED_HEADERS else v)
            for k, v in request.headers.items()
        }
        self.requests.append(
            {
                "provider": provider,
                "api": api,
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "headers": headers,
                "body": body,
            }
        )


STATE = web.AppKey("sim_state", SimState)
