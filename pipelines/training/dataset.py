"""Training samples for the ML voter: the live engine's feature vectors at the decision cadence,
labelled from prices strictly after each sample.

Features: the events go through :class:`pipelines.features.engine.SymbolAnalytics`, the very class
the live feature actor runs (so no second implementation can drift), and a sample is taken where
the live ML voter gets one: the boundary vector of each decision round, the first feature vector
at or after each ``decision_every_ns`` boundary (``actors.rounds.DecisionRounds.on_output``).
A feature's value therefore only uses events up to and including the sample's trade.

Labels (:mod:`pipelines.training.labels`): from prices strictly after the sample's time, the
trade tape (``training.label.price: trade``, what the feedback system scores voters on) or the
mid of the best bid and ask (``mid``: without the bid-ask bounce of last-trade prices): the fixed
horizon with a dead zone, or the triple barrier. The dead zone is at least the round
trip's cost in ticks (spread + B3 fees both ways, :func:`cost_ticks`): a move that does not pay
the costs is not a trade, so it is not taught as one. Each sample keeps ``t1``, the end of its
label window, which the purged cross-validation needs.

A dataset of several inputs (days, files) is their concatenation; no label crosses an input's end
(the window of a sample near the end is unknown and gets no label). :meth:`Dataset.save` writes
Parquet with the metadata inside; :meth:`Dataset.load` refuses a file whose feature hash is not
the running engine's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.alpha.ml import ENGINE_FEATURE_HASH, feature_hash, instrument_root
from pipelines.execution.costs import CostModel, CostsConfig
from pipelines.features.engine import VECTOR_NAMES, SymbolAnalytics
from pipelines.model.clock import NS_PER_S, from_ns
from pipelines.model.instruments import point_value_for
from pipelines.model.messages import BookSnapshot, FeatureVector, Trade
from pipelines.training import labels as lb
from pipelines.training.config import LabelConfig

KEY_COLUMNS = ("t0", "t1", "symbol", "price", "label", "move_ticks", "last_return_ticks", "barrier", "input")
_META_KEY = b"quantumtrader.dataset"


def cost_ticks(symbol: str, tick_size: float, spread_ticks: float, costs: CostsConfig = CostsConfig()) -> float:
    """The round trip's cost in ticks: the spread crossed once plus B3's fee (and the broker's)
    on both sides. WDO at the default tiers: 1 + 2 x R$1.10 / R$5 = 1.44 ticks."""
    fee = CostModel(costs).fees(symbol, 1)
    return lb.round_trip_cost_ticks(symbol, tick_size, point_value_for(symbol), fee, spread_ticks)


@dataclass
class Dataset:
    """Samples (one row each, sorted by ``t0``): :data:`KEY_COLUMNS` + the feature columns."""

    frame: pd.DataFrame
    feature_names: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    # -- the labelled rows, as the CV and the fit read them -------------------------------

    def labelled(self) -> pd.DataFrame:
        return self.frame[self.frame["label"].notna()]

    @property
    def X(self) -> np.ndarray:
        return self.labelled()[list(self.feature_names)].to_numpy(np.float64)

    @property
    def y(self) -> np.ndarray:
        return self.labelled()["label"].to_numpy(np.float64)

    @property
    def t0(self) -> np.ndarray:
        return self.labelled()["t0"].to_numpy(np.int64)

    @property
    def t1(self) -> np.ndarray:
        return self.labelled()["t1"].to_numpy(np.int64)

    def subset(self, positions: np.ndarray) -> "Dataset":
        """The labelled rows at ``positions`` (of :meth:`labelled`) as a dataset: a training fold."""
        return Dataset(self.labelled().iloc[positions].reset_index(drop=True), self.feature_names, dict(self.meta))

    def summary(self) -> dict[str, Any]:
        f = self.frame
        y = f["label"]
        return {"samples": len(f), "labelled": int(y.notna().sum()), "up": int((y == 1).sum()),
                "down": int((y == 0).sum()), "dead_zone": int(((f["barrier"] != "open") & y.isna()).sum()),
                "unknown_end": int((f["barrier"] == "open").sum()),
                "start": _iso(int(f["t0"].min())) if len(f) else None,
                "end": _iso(int(f["t0"].max())) if len(f) else None}

    # -- files ---------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        table = pa.Table.from_pandas(self.frame, preserve_index=False)
        meta = {**self.meta, "feature_names": list(self.feature_names)}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()})
        pq.write_table(table, str(path))

    @classmethod
    def load(cls, path: str | Path, *, expected_hash: str = ENGINE_FEATURE_HASH) -> "Dataset":
        try:
            table = pq.read_table(str(path))
        except (OSError, pa.ArrowException) as e:
            raise ValueError(f"dataset {path}: not a readable Parquet file ({e})") from None
        raw = (table.schema.metadata or {}).get(_META_KEY)
        if raw is None:
            raise ValueError(f"dataset {path}: no dataset metadata (not written by Dataset.save)")
        meta = json.loads(raw)
        names = tuple(meta.pop("feature_names"))
        got = meta.get("feature_hash")
        if got != expected_hash:
            raise ValueError(f"dataset {path}: feature_hash {got} but the engine's is {expected_hash}: the features "
                             f"were defined differently when it was built; rebuild it")
        return cls(table.to_pandas(), names, meta)


def _iso(ns: int) -> str:
    return from_ns(ns).isoformat(timespec="seconds")


def boundary_vectors(events: Sequence, symbol: str, tick_size: float, decision_every_ns: int,
                     vector_every_ns: int = 0) -> list[FeatureVector]:
    """The feature vectors the live ML voter would get: one per decision round, the first vector at
    or after each boundary. ``events``: one symbol's trades and books in feed order."""
    if decision_every_ns <= 0:
        raise ValueError(f"decision cadence must be > 0 ns, got {decision_every_ns}")
    # With vectors after every trade (0) or on a cadence dividing the decision clock, the boundary
    # vectors are exactly the vectors emitted on the decision clock itself: ask the engine for those only.
    every = decision_every_ns if vector_every_ns == 0 or decision_every_ns % vector_every_ns == 0 else vector_every_ns
    out: list = []
    analytics = SymbolAnalytics(symbol, tick_size, vector_every_ns=every)
    analytics.on_events([e._replace(seq=i + 1) for i, e in enumerate(events)], out)
    picked, next_ns = [], 0
    for m in out:
        if type(m) is FeatureVector and m.ts_event >= next_ns:
            picked.append(m)
            next_ns = m.ts_event - m.ts_event % decision_every_ns + decision_every_ns
    return picked


def mid_path(events: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """(ts, mid) of every book with both sides quoted, in feed order."""
    books = [e for e in events if isinstance(e, BookSnapshot) and e.bid_px and e.ask_px]
    return (np.array([b.ts_event for b in books], np.int64),
            np.array([(b.bid_px[0] + b.ask_px[0]) / 2.0 for b in books], np.float64))


def build_dataset(events: Sequence, symbol: str, tick_size: float, label: LabelConfig, *,
                  decision_every_ns: int, vector_every_ns: int = 0, costs: CostsConfig = CostsConfig(),
                  source: str | None = None, input_name: str = "0") -> Dataset:
    """One input's samples of ``symbol`` (other symbols' events are skipped)."""
    mine = [e for e in events if e.symbol == symbol]
    trades = [e for e in mine if isinstance(e, Trade)]
    if not trades:
        raise ValueError(f"no trades of {symbol} in the input")
    vectors = boundary_vectors(mine, symbol, tick_size, decision_every_ns, vector_every_ns)
    if not vectors:
        raise ValueError(f"no feature vector of {symbol}: too few valid trades")
    t0 = np.array([v.ts_event for v in vectors], np.int64)
    if label.price == "mid":
        path_ts, path_px = mid_path(mine)
    else:
        path_ts = np.array([t.ts_event for t in trades], np.int64)
        path_px = np.array([t.price for t in trades], np.float64)
    order = np.argsort(path_ts, kind="stable")  # the feed's order within a timestamp
    path_ts, path_px = path_ts[order], path_px[order]
    if label.price == "mid":
        # The mid at the sample: the last book at or before it (NaN before the first book: no label).
        at = np.searchsorted(path_ts, t0, side="right") - 1
        p0 = np.where(at >= 0, path_px[np.maximum(at, 0)], np.nan)
    else:
        p0 = np.array([v.price for v in vectors], np.float64)
    cost = cost_ticks(symbol, tick_size, label.spread_ticks, costs)
    dead_ticks = lb.dead_zone_ticks(label.dead_zone_ticks, cost)
    horizon_ns = int(round(label.horizon_s * NS_PER_S))
    known = ~np.isnan(p0)
    y, t1 = np.full(len(t0), np.nan), t0 + horizon_ns
    move, barrier = np.full(len(t0), np.nan), np.full(len(t0), "open", dtype=object)
    if known.any():
        k = np.flatnonzero(known)
        if label.kind == "triple_barrier":
            y[k], t1[k], move[k], barrier[k] = lb.triple_barrier_labels(
                t0[k], p0[k], path_ts, path_px, label.tp_ticks * tick_size, label.sl_ticks * tick_size, horizon_ns,
                dead_ticks * tick_size)
        else:
            y[k], t1[k], move[k] = lb.fixed_horizon_labels(t0[k], p0[k], path_ts, path_px, horizon_ns,
                                                           dead_ticks * tick_size)
            barrier[k] = np.where(np.isnan(move[k]), "open", "time")
    frame = pd.DataFrame({
        "t0": t0, "t1": np.asarray(t1, np.int64), "symbol": symbol, "price": p0, "label": y,
        "move_ticks": np.asarray(move) / tick_size,
        # The baseline's input: the last move before the sample (between the two previous samples' prices).
        "last_return_ticks": np.nan_to_num(np.concatenate([[0.0], np.diff(p0)]) / tick_size),
        "barrier": np.asarray(barrier, dtype=object), "input": input_name})
    features = pd.DataFrame(np.array([v.values for v in vectors], np.float64), columns=list(vectors[0].names))
    frame = pd.concat([frame, features], axis=1)
    meta = {"symbol": symbol, "instrument_root": instrument_root(symbol), "data_source": source,
            "tick_size": tick_size, "decision_every_ns": int(decision_every_ns),
            "feature_hash": feature_hash(vectors[0].names),
            "label": {"kind": label.kind, "price": label.price, "horizon_ns": horizon_ns, "dead_zone_ticks": dead_ticks,
                      "round_trip_cost_ticks": round(cost, 6), "spread_ticks": label.spread_ticks,
                      **({"tp_ticks": label.tp_ticks, "sl_ticks": label.sl_ticks}
                         if label.kind == "triple_barrier" else {})},
            "events": len(mine), "trades": len(trades), "inputs": [input_name]}
    return Dataset(frame, tuple(vectors[0].names), meta)


def concat(datasets: Sequence[Dataset]) -> Dataset:
    """Several inputs' samples as one dataset (sorted by t0); they must share features, market and labels."""
    if not datasets:
        raise ValueError("no dataset to join")
    first = datasets[0]
    for d in datasets[1:]:
        for key in ("feature_hash", "label", "instrument_root", "decision_every_ns"):
            if d.meta.get(key) != first.meta.get(key):
                raise ValueError(f"inputs differ in {key}: {first.meta.get(key)} vs {d.meta.get(key)}")
    frame = pd.concat([d.frame for d in datasets], ignore_index=True)
    frame = frame.sort_values("t0", kind="stable").reset_index(drop=True)
    meta = {**first.meta, "events": sum(d.meta.get("events", 0) for d in datasets),
            "trades": sum(d.meta.get("trades", 0) for d in datasets),
            "inputs": [i for d in datasets for i in d.meta.get("inputs", [])],
            "data_source": first.meta.get("data_source") if len({d.meta.get("data_source") for d in datasets}) == 1
            else "replay"}
    return Dataset(frame, first.feature_names, meta)


def check_trainable(ds: Dataset, *, leak_auc: float, min_samples: int) -> None:
    """Refuse, in one line, what cannot give an honest model: too few labelled samples, one label
    class only, features not the engine's, or a feature that predicts the label on its own so well
    that it must see the future (single-feature AUC >= ``leak_auc``, or <= 1 - leak_auc)."""
    from pipelines.training.metrics import auc

    if ds.meta.get("feature_hash") != ENGINE_FEATURE_HASH or ds.feature_names != VECTOR_NAMES:
        raise ValueError(f"the dataset's features (hash {ds.meta.get('feature_hash')}) are not the engine's "
                         f"({ENGINE_FEATURE_HASH}); rebuild it with this version")
    y = ds.y
    if len(y) < min_samples:
        raise ValueError(f"{len(y)} labelled samples of {len(ds.frame)}: too few for the folds (need {min_samples}); "
                         f"use more data, a shorter decision cadence or a smaller dead zone")
    classes = np.unique(y)
    if len(classes) < 2:
        which = "up" if classes[0] == 1 else "down"
        raise ValueError(f"all {len(y)} labelled samples are {which}: one label class only, nothing to learn")
    X = ds.X
    for j, name in enumerate(ds.feature_names):
        col = X[:, j]
        ok = ~np.isnan(col)
        if ok.sum() < 20 or len(np.unique(y[ok])) < 2:
            continue
        a = auc(y[ok], col[ok])
        if a >= leak_auc or a <= 1 - leak_auc:
            raise ValueError(f"feature {name!r} alone predicts the label with AUC {a:.3f}: it must use prices after "
                             f"the sample (look-ahead); refused")
