"""``X-Forwarded-For`` is believed only from ``server.trusted_proxies``: the access log's
``client`` is the peer otherwise, so a client cannot claim another address."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.e2e import AUTH, module_gateway, nonce, text_msg, wait_log_for
from tests.support.procs import Proc


@pytest.fixture(scope="module")
def untrusting(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with module_gateway(simulator, tmp_path_factory.mktemp("xff0")) as proc:
        yield proc


@pytest.fixture(scope="module")
def behind_proxy(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp: Path = tmp_path_factory.mktemp("xff1")
    with module_gateway(simulator, tmp, server={"trusted_proxies": ["127.0.0.0/8"]}) as proc:
        yield proc


def client_logged(gw: Proc, xff: str | None) -> Any:
    rid = "req-" + nonce()
    headers = {**AUTH, "X-Request-Id": rid}
    if xff is not None:
        headers["X-Forwarded-For"] = xff
    body = {"model": "auto", "messages": text_msg("hi")}
    r = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert r.status_code == 200
    return wait_log_for(gw, rid)["client"]


def test_forwarded_for_is_ignored_from_an_untrusted_peer(untrusting: Proc) -> None:
    assert client_logged(untrusting, None) == "127.0.0.1"
    assert client_logged(untrusting, "203.0.113.7") == "127.0.0.1"


def test_a_trusted_proxy_names_the_client(behind_proxy: Proc) -> None:
    assert client_logged(behind_proxy, "203.0.113.7") == "203.0.113.7"
    # the right-most hop that is not a trusted proxy; a spoofed left part is not believed
    assert client_logged(behind_proxy, "198.51.100.1, 203.0.113.7, 127.0.0.5") == "203.0.113.7"
    assert client_logged(behind_proxy, "not-an-ip") == "invalid"
    assert client_logged(behind_proxy, None) == "127.0.0.1"
