"""``_flightlog.run_listing``: one row per consolidated terminal run, for listing runs
without reading every manifest."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .schema import FINAL_STATUSES


def _refuse(value: Any) -> Any:
    raise TypeError(f"not JSON: {type(value).__name__}")


def _manifest_json(data: Mapping[str, Any]) -> str | None:
    """A manifest as JSON text, or None when a value would not come back as it was (a
    TOML date or time: such a manifest is never listed from the catalog). Parsed TOML
    holds only str keys, lists and dicts, so every other value round-trips."""
    try:
        return json.dumps(data, ensure_ascii=False, default=_refuse)
    except (TypeError, ValueError):
        return None


def _listing_row(data: Mapping[str, Any], manifest_rel: str, st: Any) -> dict[str, Any] | None:
    """The ``_flightlog.run_listing`` row of a consolidated run, or None when its manifest must be
    read each time it is listed: not terminal yet (its status is a matter of evidence),
    or not plain (a field the listing uses has an odd type, or a TOML date/time)."""
    if data.get("status") not in FINAL_STATUSES:
        return None
    light = {k: data.get(k) for k in ("flow_name", "mode", "created_at", "finished_at", "outcome")}
    if any(v is not None and not isinstance(v, str) for v in light.values()):
        return None
    rows = (data.get("counts") or {}).get("rows_written")
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or abs(rows) >= 2**63):
        return None
    text = _manifest_json(data)
    if text is None:
        return None
    return {
        "manifest_path": manifest_rel,
        "manifest_mtime_ns": st.st_mtime_ns,
        "manifest_size": st.st_size,
        # flightlog writes manifests by rename: a new inode even where mtime is coarse
        "manifest_ino": getattr(st, "st_ino", None),
        "run_id": data["run_id"],
        "status": data["status"],
        **light,
        "rows_written": rows,
        "manifest": text,
    }
