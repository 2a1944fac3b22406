"""The gateway as a granian ``--factory`` target (``bench/servers.py`` only).

Built as ``glm-gateway serve --simulator URL`` builds it (config, redactor, JSON logging at
warning, the same app and lifespan), on ``GATEWAY_UPSTREAM``; the server is granian instead of
uvicorn. No drain, reload signal or header cap wiring: this measures the request path only.
"""

from __future__ import annotations

import os

from gateway.api.http import GatewayASGI
from gateway.app import build_redactor, create_app
from gateway.catalogue.catalogue import Config
from gateway.cli import resolve_config
from gateway.observability.logs import configure_logging


def gateway() -> GatewayASGI:
    upstream = os.environ["GATEWAY_UPSTREAM"]

    def load() -> Config:
        return resolve_config(os.environ.get("GATEWAY_CONFIG"), demo_simulator_url=upstream)

    config = load()
    redactor = build_redactor(config)
    configure_logging("warning", config.gateway.logging, redactor)
    return create_app(config, redactor=redactor, load=load)
