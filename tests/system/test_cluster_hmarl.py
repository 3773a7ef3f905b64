"""Agents spread over a 3-node Ray cluster; SIGKILL one: decisions continue, it returns learned.
The publishers and the recorder run where configured (a resource), by default on the head node.

The cluster is a separate Ray (``ray.cluster_utils.Cluster``), so it runs in a
child process (tests/cluster_hmarl.py) and never touches the session's Ray."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from tests.helpers import REPO

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_agents_spread_over_nodes_and_survive_a_kill(model_dir):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "cluster_hmarl.py"), str(model_dir)],
                          capture_output=True, text=True, timeout=400, env=env, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = orjson.loads(lines[-1][len("RESULT "):])
    nodes = r["agent_nodes"]
    # Only the worker nodes offer "agents"; SPREAD uses both of them.
    assert set(nodes.values()) <= set(r["workers"]) and r["head"] not in nodes.values()
    assert len(set(nodes.values())) == 2
    assert r["decisions_after"] > r["decisions_at_kill"] + 5  # the coordinator kept deciding
    assert r["restored"] is True and r["restore_error"] is None  # learned state back from Valkey
    assert r["node_after"] in r["workers"]
    # The edges bind and write on a known node: the configured resource's, else the head's.
    edges = r["edge_nodes"]
    assert (edges["zmq_publisher"], edges["analytics_publisher"], edges["recorder"]) == (r["workers"][1], r["workers"][1],
                                                                                         r["head"])
