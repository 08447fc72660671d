"""Tables that tests fill and the end of the run prints (conftest's terminal summary).

    report.add("attacks", {"attack": "pings", "transport": "picows", ...})

Each section is printed as one table, its columns in the order of the first row.
"""

from __future__ import annotations

from typing import Any

__all__ = ["add", "sections"]

_sections: dict[str, list[dict[str, Any]]] = {}


def add(section: str, row: dict[str, Any]) -> None:
    _sections.setdefault(section, []).append(row)


def sections() -> dict[str, list[dict[str, Any]]]:
    return _sections


def render(rows: list[dict[str, Any]]) -> list[str]:
    """A Markdown table of ``rows``."""
    columns = list(rows[0])
    for row in rows[1:]:
        columns += [c for c in row if c not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return lines
