"""The execution actor in the real graph (``execution.enabled: true``): the coordinator's
decisions become orders, and orders, fills and the position reach Valkey."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from pipelines.execution.config import ExecutionConfig
from pipelines.persistence.trading_store import TradingStore
from tests.helpers import FAST_RECONNECT, graph_for, make_cfg, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# A Monday, an hour into the session (past the opening auction, when the policy makes no entries).
EARLIER_SESSION = "2025-11-24T10:00:00-03:00"


def test_decisions_become_orders_and_fills_in_valkey(ray_session, valkey_server, tmp_path, model_dir):
    import ray

    _, url = valkey_server
    account = f"g{uuid.uuid4().hex[:12]}"
    cfg = make_cfg(tmp_path, features={"enabled": True},
                   hmarl={"enabled": True, "model_dir": str(model_dir), "horizon_s": 5, "decision_every_ms": 250,
                          "threshold": 0.05},
                   simulator={"rate": 300, "speed": 10, "start": EARLIER_SESSION})
    cfg = dataclasses.replace(cfg, execution=ExecutionConfig(enabled=True, account=account),
                              risk=dataclasses.replace(cfg.risk, account=account))
    (sym,) = cfg.symbols
    g = graph_for(cfg, url)
    store = TradingStore(url, **FAST_RECONNECT)
    try:
        ex = g.handle(f"execution:{account}")
        wait_for(lambda: ray.get(ex.stats.remote())["counts"].get("fills", 0) >= 1, timeout=25,
                 what="a fill of the execution actor")
        final = g.shutdown()
        fills = store.fills_since(0, account=account)
        positions = store.load_positions(account)
    finally:
        if g.actors:
            g.shutdown()
        store.close()
    ex_final = final[f"execution:{account}"]
    assert ex_final["decisions"] >= 1 and ex_final["counts"]["orders"] >= 1
    assert final[f"coordinator:{sym}"]["execution"]["sent"] >= 1
    # every fill the engine counted is in Valkey once, and the stored position is their sum
    assert len(fills) == ex_final["counts"]["fills"] >= 1
    assert len({f.fill_id for f in fills}) == len(fills)
    signed = sum(f.quantity if f.side == "BUY" else -f.quantity for f in fills)
    (pos,) = [p for p in positions if p.symbol == sym]
    assert pos.quantity == signed == ex_final["positions"].get(sym, 0)
