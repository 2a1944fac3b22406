"""Upstream chaos: a host failing a share of requests in every way, every host down, streams cut
after the first token, and upstreams that hang, trickle forever or answer malformed bodies.

Real processes on loopback: a simulator of this module's own (global fault rules and a seeded
RNG would disturb other modules' simulator), gateways of their own (their breakers), the real
``openai`` SDK and raw httpx. No timed assertions: a deadline is checked as an outcome (the
error says deadline/timeout, the stream ended without ``[DONE]``); ``GUARD_S`` only keeps a
broken gateway from hanging the suite.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import orjson
import pytest
import pytest_asyncio

from tests.chaos.sim_admin import (
    clear_faults,
    metric,
    poll_until,
    scrape,
    set_faults,
    sim_streams,
)
from tests.support.e2e import (
    AUTH,
    assert_error_shape,
    chat_body,
    directive,
    module_gateway,
    nonce,
    sdk_client,
    text_msg,
    wait_for_log,
)
from tests.support.procs import Proc, start_simulator

pytestmark = pytest.mark.chaos

CHAT = "/v1/chat/completions"
GUARD_S = 20.0
"""Upper bound on any one request here: a hang guard, not an assertion on speed."""
DEADLINE = "2"
"""X-GLM-Timeout for the hang / trickle / malformed cases."""
MODEL = "glm-4-32b"
"""Served by zai (zhipu dialect, re-encoded), openrouter, novita (OpenAI), siliconflow and
vllm (relayed as bytes); it does not think, so the first *content* chunk is the commit point."""


@pytest.fixture(scope="module")
def sim() -> Iterator[Proc]:
    proc = start_simulator()
    yield proc
    proc.stop()


@dataclass
class Outcome:
    """What a client saw: status, headers, the JSON body (errors, non-streams) or SSE events."""

    status: int
    headers: dict[str, str]
    body: Any = None
    events: list[Any] | None = None

    @property
    def error(self) -> dict[str, Any]:
        source = self.body if self.events is None else self.events[-1]
        return assert_error_shape(source)

    def attempt_classes(self) -> list[str]:
        return [a["class"] for a in self.error.get("attempts", [])]


async def call(
    gw: Proc, body: dict[str, Any], headers: dict[str, str], guard_s: float = GUARD_S
) -> Outcome:
    """One request with raw httpx, read to its end (an SSE answer parsed into events)."""
    async with (
        asyncio.timeout(guard_s),
        httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=guard_s) as c,
        c.stream("POST", CHAT, json=body, headers=headers) as r,
    ):
        raw = await r.aread()
        hdrs = {k.lower(): v for k, v in r.headers.items()}
        if hdrs.get("content-type", "").startswith("text/event-stream"):
            return Outcome(r.status_code, hdrs, events=sse_events(raw.decode()))
        return Outcome(r.status_code, hdrs, body=orjson.loads(raw) if raw else None)


def sse_events(raw: str) -> list[Any]:
    """``data:`` payloads: parsed JSON, ``"[DONE]"``, or ``{"unparsable": text}`` (relayed
    garbage is a finding, not a crash of the test)."""
    out: list[Any] = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        data = "\n".join(ln[5:].strip() for ln in block.split("\n") if ln.startswith("data:"))
        if data == "[DONE]":
            out.append(data)
        elif data:
            try:
                out.append(orjson.loads(data))
            except orjson.JSONDecodeError:
                out.append({"unparsable": data})
    return out


# --- 1. a fault mix on one host -------------------------------------------------------------

MIX_SEED = 1313
MIX_REQUESTS = 300
MIX_CONCURRENCY = 16
FAULTY = "zai"
MIX_ROUTE = {"X-GLM-Providers": "zai,openrouter,novita"}
MIX_TTFT_S = 1.5


MIX_FAULTS: tuple[tuple[float, dict[str, Any], str], ...] = (
    (0.20, {"status": 500, "message": "mix: internal error"}, "transient"),
    (0.10, {"status": 429, "code": "1302", "retry_after": 1}, "rate_limit"),
    (0.05, {"cut_after_chunks": 0}, "transient"),
    (0.05, {"ttft_ms": MIX_TTFT_S * 4000}, "timeout"),
)
"""(share of the faulty host's answers, rule, the failure class the gateway must see): 5xx,
429 + Retry-After, a cut before the first token, a first token later than ``ttft_timeout_s``."""


def mix_rules() -> list[dict[str, Any]]:
    """The faults as global rules on the faulty host. Rules are tried in order, each with its
    own draw, so each ``rate`` is the share wanted among the requests the rules above let by."""
    left, rules = 1.0, []
    for share, rule, _ in MIX_FAULTS:
        rules.append({"match": {"provider": FAULTY}, "rate": round(share / left, 4), **rule})
        left -= share
    return rules


@pytest.fixture(scope="module")
def mix_gateway(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with module_gateway(
        sim,
        tmp_path_factory.mktemp("chaos-mix"),
        routing={"ttft_timeout_s": MIX_TTFT_S},
        # short cooldowns (Retry-After's capped too) and no error-rate trips: the faulty host
        # comes back into rotation within the run, and still opens on each 429
        breaker={
            "cooldown_s": 0.3,
            "max_cooldown_s": 0.6,
            "max_explicit_cooldown_s": 0.6,
            "error_rate": 0.95,
            "probe_lease_s": 1.0,
        },
    ) as gw:
        yield gw


async def one_mixed(c: openai.AsyncOpenAI, i: int) -> str:
    """Request ``i`` (odd: streaming); the provider that answered. Raises unless it succeeded."""
    messages = text_msg(f"mix request {i} {nonce()}")
    async with asyncio.timeout(GUARD_S):
        if i % 2:
            raw = await c.chat.completions.with_raw_response.create(
                model=MODEL, messages=messages, stream=True, extra_headers=MIX_ROUTE
            )
            chunks = [ch async for ch in raw.parse()]
            text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
            finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
            assert finish and finish[-1] == "stop", finish
        else:
            raw = await c.chat.completions.with_raw_response.create(
                model=MODEL, messages=messages, extra_headers=MIX_ROUTE
            )
            text = raw.parse().choices[0].message.content or ""
    assert text.startswith(f"Hello from {MODEL}"), text
    return raw.headers["x-glm-provider"]


async def test_each_fault_of_the_mix_falls_over_with_its_class(mix_gateway: Proc) -> None:
    # one at a time would trip the breaker between them; all at once, each meets the faulty host
    async def once(rule: dict[str, Any], stream: bool) -> str:
        tag = nonce()
        fault = directive({"match": {"provider": FAULTY}, **rule}, tag)
        body = chat_body(text_msg(f"fault {tag} {fault}"), model=MODEL, stream=stream)
        out = await call(mix_gateway, body, MIX_ROUTE)
        assert out.status == 200 and out.headers["x-glm-provider"] != FAULTY, out
        if out.events is not None:
            assert out.events[-1] == "[DONE]", out.events[-3:]
        return out.headers["x-glm-fallback-reason"]

    runs = [(rule, cls, stream) for _, rule, cls in MIX_FAULTS for stream in (False, True)]
    runs = [r for r in runs if r[2] or "ttft_ms" not in r[0]]  # no first token to wait for
    reasons = await asyncio.gather(*(once(rule, stream) for rule, _, stream in runs))
    for (rule, cls, stream), reason in zip(runs, reasons, strict=True):
        assert f"{FAULTY}/{MODEL} {cls}" in reason, (rule, stream, reason)


async def circuit_of(gw: Proc, provider: str) -> float | None:
    return metric(await scrape(gw), "glm_gateway_circuit_state", provider=provider, variant=MODEL)


async def test_fault_mix_is_answered_and_the_breaker_opens_and_recovers(
    mix_gateway: Proc, sim: Proc
) -> None:
    # start from a closed circuit: the scenario before this one leaves it open (a 429 with
    # Retry-After among its faults), and a fast run could end before it let the host back in
    await clear_faults(sim)
    assert await close_circuit(mix_gateway), "the circuit did not close before the mix"
    await set_faults(sim, mix_rules(), seed=MIX_SEED)
    seen: set[float] = set()
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            state = await circuit_of(mix_gateway, FAULTY)
            if state is not None:
                seen.add(state)
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    gate = asyncio.Semaphore(MIX_CONCURRENCY)

    async def bounded(c: openai.AsyncOpenAI, i: int) -> str | BaseException:
        async with gate:
            try:
                return await one_mixed(c, i)
            except Exception as exc:
                return exc

    try:
        async with sdk_client(mix_gateway, timeout=GUARD_S) as c:
            results = await asyncio.gather(*(bounded(c, i) for i in range(MIX_REQUESTS)))
    finally:
        stop.set()
        await watcher
        await clear_faults(sim)
    failed = [(i, r) for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert not failed, f"{len(failed)} of {MIX_REQUESTS} failed, e.g. {failed[:3]}"

    # the faulty host's attempts failed only as its faults say (how many of each depends on how
    # often the breaker let it be tried: each 429 opens it for its Retry-After)
    samples = await scrape(mix_gateway)
    outcomes = {
        lab["outcome"]: v
        for n, lab, v in samples
        if n == "glm_gateway_upstream_attempts_total" and lab.get("provider") == FAULTY
    }
    print(f"\nmix: {FAULTY} attempts by outcome {outcomes}, circuit states seen {seen}")
    answered_by = {r for r in results if isinstance(r, str)}
    assert FAULTY in answered_by and answered_by - {FAULTY}, (answered_by, outcomes, seen)
    assert set(outcomes) <= {"ok", *(cls for _, _, cls in MIX_FAULTS)}, outcomes
    assert outcomes.get("ok", 0) > 0 and outcomes.get("transient", 0) > 0, outcomes
    assert 2.0 in seen, f"the {FAULTY} circuit never read open: {seen}"

    # recovery: open it once more (a 429 with Retry-After), stop the faults, and watch it go
    # half-open with no traffic (cooldown over, no probe taken), then closed after one
    # successful probe
    tag = nonce()
    trip = directive({"match": {"provider": FAULTY}, "status": 429, "retry_after": 1}, tag)
    async with sdk_client(mix_gateway, timeout=GUARD_S) as c:
        await c.chat.completions.create(
            model=MODEL, messages=text_msg(f"trip {tag} {trip}"), extra_headers=MIX_ROUTE
        )

    async def reads(value: float) -> bool:
        return await circuit_of(mix_gateway, FAULTY) == value

    assert await poll_states(reads, 1.0), "the circuit did not go half-open"
    async with sdk_client(mix_gateway, timeout=GUARD_S) as c:
        probe = await one_mixed(c, 0)
    assert probe == FAULTY  # the half-open circuit let one probe through, and it succeeded
    assert await poll_states(reads, 0.0), "a successful probe did not close the circuit"


async def close_circuit(gw: Proc, within_s: float = 15.0) -> bool:
    """Send healthy requests until the faulty host's circuit reads closed (or was never
    opened): an open one lets a probe through once its cooldown is over, and the probe
    succeeds with no faults set."""
    end = time.monotonic() + within_s
    async with sdk_client(gw, timeout=GUARD_S) as c:
        while time.monotonic() < end:
            if await circuit_of(gw, FAULTY) in (None, 0.0):
                return True
            await one_mixed(c, 0)
            await asyncio.sleep(0.05)
    return False


async def poll_states(reads: Any, *values: float, within_s: float = 15.0) -> bool:
    """True once the circuit has read each of ``values`` in this order (others in between)."""
    end = time.monotonic() + within_s
    want = list(values)
    while want and time.monotonic() < end:
        if await reads(want[0]):
            want.pop(0)
            continue
        await asyncio.sleep(0.05)
    return not want


# --- gateway with breakers that never open on counts, for the one-request scenarios -----------


@pytest.fixture(scope="module")
def gw(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with module_gateway(
        sim,
        tmp_path_factory.mktemp("chaos-faults"),
        routing={"ttft_timeout_s": 2.0},
        breaker={"failure_threshold": 100_000, "error_min_requests": 100_000},
    ) as proc:
        yield proc


@pytest_asyncio.fixture
async def sdk(gw: Proc) -> AsyncIterator[openai.AsyncOpenAI]:
    async with sdk_client(gw, timeout=GUARD_S) as c:
        yield c


# --- 3. a cut after the first token ---------------------------------------------------------

CUT_PROVIDERS = ("zai", "openrouter", "novita", "vllm")


async def test_cut_after_first_token_raises_in_the_sdk(gw: Proc, sdk: openai.AsyncOpenAI) -> None:
    async def via_sdk(provider: str) -> tuple[str, list[str], BaseException | None]:
        tag = nonce()
        cut = directive({"match": {"provider": provider}, "cut_after_chunks": 1}, tag)
        got: list[str] = []
        try:
            async with asyncio.timeout(GUARD_S):
                stream = await sdk.chat.completions.create(
                    model=MODEL,
                    messages=text_msg(f"a long answer {tag} {cut}"),
                    stream=True,
                    extra_headers={"X-GLM-Providers": f"{provider},siliconflow"},
                )
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        got.append(chunk.choices[0].delta.content)
        except openai.APIError as exc:
            return provider, got, exc
        return provider, got, None

    async def via_raw(provider: str) -> tuple[str, Outcome]:
        tag = nonce()
        cut = directive({"match": {"provider": provider}, "cut_after_chunks": 1}, tag)
        body = chat_body(text_msg(f"a long answer {tag} {cut}"), model=MODEL, stream=True)
        return provider, await call(gw, body, {"X-GLM-Providers": f"{provider},siliconflow"})

    sdk_runs = await asyncio.gather(*(via_sdk(p) for p in CUT_PROVIDERS))
    raw_runs = await asyncio.gather(*(via_raw(p) for p in CUT_PROVIDERS))
    for provider, got, exc in sdk_runs:
        assert exc is not None, f"{provider}: the SDK returned a cut stream as complete: {got}"
        assert len(got) == 1 and provider in exc.message, (provider, got, exc.message)
    for provider, out in raw_runs:
        assert out.status == 200 and out.headers["x-glm-provider"] == provider
        assert out.events is not None and "[DONE]" not in out.events, (provider, out.events)
        assert out.error["code"] == "stream_interrupted", (provider, out.events[-1])


# --- 4. upstreams that hang, trickle forever or answer malformed ----------------------------


@dataclass(frozen=True)
class Case:
    """One misbehaving upstream: the rule, and what the client must get."""

    name: str
    rule: dict[str, Any]
    stream: bool
    status: int
    classes: frozenset[str]
    """Failure classes every listed attempt must have (an error body's ``attempts``)."""
    code: str | None = None


TRANSIENT = frozenset({"transient"})
TIMEOUT = frozenset({"timeout"})
CASES = (
    Case("bad_json", {"malformed": "bad_json"}, False, 502, TRANSIENT, "all_candidates_failed"),
    Case("html", {"malformed": "html"}, False, 502, TRANSIENT, "all_candidates_failed"),
    Case("html_502", {"malformed": "html", "status": 502}, False, 502, TRANSIENT),
    Case("truncated", {"malformed": "truncated_sse"}, False, 502, TRANSIENT),
    Case("error_body", {"malformed": "error_body"}, False, 502, TRANSIENT),
    Case("hang", {"hang": True}, False, 504, TIMEOUT, "deadline_exceeded"),
    Case("trickle", {"trickle_ms": 300}, False, 504, TIMEOUT, "deadline_exceeded"),
    Case("bad_json_sse", {"malformed": "bad_json"}, True, 502, TRANSIENT, "all_candidates_failed"),
    Case("html_sse", {"malformed": "html"}, True, 502, TRANSIENT),
    Case("truncated_sse", {"malformed": "truncated_sse"}, True, 502, TRANSIENT),
    Case("error_body_sse", {"malformed": "error_body"}, True, 502, TRANSIENT),
    Case("no_done_pre", {"malformed": "no_done", "cut_after_chunks": 0}, True, 502, TRANSIENT),
    Case("hang_sse", {"hang": True}, True, 504, TIMEOUT, "deadline_exceeded"),
)
"""Failures before anything was committed: an HTTP error whose attempts say what happened.
The one provider is tried twice (transient_retries: 1) unless the deadline passed."""


async def run_case(gw: Proc, case: Case, provider: str) -> str | None:
    """None when the client got what ``case`` says, else what went wrong."""
    tag = nonce()
    rule = directive({"match": {"provider": provider}, **case.rule}, tag)
    body = chat_body(text_msg(f"{case.name} {tag} {rule}"), model=MODEL, stream=case.stream)
    headers = {"X-GLM-Providers": provider, "X-GLM-Timeout": DEADLINE}
    try:
        out = await call(gw, body, headers)
    except TimeoutError:
        return f"no answer within {GUARD_S}s"
    got = f"{out.status} {out.body if out.events is None else out.events[-3:]}"
    if out.status != case.status or out.events is not None:
        return f"want HTTP {case.status} JSON, got {got}"
    err = out.error
    if case.code is not None and err["code"] != case.code:
        return f"want code {case.code}, got {got}"
    classes = out.attempt_classes()
    if not classes or set(classes) - case.classes:
        return f"want attempt classes {set(case.classes)}, got {classes}: {got}"
    return None


async def test_misbehaving_upstreams_are_classified_failures(gw: Proc) -> None:
    # every case on a relayed-as-bytes host (vllm) and a re-encoded one (zai), all at once: the
    # hangs wait out the same deadline together
    runs = [(case, provider) for provider in ("vllm", "zai") for case in CASES]
    results = await asyncio.gather(*(run_case(gw, case, provider) for case, provider in runs))
    wrong = {f"{p}:{c.name}": why for (c, p), why in zip(runs, results, strict=True) if why}
    assert not wrong, wrong


@pytest.fixture(scope="module")
def gw_own(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """A gateway of its own: the rate limit below opens zai's circuit (the other cases pin zai)."""
    with module_gateway(sim, tmp_path_factory.mktemp("chaos-200-error")) as proc:
        yield proc


@pytest.mark.parametrize(("provider", "stream"), [("zai", False), ("novita", True)])
async def test_error_object_in_a_200_is_classified_by_its_code(
    gw_own: Proc, provider: str, stream: bool
) -> None:
    """A GLM 1302 sent with status 200 (as JSON, also to a stream request) is a rate limit."""
    tag = nonce()
    rule = {"match": {"provider": provider}, "malformed": "error_body", "code": "1302"}
    body = chat_body(text_msg(f"limited {tag} {directive(rule, tag)}"), model=MODEL)
    if stream:
        body["stream"] = True
    out = await call(gw_own, body, {"X-GLM-Providers": provider, "X-GLM-Timeout": DEADLINE})
    assert out.status == 503, out.body
    assert out.attempt_classes() == ["rate_limit"], out.body


AFTER_CONTENT = (
    ("no_done", {"malformed": "no_done"}),
    ("no_done_mid", {"malformed": "no_done", "cut_after_chunks": 2}),
    ("truncated_mid", {"malformed": "truncated_sse", "cut_after_chunks": 2}),
    ("bad_json_mid", {"malformed": "bad_json", "cut_after_chunks": 2}),
)


@pytest.mark.parametrize(("name", "rule"), AFTER_CONTENT, ids=[n for n, _ in AFTER_CONTENT])
@pytest.mark.parametrize("provider", ["vllm", "zai"])
async def test_broken_stream_after_content_is_an_error_event_and_a_502_in_the_log(
    gw: Proc, provider: str, name: str, rule: dict[str, Any]
) -> None:
    tag = nonce()
    rid = f"chaos-{name}-{tag}"
    rules = directive({"match": {"provider": provider}, **rule}, tag)
    body = chat_body(text_msg(f"{name} {tag} {rules}"), model=MODEL, stream=True)
    headers = {"X-GLM-Providers": provider, "X-GLM-Timeout": DEADLINE, "X-Request-Id": rid}
    out = await call(gw, body, headers)
    assert out.status == 200 and out.events is not None, out
    assert "[DONE]" not in out.events, out.events
    content = [
        e for e in out.events[:-1] if e["choices"] and e["choices"][0]["delta"].get("content")
    ]
    assert content, out.events  # the answer had started: the failure could not be hidden
    assert out.error["code"] == "stream_interrupted", out.events[-1]
    rec = await wait_for_log(gw, rid)
    assert rec["status"] == 502 and rec["stream"] is True, rec
    assert str(rec["error"]).startswith("stream_"), rec


async def test_stream_that_trickles_forever_ends_at_the_deadline(gw: Proc, sim: Proc) -> None:
    async def trickle(provider: str) -> tuple[str, Outcome | str]:
        tag = nonce()
        rid = f"chaos-trickle-{provider}-{tag}"
        rule = directive({"match": {"provider": provider}, "trickle_ms": 400}, tag)
        body = chat_body(text_msg(f"trickle {tag} {rule}"), model=MODEL, stream=True)
        headers = {"X-GLM-Providers": provider, "X-GLM-Timeout": DEADLINE, "X-Request-Id": rid}
        try:
            return rid, await call(gw, body, headers, guard_s=3 * float(DEADLINE) + 3)
        except TimeoutError:
            return rid, f"{provider}: the stream was still open well past its deadline"

    for rid, out in await asyncio.gather(trickle("vllm"), trickle("zai")):
        assert isinstance(out, Outcome), out
        assert out.status == 200 and out.events is not None
        assert "[DONE]" not in out.events
        message = out.error["message"].lower()
        assert "deadline" in message or "timeout" in message, out.events[-1]
        assert (await wait_for_log(gw, rid))["status"] == 504

    async def upstreams_let_go() -> bool:
        return (await sim_streams(sim))["open"] == 0

    assert await poll_until(upstreams_let_go, 10.0), await sim_streams(sim)


# --- 2. every host down (last: 429s open circuits for their Retry-After) ----------------------


async def test_every_host_down_is_a_clear_error_listing_the_attempts(gw: Proc, sim: Proc) -> None:
    cases = (
        ({"status": 500}, 502, "all_candidates_failed", "transient"),
        ({"hang": True}, 504, "deadline_exceeded", "timeout"),
        ({"status": 429, "code": "1302", "retry_after": 1}, 503, "all_candidates_failed",
         "rate_limit"),
    )  # fmt: skip
    for rule, status, code, cls in cases:
        await set_faults(sim, [rule])
        try:
            runs = await asyncio.gather(
                *(
                    call(
                        gw,
                        chat_body(text_msg(f"down {nonce()}"), stream=stream),
                        {"X-GLM-Timeout": DEADLINE},
                    )
                    for stream in (False, True)
                )
            )
        finally:
            await clear_faults(sim)
        for stream, out in zip((False, True), runs, strict=True):
            where = f"{rule} stream={stream}: {out.status} {out.body}"
            assert out.status == status and out.events is None, where
            err = out.error
            assert err["code"] == code, where
            attempts = err["attempts"]
            assert attempts and {a["class"] for a in attempts} == {cls}, where
            assert all(a["provider"] and a["variant"] for a in attempts), where
            if status != 504:  # fast failures: several candidates, across hosts
                assert len({a["provider"] for a in attempts}) >= 2, where
            if status == 503:
                assert out.headers.get("retry-after"), where
