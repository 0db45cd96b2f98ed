"""The platform's brokerage steps name one limit, the one its settings set: the definitions'
``submit`` nodes and ``block`` gather nodes use ``BROKERAGE_LIMIT``, and ``TRADEFLOW_PM_BROKER_RATE``
overrides it once per change (audited), not at every publish."""

from __future__ import annotations

import json

import redis

from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.testing import make_store
from portfolio_manager.config import PMSettings
from portfolio_manager.daily import BROKERAGE_LIMIT, apply_broker_rate


def test_every_brokerage_step_of_the_definitions_names_the_settings_limit() -> None:
    directory = PMSettings().definitions_dir
    for name, nodes in (("rebalance-ca", ("submit", "block")), ("rebalance-us", ("submit", "block")),
                        ("submit-orders", ("submit",))):
        document = json.loads((directory / f"{name}.json").read_text())
        for node in nodes:
            assert document["nodes"][node]["limits"]["rate"]["key"] == f"'{BROKERAGE_LIMIT}'", (name, node)


def test_the_broker_rate_setting_is_applied_once_per_change(real_redis: redis.Redis, key_prefix: str) -> None:
    engine = Engine(make_store(real_redis, key_prefix), MemoryEnqueuer())
    settings = PMSettings(broker_rate=50)
    apply_broker_rate(engine, settings)
    apply_broker_rate(engine, settings)  # a second publish with the same setting changes nothing
    [state] = engine.limits()
    assert (state.name, state.per_second, state.override) == (BROKERAGE_LIMIT, 50, True)
    events = engine.audit(kinds=["limit_set"]).events
    assert [(e.by, e.detail["per_second"]) for e in events] == [("TRADEFLOW_PM_BROKER_RATE", 50)]
