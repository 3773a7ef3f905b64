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
    from pipelines.valkey_store import EmbeddedValkey

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
