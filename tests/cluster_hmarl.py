"""Run by tests/system/test_cluster_hmarl.py in its own process: the HMARL graph on a 3-node
``ray.cluster_utils.Cluster`` (a separate Ray from the test session's).

Two worker nodes offer the custom resource ``agents``; the config asks the agents
to need it and to spread. Prints one JSON line with what it observed.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from tests.helpers import EPHEMERAL_PORTS, SESSION_START, WHILE_RESTARTING, ping_new, wait_for  # noqa: E402


def main(model_dir: str) -> None:
    from actors.wiring import MarketDataGraph
    from pipelines.config import config_from_dict
    from pipelines.persistence.server import EmbeddedValkey

    tmp = Path(tempfile.mkdtemp(prefix="qt-cluster-"))
    server = EmbeddedValkey(tmp / "valkey")
    url = server.start()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 150 * 2**20})
    # The second worker also offers "edges": the publishers are configured to need it.
    workers = [cluster.add_node(num_cpus=1, resources={"agents": 8, **({"edges": 1} if k else {})},
                                object_store_memory=150 * 2**20) for k in range(2)]
    ray.init(address=cluster.address, log_to_driver=False)
    sym = "WDOZ26"
    cfg = config_from_dict({
        "namespace": "cluster-test",
        "symbols": [sym],
        "feed": {"simulator": {"rate": 300, "speed": 10, "start": SESSION_START}},
        "zmq": {**EPHEMERAL_PORTS, "resource": "edges"},
        "recorder": {"enabled": True, "path": str(tmp / "rec")},  # default placement: the head node
        # recorded_round_timeout_s as short as a live feed's: the test wants decisions to go on while the
        # killed agent is away (on a simulated feed a round otherwise waits for its restart)
        "hmarl": {"model_dir": model_dir, "horizon_s": 5, "decision_every_ms": 500, "scheduling": "spread",
                  "agent_resource": "agents", "recorded_round_timeout_s": 5},
    })
    g = MarketDataGraph(cfg, url)
    out: dict = {"head": cluster.head_node.node_id, "workers": [w.node_id for w in workers]}
    try:
        g.start(timeout_s=120)
        coord = g.handle(f"coordinator:{sym}")
        agents = [f"agent:{a}:{sym}" for a in cfg.hmarl.agents]
        out["agent_nodes"] = {a: ray.get(g.handle(a).ping.remote())["node"] for a in agents}
        out["edge_nodes"] = {e: ray.get(g.handle(e).__ray_call__.remote(
            lambda self: ray.get_runtime_context().get_node_id())) for e in ("zmq_publisher", "analytics_publisher", "recorder")}
        wait_for(lambda: ray.get(coord.stats.remote())["decisions"] > 10, 120, what="decisions", **WHILE_RESTARTING)
        victim = g.handle(agents[0])
        wait_for(lambda: ray.get(victim.stats.remote())["learning"]["contexts"], 120, what="learning",
                 **WHILE_RESTARTING)
        wait_for(lambda: sum(c["updates"] for c in ray.get(victim.stats.remote())["learning"]["contexts"].values()) > 0,
                 120, what="the agent to learn", **WHILE_RESTARTING)
        time.sleep(1.0)
        before = ray.get(victim.ping.remote())
        at_kill = ray.get(coord.stats.remote())["decisions"]
        os.kill(before["pid"], signal.SIGKILL)
        wait_for(lambda: ray.get(coord.stats.remote())["decisions"] > at_kill + 5, 120, what="decisions after the kill",
                 **WHILE_RESTARTING)
        after = wait_for(lambda: ping_new(victim, before["incarnation"]), 120, what="the agent's restart",
                         **WHILE_RESTARTING)
        st = ray.get(victim.stats.remote())
        out.update(killed=agents[0], killed_node_before=before["node"], node_after=after["node"],
                   decisions_at_kill=at_kill, decisions_after=ray.get(coord.stats.remote())["decisions"],
                   restored=st["restored"], restore_error=st["restore_error"])
    finally:
        try:
            g.shutdown(timeout_s=20)
        finally:
            ray.shutdown()
            cluster.shutdown()
            server.stop()
    print("RESULT " + orjson.dumps(out).decode(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
