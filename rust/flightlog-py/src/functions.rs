//! Module-level functions: recovery, merging and metadata of Parquet files.

use std::path::PathBuf;

use flightlog_core::{parquet_io, recover_run, OutputLayout};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::{guard, to_py};

/// Finalises a run folder whose process died (idempotent).
#[pyfunction]
fn recover_run_dir<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let report =
        py.detach(|| guard(|| recover_run(&OutputLayout::run_folder(&path)).map_err(to_py)))?;
    let d = PyDict::new(py);
    d.set_item("temp_files_removed", report.temp_files_removed)?;
    d.set_item("segments_merged", report.segments_merged)?;
    d.set_item(
        "leftover_segments_removed",
        report.leftover_segments_removed,
    )?;
    d.set_item("telemetry_rows", report.telemetry_rows)?;
    d.set_item("event_rows", report.event_rows)?;
    Ok(d)
}

/// Merges same-schema Parquet files into `out` atomically by raw column-chunk
/// copy; the result lists the inputs' names and row counts in its metadata.
#[pyfunction]
fn merge_parquet<'py>(
    py: Python<'py>,
    out: PathBuf,
    inputs: Vec<PathBuf>,
) -> PyResult<Bound<'py, PyDict>> {
    let (rows, bytes) =
        py.detach(|| guard(|| parquet_io::merge_segments(&out, &inputs).map_err(to_py)))?;
    let d = PyDict::new(py);
    d.set_item("rows", rows)?;
    d.set_item("bytes", bytes)?;
    Ok(d)
}

/// Key-value metadata of a Parquet file.
#[pyfunction]
fn parquet_kv(py: Python<'_>, path: PathBuf) -> PyResult<Vec<(String, String)>> {
    py.detach(|| guard(|| parquet_io::read_key_values(&path).map_err(to_py)))
}

/// Row count of a Parquet file (from its footer).
#[pyfunction]
fn parquet_rows(py: Python<'_>, path: PathBuf) -> PyResult<u64> {
    py.detach(|| guard(|| parquet_io::row_count(&path).map_err(to_py)))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(recover_run_dir, m)?)?;
    m.add_function(wrap_pyfunction!(merge_parquet, m)?)?;
    m.add_function(wrap_pyfunction!(parquet_kv, m)?)?;
    m.add_function(wrap_pyfunction!(parquet_rows, m)?)?;
    Ok(())
}
