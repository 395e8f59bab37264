"""Writing what discovery planned (database held): runs rows, new columns, file batches, prune, moves."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .base import _ManagerBase
from .ingest import _Plan, _State, _Unit
from .lake import _shard
from .report import ConsolidationReport
from .schema import (
    _FILE_COL,
    _GUARD_RUNS,
    _INGESTED_COLUMNS,
    _KINDS,
    _LISTING,
    _LISTING_COLUMNS,
    _MAP_COLUMNS,
    _NEW_COLUMN_TYPE,
    _PRUNE_COLUMNS,
    _RUNS_COLUMNS,
    _WIDENS,
    RESERVED_COLUMNS,
)
from .sql import _ident, _is_conflict, _literal, _Rollback, _rows_source, _short
from .values import _utc_now_text

_BATCH_FILES = 512
_BATCH_ROWS = 50_000_000


class _Writer(_ManagerBase):
    """The writes of a consolidation (database held)."""

    def _write_runs(self, con: Any, run_rows: list[dict[str, Any]], state: _State, report: ConsolidationReport) -> None:
        if not run_rows:
            return
        source = _rows_source({"manifest_path": "VARCHAR"})

        def write(con: Any) -> tuple[set[str] | None, list[dict[str, Any]]]:
            rows = run_rows
            existing, rows = self._backend.claim_runs(con, rows, source)
            old = [mp for r in rows for mp in r.get("_replaces", ())]
            paths = json.dumps([{"manifest_path": p} for p in [r["manifest_path"] for r in rows] + old])
            payload = json.dumps([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
            con.execute(f"DELETE FROM runs WHERE manifest_path IN (SELECT manifest_path FROM {source})", [paths])
            con.execute(f"INSERT INTO runs BY NAME SELECT * FROM {_rows_source(_RUNS_COLUMNS)}", [payload])
            # The listing rows change with their runs rows, in the same transaction.
            con.execute(f"DELETE FROM {_LISTING} WHERE manifest_path IN (SELECT manifest_path FROM {source})", [paths])
            listing = [r["_listing"] for r in rows if r.get("_listing") is not None]
            if listing:
                con.execute(
                    f"INSERT INTO {_LISTING} BY NAME SELECT * FROM {_rows_source(_LISTING_COLUMNS)}",
                    [json.dumps(listing)],
                )
            return existing, rows

        existing, run_rows = self._backend.transaction("write the runs table", write, con)
        for r in run_rows:
            if r.get("_listing_only"):
                continue  # the same runs row, now with its listing row: not an update
            new = r["_new"] if existing is None else r["manifest_path"] not in existing
            new = new and not r.get("_replaces")  # a renamed folder's run is updated, not added
            if new:
                report.runs_added += 1
            else:
                report.runs_updated += 1

    def _plan_columns(
        self, units: list[_Unit], state: _State, report: ConsolidationReport
    ) -> dict[str, dict[str, str]]:
        """Checks every unit's columns against its table; returns the new columns per table."""
        new: dict[str, dict[str, str]] = {k: {} for k in _KINDS}
        for u in units:
            table = state.columns[u.kind]
            added = new[u.kind]
            # DuckDB identifiers are case-insensitive: E and e are one column to it, and
            # adding the second fails ("already exists") on every later consolidate.
            known = {n.lower(): n for n in (*table, *added, *RESERVED_COLUMNS, _FILE_COL)}
            clashes = _case_clashes(u.columns, known)
            if clashes:
                report.files_skipped.append((u.rel, "name conflict: " + "; ".join(clashes)))
                u.pieces, u.marker = [], None
                continue
            conflicts = []
            for name, ftype in u.columns.items():
                if name in RESERVED_COLUMNS or name == _FILE_COL:
                    continue
                ttype = table.get(name, added.get(name))
                if ttype is None:
                    continue
                if ftype != ttype and ttype not in _WIDENS.get(ftype, ()):
                    conflicts.append(f"column {name!r} is {ftype} in the file but {ttype} in table {u.kind}")
            if conflicts:
                report.files_skipped.append((u.rel, "type conflict: " + "; ".join(conflicts)))
                u.pieces, u.marker = [], None
                continue
            for name, ftype in u.columns.items():
                if name not in RESERVED_COLUMNS and name != _FILE_COL and name not in table and name not in added:
                    added[name] = _NEW_COLUMN_TYPE.get(ftype, ftype)
        return new

    def _add_columns(self, con: Any, units: list[_Unit], state: _State, report: ConsolidationReport) -> None:
        """Adds the columns the units bring to their tables (schema evolution)."""

        def add(con: Any) -> None:
            self._backend.reload_columns(con, state.columns)
            new = self._plan_columns([u for u in units if u.pieces or u.marker], state, report)
            for table, columns in new.items():
                for name, ctype in columns.items():
                    con.execute(f"ALTER TABLE {_ident(table)} ADD COLUMN {_ident(name)} {ctype}")
            if not any(new.values()):
                raise _Rollback(None)
            for table, columns in new.items():
                state.columns[table].update(columns)

        self._backend.transaction("add columns", add, con)

    def _write_units(
        self,
        con: Any,
        units: list[_Unit],
        state: _State,
        report: ConsolidationReport,
        progress: Callable[[int, int], Any] | None,
    ) -> None:
        self._add_columns(con, units, state, report)
        units = [u for u in units if u.pieces or u.marker]
        total = sum(len(u.pieces) for u in units)
        done = 0
        if progress is not None:
            progress(0, total)
        batches = self._backend.batches(units)
        for batch in batches:
            n = sum(len(u.pieces) for u in batch)
            error = self._write_batch(con, batch, report)
            if error is not None and len(batch) > 1:  # isolate the bad file(s)
                for u in batch:
                    if u.pieces or u.marker:
                        error = self._write_batch(con, [u], report)
                        if error is not None:
                            report.files_skipped.append((u.rel, error))
            elif error is not None:
                report.files_skipped.append((batch[0].rel, error))
            done += n
            if progress is not None:
                progress(done, total)
            self._backend.between_batches(con)

    def _write_batch(self, con: Any, batch: list[_Unit], report: ConsolidationReport) -> str | None:
        """Inserts the rows of ``batch`` and their bookkeeping in one transaction.

        Returns None on success, else (after rolling back) the reason. With a
        DuckLake catalog, files another writer recorded first are dropped from the
        batch (read in the transaction's own snapshot, under the guards)."""

        def write(con: Any) -> tuple[int, dict[str, int]]:
            self._backend.claim_files(con, batch)
            files_added, rows_added = 0, dict.fromkeys(_KINDS, 0)
            for kind in _KINDS:  # a DuckLake batch may hold both tables' files (one transaction)
                for part in _batches([u for u in batch if u.kind == kind and (u.pieces or u.marker)]):
                    f, r = self._insert_batch(con, part)
                    files_added, rows_added[kind] = files_added + f, rows_added[kind] + r
            return files_added, rows_added

        try:
            files_added, by_kind = self._backend.transaction("ingest files", write, con)
        except Exception as e:
            if self._backend.retries_conflicts and _is_conflict(e):
                return f"could not be committed: other writers kept committing first ({_short(e)}); retried next time"
            return f"could not be ingested: {_short(e)}"
        report.files_added += files_added
        report.rows_added += sum(by_kind.values())
        report.telemetry_rows_added += by_kind.get("telemetry", 0)
        report.event_rows_added += by_kind.get("events", 0)
        return None

    def _insert_batch(self, con: Any, batch: list[_Unit]) -> tuple[int, int]:
        """The statements of :meth:`_write_batch` (inside its transaction): (files, rows) added."""
        kind = batch[0].kind
        columns: dict[str, str] = {}
        for u in batch:
            for name in u.columns:
                if name not in RESERVED_COLUMNS and name != _FILE_COL:
                    columns.setdefault(name, u.columns[name])
        ranged = any(u.compacted for u in batch)
        mapping = []
        expected = 0
        for u in batch:
            for p in u.pieces:
                # A compacted file's pieces are row ranges (lo and hi set together); a whole file is all of its rows.
                lo, hi = (p.lo, p.hi) if ranged and p.lo is not None and p.hi is not None else (0, u.rows)
                mapping.append(
                    {
                        "file": str(u.file),
                        "run_id": p.run_id,
                        "flow_name": p.flow_name,
                        "schema_version": u.schema_version,
                        "lo": lo,
                        "hi": hi,
                    }
                )
                expected += hi - lo
        has_cols = {c for u in batch for c in u.columns}
        run_expr = "coalesce(m.run_id, p.run_id)" if "run_id" in has_cols else "m.run_id"
        flow_expr = "coalesce(m.flow_name, p.flow_name)" if "flow_name" in has_cols else "m.flow_name"
        select = "".join(f"p.{_ident(c)}, " for c in columns)
        options = f"union_by_name = true, filename = {_literal(_FILE_COL)}"
        condition = f"p.{_ident(_FILE_COL)} = m.file"
        if ranged:
            options += ", file_row_number = true"
            condition += " AND p.file_row_number >= m.lo AND p.file_row_number < m.hi"
        sql = (
            f"INSERT INTO {_ident(kind)} BY NAME SELECT {select}"
            f"{run_expr} AS run_id, {flow_expr} AS flow_name, m.schema_version AS schema_version "
            f"FROM read_parquet(?, {options}) p JOIN {_rows_source(_MAP_COLUMNS)} m ON {condition}"
        )
        now = _utc_now_text()
        bookkeeping = [
            {
                "path": p.rel,
                "kind": kind,
                "run_id": p.run_id,
                "flow_name": p.flow_name,
                "rows": (p.hi - p.lo) if p.lo is not None and p.hi is not None else u.rows,
                "size": p.size,
                "mtime": p.mtime,
                "ingested_at": now,
                "source": u.rel if u.compacted else None,
            }
            for u in batch
            for p in u.pieces
        ]
        files_added = len(bookkeeping)
        bookkeeping += [
            {
                "path": u.marker,
                "kind": "compacted",
                "flow_name": u.flow_name,
                "rows": u.rows,
                "source": u.rel,
                "size": u.size,
                "mtime": u.mtime,
                "ingested_at": now,
            }
            for u in batch
            if u.marker
        ]
        files = sorted({str(u.file) for u in batch if u.pieces})
        added = con.execute(sql, [files, json.dumps(mapping)]).fetchall()[0][0] if files else 0
        if added != expected:
            raise RuntimeError(f"read {added} rows where the footers promise {expected}")
        con.execute(
            f"INSERT INTO _ingested_files BY NAME SELECT * FROM {_rows_source(_INGESTED_COLUMNS)}",
            [json.dumps(bookkeeping)],
        )
        for u in batch:  # a file replaced while we read it must not be recorded
            st = self._tree.restat(u.file)
            if st.st_size != u.size or abs(st.st_mtime - u.mtime) > 1e-6:
                raise RuntimeError("the file changed while it was being read")
        return files_added, int(added)

    def _prune(self, con: Any, plan: _Plan, report: ConsolidationReport) -> None:
        payload = json.dumps([{"run_id": r, "flow_name": f} for r, f in plan.gone])
        source = _rows_source(_PRUNE_COLUMNS)
        match = "t.run_id IS NOT DISTINCT FROM g.run_id AND t.flow_name IS NOT DISTINCT FROM g.flow_name"

        def delete(con: Any) -> None:
            self._backend.guard(con, [_GUARD_RUNS])
            for table in ("telemetry", "events", "_ingested_files", "runs", _LISTING):
                con.execute(f"DELETE FROM {table} t USING {source} g WHERE {match}", [payload])

        self._backend.transaction("prune", delete, con)
        report.runs_pruned += len(plan.gone)

    def _move(self, con: Any, moved: list[tuple[str, str, int, float]]) -> None:
        """Points the bookkeeping of files whose run folder was renamed at their new paths."""
        spec = {"old": "VARCHAR", "new": "VARCHAR", "size": "BIGINT", "mtime": "DOUBLE"}
        payload = json.dumps([{"old": o, "new": n, "size": s, "mtime": m} for o, n, s, m in moved])

        def move(con: Any) -> None:
            self._backend.guard(con, {_shard(p) for o, n, _, _ in moved for p in (o, n)})
            # Insert the new rows, then delete the old (no UPDATE of the key column).
            con.execute(
                "INSERT INTO _ingested_files BY NAME SELECT f.* EXCLUDE (path, size, mtime), m.new AS path, "
                f"m.size AS size, m.mtime AS mtime FROM _ingested_files f JOIN {_rows_source(spec)} m "
                "ON f.path = m.old",
                [payload],
            )
            con.execute(f"DELETE FROM _ingested_files WHERE path IN (SELECT old FROM {_rows_source(spec)})", [payload])

        self._backend.transaction("follow renamed run folders", move, con)


def _case_clashes(columns: Iterable[str], known: Mapping[str, str]) -> list[str]:
    """Columns of a file whose names equal another column's but for case (``known``: the
    table's columns by lower-case name), also two such columns within the file."""
    out = []
    mine: dict[str, str] = {}
    for name in columns:
        low = name.lower()
        other = mine.get(low) or known.get(low)
        if other is not None and other != name:
            out.append(
                f"column {name!r} differs from column {other!r} only in case (DuckDB names are case-insensitive); "
                "rename one of them"
            )
        mine.setdefault(low, name)
    return out


def _unit_guards(u: _Unit) -> set[str]:
    """The guard tables a transaction recording ``u`` must replace (module doc)."""
    return {_shard(p.rel) for p in u.pieces} | ({_shard(u.marker)} if u.marker else set())


def _chunks(units: list[_Unit]) -> Iterator[list[_Unit]]:
    batch: list[_Unit] = []
    rows = 0
    for u in units:
        if batch and (len(batch) >= _BATCH_FILES or rows + u.rows > _BATCH_ROWS):
            yield batch
            batch, rows = [], 0
        batch.append(u)
        rows += u.rows
    if batch:
        yield batch


def _batches(units: list[_Unit]) -> Iterator[list[_Unit]]:
    """Groups whole-file units of the same table into batches; compacted files go alone."""
    for kind in _KINDS:
        whole = []
        for u in units:
            if u.kind != kind:
                continue
            if u.compacted:
                yield [u]
            else:
                whole.append(u)
        yield from _chunks(whole)


def _lake_batches(units: list[_Unit]) -> Iterator[list[_Unit]]:
    """Batches for a DuckLake catalog: one per guard table, both tables' files together
    (one transaction each), so that concurrent consolidators mostly touch different
    guards; compacted files go alone."""
    groups: dict[str, list[_Unit]] = {}
    for u in units:
        if u.compacted:
            yield [u]
        else:
            groups.setdefault(",".join(sorted(_unit_guards(u))), []).append(u)
    for key in sorted(groups):
        yield from _chunks(groups[key])
