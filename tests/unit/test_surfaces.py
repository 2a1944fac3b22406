"""Provider surfaces: config, one deployment per surface, eligibility and order in the plan,
GLM plan errors, and the quota answer's reader."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.catalogue.catalogue import Config
from gateway.catalogue.loader import load_config
from gateway.catalogue.needs import resolve_needs
from gateway.errors import ConfigError
from gateway.providers.quota import QuotaReader, parse_quota, quota_sources, spent_until
from gateway.routing import failures as fl
from gateway.routing.planner import Plan, plan
from gateway.routing.router import _siblings_by_key
from gateway.simulator.plans import PlanBook

MODELS = """
variants:
  - {id: alpha, name: Alpha, released: "2025-01", context: 128000, params_total_b: 9, quality: 50}
  - {id: beta, name: Beta, released: "2025-02", context: 128000, params_total_b: 9, quality: 60}
"""
PROVIDERS = """
providers:
  zai:
    name: Z.ai
    dialect: zhipu
    base_url: https://api.example/api/paas/v4
    api_key_env: ZAI_KEY
    surfaces:
      coding:
        base_url: https://api.example/api/coding/paas/v4
        api_key_env: ZAI_PLAN_KEY
        variants: [alpha]
        quota: {url: "https://api.example/api/monitor/usage/quota/limit", interval_s: 60}
    deployments:
      - variant: alpha
        model: a
        price: {input: 1, output: 1, as_of: "2026-11", source: t}
      - variant: beta
        model: b
        price: {input: 1, output: 1, as_of: "2026-11", source: t}
  other:
    name: Other
    base_url: https://other.example/v1
    api_key_env: OTHER_KEY
    deployments:
      - variant: alpha
        model: oa
        price: {input: 0.5, output: 0.5, as_of: "2026-11", source: t}
"""
ENV = {"ZAI_KEY": "k-general", "ZAI_PLAN_KEY": "k-plan", "OTHER_KEY": "k-other"}


def load(tmp: Path, providers: str = PROVIDERS, env: dict[str, str] | None = None) -> Config:
    (tmp / "models.yaml").write_text(textwrap.dedent(MODELS))
    (tmp / "providers.yaml").write_text(textwrap.dedent(providers))
    return load_config(tmp, environ=ENV if env is None else env)


def ids(p: Plan) -> list[str]:
    return [t.id for t in p.targets]


def run(config: Config, model: str = "alpha", **needs_fields: Any) -> Plan:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    needs = resolve_needs(body, {}, config)
    for name, value in needs_fields.items():
        setattr(needs, name, value)
    return plan(needs, config.catalogue, config.gateway.routing)


def test_a_deployment_per_surface_with_its_own_url_and_key(tmp_path: Path) -> None:
    config = load(tmp_path)
    by_id = {t.id: t for t in config.catalogue.targets}
    assert set(by_id) == {"zai:coding/alpha", "zai/alpha", "zai/beta", "other/alpha"}
    plan_t, general = by_id["zai:coding/alpha"], by_id["zai/alpha"]
    assert (plan_t.surface, plan_t.base_url, plan_t.api_key) == (
        "coding",
        "https://api.example/api/coding/paas/v4",
        "k-plan",
    )
    assert (general.surface, general.api_key) == ("api", "k-general")
    assert plan_t.account != general.account
    assert plan_t.deployment == general.deployment


def test_a_provider_without_surfaces_is_unchanged(tmp_path: Path) -> None:
    config = load(tmp_path)
    other = next(t for t in config.catalogue.targets if t.provider == "other")
    assert (other.id, other.surface, other.surface_rank) == ("other/alpha", "api", 0)
    assert not config.catalogue.providers["other"].surfaces


def test_the_plan_is_tried_first_then_pay_as_you_go_of_the_same_deployment(tmp_path: Path) -> None:
    config = load(tmp_path)
    p = run(config, "alpha")
    # other/alpha is cheaper and ranks first; zai's alpha keeps its place, plan surface first
    assert ids(p) == ["other/alpha", "zai:coding/alpha", "zai/alpha"]
    # a surface that does not serve a variant is not a candidate for it
    assert ids(run(config, "beta")) == ["zai/beta"]


def test_surface_order_and_a_keys_surfaces(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        PROVIDERS.replace("    surfaces:", "    surface_order: [api, coding]\n    surfaces:"),
    )
    assert ids(run(config)) == ["other/alpha", "zai/alpha", "zai:coding/alpha"]
    assert ids(run(config, surfaces=("coding", "api"))) == [
        "other/alpha",
        "zai:coding/alpha",
        "zai/alpha",
    ]
    assert ids(run(config, surfaces=("coding",))) == ["zai:coding/alpha"]
    only_plan = load(
        tmp_path, PROVIDERS.replace("    surfaces:", "    surface_order: [coding]\n    surfaces:")
    )
    assert ids(run(only_plan)) == ["other/alpha", "zai:coding/alpha"]
    body = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
    explained = plan(
        resolve_needs(body, {}, only_plan), only_plan.catalogue, only_plan.gateway.routing
    )
    why = [r.reasons for r in explained.rejected if r.provider == "zai"]
    assert why == [("surface api is not in the provider's surface_order",)]


def test_an_unset_plan_key_skips_only_that_surface(tmp_path: Path) -> None:
    config = load(tmp_path, env={"ZAI_KEY": "k", "OTHER_KEY": "k"})
    assert "zai:coding/alpha" not in {t.id for t in config.catalogue.targets}
    assert any("surface coding: ZAI_PLAN_KEY is not set" in w for w in config.warnings)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("      coding:", "      api:"), "is not 'api'"),
        (("variants: [alpha]", "variants: [gamma]"), "has no deployment of 'gamma'"),
        (
            ("    surfaces:", "    surface_order: [coding, paygo]\n    surfaces:"),
            "'paygo' is not a surface",
        ),
        (("    surfaces:", "    surface_order: [api, api]\n    surfaces:"), "'api' is named twice"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, PROVIDERS.replace(*edit))
    assert message in str(err.value)
    assert "providers.yaml:" in str(err.value)


def test_bad_keys_and_plan_resets_hold_per_surface(tmp_path: Path) -> None:
    config = load(tmp_path, PROVIDERS.replace("        api_key_env: ZAI_PLAN_KEY\n", ""))
    siblings = _siblings_by_key(config.catalogue.targets)
    # one key on both surfaces (Z.ai): a refusal on one surface says nothing of the other
    assert siblings["zai/alpha"] == ("zai/beta",)
    assert siblings["zai:coding/alpha"] == ()


def test_glm_plan_errors() -> None:
    now = 1_780_000_000.0
    spent = fl.classify_response(
        429,
        {},
        b'{"error":{"code":"1308","message":"Usage limit reached for 5 hour. '
        b'Your limit will reset at 2026-05-28 10:00:00"}}',
        now=now,
    )
    assert spent.cls is fl.FailureClass.QUOTA and spent.reset_at is not None
    assert fl.account_wide(spent)
    weekly = fl.classify_response(
        429, {}, b'{"error":{"code":"1310","message":"reset at 2026-05-30 10:00:00"}}', now=now
    )
    assert fl.account_wide(weekly)
    wrong = fl.classify_response(
        429,
        {},
        b'{"error":{"code":"1113","message":"Insufficient balance or no resource package."}}',
        now=now,
    )
    decision = fl.decide(wrong, attempt_on_target=1, transient_retries=1)
    assert wrong.cls is fl.FailureClass.AUTH and decision.action is fl.Action.NEXT
    assert decision.mark_key_bad and not fl.account_wide(wrong)
    busy = fl.classify_response(429, {}, b'{"error":{"code":"1302","message":"busy"}}', now=now)
    assert busy.cls is fl.FailureClass.RATE_LIMIT and not fl.account_wide(busy)


def test_quota_answers() -> None:
    zai = (
        b'{"code":200,"success":true,"data":{"limits":['
        b'{"type":"TOKENS_LIMIT","unit":3,"number":5,"usage":100,"currentValue":25,'
        b'"remaining":75,"percentage":25,"nextResetTime":1780000000000},'
        b'{"type":"TIME_LIMIT","unit":1,"number":30,"usage":1000,"currentValue":100},'
        b'{"type":"TIME_LIMIT","usage":0}, "junk"]}}'
    )
    windows = parse_quota(zai)
    assert windows is not None
    assert [(w.window, w.remaining, w.resets_at) for w in windows] == [
        ("tokens_5h", 0.75, 1_780_000_000.0),
        ("time_30d", 0.9, None),
    ]
    assert parse_quota(b'{"code":401,"msg":"token expired","success":false}') is None
    assert parse_quota(b"<html>") is None
    left = parse_quota(b'{"data":{"limits":[{"type":"X","usage":"10","remaining":"2"}]}}')
    assert left is not None and left[0].remaining == pytest.approx(0.2)


def test_simulated_plan_window() -> None:
    clock = [1000.2]
    book = PlanBook(lambda: clock[0])
    book.set({"zai": {"requests": 2, "window_s": 5, "general_balance": False}})
    assert book.refuse("zai", "/zai/api/coding/paas/v4/chat/completions") is None
    assert book.refuse("zai", "/zai/coding/v1/chat/completions") is None
    spent = book.refuse("zai", "/zai/coding/v1/chat/completions")
    assert spent is not None and spent.status == 429
    failure = fl.classify_response(429, {}, orjson.dumps(spent.body), now=clock[0])
    assert failure.code == "1308" and failure.reset_at == 1006.0
    wrong = book.refuse("zai", "/zai/v1/chat/completions")
    assert wrong is not None and wrong.body["error"]["code"] == "1113"
    assert book.quota("zai")["data"]["limits"][0]["remaining"] == 0
    clock[0] = 1006.0
    assert book.refuse("zai", "/zai/coding/v1/chat/completions") is None
    assert book.refuse("other", "/other/v1/chat/completions") is None


def test_the_anthropic_style_surface_shares_the_window_and_speaks_anthropic() -> None:
    clock = [1000.2]
    book = PlanBook(lambda: clock[0])
    book.set({"zai": {"requests": 2, "window_s": 5, "general_balance": False}})
    assert book.refuse("zai", "/zai/coding/v1/chat/completions") is None
    assert book.refuse("zai", "/zai/coding/anthropic/v1/messages", "messages") is None
    spent = book.refuse("zai", "/zai/coding/anthropic/v1/messages", "messages")
    assert spent is not None and spent.status == 429
    assert spent.body["type"] == "error" and spent.body["error"]["type"] == "1308"
    assert "reset at 1970-01-01 08:16:46" in spent.body["error"]["message"]  # Beijing time
    failure = fl.classify_response(429, {}, orjson.dumps(spent.body), now=clock[0])
    assert failure.cls is fl.FailureClass.QUOTA
    assert failure.code == "1308" and failure.reset_at == 1006.0
    wrong = book.refuse("zai", "/zai/anthropic/v1/messages", "messages")
    assert wrong is not None and wrong.body["error"]["type"] == "1113"
    assert fl.classify_response(429, {}, orjson.dumps(wrong.body)).cls is fl.FailureClass.AUTH
    # Anthropic's own error types are not codes
    overloaded = b'{"type":"error","error":{"type":"overloaded_error","message":"busy"}}'
    assert fl.classify_response(529, {}, overloaded).code is None


async def test_the_reader_keeps_going_when_a_host_answers_nonsense(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load(tmp_path)
    (src,) = quota_sources(config)
    assert (src.provider, src.surface, src.api_key) == ("zai", "coding", "k-plan")
    answers = [(502, b"<html>bad gateway</html>"), (502, b"<html>bad gateway</html>"),
               (200, b'{"data":{"limits":[{"type":"TOKENS_LIMIT","percentage":100,'
                     b'"nextResetTime":1900000000000}]}}')]  # fmt: skip
    sent: list[dict[str, str]] = []
    got: list[Any] = []

    async def fetch(url: str, headers: Any, limit_s: float) -> tuple[int, bytes]:
        sent.append(dict(headers))
        return answers.pop(0)

    async def report(s: Any, windows: Any) -> None:
        got.append(windows)

    reader = QuotaReader(lambda: config, fetch, report)
    assert await reader.read(src) is None
    assert await reader.read(src) is None
    windows = await reader.read(src)
    assert windows is not None and got == [windows]
    assert spent_until(windows, 1_800_000_000.0) == 1_900_000_000.0
    assert spent_until(windows, 1_950_000_000.0) is None
    assert sent[0]["Authorization"] == "Bearer k-plan"
    said = [r.getMessage() for r in caplog.records if "plan quota" in r.getMessage()]
    assert said == ["plan quota of zai surface coding not read: HTTP 502, not a quota answer"]
