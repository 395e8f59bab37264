"""``flightlog report``: the dashboard's run and compare views in one self-contained HTML file.

The file holds the chart library (uPlot, MIT, vendored in ``_static/uplot`` with its licence),
the dashboard's script and styles, and the data (downsampled in DuckDB by
:class:`~flightlog._dashdata.DashData`, the same answers the server gives), all inline. It
loads nothing from the network (its Content-Security-Policy forbids it), so it can be mailed or
attached to a paper's supplement and opened years later.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from . import _core

__all__ = ["page_html", "write_report"]

#: Pixel buckets per chart in a report (M4: at most four points each): sharp at report widths.
REPORT_BUCKETS = 500

_REPORT_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"


def _static(name: str) -> str:
    return resources.files("flightlog").joinpath("_static", name).read_text(encoding="utf-8")


def _script_json(value: Any) -> str:
    """JSON to put inside ``<script>``: ``<``, ``>`` and ``&`` escaped, so no text in the data
    (a payload holding ``</script>``) can end the script or open a tag."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page_html(config: Mapping[str, Any], embed: Mapping[str, Any] | None, *, csp: str = _REPORT_CSP) -> str:
    """The dashboard page: served by ``flightlog ui`` (``embed`` None: data from ``/api``), or
    a report (``embed``: the answers, keyed as the script asks for them)."""
    from ._plot import CURVE_COLORS, PHASE_COLORS

    cfg = {"phase_colors": PHASE_COLORS, "curve_colors": list(CURVE_COLORS), **config}
    title = str(cfg.get("title") or "flightlog")
    title = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    where = str(cfg.get("where") or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{title}</title>\n"
        f"<style>{_static('uplot/uPlot.min.css')}\n{_static('dash.css')}</style></head>\n<body>"
        '<header><b>flightlog</b><a href="#/runs">runs</a>'
        f"<span class=where>{where}</span></header><main id=app></main>\n"
        "<!-- uPlot 1.6.32, MIT licence, (c) 2022 Leon Sorokin, https://github.com/leeoniya/uPlot -->\n"
        f"<script>{_static('uplot/uPlot.iife.min.js')}</script>\n"
        f"<script>window.FL_CONFIG={_script_json(cfg)};window.FL_EMBED={_script_json(embed)};</script>\n"
        f"<script>{_static('dash.js')}</script>\n</body></html>\n"
    )


def _varying_param(runs: Sequence[Mapping[str, Any]]) -> str | None:
    """The first param whose value differs between the runs (the report's default grouping)."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in (r.get("manifest", {}).get("params") or {}) if k not in keys]
    for k in keys:
        values = {json.dumps((r.get("manifest", {}).get("params") or {}).get(k), sort_keys=True) for r in runs}
        if 1 < len(values) < len(runs):
            return k
    return None


def write_report(
    root: Any,
    run_ids: Sequence[str],
    out: str | os.PathLike[str] | None = None,
    *,
    metrics: Sequence[str] | None = None,
    db_path: Any = None,
    catalog: str | None = None,
    timeout: float = 30.0,
    tol: float | None = None,
    buckets: int = REPORT_BUCKETS,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the report of ``run_ids`` (ids or unique prefixes) under ``root`` to ``out``
    (default ``<root>/report.html``, local roots only) and return ``{"path", "bytes", "runs",
    "metrics", "seconds"}``. ``metrics`` limits the charts (default: every numeric field).

    Raises:
        RunNotFoundError: a run id that names no run (or several).
        ValueError: no run ids, or a metric no run has.
    """
    from ._dashdata import DashData, DashError
    from .runs.discover import find_run

    t0 = time.perf_counter()
    if not run_ids:
        raise ValueError("report needs at least one run id")
    data = DashData(root, db_path=db_path, catalog=catalog, timeout=timeout, storage_options=storage_options)
    try:
        ids = list(dict.fromkeys(find_run(data.root, r, storage_options=storage_options).run_id for r in run_ids))
        embed: dict[str, Any] = {}
        infos = []
        for rid in ids:
            info = data.run(rid)
            if metrics:
                info["metrics"] = [m for m in info["metrics"] if m in metrics]
            infos.append(info)
            embed[f"run/{rid}"] = info
            for m in info["metrics"]:
                embed[f"series/{rid}/{m}"] = data.series(rid, m, buckets=buckets)
        shown = list(dict.fromkeys(m for i in infos for m in i["metrics"]))
        if metrics:
            missing = [m for m in metrics if m not in shown]
            if missing:
                raise ValueError(f"no run of the report has the metric(s) {', '.join(missing)}")
        page = data.runs(ids=ids, limit=500)
        embed["runs"] = {**page, "all": page["total"]}
        group_by = _varying_param(infos) if len(ids) > 1 else None
        first = "E" if "E" in shown else (shown[0] if shown else "")
        if len(ids) > 1:
            # The comparison tables of the first metric (each costs a few catalog reads and a
            # bootstrap); of every metric asked for with --metric.
            for m in list(metrics or []) or [first]:
                try:
                    embed[f"compare/{m}"] = data.compare(
                        ids, m, group_by=f"params.{group_by}" if group_by else None, tol=tol
                    )
                except DashError:
                    continue  # a metric the catalog cannot compare: the chart still shows it
        start = f"#/run/{ids[0]}" if len(ids) == 1 else "#/compare?runs=" + ",".join(ids) + f"&metric={first}"
        config = {
            "title": f"flightlog report: {', '.join(ids[:3])}{' ...' if len(ids) > 3 else ''}",
            "where": f"report of {len(ids)} run(s) under {data.root}, made {time.strftime('%Y-%m-%d %H:%M:%S')}",
            "start": start,
            "metric": first,
        }
        html = page_html(config, embed)
    finally:
        data.close()
    if out is None:
        if isinstance(data.root, str):
            raise ValueError("an s3:// root needs -o FILE for the report")
        out = Path(data.root) / "report.html"
    path = Path(out)
    if path.parent != Path():
        path.parent.mkdir(parents=True, exist_ok=True)
    _core.publish_bytes(path, html.encode("utf-8"))  # atomic: never a half-written report
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "runs": ids,
        "metrics": shown,
        "seconds": time.perf_counter() - t0,
    }
