"""The feature catalog, generated from the code that computes the features.

Each feature module declares its features as ``FEATURE_SPECS`` (a sequence of
:class:`pipelines.features.core.FeatureSpec`, or objects/dicts with the same
fields) next to the formulas, so the catalog cannot drift from the code. This
module only collects and renders them: ``python scripts/features.py catalog``.

Modules listed in ``CATALOG_MODULES`` that do not exist yet, or do not expose
``FEATURE_SPECS``, are skipped.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

CATALOG_MODULES = ("pipelines.features.core", "pipelines.features.flow_set")
COLUMNS = ("name", "group", "window", "unit", "warmup", "formula")


def _field(spec: Any, key: str, default: Any = None) -> Any:
    if isinstance(spec, dict):
        return spec.get(key, default)
    return getattr(spec, key, default)


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
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        for spec in getattr(mod, "FEATURE_SPECS", ()):
            trades = int(_field(spec, "warmup_trades", 0) or 0)
            seconds = int(_field(spec, "warmup_seconds", 0) or 0)
            rows.append({
                "name": _field(spec, "name"),
                "group": _field(spec, "group", ""),
                "formula": _field(spec, "formula", ""),
                "window": _field(spec, "window", ""),
                "unit": _field(spec, "unit", ""),
                "warmup": warmup_text(trades, seconds),
                "warmup_trades": trades,
                "warmup_seconds": seconds,
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
