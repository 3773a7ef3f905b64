"""The voters' names: the agent registry and the ML voter.

:data:`AGENTS` maps each agent id (the ``hmarl.agents`` config values, the
``agent`` of its Signals) to its class. The classes are imported on first
lookup, so the config loader can check the names without importing the agents.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module

ML_VOTER = "ml"  # the ML model's voter name (Signal.agent, Feedback.voter)

_CLASSES = {  # agent id -> (module, class)
    "order_flow": ("pipelines.alpha.order_flow", "OrderFlowSpecialist"),
    "liquidity": ("pipelines.alpha.liquidity", "LiquidityAgent"),
    "tape": ("pipelines.alpha.tape", "TapeReadingAgent"),
    "footprint": ("pipelines.alpha.footprint", "FootprintPatternAgent"),
}


class AgentRegistry(Mapping):
    """Agent id -> agent class, in the order above."""

    def __getitem__(self, agent_id: str) -> type:
        module, name = _CLASSES[agent_id]
        return getattr(import_module(module), name)

    def __iter__(self) -> Iterator[str]:
        return iter(_CLASSES)

    def __len__(self) -> int:
        return len(_CLASSES)


AGENTS = AgentRegistry()
