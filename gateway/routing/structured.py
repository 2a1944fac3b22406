"""Structured outputs that hold: a ``json_schema`` answer validates, or it is not returned.

Only requests with ``response_format.type == "json_schema"`` are checked (one jsonschema pass
over the answer). Hosts without native ``json_schema`` get ``json_object`` plus the schema in a
system prompt (:mod:`gateway.providers.dialects.request`), so their answers are the ones most
likely to miss.

The rule, for non-streaming answers: a miss is a :attr:`FailureClass.SCHEMA` failure and the
router moves to the next candidate; a second miss ends the request with 502
``structured_output_invalid`` listing what each answer got wrong. The client gets schema-valid
JSON or that error, never free text. An answer wrapped in a Markdown code fence is unwrapped.
Answers cut short (``length``), filtered, or calling a tool are passed on unchecked: their
``finish_reason`` already says why they are not the JSON (the openai SDK raises on them).

Streams are checked at ``[DONE]``: their content was already sent, so a miss ends the stream
with an error event instead of ``[DONE]``; there is no retry.
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson
from jsonschema import Draft202012Validator, SchemaError, validators
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator

from gateway.errors import GatewayError, InvalidRequest, UpstreamsFailed
from gateway.routing import failures as fl

MAX_MISSES: Final = 2
"""The first answer plus one retry on the next candidate."""
UNCHECKED_FINISH: Final = frozenset({"length", "content_filter", "tool_calls", "function_call"})
_FENCE: Final = re.compile(r"\A\s*```(?:json|JSON)?\s*\n?(.*?)\n?\s*```\s*\Z", re.DOTALL)
_PARAM: Final = "response_format.json_schema.schema"


class SchemaCache:
    """Checked validators by schema text: ``check_schema`` costs ~2 ms, validating ~30 us.

    One per router; bounded (oldest dropped first).
    """

    __slots__ = ("_max", "_validators")

    def __init__(self, max_entries: int = 256) -> None:
        self._max = max_entries
        self._validators: dict[bytes, Validator] = {}

    def guard(self, body: dict[str, Any]) -> SchemaGuard | None:
        """The guard for a ``json_schema`` request, else None. Raises InvalidRequest (400) for
        a schema that is not a valid JSON schema: no host could be held to it."""
        rf = body.get("response_format")
        if not isinstance(rf, dict) or rf.get("type") != "json_schema":
            return None
        spec = rf.get("json_schema")
        spec = spec if isinstance(spec, dict) else {}
        schema = spec.get("schema", {})
        if not isinstance(schema, dict):
            raise InvalidRequest(f"'{_PARAM}' must be a JSON object.", param=_PARAM)
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
        validator = self._validators.get(key)
        if validator is None:
            validator = _checked_validator(schema)
            if len(self._validators) >= self._max:
                del self._validators[next(iter(self._validators))]
            self._validators[key] = validator
        return SchemaGuard(str(spec.get("name", "")), validator)


def _checked_validator(schema: dict[str, Any]) -> Validator:
    kind = validators.validator_for(schema, default=Draft202012Validator)
    try:
        kind.check_schema(schema)
    except SchemaError as exc:
        raise InvalidRequest(
            f"'{_PARAM}' is not a valid JSON schema: {exc.message}", param=_PARAM
        ) from None
    return kind(schema)


class SchemaGuard:
    """The schema of one request, and how many answers missed it so far."""

    __slots__ = ("misses", "name", "reasons", "validator")

    def __init__(self, name: str, validator: Validator) -> None:
        self.name = name
        self.validator = validator
        self.misses = 0
        self.reasons: list[str] = []

    @property
    def exhausted(self) -> bool:
        return self.misses >= MAX_MISSES

    def check(self, completion: dict[str, Any]) -> fl.Failure | None:
        """Check a chat.completion's first choice; unwraps a fenced answer in place."""
        choices = completion.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict) or choice.get("finish_reason") in UNCHECKED_FINISH:
            return None
        msg = choice.get("message")
        if isinstance(msg, dict) and msg.get("tool_calls"):
            return None
        content = msg.get("content") if isinstance(msg, dict) else None
        text, why = self._judge(content)
        if why is not None:
            return self._miss(why)
        if isinstance(msg, dict) and text != content:
            msg["content"] = text
        return None

    def check_text(self, text: str, finish_reason: str | None) -> fl.Failure | None:
        """Check a streamed answer's whole content, at its end."""
        if finish_reason in UNCHECKED_FINISH:
            return None
        _, why = self._judge(text)
        return self._miss(why) if why is not None else None

    def _judge(self, content: Any) -> tuple[str, str | None]:
        """(the JSON text, None) when ``content`` validates, else (content, what is wrong)."""
        if not isinstance(content, str) or not content.strip():
            return "", "the answer has no content"
        text = content
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            fenced = _FENCE.match(content)
            try:
                text = fenced[1] if fenced else content
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                return content, f"the answer is not JSON: {content[:80]!r}"
        err = best_match(self.validator.iter_errors(value))
        if err is not None:
            return content, f"the answer does not match the schema at {err.json_path}: " + (
                err.message[:200]
            )
        return text, None

    def _miss(self, why: str) -> fl.Failure:
        self.misses += 1
        self.reasons.append(why)
        return fl.Failure(
            fl.FailureClass.SCHEMA, 200, None, why, note="structured output did not validate"
        )

    def error(self, attempts: list[dict[str, Any]]) -> GatewayError:
        """The client's error once the retry missed too."""
        return UpstreamsFailed(
            f"No upstream answer matched response_format json_schema {self.name!r} after "
            f"{self.misses} tries (the first answer, then one retry on the next candidate): "
            + "; ".join(self.reasons)
            + ". Simplify the schema, or pin a deployment with native structured outputs.",
            status=502,
            code="structured_output_invalid",
            extra={"attempts": attempts},
        )
