"""The one object an actor is configured with: what it needs from the run, plus its domain's config.

The wiring builds one :class:`ActorConfig` per run (``ActorConfig.for_run``) and derives each
actor's from it (``with_domain``), so every actor sees the same namespace, run and Valkey link.
What an actor talks to (the names of its peers, its feed source, the routes) is not config:
those are keyword-only constructor arguments beside it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from pipelines.config import AppConfig

C = TypeVar("C")
D = TypeVar("D")


@dataclass(frozen=True)
class ValkeyLink:
    """How an actor reaches Valkey. The password stays out: the config is sent to every actor
    as a Ray argument (and shows up in reprs), so it names the environment variable instead."""

    url: str | None = None  # None: no Valkey (the actor keeps everything in memory)
    password_env: str = "VALKEY_PASSWORD"


@dataclass(frozen=True)
class ActorConfig(Generic[C]):
    domain: C  # the actor's own config: FeaturesConfig, HmarlConfig, BufferConfig, ...
    namespace: str | None = None  # where its peers are looked up by name; None: the caller's Ray namespace
    run_id: str = ""  # the session: tags recordings, owns the paper account
    symbol: str = ""  # the one symbol it serves; "" for the actors every symbol shares
    symbols: tuple[str, ...] = ()  # every symbol of the run
    valkey: ValkeyLink = field(default_factory=ValkeyLink)

    @classmethod
    def for_run(cls, cfg: AppConfig, valkey_url: str | None, run_id: str) -> ActorConfig[None]:
        """What the run gives every actor (no domain yet)."""
        return cls(None, namespace=cfg.namespace, run_id=run_id, symbols=tuple(cfg.symbols),
                   valkey=ValkeyLink(valkey_url, cfg.valkey.password_env))

    def with_domain(self, domain: D, symbol: str = "") -> ActorConfig[D]:
        """The same run's config for an actor with ``domain`` (serving ``symbol``, if one)."""
        return dataclasses.replace(self, domain=domain, symbol=symbol)
