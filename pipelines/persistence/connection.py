"""Talking to Valkey: clients, the password, redacted URLs, what counts as a lost connection.

Every client in the system is made by :func:`connect`, and every password
comes from :func:`password_from_env` (or :func:`resolve_password` for a
:class:`~pipelines.persistence.config.ValkeyConfig`): a secret is read in one
place, and never logged or put in a URL.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import valkey
from valkey.exceptions import ConnectionError as _VkConnectionError
from valkey.exceptions import InvalidResponse as _VkInvalidResponse
from valkey.exceptions import TimeoutError as _VkTimeoutError

from pipelines.persistence.config import ValkeyConfig

__all__ = [
    "CONN_ERRORS",
    "RateLimit",
    "connect",
    "password_from_env",
    "redact",
    "resolve_password",
    "scan_stream",
    "suppressed_note",
]

# Errors that mean "the connection is gone or unusable": keep the data, retry.
# valkey's ConnectionError covers AuthenticationError and BusyLoadingError (a
# restarted server replaying its AOF) too.
CONN_ERRORS: tuple[type[BaseException], ...] = (_VkConnectionError, _VkTimeoutError, _VkInvalidResponse, OSError)


def password_from_env(env_name: str) -> str | None:
    """The Valkey password held by the environment variable ``env_name``.

    Empty or unset means no password. The value must never be logged or put in
    a URL; pass it to :func:`connect` separately.
    """
    return os.environ.get(env_name) or None


def resolve_password(cfg: ValkeyConfig) -> str | None:
    """:func:`password_from_env` of the variable named by ``cfg.password_env``."""
    return password_from_env(cfg.password_env)


def redact(url: str | None) -> str:
    """``url`` with any password replaced by ``***``, for logs and error messages.

    Covers ``scheme://user:pw@host``, ``scheme://pw@host`` (a lone userinfo may
    be a password, so it is hidden too) and a ``password=`` query parameter.
    """
    if url is None:
        return "<none>"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hostinfo = netloc.rsplit("@", 1)
        user, sep, _pw = userinfo.partition(":")
        netloc = f"{user}:***@{hostinfo}" if sep else f"***@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def connect(url: str, password: str | None = None, socket_timeout: float = 2.0, **kwargs: Any) -> valkey.Valkey:
    """A ``valkey.Valkey`` client for ``url`` (bytes replies, no automatic retries).

    ``password`` (from :func:`password_from_env`) wins over one embedded in the
    URL. Connections open lazily, so this never fails for an unreachable server.
    """
    client = valkey.Valkey.from_url(
        url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout, **kwargs
    )
    if password is not None:
        client.connection_pool.connection_kwargs["password"] = password
    return client


def scan_stream(
    fetch: Callable[..., list], key: str, start: str, stop: str, *, count: int, max_count: int | None = None
) -> Iterator[tuple[bytes, dict]]:
    """The ``(id, fields)`` entries of ``fetch`` (a client's ``xrange`` or ``xrevrange``)
    from ``start`` to ``stop``, one page per round trip, so memory per call stays bounded.

    Pages start at ``count`` entries and grow fourfold up to ``max_count``
    (default ``count``): a scan that usually stops after a few entries starts small.
    """
    max_count = max_count or count
    while True:
        page = fetch(key, start, stop, count=count)
        yield from page
        if len(page) < count:
            return
        last = page[-1][0]
        start = "(" + (last.decode() if isinstance(last, bytes) else last)
        count = min(count * 4, max_count)


class RateLimit:
    """Allow one log line per ``key`` every ``interval_s``; count the suppressed ones.

    An outage repeats the same failure many times a second: one line per
    interval tells the story without flooding the log.
    """

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, key: str) -> int | None:
        """None to stay quiet, else the number of lines suppressed since the last one."""
        now = time.monotonic()
        if now - self._last.get(key, -1e18) < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)


def suppressed_note(suppressed: int) -> str:
    """The tail of a rate-limited log line: how many similar lines it stands for."""
    return f" (+{suppressed} similar messages suppressed)" if suppressed else ""
