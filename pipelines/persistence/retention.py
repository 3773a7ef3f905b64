"""Scheduled retention of the HMARL records in Valkey.

Decisions, feedback and signals carry TTLs, but a replay writes months of event time in
minutes and patterns have no TTL at all: what bounds the store is a cleanup by event time
(:meth:`HmarlStore.cleanup_old_data`), run when the system starts and then every
``every_s`` of wall time. It runs in a thread of its own, so a long scan never delays the
launcher's supervision of the actors.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from pipelines.persistence.hmarl_store import HmarlStore


class Retention:
    def __init__(self, url: str, password: str | None, days: float, every_s: float,
                 report: Callable[[str], None] = print):
        if not days > 0 or not every_s > 0:
            raise ValueError(f"retention needs days > 0 and every_s > 0, got {days!r}, {every_s!r}")
        self.url, self.password = url, password
        self.days, self.every_s = days, every_s
        self.report = report
        self.runs = 0
        self.failures = 0
        self.removed: dict[str, int] = {}  # totals by family
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        store = None
        while True:
            try:
                store = store or HmarlStore(self.url, self.password)
                self._record(store.cleanup_old_data(self.days))
            except Exception as e:  # Valkey unreachable: the next round tries again
                self.failures += 1
                self.report(f"retention: cleanup failed: {type(e).__name__}: {e}")
            if self._stop.wait(self.every_s):
                break
        if store is not None:
            store.close(timeout_s=1.0)

    def _record(self, out: dict[str, Any]) -> None:
        self.runs += 1
        removed = {k: v for k, v in out.items() if k.endswith(("_keys", "_entries")) and v}
        for k, v in removed.items():
            self.removed[k] = self.removed.get(k, 0) + v
        if removed:
            self.report(f"retention: removed {removed} (older than {self.days:g} days of event time)")

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def stats(self) -> dict:
        return {"runs": self.runs, "failures": self.failures, "removed": dict(self.removed)}
