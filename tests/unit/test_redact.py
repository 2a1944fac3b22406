"""The redactor: configured secrets, echoes of part of one, credential shapes, and no more."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.catalogue.catalogue import Config, config_secrets
from gateway.catalogue.loader import load_config
from gateway.catalogue.needs import resolve_needs
from gateway.catalogue.schema import LoggingConfig
from gateway.catalogue.target import Target
from gateway.errors import UpstreamsFailed
from gateway.observability.access import LOGGER, AccessLog
from gateway.observability.logs import JSONFormatter, TextFormatter
from gateway.observability.metrics import Metrics
from gateway.observability.redact import PLACEHOLDER, Redactor
from gateway.providers.base import UpstreamResponse
from gateway.routing import failures as fl
from gateway.routing.planner import Plan
from gateway.routing.router import Attempt, Router, RouteState
from gateway.simulator.faults import echo_key, parse_rule
from gateway.state.memory import MemoryState
from tests.support.procs import CONFIG

KEY = "sk-live-7Qm2Xc9RtB4vLp8ZwK1nHy6DfJ3sGa5E"
ZHIPU = "3f9a0c6e2b7d48e1a5c0f9b2d6e4a187.Xk2Lm9Qp4Rt7Vw1Z"
R = Redactor([KEY, ZHIPU, "demo"])


def gone(text: str, *fragments: str) -> None:
    out = R(text)
    for f in fragments:
        assert f not in out, (text, out)
    assert PLACEHOLDER in out, (text, out)


# --- configured secrets ----------------------------------------------------------------------


def test_a_configured_secret_goes_wherever_it_is() -> None:
    assert R(f"Incorrect API key provided: {KEY}.") == f"Incorrect API key provided: {PLACEHOLDER}."
    gone(f"GET https://h/v1/models/{KEY}/x", KEY)
    gone(f"glued{KEY}glued", KEY, KEY[3:])
    gone(f"{ZHIPU}", ZHIPU, ZHIPU[:32], ZHIPU[33:])


@pytest.mark.parametrize(
    "echo",
    [
        f"{KEY[:14]}...",  # a prefix
        f"...{KEY[-12:]}",  # a suffix
        f"{KEY[:8]}{'*' * 20}{KEY[-4:]}",  # OpenAI's masked form
        f"{KEY[:10]}…{KEY[-9:]}",
        f"key {KEY[5:20]} in the middle",
        f"https://h/v1?k={KEY[:-3]}&x=1",
    ],
)
def test_a_host_echoing_part_of_a_secret_loses_the_whole_run(echo: str) -> None:
    out = R(f"Incorrect API key provided: {echo}. You can find your API key at ...")
    assert PLACEHOLDER in out
    for i in range(len(KEY) - 7):
        assert KEY[i : i + 8] not in out, out


def test_secrets_shorter_than_eight_characters_are_not_redacted() -> None:
    assert R("demo mode: every demo key works") == "demo mode: every demo key works"
    assert Redactor(["short"]).secrets == ()


def test_a_secret_inside_a_json_string_goes_too() -> None:
    odd = 'pa"ss\\word-1234'
    line = orjson.dumps({"message": f"bad {odd}"}).decode()
    out = Redactor([odd])(line)
    assert orjson.loads(out) == {"message": f"bad {PLACEHOLDER}"}


# --- shapes ------------------------------------------------------------------------------------

SHAPED = [
    "sk-proj-abc123DEF456ghi789JKL012",
    "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",
    "sk-glm-0123456789ab-Zk3x9Lq2Vb7Nw4Ty8Rp1Hs6Fd0Gc5Jm2Ka9Xe3Ub7Wq",
    "sk_4f7e2a9c1b8d3e6f",  # Novita
    "fw_3ZkX9q2Lm7Vb4Nw8Ty1Rp6Hs",  # Fireworks
    "tgp_v1_Zk3x9Lq2Vb7Nw4Ty8Rp1Hs6Fd0Gc5Jm2Ka9Xe3Ub7",  # Together
    "sk-abc1****************************wxyz",
    "0123456789abcdef0123456789abcdef.AbCdEfGh12345678",  # Zhipu
    "eyJhbGciOiJIUzI1NiJ9.eyJhcGlfa2V5IjoiMTIzIn0.c2lnbmF0dXJlMTIz",
    "AKIAIOSFODNN7EXAMPLE",
    "AIzaSyA1234567890abcdefghijklmnopqrstu",
    "abcd************wxyz",
]


@pytest.mark.parametrize("token", SHAPED)
def test_key_shapes_go_without_being_configured(token: str) -> None:
    out = Redactor()(f"upstream said: {token}, try again")
    assert out == f"upstream said: {PLACEHOLDER}, try again"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("Authorization: Bearer abc123def456ghi789", "Authorization: Bearer "),
        ("headers={'Authorization': 'Basic dXNlcjpwYXNzMTIz'}", "'Authorization': 'Basic "),
        ('{"api_key": "9f8e7d6c5b4a39281706f5e4d3c2b1a0", "x": 1}', '{"api_key": "'),
        ("x-api-key: 9f8e7d6c5b4a39281706", "x-api-key: "),
        ("https://h/v1/chat?key=9f8e7d6c5b4a3928&alt=sse", "https://h/v1/chat?key="),
        ("access_token=ya29.a0AfH6SMBx7Yq", "access_token="),
        ("Invalid API key provided: 9f8e7d6c5b4a39281706f5e4", "Invalid API key provided: "),
        ("redis://default:hunter2hunter2@10.0.0.5:6379/0", "redis://default:"),
    ],
)
def test_values_after_key_words_and_schemes_go(text: str, kept: str) -> None:
    out = Redactor()(text)
    assert kept + PLACEHOLDER in out and text.split(kept)[1][:6] not in out, out


NOT_SECRETS = [
    "req_7f3a9c2e4b1d",
    "request_id: 20261129100000abcdef0123",
    "chatcmpl-8f3e2a1b9c0d4e5f6a7b8c9d0e1f2a3b",
    "chatcmpl-simab12cd0000001f",
    "123e4567-e89b-12d3-a456-426614174000",
    "trace 4bf92f3577b34da6a3ce929d0e0e4736",
    "digest sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "glm-4.7 zai-org/GLM-4.5-Air THUDM/GLM-4-32B-0414 zai.glm-4.7-flash",
    "bedrock/converse/zai.glm-4.7",
    "deployment zai/glm-4.7#2 failed: rate_limit 429 code=1302",
    "This model's maximum context length is 131072 tokens. However, you requested 140000 tokens",
    "max_tokens: 131072000, prompt_tokens=12, total_tokens: 4096",
    "Your limit will reset at 2026-11-29 10:00:00",
    "Basic authentication failed; Bearer authentication required",
    "Bearer token missing; the key is invalid",
    "task-1234567890abcdef and desk_9f8e7d6c5b4a3928",
    "https://api.z.ai/api/paas/v4/chat/completions",
    "您的账户已欠费（余额不足），请充值后重试。",
    "key_id=master status=401 sk-test",
    "**bold** and ***bold italic*** and ----",
    PLACEHOLDER,
]


@pytest.mark.parametrize("text", NOT_SECRETS)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert R(text) == text


@pytest.mark.parametrize("text", [*SHAPED, f"x {KEY} y", "Bearer abc123def456ghi789"])
def test_redacting_twice_changes_nothing_more(text: str) -> None:
    assert R(R(text)) == R(text)


# --- failures and the router -------------------------------------------------------------------


def test_a_failure_keeps_everything_but_the_secret() -> None:
    f = fl.classify_response(401, {}, orjson.dumps({"error": {"message": f"bad key {KEY}"}}))
    clean = fl.redacted(f, R)
    assert clean.message == f"bad key {PLACEHOLDER}"
    assert (clean.cls, clean.status, clean.note) == (f.cls, f.status, f.note)
    plain = fl.Failure(fl.FailureClass.TRANSIENT, 500, "500", "internal error")
    assert fl.redacted(plain, R) is plain


def test_an_exception_quoting_a_url_with_a_key_is_redacted() -> None:
    exc = ConnectionError(f"Cannot connect to https://h/v1?api_key={KEY} [Errno 111]")
    clean = fl.redacted(fl.classify_exception(exc), R)
    assert KEY not in clean.message and "Errno 111" in clean.message


class EchoingHost:
    """A provider seam that answers 401 repeating the key it was given, as some hosts do."""

    async def send(self, target: Target, body: dict[str, Any], **_: Any) -> UpstreamResponse:
        msg = f"Incorrect API key provided: {target.api_key}. Masked: {str(target.api_key)[:8]}***"
        return UpstreamResponse(401, {}, orjson.dumps({"error": {"message": msg, "code": None}}))

    async def aclose(self) -> None:
        return None


def write_config(tmp: Path, providers: str, gateway: str = "") -> Path:
    (tmp / "models.yaml").write_text((CONFIG / "models.yaml").read_text())
    (tmp / "providers.yaml").write_text(providers)
    (tmp / "gateway.yaml").write_text(gateway)
    return tmp


PROVIDERS = """
providers:
  zai:
    name: Z.ai
    dialect: zhipu
    base_url: http://127.0.0.1:9/zai/v1
    api_key_env: ZAI_API_KEY
    headers:
      {X-Title: my-app, X-Api-Token: "tok-9f8e7d6c5b4a", Authorization: "Bearer hdr-123456789"}
    deployments: [{variant: glm-4.7, model: glm-4.7}, {variant: glm-4.6, model: glm-4.6}]
  bedrock:
    name: Amazon Bedrock
    adapter: litellm
    api_key_env: AWS_ACCESS_KEY_ID
    litellm_params: {aws_region_name: us-west-2, aws_secret_access_key: "wJalrXUtnFEMI/K7MDENG"}
    deployments:
      - {variant: glm-4.7, model: zai.glm-4.7, litellm_model: bedrock/converse/zai.glm-4.7}
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    gateway = """
auth: {master_key: master-key-0123456789}
state: {redis_url: "redis://:redis-pass-42@127.0.0.1:6379/0"}
logging: {redact: ["operator-listed-secret", ""]}
"""
    env = {"ZAI_API_KEY": KEY, "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE"}
    return load_config(write_config(tmp_path, PROVIDERS, gateway), environ=env)


def test_config_secrets_are_every_secret_the_config_holds(config: Config) -> None:
    env = {"AWS_SECRET_ACCESS_KEY": "aws-secret-from-env", "HOME": "/root"}
    found = set(config_secrets(config, env))
    assert found == {
        KEY,
        "AKIAIOSFODNN7EXAMPLE",
        "tok-9f8e7d6c5b4a",
        "Bearer hdr-123456789",
        "hdr-123456789",
        "wJalrXUtnFEMI/K7MDENG",
        "aws-secret-from-env",
        "master-key-0123456789",
        "redis-pass-42",
        "operator-listed-secret",
    }


def test_a_targets_repr_holds_no_key_and_no_header(config: Config) -> None:
    shown = repr(config.catalogue.targets)
    assert KEY not in shown and "tok-9f8e7d6c5b4a" not in shown and "wJalrXUtnFEMI" not in shown


async def test_the_router_records_attempts_without_the_echoed_key(config: Config) -> None:
    router = Router(
        config,
        {"openai": EchoingHost()},  # type: ignore[dict-item]
        MemoryState(config.gateway.breaker),
        redactor=Redactor(config_secrets(config, {})),
    )
    body = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}
    needs = resolve_needs(body, {"x-glm-providers": "zai"}, config)
    rs = await router.admit(needs, None)
    with pytest.raises(UpstreamsFailed) as ei:
        await router.complete(body, rs, router.deadline(needs))
    described = orjson.dumps([a.describe() for a in rs.attempts]).decode()
    seen = ei.value.body_bytes().decode() + str(rs.fallback_reason) + described + repr(rs)
    assert rs.attempts and PLACEHOLDER in seen
    assert KEY not in seen and KEY[:8] not in seen and KEY[8:16] not in seen


# --- logs ----------------------------------------------------------------------------------------


def error_record(msg: str) -> logging.LogRecord:
    try:
        raise RuntimeError(f"upstream refused key {KEY}")
    except RuntimeError:
        info = sys.exc_info()
    return logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, msg, None, info)


@pytest.mark.parametrize("formatter", [JSONFormatter(R), TextFormatter(R)], ids=["json", "text"])
def test_log_records_lose_secrets_in_message_and_traceback(formatter: logging.Formatter) -> None:
    out = formatter.format(error_record(f"calling with Authorization: Bearer {KEY}"))
    assert KEY not in out and KEY[:12] not in out
    assert "RuntimeError: upstream refused key" in out and PLACEHOLDER in out


def test_the_default_formatters_redact_key_shapes() -> None:
    out = JSONFormatter().format(error_record("x-api-key: 9f8e7d6c5b4a39281706"))
    assert "9f8e7d6c5b4a39281706" not in out and KEY not in out


@pytest.fixture
def captured() -> Iterator[list[str]]:
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger(LOGGER)
    handler = Keep()
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old)


def test_a_failed_requests_access_line_and_a_logged_prompt_are_redacted(
    config: Config, captured: list[str]
) -> None:
    target = config.catalogue.targets[0]
    rs = RouteState(Plan(candidates=[]))
    echo = fl.Failure(fl.FailureClass.AUTH, 401, None, f"key {KEY} (not redacted upstream)")
    rs.attempts = [Attempt(target, 401, echo, 0.01)]
    log = AccessLog(Metrics(), log_prompts=True, redactor=R)
    prompt = [{"role": "user", "content": f"my key is {KEY}"}]
    log.emit(request_id="req_1", key_id="master", status=502, stream=False, duration_s=0.1,
             rs=rs, error="all_upstreams_failed", prompt=prompt)  # fmt: skip
    line = orjson.loads(captured[0])  # still JSON
    assert KEY not in captured[0]
    assert line["attempts"][0]["message"].startswith(f"key {PLACEHOLDER}")
    assert line["prompt"][0]["content"] == f"my key is {PLACEHOLDER}"
    assert line["request_id"] == "req_1" and line["attempts"][0]["class"] == "auth"


def test_logging_config_takes_an_operator_list() -> None:
    assert LoggingConfig(redact=("a", "b")).redact == ("a", "b")


# --- the simulator's echo ------------------------------------------------------------------------


def test_the_simulator_can_echo_the_key_it_received() -> None:
    rule = parse_rule(
        {
            "status": 401,
            "message": "Incorrect API key provided: {api_key}.",
            "stream_error": {"code": "x", "message": "key {api_key} expired"},
        }
    )
    echoed = echo_key(rule, f"Bearer {KEY}")
    assert echoed is not None
    assert echoed.message == f"Incorrect API key provided: {KEY}."
    assert echoed.stream_error == {"code": "x", "message": f"key {KEY} expired"}
    plain = parse_rule({"status": 500})
    assert echo_key(plain, f"Bearer {KEY}") is plain and echo_key(None, None) is None
