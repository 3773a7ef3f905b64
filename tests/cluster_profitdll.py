"""Run by tests/system/test_profitdll_feed.py in its own process: ``feed.source: profitdll`` on a 3-node
``ray.cluster_utils.Cluster`` (a separate Ray from the test session's).

    python tests/cluster_profitdll.py <fake dll .so> <work dir>

The DLL path and the credentials are set in this process's environment before the cluster
starts, so every node has them, as ``ray start`` on the Windows node would (PROFITDLL_PATH,
PROFIT_KEY/USER/PASSWORD; the fake refuses the login unless they arrive intact). First only a
head and a plain worker run: the graph must refuse to start, at once. Then a worker offering
the custom resource ``profitdll`` joins; the FeedActor must land there, stream, and come back
there after a SIGKILL. Prints one ``RESULT {json}`` line with what it observed.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402

from tests.helpers import EPHEMERAL_PORTS, WHILE_RESTARTING, ping_new, wait_for  # noqa: E402
from tests.profitdll_fake import CREDENTIALS  # noqa: E402


def gone(pid: int) -> bool:
    """The process has exited (or is a zombie awaiting its new parent's reaping)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def main(dll: str, work: str) -> None:
    work_dir = Path(work) / "cluster"
    work_dir.mkdir(parents=True, exist_ok=True)
    sent_log = work_dir / "sent.log"
    os.environ.update(CREDENTIALS)
    os.environ.update({
        "PROFITDLL_PATH": dll,
        "FAKE_PROFITDLL_EXPECT_KEY": CREDENTIALS["PROFIT_KEY"],
        "FAKE_PROFITDLL_EXPECT_USER": CREDENTIALS["PROFIT_USER"],
        "FAKE_PROFITDLL_EXPECT_PASSWORD": CREDENTIALS["PROFIT_PASSWORD"],
        "FAKE_PROFITDLL_RATE": "3000",
        "FAKE_PROFITDLL_SEED": "41",
        "FAKE_PROFITDLL_SENT_LOG": str(sent_log),
        "FAKE_PROFITDLL_STATE_DELAY_US": "20",
        # a live-like clock: the market starts now (B3 local time)
        "FAKE_PROFITDLL_START": datetime.now(ZoneInfo("America/Sao_Paulo")).strftime("%Y-%m-%d %H:%M:%S"),
    })

    import ray
    from ray.cluster_utils import Cluster

    from actors.wiring import MarketDataGraph, PlacementError, check_feed_placement
    from pipelines.config import config_from_dict
    from pipelines.persistence.connection import connect
    from pipelines.persistence.events import EventStore
    from pipelines.persistence.server import EmbeddedValkey

    server = EmbeddedValkey(work_dir / "valkey")
    url = server.start()
    small = 100 * 2**20
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": small})
    plain = cluster.add_node(num_cpus=1, object_store_memory=small)
    ray.init(address=cluster.address, log_to_driver=False)
    sym = "WINZ97"
    cfg = config_from_dict({  # default feed.profitdll.resource: "profitdll"; DLL path and credentials from the env
        "namespace": "cluster-profitdll",
        "symbols": [sym],
        "feed": {"source": "profitdll", "batch_max_ms": 5, "time_tolerance_ms": 3_600_000,
                 "profitdll": {"ready_timeout_s": 30, "backoff_initial_s": 0.2, "backoff_max_s": 1.0}},
        "zmq": EPHEMERAL_PORTS,
        "recorder": {"enabled": False},
        "features": {"enabled": False},
        "hmarl": {"enabled": False},
    })
    out: dict = {"head": cluster.head_node.node_id, "plain_worker": plain.node_id}
    nodes = [cluster.head_node, plain]
    g = None
    try:
        t0 = time.monotonic()
        try:
            check_feed_placement(cfg)
            out["placement_error"] = None
        except PlacementError as e:
            out["placement_error"] = str(e)
        try:
            MarketDataGraph(cfg, url).start(timeout_s=60)
            out["graph_start_error"] = None
        except PlacementError as e:
            out["graph_start_error"] = str(e)
        out["placement_error_s"] = time.monotonic() - t0

        dll_node = cluster.add_node(num_cpus=1, resources={"profitdll": 1}, object_store_memory=small)
        nodes.append(dll_node)
        out["profitdll_node"] = dll_node.node_id
        cluster.wait_for_nodes()
        wait_for(lambda: ray.cluster_resources().get("profitdll", 0) >= 1, 60, what="the profitdll node",
                 **WHILE_RESTARTING)

        g = MarketDataGraph(cfg, url)
        g.start(timeout_s=120)
        feed = g.handle("feed")
        store = EventStore(connect(url))
        before = ray.get(feed.ping.remote())
        out["feed_node"] = before["node"]
        wait_for(lambda: ray.get(feed.ping.remote())["events_out"] > 1000, 60, what="events before the kill",
                 **WHILE_RESTARTING)
        child = ray.get(feed.stats.remote())["source"]["child_pid"]
        out["events_before_kill"] = ray.get(feed.ping.remote())["events_out"]
        out["killed_pid"] = before["pid"]
        os.kill(before["pid"], signal.SIGKILL)
        out["stored_at_kill"] = store.last_seq(sym)
        after = wait_for(lambda: ping_new(feed, before["incarnation"]), 120, what="the feed's restart",
                         **WHILE_RESTARTING)
        out["restarted_pid"] = after["pid"]
        out["incarnation_changed"] = after["incarnation"] != before["incarnation"]
        out["feed_node_after"] = after["node"]
        wait_for(lambda: ray.get(feed.ping.remote())["events_out"] > 1000, 60, what="events after the restart",
                 **WHILE_RESTARTING)
        out["events_after_restart"] = ray.get(feed.ping.remote())["events_out"]
        out["old_host_exited"] = bool(wait_for(lambda: gone(child), 20, what="the killed actor's DLL host to exit",
                                               **WHILE_RESTARTING))
        final = g.shutdown(timeout_s=20)
        g = None
        out["feed_error"] = (final.get("feed") or {}).get("error")
        seqs = [e.seq for e in store.events_between(sym, 0, 2**63 - 1, kinds=("tick", "book"))]
        out["stored_after"] = max(seqs, default=0)
        out["seq_unique"] = len(seqs) == len(set(seqs))
        # A killed feed loses what it held (its DLL host's queue, its pending batches): holes, counted here.
        out["seq_missing"] = max(seqs, default=0) - len(set(seqs))
    finally:
        try:
            if g is not None:
                g.shutdown(timeout_s=20)
        finally:
            out["session_dirs"] = sorted({n.get_session_dir_path() for n in nodes})
            ray.shutdown()
            cluster.shutdown()
            server.stop()
    print("RESULT " + orjson.dumps(out).decode(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
