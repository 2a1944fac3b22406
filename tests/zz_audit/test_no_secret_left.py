"""After the whole suite (this folder is collected last): no secret in anything a gateway wrote.

Every gateway the suite started logged to ``tests/out/gateway-*.log`` (its stderr: access
lines, errors, tracebacks, uvicorn's own lines). Tests configured real-looking secrets (the
master key, provider keys in the isolation and redaction tests) and made hosts echo them; here
every such log written during this run is searched for each of them and for anything shaped
like a key (the Redactor's own rules: a line it would change holds a key-shaped string).
Responses, stream events, metrics, ``/dashboard/data`` and ``/v1/route`` are searched by
``tests/e2e/test_redaction.py`` while the keys are being echoed.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from gateway.observability.redact import PLACEHOLDER, Redactor
from tests.support.e2e import MASTER_KEY
from tests.support.procs import OUT

SECRETS = (
    MASTER_KEY,
    "sk-operator-SECRET-0123456789abcdef",  # tests/e2e/test_upstream_isolation.py
    "sk-test-SECRET-1234567890abcdef",  # tests/e2e/test_redaction.py
    "sk-zai-SECRET-0123456789abcdef",  # tests/e2e/test_traces.py
    "sk-deepinfra-SECRET-fedcba9876543210",
)
SESSION_STARTED = float(os.environ.get("GLM_TEST_SESSION_STARTED", "0"))
_VIRTUAL = re.compile(r"sk-glm-[A-Za-z0-9_\-]{16,}")


def _gateway_logs() -> list[Path]:
    since = SESSION_STARTED or time.time() - 3 * 3600
    return [p for p in OUT.glob("gateway-*.log") if p.stat().st_mtime >= since]


def test_no_configured_secret_in_any_gateway_log() -> None:
    logs = _gateway_logs()
    assert logs, "no gateway log from this run: the audit would prove nothing"
    hits = [
        f"{p.name}: {s[:12]}..."
        for p in logs
        for s in SECRETS
        if s in p.read_text(errors="replace")
    ]
    assert not hits, hits


def test_nothing_key_shaped_in_any_gateway_log() -> None:
    scrub = Redactor()
    hits: list[str] = []
    for p in _gateway_logs():
        for line in p.read_text(errors="replace").splitlines():
            clean = line.replace(PLACEHOLDER, "")
            if scrub(clean) != clean or _VIRTUAL.search(clean):
                hits.append(f"{p.name}: {line[:200]}")
    assert not hits, hits[:10]
