"""Golden statistics: fixed backtests whose figures are pinned in ``tests/backtest/golden/``.

A change in any number (a statistic, a count of decisions, a voter's hit rate, the decision or
fill hash) fails the test. When a change is meant (a fix, a recalibrated simulator, another
cost), regenerate the files with

    QT_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/backtest/test_golden.py

and commit them on their own, saying why the numbers moved. The ML voter's model is the test
session's (``model_dir``, trained from a seeded simulator session), so it is pinned too.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from actors.backtest_run import BacktestInput, backtest
from tests.helpers import ES_FILE

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("QT_UPDATE_GOLDEN") == "1"

CASES = {
    # 20 minutes of a simulated WDO morning at the rate the simulator is calibrated at
    "simulator_seed11": (BacktestInput("simulator", start="2026-11-24T10:00:00", end="2026-11-24T10:20:00",
                                       seed=11, rate=40), {}),
    # the real CME ES tape (one minute, 2,637 events): the ML voter abstains on it (its model is WDO's)
    "cme_es": (BacktestInput("es", path=str(ES_FILE)), {"hmarl": {"decision_every_ms": 250, "threshold": 0.05}}),
}


def pinned(run) -> dict:
    """What the golden file holds: every figure a report shows, and the hashes of the decisions and fills."""
    return {"statistics": run.stats["statistics"], "decisions": run.stats["decisions"],
            "agents": run.stats["agents"], "events": run.stats["run"]["events"],
            "rejected": run.stats["run"]["rejected"], "decision_hash": run.decision_hash, "fill_hash": run.fill_hash}


def differences(got, want, path: str = "") -> list[str]:
    """Every leaf that differs (floats to 12 significant digits: a change of substance, not of the last bit)."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{path}.{k}: missing" for k in want if k not in got] + [f"{path}.{k}: new" for k in got if k not in want]
        return out + [d for k in want if k in got for d in differences(got[k], want[k], f"{path}.{k}")]
    if isinstance(want, float) and isinstance(got, float):
        return [] if math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-12) else [f"{path}: {got!r} != {want!r}"]
    return [] if got == want else [f"{path}: {got!r} != {want!r}"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_statistics(name, model_dir):
    source, overrides = CASES[name]
    if source.kind == "es" and not ES_FILE.is_file():
        pytest.skip(f"real data not available: {ES_FILE}")
    hmarl = {**overrides.get("hmarl", {}), "model_dir": str(model_dir)}
    got = json.loads(json.dumps(pinned(backtest(source, run_id=f"golden-{name}", overrides={**overrides, "hmarl": hmarl}))))
    path = GOLDEN / f"{name}.json"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    want = json.loads(path.read_text())
    assert got["statistics"]["trades"] + got["decisions"]["BUY"] + got["decisions"]["SELL"] > 0
    diff = differences(got, want)
    assert not diff, f"{name} moved from its golden file ({path.name}):\n" + "\n".join(diff[:40])
