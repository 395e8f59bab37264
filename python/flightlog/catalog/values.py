"""Manifest values as catalog column values (JSON text, naive-UTC timestamps, ints, floats)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any


def _json_safe(value: Any) -> Any:
    """``value`` made JSON-serialisable: non-finite floats become strings, dates ISO text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    return value


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(_json_safe(value), default=str)


def _utc_text(value: Any) -> str | None:
    """An ISO 8601 string or TOML date-time as naive-UTC ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if isinstance(value, _dt.datetime):
        moment = value if value.tzinfo is None else value.astimezone(_dt.UTC).replace(tzinfo=None)
        return moment.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day).isoformat(sep=" ")
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value.strip())
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    return None


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _utc_now_text() -> str:
    return _dt.datetime.now(_dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _id_list(values: str | Iterable[str] | None) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        return [values]
    out = list(values)
    for v in out:
        if not isinstance(v, str):
            raise TypeError(f"expected str ids, got {type(v).__name__} {v!r}")
    return out
