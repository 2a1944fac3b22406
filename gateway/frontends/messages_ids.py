"""Tool-call ids between the two APIs: OpenAI's ``call_...`` and Anthropic's ``toolu_...``.

Anthropic ids must match ``^[a-zA-Z0-9_-]+$``; OpenAI ids from hosts may hold anything. A safe
OpenAI id ``X`` becomes ``toolu_X``; any other becomes ``toolu_b64_`` + its unpadded base64url.
:func:`call_id` inverts both, so a replayed ``tool_use`` / ``tool_result`` carries the host's
own id again; an id the gateway did not make (``toolu_01...`` from Anthropic, ``call_x`` from
another client) maps by the same rule, consistently for the call and its result.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets

_SAFE = re.compile(r"[A-Za-z0-9_-]+")
_PLAIN = "toolu_"
_ENCODED = "toolu_b64_"


def tool_use_id(call_id: str | None) -> str:
    """The Anthropic id for an OpenAI tool-call id (a fresh one when the host sent none)."""
    if not call_id:
        return _PLAIN + secrets.token_hex(12)
    if _SAFE.fullmatch(call_id) and not call_id.startswith("b64_"):
        return _PLAIN + call_id
    raw = base64.urlsafe_b64encode(call_id.encode("utf-8", "surrogatepass")).rstrip(b"=")
    return _ENCODED + raw.decode("ascii")


def call_id(tool_use_id: str) -> str:
    """The OpenAI tool-call id for an Anthropic ``tool_use`` id (inverse of :func:`tool_use_id`)."""
    if tool_use_id.startswith(_ENCODED):
        rest = tool_use_id[len(_ENCODED) :]
        try:
            return base64.urlsafe_b64decode(rest + "=" * (-len(rest) % 4)).decode("utf-8")
        except (binascii.Error, ValueError):
            return tool_use_id
    if tool_use_id.startswith(_PLAIN) and len(tool_use_id) > len(_PLAIN):
        return tool_use_id[len(_PLAIN) :]
    return tool_use_id
