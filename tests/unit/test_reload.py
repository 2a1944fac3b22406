"""Config reload in one process: what changed, the swap, refusals, old pools closed after their
last request, secrets of the new config redacted."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path

import yaml

from gateway.app import create_app
from gateway.catalogue.catalogue import Config
from gateway.catalogue.changes import config_changes
from gateway.catalogue.loader import load_config
from gateway.errors import ConfigError
from gateway.observability.redact import PLACEHOLDER, Redactor
from gateway.providers.openai_compat import OpenAICompatProvider
from tests.support.procs import CONFIG

SIM = "http://127.0.0.1:9"


def _load(directory: Path = CONFIG) -> Config:
    return load_config(directory, demo_simulator_url=SIM)


def _without(tmp: Path, provider: str) -> Path:
    dest = tmp / "config"
    shutil.copytree(CONFIG, dest)
    data = yaml.safe_load((CONFIG / "providers.yaml").read_text())
    del data["providers"][provider]
    (dest / "providers.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def _with_gateway(config: Config, **sections: object) -> Config:
    return dataclasses.replace(config, gateway=config.gateway.model_copy(update=sections))


def test_changes_name_deployments_applied_settings_and_what_needs_a_restart(
    tmp_path: Path,
) -> None:
    old = _load(_without(tmp_path, "together"))
    new = _load()
    gw = new.gateway
    new = _with_gateway(
        new,
        server=gw.server.model_copy(update={"port": 9999, "max_body_bytes": 1000}),
        routing=gw.routing.model_copy(update={"max_attempts": 2}),
        state=gw.state.model_copy(update={"redis_prefix": "other"}),
    )
    changes = config_changes(old, new)
    assert changes.added == ("together/glm-4.5-air", "together/glm-4.6", "together/glm-4.7")
    assert changes.removed == () and changes.modified == ()
    assert changes.applied == ("server.max_body_bytes", "routing")
    assert changes.not_applied == ("server.port", "state")
    line = changes.describe()
    assert "deployments added: together/glm-4.5-air" in line
    assert "not applied (needs a restart): server.port, state" in line
    assert config_changes(new, new).describe() == "no changes"


def test_the_redactor_learns_a_reloaded_configs_secrets_and_forgets_none() -> None:
    old, new = "sk-old-secret-7Qm2Xc9RtB4vLp8Z", "plainsecretvalue42"
    r = Redactor([old])
    assert r(f"x {new} y") == f"x {new} y"  # not a credential's shape: unknown until learnt
    r.learn([new])
    assert r(f"x {new} y") == f"x {PLACEHOLDER} y"
    assert old not in r(f"x {old} y")


async def test_a_reload_swaps_the_generation_and_a_refusal_keeps_it() -> None:
    config = _load()
    answers: list[Config | Exception] = [
        _with_gateway(
            config, routing=config.gateway.routing.model_copy(update={"max_attempts": 3})
        ),
        ConfigError("gateway.yaml: routing.max_attempts: Input should be a valid integer"),
    ]

    def load() -> Config:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    app = create_app(config, load=load)
    s = app.services
    reloader = s.reloader
    assert reloader is not None
    first = s.generation
    ok = await reloader.reload("test")
    assert ok.ok and ok.generation == 2 and ok.changes.applied == ("routing",)
    assert s.generation is not first and s.config.gateway.routing.max_attempts == 3
    assert app.routes["/v1/chat/completions"] is s.generation.routes["/v1/chat/completions"]
    bad = await reloader.reload("test")
    assert not bad.ok and bad.generation == 2
    assert bad.problems == ("gateway.yaml: routing.max_attempts: Input should be a valid integer",)
    assert s.generation.number == 2
    err = bad.error("config/").body()["error"]
    assert err["code"] == "config_invalid" and err["problems"] == list(bad.problems)
    await reloader.aclose()


async def test_old_pools_close_only_after_their_last_request() -> None:
    app = create_app(_load())
    s = app.services
    reloader = s.reloader
    assert reloader is not None
    old = s.generation
    provider = old.providers["openai"]
    assert isinstance(provider, OpenAICompatProvider)
    session = provider._get_session()  # as a request to an upstream would open it
    old.enter()  # a request in flight on the old config
    assert (await reloader.reload("test")).ok
    for _ in range(20):
        await asyncio.sleep(0)
    assert not session.closed, "closed under a request still using it"
    old.leave()
    for _ in range(20):
        await asyncio.sleep(0)
    assert session.closed
    await reloader.aclose()
