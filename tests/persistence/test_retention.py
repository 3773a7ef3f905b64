"""The launcher's scheduled retention (pipelines/persistence/retention.py): old HMARL records
go at start and then on schedule, by event time; an unreachable Valkey is reported, not fatal."""

from __future__ import annotations

from pipelines.model.clock import NS_PER_DAY
from pipelines.persistence.connection import connect
from pipelines.persistence.hmarl_store import HmarlStore, decision_key, pattern_key
from pipelines.persistence.retention import Retention
from tests.helpers import T0, hmarl_decision, wait_for

DB = 11  # a database of its own on the session server: the cleanup scans the whole keyspace


def test_old_records_go_at_start_and_on_schedule(valkey_server):
    url = valkey_server[1].rsplit("/", 1)[0] + f"/{DB}"
    c = connect(url)
    c.flushdb()
    store = HmarlStore(url)
    lines: list[str] = []
    retention = None
    try:
        # Newest at T0; 10 days older goes with a 7-day retention, 2 days older stays.
        for seq, age_days in ((1, 10), (2, 2), (3, 0)):
            store.store_decision(hmarl_decision("WDOZ26", seq, T0 - age_days * NS_PER_DAY))
        store.store_pattern("sweep", "old", {"ts_event": T0 - 10 * NS_PER_DAY})
        store.store_pattern("sweep", "new", {"ts_event": T0})
        assert store.flush(10)
        retention = Retention(url, None, days=7, every_s=0.2, report=lines.append)
        wait_for(lambda: retention.runs >= 1, 10, 0.05, "the first cleanup")
        assert [c.exists(decision_key(f"WDOZ26-{s}")) for s in (1, 2, 3)] == [0, 1, 1]
        assert [c.exists(pattern_key("sweep", p)) for p in ("old", "new")] == [0, 1]
        # A record written later, already 8 days old, is removed by a later scheduled run.
        store.store_decision(hmarl_decision("WDOZ26", 4, T0 - 8 * NS_PER_DAY))
        assert store.flush(10)
        # the run counts what it removed after the deletes: wait for the count, then look
        wait_for(lambda: retention.removed["decision_keys"] >= 2, 10, 0.05, "a scheduled cleanup")
        assert not c.exists(decision_key("WDOZ26-4"))
        assert retention.removed["decision_keys"] == 2 and retention.removed["pattern_keys"] == 1
        assert retention.failures == 0
        assert any(line.startswith("retention: removed") for line in lines)
    finally:
        if retention is not None:
            retention.stop()
        store.close(1)
        c.flushdb()
        c.close()


def test_unreachable_valkey_is_reported_and_retried():
    lines: list[str] = []
    retention = Retention("redis://127.0.0.1:1/0", None, days=7, every_s=0.1, report=lines.append)
    try:
        wait_for(lambda: retention.failures >= 2, 10, 0.05, "two failed cleanups")
        assert retention.runs == 0
        assert lines[0].startswith("retention: cleanup failed: ")
    finally:
        retention.stop()
