"""Loaded by a gateway test process whose PYTHONPATH includes this folder (and only then).

Plants a bug that fires only for requests carrying ``BOOM`` in their body, so tests can prove
the last line of defence: an exception nothing else catches becomes a 500 in the API's own
error shape (or an error event mid-stream), logged once with its traceback.
"""

from __future__ import annotations

import os
from typing import Any

BOOM = "<<boom>>"

if os.environ.get("GLM_TEST_PLANT_BUG") == "1":
    import gateway.api.http as http
    import gateway.api.models as models
    import gateway.edge.endpoint as endpoint
    import gateway.edge.fastpath as fastpath
    import gateway.edge.relay as relay

    real_resolve = endpoint.resolve_needs
    real_rewrite = relay.Relay.rewrite
    real_one, real_run = fastpath.BytePath.one, fastpath.BytePath.run
    real_text = fastpath.BytePath.text
    real_models = models.models_body

    def resolve_needs(body: Any, headers: Any, config: Any) -> Any:
        if BOOM in str(body.get("messages")):
            raise RuntimeError("planted bug before the answer")
        return real_resolve(body, headers, config)

    def rewrite(self: Any, event: bytes) -> bytes:
        if b"BOOM-CHUNK" in event:
            raise RuntimeError("planted bug mid-stream")
        return real_rewrite(self, event)

    # Plain chunks skip rewrite() (gateway/edge/fastpath.py): the bug is planted there too.
    def one(self: Any, event: bytes) -> bytes | None:
        if b"BOOM-CHUNK" in event:
            raise RuntimeError("planted bug mid-stream")
        return real_one(self, event)

    def run(self: Any, buf: bytes, start: int) -> Any:
        if b"BOOM-CHUNK" in buf[start:]:
            return None  # each event then goes through one() or rewrite()
        return real_run(self, buf, start)

    def text(self: Any, event: bytes) -> bytes | None:
        if b"BOOM-CHUNK" in event:
            raise RuntimeError("planted bug mid-stream")
        return real_text(self, event)

    def models_body(config: Any) -> Any:
        raise RuntimeError("planted bug in /v1/models")

    endpoint.resolve_needs = resolve_needs
    relay.Relay.rewrite = rewrite  # type: ignore[method-assign]
    fastpath.BytePath.one = one  # type: ignore[method-assign]
    fastpath.BytePath.run = run  # type: ignore[method-assign]
    fastpath.BytePath.text = text  # type: ignore[method-assign]
    http.models_body = models_body
