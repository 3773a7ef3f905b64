"""The feature benchmark: the live engine, the batch path and the naive recompute on one tape.

``python scripts/bench.py features`` prints these numbers; they are measured on
a synthetic tape (:mod:`pipelines.features.synthetic`), after the warm-up
branches, on this machine.
"""

from __future__ import annotations

import time

import numpy as np

from pipelines.features.batch import compute_batch, trade_arrays
from pipelines.features.core import BROKER_WINDOW, FeatureEngineCore
from pipelines.features.naive import NaiveFeatureEngine
from pipelines.features.synthetic import make_synthetic_trades


def bench_features(n_events: int = 100_000, n_batch: int = 1_000_000, n_naive: int = 300,
                   seed: int = 11) -> dict[str, float]:
    """Measure the live engine, the batch path and the naive recompute on one synthetic tape.

    Returns ``update_p50_us``/``update_p99_us`` (one ``update`` call),
    ``vector_p50_us``/``vector_p99_us`` (one ``vector()`` call after each trade),
    ``batch_events_per_s`` (:func:`pipelines.features.batch.compute_batch` on ``n_batch`` trades),
    ``naive_vector_p50_us`` (one naive update + vector, :mod:`pipelines.features.naive`)
    and ``speedup_vs_naive`` = naive p50 / (update p50 + vector p50).
    """
    tape = make_synthetic_trades(max(n_events, n_batch), seed=seed)
    cols = trade_arrays(tape.iloc[:n_events])
    ts, px, qty, tt = (cols[k].tolist() for k in ("ts_event", "price", "qty", "trade_type"))
    buyer, seller = cols["buyer"].tolist(), cols["seller"].tolist()
    eng = FeatureEngineCore()
    upd = np.empty(n_events)
    vec = np.empty(n_events)
    clock = time.perf_counter_ns
    update, vector = eng.update, eng.vector
    for j in range(n_events):
        t0 = clock()
        update(ts[j], px[j], qty[j], tt[j], buyer[j], seller[j])
        t1 = clock()
        vector()
        t2 = clock()
        upd[j] = t1 - t0
        vec[j] = t2 - t1
    warm = slice(min(BROKER_WINDOW * 2, n_events // 2), None)  # skip the warm-up branches
    upd, vec = upd[warm] / 1e3, vec[warm] / 1e3

    batch_tape = tape.iloc[:n_batch]
    compute_batch(batch_tape.iloc[:10_000])  # imports and caches outside the timing
    t0 = time.perf_counter()
    compute_batch(batch_tape)
    batch_s = time.perf_counter() - t0

    naive = NaiveFeatureEngine()
    trades = list(tape.iloc[: n_naive + 250].itertuples(index=False, name=None))
    fields = list(tape.columns)
    naive_us = []
    for j, row in enumerate(trades):
        rec = dict(zip(fields, row))
        t0 = clock()
        naive.update(rec["ts_event"], rec["price"], rec["qty"], rec["trade_type"], rec["buyer"], rec["seller"])
        naive.vector()
        if j >= 250:
            naive_us.append((clock() - t0) / 1e3)
    upd_p50, vec_p50 = float(np.percentile(upd, 50)), float(np.percentile(vec, 50))
    naive_p50 = float(np.percentile(naive_us, 50))
    return {
        "update_p50_us": upd_p50,
        "update_p99_us": float(np.percentile(upd, 99)),
        "vector_p50_us": vec_p50,
        "vector_p99_us": float(np.percentile(vec, 99)),
        "batch_events_per_s": n_batch / batch_s,
        "naive_vector_p50_us": naive_p50,
        "speedup_vs_naive": naive_p50 / (upd_p50 + vec_p50),
    }
