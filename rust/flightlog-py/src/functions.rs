//! Module-level functions: recovery, merging and metadata of Parquet files.

use std::path::PathBuf;

use std::sync::Arc;

use flightlog_core::{
    atomic_file, claim, parquet_io, read, recover_run_with_spool, root_scan, salvage_spool, spool,
    CoreError, OutputLayout, RecoverReport, Storage,
};
use pyo3::exceptions::{PyFileExistsError, PyOSError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::arrow::ArrowData;
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

/// The local folder that holds the spools of object-store recordings, one
/// `<location>.spool` folder each: `spool_dir`, else `$FLIGHTLOG_SPOOL_DIR`,
/// else `flightlog/spool` in the user's cache folder (the core's rule).
#[pyfunction]
#[pyo3(signature = (spool_dir=None))]
fn shared_spool_dir(spool_dir: Option<PathBuf>) -> PathBuf {
    flightlog_core::shared_spool_base(spool_dir.as_deref())
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

/// `(rows, key-value metadata)` of local Parquet files, one footer read each, read on a
/// few threads (`parquet_io::read_footers`); raises for the first file that cannot be read.
#[pyfunction]
fn parquet_footers(py: Python<'_>, paths: Vec<PathBuf>) -> PyResult<Vec<parquet_io::FooterFacts>> {
    py.detach(|| {
        guard(|| {
            parquet_io::read_footers(&paths)
                .into_iter()
                .collect::<flightlog_core::Result<Vec<_>>>()
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

/// Publishes `data` at `path` atomically and durably (temp file, fsync, link or
/// rename, folder fsync: `atomic_file::publish_bytes`). With `create_only`,
/// `FileExistsError` if `path` exists (it is left as it is). With `after`, a
/// folder whose fsync must complete before `path` is placed (run at the same
/// time as the temp file's: `atomic_file::publish_bytes_after`). With
/// `durable=False`, placed the same way without any fsync
/// (`atomic_file::place_bytes`): the caller owes them (a run's start manifest,
/// which its recorder makes durable through `sync_first`). Returns the size.
#[pyfunction]
#[pyo3(signature = (path, data, create_only=false, after=None, durable=true))]
fn publish_bytes(
    py: Python<'_>,
    path: PathBuf,
    data: &[u8],
    create_only: bool,
    after: Option<PathBuf>,
    durable: bool,
) -> PyResult<u64> {
    if !durable && after.is_some() {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "publish_bytes: `after` orders fsyncs, so it needs durable=True",
        ));
    }
    py.detach(|| {
        guard(|| {
            if durable {
                atomic_file::publish_bytes_after(&path, data, create_only, after.as_deref())
            } else {
                atomic_file::place_bytes(&path, data, create_only)
            }
            .map_err(|e| publish_error(e, &path))
        })
    })
}

/// The error of `publish_bytes` as Python's file functions raise theirs: an
/// `OSError` subclass chosen by errno (`FileExistsError`, `PermissionError`,
/// `FileNotFoundError`, ...) naming the file, so callers that handled
/// `os.replace` errors handle these.
fn publish_error(err: CoreError, target: &std::path::Path) -> PyErr {
    match err {
        CoreError::Exists(m) => PyFileExistsError::new_err((17, m, target.display().to_string())),
        CoreError::Io { op, path, source } => match source.raw_os_error() {
            Some(code) => {
                let text = source.to_string();
                let text = text
                    .strip_suffix(&format!(" (os error {code})"))
                    .unwrap_or(&text);
                PyOSError::new_err((code, format!("{text} ({op})"), path.display().to_string()))
            }
            None => to_py(CoreError::Io { op, path, source }),
        },
        e => to_py(e),
    }
}

/// The durable telemetry (or events) files of a recording, in the core's order:
/// the final file if it exists, then the segments named `prefix...` in
/// `segment_dir` that it does not list (`read::durable_files`). With `store`,
/// the paths are keys in that object store.
#[pyfunction]
#[pyo3(signature = (segment_dir, prefix, final_path=None, store=None))]
fn durable_files(
    py: Python<'_>,
    segment_dir: PathBuf,
    prefix: String,
    final_path: Option<PathBuf>,
    store: Option<PyRef<'_, PyObjectStore>>,
) -> PyResult<Vec<PathBuf>> {
    let storage = match store {
        Some(s) => Storage::Object(Arc::clone(&s.root)),
        None => Storage::Local,
    };
    py.detach(|| {
        guard(|| {
            read::durable_files(&storage, &segment_dir, &prefix, final_path.as_deref())
                .map_err(to_py)
        })
    })
}

/// Every possible run under a local root with its manifest's `lstat` signature
/// (`root_scan::list_run_manifests`), as Arrow columns `manifest_rel`, `is_folder`,
/// `mtime_ns`, `size`, `ino`, `is_regular` (the last four null where there is no
/// manifest). None when a name under the root is not UTF-8 (Python lists it then).
#[pyfunction]
fn list_run_manifests(
    py: Python<'_>,
    root: PathBuf,
    manifest: &str,
    flows_dir: &str,
    runs_dir: &str,
    manifest_suffix: &str,
) -> PyResult<Option<ArrowData>> {
    let names = root_scan::RootNames {
        manifest,
        flows_dir,
        runs_dir,
        manifest_suffix,
    };
    let found =
        py.detach(|| guard(|| root_scan::list_run_manifests(&root, &names).map_err(PyErr::from)))?;
    found.map(manifest_columns).transpose()
}

fn manifest_columns(entries: Vec<root_scan::ManifestEntry>) -> PyResult<ArrowData> {
    use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, UInt64Array};
    use arrow_schema::{DataType, Field, Schema};

    let stats = || entries.iter().map(|e| e.stat);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            entries.iter().map(|e| e.rel.as_str()),
        )),
        Arc::new(BooleanArray::from_iter(
            entries.iter().map(|e| Some(e.is_folder)),
        )),
        Arc::new(Int64Array::from_iter(
            stats().map(|s| s.map(|s| s.mtime_ns)),
        )),
        Arc::new(Int64Array::from_iter(
            stats().map(|s| s.map(|s| s.size as i64)),
        )),
        Arc::new(UInt64Array::from_iter(
            stats().map(|s| s.and_then(|s| s.ino)),
        )),
        Arc::new(BooleanArray::from_iter(
            stats().map(|s| s.map(|s| s.is_regular)),
        )),
    ];
    let schema = Arc::new(Schema::new(vec![
        Field::new("manifest_rel", DataType::Utf8, false),
        Field::new("is_folder", DataType::Boolean, false),
        Field::new("mtime_ns", DataType::Int64, true),
        Field::new("size", DataType::Int64, true),
        Field::new("ino", DataType::UInt64, true),
        Field::new("is_regular", DataType::Boolean, true),
    ]));
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    Ok(ArrowData::from_batch(schema, batch))
}

/// The entries right below a local root (`root_scan::scan_run_folders`: sorted, not
/// hidden, not `flows_dir`) as Arrow columns `name`, `is_dir`, `is_symlink` and, for the
/// k-th of `files` inside each real folder, `mtime_ns_k`, `size_k`, `regular_k` (null
/// where there is no such file). None when a name is not UTF-8.
#[pyfunction]
fn scan_run_folders(
    py: Python<'_>,
    root: PathBuf,
    flows_dir: &str,
    files: Vec<String>,
) -> PyResult<Option<ArrowData>> {
    let names: Vec<&str> = files.iter().map(String::as_str).collect();
    let found = py.detach(|| {
        guard(|| root_scan::scan_run_folders(&root, flows_dir, &names).map_err(PyErr::from))
    })?;
    found.map(|f| folder_columns(f, files.len())).transpose()
}

fn folder_columns(entries: Vec<root_scan::FolderEntry>, files: usize) -> PyResult<ArrowData> {
    use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    let mut fields = vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("is_dir", DataType::Boolean, false),
        Field::new("is_symlink", DataType::Boolean, false),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            entries.iter().map(|e| e.entry.name.as_str()),
        )),
        Arc::new(BooleanArray::from_iter(
            entries.iter().map(|e| Some(e.entry.is_dir)),
        )),
        Arc::new(BooleanArray::from_iter(
            entries.iter().map(|e| Some(e.entry.is_symlink)),
        )),
    ];
    for k in 0..files {
        let stats = || entries.iter().map(|e| e.files[k]);
        fields.push(Field::new(format!("mtime_ns_{k}"), DataType::Int64, true));
        fields.push(Field::new(format!("size_{k}"), DataType::Int64, true));
        fields.push(Field::new(format!("regular_{k}"), DataType::Boolean, true));
        columns.push(Arc::new(Int64Array::from_iter(
            stats().map(|s| s.map(|s| s.mtime_ns)),
        )));
        columns.push(Arc::new(Int64Array::from_iter(
            stats().map(|s| s.map(|s| s.size as i64)),
        )));
        columns.push(Arc::new(BooleanArray::from_iter(
            stats().map(|s| s.map(|s| s.is_regular)),
        )));
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    Ok(ArrowData::from_batch(schema, batch))
}

/// The names of the on-disk layout, read from the core's `OutputLayout` and
/// its constants (never spelled again here), for `flightlog.runs.layout`.
fn add_layout_names(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let run = OutputLayout::run_folder(std::path::Path::new(""));
    let name_of = |p: &std::path::Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    m.add("SEGMENTS_DIR", name_of(&run.segment_dir))?;
    m.add("TELEMETRY_SEGMENT_PREFIX", run.telemetry_prefix.clone())?;
    m.add("EVENTS_SEGMENT_PREFIX", run.events_prefix.clone())?;
    m.add(
        "TELEMETRY_FILE",
        run.final_telemetry
            .as_deref()
            .map(name_of)
            .unwrap_or_default(),
    )?;
    m.add(
        "EVENTS_FILE",
        run.final_events.as_deref().map(name_of).unwrap_or_default(),
    )?;
    // A part's prefix is `{before}{run_id}{after}`: split it at a sentinel id.
    const SENTINEL: &str = "\u{0}";
    let parts =
        OutputLayout::append_parts(std::path::Path::new(""), std::path::Path::new(""), SENTINEL);
    let (before, after) = parts
        .telemetry_prefix
        .split_once(SENTINEL)
        .unwrap_or((parts.telemetry_prefix.as_str(), ""));
    m.add("PART_PREFIX", before.to_string())?;
    m.add("PART_RUN_ID_END", after.to_string())?;
    // `{prefix}{digits}{suffix}`: the fewest digits a segment number has, and the suffix.
    let name = run.telemetry_segment_name(0);
    let rest = &name[run.telemetry_prefix.len()..];
    let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
    m.add("SEGMENT_MIN_DIGITS", digits)?;
    m.add("SEGMENT_SUFFIX", rest[digits..].to_string())?;
    m.add("TEMP_MARKER", atomic_file::TEMP_MARKER)?;
    m.add("RUN_LOCK_NAME", claim::RUN_LOCK_NAME)?;
    m.add("SPOOL_DIR_NAME", spool::SPOOL_DIR_NAME)?;
    m.add("SPOOL_META_NAME", spool::SPOOL_META_NAME)?;
    m.add("SEGMENTS_KEY", parquet_io::SEGMENTS_KEY)?;
    m.add("SEGMENT_ROWS_KEY", parquet_io::SEGMENT_ROWS_KEY)?;
    Ok(())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    add_layout_names(m)?;
    m.add_function(wrap_pyfunction!(publish_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(durable_files, m)?)?;
    m.add_function(wrap_pyfunction!(recover_run_dir, m)?)?;
    m.add_function(wrap_pyfunction!(salvage_parts, m)?)?;
    m.add_function(wrap_pyfunction!(shared_spool_dir, m)?)?;
    m.add_function(wrap_pyfunction!(recover_output_file, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_in_child, m)?)?;
    m.add_function(wrap_pyfunction!(merge_parquet, m)?)?;
    m.add_function(wrap_pyfunction!(parquet_kv, m)?)?;
    m.add_function(wrap_pyfunction!(parquet_rows, m)?)?;
    m.add_function(wrap_pyfunction!(parquet_footers, m)?)?;
    m.add_function(wrap_pyfunction!(list_run_manifests, m)?)?;
    m.add_function(wrap_pyfunction!(scan_run_folders, m)?)?;
    Ok(())
}
