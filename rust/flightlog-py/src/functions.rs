//! Module-level functions: recovery, merging and metadata of Parquet files.

use std::path::PathBuf;

use std::sync::Arc;

use flightlog_core::{
    parquet_io, recover_run_with_spool, salvage_spool, OutputLayout, RecoverReport, Storage,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::{guard, to_py};
use crate::store::PyObjectStore;

/// Finalises a run folder whose process died (idempotent): salvages its
/// spool, merges its segments. With `store`, `path` is the run folder's key in
/// that object store, and `spool_dir` the local folder its recorder spooled
/// to (default: the recorder's default).
#[pyfunction]
#[pyo3(signature = (path, store=None, spool_dir=None))]
fn recover_run_dir<'py>(
    py: Python<'py>,
    path: PathBuf,
    store: Option<PyRef<'py, PyObjectStore>>,
    spool_dir: Option<PathBuf>,
) -> PyResult<Bound<'py, PyDict>> {
    let mut layout = OutputLayout::run_folder(&path);
    if let Some(store) = store {
        layout = layout.on(Storage::Object(Arc::clone(&store.root)));
    }
    let report = py.detach(|| {
        guard(|| recover_run_with_spool(&layout, spool_dir.as_deref()).map_err(to_py))
    })?;
    report_dict(py, &report)
}

/// Publishes what a dead append-mode recorder's spool held beyond its parts as
/// one last part (telemetry and events); its parts stay unmerged.
#[pyfunction]
#[pyo3(signature = (parts_dir, events_dir, run_id, store=None, spool_dir=None))]
fn salvage_parts<'py>(
    py: Python<'py>,
    parts_dir: PathBuf,
    events_dir: PathBuf,
    run_id: String,
    store: Option<PyRef<'py, PyObjectStore>>,
    spool_dir: Option<PathBuf>,
) -> PyResult<Bound<'py, PyDict>> {
    let mut layout = OutputLayout::append_parts(&parts_dir, &events_dir, &run_id);
    if let Some(store) = store {
        layout = layout.on(Storage::Object(Arc::clone(&store.root)));
    }
    let report =
        py.detach(|| guard(|| salvage_spool(&layout, spool_dir.as_deref()).map_err(to_py)))?;
    report_dict(py, &report)
}

fn report_dict<'py>(py: Python<'py>, report: &RecoverReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("temp_files_removed", report.temp_files_removed)?;
    d.set_item("segments_merged", report.segments_merged)?;
    d.set_item(
        "leftover_segments_removed",
        report.leftover_segments_removed,
    )?;
    d.set_item("telemetry_rows", report.telemetry_rows)?;
    d.set_item("event_rows", report.event_rows)?;
    d.set_item("salvaged_rows", report.salvaged_rows)?;
    d.set_item("salvaged_events", report.salvaged_events)?;
    d.set_item("torn_rows", report.torn_rows)?;
    d.set_item("spools_discarded", report.spools_discarded.len())?;
    Ok(d)
}

/// Finalises an output-file recording (`FlightRecorder("x.parquet")`) whose
/// process died: merges its segments into the file, and moves a replacing
/// recording (`overwrite=True`) into place. None while its writer is alive.
#[pyfunction]
fn recover_output_file<'py>(
    py: Python<'py>,
    path: PathBuf,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let report =
        py.detach(|| guard(|| flightlog_core::recover_output_file(&path).map_err(to_py)))?;
    let Some(report) = report else {
        return Ok(None);
    };
    let d = PyDict::new(py);
    d.set_item("temp_files_removed", report.temp_files_removed)?;
    d.set_item("segments_merged", report.segments_merged)?;
    d.set_item(
        "leftover_segments_removed",
        report.leftover_segments_removed,
    )?;
    d.set_item("telemetry_rows", report.telemetry_rows)?;
    d.set_item("event_rows", report.event_rows)?;
    Ok(Some(d))
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
        py.detach(|| guard(|| parquet_io::merge_segments_over(&out, &inputs).map_err(to_py)))?;
    let d = PyDict::new(py);
    d.set_item("rows", rows)?;
    d.set_item("bytes", bytes)?;
    Ok(d)
}

/// Key-value metadata of a Parquet file (with `store`, `path` is its key there;
/// only the footer is fetched).
#[pyfunction]
#[pyo3(signature = (path, store=None))]
fn parquet_kv(
    py: Python<'_>,
    path: PathBuf,
    store: Option<PyRef<'_, PyObjectStore>>,
) -> PyResult<Vec<(String, String)>> {
    let root = store.map(|s| Arc::clone(&s.root));
    py.detach(|| {
        guard(|| {
            match &root {
                None => parquet_io::read_key_values(&path),
                Some(root) => flightlog_core::storage::key_of(&path)
                    .and_then(|key| root.parquet_metadata(&key))
                    .map(|md| parquet_io::key_values_of(&md)),
            }
            .map_err(to_py)
        })
    })
}

/// Row count of a Parquet file, from its footer (with `store`, `path` is its key there).
#[pyfunction]
#[pyo3(signature = (path, store=None))]
fn parquet_rows(
    py: Python<'_>,
    path: PathBuf,
    store: Option<PyRef<'_, PyObjectStore>>,
) -> PyResult<u64> {
    let storage = match store {
        Some(s) => Storage::Object(Arc::clone(&s.root)),
        None => Storage::Local,
    };
    py.detach(|| guard(|| storage.row_count(&path).map_err(to_py)))
}

/// Called in a forked child (registered with `os.register_at_fork` by the
/// package): the parent's recorders stop writing here, and the child's copies
/// of their claim files are closed (the parent keeps its locks).
#[pyfunction]
fn _after_fork_in_child() {
    flightlog_core::claim::after_fork_in_child();
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(recover_run_dir, m)?)?;
    m.add_function(wrap_pyfunction!(salvage_parts, m)?)?;
    m.add_function(wrap_pyfunction!(recover_output_file, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_in_child, m)?)?;
    m.add_function(wrap_pyfunction!(merge_parquet, m)?)?;
    m.add_function(wrap_pyfunction!(parquet_kv, m)?)?;
    m.add_function(wrap_pyfunction!(parquet_rows, m)?)?;
    Ok(())
}
