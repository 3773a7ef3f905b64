"""Model files, model cards, and one champion at a time.

A trained model is written to the model directory as ``<name>.ubj`` (the booster) and
``<name>.json``: the metadata the ML voter reads (feature names and hash, market, horizon,
calibration) plus ``card``, what the model is worth and how it was made: data window and source,
label definition, CV scheme, out-of-sample metrics with intervals per fold and overall, baselines,
the model-alone backtest per fold, the recipe (fit parameters, tuning), training time, code version.
``<name>.card.md`` renders the card for people.

``registry.json`` (see ``models/README.md``) keeps every version with a ``status``:
``champion`` (the one ``current`` names, which the ML voter serves and hot-reloads),
``challenger`` (proposed, not promoted), ``retired`` (a former champion) or ``rejected`` (lost
to the champion). A challenger becomes champion by :func:`promote`, which the training command
calls only when :func:`pipelines.training.evaluate.compare` says it beats the champion on the
same folds (or when there is no champion). Files are written first and the registry last, each by
an atomic rename, so the voter never sees half a model.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pipelines.alpha.ml import REGISTRY_FILE, _write_atomic, data_kind, read_registry
from pipelines.training.fit import FittedModel

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
REPO = Path(__file__).resolve().parents[2]


def code_version() -> str:
    """The repository's commit (``+dirty`` with uncommitted changes), or ``unknown`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(f"model name {name!r}: use letters, digits, '.', '_', '-' (not starting with a symbol)")


def save_model(model_dir: str | Path, name: str, model: FittedModel, meta: dict[str, Any], *,
               replace: bool = False) -> dict[str, Any]:
    """Write the model's files and register it as a challenger (the champion when there is none).
    ``meta``: what :class:`pipelines.alpha.ml.MLModel` reads (feature_names, feature_hash, horizon_ns,
    instrument_root, data_source, created_ts) and ``card``. Returns the written metadata."""
    check_name(name)
    model_dir = Path(model_dir)
    if not replace and ((model_dir / f"{name}.ubj").exists() or (model_dir / f"{name}.json").exists()):
        raise FileExistsError(f"model {name!r} already exists in {model_dir}; pick another name or --replace")
    model_dir.mkdir(parents=True, exist_ok=True)
    registry = read_registry(model_dir)
    version = 1 + max((v["version"] for v in registry["versions"]), default=0)
    meta = {**meta, "name": name, "version": version, "calibration": model.calibration,
            "data_kind": data_kind(meta.get("data_source")),
            "registered_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    tmp = model_dir / f".{name}.tmp.ubj"  # save_model picks the format from the suffix
    model.booster.save_model(str(tmp))
    tmp.replace(model_dir / f"{name}.ubj")
    _write_atomic(model_dir / f"{name}.json", _dump(meta))
    if meta.get("card"):
        _write_atomic(model_dir / f"{name}.reliability.png", reliability_png(meta))
    _write_atomic(model_dir / f"{name}.card.md", card_markdown(meta).encode())
    registry["versions"] = [v for v in registry["versions"] if v["name"] != name]
    registry["versions"].append({"name": name, "version": version, "feature_hash": meta.get("feature_hash"),
                                 "created_ts": meta.get("created_ts"), "instrument_root": meta.get("instrument_root"),
                                 "data_source": meta.get("data_source"), "status": "challenger"})
    if not registry.get("current"):
        _make_champion(registry, name)
    _write_atomic(model_dir / REGISTRY_FILE, json.dumps(registry, indent=2).encode())
    return meta


def json_ready(v: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays as numbers and lists, an undefined figure (NaN) as
    null, so strict JSON readers (browsers, jq) read the cards."""
    if isinstance(v, dict):
        return {k: json_ready(x) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return [json_ready(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    return None if isinstance(v, float) and v != v else v


def _dump(meta: dict[str, Any]) -> bytes:
    return json.dumps(json_ready(meta), indent=2, allow_nan=False).encode()


def _make_champion(registry: dict[str, Any], name: str) -> None:
    for v in registry["versions"]:
        if v["name"] == name:
            v["status"] = "champion"
        elif v.get("status") == "champion" or v["name"] == registry.get("current"):
            v["status"] = "retired"
    registry["current"] = name


def champion(model_dir: str | Path) -> dict[str, Any] | None:
    """The champion's metadata (None: no champion)."""
    name = read_registry(model_dir).get("current")
    if not name:
        return None
    path = Path(model_dir) / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def champion_line(model_dir: str | Path) -> str:
    """What the ML voter will serve, in one line for the launcher: the champion and what its card says
    it is worth out of sample."""
    try:
        meta = champion(model_dir)
    except (OSError, ValueError) as e:
        return f"ml model: registry in {model_dir} unreadable ({e}); the ML voter abstains"
    if meta is None:
        return f"ml model: none in {model_dir}; the ML voter abstains (train one: scripts/train_model.py train)"
    card = meta.get("card") or {}
    worth = card.get("verdict") or "no model card (trained before the pipeline): its out-of-sample worth is unknown"
    return f"ml model: {meta.get('name')} v{meta.get('version')} (champion): {worth}"


def load_meta(model_dir: str | Path, name: str) -> dict[str, Any]:
    path = Path(model_dir) / f"{name}.json"
    if not path.exists():
        known = [v["name"] for v in read_registry(model_dir)["versions"]]
        raise ValueError(f"no model {name!r} in {model_dir} (registered: {', '.join(known) or 'none'})")
    return json.loads(path.read_text())


def promote(model_dir: str | Path, name: str) -> None:
    """Make ``name`` the champion (the ML voter picks it up at its next look)."""
    load_meta(model_dir, name)
    registry = read_registry(model_dir)
    if name not in {v["name"] for v in registry["versions"]}:
        raise ValueError(f"model {name!r} is not registered in {model_dir}")
    _make_champion(registry, name)
    _write_atomic(Path(model_dir) / REGISTRY_FILE, json.dumps(registry, indent=2).encode())


def set_status(model_dir: str | Path, name: str, status: str, decision: dict[str, Any] | None = None) -> None:
    """Record a challenger's fate (``rejected``) and the comparison that decided it, in the registry
    and on its card."""
    registry = read_registry(model_dir)
    for v in registry["versions"]:
        if v["name"] == name:
            v["status"] = status
    _write_atomic(Path(model_dir) / REGISTRY_FILE, json.dumps(registry, indent=2).encode())
    if decision is not None:
        meta = load_meta(model_dir, name)
        meta.setdefault("card", {})["promotion"] = decision
        _write_atomic(Path(model_dir) / f"{name}.json", _dump(meta))
        _write_atomic(Path(model_dir) / f"{name}.card.md", card_markdown(meta).encode())


# -- the card for people -----------------------------------------------------------------------


def reliability_png(meta: dict[str, Any]) -> bytes:
    """The card's picture: the calibration curve of the pooled test predictions (does P(up) = 0.6
    come true 60 % of the time?) beside each test fold's AUC with its interval."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cv = (meta.get("card") or {}).get("cv") or {}
    curve = (cv.get("overall") or {}).get("calibration_curve") or []
    folds = cv.get("folds") or []
    fig = Figure(figsize=(9, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.plot([0, 1], [0, 1], color="#999999", lw=1, ls="--", label="perfectly calibrated")
    if curve:
        n = np.array([b["n"] for b in curve], float)
        left.plot([b["mean_p"] for b in curve], [b["frac_up"] for b in curve], color="#1f6fb4", lw=1.5)
        left.scatter([b["mean_p"] for b in curve], [b["frac_up"] for b in curve], s=20 + 180 * n / n.max(),
                     color="#1f6fb4", zorder=3, label="test samples per bin (area)")
    left.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted P(up)", ylabel="observed up rate",
             title="Reliability (pooled test folds)")
    left.legend(loc="upper left", fontsize=8, frameon=False)
    for k, f in enumerate(folds):
        sc = f.get("scores") or {}
        auc, ci = sc.get("auc"), sc.get("auc_ci") or [None, None]
        if auc is None or auc != auc:
            continue
        lo, hi = ci if ci[0] is not None and ci[0] == ci[0] else (auc, auc)
        right.errorbar([k], [auc], yerr=[[auc - lo], [hi - auc]], fmt="o", color="#1f6fb4", capsize=4)
    right.axhline(0.5, color="#999999", lw=1, ls="--")
    right.set(xlabel="test fold (in time order)", ylabel="AUC, 95 % interval", title="Out-of-sample AUC per fold",
              xticks=range(len(folds)))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()



def _ci(scores: dict[str, Any], key: str, digits: int = 3) -> str:
    v = scores.get(key)
    lo, hi = (scores.get(f"{key}_ci") or [None, None])[:2]
    if v is None or v != v:
        return "n/a"
    if lo is None or lo != lo:
        return f"{v:.{digits}f}"
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def card_markdown(meta: dict[str, Any]) -> str:
    card = meta.get("card") or {}
    cv = card.get("cv") or {}
    overall = cv.get("overall") or {}
    s = overall.get("scores") or {}
    lines = [f"# Model {meta.get('name')} v{meta.get('version')}", "",
             f"**Worth out of sample:** {card.get('verdict', 'not evaluated')}", "",
             f"![reliability and AUC per fold]({meta.get('name')}.reliability.png)", "",
             f"- Market: {meta.get('instrument_root')} ({meta.get('data_source')}), symbols {meta.get('symbols')}",
             f"- Data: {card.get('data', {}).get('start')} to {card.get('data', {}).get('end')}, "
             f"{card.get('data', {}).get('labelled')} labelled samples of {card.get('data', {}).get('samples')}",
             f"- Label: {json.dumps(card.get('label'))}",
             f"- Features: {len(meta.get('feature_names') or [])}, hash {meta.get('feature_hash')}",
             f"- CV: {cv.get('scheme', {}).get('scheme')} with {cv.get('scheme', {}).get('folds')} folds, "
             f"embargo {cv.get('scheme', {}).get('embargo_s')} s, purged by label end time",
             f"- Trained in {card.get('training_seconds', 0):.1f} s; code {card.get('code_version')}; "
             f"xgboost {card.get('xgboost_version')}", "",
             "## Out of sample (pooled test folds; 95 % block-bootstrap intervals)", "",
             "| metric | model | always majority | sign of last move |", "|---|---|---|---|"]
    base = overall.get("baselines") or {}
    for key in ("auc", "log_loss", "brier", "hit_rate"):
        lines.append(f"| {key} | {_ci(s, key)} | {_ci(base.get('majority', {}), key)} | "
                     f"{_ci(base.get('last_return_sign', {}), key)} |")
    lines += ["", f"Hit rate where the model alone trades (P(up) >= {overall.get('p_threshold', 0):.3f} or "
              f"<= {1 - overall.get('p_threshold', 0):.3f}): coverage {s.get('coverage', 0):.1%} of samples.", "",
              "## Per fold", "", "| fold | test samples' times | train | test | purged | AUC | log loss | Brier | backtest net R$ | round trips |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    bts = {b.get("fold"): b for b in card.get("backtest") or []}
    for f in cv.get("folds") or []:
        sc = f.get("scores", {})
        bt = bts.get(f.get("fold"), {})
        net = bt.get("net_pnl")
        net_text = f"{net:.2f}" if isinstance(net, (int, float)) else "n/a"
        lines.append(f"| {f['fold']} | {f.get('test_window', '')} | {f['train']} | {f['test']} | {f['purged']} | "
                     f"{_ci(sc, 'auc')} | {_ci(sc, 'log_loss')} | {_ci(sc, 'brier')} | {net_text} | "
                     f"{bt.get('round_trips', 'n/a')} |")
    curve = overall.get("calibration_curve") or []
    if curve:
        lines += ["", "## Calibration (pooled test predictions)", "", "| P(up) bin | mean P(up) | observed up | n |",
                  "|---|---|---|---|"]
        for b in curve:
            lines.append(f"| {b['bin_low']:.1f}-{b['bin_high']:.1f} | {b['mean_p']:.3f} | {b['frac_up']:.3f} | {b['n']} |")
    promo = card.get("promotion")
    if promo:
        lines += ["", "## Promotion", "", f"{'Promoted' if promo.get('promote') else 'Not promoted'}: {promo.get('why')}",
                  f"Rule: {promo.get('rule')}"]
    return "\n".join(lines) + "\n"
