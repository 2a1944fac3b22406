"""Fault directives: rules that make the simulator fail, stall or misbehave on purpose.

A rule comes from a ``<<sim:JSON>>`` directive inside a message's text (JSON is one rule or a
list of rules) or from the global list set through ``POST /_sim/faults``. Prompt rules are
tried first, in order of appearance, then global rules; the first rule that matches wins.

Rule fields (all optional)::

    match             {"provider": ..., "model": ..., "variant": ..., "api": ...}; absent keys
                      match anything; ``api`` is the surface: ``chat`` (chat completions) or
                      ``messages`` (the native Anthropic Messages endpoint)
    times             apply only the first N times this rule matched, then skip it
    rate              probability 0-1 that the rule applies to a request (drawn from the
                      book's RNG: ``POST /_sim/faults?seed=N`` makes the draws repeatable)
    status            HTTP status; >= 400 (or with ``body``) answers with an error
    code, message     error code and text, shaped per dialect; ``{api_key}`` in the text is
                      replaced by the bearer key the request carried (a host echoing it).
                      On the Messages surface the error's ``type`` follows the status
                      (429 ``rate_limit_error``, 529 ``overloaded_error``, 500 ``api_error``
                      ...) or ``code`` when that is an Anthropic error type; another code is
                      kept as ``error.code``
    body              raw JSON body returned with ``status`` (default 500)
    retry_after       seconds, sent as the Retry-After header
    latency_ms        delay before the response head
    ttft_ms           streams: delay after the head, before the first chunk
    chunk_delay_ms    streams: delay between chunks
    cut_after_chunks  streams: abort the connection after N content chunks (with
                      ``finish_reason``: end there with it instead); non-streams: close the
                      connection without an answer
    finish_reason     end the answer with this finish_reason (``network_error``, ``sensitive``);
                      on Messages as a ``stop_reason`` (``stop`` -> ``end_turn``, ``length`` ->
                      ``max_tokens``, ``sensitive`` -> ``refusal``; others verbatim)
    stream_error      streams: {"code", "message"}: after ``cut_after_chunks`` content chunks
                      (default 0) send an error event inside the 200 stream, in the dialect's
                      shape (OpenRouter: a chunk with ``error`` and ``finish_reason: "error"``;
                      Messages: ``event: error``, typed by ``code`` as above, else
                      ``api_error``); ``{api_key}`` in the message as above
    tool_args_object  true: tool-call ``arguments`` as a JSON object (Zhipu's documented type)
    tool_call         {"name": ..., "arguments": {...}}: call exactly this tool with these
                      arguments instead of the first tool with generated ones, when the
                      request offers a tool of that name and its last turn is not a tool
                      result; otherwise answer text (so an agent's loop ends: call, result,
                      text). Any dialect, and the Messages surface (a ``tool_use`` block)
    content           reply text instead of the usual answer
    hang              true: never answer; wait until the client goes away
    trickle_ms        never finish: streams send one content chunk every ``trickle_ms``
                      after the head; non-streams send the head, then one space (legal JSON
                      whitespace) every ``trickle_ms``; until the client goes away
    malformed         a broken 200 answer (after ``cut_after_chunks`` content chunks, default
                      0, for streams; on Messages ``no_done`` leaves out ``message_stop``):
                        bad_json       JSON cut in half (streams: one event of broken JSON,
                                       then the rest of the stream and ``[DONE]``)
                        html           a text/html page instead of JSON or SSE (with
                                       ``status``: that status, e.g. a proxy's 502 page)
                        truncated_sse  streams: an event cut mid-way, then a clean close;
                                       non-streams: half the body, then the connection drops
                        error_body     the dialect's error object with status 200, as JSON
                        no_done        streams: everything but ``[DONE]`` (with
                                       ``cut_after_chunks``: only that many content chunks,
                                       no finish), then a clean close; non-streams: no effect

The counters for ``times`` live on a :class:`FaultBook`, one per simulator app.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from gateway.simulator.models import SimModel

MARK = "<<sim:"
_END = ">>"
_DECODER = json.JSONDecoder()
_MATCH_KEYS = frozenset({"provider", "model", "variant", "api"})
APIS = frozenset({"chat", "messages"})
_PARSE_CACHE_MAX = 4096


class DirectiveError(ValueError):
    """A directive or global rule that is not valid JSON or not a valid rule."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One parsed fault rule; see the module docstring for the meaning of each field."""

    match: tuple[tuple[str, str], ...] = ()
    times: int | None = None
    rate: float | None = None
    status: int | None = None
    code: str | None = None
    message: str | None = None
    body: Any = None
    retry_after: float | None = None
    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    cut_after_chunks: int | None = None
    finish_reason: str | None = None
    content: str | None = None
    hang: bool = False
    stream_error: Any = None
    tool_args_object: bool = False
    trickle_ms: float = 0.0
    malformed: str | None = None
    tool_call: Any = None

    @property
    def is_error(self) -> bool:
        """Whether the rule answers with an error body instead of a completion."""
        if self.malformed is not None:
            return False  # ``status`` is the malformed answer's own status
        return self.body is not None or (self.status is not None and self.status >= 400)

    def matches(self, model: SimModel, api: str = "chat") -> bool:
        """Whether every ``match`` key equals the model's provider, model id or variant, or
        (``api``) the surface the request came in on."""
        return all(
            (api if key == "api" else getattr(model, key)) == want for key, want in self.match
        )


_NUMBERS = ("retry_after", "latency_ms", "ttft_ms", "chunk_delay_ms", "rate", "trickle_ms")
_INTS = ("times", "status", "cut_after_chunks")
_STRINGS = ("message", "finish_reason", "content")
MALFORMED = frozenset({"bad_json", "html", "truncated_sse", "error_body", "no_done"})


def parse_rule(raw: Any) -> Rule:
    """Build a :class:`Rule` from its JSON object. Raises DirectiveError naming the bad field."""
    if not isinstance(raw, dict):
        raise DirectiveError("a rule must be a JSON object")
    unknown = set(raw) - set(Rule.__dataclass_fields__)
    if unknown:
        raise DirectiveError(f"unknown rule field(s): {', '.join(sorted(unknown))}")
    kw: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "match":
            kw[name] = _parse_match(value)
        elif name in _NUMBERS:
            kw[name] = _typed(name, value, (int, float))
        elif name in _INTS:
            kw[name] = _typed(name, value, (int,))
        elif name in _STRINGS:
            kw[name] = _typed(name, value, (str,))
        elif name == "code":
            kw[name] = None if value is None else str(value)
        elif name == "stream_error":
            if not isinstance(value, dict):
                raise DirectiveError("`stream_error` takes an object with code and message")
            kw[name] = value
        elif name in ("hang", "tool_args_object"):
            kw[name] = _typed(name, value, (bool,))
        elif name == "tool_call":
            kw[name] = _parse_tool_call(value)
        elif name == "malformed":
            if value not in MALFORMED:
                raise DirectiveError(f"`malformed` must be one of {', '.join(sorted(MALFORMED))}")
            kw[name] = value
        else:
            kw[name] = value
    return Rule(**kw)


def _typed(name: str, value: Any, types: tuple[type, ...]) -> Any:
    if isinstance(value, bool) and bool not in types:
        raise DirectiveError(f"`{name}` must be a number, not a boolean")
    if not isinstance(value, types):
        raise DirectiveError(f"`{name}` has the wrong type: {value!r}")
    return value


def _parse_match(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or set(value) - _MATCH_KEYS:
        raise DirectiveError("`match` takes an object with provider, model, variant and/or api")
    if "api" in value and value["api"] not in APIS:
        raise DirectiveError(f"`match.api` must be one of {', '.join(sorted(APIS))}")
    return tuple((k, str(v)) for k, v in value.items())


def _parse_tool_call(value: Any) -> dict[str, Any]:
    name = value.get("name") if isinstance(value, dict) else None
    args = value.get("arguments", {}) if isinstance(value, dict) else None
    if not isinstance(name, str) or not name or not isinstance(args, dict):
        raise DirectiveError('`tool_call` takes {"name": string, "arguments": object}')
    if set(value) - {"name", "arguments"}:
        raise DirectiveError("`tool_call` takes only name and arguments")
    return {"name": name, "arguments": args}


KEY_MARK = "{api_key}"


def echo_key(rule: Rule | None, authorization: str | None) -> Rule | None:
    """``rule`` with ``{api_key}`` in its messages replaced by the request's bearer key."""
    if rule is None:
        return None
    text = rule.message or ""
    spec = rule.stream_error if isinstance(rule.stream_error, dict) else {}
    said = spec.get("message")
    if KEY_MARK not in text and not (isinstance(said, str) and KEY_MARK in said):
        return rule
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip() if scheme.lower() == "bearer" else ""
    stream_error = rule.stream_error
    if isinstance(said, str):
        stream_error = {**spec, "message": said.replace(KEY_MARK, key)}
    message = rule.message.replace(KEY_MARK, key) if rule.message else rule.message
    return replace(rule, message=message, stream_error=stream_error)


def parse_rules(raw: Any) -> tuple[Rule, ...]:
    """Parse one rule object or a list of them."""
    items = raw if isinstance(raw, list) else [raw]
    return tuple(parse_rule(item) for item in items)


def extract_directives(text: str, into: list[str]) -> str:
    """Append the JSON text of every ``<<sim:JSON>>`` in ``text`` to ``into``; return the rest.

    The JSON is read with a real decoder, so ``>>`` inside a string does not end a directive.
    An unterminated or undecodable directive runs to the next ``>>`` and fails later, at parse.
    """
    out: list[str] = []
    pos = 0
    while (start := text.find(MARK, pos)) >= 0:
        out.append(text[pos:start])
        body_at = start + len(MARK)
        end = _json_end(text, body_at)
        if end is None or not text.startswith(_END, end):
            close = text.find(_END, body_at)
            end = close if close >= 0 else len(text)
        into.append(text[body_at:end].strip())
        pos = min(end + len(_END), len(text))
    out.append(text[pos:])
    return "".join(out).strip()


def _json_end(text: str, at: int) -> int | None:
    try:
        _, end = _DECODER.raw_decode(text, at)
    except ValueError:
        return None
    while end < len(text) and text[end] in " \t\r\n":
        end += 1
    return int(end)


class FaultBook:
    """The simulator's fault state: global rules, ``times`` counters and a parse cache."""

    __slots__ = ("_counts", "_generation", "_global", "_parsed", "_rng")

    def __init__(self, rng: random.Random | None = None) -> None:
        self._global: tuple[Rule, ...] = ()
        self._generation = 0
        self._counts: dict[tuple[str, int], int] = {}
        self._parsed: dict[str, tuple[Rule, ...]] = {}
        self._rng = rng or random.Random()

    @property
    def global_rules(self) -> tuple[Rule, ...]:
        """The rules set through ``POST /_sim/faults``."""
        return self._global

    def set_global(self, rules: Sequence[Rule]) -> None:
        """Replace the global rules; their ``times`` counters start again."""
        self._global = tuple(rules)
        self._generation += 1

    def seed(self, seed: int) -> None:
        """Restart the RNG behind ``rate`` from ``seed`` (the same requests in the same order
        then meet the same faults)."""
        self._rng.seed(seed)

    def reset(self) -> None:
        """Drop the global rules and every ``times`` counter (prompt directives too)."""
        self.set_global(())
        self._counts.clear()

    def select(self, directives: Sequence[str], model: SimModel, api: str = "chat") -> Rule | None:
        """The first rule that applies to a request for ``model`` on surface ``api``, counting
        it if it does.

        Raises DirectiveError for a directive that does not parse.
        """
        for text in directives:
            for i, rule in enumerate(self._parse(text)):
                if self._applies(("p:" + text, i), rule, model, api):
                    return rule
        key = f"g:{self._generation}"
        for i, rule in enumerate(self._global):
            if self._applies((key, i), rule, model, api):
                return rule
        return None

    def _applies(self, key: tuple[str, int], rule: Rule, model: SimModel, api: str) -> bool:
        if not rule.matches(model, api):
            return False
        if rule.rate is not None and self._rng.random() >= rule.rate:
            return False
        if rule.times is not None:
            used = self._counts.get(key, 0)
            if used >= rule.times:
                return False
            self._counts[key] = used + 1
        return True

    def _parse(self, text: str) -> tuple[Rule, ...]:
        rules = self._parsed.get(text)
        if rules is None:
            try:
                raw = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise DirectiveError(f"not JSON: {text[:80]!r}") from exc
            rules = parse_rules(raw)
            if len(self._parsed) >= _PARSE_CACHE_MAX:
                self._parsed.clear()
            self._parsed[text] = rules
        return rules
