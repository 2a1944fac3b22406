"""gateway.catalogue.loader: the shipped config, strict validation, cross-checks, keys, demo."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.catalogue.loader import default_config_dir, load_config
from gateway.errors import ConfigError

SEED_IDS = [
    "glm-4.7", "glm-4.6v", "glm-4.5v", "glm-4-code-9b", "glm-4-air-4b", "glm-4-32b",
    "glm-4.7-2501", "glm-4.5", "glm-4.7-flash", "glm-4.5-air", "glm-4.6", "glm-4-extreme",
    "glm-4-air", "glm-4-flash", "glm-4-9b", "glm-4v-9b",
]  # fmt: skip
SHIPPED_PROVIDERS = {
    "zai", "bigmodel", "openrouter", "together", "fireworks", "deepinfra", "novita",
    "siliconflow", "vllm", "bedrock",
}  # fmt: skip
DEMO_URL = "http://127.0.0.1:9100"

MODELS = """
variants:
  - {id: alpha, name: Alpha, released: "2025-01", context: 128000, params_total_b: 9,
     capabilities: [structured_outputs], quality: 50}
  - {id: beta, name: Beta, released: "2024-06", context: null, params_total_b: null,
     multimodal: true, quality: 10}
"""
PROVIDERS = """
providers:
  acme:
    name: Acme
    base_url: https://acme.example/v1
    api_key_env: ACME_KEY
    headers: {X-Team: core}
    deployments:
      - {variant: alpha, model: acme-alpha, context: 32000, max_output: 4000,
         capabilities_add: [function_calling], capabilities_remove: [structured_outputs]}
      - {variant: alpha, model: acme-alpha-fast, priority: 1}
      - variant: beta
        model: acme-beta
        price: {input: 0.1, output: 0.2, as_of: "2026-11-28", source: test}
"""


def write(root: Path, **files: str) -> Path:
    for name, text in files.items():
        (root / f"{name}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    return root


@pytest.fixture
def cfg_dir(tmp_path: Path) -> Path:
    return write(tmp_path, models=MODELS, providers=PROVIDERS)


def error_of(root: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(root, environ=env or {})
    return str(info.value)


# --- the shipped config ---------------------------------------------------------------------------


def test_default_config_dir_is_the_packaged_config() -> None:
    assert default_config_dir() == Path(__file__).resolve().parents[2] / "gateway" / "config"
    assert (default_config_dir() / "models.yaml").is_file()


def test_shipped_config_has_the_16_seed_variants_in_order() -> None:
    config = load_config(default_config_dir(), environ={})
    assert list(config.catalogue.variants) == SEED_IDS
    assert list(config.catalogue.by_variant) == SEED_IDS
    assert set(config.catalogue.providers) == SHIPPED_PROVIDERS
    assert set(config.gateway.aliases) == {
        "cheap",
        "best",
        "fast",
        "vision",
        "long",
        "coding",
        "code",
    }
    assert config.gateway.auth.master_key is None
    assert config.gateway.state.redis_url is None


def test_shipped_config_in_demo_serves_every_variant() -> None:
    config = load_config(default_config_dir(), environ={}, demo_simulator_url=DEMO_URL)
    for vid in SEED_IDS:
        assert config.catalogue.targets_for(vid), vid
    assert not config.catalogue.skipped
    for target in config.catalogue.targets:
        assert target.base_url == f"{DEMO_URL}/{target.provider}/v1"
        assert target.api_key == "demo"
        assert target.adapter == "openai"
        if target.price is not None:
            assert target.price.as_of and target.price.source, target.id
    assert {t.provider for t in config.catalogue.targets} == SHIPPED_PROVIDERS


def test_shipped_provider_surfaces() -> None:
    env = {"ZAI_API_KEY": "k", "BIGMODEL_API_KEY": "k", "AWS_ACCESS_KEY_ID": "a"}
    targets = {t.id: t for t in load_config(default_config_dir(), environ=env).catalogue.targets}
    for host in ("zai", "bigmodel"):
        assert not {"function_calling", "tool_use"} & targets[f"{host}/glm-4.5v"].capabilities
        assert "code_interpreter" in targets[f"{host}/glm-4.7"].builtin_tools
        assert {"web_search", "retrieval"} <= targets[f"{host}/glm-4.6"].builtin_tools
    assert targets["zai/glm-4.5#2"].model == "glm-4.5-x"
    bedrock = targets["bedrock/glm-4.7"]
    assert bedrock.adapter == "litellm"
    assert bedrock.litellm_model == "bedrock/converse/zai.glm-4.7"
    assert dict(bedrock.litellm_params) == {"aws_region_name": "us-west-2"}


def test_shipped_config_without_keys_keeps_only_self_hosted() -> None:
    config = load_config(default_config_dir(), environ={})
    assert {t.provider for t in config.catalogue.targets} == {"vllm"}
    assert config.catalogue.targets_for("glm-4-9b")[0].base_url == "http://127.0.0.1:8000/v1"
    assert "provider zai (Z.ai): ZAI_API_KEY is not set; 11 deployments skipped" in config.warnings
    provider_lines = [w for w in config.warnings if w.startswith("provider ")]
    assert len(provider_lines) == len(SHIPPED_PROVIDERS) - 1  # one per keyed provider
    assert any(
        w.startswith("variant glm-4-extreme (GLM-4-Extreme): no deployment")
        for w in config.warnings
    )


# --- targets, keys, demo --------------------------------------------------------------------------


def test_targets_merge_variant_and_deployment(cfg_dir: Path) -> None:
    config = load_config(cfg_dir, environ={"ACME_KEY": "sk-1"})
    first, second = config.catalogue.targets_for("alpha")
    assert (first.id, second.id) == ("acme/alpha", "acme/alpha#2")
    assert first.capabilities == {"function_calling"}
    assert (first.context, first.max_output) == (32000, 4000)
    assert (second.context, second.capabilities) == (128000, {"structured_outputs"})
    assert first.api_key == "sk-1" and first.headers == (("X-Team", "core"),)
    beta = config.catalogue.targets_for("beta")[0]
    assert beta.accepts_images and beta.context is None and beta.price is not None
    assert config.warnings == ()


def test_missing_key_skips_the_provider_with_one_line(cfg_dir: Path) -> None:
    config = load_config(cfg_dir, environ={"ACME_KEY": "  "})
    assert config.catalogue.targets == ()
    assert [s.reason for s in config.catalogue.skipped] == ["ACME_KEY is not set"] * 3
    assert config.warnings == (
        "provider acme (Acme): ACME_KEY is not set; 3 deployments skipped",
        "variant alpha (Alpha): no deployment available (skipped: acme)",
        "variant beta (Beta): no deployment available (skipped: acme)",
    )


def test_demo_rewrites_urls_and_litellm(tmp_path: Path) -> None:
    write(
        tmp_path,
        models=MODELS,
        providers="""
        providers:
          rock:
            name: Rock
            adapter: litellm
            api_key_env: AWS_ACCESS_KEY_ID
            base_url: ${ROCK_URL}
            deployments:
              - {variant: alpha, model: r.alpha, litellm_model: bedrock/converse/r.alpha}
    """,
    )
    config = load_config(tmp_path, environ={}, demo_simulator_url=DEMO_URL + "/")
    target = config.catalogue.targets_for("alpha")[0]
    assert (target.adapter, target.api_key) == ("openai", "demo")
    assert target.base_url == f"{DEMO_URL}/rock/v1"
    assert config.catalogue.providers["rock"].adapter == "openai"
    assert any("rock (Rock) uses adapter litellm" in w for w in config.warnings)
    assert any("beta" in w and "none configured" in w for w in config.warnings)


def test_inline_providers_in_gateway_yaml(tmp_path: Path) -> None:
    write(tmp_path, models=MODELS, gateway=PROVIDERS)
    config = load_config(tmp_path, environ={"ACME_KEY": "k"})
    assert [t.id for t in config.catalogue.targets] == ["acme/alpha", "acme/alpha#2", "acme/beta"]


# --- interpolation --------------------------------------------------------------------------------


def test_interpolation(tmp_path: Path) -> None:
    write(
        tmp_path,
        models=MODELS,
        gateway="""
        server: {host: "${HOST}", port: "${PORT:-9000}"}
        auth: {master_key: "${MASTER:-}"}
        state: {redis_url: "redis://${RHOST:-localhost}:6379/0"}
        logging: {level: "${LEVEL:-info}"}
    """,
    )
    config = load_config(tmp_path, environ={"HOST": "0.0.0.0", "LEVEL": ""})
    gateway = config.gateway
    assert (gateway.server.host, gateway.server.port) == ("0.0.0.0", 9000)
    assert gateway.auth.master_key is None
    assert gateway.state.redis_url == "redis://localhost:6379/0"
    assert gateway.logging.level == "info"  # set but empty -> the default
    again = load_config(tmp_path, environ={"HOST": "h", "MASTER": "m"})
    assert again.gateway.auth.master_key == "m"


def test_unset_variable_names_file_key_and_variable(tmp_path: Path) -> None:
    write(tmp_path, models=MODELS, gateway="server: {host: '${GW_HOST}'}\n")
    message = error_of(tmp_path)
    assert message.startswith(f"{tmp_path / 'gateway.yaml'}:1: server.host: ")
    assert "GW_HOST is not set" in message


# --- validation errors ----------------------------------------------------------------------------


def test_unknown_key(tmp_path: Path) -> None:
    write(tmp_path, models=MODELS, gateway="server: {hots: x}\n")
    message = error_of(tmp_path)
    assert f"{tmp_path / 'gateway.yaml'}:1: server.hots: unknown key 'hots'" in message
    assert "did you mean 'host'?" in message


def test_unknown_key_in_a_deployment(cfg_dir: Path) -> None:
    text = PROVIDERS.replace("model: acme-alpha-fast", "model: m, wieght: 2")
    write(cfg_dir, providers=text)
    message = error_of(cfg_dir)
    assert "providers.yaml:11: providers.acme.deployments[1].wieght: unknown key" in message


def test_wrong_capability_lists_the_allowed_values(tmp_path: Path) -> None:
    write(tmp_path, models=MODELS.replace("[structured_outputs]", "[visoin]"))
    message = error_of(tmp_path)
    assert "models.yaml:4: variants[0].capabilities[0]: 'visoin' is not allowed" in message
    for cap in ("vision", "function_calling", "tool_use", "structured_outputs", "code_execution"):
        assert cap in message


def test_missing_and_mistyped_values(tmp_path: Path) -> None:
    write(
        tmp_path, models=MODELS.replace("quality: 50", "quality: high").replace("name: Beta, ", "")
    )
    message = error_of(tmp_path)
    assert "models.yaml:4: variants[0].quality: Input should be a valid integer" in message
    assert "models.yaml:5: variants[1].name: missing required key" in message  # the item's line


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, models=MODELS, gateway="server:\n  host: [x\n  port: 1\n")
    message = error_of(tmp_path)
    assert message.startswith(f"{tmp_path / 'gateway.yaml'}:3:")
    assert "YAML syntax error" in message


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    write(tmp_path, models=MODELS, gateway="server:\n  port: 1\n  port: 2\n")
    assert "gateway.yaml:3:3: YAML syntax error: duplicate key 'port'" in error_of(tmp_path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    write(tmp_path, models="- a\n")
    assert "models.yaml: (top level): expected a mapping, got list" in error_of(tmp_path)


def test_missing_files(tmp_path: Path) -> None:
    assert "models.yaml: file not found" in error_of(tmp_path)
    assert "config directory not found" in error_of(tmp_path / "nope")


# --- cross-checks ---------------------------------------------------------------------------------


def test_duplicate_variant_id(tmp_path: Path) -> None:
    write(tmp_path, models=MODELS.replace("id: beta", "id: alpha"))
    assert "models.yaml:5: variants[1].id: duplicate variant id 'alpha' (first at variants[0])" in (
        error_of(tmp_path)
    )


def test_deployment_of_unknown_variant(cfg_dir: Path) -> None:
    write(cfg_dir, providers=PROVIDERS.replace("variant: beta", "variant: betta"))
    message = error_of(cfg_dir)
    assert "providers.yaml:12: providers.acme.deployments[2].variant: unknown variant 'betta'" in (
        message
    )
    assert "did you mean 'beta'?" in message


def test_openai_adapter_needs_base_url(cfg_dir: Path) -> None:
    write(cfg_dir, providers=PROVIDERS.replace("base_url: https://acme.example/v1", ""))
    assert "providers.yaml:3: providers.acme.base_url: required for adapter 'openai'" in error_of(
        cfg_dir
    )


def test_empty_interpolated_base_url_counts_as_missing(cfg_dir: Path) -> None:
    write(cfg_dir, providers=PROVIDERS.replace("https://acme.example/v1", "${ACME_URL:-}"))
    assert "providers.acme.base_url: required for adapter 'openai'" in error_of(cfg_dir)


def test_litellm_adapter_needs_litellm_model(cfg_dir: Path) -> None:
    write(cfg_dir, providers=PROVIDERS.replace("name: Acme", "name: Acme\n    adapter: litellm"))
    message = error_of(cfg_dir)
    assert "providers.yaml:10: providers.acme.deployments[0].litellm_model: required" in message
    assert len(message.splitlines()) == 3  # one line per deployment


def test_provider_in_both_files(cfg_dir: Path) -> None:
    write(cfg_dir, gateway=PROVIDERS)
    assert "providers.yaml:3: providers.acme: provider 'acme' is also defined in" in error_of(
        cfg_dir
    )


@pytest.mark.parametrize(
    ("aliases", "expected"),
    [
        ("alpha: {policy: cost}", "aliases.alpha: alias name collides with the variant id"),
        ("auto: {policy: cost}", "aliases.auto: 'auto' is reserved"),
        ("glm-4: {policy: cost}", "aliases.glm-4: 'glm-4' is reserved"),
        ("code: {variants: [alpha, gamma]}", "aliases.code.variants[1]: unknown variant 'gamma'"),
        ("x: {capabilities: [sight]}", "aliases.x.capabilities[0]: 'sight' is not allowed"),
    ],
)
def test_alias_checks(tmp_path: Path, aliases: str, expected: str) -> None:
    write(tmp_path, models=MODELS, gateway=f"aliases:\n  {aliases}\n")
    assert f"gateway.yaml:2: {expected}" in error_of(tmp_path)


def test_redis_backend_needs_url(tmp_path: Path) -> None:
    write(
        tmp_path,
        models=MODELS,
        gateway="state: {backend: redis, redis_url: '${GLM_GATEWAY_REDIS_URL:-}'}\n",
    )
    assert "gateway.yaml:1: state.redis_url: required when state.backend is 'redis'" in error_of(
        tmp_path
    )
    config = load_config(tmp_path, environ={"GLM_GATEWAY_REDIS_URL": "redis://r:6379"})
    assert config.gateway.state.redis_url == "redis://r:6379"


def test_every_file_problem_at_once_with_its_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        models=MODELS.replace("quality: 10", "quality: ten"),
        gateway="server:\n  port: 8080\n  hots: x\nrouting: {default_policy: cheapest}\n",
    )
    lines = error_of(tmp_path).splitlines()
    assert lines[0].startswith(f"{tmp_path / 'gateway.yaml'}:3: server.hots: unknown key")
    assert lines[1].startswith(f"{tmp_path / 'gateway.yaml'}:4: routing.default_policy: 'cheapest'")
    assert lines[2].startswith(f"{tmp_path / 'models.yaml'}:6: variants[1].quality: ")
    assert len(lines) == 3
