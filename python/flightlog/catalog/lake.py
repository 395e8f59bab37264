"""DuckLake catalog strings, the cached read session and guard-table names (the catalog
itself: :mod:`.ducklake`)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import zlib
from pathlib import Path
from typing import Any

from .schema import _CAT, _GUARD_SCHEMA, _GUARD_SHARDS

_LAKE_ALIAS = "flightlog_lake"
_INSTALL_HINT = "pip install 'flightlog[lake]'"


class _LakeReads:
    """The in-memory DuckDB instance a DuckLake manager reads through, kept between calls.

    Loading the extensions costs most of a fresh session (~0.3-1 s), so the instance
    is made once; every read takes a cursor of its own on it. The catalog is attached
    read-only as ``_CAT``: a PostgreSQL catalog stays attached (``keep``), a
    DuckDB-file catalog only while reads run (its read lock on the metadata file
    would keep writers in other processes out). The manager's lock guards
    ``attached`` and ``users``.
    """

    def __init__(self, con: Any, keep: bool) -> None:
        self.con = con
        self.pid = os.getpid()
        self.keep = keep
        self.attached = False
        self.users = 0

    def settle(self) -> None:
        """Detaches the catalog when no read runs and it is not to be kept. The instance
        is not closed: Results hold cursors on it, and it goes when the last of them does."""
        if self.users == 0 and self.attached and not self.keep:
            self.attached = False
            with contextlib.suppress(Exception):
                self.con.execute(f"DETACH {_CAT}")


def _guard_table(name: str) -> str:
    return f"{_GUARD_SCHEMA}.{name}"


def _shard(rel: str) -> str:
    """The guard table of a file recorded under ``rel`` in ``_ingested_files``."""
    return f"guard_{zlib.crc32(rel.encode('utf-8')) % _GUARD_SHARDS:02d}"


# DSN passwords are masked in messages and repr; the patterns live in _redact.py (shared with
# the manifest's provenance.argv).
from .._redact import dsn_passwords as _dsn_passwords  # noqa: E402
from .._redact import redact_dsn as _redact  # noqa: E402


@dataclasses.dataclass(frozen=True)
class _LakeSpec:
    """A parsed ``catalog=`` string."""

    text: str  # what ATTACH gets: ducklake:postgres:<dsn> or ducklake:<absolute path>
    kind: str  # "postgres" or "duckdb"
    target: str  # the DSN or the metadata file path

    @property
    def display(self) -> str:
        """The catalog string without its password (for messages and ``repr``)."""
        return _redact(self.text, _dsn_passwords(self.target))

    def redact(self, text: str) -> str:
        return _redact(text, _dsn_passwords(self.target))

    @property
    def extensions(self) -> tuple[str, ...]:
        return ("ducklake", "postgres_scanner") if self.kind == "postgres" else ("ducklake",)


def _parse_catalog(catalog: Any) -> _LakeSpec:
    """Parses ``catalog=``: ``ducklake:postgres:<libpq DSN or URI>`` or ``ducklake:<file>``
    (also ``ducklake:duckdb:<file>``). Raises ``ValueError`` naming what is wrong."""
    usage = (
        "catalog= must be 'ducklake:postgres:<dsn>' (e.g. 'ducklake:postgres:dbname=lake host=db.example "
        "user=flightlog') or 'ducklake:<path>.ducklake' (a DuckDB file, one writer at a time)"
    )
    if not isinstance(catalog, str | os.PathLike):
        raise ValueError(f"{usage}; got {type(catalog).__name__} {catalog!r}")
    text = os.fspath(catalog).strip()
    if not text.lower().startswith("ducklake:"):
        raise ValueError(f"{usage}; got {_redact(text)!r}")
    rest = text[len("ducklake:") :]
    scheme, sep, after = rest.partition(":")
    scheme_l = scheme.lower()
    if sep and scheme_l in ("postgres", "postgresql"):
        return _LakeSpec(f"ducklake:postgres:{after.strip()}", "postgres", after.strip())
    if sep and scheme_l in ("sqlite", "mysql"):
        raise ValueError(
            f"catalog {_redact(text)!r}: DuckLake on {scheme_l} is not supported by flightlog "
            f"({_INSTALL_HINT} carries the PostgreSQL and DuckDB-file catalogs); {usage}"
        )
    if sep and scheme_l == "duckdb":
        rest = after
    elif sep and len(scheme) > 1 and scheme.isalpha() and not after.startswith(("\\", "/")):
        raise ValueError(f"catalog {_redact(text)!r}: unknown DuckLake catalog type {scheme!r}; {usage}")
    path = rest.strip()
    if not path:
        raise ValueError(f"catalog {text!r} names no catalog; {usage}")
    if "://" in path:
        raise ValueError(f"catalog {_redact(text)!r}: a DuckDB-file catalog must be a local file; {usage}")
    abs_path = str(Path(path).expanduser().absolute())
    return _LakeSpec(f"ducklake:{abs_path}", "duckdb", abs_path)
