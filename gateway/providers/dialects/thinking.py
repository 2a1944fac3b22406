"""The one client-facing reasoning switch, read from any form and written in the host's form.

Clients may send Z.ai's ``thinking: {type}``, OpenAI's ``reasoning_effort``, or (when they were
written for one host) OpenRouter's ``reasoning``, SiliconFlow's ``enable_thinking`` or vLLM's
``chat_template_kwargs.enable_thinking``. Every form is removed from the body and the switch is
written back once, in the target's form; variants before GLM-4.5 never receive it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.providers.dialects.spec import ThinkingForm

_FORMS = ("thinking", "reasoning_effort", "reasoning", "enable_thinking")
SWITCH_FIELDS = frozenset((*_FORMS, "chat_template_kwargs"))
"""Every field the switch may be in: a body with none of them passes :func:`apply_switch`
unchanged."""


@dataclass(frozen=True, slots=True)
class Switch:
    enabled: bool
    effort: str | None
    """OpenAI effort (``low``/``medium``/``high``...) when the client gave one."""
    clear_thinking: bool | None
    """Z.ai ``thinking.clear_thinking`` when the client gave it."""
    source: str
    """The client's field name, for the adaptation report."""


def read_switch(body: dict[str, Any]) -> Switch | None:
    """The reasoning switch the client set, in whatever form; None when it set none."""
    th = body.get("thinking")
    if isinstance(th, dict) and th.get("type") in ("enabled", "disabled"):
        clear = th.get("clear_thinking")
        return Switch(
            th["type"] == "enabled", None, clear if isinstance(clear, bool) else None, "thinking"
        )
    effort = body.get("reasoning_effort")
    if isinstance(effort, str):
        on = effort != "none"
        return Switch(on, effort if on else None, None, "reasoning_effort")
    r = body.get("reasoning")
    if isinstance(r, dict):
        eff = r.get("effort")
        on = r.get("enabled") is not False and eff != "none"
        return Switch(on, eff if on and isinstance(eff, str) else None, None, "reasoning")
    et = body.get("enable_thinking")
    if isinstance(et, bool):
        return Switch(et, None, None, "enable_thinking")
    ctk = body.get("chat_template_kwargs")
    if isinstance(ctk, dict) and isinstance(ctk.get("enable_thinking"), bool):
        return Switch(ctk["enable_thinking"], None, None, "chat_template_kwargs")
    return None


def apply_switch(
    out: dict[str, Any], form: ThinkingForm, accepts: bool, changes: list[str]
) -> None:
    """Rewrite ``out`` so the switch is in ``form``; drop it when the variant ``accepts`` none."""
    if SWITCH_FIELDS.isdisjoint(out):
        return
    switch = read_switch(out)
    if switch is None:
        return
    for key in _FORMS:
        out.pop(key, None)
    _drop_template_switch(out)
    if not accepts:
        changes.append(f"{switch.source}=dropped")
        return
    written = _write(out, form, switch)
    if written != switch.source:
        changes.append(f"{switch.source}={written}")


def _drop_template_switch(out: dict[str, Any]) -> None:
    ctk = out.get("chat_template_kwargs")
    if isinstance(ctk, dict) and "enable_thinking" in ctk:
        rest = {k: v for k, v in ctk.items() if k != "enable_thinking"}
        if rest:
            out["chat_template_kwargs"] = rest
        else:
            del out["chat_template_kwargs"]


def _write(out: dict[str, Any], form: ThinkingForm, s: Switch) -> str:
    """Write the switch; return what the report calls it ("dropped" if the form cannot say it)."""
    if form is ThinkingForm.THINKING:
        th: dict[str, Any] = {"type": "enabled" if s.enabled else "disabled"}
        if s.clear_thinking is not None:
            th["clear_thinking"] = s.clear_thinking
        out["thinking"] = th
    elif form is ThinkingForm.REASONING:
        r: dict[str, Any] = {"enabled": s.enabled}
        if s.effort is not None:
            r["effort"] = s.effort
        out["reasoning"] = r
    elif form is ThinkingForm.ENABLE_THINKING:
        out["enable_thinking"] = s.enabled
    elif form is ThinkingForm.CHAT_TEMPLATE_KWARGS:
        ctk = out.get("chat_template_kwargs")
        out["chat_template_kwargs"] = {
            **(ctk if isinstance(ctk, dict) else {}),
            "enable_thinking": s.enabled,
        }
    else:
        effort = "none" if not s.enabled else s.effort
        if effort is None:
            return "host_default"  # "enabled" without an effort: the host's default is on
        out["reasoning_effort"] = effort
    return form.value
