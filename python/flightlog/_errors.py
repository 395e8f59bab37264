"""Exceptions raised by flightlog.

::

    Exception
     └── FlightlogError                 every error flightlog raises on purpose
          ├── SchemaError (ValueError)  unknown/missing field, bad schema, inference failed
          ├── ManifestError (ValueError)  a manifest.toml is not valid TOML / not a manifest
          ├── WriteError (OSError)      a file could not be written or published
          ├── RecorderClosedError (RuntimeError)   the recorder was closed
          ├── RunClaimedError           another writer holds the run folder (one writer per run)
          ├── CatalogLockedError (TimeoutError)    another process holds duckdb.db
          ├── CatalogUnavailableError (ConnectionError)  a DuckLake catalog's database is unreachable
          ├── CatalogError (OSError)    the catalog or the run files could not be read/written
          │                             (DuckDB's I/O or HTTP error, chained as __cause__)
          └── ConflictError             a conditional update of an object lost a race

``DuckDBManager`` methods raise ``CatalogError`` for DuckDB's I/O errors
(``duckdb.IOException`` and its ``HTTPException``: a wrong S3 secret, an unreadable
or corrupt ``duckdb.db``); DuckDB's other errors in the SQL given to ``query()``
(parser, binder, catalog errors: the caller's SQL is wrong) stay ``duckdb.Error``,
as documented there.

Outside that tree, for what a person typed (the CLI's arguments, the dashboard's):

::

    Exception
     └── InputError                     bad input to the analysis/rendering library; the
          │                             message says what was wrong and is shown as is
          └── RunNotFoundError (ValueError)  no run with that id (or the prefix is ambiguous)

Wrong value types raise the built-in ``TypeError`` and out-of-range values and
bad names the built-in ``ValueError``, each naming the field or argument.
"""

from __future__ import annotations

import re
import sys

__all__ = [
    "CatalogError",
    "CatalogLockedError",
    "CatalogUnavailableError",
    "ConflictError",
    "FlightlogError",
    "ManifestError",
    "RecorderClosedError",
    "RowBudgetWarning",
    "RunClaimedError",
    "SchemaError",
    "WriteError",
]


class FlightlogError(Exception):
    """Base class of flightlog's own exceptions."""


class SchemaError(FlightlogError, ValueError):
    """A row or a schema does not fit: unknown field, missing field, bad definition."""


class ManifestError(FlightlogError, ValueError):
    """A manifest file exists but is not a valid TOML document."""


class WriteError(FlightlogError, OSError):
    """Writing or publishing a file failed.

    Rows that were not made durable stay in memory for a retry; the message
    says so, or says how many rows were lost.
    """


class RecorderClosedError(FlightlogError, RuntimeError):
    """The recorder (or run) was already closed."""


class RunClaimedError(FlightlogError):
    """Another writer holds the folder: one recorder per run folder, across threads
    and processes (a ``flock`` held from construction to ``close()`` or process
    death). The message names the holder: pid, host and since when."""


class CatalogLockedError(FlightlogError, TimeoutError):
    """Another process held the DuckDB catalog for longer than ``timeout``."""


class CatalogUnavailableError(FlightlogError, ConnectionError):
    """The catalog database (a DuckLake catalog's PostgreSQL server) cannot be reached.

    The message names the catalog without its password."""


class CatalogError(FlightlogError, OSError):
    """DuckDB could not read or write the catalog or the files under the root: an
    HTTP error of an object store (a wrong secret, a missing bucket), an unreadable
    or corrupt ``duckdb.db``. The message is DuckDB's, plus the catalog's location;
    the DuckDB exception is the ``__cause__``."""


class ConflictError(FlightlogError):
    """An object-store update lost a race: the object changed since it was read
    (its ETag no longer matches). Read it again and retry."""


class InputError(Exception):
    """Bad input to the analysis and rendering library (an unknown format or metric, no
    catalog yet, a tolerance that is not finite): the message says what was wrong and what
    to do, and is shown as is (the CLI prints it as its one error line)."""


class RunNotFoundError(InputError, ValueError):
    """No run with that id under the root or in the catalog (or the prefix is ambiguous)."""


class RowBudgetWarning(UserWarning):
    """A recorder reached its ``max_rows`` budget; later rows are counted, not written."""


def error_line(exc: BaseException) -> str:
    """One line describing ``exc`` for a person."""
    text = str(exc) or type(exc).__name__
    # An error of DuckDB's comes from an imported duckdb: describing others imports nothing.
    duckdb = sys.modules.get("duckdb")
    if duckdb is not None and isinstance(exc, duckdb.Error):
        head = text.split("\n\n")[0]
        text = "; ".join(part.strip() for part in head.splitlines() if part.strip())
        if not re.match(r"^[A-Z][A-Za-z ]* Error:", text):
            text = f"{type(exc).__name__}: {text}"
        return f"bad SQL or query: {text}" if not isinstance(exc, duckdb.IOException) else text
    if isinstance(exc, CatalogLockedError):
        return f"catalog locked: {text} (retry, or raise --timeout)"
    if isinstance(exc, ImportError):
        if "flightlog[" in text:
            return text
        name = getattr(exc, "name", None) or ""
        extra = {"matplotlib": "plot", "rich": "cli", "pandas": "pandas", "pyarrow": "pandas"}.get(name.split(".")[0])
        hint = f": pip install 'flightlog[{extra}]'" if extra else ""
        return f"missing optional dependency {name or text}{hint}"
    if isinstance(exc, InputError):
        return text
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    # An S3 error response quoted whole (XML with request ids): its code and message say it.
    text = _S3_ERROR_XML.sub(lambda m: f"{m.group(1)}: {m.group(2)}", text)
    return " ".join(text.split())


_S3_ERROR_XML = re.compile(
    r"(?:<\?xml[^>]*>\s*)?<Error>\s*<Code>(.*?)</Code>\s*<Message>(.*?)</Message>.*?</Error>", re.S
)
