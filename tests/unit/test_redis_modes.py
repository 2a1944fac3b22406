"""Choosing the Redis mode: one server, Sentinel or Cluster, from the environment or the config;
exactly one, with node lists checked, each problem named; ``check-config`` says which."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.catalogue.catalogue import config_secrets
from gateway.catalogue.loader import load_config
from gateway.catalogue.schema import BreakerConfig, StateConfig
from gateway.cli import main, resolve_config
from gateway.state.base import DeploymentAsk, Ticket
from gateway.state.redis import RedisState
from gateway.state.redis_target import RedisTarget, parse_nodes, redis_mode, redis_target
from tests.support.procs import free_port
from tests.unit.test_loader import MODELS, error_of, write

REDIS_VARS = [
    "GLM_GATEWAY_REDIS_URL",
    "GLM_GATEWAY_REDIS_SENTINELS",
    "GLM_GATEWAY_REDIS_SENTINEL_SERVICE",
    "GLM_GATEWAY_REDIS_CLUSTER_NODES",
    "GLM_GATEWAY_REDIS_USERNAME",
    "GLM_GATEWAY_REDIS_PASSWORD",
    "GLM_GATEWAY_REDIS_SENTINEL_PASSWORD",
    "GLM_GATEWAY_CONFIG_DIR",
]


@pytest.fixture(autouse=True)
def no_redis_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in REDIS_VARS:
        monkeypatch.delenv(var, raising=False)


def test_node_lists_parse_hosts_ipv6_and_spaces() -> None:
    nodes = parse_nodes(" r1:7000, 10.0.0.2:7001,[::1]:7002,", "x")
    assert nodes == (("r1", 7000), ("10.0.0.2", 7001), ("::1", 7002))


@pytest.mark.parametrize(
    ("text", "bad"),
    [("r1", "'r1'"), ("r1:0", "'r1:0'"), ("r1:70000", "'r1:70000'"), ("r1:7000,:7001", "':7001'")],
)
def test_a_bad_node_is_named(text: str, bad: str) -> None:
    with pytest.raises(ValueError, match=f"nodes: {bad} is not host:port"):
        parse_nodes(text, "nodes")


def test_an_empty_node_list_is_refused() -> None:
    with pytest.raises(ValueError, match="nodes: empty"):
        parse_nodes(" , ", "nodes")


def test_each_mode_and_its_key_prefix() -> None:
    cluster = redis_target(StateConfig(backend="redis", redis_cluster_nodes="a:1,b:2"))
    assert cluster == RedisTarget("cluster", nodes=(("a", 1), ("b", 2)))
    assert cluster.key_prefix("glmgw") == "{glmgw}"  # one hash tag: one slot
    assert cluster.describe() == "cluster via a:1,b:2"
    sentinel = redis_target(StateConfig(backend="redis", redis_sentinels="s:26379"))
    assert sentinel == RedisTarget("sentinel", nodes=(("s", 26379),), service="mymaster")
    assert sentinel.key_prefix("glmgw") == "glmgw"  # what an upgrade finds from before
    single = redis_target(StateConfig(backend="redis", redis_url="redis://:pw@r:6380/2"))
    assert single is not None and single.describe() == "r:6380/2"  # never the password
    assert redis_mode(StateConfig(backend="redis", redis_sentinels="s:1")) == "sentinel"
    assert redis_mode(StateConfig()) is None


def test_two_modes_in_the_config_name_both_keys_at_their_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        models=MODELS,
        gateway="state:\n  backend: redis\n  redis_url: redis://r:6379\n"
        "  redis_cluster_nodes: c1:7000\n",
    )
    err = error_of(tmp_path)
    assert "gateway.yaml:4: state.redis_cluster_nodes: set together with state.redis_url" in err
    assert "exactly one of redis_url (GLM_GATEWAY_REDIS_URL)" in err


def test_a_bad_node_list_in_the_config_is_named_at_its_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        models=MODELS,
        gateway="state:\n  backend: redis\n  redis_sentinels: 's1:26379,s2'\n",
    )
    assert "gateway.yaml:3: state.redis_sentinels: 's2' is not host:port" in error_of(tmp_path)


def test_a_sentinel_backend_needs_no_url(tmp_path: Path) -> None:
    write(
        tmp_path,
        models=MODELS,
        gateway="state: {backend: redis, redis_sentinels: 's1:26379', "
        "redis_sentinel_service: cache}\n",
    )
    target = redis_target(load_config(tmp_path).gateway.state)
    assert target == RedisTarget("sentinel", nodes=(("s1", 26379),), service="cache")


def test_the_environment_chooses_the_mode_and_check_config_says_which(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["init", str(tmp_path)]) == 0
    capsys.readouterr()
    monkeypatch.setenv("GLM_GATEWAY_REDIS_CLUSTER_NODES", "10.0.0.1:7000,10.0.0.2:7000")
    assert main(["check-config", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "  state: redis cluster: cluster via 10.0.0.1:7000,10.0.0.2:7000; " in out
    monkeypatch.delenv("GLM_GATEWAY_REDIS_CLUSTER_NODES")
    monkeypatch.setenv("GLM_GATEWAY_REDIS_SENTINELS", "10.0.0.3:26379")
    monkeypatch.setenv("GLM_GATEWAY_REDIS_SENTINEL_SERVICE", "gw")
    assert main(["check-config", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "  state: redis sentinel: sentinel service 'gw' via 10.0.0.3:26379; " in out


def test_two_modes_in_the_environment_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["init", str(tmp_path)]) == 0
    capsys.readouterr()
    monkeypatch.setenv("GLM_GATEWAY_REDIS_URL", "redis://r:6379/0")
    monkeypatch.setenv("GLM_GATEWAY_REDIS_CLUSTER_NODES", "c1:7000")
    assert main(["check-config", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "environment: state.redis_cluster_nodes: set together with state.redis_url" in err
    monkeypatch.delenv("GLM_GATEWAY_REDIS_URL")
    monkeypatch.setenv("GLM_GATEWAY_REDIS_CLUSTER_NODES", "c1")
    assert main(["check-config", str(tmp_path)]) == 1
    assert "state.redis_cluster_nodes: 'c1' is not host:port" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["single", "sentinel", "cluster"])
async def test_no_redis_answering_in_any_mode_serves_from_local_state(mode: str) -> None:
    """Nothing listens at the addresses: every call is answered from local state, none
    raises (a Cluster's "cannot be connected" included), and the backend says degraded."""
    where = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    target = (
        RedisTarget("single", url=f"redis://{where.split(',')[0]}/0")
        if mode == "single"
        else RedisTarget(mode, nodes=parse_nodes(where, "nodes"))  # type: ignore[arg-type]
    )
    state = RedisState(target, BreakerConfig(), timeout_ms=200, prefix="gone")
    try:
        view = await state.before(Ticket((DeploymentAsk("zai/glm-4.7"),), 10), time.time())
        assert view.degraded and view.lease is not None and not view.lease.shared
        for _ in range(100):  # the failed call may land after its timeout on a busy machine
            if state.degraded:
                break
            await asyncio.sleep(0.05)
        assert state.degraded
        assert await state.ping() is False
        assert await state.list_keys() == []
        assert await state.get_pin("s", time.time()) is None
    finally:
        await state.aclose()


def test_credentials_from_the_environment_apply_to_the_configs_mode_and_are_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["init", str(tmp_path)]) == 0
    text = (tmp_path / "gateway.yaml").read_text()
    (tmp_path / "gateway.yaml").write_text(
        text.replace(
            "  backend: memory\n", "  backend: redis\n  redis_sentinels: s1:26379,s2:26379\n"
        ).replace("redis_url: ${GLM_GATEWAY_REDIS_URL:-}", "redis_url:")
    )
    monkeypatch.setenv("GLM_GATEWAY_REDIS_USERNAME", "gw")
    monkeypatch.setenv("GLM_GATEWAY_REDIS_PASSWORD", "data-secret-1")
    monkeypatch.setenv("GLM_GATEWAY_REDIS_SENTINEL_PASSWORD", "sentinel-secret-2")
    config = resolve_config(str(tmp_path))
    target = redis_target(config.gateway.state)
    assert target is not None and target.mode == "sentinel"  # the config's mode stands
    assert target.credentials() == {"username": "gw", "password": "data-secret-1"}
    assert target.sentinel_password == "sentinel-secret-2"
    assert {"data-secret-1", "sentinel-secret-2"} <= set(config_secrets(config, {}))
    for text in (repr(target), target.describe()):
        assert "secret" not in text
    assert main(["check-config", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "secret" not in out.out + out.err
    assert "sentinel service 'mymaster' via s1:26379,s2:26379" in out.out


def test_credentials_alone_choose_no_redis(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A password without a Redis mode leaves the memory backend as it is."""
    assert main(["init", str(tmp_path)]) == 0
    monkeypatch.setenv("GLM_GATEWAY_REDIS_PASSWORD", "pw")
    config = resolve_config(str(tmp_path))
    assert config.gateway.state.backend == "memory" and redis_target(config.gateway.state) is None
