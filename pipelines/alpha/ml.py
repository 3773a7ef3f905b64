"""The ML vote: an XGBoost model of P(price up over a horizon) from the feature vector.

Three parts, no Ray:

- :func:`feature_hash` fingerprints the catalog definitions of a feature list,
  so a model trained on one definition of the features is never fed another.
- :func:`train_model` labels feature vectors, fits a small XGBoost classifier
  on the earlier part of the data, scores it on the later part and registers
  it in a model directory.
- :class:`MLModel` loads the newest registered model (refusing one whose
  features do not match the engine's), reloads when a newer one is
  registered, and turns the last feature vector of each analytics batch into
  a :class:`Signal` - if the model was trained on the market it serves.

Model directory layout (default ``models/`` at the repository root)::

    <name>.ubj      the Booster (``save_model``; it carries its feature names)
    <name>.json     metadata (see :func:`train_model`)
    registry.json   {"current": "<name>", "versions": [{"name", "version", "feature_hash", "created_ts",
                                                        "instrument_root", "data_source"}, ...]}

Market: a model is trained on one market, recorded as ``instrument_root``
(``WDO``, ``WIN``, ``ES``: :func:`instrument_root` of the symbols) and
``data_source`` (where the data came from: ``simulator``, ``replay``,
``profitdll``, ``bridge``, ``cme_es``, ``profit_csv``; see
:data:`DATA_SOURCES`). Two markets are the same when the roots are equal and
both data are simulated or both real (:func:`data_kind`: ``simulator`` is
simulated, every other source is real market data, a replay included). An
unknown side (no ``data_source`` recorded, no feed source given) leaves only
the roots compared; a model with no root recorded (trained before roots were
recorded) is of an unknown market. :class:`MLModel` serving another or an
unknown market abstains, says why once in the log and in ``stats()``
(``abstain_reason``), unless ``allow_other_market``.

The registry is an explicit pointer rather than "highest version found in the
directory" so that a rollback is one edit of ``current`` and a half-written
model is never picked up: model files are written first, the registry last,
each by an atomic rename. ``version`` is a per-directory counter (one more
than the highest registered), the order :meth:`MLModel.maybe_reload` follows.

Label: 1 if the last trade price at or before ``ts + horizon_ns`` is above the
row's price, 0 if below; rows with an unchanged price, and rows whose horizon
runs past the end of the data, are dropped. The row prices serve as the trade
tape, so train on per-trade vectors (``SymbolAnalytics(vector_every_ns=0)``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import xgboost as xgb

from pipelines.alpha.registry import ML_VOTER
from pipelines.features.catalog import catalog_entries
from pipelines.features.engine import VECTOR_NAMES
from pipelines.model.clock import NS_PER_S
from pipelines.model.instruments import UnknownInstrument, instrument_for
from pipelines.model.messages import FeatureVector, Signal
from pipelines.training.fit import apply_calibration

log = logging.getLogger("quantumtrader.ml")

HASH_FIELDS = ("name", "group", "formula", "window", "unit", "warmup")
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "models"
REGISTRY_FILE = "registry.json"
LABEL_TEXT = "sign of price change over horizon_ns"
DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eval_metric": "logloss",
    "tree_method": "hist",
    "max_depth": 3,
    "eta": 0.1,
    "min_child_weight": 5,
    "nthread": 1,  # one thread: the same data and seed give the same trees
}
DEFAULT_ROUNDS = 50
MIN_TRAIN_ROWS = 50
MIN_TEST_ROWS = 20
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelMismatch(ValueError):
    """A registered model was trained on other features than the engine computes."""


# -- markets --------------------------------------------------------------------------

# Where training data (metadata ``data_source``) or served data (``feed.source``) come from.
SIMULATED_SOURCES = frozenset({"simulator"})
DATA_SOURCES = SIMULATED_SOURCES | {"replay", "profitdll", "bridge", "cme_es", "profit_csv"}
ALLOW_KEY = "hmarl.ml_allow_other_market"
_CONTRACT_RE = re.compile(r"^([A-Z0-9]+?)[FGHJKMNQUVXZ]\d{1,2}$")  # root + month letter + year: CLF3, DI1F27


def instrument_root(symbol: str) -> str:
    """The instrument a symbol is a contract of: ``WDOZ26`` -> ``WDO``, ``WDOFUT`` -> ``WDO``,
    ``ESH22`` -> ``ES``. Known specifications first (``pipelines.model.instruments``), then the
    futures code pattern (root + month letter + year digits), else the symbol itself."""
    code = symbol.strip().upper()
    if code.endswith("FUT") and len(code) > 3:
        code = code[:-3]
    try:
        return instrument_for(code).root
    except UnknownInstrument:
        pass
    m = _CONTRACT_RE.match(code)
    return m.group(1) if m else code


def data_kind(source: str | None) -> str | None:
    """``simulated`` for the simulator, ``real`` for any other source (recorded or live market data,
    a replay included: the recorder cannot tell a simulated session from a real one), None unknown."""
    if not source:
        return None
    return "simulated" if source in SIMULATED_SOURCES else "real"


def market_text(root: str | None, source: str | None) -> str:
    """``WDO (simulator)``: how logs and stats name a model's market."""
    return f"{root or 'an unrecorded market'} ({source or 'unknown source'})"


# -- feature fingerprint ------------------------------------------------------------


def feature_hash(names: Sequence[str], entries: Sequence[dict] | None = None) -> str:
    """First 16 hex chars of the sha256 of the catalog definitions of ``names``, in order.

    Canonical form: ``json.dumps([[name, group, formula, window, unit, warmup], ...],
    ensure_ascii=False, separators=(",", ":"))`` encoded as UTF-8, one row per
    name in the given order. ``entries`` defaults to ``catalog_entries()``."""
    by_name = {e["name"]: e for e in (catalog_entries() if entries is None else entries)}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"feature {missing[0]!r} is not in the feature catalog ({len(missing)} unknown)")
    rows = [[by_name[n][f] for f in HASH_FIELDS] for n in names]
    text = json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


ENGINE_FEATURE_HASH = feature_hash(VECTOR_NAMES)


# -- labels and training ----------------------------------------------------------


def _key_columns(data: list[FeatureVector] | pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(symbols, ts_event, price) of vectors or a frame (``ts_event``, ``price``, optional ``symbol``)."""
    if isinstance(data, pd.DataFrame):
        missing = [c for c in ("ts_event", "price") if c not in data.columns]
        if missing:
            raise ValueError(f"frame lacks columns {missing}")
        symbols = data["symbol"].to_numpy(dtype=object) if "symbol" in data.columns else np.full(len(data), "", object)
        return symbols, data["ts_event"].to_numpy(np.int64), data["price"].to_numpy(np.float64)
    return (np.array([v.symbol for v in data], dtype=object), np.array([v.ts_event for v in data], np.int64),
            np.array([v.price for v in data], np.float64))


Table = tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _columns(data: list[FeatureVector] | pd.DataFrame, feature_names: Sequence[str] | None) -> Table:
    """(feature names, symbols, ts_event, price, X) of vectors or a DataFrame, in input order."""
    if isinstance(data, pd.DataFrame):
        names = tuple(feature_names or VECTOR_NAMES)
        missing = [c for c in names if c not in data.columns]
        if missing:
            raise ValueError(f"training frame lacks features {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        return (names, *_key_columns(data), data[list(names)].to_numpy(np.float64))
    vectors = [v for v in data if isinstance(v, FeatureVector)]
    if not vectors:
        raise ValueError("no FeatureVector to train on")
    names = tuple(vectors[0].names)
    bad = next((i for i, v in enumerate(vectors) if v.names != names), None)
    if bad is not None:
        raise ValueError(f"vector {bad} (seq {vectors[bad].seq}) has other feature names than vector 0")
    if feature_names is not None and tuple(feature_names) != names:
        raise ValueError("feature_names differ from the vectors' names; pass a DataFrame to train on a selection")
    return (names, *_key_columns(vectors), np.array([v.values for v in vectors], dtype=np.float64))


def price_labels(symbols: np.ndarray, ts: np.ndarray, price: np.ndarray, horizon_ns: int) -> np.ndarray:
    """Per row: 1.0 up, 0.0 down, NaN dropped (unchanged, or horizon past the symbol's last row).

    Each symbol's rows are put in time order (ties keep input order, i.e. seq order)."""
    labels = np.full(len(ts), np.nan)
    for sym in pd.unique(symbols):
        idx = np.flatnonzero(symbols == sym)
        idx = idx[np.argsort(ts[idx], kind="stable")]
        t, p = ts[idx], price[idx]
        future = p[np.searchsorted(t, t + horizon_ns, side="right") - 1]
        lab = np.where(future > p, 1.0, np.where(future < p, 0.0, np.nan))
        lab[t + horizon_ns > t[-1]] = np.nan
        labels[idx] = lab
    return labels


def label_vectors(data: list[FeatureVector] | pd.DataFrame, horizon_ns: int) -> np.ndarray:
    """:func:`price_labels` of vectors (other messages skipped) or a frame (``ts_event``, ``price``,
    optional ``symbol``), aligned with them."""
    if not isinstance(data, pd.DataFrame):
        data = [v for v in data if isinstance(v, FeatureVector)]
    return price_labels(*_key_columns(data), horizon_ns)


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """AUC (Mann-Whitney, tied scores get average ranks; None with one class), logloss, accuracy at 0.5."""
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    auc = None
    if n_pos and n_neg:
        ranks = pd.Series(p).rank(method="average").to_numpy()
        auc = float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    q = np.clip(p, 1e-15, 1 - 1e-15)
    logloss = float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))
    return {"auc": auc, "logloss": logloss, "accuracy": float(np.mean((p > 0.5) == pos))}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_registry(model_dir: str | Path) -> dict[str, Any]:
    """The registry of ``model_dir``; ``{"current": None, "versions": []}`` when there is none."""
    path = Path(model_dir) / REGISTRY_FILE
    if not path.exists():
        return {"current": None, "versions": []}
    return json.loads(path.read_text())


def register_model(model_dir: str | Path, name: str) -> int:
    """Make ``<name>`` (its files already in ``model_dir``) the current model; returns its new version.
    Also writes the version and registered_at into the model's metadata."""
    model_dir = Path(model_dir)
    meta_path = model_dir / f"{name}.json"
    if not (model_dir / f"{name}.ubj").exists() or not meta_path.exists():
        raise FileNotFoundError(f"model {name!r}: {name}.ubj and {name}.json must both be in {model_dir}")
    registry = read_registry(model_dir)
    version = 1 + max((v["version"] for v in registry["versions"]), default=0)
    meta = json.loads(meta_path.read_text())
    meta["version"] = version
    meta["registered_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")  # for operators; not used
    _write_atomic(meta_path, json.dumps(meta, indent=2).encode())
    registry["versions"].append({"name": name, "version": version, "feature_hash": meta.get("feature_hash"),
                                 "created_ts": meta.get("created_ts"), "instrument_root": meta.get("instrument_root"),
                                 "data_source": meta.get("data_source")})
    registry["current"] = name
    _write_atomic(model_dir / REGISTRY_FILE, json.dumps(registry, indent=2).encode())
    return version


def train_model(data: list[FeatureVector] | pd.DataFrame, horizon_ns: int, out_dir: str | Path, name: str,
                params: dict[str, Any] | None = None, seed: int = 0, *, test_fraction: float = 0.25,
                feature_names: Sequence[str] | None = None, replace: bool = False, data_source: str | None = None,
                market_root: str | None = None) -> dict[str, Any]:
    """Train, score out of sample, save and register a model; returns its metadata.

    Rows are put in time order; the last ``test_fraction`` of the labelled rows
    (and any row stamped like its first) is the test slice, and training keeps only rows whose label window ends
    before the test slice starts (``ts + horizon_ns < test start``), so no
    training label sees a test-period price. ``params`` override
    :data:`DEFAULT_PARAMS`; ``num_boost_round`` in it sets the tree count
    (default 50). NaN features go to XGBoost as missing. ``feature_names``
    selects DataFrame columns (default ``VECTOR_NAMES``). An existing ``name``
    is refused unless ``replace``.

    Metadata: name, version, created_ts (last ts_event of the input: the end of
    the data the model and its metrics saw), registered_at (wall-clock ISO,
    informational only), feature_names, feature_hash, training_window and
    test_window ({start_ns, end_ns, rows}), label, horizon_ns, metrics (auc,
    logloss, accuracy, rows_train, rows_test, up_rate_train, up_rate_test),
    params, num_boost_round, seed, symbols, xgboost_version, and the market:
    instrument_root (``market_root``, else the one :func:`instrument_root` of
    the data's symbols; None for data without symbols), data_source (where
    the data came from, one of :data:`DATA_SOURCES`; None = not said) and
    data_kind (:func:`data_kind` of it). Data of several instruments is
    refused unless ``market_root`` names the one to record."""
    if horizon_ns <= 0:
        raise ValueError(f"horizon_ns must be positive, got {horizon_ns}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not _NAME_RE.match(name):
        raise ValueError(f"model name {name!r}: use letters, digits, '.', '_', '-' (not starting with a symbol)")
    out_dir = Path(out_dir)
    if not replace and ((out_dir / f"{name}.ubj").exists() or (out_dir / f"{name}.json").exists()):
        raise FileExistsError(f"model {name!r} already exists in {out_dir}; pick another name or replace=True")

    if data_source is not None and data_source not in DATA_SOURCES:
        raise ValueError(f"data_source {data_source!r}: expected one of {', '.join(sorted(DATA_SOURCES))}")

    names, symbols, ts, price, X = _columns(data, feature_names)
    roots = sorted({instrument_root(str(s)) for s in pd.unique(symbols) if s})
    if market_root is not None:
        root: str | None = market_root.strip().upper()
        if not root:
            raise ValueError("market_root must be a non-empty instrument root like WDO")
    elif len(roots) > 1:
        raise ValueError(f"the data holds several instruments ({', '.join(roots)}): train one model per market, "
                         f"or pass market_root to record one")
    else:
        root = roots[0] if roots else None
    labels = price_labels(symbols, ts, price, horizon_ns)
    keep = np.flatnonzero(~np.isnan(labels))
    keep = keep[np.argsort(ts[keep], kind="stable")]
    n_test = int(round(len(keep) * test_fraction))
    if n_test < MIN_TEST_ROWS:
        raise ValueError(f"{len(keep)} labelled rows of {len(ts)}: too few for a test slice of {MIN_TEST_ROWS}")
    test_start = int(ts[keep[len(keep) - n_test]])
    test = keep[ts[keep] >= test_start]  # rows stamped like the first test row are test rows too
    train = keep[ts[keep] + horizon_ns < test_start]
    y = labels
    if len(train) < MIN_TRAIN_ROWS or len(np.unique(y[train])) < 2:
        raise ValueError(f"{len(train)} training rows before the horizon gap ({len(np.unique(y[train]))} classes): "
                         f"need {MIN_TRAIN_ROWS} with both up and down moves")

    run_params = {**DEFAULT_PARAMS, "seed": seed, **(params or {})}
    rounds = int(run_params.pop("num_boost_round", DEFAULT_ROUNDS))
    dtrain = xgb.DMatrix(X[train], label=y[train], feature_names=list(names), missing=np.nan)
    booster = xgb.train(run_params, dtrain, num_boost_round=rounds)
    p_test = booster.inplace_predict(X[test])
    metrics = binary_metrics(y[test], p_test)
    metrics.update(rows_train=len(train), rows_test=len(test), up_rate_train=float(y[train].mean()),
                   up_rate_test=float(y[test].mean()))

    meta = {
        "name": name,
        "version": None,  # version and registered_at: set by register_model
        "created_ts": int(ts.max()),
        "registered_at": None,
        "feature_names": list(names),
        "feature_hash": feature_hash(names),
        "training_window": {"start_ns": int(ts[train].min()), "end_ns": int(ts[train].max()), "rows": len(train)},
        "test_window": {"start_ns": test_start, "end_ns": int(ts[test].max()), "rows": len(test)},
        "label": LABEL_TEXT,
        "horizon_ns": int(horizon_ns),
        "metrics": metrics,
        "params": run_params,
        "num_boost_round": rounds,
        "seed": seed,
        "symbols": sorted(str(s) for s in pd.unique(symbols)),
        "instrument_root": root,
        "data_source": data_source,
        "data_kind": data_kind(data_source),
        "xgboost_version": xgb.__version__,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_model = out_dir / f".{name}.tmp.ubj"  # save_model picks the format from the suffix
    booster.save_model(str(tmp_model))
    os.replace(tmp_model, out_dir / f"{name}.ubj")
    _write_atomic(out_dir / f"{name}.json", json.dumps(meta, indent=2).encode())
    register_model(out_dir, name)
    return json.loads((out_dir / f"{name}.json").read_text())


# -- the ML voter -------------------------------------------------------------------


def first_difference(got: Sequence[str], want: Sequence[str]) -> tuple[int, str, str]:
    """(index, got name, wanted name) of the first position where two different name lists differ;
    "<end>" for the side that ran out."""
    i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return i, got[i] if i < len(got) else "<end>", want[i] if i < len(want) else "<end>"


def _identity(meta: dict[str, Any] | None) -> tuple:
    return (meta or {}).get("name"), (meta or {}).get("version")


class MLModel:
    """The ML voter: P(up) from the newest registered model that matches the engine's features.

    A signal's ``direction`` is ``2p - 1`` (the expected sign of the move, in
    [-1, 1]) and its ``confidence`` ``|2p - 1|`` (how far from a coin flip).
    ``min_edge``: a batch whose ``|2p - 1|`` is below it gives no signal
    (counted as ``below_edge``). ``horizon_ns`` is the horizon the signal is
    scored on; the model's own training horizon is in :meth:`stats`.
    Call :meth:`maybe_reload` on the caller's cadence; it costs one ``stat``.

    Market (see the module docstring): ``symbol`` is the symbol served (None:
    each vector's own symbol), ``feed_source`` the ``feed.source`` its data
    comes from (None: unknown, only instrument roots are compared). A model
    of another or an unknown market gives no signal (counted as
    ``abstained``) and one log line per model and symbol, its reason in
    ``stats()["abstain_reason"]``; ``allow_other_market`` (config
    ``hmarl.ml_allow_other_market``) lets it vote anyway, logged once too."""

    def __init__(self, model_dir: str | Path = DEFAULT_MODEL_DIR, *, expected_hash: str = ENGINE_FEATURE_HASH,
                 expected_names: Sequence[str] = VECTOR_NAMES, agent_id: str = ML_VOTER,
                 horizon_ns: int = 10 * NS_PER_S, min_edge: float = 0.0, symbol: str | None = None,
                 feed_source: str | None = None, allow_other_market: bool = False):
        self.model_dir = Path(model_dir)
        self.symbol = symbol
        self.feed_source = feed_source
        self.allow_other_market = allow_other_market
        self._abstain: dict[str, str | None] = {}  # symbol -> reason the loaded model abstains on it (None: votes)
        self._last_symbol = symbol
        self.expected_hash = expected_hash
        self.expected_names = tuple(expected_names)
        self.agent_id = agent_id
        self.horizon_ns = horizon_ns
        self.min_edge = min_edge
        self.booster: xgb.Booster | None = None
        self.meta: dict[str, Any] | None = None
        self.error: str | None = None
        self.loaded_at: str | None = None  # wall clock (ISO, UTC), for operators only
        self._registry_stamp: tuple | None = None
        self._counts = {"predictions": 0, "signals": 0, "abstained": 0, "below_edge": 0, "bad_vectors": 0,
                        "refused": 0, "load_failures": 0, "reloads": 0}

    # -- loading ------------------------------------------------------------------

    def _stamp(self) -> tuple | None:
        try:
            st = (self.model_dir / REGISTRY_FILE).stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _check(self, meta: dict[str, Any], booster: xgb.Booster) -> None:
        name = meta.get("name")
        got_hash = meta.get("feature_hash")
        if got_hash != self.expected_hash:
            raise ModelMismatch(f"model {name!r} has feature_hash {got_hash} but the engine expects "
                                f"{self.expected_hash}: its features were defined differently; retrain it")
        names = tuple(meta.get("feature_names") or ())
        if names != self.expected_names:
            i, got, want = first_difference(names, self.expected_names)
            raise ModelMismatch(f"model {name!r} feature {i} is {got!r}, the engine's is {want!r} "
                                f"(feature_hash {got_hash}, expected {self.expected_hash})")
        if tuple(booster.feature_names or ()) != names:
            raise ModelMismatch(f"model {name!r}: the booster's feature names differ from its metadata's")

    def load_latest(self) -> bool:
        """Load the registry's current model. True when it is (now) the loaded model.
        A mismatching or unreadable model is refused: ``error`` says why, the
        previous model stays in use. No registry: False, the voter abstains."""
        self._registry_stamp = self._stamp()
        try:
            registry = read_registry(self.model_dir)
        except (OSError, ValueError) as e:
            return self._fail(f"registry {self.model_dir / REGISTRY_FILE} unreadable: {e}", "load_failures")
        name = registry.get("current")
        if not name:
            return False
        try:
            meta = json.loads((self.model_dir / f"{name}.json").read_text())
            if self.meta is not None and _identity(meta) == _identity(self.meta):
                return True
            booster = xgb.Booster()
            booster.load_model(str(self.model_dir / f"{name}.ubj"))
            booster.set_param({"nthread": 1})
            self._check(meta, booster)
        except ModelMismatch as e:
            return self._fail(str(e), "refused")
        except (OSError, ValueError, xgb.core.XGBoostError) as e:
            return self._fail(f"model {name!r} in {self.model_dir} could not be loaded: {e}", "load_failures")
        self.booster, self.meta, self.error = booster, meta, None
        self.loaded_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._counts["reloads"] += 1
        self._abstain.clear()
        log.info("ML model %s v%s loaded (feature_hash %s, market %s)", name, meta.get("version"),
                 meta.get("feature_hash"), market_text(meta.get("instrument_root"), meta.get("data_source")))
        if self.symbol is not None:
            self.abstain_reason(self.symbol)  # say it now, not at the first vector
        return True

    def _fail(self, message: str, counter: str) -> bool:
        self.error = message
        self._counts[counter] += 1
        log.error("ML model not loaded: %s%s", message,
                  f"; keeping {self.meta['name']!r}" if self.meta else "; no model, the ML voter abstains")
        return False

    def maybe_reload(self) -> bool:
        """Reload if the registry changed since the last look and names another model.
        True when a different model was loaded."""
        stamp = self._stamp()
        if stamp is None or stamp == self._registry_stamp:
            return False
        before = _identity(self.meta)
        return self.load_latest() and _identity(self.meta) != before

    # -- market -------------------------------------------------------------------

    def market_mismatch(self, symbol: str) -> str | None:
        """Why the loaded model's market is not ``symbol``'s (None: the same market, or no model)."""
        if self.meta is None:
            return None
        meta = self.meta
        model = f"{meta.get('name')} v{meta.get('version')}"
        root, source = meta.get("instrument_root"), meta.get("data_source")
        want = instrument_root(symbol)
        serving = f"{symbol} is {want}" + (f" from {self.feed_source}" if self.feed_source else "")
        if not root:
            return (f"model {model} has no market recorded (trained before markets were recorded, or on data "
                    f"without symbols), {serving}")
        if root != want:
            return f"model {model} was trained on {market_text(root, source)}, {serving}"
        trained_kind, served_kind = data_kind(source), data_kind(self.feed_source)
        if trained_kind and served_kind and trained_kind != served_kind:
            return (f"model {model} was trained on {trained_kind} {root} data ({source}), "
                    f"{symbol} is {served_kind} {want} data from {self.feed_source}")
        return None

    def abstain_reason(self, symbol: str) -> str | None:
        """Why the voter abstains on ``symbol`` with the loaded model (None: it votes). Logged once
        per model and symbol, and once too when ``allow_other_market`` overrides a mismatch."""
        if symbol in self._abstain:
            return self._abstain[symbol]
        mismatch = self.market_mismatch(symbol)
        reason = None
        if mismatch is not None and self.allow_other_market:
            log.warning("%s:%s votes on another market: %s (%s is true)", self.agent_id, symbol, mismatch, ALLOW_KEY)
        elif mismatch is not None:
            reason = f"{mismatch}; retrain on this market, or set {ALLOW_KEY}: true to use it anyway"
            log.warning("%s:%s abstains: %s", self.agent_id, symbol, reason)
        self._abstain[symbol] = reason
        return reason

    # -- inference ----------------------------------------------------------------

    def predict(self, vectors: Sequence[FeatureVector]) -> list[float]:
        """P(up) per vector, one batched call. ValueError naming the first vector and feature that
        differ from the model's names; RuntimeError with no model loaded."""
        if self.booster is None:
            raise RuntimeError(f"no ML model loaded from {self.model_dir}" + (f": {self.error}" if self.error else ""))
        names = tuple(self.meta["feature_names"])
        for i, v in enumerate(vectors):
            if v.names is names or v.names == names:
                continue
            k, got, want = first_difference(v.names, names)
            raise ValueError(f"vector {i} (seq {v.seq}): feature {k} is {got!r}, model {self.meta['name']!r} "
                             f"expects {want!r}")
        if not vectors:
            return []
        X = np.array([v.values for v in vectors], dtype=np.float64)
        p = self.booster.inplace_predict(X, missing=np.nan)
        if self.meta.get("calibration"):  # the training pipeline's calibration of P(up)
            p = apply_calibration(self.meta["calibration"], p)
        self._counts["predictions"] += len(vectors)
        return p.astype(float).tolist()

    def on_analytics(self, messages: Sequence[Any]) -> list[Signal]:
        """At most one signal per batch, from its last FeatureVector; [] without a model (abstains)."""
        vector = next((m for m in reversed(messages) if isinstance(m, FeatureVector)), None)
        if vector is None:
            return []
        if self.booster is None:
            self._counts["abstained"] += 1
            return []
        symbol = self.symbol if self.symbol is not None else vector.symbol
        self._last_symbol = symbol
        if self.abstain_reason(symbol) is not None:
            self._counts["abstained"] += 1
            return []
        try:
            p = self.predict([vector])[0]
        except (ValueError, xgb.core.XGBoostError) as e:  # other names, or values that do not fit them
            self._counts["bad_vectors"] += 1
            self.error = str(e)
            return []
        direction = 2.0 * p - 1.0
        if abs(direction) < self.min_edge:
            self._counts["below_edge"] += 1
            return []
        self._counts["signals"] += 1
        return [Signal(self.agent_id, vector.symbol, vector.ts_event, vector.seq, direction, abs(direction),
                       self.horizon_ns, vector.price, (f"p_up={p:.3f} model={self.meta['name']}",),
                       raw_direction=direction)]

    def stats(self) -> dict[str, Any]:
        meta = self.meta or {}
        sym = self._last_symbol
        market = market_text(meta.get("instrument_root"), meta.get("data_source")) if self.meta else None
        return {"model": meta.get("name"), "version": meta.get("version"), "feature_hash": meta.get("feature_hash"),
                "model_horizon_ns": meta.get("horizon_ns"), "loaded_at": self.loaded_at, "error": self.error,
                "model_market": market,
                "symbol": sym, "feed_source": self.feed_source, "allow_other_market": self.allow_other_market,
                "abstain_reason": self._abstain.get(sym) if sym is not None else None,
                **self._counts}
