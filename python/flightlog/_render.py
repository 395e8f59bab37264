"""Rows as text for a person or a program: tables (rich when installed, else aligned
text), CSV and JSON, the value formatters they share, and the one-line description of an
error (the CLI's ``flightlog: error: ...`` and the dashboard's messages).

A library module: the CLI, the demo, the report and the dashboard import it; it imports
nothing of theirs."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, TextIO

from ._errors import InputError, error_line

__all__ = ["FORMATS", "emit", "error_line", "render"]

FORMATS = ("table", "csv", "json")


def _json_value(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Decimal):
        return _json_value(float(v))
    if isinstance(v, _dt.datetime | _dt.date | _dt.time):
        return v.isoformat()
    if isinstance(v, Mapping):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_value(x) for x in v]
    if v is None or isinstance(v, bool | int | str):
        return v
    if hasattr(v, "item"):  # numpy scalars
        return _json_value(v.item())
    return str(v)


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    t = type(v)
    if t is str:  # the common cases first: isinstance against the ABCs below costs ~1 us
        return v  # type: ignore[no-any-return]
    if t is int:
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, _dt.datetime | _dt.date | _dt.time):
        return v.isoformat()
    if isinstance(v, Mapping | list | tuple):
        return json.dumps(_json_value(v))
    return str(v)


def _cell(v: Any) -> str:
    """A value for a human-readable table."""
    if v is None:
        return ""
    t = type(v)
    if t is str:  # the common cases first (see _csv_value)
        return v  # type: ignore[no-any-return]
    if t is int:
        return str(v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float | Decimal):
        f = float(v)
        if not math.isfinite(f):
            return str(f)
        # One rule for every float column: 4 significant digits (2.507e-17, 0.04149, 1.226).
        return f"{f:.4g}"
    if isinstance(v, _dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, Mapping | list | tuple):
        return json.dumps(_json_value(v))
    return str(v)


_NONE = type(None)
#: Column types whose table cells never need rich's attention (see :func:`_plain_cell`).
_PLAIN_KINDS = frozenset({int, float, _NONE, _dt.datetime})


def _columns_of(rows: Sequence[Sequence[Any]], n: int) -> list[Sequence[Any]]:
    """``rows`` as ``n`` columns (a transpose in C: 100,000 rows are listed at a time)."""
    return list(zip(*rows, strict=True)) if rows else [() for _ in range(n)]


def _column_types(rows: Sequence[Sequence[Any]], n: int) -> list[set[type]]:
    """The exact types of each column's values."""
    return [set(map(type, column)) for column in _columns_of(rows, n)]


def _numeric_types(kinds: set[type]) -> bool:
    """Whether a column with values of these types is numeric (:func:`_is_numeric`): some
    number, and nothing but numbers and None."""
    values = kinds - {_NONE}
    return bool(values) and all(issubclass(t, int | float | Decimal) and not issubclass(t, bool) for t in values)


def _csv_columns(rows: Sequence[Sequence[Any]], n: int) -> list[Sequence[str]]:
    """Each column of ``rows`` as the text csv.writer writes for its values (what
    :func:`_csv_value` gives), by the column's types where they are uniform."""
    out: list[Sequence[str]] = []
    for column in _columns_of(rows, n):
        kinds = set(map(type, column))
        if kinds <= {str}:
            out.append(column)
        elif kinds <= {int}:
            out.append(list(map(str, column)))
        elif kinds <= {float}:
            out.append(list(map(repr, column)))
        elif kinds <= {_NONE}:
            out.append([""] * len(column))
        elif kinds <= {_dt.datetime, _NONE}:
            out.append(["" if v is None else v.isoformat() for v in column])
        else:
            out.append([_csv_value(v) for v in column])
    return out


def _csv_special(texts: Sequence[str]) -> bool:
    """Whether csv.writer would quote any of ``texts`` (a comma, a quote or a line break)."""
    joined = "\x1f".join(texts)
    return any(c in joined for c in ',"\r\n')


def _cell_column(values: Sequence[Any], kinds: set[type]) -> list[str]:
    """:func:`_cell` of each value of one column, by the column's types (a loop per
    type instead of a call per value where they are uniform)."""
    if kinds <= {str, _NONE}:
        return ["" if v is None else v for v in values]
    if kinds <= {int, _NONE}:
        return ["" if v is None else str(v) for v in values]
    if kinds <= {float, _NONE}:
        # format(x, ".4g") is str(x) for inf and nan, as _cell has it.
        return ["" if v is None else f"{v:.4g}" for v in values]
    if kinds <= {_dt.datetime, _NONE}:
        # isoformat is strftime's text for years from 1000 on, at a fifth of its cost.
        return ["" if v is None else v.isoformat(" ", "seconds")[:19] if v.year >= 1000 else _cell(v) for v in values]
    return [_cell(v) for v in values]


def _typed(text: Any, column_type: Any) -> Any:
    """A SUMMARIZE min/max (text) as the column's type: int, float or bool; else as is."""
    if not isinstance(text, str):
        return text
    t = str(column_type).upper()
    try:
        if t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"):
            return int(text)
        if t in ("DOUBLE", "FLOAT", "REAL") or t.startswith("DECIMAL"):
            return _json_value(float(text))
        if t == "BOOLEAN":
            return text.lower() == "true"
    except ValueError:
        pass
    return text


def _is_numeric(v: Any) -> bool:
    return isinstance(v, int | float | Decimal) and not isinstance(v, bool)


def _use_rich() -> Any:
    if os.environ.get("FLIGHTLOG_PLAIN"):
        return None
    try:
        import rich  # noqa: F401
    except ImportError:
        return None
    from rich.console import Console

    return Console


#: Tables longer than this are laid out by :func:`_simple_head_table` when it can give
#: rich's exact output (rich takes ~1.6 ms a row: 16 s for 10,000 runs).
_RICH_MAX_ROWS = 200


def _plain_cell(text: str) -> bool:
    """Whether rich prints ``text`` as is, one cell wide per character: printable ASCII,
    no markup (``[``) and no emoji code (``:name:``) that rich would replace."""
    if not (text.isascii() and text.isprintable()) or "[" in text:
        return False
    if text.count(":") >= 2:
        from rich._emoji_replace import _emoji_replace

        return _emoji_replace(text) == text
    return True


def _plain_cells(texts: set[str]) -> bool:
    """:func:`_plain_cell` of every text: all at once where none has a colon (the emoji
    check is per cell), else one by one."""
    joined = " ".join(texts)
    if joined.isascii() and joined.isprintable() and "[" not in joined and ":" not in joined:
        return True
    return all(_plain_cell(t) for t in texts)


def _simple_head_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    types: Sequence[set[type]],
    numeric: Sequence[bool],
    title: str | None,
) -> str | None:
    """The text rich prints for :func:`render`'s table (``box.SIMPLE_HEAD``, no edge, no
    colour), built directly; None when rich would do anything but pad cells (a cell it
    would change, or a table wider than the console, which rich folds). Column by
    column: 100,000 runs are laid out in a fraction of a second."""
    if not all(_plain_cell(c) for c in columns):
        return None
    cell_columns = []
    for column, kinds in zip(_columns_of(rows, len(columns)), types, strict=True):
        cells = _cell_column(column, kinds)
        # Numbers, times and empty cells are plain; text is checked once per distinct value.
        if not kinds <= _PLAIN_KINDS and not _plain_cells(set(cells)):
            return None
        cell_columns.append(cells)
    widths = [max([len(c), *map(len, cells)]) for c, cells in zip(columns, cell_columns, strict=True)]
    total = sum(widths) + 3 * (len(widths) - 1)
    if sys.stdout.isatty():
        import shutil

        if total > max(shutil.get_terminal_size().columns, 80):
            return None
    elif total > 10_000:
        return None
    if title and (len(title) > total or not _plain_cell(title)):
        return None  # rich wraps a title wider than its table

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "   ".join(parts).rstrip()

    padded = [
        [c.rjust(w) for c in cells] if num else [c.ljust(w) for c in cells]
        for cells, w, num in zip(cell_columns, widths, numeric, strict=True)
    ]
    out = [title] if title else []
    out += [line(list(columns)), "\u2500" * total]
    out += [text.rstrip() for text in map("   ".join, zip(*padded, strict=True))]
    return "\n".join(out)


def render(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table", *, title: str | None = None
) -> str:
    """``rows`` as a table (rich if installed, else aligned text), CSV or JSON text."""
    if fmt == "json":
        return json.dumps([{c: _json_value(v) for c, v in zip(columns, r, strict=True)} for r in rows], indent=1)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        texts = _csv_columns(rows, len(columns))
        if len(columns) > 1 and not any(_csv_special(c) for c in [columns, *texts]):
            # Nothing to quote: csv.writer's lines are the fields joined by commas (a third of its time).
            return "\n".join([",".join(columns), *map(",".join, zip(*texts, strict=True))])
        w.writerow(columns)
        w.writerows(zip(*texts, strict=True))
        return buf.getvalue().rstrip("\n")
    if fmt != "table":
        raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    types = _column_types(rows, len(columns))
    numeric = [_numeric_types(t) for t in types]
    console_cls = _use_rich()
    if console_cls is not None and len(rows) > _RICH_MAX_ROWS:
        fast = _simple_head_table(columns, rows, types, numeric, title)
        if fast is not None:
            return fast
    if console_cls is not None:
        from rich import box
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False, show_edge=False)
        for c, num in zip(columns, numeric, strict=True):
            table.add_column(c, justify="right" if num else "left", no_wrap=True, overflow="fold")
        for r in rows:
            table.add_row(*(_cell(v) for v in r))
        buf = io.StringIO()
        interactive = sys.stdout.isatty()
        console = console_cls(
            file=buf,
            width=None if interactive else 10_000,
            force_terminal=False,
            color_system=None,
            soft_wrap=False,
            highlight=False,
        )
        if interactive:
            console.width = max(console.width, 80)
            import shutil

            console.width = max(shutil.get_terminal_size().columns, 80)
        console.print(table)
        return "\n".join(line.rstrip() for line in buf.getvalue().rstrip("\n").splitlines())
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [title] if title else []
    out += [line(list(columns)), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def emit(text: str, file: TextIO | None = None) -> None:
    print(text, file=file or sys.stdout)
