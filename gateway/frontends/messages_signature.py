"""Signatures on the thinking blocks the gateway returns, checked when a client replays them.

GLM's preserved thinking needs earlier turns' ``reasoning_content`` back unmodified; a block the
gateway did not sign (Anthropic's own, or an edited one) must never reach GLM as if it were the
model's. A signature is ``glmgw1.`` + base64 HMAC-SHA256 of the thinking text under the
operator's key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

PREFIX = "glmgw1."


def sign_thinking(text: str, key: bytes) -> str:
    """The signature of ``text`` under ``key``."""
    mac = hmac.new(key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    return PREFIX + base64.b64encode(mac).decode("ascii")


def verify_thinking(text: str, signature: str, key: bytes) -> bool:
    """Whether ``signature`` is this gateway's signature of ``text`` under ``key``
    (constant-time compare; never raises)."""
    expected = sign_thinking(text, key).encode("ascii")
    given = signature.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(expected, given)
