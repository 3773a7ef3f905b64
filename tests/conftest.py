"""Shared fixtures: one Ray session, one embedded Valkey, the shared data folder.

Ray is started once per test session, lazily (only tests that ask for it pay),
always with address="local" so it never attaches to a cluster already running.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
ES_FILE = SHARED_DATA / "cme_es_20220124_tbt.csv"


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ctx = ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=200 * 2**20,
        namespace="qt-tests",
    )
    yield ctx
    ray.shutdown()


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory):
    """A real embedded valkey-server, or the one at QT_TEST_VALKEY_URL if set."""
    from pipelines.persistence.server import EmbeddedValkey

    url = os.environ.get("QT_TEST_VALKEY_URL")
    if url:
        yield None, url
        return
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey-session"))
    url = server.start()
    yield server, url
    server.stop()


@pytest.fixture()
def es_file() -> Path:
    if not ES_FILE.exists():
        pytest.skip(f"real data not available: {ES_FILE} (../shared/data is absent)")
    return ES_FILE


@pytest.fixture(scope="module")
def client(valkey_server):
    """A client (bytes replies) on the session Valkey."""
    from pipelines.persistence.connection import connect

    c = connect(valkey_server[1])
    yield c
    c.close()


def simulated_events(seed: int, rate: float, max_events: int, symbol: str = "WDOZ26",
                     start: str = "2026-11-23T10:00:00-03:00") -> list:
    """A seeded simulator day as fast as possible, seq-stamped per symbol as the feed does."""
    from pipelines.adapters.config import SimulatorConfig
    from pipelines.adapters.simulator import MarketSimulator

    sim = MarketSimulator(SimulatorConfig(seed=seed, rate=rate, speed=0.0, start=start, max_events=max_events), [symbol])
    events: list = []
    while not sim.exhausted:
        events.extend(sim.poll(5000))
    return [e._replace(seq=i + 1) for i, e in enumerate(events)]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A small XGBoost model trained on simulator features (another seed than the run)."""
    from pipelines.features.engine import SymbolAnalytics
    from pipelines.alpha.ml import train_model
    from pipelines.model.messages import FeatureVector

    ns_per_s = 1_000_000_000

    out: list = []
    SymbolAnalytics("WDOZ26", 0.5).on_events(simulated_events(seed=99, rate=400, max_events=30_000), out)
    d = tmp_path_factory.mktemp("models")
    train_model([m for m in out if type(m) is FeatureVector], 5 * ns_per_s, d, "sim-test")
    return d
