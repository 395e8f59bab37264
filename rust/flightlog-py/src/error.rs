//! The one mapping from core errors to Python exceptions. The exception
//! classes live in `flightlog._errors` (Python) so that they can have several
//! bases (`SchemaError` is also a `ValueError`, ...); they are imported once.

use flightlog_core::CoreError;
use pyo3::exceptions::{PyFileExistsError, PyTypeError, PyValueError};
use pyo3::PyErr;

pyo3::import_exception!(flightlog._errors, SchemaError);
pyo3::import_exception!(flightlog._errors, WriteError);
pyo3::import_exception!(flightlog._errors, RecorderClosedError);
pyo3::import_exception!(flightlog._errors, FlightlogError);
pyo3::import_exception!(flightlog._errors, RowBudgetWarning);
pyo3::import_exception!(flightlog._errors, ConflictError);
pyo3::import_exception!(flightlog._errors, RunClaimedError);

/// Converts a core error into the Python exception users catch.
pub fn to_py(err: CoreError) -> PyErr {
    match err {
        CoreError::Schema(m) => SchemaError::new_err(m),
        CoreError::InvalidValue(m) => PyValueError::new_err(m),
        CoreError::WrongType(m) => PyTypeError::new_err(m),
        CoreError::Config(m) => PyValueError::new_err(m),
        CoreError::Exists(m) => PyFileExistsError::new_err(m),
        CoreError::Conflict(m) => ConflictError::new_err(m),
        CoreError::Claimed(m) => RunClaimedError::new_err(m),
        CoreError::Forked(m) | CoreError::Misuse(m) => FlightlogError::new_err(m),
        CoreError::Closed => RecorderClosedError::new_err("the recorder is closed"),
        // A flusher error stays typed up to here (what failed, and what
        // became of the rows); Python sees its message as a WriteError.
        e @ (CoreError::Write { .. }
        | CoreError::Io { .. }
        | CoreError::Parquet(_)
        | CoreError::Flusher(_)) => WriteError::new_err(e.to_string()),
        e => FlightlogError::new_err(e.to_string()),
    }
}

/// A `TypeError` naming the field, what it expects and what it got.
pub fn wrong_type(field: &str, expected: &str, got: &pyo3::Bound<'_, pyo3::PyAny>) -> PyErr {
    use pyo3::types::{PyAnyMethods, PyTypeMethods};
    let type_name = got
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    let mut shown = got
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unprintable>".into());
    if shown.chars().count() > 60 {
        shown = shown.chars().take(57).collect::<String>() + "...";
    }
    PyTypeError::new_err(format!(
        "field '{field}' expects {expected}, got {type_name} {shown}"
    ))
}

/// Runs `f`, turning a Rust panic into a `FlightlogError` instead of letting
/// it unwind into Python (pyo3 would raise a BaseException there).
pub fn guard<T>(f: impl FnOnce() -> pyo3::PyResult<T>) -> pyo3::PyResult<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => Err(panic_error(panic)),
    }
}

/// The `FlightlogError` a caught panic becomes.
#[cold]
pub fn panic_error(panic: Box<dyn std::any::Any + Send>) -> pyo3::PyErr {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    FlightlogError::new_err(format!(
        "internal error (a bug in flightlog, please report it): {msg}"
    ))
}
