"""Coding Plan surfaces in the simulator: a usage window per provider, 1113 off the plan, quota.

A provider given a plan (``POST /_sim/plans``) serves chat at any path with ``/coding/`` in it
(Z.ai's ``/api/coding/paas/v4``), and Anthropic Messages at ``/{provider}/coding/anthropic``
(the plan's Anthropic-style surface), from one window of ``requests`` per ``window_s``: the window
opens with its first request; past its allowance every request gets HTTP 429 with GLM code
``code`` (1308 by default: "Usage limit reached ..., resets at <Beijing time>"); once the
stated reset time passes, a new window opens. With ``general_balance: false`` the key has no
pay-as-you-go balance: the general path answers 429 / 1113 "Insufficient balance or no
resource package" (what Z.ai answers a Coding Plan key sent to ``/api/paas/v4``). Messages
answers carry the same codes in Anthropic's shape, ``{"type": "error", "error": {"type":
"1308", "message": ...}}``, as Z.ai's Anthropic endpoint does.
``GET /{provider}/api/monitor/usage/quota/limit`` answers the shape community tools read from
Z.ai: ``data.limits[]`` with ``TOKENS_LIMIT`` (here: requests) ``usage`` / ``currentValue`` /
``remaining`` / ``percentage`` / ``nextResetTime`` (epoch ms).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from gateway.simulator import dialects as d

GLM_TZ = timezone(timedelta(hours=8))
_ids = itertools.count(1)
QUOTA_PATH = "/api/monitor/usage/quota/limit"
_MESSAGES = {
    "1308": "Usage limit reached for 5 hour. Your limit will reset at {at}",
    "1310": "Weekly/Monthly Limit Exhausted. Your limit will reset at {at}",
}


def _anthropic_error(status: int, code: str, message: str) -> d.ErrorReply:
    """``{"type": "error", "error": {"type": "<GLM code>", "message"}, "request_id"}``."""
    rid = f"{time.strftime('%Y%m%d%H%M%S')}{next(_ids):018x}"
    body = {"type": "error", "error": {"type": code, "message": message}, "request_id": rid}
    return d.ErrorReply(status, body)


class PlanError(ValueError):
    """A ``/_sim/plans`` body the simulator cannot use."""


@dataclass(slots=True)
class PlanWindow:
    requests: int
    window_s: float
    code: str = "1308"
    general_balance: bool = True
    used: int = 0
    resets_at: float = 0.0
    """Epoch seconds, a whole second (the message states seconds): the window's end."""

    def roll(self, now: float) -> None:
        if now >= self.resets_at:
            self.used = 0
            self.resets_at = float(math.ceil(now + self.window_s))

    def take(self, now: float) -> bool:
        """Count one request; False when the window has no room left."""
        self.roll(now)
        if self.used >= self.requests:
            return False
        self.used += 1
        return True


class PlanBook:
    """Plans by provider; the clock is injectable for unit tests."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._plans: dict[str, PlanWindow] = {}
        self._clock = clock

    def set(self, raw: Any) -> None:
        """Replace every plan from ``{provider: {requests, window_s, code?, general_balance?}}``."""
        if not isinstance(raw, Mapping):
            raise PlanError("plans: a JSON object {provider: {requests, window_s, ...}}")
        plans = {}
        for provider, spec in raw.items():
            if not isinstance(spec, Mapping) or set(spec) - {
                "requests",
                "window_s",
                "code",
                "general_balance",
            }:
                raise PlanError(
                    f"plans.{provider}: keys are requests, window_s, code, general_balance"
                )
            requests, window = spec.get("requests"), spec.get("window_s")
            if not isinstance(requests, int) or requests < 0:
                raise PlanError(f"plans.{provider}.requests: a whole number >= 0")
            if not isinstance(window, int | float) or window <= 0:
                raise PlanError(f"plans.{provider}.window_s: seconds > 0")
            code = str(spec.get("code", "1308"))
            if code not in _MESSAGES:
                raise PlanError(f"plans.{provider}.code: one of {', '.join(_MESSAGES)}")
            balance = spec.get("general_balance", True) is not False
            plans[str(provider)] = PlanWindow(requests, float(window), code, balance)
        self._plans = plans

    def clear(self) -> None:
        self._plans = {}

    def refuse(self, provider: str, path: str, api: str = "chat") -> d.ErrorReply | None:
        """The plan's answer to a request at ``path``, or None to serve it. ``api``: ``chat``
        (GLM's error shape) or ``messages`` (the Anthropic-style surface: Anthropic's shape with
        the GLM code as ``error.type``, what Z.ai's ``/api/anthropic`` answers Claude Code)."""
        plan = self._plans.get(provider)
        if plan is None:
            return None
        error = _anthropic_error if api == "messages" else d.zhipu_error
        if "/coding/" not in path:
            if plan.general_balance:
                return None
            return error(
                429, "1113", "Insufficient balance or no resource package. Please recharge."
            )
        now = self._clock()
        if plan.take(now):  # one window per plan, whichever API the request came by
            return None
        at = datetime.fromtimestamp(plan.resets_at, GLM_TZ).strftime("%Y-%m-%d %H:%M:%S")
        return error(429, plan.code, _MESSAGES[plan.code].format(at=at))

    def quota(self, provider: str) -> dict[str, Any]:
        """The quota endpoint's answer (Z.ai's shape as community tools read it)."""
        plan = self._plans.get(provider)
        if plan is None:
            return {
                "code": 200,
                "msg": "Operation successful",
                "success": True,
                "data": {"limits": []},
            }
        plan.roll(self._clock())
        left = max(plan.requests - plan.used, 0)
        percentage = 100 * plan.used // plan.requests if plan.requests else 100
        limit = {
            "type": "TOKENS_LIMIT",
            "unit": 3,
            "number": 5,
            "usage": plan.requests,
            "currentValue": plan.used,
            "remaining": left,
            "percentage": percentage,
            "nextResetTime": int(plan.resets_at * 1000),
        }
        return {
            "code": 200,
            "msg": "Operation successful",
            "success": True,
            "data": {"limits": [limit], "level": "pro"},
        }
