"""The dashboard's data and the report on an s3:// root (moto on loopback): with a DuckLake
catalog, and without any catalog (read from the run files in the bucket)."""

from __future__ import annotations

import re
from pathlib import Path

from flightlog import DuckDBManager
from flightlog._dashdata import DashData
from flightlog._report import write_report
from test_lake import make_run, needs_lake  # noqa: F401  (a fixture)


def test_s3_root_with_a_ducklake_catalog_and_without_a_catalog(needs_lake, tmp_path: Path, s3_bucket) -> None:  # noqa: F811
    local = tmp_path / "local"
    ids = [make_run(local, f"run{i}", 500 + i).run_id for i in range(2)]
    s3_bucket.upload_tree(local, "prod")
    url, opts = s3_bucket.url("prod"), s3_bucket.storage_options
    catalog = f"ducklake:{tmp_path / 'meta.ducklake'}"
    DuckDBManager(url, catalog=catalog, storage_options=opts).consolidate()

    d = DashData(url, catalog=catalog, storage_options=opts)
    page = d.runs()
    assert page["total"] == 2 and {r["run_id"] for r in page["rows"]} == set(ids)
    assert all(r["last_E"] is not None for r in page["rows"])
    run = d.run(ids[0])
    assert run["source"] == "catalog" and run["rows"] == 500 and "E" in run["metrics"]
    s = d.series(ids[1], "E")
    assert s["rows"] == 501 and s["x"][0] == 0 and s["x"][-1] == 500
    assert [r[0] for r in d.compare(ids, "E")["rows"]] == ids

    files = DashData(url, storage_options=opts)  # no catalog: the run files in the bucket
    run = files.run(ids[0])
    assert run["source"] == "files" and run["rows"] == 500
    assert files.series(ids[0], "E")["rows"] == 500

    info = write_report(url, ids, tmp_path / "r.html", catalog=catalog, storage_options=opts)
    html = Path(info["path"]).read_text()
    assert info["runs"] == ids and re.search(r"series/run0/E", html)
