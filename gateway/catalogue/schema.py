"""Config file schema: what may appear in ``gateway/config/*.yaml`` (or in a copy of it).

Every model is strict (unknown keys are errors) and frozen. The loader (``loader.py``) turns
these file-shaped models into the runtime :class:`gateway.catalogue.catalogue.Catalogue`.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Capability = Literal[
    "vision", "function_calling", "tool_use", "structured_outputs", "code_execution"
]
CAPABILITIES: tuple[str, ...] = (
    "vision",
    "function_calling",
    "tool_use",
    "structured_outputs",
    "code_execution",
)
Policy = Literal["cost", "latency", "quality", "newest"]
POLICIES: tuple[str, ...] = ("cost", "latency", "quality", "newest")
FallbackMode = Literal["none", "providers", "variants"]
FALLBACK_MODES: tuple[str, ...] = ("none", "providers", "variants")
Adapter = Literal["openai", "litellm"]
# How a host's surface differs from OpenAI's (request adaptation and response normalisation).
Dialect = Literal["openai", "zhipu", "openrouter", "siliconflow", "vllm"]
BuiltinTool = Literal["web_search", "retrieval", "code_interpreter", "mcp"]

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- models.yaml -------------------------------------------------------------------------------


class Variant(Strict):
    """One GLM-4 variant of the catalogue (the seed's Specifications table)."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    name: str
    released: str = Field(pattern=r"^\d{4}-\d{2}$")
    context: PositiveInt | None
    """Context window in tokens; ``None`` where the seed says "—"."""
    max_output: PositiveInt | None = None
    params_total_b: PositiveFloat | None
    params_active_b: PositiveFloat | None = None
    capabilities: frozenset[Capability] = frozenset()
    multimodal: bool = False
    """The seed's "Multimodal" flag: accepts image input even where "Vision" says No."""
    thinking: bool = False
    """Accepts the thinking switch (GLM-4.5 and later)."""
    quality: Annotated[int, Field(ge=0, le=100)]
    """The gateway's relative quality rank for the ``quality`` policy (higher is better)."""
    note: str | None = None

    @property
    def accepts_images(self) -> bool:
        return "vision" in self.capabilities or self.multimodal


class ModelsFile(Strict):
    variants: list[Variant]


# --- providers -----------------------------------------------------------------------------------


class Price(Strict):
    """USD per 1M tokens, with where and when the figure was read."""

    input: Annotated[float, Field(ge=0)]
    output: Annotated[float, Field(ge=0)]
    cached_input: Annotated[float, Field(ge=0)] | None = None
    as_of: str = Field(pattern=r"^\d{4}-\d{2}(-\d{2})?$")
    source: str


class Deployment(Strict):
    """One variant served by one provider under the provider's own model id."""

    variant: str
    model: str
    """The provider's model id, sent upstream as ``model``."""
    litellm_model: str | None = None
    """For ``adapter: litellm``: the LiteLLM route, e.g. ``bedrock/converse/zai.glm-4.7``."""
    price: Price | None = None
    context: PositiveInt | None = None
    """The provider's effective window when it differs from the variant's."""
    max_output: PositiveInt | None = None
    capabilities_add: frozenset[Capability] = frozenset()
    capabilities_remove: frozenset[Capability] = frozenset()
    builtin_tools: frozenset[BuiltinTool] = frozenset()
    """Host-side tools this surface runs (``web_search``, ``retrieval`` ...)."""
    weight: PositiveInt = 1
    priority: int = 0
    """Lower is tried first among deployments of one variant with equal score."""
    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    timeout: PositiveFloat | None = None
    note: str | None = None


DEFAULT_SURFACE: Final = "api"
"""The surface a provider's own ``base_url`` / ``api_key_env`` describe (every provider has it)."""


class QuotaConfig(Strict):
    """Where a surface's host tells what is left of its plan quota (read on a schedule only)."""

    url: str
    """``GET`` with the surface's key, e.g. Z.ai's ``https://api.z.ai/api/monitor/usage/quota/limit``
    (undocumented by Z.ai; community tools read it; the reader tolerates shape changes)."""
    interval_s: Annotated[float, Field(ge=1)] = 300.0
    timeout_s: PositiveFloat = 10.0


class Surface(Strict):
    """Another way into the same provider: its own base URL, key, variants and quota.

    Z.ai and BigModel sell a Coding Plan: a prepaid subscription with 5-hour and weekly
    windows, served at its own base URL (``/api/coding/paas/v4``) and not at the general one.
    """

    base_url: str | None = None
    """Defaults to the provider's ``base_url`` (adapter ``openai`` needs one of the two)."""
    anthropic_base_url: str | None = None
    api_key_env: str | None = None
    """Defaults to the provider's ``api_key_env`` (Z.ai: one key serves both surfaces)."""
    variants: tuple[str, ...] | None = None
    """The variants this surface serves (among the provider's deployments); all when absent.
    A surface that does not serve a variant is never a candidate for it."""
    quota: QuotaConfig | None = None

    @field_validator("base_url", "anthropic_base_url")
    @classmethod
    def _no_trailing_slash(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v


class ProviderConfig(Strict):
    name: str
    adapter: Adapter = "openai"
    dialect: Dialect = "openai"
    base_url: str | None = None
    api_key_env: str | None = None
    """Env var holding the key; ``None`` for hosts that take none (self-hosted vLLM)."""
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: PositiveFloat | None = None
    litellm_params: dict[str, Any] = Field(default_factory=dict)
    anthropic_base_url: str | None = None
    """The host's own Anthropic Messages endpoint (``POST {anthropic_base_url}/v1/messages``,
    e.g. Z.ai's ``https://api.z.ai/api/anthropic``): a Messages request routed to one of this
    provider's deployments is forwarded there as sent (model id set), with the client's
    ``anthropic-version`` / ``anthropic-beta``, instead of being translated to chat."""
    deployments: list[Deployment]
    surfaces: dict[str, Surface] = Field(default_factory=dict)
    """More surfaces besides the default one (``api``: this provider's own base URL and key),
    e.g. ``coding`` for a Coding Plan. Each deployment is served on every surface that lists
    its variant."""
    surface_order: tuple[str, ...] | None = None
    """The order surfaces of one deployment are tried in, unless a virtual key names its own
    (``surfaces``); a surface left out is not used by default. Default: the ``surfaces`` in
    the order written, then ``api`` (a plan first, pay-as-you-go when its window is spent)."""
    quota: QuotaConfig | None = None
    """The default surface's quota endpoint, when it has one."""

    @property
    def surface_names(self) -> tuple[str, ...]:
        """Surfaces in default order."""
        if self.surface_order is not None:
            return self.surface_order
        return (*self.surfaces, DEFAULT_SURFACE)

    @field_validator("base_url", "anthropic_base_url")
    @classmethod
    def _no_trailing_slash(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v


class ProvidersFile(Strict):
    providers: dict[str, ProviderConfig]


# --- gateway.yaml --------------------------------------------------------------------------------


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    max_body_bytes: PositiveInt = 20 * 1024 * 1024
    max_header_bytes: PositiveInt = 32 * 1024
    """Request line + headers; larger requests get 431."""
    shutdown_grace_s: Annotated[float, Field(ge=0)] = 5.0
    """After SIGTERM/SIGINT: ``/readyz`` says 503 at once while the gateway keeps serving this
    long, so load balancers take it out of rotation before it stops accepting."""
    drain_timeout_s: Annotated[float, Field(ge=0)] = 30.0
    """Then: no new connections; in-flight requests and streams get this long to finish; any
    still running end with an error event (streams) or a 503, and the process exits 0."""
    max_in_flight: PositiveInt = 1024
    """Requests handled at once by one process; past it requests wait (bounded, below)."""
    max_queued: Annotated[int, Field(ge=0)] = 256
    """Requests that may wait for an in-flight slot; more are shed at once with 503."""
    queue_timeout_s: Annotated[float, Field(ge=0)] = 1.0
    """Longest wait for an in-flight slot before 503 with ``Retry-After``."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or CIDR ranges whose ``X-Forwarded-For`` / ``X-Forwarded-Proto`` are believed;
    from anyone else those headers are ignored."""


class RequestLimits(Strict):
    """Caps on what one request may make the process hold; each breach is a clear 4xx."""

    max_messages: PositiveInt = 5000
    max_images: PositiveInt = 100
    """Image parts per request."""
    max_image_bytes: PositiveInt = 10 * 1024 * 1024
    """One inline (``data:``) image, decoded size."""
    max_image_url_chars: PositiveInt = 8192
    """One image given by URL (not ``data:``)."""
    max_json_depth: PositiveInt = 64
    """Nesting of objects and arrays in the body."""
    max_tools: PositiveInt = 512


class SpreadConfig(Strict):
    """Load shared among deployments the policy ranks as equivalent (``gateway.routing.spread``)."""

    enabled: bool = False
    """Off: equivalent deployments are tried in ``weight`` order (a tie-break only)."""
    tolerance: Annotated[float, Field(ge=0, le=10)] = 0.0
    """Equivalent when the cost (and for ``latency`` the latency) is within this fraction of
    the best in its group: 0 = exactly equal, 0.05 = within 5%."""
    in_flight: bool = True
    """Prefer the member with the fewest requests in flight per unit of weight, counted across
    replicas in shared state (one sorted set per spread deployment), and weigh each member's
    headroom under its own rpm / tpm (read from the same state call)."""
    price_weighted: bool = False
    """Policy ``cost``: weight x (cheapest cost / this one's)², OpenRouter's price-weighted
    balancing; use with a wide ``tolerance``."""


class AffinityConfig(Strict):
    """Session affinity: one agent session's requests go to one deployment (its prompt cache)."""

    enabled: bool = True
    ttl_s: PositiveFloat = 300.0
    """How long a pin lives after the session's last answer (a host's prompt-cache lifetime)."""
    provider_ttl_s: dict[str, PositiveFloat] = {}
    """Per provider id: its own cache lifetime, in place of ``ttl_s``."""
    prefix_messages: Annotated[int, Field(ge=1, le=64)] = 1
    """Without a session id: the key is a hash of the system messages and this many of the
    messages after them (the part of the prompt that stays the same turn after turn)."""


class RoutingConfig(Strict):
    default_policy: Policy = "cost"
    default_fallback: FallbackMode = "variants"
    default_output_reserve: PositiveInt = 4096
    """Output tokens assumed for the context need when a request sets no max_tokens."""
    unknown_context_floor: PositiveInt = 8192
    """A variant whose context is unknown serves only context needs up to this many tokens."""
    max_attempts: PositiveInt = 8
    transient_retries: Annotated[int, Field(ge=0, le=3)] = 1
    """Retries on the same deployment after a transient failure, before moving on."""
    retry_backoff_s: Annotated[float, Field(ge=0)] = 0.05
    max_retry_after_s: Annotated[float, Field(ge=0)] = 2.0
    """Longest ``Retry-After`` the gateway waits in-request before moving to the next candidate."""
    connect_timeout_s: PositiveFloat = 5.0
    attempt_timeout_s: PositiveFloat = 120.0
    ttft_timeout_s: PositiveFloat = 30.0
    """Streams: longest wait for the first content token before falling over."""
    stream_idle_timeout_s: PositiveFloat = 60.0
    """Streams: longest silence between two chunks once the answer has started."""
    total_timeout_s: PositiveFloat = 300.0
    """Per request, streams included to their last byte; X-GLM-Timeout may lower it."""
    spread: SpreadConfig = SpreadConfig()
    affinity: AffinityConfig = AffinityConfig()


BudgetPeriod = Literal["hour", "day", "week", "month", "total"]
BUDGET_PERIODS: tuple[str, ...] = ("hour", "day", "week", "month", "total")


class KeyLimits(Strict):
    """Limits of a virtual key; ``auth.key_defaults`` fills what a new key does not set."""

    rpm: PositiveInt | None = None
    """Requests per minute (sliding 60 s window)."""
    tpm: PositiveInt | None = None
    """Tokens per minute: reserved from the estimate, settled from ``usage``."""
    budget_usd: Annotated[float, Field(ge=0)] | None = None
    """Spend allowed per ``budget_period`` (usage x the deployment's price)."""
    budget_period: BudgetPeriod = "month"
    """UTC calendar hour/day/week (from Monday)/month, or ``total`` (never resets)."""
    downgrade: bool = False
    """Over budget: answer from the cheapest variant that still meets every need, if that
    fits the remaining budget, instead of refusing."""
    max_in_flight: PositiveInt | None = None
    """Requests of this key running at once across every replica (shared state); past it 429
    with ``Retry-After``."""


class AuthConfig(Strict):
    enabled: bool = True
    master_key: str | None = None
    key_defaults: KeyLimits = KeyLimits()


class StateConfig(Strict):
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    """One Redis server (``GLM_GATEWAY_REDIS_URL``)."""
    redis_sentinels: str | None = None
    """Redis Sentinel: ``host:port,...`` of the sentinels (``GLM_GATEWAY_REDIS_SENTINELS``)."""
    redis_sentinel_service: str | None = None
    """The master's service name under Sentinel (default ``mymaster``)."""
    redis_cluster_nodes: str | None = None
    """Redis Cluster: ``host:port,...`` seed nodes (``GLM_GATEWAY_REDIS_CLUSTER_NODES``). Exactly
    one of the three Redis modes; :mod:`gateway.state.redis_target` checks it."""
    redis_username: str | None = None
    """The Redis ACL user (``GLM_GATEWAY_REDIS_USERNAME``) for the servers that hold the state,
    in every mode; a single mode's URL may carry its own (``redis://user:pass@host``), which
    wins."""
    redis_password: str | None = None
    """Their password (``GLM_GATEWAY_REDIS_PASSWORD``): the masters and replicas under
    Sentinel, every Cluster node. Kept out of logs, metrics and answers like every secret;
    better set from the environment than written in a file."""
    redis_sentinel_password: str | None = None
    """The sentinels' own password (``GLM_GATEWAY_REDIS_SENTINEL_PASSWORD``; their
    ``requirepass``), when they have one; the data nodes' is ``redis_password``."""
    redis_timeout_ms: PositiveInt = 50
    """Longest wait for one Redis round trip before serving from local state (degraded)."""
    redis_prefix: str = Field(default="glmgw", pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")
    """Prefix of every Redis key, so several gateways (or tests) can share one server."""


class DatabaseConfig(Strict):
    """PostgreSQL records (``GLM_GATEWAY_DATABASE_URL`` overrides ``url``): virtual keys and
    the spend ledger. Unset: keys live in the state backend and no ledger is kept."""

    url: str | None = Field(default=None, pattern=r"^postgres(ql)?://")
    """``postgresql://user:pass@host:port/db`` (never logged with its password)."""
    connect_timeout_s: PositiveFloat = 3.0
    """Longest wait to connect; past it the gateway serves from its key cache."""
    key_sync_s: PositiveFloat = 2.0
    """How often each replica reads key changes (created, revoked) from PostgreSQL."""
    batch_size: PositiveInt = 500
    """Ledger rows written per batch (one INSERT)."""
    flush_interval_s: PositiveFloat = 0.5
    """Longest a ledger row waits in memory before its batch is written."""
    max_queued: PositiveInt = 100_000
    """Ledger rows held in memory while PostgreSQL is away; past it they spill to disk."""
    spool_dir: str | None = None
    """Where ledger rows spill (one file per process); default: the system temp dir."""


class BreakerConfig(Strict):
    failure_threshold: PositiveInt = 5
    """Consecutive failures that open a deployment's circuit."""
    cooldown_s: PositiveFloat = 30.0
    max_cooldown_s: PositiveFloat = 3600.0
    """Cap on cooldowns the breaker computes itself (doubling on repeated trips)."""
    max_explicit_cooldown_s: PositiveFloat = 172800.0
    """Cap on cooldowns a host states (Retry-After, GLM 1304/1308 reset times, bad keys)."""
    error_rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    """Failure share in ``error_window_s`` that opens the circuit (with ``error_min_requests``)."""
    error_window_s: Annotated[int, Field(ge=12, le=3600)] = 60
    error_min_requests: PositiveInt = 20
    """Attempts the window must hold before the error rate can open the circuit."""
    probe_lease_s: PositiveFloat = 10.0
    """How long a half-open circuit's single probe may take before another caller gets it."""


class LoggingConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"
    log_prompts: bool = False
    redact: tuple[str, ...] = ()
    """More secrets to keep out of answers and logs (provider keys, the master key and
    secret-looking provider headers are redacted without being listed)."""


class RouteAlias(Strict):
    """A named route a client may send as ``model`` (e.g. ``cheap``, ``vision``)."""

    policy: Policy | None = None
    capabilities: frozenset[Capability] = frozenset()
    min_context: PositiveInt | None = None
    params: str | None = None
    fallback: FallbackMode | None = None
    variants: tuple[str, ...] | None = None
    """Restrict the choice to these variants (all when absent)."""
    description: str | None = None


class MessagesConfig(Strict):
    """Anthropic Messages (``/v1/messages``): Claude model names, thinking signatures."""

    claude_models: dict[str, str] = Field(
        default_factory=lambda: {
            "claude-opus": "best",
            "claude-sonnet": "coding",
            "claude-haiku": "fast",
            "claude": "coding",
        }
    )
    """Client model name prefix → gateway model (variant id, alias or ``auto``); the longest
    prefix wins, other names are taken as sent. These names are also listed by ``GET /v1/models``
    for Anthropic clients (Claude Code's picker shows only ``claude*`` ids)."""
    max_output_tokens: PositiveInt = 32000
    """Messages' ``max_tokens`` is a ceiling that agents set high (Claude Code: 64k-128k); the
    routed request asks at most this many output tokens (reported in ``X-GLM-Ignored``), so the
    context need stays prompt + this and a long session keeps every capable window."""
    thinking_key: str | None = None
    """Signs the thinking blocks the gateway returns, so a replayed block is known unmodified.
    Replicas must share it. Unset: derived from ``auth.master_key``, else random per process."""


class ResponsesConfig(Strict):
    """OpenAI Responses (``/v1/responses``, stateless)."""

    web_search: Literal["drop", "builtin"] = "drop"
    """A ``web_search`` tool (Codex sends one): ``drop`` it (named in ``X-GLM-Ignored``) or
    route to hosts that run GLM's own web search (``builtin``: a ``tool_use`` need)."""


class FrontendsConfig(Strict):
    messages: MessagesConfig = MessagesConfig()
    responses: ResponsesConfig = ResponsesConfig()


class GatewayFile(Strict):
    server: ServerConfig = ServerConfig()
    limits: RequestLimits = RequestLimits()
    frontends: FrontendsConfig = FrontendsConfig()
    routing: RoutingConfig = RoutingConfig()
    auth: AuthConfig = AuthConfig()
    state: StateConfig = StateConfig()
    database: DatabaseConfig = DatabaseConfig()
    breaker: BreakerConfig = BreakerConfig()
    logging: LoggingConfig = LoggingConfig()
    aliases: dict[str, RouteAlias] = Field(default_factory=dict)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
