"""Compact HTML tables for Jupyter (``_repr_html_`` of reports and managers)."""

from __future__ import annotations

from html import escape

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

_STYLE = "border-collapse:collapse;font-size:12px"
_CELL = "padding:2px 8px;border-bottom:1px solid #ddd;text-align:left"


def key_values(title: str, items: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of ``name | value`` under a bold title."""
    rows = "".join(
        f'<tr><th style="{_CELL}">{escape(str(k))}</th><td style="{_CELL}">{escape(str(v))}</td></tr>' for k, v in items
    )
    return f'<div><b>{escape(title)}</b><table style="{_STYLE}">{rows}</table></div>'


def grid(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, limit: int = 20, title: str = "") -> str:
    """A table with a header, at most ``limit`` rows and a count of the rest."""
    head = "".join(f'<th style="{_CELL}">{escape(str(c))}</th>' for c in columns)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{escape(str(v))}</td>' for v in row) + "</tr>" for row in rows[:limit]
    )
    more = f"<div>… {len(rows) - limit} more rows</div>" if len(rows) > limit else ""
    caption = f"<b>{escape(title)}</b>" if title else ""
    return f'<div>{caption}<table style="{_STYLE}"><tr>{head}</tr>{body}</table>{more}</div>'
