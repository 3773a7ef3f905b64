"""The feature catalog, generated from the code that computes the features.

Each module in ``CATALOG_MODULES`` declares its features as ``FEATURE_SPECS``
(a sequence of :class:`FeatureSpec`) next to the formulas, so the catalog
cannot drift from the code. This module defines the record and collects and
renders them: ``python scripts/features.py catalog``. It imports those modules
by name only when asked, so they can import :class:`FeatureSpec` from here.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import Any

CATALOG_MODULES = ("pipelines.features.core", "pipelines.features.flow_set")
COLUMNS = ("name", "group", "window", "unit", "warmup", "formula")


@dataclass(frozen=True)
class FeatureSpec:
    """One catalog row. ``warmup_trades``: trades needed before the value can be
    non-NaN; ``warmup_seconds``: event time needed since the first trade."""

    name: str
    group: str
    formula: str
    window: str
    unit: str
    warmup_trades: int = 0
    warmup_seconds: int = 0


def warmup_text(trades: int, seconds: int) -> str:
    parts = []
    if trades and (trades > 1 or not seconds):
        parts.append(f"{trades} trade{'s' if trades != 1 else ''}")
    if seconds:
        parts.append(f"{seconds} s event time")
    return " + ".join(parts) if parts else "none"


def catalog_entries(modules: tuple[str, ...] = CATALOG_MODULES) -> list[dict[str, Any]]:
    """One dict per feature: name, group, formula, window, unit, warmup (text),
    warmup_trades, warmup_seconds, module."""
    rows: list[dict[str, Any]] = []
    for mod_name in modules:
        specs: tuple[FeatureSpec, ...] = importlib.import_module(mod_name).FEATURE_SPECS
        for spec in specs:
            rows.append({
                "name": spec.name,
                "group": spec.group,
                "formula": spec.formula,
                "window": spec.window,
                "unit": spec.unit,
                "warmup": warmup_text(spec.warmup_trades, spec.warmup_seconds),
                "warmup_trades": spec.warmup_trades,
                "warmup_seconds": spec.warmup_seconds,
                "module": mod_name,
            })
    return rows


def render(entries: list[dict[str, Any]], fmt: str = "text") -> str:
    """``text`` (aligned columns, formula last), ``markdown`` (a table) or ``json``."""
    if fmt == "json":
        return json.dumps(entries, indent=2, ensure_ascii=False)
    if fmt == "markdown":
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for e in entries:
            lines.append("| " + " | ".join(str(e[c]).replace("|", "\\|") for c in COLUMNS) + " |")
        return "\n".join(lines)
    if fmt != "text":
        raise ValueError(f"unknown catalog format {fmt!r} (text, markdown, json)")
    widths = {c: max([len(c)] + [len(str(e[c])) for e in entries]) for c in COLUMNS[:-1]}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS[:-1]) + "  formula"]
    for e in entries:
        lines.append("  ".join(str(e[c]).ljust(widths[c]) for c in COLUMNS[:-1]) + "  " + str(e["formula"]))
    groups: dict[str, int] = {}
    for e in entries:
        groups[e["group"]] = groups.get(e["group"], 0) + 1
    lines.append("")
    lines.append(f"{len(entries)} features: " + ", ".join(f"{g} {k}" for g, k in groups.items()))
    return "\n".join(lines)
