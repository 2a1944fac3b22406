"""With auth on, the admin API and the dashboard's data answer the master key only, through the
real server: no key is 401, a virtual key or a wrong key is 403 / 401, the master key works."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.e2e import AUTH, module_gateway
from tests.support.procs import Proc

ADMIN = [
    ("POST", "/admin/keys", {"name": "x"}),
    ("GET", "/admin/keys", None),
    ("GET", "/admin/keys/kid_nope", None),
    ("DELETE", "/admin/keys/kid_nope", None),
    ("GET", "/dashboard/data", None),
]


@pytest.fixture(scope="module")
def gw(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp: Path = tmp_path_factory.mktemp("acl")
    with module_gateway(simulator, tmp) as proc:
        yield proc


@pytest.fixture(scope="module")
def virtual_key(gw: Proc) -> str:
    r = httpx.post(gw.url + "/admin/keys", json={"name": "team"}, headers=AUTH, timeout=30)
    assert r.status_code in (200, 201), r.text
    return str(r.json()["key"])


@pytest.mark.parametrize(("method", "path", "body"), ADMIN)
def test_master_key_only(gw: Proc, virtual_key: str, method: str, path: str, body: object) -> None:
    def call(headers: dict[str, str]) -> httpx.Response:
        return httpx.request(method, gw.url + path, json=body, headers=headers, timeout=30)

    assert call({}).status_code == 401
    assert call({"Authorization": "Bearer sk-glm-forged"}).status_code in (401, 403)
    refused = call({"Authorization": f"Bearer {virtual_key}"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    assert call(AUTH).status_code in (200, 201, 404)  # 404: no such key, but allowed to ask


def test_a_virtual_key_still_serves_chat(gw: Proc, virtual_key: str) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {virtual_key}"},
        timeout=30,
    )
    assert r.status_code == 200
