"""The answers the gateway's own limits give: 429 (key limits, budgets, deployments at their
limits) and 503 (every capable deployment's circuit open), with ``Retry-After`` and the
``x-ratelimit-*`` headers as OpenAI sends them."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

from gateway.errors import GatewayError, RateLimited, UpstreamsFailed
from gateway.state.base import REFUSED_BUDGET, REFUSED_TPM, KeyVerdict
from gateway.tenancy.keys import MICROS


def refusal(v: KeyVerdict, tokens: int) -> GatewayError:
    """429 for a key over its RPM, TPM or budget."""
    headers = dict(ratelimit_headers(v))
    wait = v.retry_after_s
    if v.refused == REFUSED_BUDGET:
        err = RateLimited(_budget_message(v, wait), code="insufficient_quota", headers=headers)
        err.type = "insufficient_quota"
    elif v.refused == REFUSED_TPM and wait < 0:
        err = RateLimited(
            f"This request may use {tokens} tokens (prompt + max_tokens or the output reserve), "
            f"more than this API key's limit of {v.tpm_limit} tokens per minute. Lower "
            "max_tokens or shorten the prompt.",
            headers=headers,
        )
        wait = 60.0
    elif v.refused == REFUSED_TPM:
        err = RateLimited(
            f"Rate limit reached for this API key: {v.tpm_limit} tokens per minute (this "
            f"request reserves {tokens}). Retry in {_secs(wait)}s.",
            headers=headers,
        )
    else:
        err = RateLimited(
            f"Rate limit reached for this API key: {v.rpm_limit} requests per minute. "
            f"Retry in {_secs(wait)}s.",
            headers=headers,
        )
    if wait >= 0:
        err.headers["Retry-After"] = str(_secs(wait))
    return err


def _budget_message(v: KeyVerdict, wait: float) -> str:
    budget = (v.budget_micros or 0) / MICROS
    text = f"This API key's budget is spent: ${v.spend_micros / MICROS:.4f} of ${budget:.2f} used"
    if v.reserved_micros:
        text += f", ${v.reserved_micros / MICROS:.4f} held by requests in flight"
    if wait < 0:
        return text + ". The budget does not renew (period 'total'): ask the operator for more."
    renews = time.strftime("%Y-%m-%d %H:%M", time.gmtime(time.time() + wait))
    return text + f". It renews at {renews} UTC; ask the operator to raise it sooner."


def unavailable(
    blocked: Sequence[str], opened: Mapping[str, float], limited: Mapping[str, tuple[float, str]]
) -> GatewayError:
    """Every deployment that could serve the request is open or at its own limit."""
    parts, waits = [], []
    all_limits = True
    for tid in blocked:
        if tid in opened:
            all_limits = False
            waits.append(opened[tid])
            parts.append(f"{tid} (circuit open for {opened[tid]:.0f}s more after failures)")
        elif tid in limited:
            seconds, reason = limited[tid]
            if seconds > 0:
                waits.append(seconds)
            parts.append(f"{tid} ({reason})")
    wait = _secs(min(waits)) if waits else 1
    listed = "; ".join(parts) or "none"
    if all_limits:
        return RateLimited(
            f"Every deployment that can serve this request is at its own rate limit: {listed}. "
            f"Retry in {wait}s.",
            headers={"Retry-After": str(wait)},
        )
    return UpstreamsFailed(
        f"Every deployment that can serve this request is unavailable: {listed}. Retry in "
        f"{wait}s, or allow more fallback (X-GLM-Fallback, model 'auto').",
        status=503,
        code="no_available_deployment",
        headers={"Retry-After": str(wait)},
    )


def ratelimit_headers(v: KeyVerdict) -> list[tuple[str, str]]:
    """``x-ratelimit-*`` as OpenAI sends them, for the limits the key has."""
    out: list[tuple[str, str]] = []
    if v.rpm_limit is not None:
        out += [
            ("x-ratelimit-limit-requests", str(v.rpm_limit)),
            ("x-ratelimit-remaining-requests", str(v.rpm_remaining)),
            ("x-ratelimit-reset-requests", go_duration(v.rpm_reset_s)),
        ]
    if v.tpm_limit is not None:
        out += [
            ("x-ratelimit-limit-tokens", str(v.tpm_limit)),
            ("x-ratelimit-remaining-tokens", str(v.tpm_remaining)),
            ("x-ratelimit-reset-tokens", go_duration(v.tpm_reset_s)),
        ]
    return out


def go_duration(seconds: float) -> str:
    """``6m0s``, ``1s``, ``250ms``: the format of OpenAI's ``x-ratelimit-reset-*``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    hours, rest = divmod(math.ceil(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _secs(seconds: float) -> int:
    return max(1, math.ceil(seconds))
