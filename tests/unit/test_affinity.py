"""Session keys and the pin rules of :mod:`gateway.routing.affinity`, on the memory backend."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.catalogue.loader import ConfigError, default_config_dir, load_config
from gateway.catalogue.schema import AffinityConfig
from gateway.catalogue.target import Target, cached_tokens
from gateway.errors import InvalidRequest
from gateway.frontends.base import body_session, claude_session
from gateway.observability.metrics import Metrics
from gateway.routing import failures as fl
from gateway.routing.affinity import Affinity, Pinned, pinnable, put_first, session_key
from gateway.state.base import DeploymentAsk, Pin, Saturation, Ticket, View
from gateway.state.memory import MemoryState

CONFIG = load_config(default_config_dir(), demo_simulator_url="http://127.0.0.1:9")
T0 = 1_900_000_000.0
CHAT = {
    "messages": [
        {"role": "system", "content": "long rules"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"},
    ]
}


def two() -> tuple[Target, Target]:
    ts = [t for t in CONFIG.catalogue.targets if t.variant.id == "glm-4.7"]
    return ts[0], ts[1]


def test_the_explicit_header_wins_then_agent_headers_then_the_body_then_the_prefix() -> None:
    h = session_key({"x-glm-session": "abc", "x-claude-code-session-id": "u"}, "b", CHAT, 1)
    assert h == session_key({"x-glm-session": "abc"}, None, {}, 1)
    agent = session_key({"x-claude-code-session-id": "u"}, "b", CHAT, 1)
    assert agent != h and agent == session_key({"x-claude-code-session-id": "u"}, None, {}, 1)
    assert session_key({}, "b", CHAT, 1) == session_key({}, "b", {}, 1)
    assert session_key({}, None, CHAT, 1) not in (h, agent)


def test_the_prefix_key_stays_the_same_as_the_history_grows() -> None:
    first = {"messages": CHAT["messages"][:2]}
    assert session_key({}, None, first, 1) == session_key({}, None, CHAT, 1)
    assert session_key({}, None, first, 2) != session_key({}, None, CHAT, 2)


def test_keys_are_hashes_that_carry_no_session_id_or_prompt_text() -> None:
    for key in (
        session_key({"x-glm-session": "secret-session"}, None, {}, 1),
        session_key({}, None, CHAT, 1),
    ):
        assert "secret" not in key and "rules" not in key
        assert len(key) == 33


@pytest.mark.parametrize("value", ["", "has space", "x" * 257, "caf\u00e9"])
def test_a_malformed_session_header_is_a_400_naming_it(value: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        session_key({"x-glm-session": value}, None, CHAT, 1)
    assert err.value.param == "X-GLM-Session"


def test_agents_session_ids_are_read_from_their_bodies() -> None:
    legacy = {"metadata": {"user_id": "user_9f_account_a1b2_session_0c6f0d5e-1111-2222"}}
    assert claude_session(legacy) == "0c6f0d5e-1111-2222"
    shaped = {"metadata": {"user_id": '{"device_id":"d","session_id":"s-123"}'}}
    assert claude_session(shaped) == "s-123"
    assert claude_session({"metadata": {"user_id": "u-123456"}}) is None  # a user, no session
    assert claude_session({}) is None
    assert body_session({"prompt_cache_key": "k", "user": "u"}) == "k"
    assert body_session({"user": "u"}) == "u"
    assert body_session({"user": 3}) is None


def test_cached_tokens_are_read_from_each_hosts_usage_shape() -> None:
    assert cached_tokens({"prompt_tokens_details": {"cached_tokens": 7}}) == 7
    assert cached_tokens({"cache_read_input_tokens": 5}) == 5
    assert cached_tokens({"cached_tokens": 3}) == 3
    assert cached_tokens({"prompt_tokens_details": None}) == 0
    assert cached_tokens(None) == 0


def test_cached_prompt_tokens_cost_the_cached_rate() -> None:
    t = next(t for t in CONFIG.catalogue.targets if t.id == "zai/glm-4.7")
    assert t.price is not None and t.price.cached_input is not None
    full = t.cost_micros(1000, 0)
    part = t.cost_micros(1000, 0, 800)
    assert part == pytest.approx(200 * t.price.input + 800 * t.price.cached_input)
    assert part < full


async def settle(
    pin: Pin | None, front: bool, target: Target, tried: list[tuple[Target, object]]
) -> tuple[str | None, Metrics]:
    attempts = [SimpleNamespace(target=t, failure=f) for t, f in tried]
    state, metrics = MemoryState(CONFIG.gateway.breaker), Metrics()
    known = {t.id: t.provider for t in CONFIG.catalogue.targets}
    blocked = frozenset({"gone/x"})
    a = Affinity(
        AffinityConfig(), state, metrics, blocked=lambda _n: blocked, known=known, wall=lambda: T0
    )
    if pin is not None:
        await state.set_pin("s", pin.target_id, 300, T0 - 10)
    await a.settle(Pinned("s", pin, front), target, attempts)
    got = await state.get_pin("s", T0)
    return (got.target_id if got else None), metrics


async def test_a_new_session_is_pinned_where_it_was_answered() -> None:
    a, _ = two()
    assert (await settle(None, False, a, [(a, None)]))[0] == a.id


async def test_no_pin_is_written_when_shared_state_was_not_read() -> None:
    a, _ = two()
    state = MemoryState(CONFIG.gateway.breaker)
    pinned = Pinned("s", None)
    pinned.known = False  # the before() call was late: another replica's pin may exist
    await Affinity(AffinityConfig(), state, wall=lambda: T0).settle(pinned, a, [])
    assert await state.get_pin("s", T0) is None


async def test_a_host_failure_on_the_pinned_deployment_moves_the_pin() -> None:
    a, b = two()
    down = fl.Failure(fl.FailureClass.OVERLOADED, 503, None, "busy")
    got, metrics = await settle(Pin(a.id, T0 + 290), True, b, [(a, down), (b, None)])
    assert got == b.id
    assert metrics.affinity_repins.labels(a.provider, "overloaded")._count == 1


async def test_a_caller_fault_never_moves_the_pin() -> None:
    a, b = two()
    theirs = fl.Failure(fl.FailureClass.CONTEXT, 400, None, "too long for this host")
    got, _ = await settle(Pin(a.id, T0 + 290), True, b, [(a, theirs), (b, None)])
    assert got == a.id


async def test_a_pin_this_request_could_not_use_stays() -> None:
    a, b = two()  # the pinned deployment was not in the plan (a need it lacks), not blocked
    got, _ = await settle(Pin(a.id, T0 + 290), False, b, [(b, None)])
    assert got == a.id


def test_the_pinned_deployment_goes_first_only_when_the_plan_holds_it() -> None:
    a, b = two()
    order = [a, b]
    movable = pinnable(order, 8)
    assert put_first(order, Pin(b.id, T0), movable, View()) and order == [b, a]
    order = [a]
    assert not put_first(order, Pin(b.id, T0), movable, View()) and order == [a]
    other = next(t for t in CONFIG.catalogue.targets if t.variant.id != a.variant.id)
    order = [a, other]  # the policy chose a's variant: a pin to another variant waits
    assert pinnable(order, 8) == (a.id,)
    assert not put_first(order, Pin(other.id, T0), pinnable(order, 8), View())
    assert order == [a, other]


def test_a_pin_shared_state_found_unavailable_stays_where_it_is() -> None:
    a, b = two()  # what StateStore.before did: an open or saturated pinned deployment is not first
    for view in (View(open_circuits={b.id: 5.0}), View(saturated={b.id: Saturation(3, "rpm", 1)})):
        order = [a, b]
        assert not put_first(order, Pin(b.id, T0), pinnable(order, 8), view)
        assert order == [a, b]


async def test_the_memory_state_reserves_on_the_pinned_deployment() -> None:
    a, b = two()
    state = MemoryState(CONFIG.gateway.breaker)
    await state.set_pin("s", b.id, 60, T0)
    asks = (DeploymentAsk(a.id, rpm=5), DeploymentAsk(b.id, rpm=5))
    view = await state.before(Ticket(asks, 10, session="s", pinnable=(a.id, b.id)), T0 + 1)
    assert view.lease is not None and view.lease.deployment == b.id
    view = await state.before(Ticket(asks, 10, session="s"), T0 + 1)  # not pinnable here
    assert view.lease is not None and view.lease.deployment == a.id


def test_an_unknown_provider_in_provider_ttl_s_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    shutil.copytree(default_config_dir(), cfg)
    text = (cfg / "gateway.yaml").read_text()
    (cfg / "gateway.yaml").write_text(
        text.replace("provider_ttl_s: {}", "provider_ttl_s: {zia: 5}")
    )
    with pytest.raises(ConfigError, match=r"provider_ttl_s\.zia: unknown provider 'zia'"):
        load_config(cfg, demo_simulator_url="http://127.0.0.1:9")


def test_a_long_prefix_is_keyed_by_every_byte_of_it() -> None:
    system = "Read the file before editing it. " * 600  # ~20 KB: keyed by samples and a CRC
    middle = system[:10_000] + "X" + system[10_001:]
    key = session_key({}, None, {"messages": [{"role": "system", "content": system}]}, 1)
    same = session_key({}, None, {"messages": [{"role": "system", "content": system}]}, 1)
    moved = session_key({}, None, {"messages": [{"role": "system", "content": middle}]}, 1)
    assert key == same and key != moved
    turn = {"role": "user", "content": "next"}
    grown = {"messages": [{"role": "system", "content": system}, turn, turn, turn]}
    assert session_key({}, None, grown, 1) != key  # the first user turn is in the prefix
    assert session_key({}, None, grown, 1) == session_key(
        {}, None, {"messages": grown["messages"][:2]}, 1
    )


async def test_a_new_session_with_nothing_to_choose_among_is_not_pinned() -> None:
    a = two()[0]
    state = MemoryState(CONFIG.gateway.breaker)
    aff = Affinity(AffinityConfig(), state, wall=lambda: T0)
    await aff.settle(Pinned("s", None, choice=False), a, [])
    assert await state.get_pin("s", T0) is None
    await aff.settle(Pinned("s", None), a, [])
    got = await state.get_pin("s", T0)
    assert got is not None and got.target_id == a.id
