"""Shared fixtures: one Ray session, one embedded Valkey, servers of a test's own, the real
data file, a trained model, the built fake ProfitDLL.

Ray is started once per test session, lazily (only tests that ask for it pay),
always with address="local" so it never attaches to a cluster already running.
Plain helpers (paths, constants, ``wait_for``, builders) are in ``tests/helpers.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import ES_FILE, simulated_events


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
def own_valkey(tmp_path):
    """Start an embedded Valkey of the test's own: ``own_valkey(password=None, port=0, start=True)``.

    Only for a test that stops, kills or restarts the server, needs a password, or needs a
    keyspace no other test writes to; the rest share ``valkey_server``. Each server gets a data
    dir under ``tmp_path`` (the first ``valkey``, then ``valkey-2``...); with ``start=False`` it
    is created on ``port`` but not started (a server that is down from the beginning). Every
    server this made is killed when the test ends, whatever the test did.
    """
    from pipelines.persistence.server import EmbeddedValkey

    servers: list[EmbeddedValkey] = []

    def make(password: str | None = None, port: int = 0, *, start: bool = True) -> EmbeddedValkey:
        name = "valkey" if not servers else f"valkey-{len(servers) + 1}"
        server = EmbeddedValkey(tmp_path / name, port=port, password=password)
        servers.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in servers:
        server.kill()


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def fake_so():
    """The native fake ProfitDLL, built once (skips where it cannot be built)."""
    from tests.profitdll_fake import fake_dll_or_skip

    return fake_dll_or_skip()


@pytest.fixture()
def dll_host(tmp_path, fake_so):
    """The DLL hosts and order clients of one test (tests/order_host.py), stopped after it."""
    from tests.order_host import Run

    r = Run(tmp_path, fake_so)
    yield r
    r.close()
