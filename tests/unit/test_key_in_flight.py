"""A key's ``max_in_flight``: its spec and default, and the refusal admission answers with
(in one process, on the memory backend)."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from gateway.catalogue.loader import load_config
from gateway.catalogue.needs import resolve_needs
from gateway.catalogue.schema import KeyLimits
from gateway.errors import RateLimited
from gateway.state.base import Report
from gateway.state.memory import MemoryState
from gateway.tenancy.auth import Caller
from gateway.tenancy.keys import KeySpec, new_key
from gateway.tenancy.limits import SLOT_SLACK_S, Admission
from tests.support.procs import CONFIG


def test_the_spec_sets_it_and_the_default_fills_it() -> None:
    _, own = new_key(KeySpec(name="a", max_in_flight=4), KeyLimits(max_in_flight=9), 0.0)
    _, dflt = new_key(KeySpec(name="b"), KeyLimits(max_in_flight=9), 0.0)
    _, none = new_key(KeySpec(name="c"), KeyLimits(), 0.0)
    assert (own.max_in_flight, dflt.max_in_flight, none.max_in_flight) == (4, 9, None)
    assert own.public()["max_in_flight"] == 4
    with pytest.raises(ValidationError):
        KeySpec(name="d", max_in_flight=0)


async def test_admission_refuses_past_the_limit_and_frees_the_slot_on_settle() -> None:
    config = load_config(CONFIG, demo_simulator_url="http://127.0.0.1:9")
    state = MemoryState(config.gateway.breaker)
    _, record = new_key(KeySpec(name="mif", max_in_flight=1), KeyLimits(), time.time())
    await state.put_key(record)
    admission = Admission(config, state)
    caller = Caller(record.id, record)
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}

    first = await admission.admit(resolve_needs(body, {}, config), caller)
    assert first.lease is not None and first.lease.slot
    with pytest.raises(RateLimited) as caught:
        await admission.admit(resolve_needs(body, {}, config), caller)
    err = caught.value
    assert err.headers["Retry-After"] == "1" and err.code == "rate_limit_exceeded"
    assert "its limit is 1 running at once" in err.message
    await state.after(Report(lease=first.lease), time.time())
    again = await admission.admit(resolve_needs(body, {"x-glm-timeout": "10"}, config), caller)
    assert again.lease is not None and again.lease.slot != first.lease.slot
    # held for the request's own deadline (X-GLM-Timeout 10 s) plus slack, not the default 300 s
    until = state._slots[record.id][again.lease.slot]
    assert until - time.time() <= 10 + SLOT_SLACK_S
