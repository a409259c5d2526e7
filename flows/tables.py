"""One table renderer for every table Distillery prints or publishes.

Rows are flat dicts; columns default to every key met, in order of first appearance. A
missing or None cell is blank.

    render_table(rows, ["mode", "test_top1"])                 # markdown: results.md, dashboard
    render_table(rows, style="text")                          # aligned columns for a terminal
"""

from __future__ import annotations

from typing import Any, Iterable, Literal, Mapping


def render_table(rows: Iterable[Mapping[str, Any]], columns: Iterable[str] | None = None, *,
                 style: Literal["markdown", "text"] = "markdown") -> str:
    rows = list(rows)
    if not rows:
        return "no rows\n"
    columns = list(columns or dict.fromkeys(c for row in rows for c in row))
    cells = [["" if row.get(c) is None else str(row[c]) for c in columns] for row in rows]
    if style == "markdown":
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(line) + " |" for line in cells]
    else:
        widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
        lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in cells]
    return "\n".join(lines) + "\n"
