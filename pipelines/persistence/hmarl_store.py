"""The HMARL layer in Valkey: its key layout and the client, :class:`HmarlStore`.

Key families (values are ``orjson.dumps(to_dict(msg))`` for a message type, the
dict as given otherwise; NaN is stored as ``null``)

- ``hmarl:decision:<decision_id>``           STRING, a Decision, TTL ``decision_s`` (24 h)
- ``hmarl:feedback:<voter>:<symbol>:<seq>``  STRING, a Feedback, TTL ``feedback_s`` (7 d). Also the
  dedupe marker of the performance counters (see below)
- ``hmarl:signal:<agent>:<symbol>:<seq>``    STRING, a Signal, TTL ``signal_s`` (2 h)
- ``hmarl:agent:<agent_id>:<name>``          STRING, an agent's state blob (``hmarl:agent:order_flow:learning``), no TTL
- ``hmarl:agent:feedback:<SYM>:pending``     HASH, the feedback system's outcomes still pending (one field per
  tracked signal or decision, kept in step as they are tracked and resolved), no TTL
- ``hmarl:performance:<voter>``              HASH ``count hits misses reward_sum reward_sq_sum pnl_sum updated_ts``,
  no TTL; ``updated_ts`` is the newest feedback ``ts_event``
- ``hmarl:pattern:<type>:<id>``              STRING, a pattern dict, no TTL
- ``hmarl:patterns:<type>``                  ZSET index of the ids of one type, scored by the pattern's
  ``ts_event`` (0 when it has none)
- ``hmarl:metrics:<name>``                   STRING, a metrics dict, TTL ``metrics_s`` (24 h)
- ``hmarl:decisions:stream``, ``hmarl:feedback:stream``  STREAMs of every decision / feedback, one field
  ``json`` (the whole record), trimmed to about ``stream_maxlen`` (``MAXLEN ~``)
- ``hmarl:flow_state:<SYM>``, ``hmarl:flow_history:<SYM>``  owned by :mod:`pipelines.persistence.flow_store`; this
  store only delegates to it

Pub/sub channels (the message is the same JSON): ``hmarl:signals:<agent>``,
``hmarl:decisions:stream`` (the stream's own name, as in the original design)
and ``hmarl:feedback:<voter>``.

Stream entry ids are ``<ms>-<n>``, ``ms = ts_event // 1_000_000`` raised to the
stream's last id when event time steps backwards: ids follow event time, so
:meth:`HmarlStore.cleanup_old_data` trims by event time with ``XTRIM MINID``.

Writes never block: they are Valkey commands queued on one
:class:`~pipelines.persistence.write_behind.WriteBehind`, which retries them after a lost
connection, re-sending whole chunks. Each decision, signal and feedback is
therefore one Lua script (atomic, like MULTI/EXEC) that makes a replay harmless:

- decision, signal: ``SET ... GET``; when the stored value was already this
  record nothing else happens, otherwise it is appended to the stream and published
  (so a *changed* decision under the same id is streamed again);
- feedback: ``SET NX`` on the feedback key; only when it was new is the record
  streamed, published and counted in the performance hash. The first version
  of a feedback wins; once its key expired (7 d) or was cleaned up, a replay
  would count again.

Reads see what has been written, not what is still queued; the exception is
:meth:`HmarlStore.get_decision`, which answers from a local cache of the
decisions this store wrote. All times are event time; the only clocks read
here are Valkey's TTLs and the retry timers.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Callable

import orjson
import valkey

from pipelines.persistence.flow_store import FlowStateWriter, FlowStore
from pipelines.model.clock import NS_PER_DAY, NS_PER_MS
from pipelines.model.messages import Decision, Feedback, FlowState, Signal, to_dict
from pipelines.persistence.connection import CONN_ERRORS, RateLimit, connect, redact, suppressed_note
from pipelines.persistence.write_behind import WriteBehind

log = logging.getLogger("quantumtrader.hmarl.store")

__all__ = [
    "DECISIONS_CHANNEL", "DECISIONS_STREAM", "FEEDBACK_STREAM", "HmarlStore", "HmarlSubscriber", "HmarlTTL",
    "agent_state_key", "decision_key", "feedback_channel", "feedback_key", "metrics_key", "pattern_index_key",
    "pattern_key", "performance_key", "signal_key", "signals_channel",
]


# -- keys and channels ------------------------------------------------------------

DECISIONS_STREAM = "hmarl:decisions:stream"
FEEDBACK_STREAM = "hmarl:feedback:stream"
DECISIONS_CHANNEL = DECISIONS_STREAM


def decision_key(decision_id: str) -> str:
    return f"hmarl:decision:{decision_id}"


def feedback_key(voter: str, symbol: str, seq: int | str) -> str:
    return f"hmarl:feedback:{voter}:{symbol}:{seq}"


def signal_key(agent: str, symbol: str, seq: int | str) -> str:
    return f"hmarl:signal:{agent}:{symbol}:{seq}"


def agent_state_key(agent_id: str, name: str) -> str:
    return f"hmarl:agent:{agent_id}:{name}"


def performance_key(voter: str) -> str:
    return f"hmarl:performance:{voter}"


def pattern_key(pattern_type: str, pattern_id: str) -> str:
    return f"hmarl:pattern:{pattern_type}:{pattern_id}"


def pattern_index_key(pattern_type: str) -> str:
    return f"hmarl:patterns:{pattern_type}"


def metrics_key(name: str) -> str:
    return f"hmarl:metrics:{name}"


def signals_channel(agent: str) -> str:
    return f"hmarl:signals:{agent}"


def feedback_channel(voter: str) -> str:
    return f"hmarl:feedback:{voter}"


# health_check's key census: exact keys first, then prefixes (``hmarl:feedback:stream``
# would otherwise count as a feedback record).
_EXACT_FAMILIES = {DECISIONS_STREAM.encode(): "decisions_stream", FEEDBACK_STREAM.encode(): "feedback_stream"}
_PREFIX_FAMILIES = tuple((p.encode(), name) for p, name in (
    ("hmarl:decision:", "decision"), ("hmarl:feedback:", "feedback"), ("hmarl:signal:", "signal"),
    ("hmarl:agent:", "agent"), ("hmarl:performance:", "performance"), ("hmarl:pattern:", "pattern"),
    ("hmarl:patterns:", "pattern_index"), ("hmarl:metrics:", "metrics"), ("hmarl:flow_state:", "flow_state"),
    ("hmarl:flow_history:", "flow_history"),
    # the trading and risk records (trading_store.py, risk_store.py own them): counted, not "other"
    ("hmarl:order:", "order"), ("hmarl:orders:", "orders"), ("hmarl:fills:", "fills"),
    ("hmarl:position:", "position"), ("hmarl:positions:", "position_index"), ("hmarl:risk:", "risk")))

# -- Lua: one atomic, replay-safe script per record -------------------------------

_APPEND_LUA = """
local function append(stream, ms, maxlen, blob)
  local id = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, ms .. '-*', 'json', blob)
  if type(id) == 'table' and id.err then
    -- event time went backwards: keep ids increasing by reusing the last id's ms
    local info = redis.call('XINFO', 'STREAM', stream)
    local last
    for i = 1, #info, 2 do if info[i] == 'last-generated-id' then last = info[i + 1] end end
    id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, string.match(last, '^(%d+)-') .. '-*', 'json', blob)
  end
  return id
end
"""

# KEYS: record [, stream]   ARGV: blob, ttl_s, channel [, event_ms, maxlen]
_RECORD_LUA = _APPEND_LUA + """
local old = redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2], 'GET')
if old == ARGV[1] then return 0 end
if KEYS[2] then append(KEYS[2], ARGV[4], ARGV[5], ARGV[1]) end
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
"""

# The first version of a record wins: only one not stored yet is streamed and published.
# KEYS: record, stream, ...   ARGV: blob, ttl_s, channel, event_ms, maxlen, ...
_FIRST_WINS_LUA = _APPEND_LUA + """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
append(KEYS[2], ARGV[4], ARGV[5], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[1])
"""

# A decision is made once: a second one under the same id (a round run again after the
# coordinator restarted, with its saved state a little behind) is not recorded twice.
# KEYS: record, stream   ARGV: blob, ttl_s, channel, event_ms, maxlen
_RECORD_ONCE_LUA = _FIRST_WINS_LUA + """return 1
"""

# KEYS: record, stream, performance
# ARGV: blob, ttl_s, channel, event_ms, maxlen, hit ('1' | '0' | ''), reward, reward^2, pnl, ts_event
# Sums arrive as Python repr text and go straight to HINCRBYFLOAT: Lua never rounds them.
# ts_event is compared as decimal text (length, then digits): above 2^53 a Lua number would round.
_FEEDBACK_LUA = _FIRST_WINS_LUA + """local perf = KEYS[3]
redis.call('HINCRBY', perf, 'count', 1)
redis.call('HINCRBY', perf, 'hits', ARGV[6] == '1' and 1 or 0)
redis.call('HINCRBY', perf, 'misses', ARGV[6] == '0' and 1 or 0)
redis.call('HINCRBYFLOAT', perf, 'reward_sum', ARGV[7])
redis.call('HINCRBYFLOAT', perf, 'reward_sq_sum', ARGV[8])
redis.call('HINCRBYFLOAT', perf, 'pnl_sum', ARGV[9])
local ts, cur = ARGV[10], redis.call('HGET', perf, 'updated_ts')
if not cur or #ts > #cur or (#ts == #cur and ts > cur) then redis.call('HSET', perf, 'updated_ts', ts) end
return 1
"""


@dataclass(frozen=True)
class HmarlTTL:
    """Expiry in seconds per key family; agent state, performance and patterns never expire."""

    decision_s: int = 86_400
    feedback_s: int = 7 * 86_400
    flow_state_s: int = 3_600
    signal_s: int = 7_200
    metrics_s: int = 86_400


# -- input checks -------------------------------------------------------------------


class _BadInput(ValueError):
    """A record this store cannot write. ``reason`` is short (the stats key); the message has the detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def _encode(record: Any, msg_type: type) -> tuple[dict, bytes]:
    """(dict, JSON) for a message of ``msg_type`` or a dict."""
    if isinstance(record, msg_type):
        d = to_dict(record)
    elif isinstance(record, dict):
        d = record
    else:
        raise _BadInput("wrong type", f"expected {msg_type.__name__} or dict, got {type(record).__name__}")
    return d, _json(d)


def _json(d: Any) -> bytes:
    try:
        return orjson.dumps(d, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError as e:
        raise _BadInput("not JSON-serializable", f"not JSON-serializable: {e}") from None


def _name(d: dict, field: str) -> str:
    return _key_part(d.get(field), field)


def _key_part(v: Any, field: str) -> str:
    """A key component: a non-empty string, or an integer (a seq) as decimal text."""
    if isinstance(v, str) and v:
        return v
    if isinstance(v, Integral) and not isinstance(v, bool):
        return str(int(v))
    raise _BadInput(f"bad {field}", f"{field} must be a non-empty string or an integer, got {v!r}")


def _event_ns(d: dict) -> int:
    v = d.get("ts_event")
    if isinstance(v, Integral) and not isinstance(v, bool) and v >= 0:
        return int(v)
    raise _BadInput("bad ts_event", f"ts_event must be an integer >= 0 (ns), got {v!r}")


def _finite(d: dict, field: str) -> float:
    v = d.get(field)
    if isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    raise _BadInput(f"bad {field}", f"{field} must be a finite number, got {v!r}")


def _hit_flag(d: dict) -> str:
    """'1' hit, '0' miss, '' neither (flat outcome or no direction)."""
    v = d.get("hit")
    if v is None:
        return ""
    if isinstance(v, bool) or type(v).__name__ == "bool_":  # numpy.bool_ is no bool subclass
        return "1" if v else "0"
    raise _BadInput("bad hit", f"hit must be True, False or None, got {v!r}")


def _summary(h: dict[bytes, bytes]) -> dict[str, Any]:
    """A performance hash as statistics.

    ``reward_std`` is the population standard deviation (ddof=0);
    ``sharpe_like`` is ``mean_reward / reward_std`` per outcome: not annualized
    and not scaled by ``sqrt(count)``, so voters with different counts compare.
    ``hit_rate`` is over decisive outcomes (``hits + misses``). None where undefined.
    """
    n = int(h.get(b"count", 0))
    hits, misses = int(h.get(b"hits", 0)), int(h.get(b"misses", 0))
    reward_sum, sq_sum = float(h.get(b"reward_sum", 0)), float(h.get(b"reward_sq_sum", 0))
    mean = reward_sum / n if n else None
    std = math.sqrt(max(0.0, sq_sum / n - mean * mean)) if n else None  # rounding may dip below 0
    return {
        "count": n, "hits": hits, "misses": misses,
        "hit_rate": hits / (hits + misses) if hits + misses else None,
        "mean_reward": mean, "reward_std": std,
        "sharpe_like": mean / std if std else None,
        "reward_sum": reward_sum, "pnl_sum": float(h.get(b"pnl_sum", 0)),
        "updated_ts": int(h[b"updated_ts"]) if b"updated_ts" in h else None,
    }


# -- the store -----------------------------------------------------------------------


class HmarlStore:
    """Client of the HMARL key layout (see the module docstring).

    Writes are queued (never block, never raise for Valkey); bad records are
    counted in ``stats()["rejected"]`` and dropped. Reads are synchronous and,
    when Valkey is unreachable, return None (or []) and count
    ``stats()["read_errors"]``; :meth:`get_recent_decisions` then falls back to
    the local cache. ``write_behind_kwargs`` go to both writers
    (``max_queue``, ``chunk``, ``socket_timeout_s``, ``reconnect_*``).
    """

    BATCH = 500  # keys per MGET / DEL in the maintenance scans
    SCAN_COUNT = 1_000

    def __init__(self, url: str, password: str | None = None, *, ttl: HmarlTTL = HmarlTTL(),
                 stream_maxlen: int = 100_000, cache_size: int = 10_000, **write_behind_kwargs: Any):
        if stream_maxlen < 1:
            raise ValueError(f"stream_maxlen must be >= 1, got {stream_maxlen}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.ttl = ttl
        self._url = url
        self._maxlen = stream_maxlen
        self._client = connect(url, password, socket_timeout=write_behind_kwargs.get("socket_timeout_s", 2.0))
        self._wb = WriteBehind(url, password, name="hmarl-store", **write_behind_kwargs)
        self._flow_writer = FlowStateWriter(url, password, ttl_s=ttl.flow_state_s, history_maxlen=stream_maxlen,
                                            **write_behind_kwargs)
        del password  # only the clients' connection kwargs keep it
        self._flow = FlowStore(self._client)

        self._lock = threading.Lock()
        self._cache_size = cache_size
        self._cache: OrderedDict[str, tuple[int, bytes]] = OrderedDict()  # id -> (store order, json)
        self._stored = 0
        self._cache_hits = 0
        self._rejected: dict[str, int] = {}
        self._read_errors: dict[str, int] = {}
        self._ratelimit = RateLimit(10.0)
        self._closed = False

    # -- decisions ----------------------------------------------------------------------

    def store_decision(self, decision: Decision | dict) -> None:
        """SET NX (TTL) + XADD + PUBLISH on ``hmarl:decisions:stream``, queued; also cached locally.
        Once per decision id: the first one stored wins."""
        try:
            d, blob = _encode(decision, Decision)
            decision_id, ms = _name(d, "decision_id"), _event_ns(d) // NS_PER_MS
        except _BadInput as e:
            return self._reject("decision", e)
        self._wb.submit([("EVAL", _RECORD_ONCE_LUA, 2, decision_key(decision_id), DECISIONS_STREAM,
                          blob, self.ttl.decision_s, DECISIONS_CHANNEL, ms, self._maxlen)])
        if self._cache_size:
            with self._lock:
                self._stored += 1
                self._cache[decision_id] = (self._stored, blob)
                self._cache.move_to_end(decision_id)
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)

    def get_decision(self, decision_id: str) -> dict | None:
        """From the local cache (also while Valkey is down), else from Valkey."""
        with self._lock:
            hit = self._cache.get(decision_id)
            if hit is not None:
                self._cache.move_to_end(decision_id)
                self._cache_hits += 1
        if hit is not None:
            return orjson.loads(hit[1])
        return self._get_json("decision", decision_key(decision_id))

    def get_recent_decisions(self, limit: int = 10) -> list[dict]:
        """The newest ``limit`` decisions of the stream, newest first. Valkey
        unreachable: the newest of the local cache, in the order they were stored."""
        if limit <= 0:
            return []
        try:
            page = self._client.xrevrange(DECISIONS_STREAM, "+", "-", count=limit)
            return [orjson.loads(fields[b"json"]) for _id, fields in page]
        except CONN_ERRORS as e:
            self._read_failed("recent decisions", e)
        with self._lock:
            newest = sorted(self._cache.values(), reverse=True)[:limit]
        return [orjson.loads(blob) for _order, blob in newest]

    # -- signals and feedback -------------------------------------------------------------

    def store_signal(self, signal: Signal | dict) -> None:
        """SET (TTL) + PUBLISH on ``hmarl:signals:<agent>``, queued."""
        try:
            d, blob = _encode(signal, Signal)
            agent, symbol, seq = _name(d, "agent"), _name(d, "symbol"), _name(d, "seq")
        except _BadInput as e:
            return self._reject("signal", e)
        self._wb.submit([("EVAL", _RECORD_LUA, 1, signal_key(agent, symbol, seq),
                          blob, self.ttl.signal_s, signals_channel(agent))])

    def store_feedback(self, fb: Feedback | dict) -> None:
        """SET NX (TTL) + XADD + PUBLISH on ``hmarl:feedback:<voter>`` + the performance
        counters, in one script, queued. Idempotent per (voter, symbol, seq)."""
        try:
            d, blob = _encode(fb, Feedback)
            voter, symbol, seq = _name(d, "voter"), _name(d, "symbol"), _name(d, "seq")
            ts = _event_ns(d)
            reward, pnl, hit = _finite(d, "reward"), _finite(d, "pnl"), _hit_flag(d)
        except _BadInput as e:
            return self._reject("feedback", e)
        self._wb.submit([("EVAL", _FEEDBACK_LUA, 3, feedback_key(voter, symbol, seq), FEEDBACK_STREAM,
                          performance_key(voter), blob, self.ttl.feedback_s, feedback_channel(voter),
                          ts // NS_PER_MS, self._maxlen, hit, repr(reward), repr(reward * reward), repr(pnl), ts)])

    def get_agent_performance(self, voter: str) -> dict | None:
        """count, hits, misses, hit_rate, mean_reward, reward_std, sharpe_like, reward_sum,
        pnl_sum, updated_ts (see :func:`_summary`); None when the voter has no feedback."""
        h = self._read("performance", lambda: self._client.hgetall(performance_key(voter)))
        return _summary(h) if h else None

    # -- flow state (pipelines.persistence.flow_store owns these keys) ----------------------------------

    def store_flow_state(self, state: FlowState) -> None:
        """Queued on :class:`~pipelines.persistence.flow_store.FlowStateWriter` (state key + history)."""
        if not isinstance(state, FlowState):
            why = f"expected FlowState, got {type(state).__name__}"
            return self._reject("flow state", _BadInput("wrong type", why))
        self._flow_writer.write([state])

    def get_flow_state(self, symbol: str, timestamp_ns: int | None = None) -> dict | None:
        """See :meth:`pipelines.persistence.flow_store.FlowStore.get_flow_state`."""
        return self._read("flow state", lambda: self._flow.get_flow_state(symbol, timestamp_ns))

    # -- patterns, agent state, metrics -----------------------------------------------------

    def store_pattern(self, pattern_type: str, pattern_id: str, data: dict) -> None:
        """The pattern (no TTL) and its id in the type's index, scored by ``data["ts_event"]`` (else 0)."""
        try:
            ptype, pid = _key_part(pattern_type, "pattern_type"), _key_part(pattern_id, "pattern_id")
            blob = self._dict_json(data)
            score = data.get("ts_event")
            score = int(score) if isinstance(score, Integral) and not isinstance(score, bool) else 0
        except _BadInput as e:
            return self._reject("pattern", e)
        self._wb.submit([("SET", pattern_key(ptype, pid), blob), ("ZADD", pattern_index_key(ptype), score, pid)])

    def get_patterns_by_type(self, pattern_type: str, limit: int | None = None) -> list[dict]:
        """The patterns of one type, newest ``ts_event`` first (ties: id descending)."""
        if limit is not None and limit <= 0:
            return []

        def fetch() -> list[bytes | None]:
            ids = self._client.zrevrange(pattern_index_key(pattern_type), 0, -1 if limit is None else limit - 1)
            return self._client.mget([pattern_key(pattern_type, i.decode()) for i in ids]) if ids else []

        blobs = self._read("patterns", fetch) or []
        return [d for d in (self._decode("patterns", b) for b in blobs if b is not None) if d is not None]

    def store_agent_state(self, agent_id: str, name: str, blob: dict) -> None:
        """``hmarl:agent:<agent_id>:<name>``, no TTL, queued."""
        try:
            key = agent_state_key(_key_part(agent_id, "agent_id"), _key_part(name, "name"))
            payload = self._dict_json(blob)
        except _BadInput as e:
            return self._reject("agent state", e)
        self._wb.submit([("SET", key, payload)])

    def load_agent_state(self, agent_id: str, name: str, *, attempts: int = 3,
                         retry_delay_s: float = 0.1) -> dict | None:
        """Synchronous, for an actor's ``__init__``. None when absent, and also when Valkey
        stays unreachable over ``attempts`` tries (delays double from ``retry_delay_s``):
        the caller decides whether to start fresh; ``stats()["read_errors"]`` tells the two apart."""
        key = agent_state_key(agent_id, name)
        for attempt in range(attempts):
            try:
                return self._decode("agent state", self._client.get(key))
            except CONN_ERRORS as e:
                if attempt + 1 == attempts:
                    self._read_failed("agent state", e)
                    return None
                time.sleep(retry_delay_s * 2**attempt)
        return None

    def store_pending(self, owner: str, added: dict[str, dict], resolved: list[str]) -> None:
        """Mirror a pending set in ``hmarl:agent:<owner>:pending`` (HASH): HSET the added
        fields, HDEL the resolved ones, in this order, queued."""
        try:
            key = agent_state_key(_key_part(owner, "owner"), "pending")
            fields = [(_key_part(f, "field"), self._dict_json(v)) for f, v in added.items()]
            gone = [_key_part(f, "field") for f in resolved]
        except _BadInput as e:
            return self._reject("pending", e)
        ops: list[tuple] = []
        if fields:
            ops.append(("HSET", key, *(x for pair in fields for x in pair)))
        if gone:
            ops.append(("HDEL", key, *gone))
        if ops:
            self._wb.submit(ops)

    def load_pending(self, owner: str) -> dict[str, dict] | None:
        """The pending set :meth:`store_pending` mirrored (field -> dict), synchronous; None when
        Valkey is unreachable (counted in ``read_errors``), {} when there is none."""
        h = self._read("pending", lambda: self._client.hgetall(agent_state_key(owner, "pending")))
        if h is None:
            return None
        out = {}
        for field, raw in h.items():
            value = self._decode("pending", raw)
            if isinstance(value, dict):
                out[field.decode()] = value
        return out

    def store_metrics(self, name: str, data: dict) -> None:
        try:
            key, blob = metrics_key(_key_part(name, "name")), self._dict_json(data)
        except _BadInput as e:
            return self._reject("metrics", e)
        self._wb.submit([("SET", key, blob, "EX", self.ttl.metrics_s)])

    def get_metrics(self, name: str) -> dict | None:
        return self._get_json("metrics", metrics_key(name))

    # -- pub/sub ---------------------------------------------------------------------------

    def subscribe(self, pattern: str) -> "HmarlSubscriber":
        """PSUBSCRIBE ``pattern`` (e.g. ``hmarl:feedback:*``) on a connection of its own."""
        return HmarlSubscriber(self._client, pattern)

    # -- maintenance -----------------------------------------------------------------------

    def health_check(self, *, scan_limit: int = 100_000) -> dict[str, Any]:
        """connected, used_memory (bytes), keyspace_keys (of this db), families (key count per
        family, from a SCAN of ``hmarl:*`` stopped after ``scan_limit`` keys: ``scan_complete``),
        stream lengths, and both writers' stats. Never raises for Valkey."""
        out: dict[str, Any] = {"connected": False, "url": redact(self._url), "used_memory": None,
                               "keyspace_keys": None, "families": None, "scan_complete": None, "streams": None,
                               "write_behind": self._wb.stats(), "flow_writer": self._flow_writer.stats()}
        try:
            self._client.ping()
            out["connected"] = True
            out["used_memory"] = self._client.info("memory")["used_memory"]
            db = self._client.connection_pool.connection_kwargs.get("db", 0)
            out["keyspace_keys"] = self._client.info("keyspace").get(f"db{db}", {}).get("keys", 0)
            keys, out["scan_complete"] = self._scan("hmarl:*", scan_limit)
            families: dict[str, int] = {}
            for k in keys:
                fam = _EXACT_FAMILIES.get(k) or next((n for p, n in _PREFIX_FAMILIES if k.startswith(p)), "other")
                families[fam] = families.get(fam, 0) + 1
            out["families"] = families
            out["streams"] = {"decisions": self._client.xlen(DECISIONS_STREAM),
                              "feedback": self._client.xlen(FEEDBACK_STREAM)}
        except CONN_ERRORS as e:
            out["error"] = f"{type(e).__name__}: {e}"
        return out

    def cleanup_old_data(self, days: float, *, scan_limit: int = 100_000) -> dict[str, Any]:
        """Remove decisions, feedback, signals and patterns more than ``days`` older than the newest one.

        "Newest" is event time, per family: the largest ``ts_event`` among its keys and its
        stream's top entry, never the wall clock. Streams are trimmed with ``XTRIM MINID`` at
        the cutoff's ms; keys are scanned (at most ``scan_limit`` per family: ``complete``)
        and deleted when their record's ``ts_event`` is below the cutoff. Returns the counts
        removed and the cutoffs (ns; None for a family with no data). Raises when Valkey is
        unreachable. Deleting a feedback key also forgets its dedupe marker."""
        if not (days > 0 and math.isfinite(days)):  # NaN fails the first test
            raise ValueError(f"days must be > 0, got {days!r}")
        span_ns = int(days * NS_PER_DAY)
        out: dict[str, Any] = {"cutoff_ns": {}, "complete": True}
        for family, match, stream in (("decision", "hmarl:decision:*", DECISIONS_STREAM),
                                      ("feedback", "hmarl:feedback:*", FEEDBACK_STREAM),
                                      ("signal", "hmarl:signal:*", None)):
            # ``hmarl:feedback:*`` also matches the feedback stream: _EXACT_FAMILIES leaves it out below
            keys, complete = self._scan(match, scan_limit)
            out["complete"] &= complete
            stamped = self._event_times([k for k in keys if k not in _EXACT_FAMILIES])
            times = [ts for _k, ts in stamped]
            if stream is not None:
                top = self._client.xrevrange(stream, "+", "-", count=1)
                if top:
                    times.append(orjson.loads(top[0][1][b"json"])["ts_event"])
            cutoff = max(times) - span_ns if times else None
            out["cutoff_ns"][family] = cutoff
            old = [k for k, ts in stamped if cutoff is not None and ts < cutoff]
            out[f"{family}_keys"] = sum(self._client.delete(*old[i:i + self.BATCH])
                                        for i in range(0, len(old), self.BATCH))
            if stream is not None:
                out[f"{family}_stream_entries"] = (0 if cutoff is None else self._client.execute_command(
                    "XTRIM", stream, "MINID", max(0, cutoff // NS_PER_MS)))
        out.update(self._cleanup_patterns(span_ns, out))
        return out

    def _cleanup_patterns(self, span_ns: int, out: dict[str, Any]) -> dict[str, Any]:
        """Patterns older than ``span_ns`` before the newest pattern of any type: their
        indexes are scored by ``ts_event``, so no record has to be read."""
        indexes, complete = self._scan(pattern_index_key("*"), 10_000)
        out["complete"] &= complete
        newest = [top[0][1] for ix in indexes if (top := self._client.zrevrange(ix, 0, 0, withscores=True))]
        cutoff = int(max(newest)) - span_ns if newest else None
        out["cutoff_ns"]["pattern"] = cutoff
        removed = 0
        for ix in indexes if cutoff is not None else ():
            ptype = ix.decode()[len(pattern_index_key("")):]
            old = self._client.zrangebyscore(ix, "-inf", f"({cutoff}")
            for i in range(0, len(old), self.BATCH):
                part = old[i:i + self.BATCH]
                removed += self._client.delete(*(pattern_key(ptype, pid.decode()) for pid in part))
                self._client.zrem(ix, *part)
        return {"pattern_keys": removed}

    # -- lifecycle -------------------------------------------------------------------------

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every write queued before this call is finished; False on timeout."""
        deadline = time.monotonic() + timeout_s
        ok = self._wb.flush(timeout_s)
        return self._flow_writer.flush(max(0.0, deadline - time.monotonic())) and ok

    def commit(self, timeout_s: float = 2.0) -> bool:
        """Wait for the record writes queued so far (not the flow states) while Valkey is
        reachable; return at once when it is not: a decision must survive a crash of its actor
        right after it was made, but must not wait out an outage (the queue keeps it then)."""
        return self._wb.connected and self._wb.flush(timeout_s)

    def close(self, timeout_s: float = 10.0) -> bool:
        """Flush (up to ``timeout_s``), stop the writers, close the connections. Idempotent."""
        if self._closed:
            return True
        self._closed = True
        deadline = time.monotonic() + timeout_s
        ok = self._wb.close(timeout_s)
        ok = self._flow_writer.close(max(0.0, deadline - time.monotonic())) and ok
        self._client.close()
        return ok

    def __enter__(self) -> "HmarlStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        """write_behind / flow_writer counters (per Valkey op), rejected records and
        failed reads by reason, cache size and hits."""
        with self._lock:
            own = {"rejected": dict(self._rejected), "read_errors": dict(self._read_errors),
                   "cache_size": len(self._cache), "cache_hits": self._cache_hits}
        return {"write_behind": self._wb.stats(), "flow_writer": self._flow_writer.stats(), **own}

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _dict_json(data: Any) -> bytes:
        if not isinstance(data, dict):
            raise _BadInput("wrong type", f"expected a dict, got {type(data).__name__}")
        return _json(data)

    def _reject(self, kind: str, e: _BadInput) -> None:
        self._count(self._rejected, f"{kind}: {e.reason}", logging.WARNING, "%s not stored: %s", kind, e)

    def _read_failed(self, what: str, e: BaseException) -> None:
        self._count(self._read_errors, what, logging.WARNING, "reading %s from %s failed (%s: %s)",
                    what, redact(self._url), type(e).__name__, e)

    def _count(self, counter: dict[str, int], reason: str, level: int, msg: str, *args: Any) -> None:
        """Count under ``reason``; log at most one line per reason and interval."""
        with self._lock:
            counter[reason] = counter.get(reason, 0) + 1
            suppressed = self._ratelimit(reason)
        if suppressed is not None:
            log.log(level, msg + "%s", *args, suppressed_note(suppressed))

    def _read(self, what: str, fetch: Callable[[], Any]) -> Any:
        """``fetch()``, or None (counted) when Valkey is unreachable."""
        try:
            return fetch()
        except CONN_ERRORS as e:
            self._read_failed(what, e)
            return None

    def _decode(self, what: str, raw: bytes | None) -> Any:
        if raw is None:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as e:  # someone else wrote the key
            self._read_failed(what, e)
            return None

    def _get_json(self, what: str, key: str) -> dict | None:
        return self._decode(what, self._read(what, lambda: self._client.get(key)))

    def _scan(self, match: str, limit: int) -> tuple[list[bytes], bool]:
        """Keys matching ``match``; stops after about ``limit`` keys. (keys, complete)."""
        keys: list[bytes] = []
        cursor = 0
        while True:
            cursor, page = self._client.scan(cursor, match=match, count=self.SCAN_COUNT)
            keys.extend(page)
            if cursor == 0:
                return keys, True
            if len(keys) >= limit:
                return keys, False

    def _event_times(self, keys: list[bytes]) -> list[tuple[bytes, int]]:
        """(key, ts_event) of the keys holding a JSON record with an integer ts_event."""
        out = []
        for i in range(0, len(keys), self.BATCH):
            batch = keys[i:i + self.BATCH]
            for k, raw in zip(batch, self._client.mget(batch)):
                rec = self._decode("cleanup", raw)
                if isinstance(rec, dict) and isinstance(rec.get("ts_event"), int):
                    out.append((k, rec["ts_event"]))
        return out


class HmarlSubscriber:
    """A PSUBSCRIBE on its own connection; :meth:`get` returns ``(channel, record)``.

    Pub/sub is at most once: after a lost connection the next :meth:`get`
    reconnects and subscribes again (valkey-py does), and whatever was published
    in between is gone; the streams and keys are the record of truth."""

    def __init__(self, client: valkey.Valkey, pattern: str, ready_timeout_s: float = 5.0):
        self.pattern = pattern
        self.bad_messages = 0
        self.connection_errors = 0
        self._pubsub = client.pubsub()
        self._pubsub.psubscribe(pattern)
        # Wait for the server's confirmation: a publish after subscribe() returns must be seen.
        deadline = time.monotonic() + ready_timeout_s
        while True:
            msg = self._pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if msg is not None and msg["type"] == "psubscribe":
                return
            if time.monotonic() >= deadline:
                self._pubsub.close()
                raise TimeoutError(f"PSUBSCRIBE {pattern!r} not confirmed within {ready_timeout_s} s")

    def get(self, timeout: float = 1.0) -> tuple[str, dict] | None:
        """The next message as (channel, decoded JSON), or None after ``timeout`` s.
        Messages that are not JSON are counted (``bad_messages``) and skipped."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                msg = self._pubsub.get_message(timeout=remaining)
            except CONN_ERRORS:
                self.connection_errors += 1
                time.sleep(min(remaining, 0.05))
                msg = None
            if msg is not None and msg["type"] == "pmessage":
                try:
                    return msg["channel"].decode(), orjson.loads(msg["data"])
                except orjson.JSONDecodeError:
                    self.bad_messages += 1
                    continue
            if remaining <= 0:
                return None

    def close(self) -> None:
        self._pubsub.close()

    def __enter__(self) -> "HmarlSubscriber":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
