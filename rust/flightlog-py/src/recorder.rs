//! `flightlog._core.Recorder`: argument conversion over `flightlog_core::Recorder`.
//! No policy lives here: sampling, budgets, blocking and durability are the
//! core's; this file converts values, maps errors and releases the GIL.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use flightlog_core::layout::f64_word;
use flightlog_core::{
    Codec, DType, Field, Offer, OnFull, OutputLayout, Recorder, RecorderConfig, RowLayout,
    Sampling, Schema, Storage,
};
use numpy::{PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::arrow::ArrowData;
use crate::convert::{infer_dtype, to_constant, to_word, FieldConv};
use crate::error::{guard, to_py, RowBudgetWarning, SchemaError};
use crate::store::PyObjectStore;

/// Field description from Python: (name, dtype, nullable, enum variants, unit, doc).
type FieldSpec = (
    String,
    String,
    bool,
    Option<Vec<String>>,
    Option<String>,
    Option<String>,
);

fn schema_from_spec(spec: Vec<FieldSpec>, version: i64) -> PyResult<Schema> {
    let mut fields = Vec::with_capacity(spec.len());
    for (name, dtype, nullable, variants, unit, doc) in spec {
        let dtype = match (dtype.as_str(), variants) {
            ("enum", Some(v)) => DType::Enum(v),
            ("enum", None) => {
                return Err(SchemaError::new_err(format!(
                    "enum field '{name}' has no variants"
                )))
            }
            (other, _) => DType::parse(other).map_err(to_py)?,
        };
        fields.push(Field {
            name,
            dtype,
            nullable,
            unit,
            doc,
        });
    }
    Schema::new(fields, version).map_err(to_py)
}

fn spec_of(schema: &Schema) -> Vec<FieldSpec> {
    schema
        .fields
        .iter()
        .map(|f| {
            let variants = match &f.dtype {
                DType::Enum(v) => Some(v.clone()),
                _ => None,
            };
            (
                f.name.clone(),
                f.dtype.name().to_string(),
                f.nullable,
                variants,
                f.unit.clone(),
                f.doc.clone(),
            )
        })
        .collect()
}

/// A recorder whose schema is known.
/// The dtype of a stored slot, as far as the fast path cares.
enum SlotKind {
    F64,
    I64,
    /// An enum's labels as interned strings: a label written as a literal in
    /// the caller's code is the same object, found by pointer comparison.
    Enum(Box<[Py<PyString>]>),
    Other,
}

struct Active {
    rec: Recorder,
    /// Per stored slot: the fast-path kind of its field.
    slot_kinds: Vec<SlotKind>,
    index: HashMap<String, usize>,
    /// Field names as interned Python strings: keyword names in a call are
    /// interned too, so `log()` finds most fields by pointer comparison.
    names: Vec<Py<PyString>>,
    /// Stored slot of an f64 `t_wall_ms` field, stamped when a row omits it.
    t_wall_slot: Option<usize>,
    /// `record()` may omit trailing fields that are nullable (or a stamped
    /// `t_wall_ms`): it needs at least this many values.
    min_record_values: usize,
    describe: String,
}

impl Active {
    fn new(py: Python<'_>, rec: Recorder) -> Self {
        let schema = rec.schema();
        let names = schema
            .fields
            .iter()
            .map(|f| PyString::intern(py, &f.name).unbind())
            .collect();
        let index = schema
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        let t_wall_slot = schema
            .index_of("t_wall_ms")
            .filter(|&i| schema.fields[i].dtype == DType::F64)
            .and_then(|i| rec.row_layout().slot_of_field(i));
        let describe = schema.describe();
        let layout = rec.row_layout();
        let min_record_values = (0..layout.stored_len())
            .rev()
            .find(|&slot| {
                let f = &schema.fields[layout.field_of_slot(slot)];
                !f.nullable && Some(slot) != t_wall_slot
            })
            .map_or(0, |slot| slot + 1);
        let slot_kinds = (0..layout.stored_len())
            .map(
                |slot| match &schema.fields[layout.field_of_slot(slot)].dtype {
                    DType::F64 => SlotKind::F64,
                    DType::I64 => SlotKind::I64,
                    DType::Enum(labels) => SlotKind::Enum(
                        labels
                            .iter()
                            .map(|l| PyString::intern(py, l).unbind())
                            .collect(),
                    ),
                    _ => SlotKind::Other,
                },
            )
            .collect();
        Active {
            rec,
            slot_kinds,
            index,
            names,
            t_wall_slot,
            min_record_values,
            describe,
        }
    }

    fn conv(&self, field: usize) -> FieldConv<'_> {
        let f = &self.rec.schema().fields[field];
        FieldConv {
            name: &f.name,
            dtype: &f.dtype,
            dictionary: self.rec.dictionary(field),
        }
    }

    fn layout(&self) -> &RowLayout {
        self.rec.row_layout()
    }

    /// Converts `value` into slot `slot` of `row` (None → null or TypeError).
    /// The common cases (a float for an f64 field, an int for an i64 field)
    /// are decided here from the slot's dtype without further calls.
    #[inline]
    fn put(&self, row: &mut [u64], slot: usize, value: &Bound<'_, PyAny>) -> PyResult<()> {
        match &self.slot_kinds[slot] {
            SlotKind::F64 => {
                if let Ok(x) = value.cast::<PyFloat>() {
                    row[slot] = f64_word(x.value());
                    return Ok(());
                }
            }
            SlotKind::I64 => {
                if let Ok(i) = value.cast_exact::<PyInt>() {
                    if let Ok(v) = i.extract::<i64>() {
                        row[slot] = v as u64;
                        return Ok(());
                    }
                }
            }
            SlotKind::Enum(labels) => {
                if let Some(code) = labels.iter().position(|l| value.is(l)) {
                    row[slot] = code as u64;
                    return Ok(());
                }
            }
            SlotKind::Other => {}
        }
        self.put_general(row, slot, value)
    }

    #[cold]
    fn put_general(&self, row: &mut [u64], slot: usize, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let field = self.layout().field_of_slot(slot);
        if value.is_none() {
            let f = &self.rec.schema().fields[field];
            if !f.nullable {
                return Err(PyTypeError::new_err(format!(
                    "field '{}' is not nullable, got None",
                    f.name
                )));
            }
            self.layout().set_null(row, slot);
            return Ok(());
        }
        row[slot] = to_word(&self.conv(field), value)?;
        Ok(())
    }

    fn push(&self, py: Python<'_>, row: &[u64]) -> PyResult<()> {
        // A full ring makes the push wait for the flusher: other Python threads
        // run meanwhile.
        let offer = self
            .rec
            .push_with(row, |blocked| py.detach(|| blocked.wait()))
            .map_err(to_py)?;
        if let Offer::OverBudget { first: true } = offer {
            warn_budget(py, &self.rec)?;
        }
        Ok(())
    }

    /// The field a keyword names: by identity with the interned names (trying
    /// `guess`, the field after the previous keyword, first), else by text.
    #[inline]
    fn field_of_key(&self, key: &Bound<'_, PyAny>, guess: usize) -> PyResult<usize> {
        if let Some(n) = self.names.get(guess) {
            if key.is(n) {
                return Ok(guess);
            }
        }
        if let Some(i) = self.names.iter().position(|n| key.is(n)) {
            return Ok(i);
        }
        let name = key.cast::<PyString>()?.to_str()?;
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| self.unknown_field(name))
    }

    fn unknown_field(&self, name: &str) -> PyErr {
        SchemaError::new_err(format!(
            "unknown field '{name}'; the schema is {}",
            self.describe
        ))
    }
}

fn warn_budget(py: Python<'_>, rec: &Recorder) -> PyResult<()> {
    let msg = format!(
        "the row budget max_rows was reached after {} rows; later rows are counted in \
         stats()['rows_over_budget'] and not written",
        rec.stats().rows_offered.saturating_sub(1)
    );
    let msg = std::ffi::CString::new(msg).expect("no NUL in message");
    PyErr::warn(py, &py.get_type::<RowBudgetWarning>(), &msg, 1)
}

/// Settings kept until the schema is known (schema inferred from the first log).
struct Deferred {
    config: RecorderConfig,
    schema_version: i64,
    constants: Vec<(String, Py<PyAny>)>,
}

/// Row buffer on the stack for the common widths.
// It lives on the stack for one call; avoiding a heap allocation per row is the point.
#[allow(clippy::large_enum_variant)]
enum RowBuf {
    Stack([u64; ROW_BUF_WORDS], usize),
    Heap(Vec<u64>),
}

/// Rows up to this many words are built on the stack (zeroing it is part of
/// every call, so it is sized for telemetry rows, not for the largest schema).
const ROW_BUF_WORDS: usize = 32;

impl RowBuf {
    fn new(layout: &RowLayout) -> Self {
        let width = layout.width();
        if width <= ROW_BUF_WORDS {
            let mut buf = [0u64; ROW_BUF_WORDS];
            layout.reset_row(&mut buf[..width]);
            RowBuf::Stack(buf, width)
        } else {
            RowBuf::Heap(layout.new_row())
        }
    }

    fn as_mut(&mut self) -> &mut [u64] {
        match self {
            RowBuf::Stack(b, w) => &mut b[..*w],
            RowBuf::Heap(v) => v,
        }
    }
}

/// The native recorder behind `flightlog.FlightRecorder`.
#[pyclass(frozen, module = "flightlog._core", name = "Recorder")]
pub struct PyRecorder {
    active: OnceLock<Active>,
    deferred: Mutex<Option<Deferred>>,
    layout: OutputLayout,
    files: Mutex<Vec<(String, u64, u64)>>,
    closed_without_schema: std::sync::atomic::AtomicBool,
}

impl PyRecorder {
    fn active(&self) -> PyResult<&Active> {
        self.active.get().ok_or_else(|| {
            if self
                .closed_without_schema
                .load(std::sync::atomic::Ordering::Acquire)
            {
                crate::error::RecorderClosedError::new_err("the recorder is closed")
            } else {
                SchemaError::new_err(
                    "the recorder has no schema yet: pass schema= or call log() first \
                     (the first log() infers it)",
                )
            }
        })
    }

    fn init(&self, schema: Schema, deferred: Deferred, py: Python<'_>) -> PyResult<&Active> {
        let mut config = deferred.config;
        for (name, value) in &deferred.constants {
            let i = schema.index_of(name).ok_or_else(|| {
                SchemaError::new_err(format!(
                    "constant column '{name}' is not in the schema {}",
                    schema.describe()
                ))
            })?;
            let v = to_constant(name, &schema.fields[i].dtype, value.bind(py))?;
            config.constants.push((name.clone(), v));
        }
        let rec = py.detach(|| Recorder::new(schema, config)).map_err(to_py)?;
        let _ = self.active.set(Active::new(py, rec));
        Ok(self.active.get().expect("just set"))
    }

    /// Infers the schema from the first `log()`'s keywords (constants first).
    fn infer(&self, py: Python<'_>, fields: Option<&Bound<'_, PyDict>>) -> PyResult<&Active> {
        let mut guard = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = self.active.get() {
            return Ok(a);
        }
        let Some(deferred) = guard.take() else {
            return self.active();
        };
        let result = (|| {
            let mut spec = Vec::new();
            for (name, value) in &deferred.constants {
                spec.push(Field::new(name.clone(), infer_dtype(name, value.bind(py))?));
            }
            if let Some(fields) = fields {
                for (k, v) in fields.iter() {
                    let name: String = k.extract()?;
                    if deferred.constants.iter().any(|(c, _)| *c == name) {
                        return Err(SchemaError::new_err(format!(
                            "field '{name}' is filled in by the recorder; do not pass it"
                        )));
                    }
                    spec.push(Field::new(name.clone(), infer_dtype(&name, &v)?));
                }
            }
            if spec.is_empty() {
                return Err(SchemaError::new_err(
                    "cannot infer a schema from a log() without fields",
                ));
            }
            Schema::new(spec, deferred.schema_version).map_err(to_py)
        })();
        match result {
            Ok(schema) => self.init(schema, deferred, py),
            Err(e) => {
                *guard = Some(deferred);
                Err(e)
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[pymethods]
impl PyRecorder {
    #[new]
    #[pyo3(signature = (
        path, schema, schema_version, *, run_id=None, flush_interval=1.0, segment_rows=None,
        ring_capacity=None, compression="zstd", on_full="block", sampling=None, max_rows=None,
        metadata=None, constants=None, parts=None, store=None
    ))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        schema: Option<Vec<FieldSpec>>,
        schema_version: i64,
        run_id: Option<String>,
        flush_interval: f64,
        segment_rows: Option<usize>,
        ring_capacity: Option<usize>,
        compression: &str,
        on_full: &str,
        sampling: Option<(u64, u64)>,
        max_rows: Option<u64>,
        metadata: Option<Vec<(String, String)>>,
        constants: Option<Vec<(String, Py<PyAny>)>>,
        parts: Option<(PathBuf, String)>,
        store: Option<PyRef<'_, PyObjectStore>>,
    ) -> PyResult<Self> {
        let mut layout = match parts {
            None => OutputLayout::run_folder(&path),
            Some((events_dir, part_run_id)) => {
                OutputLayout::append_parts(&path, &events_dir, &part_run_id)
            }
        };
        if let Some(store) = store {
            // With a store, the paths are object keys below its bucket.
            layout = layout.on(Storage::Object(Arc::clone(&store.root)));
        }
        let mut config = RecorderConfig::new(layout.clone());
        config.flush_interval_secs = flush_interval;
        if let Some(n) = segment_rows {
            config.segment_rows = n;
        }
        if let Some(n) = ring_capacity {
            config.ring_capacity = n;
        }
        config.compression = Codec::parse(compression).map_err(to_py)?;
        config.on_full = OnFull::parse(on_full).map_err(to_py)?;
        config.sampling = sampling.map(|(keep_first, every)| Sampling { keep_first, every });
        config.max_rows = max_rows;
        config.run_id = run_id;
        config.metadata = metadata.unwrap_or_default();
        config.validate().map_err(to_py)?;
        let deferred = Deferred {
            config,
            schema_version,
            constants: constants.unwrap_or_default(),
        };
        let this = PyRecorder {
            active: OnceLock::new(),
            deferred: Mutex::new(None),
            layout,
            files: Mutex::new(Vec::new()),
            closed_without_schema: std::sync::atomic::AtomicBool::new(false),
        };
        match schema {
            Some(spec) => {
                let schema = schema_from_spec(spec, schema_version)?;
                this.init(schema, deferred, py)?;
            }
            None => *this.deferred.lock().unwrap_or_else(|e| e.into_inner()) = Some(deferred),
        }
        Ok(this)
    }

    /// Records one row from values in schema order (constant columns excluded).
    #[pyo3(signature = (*values))]
    fn record(&self, py: Python<'_>, values: &Bound<'_, PyTuple>) -> PyResult<()> {
        let a = self.active()?;
        let layout = a.layout();
        let given = values.len();
        if given > layout.stored_len() || given < a.min_record_values {
            return Err(record_arity_error(a, given));
        }
        let mut buf = RowBuf::new(layout);
        let row = buf.as_mut();
        for (slot, value) in values.iter_borrowed().enumerate() {
            if value.is_none() && Some(slot) == a.t_wall_slot {
                row[slot] = f64_word(a.rec.now_ms());
            } else {
                a.put(row, slot, &value)?;
            }
        }
        // Omitted trailing fields are nullable (checked by `min_record_values`)
        // or a stamped t_wall_ms.
        for slot in given..layout.stored_len() {
            if Some(slot) == a.t_wall_slot {
                row[slot] = f64_word(a.rec.now_ms());
            } else {
                layout.set_null(row, slot);
            }
        }
        a.push(py, row)
    }

    /// Records one row from keyword arguments.
    #[pyo3(signature = (**fields))]
    fn log(&self, py: Python<'_>, fields: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let a = match self.active.get() {
            Some(a) => a,
            None => self.infer(py, fields)?,
        };
        let layout = a.layout();
        let mut buf = RowBuf::new(layout);
        let row = buf.as_mut();
        let n_fields = a.rec.schema().fields.len();
        let mut seen_stack = [false; 128];
        let mut seen_heap;
        let seen: &mut [bool] = if n_fields <= 128 {
            &mut seen_stack[..n_fields]
        } else {
            seen_heap = vec![false; n_fields];
            &mut seen_heap
        };
        if let Some(fields) = fields {
            let mut guess = 0;
            for (key, value) in fields.iter() {
                let field = a.field_of_key(&key, guess)?;
                guess = field + 1;
                let Some(slot) = layout.slot_of_field(field) else {
                    return Err(SchemaError::new_err(format!(
                        "field '{}' is filled in by the recorder; do not pass it",
                        a.rec.schema().fields[field].name
                    )));
                };
                seen[field] = true;
                a.put(row, slot, &value)?;
            }
        }
        fill_missing(a, row, seen, |field| {
            SchemaError::new_err(format!(
                "missing non-nullable field '{}'; the schema is {}",
                a.rec.schema().fields[field].name,
                a.describe
            ))
        })?;
        a.push(py, row)
    }

    /// Records many rows from columns (numpy arrays or sequences of equal length).
    #[pyo3(signature = (**columns))]
    fn extend(&self, py: Python<'_>, columns: Option<&Bound<'_, PyDict>>) -> PyResult<usize> {
        let a = self.active()?;
        // Checked even for an empty call: a closed recorder or a pending write
        // error is reported, not silently skipped.
        a.rec.check_open().map_err(to_py)?;
        let layout = a.layout();
        let schema = a.rec.schema();
        let Some(columns) = columns.filter(|c| !c.is_empty()) else {
            return Ok(0);
        };
        // Convert everything before pushing anything: a bad column records nothing.
        let mut converted: Vec<(usize, Vec<u64>, Option<Vec<bool>>)> = Vec::new();
        let mut seen = vec![false; schema.fields.len()];
        let mut n_rows: Option<(usize, String)> = None;
        for (key, value) in columns.iter() {
            let name: String = key.extract()?;
            let Some(&field) = a.index.get(&name) else {
                return Err(a.unknown_field(&name));
            };
            let Some(slot) = layout.slot_of_field(field) else {
                return Err(SchemaError::new_err(format!(
                    "field '{name}' is filled in by the recorder; do not pass it"
                )));
            };
            let (words, validity) = column_words(a, field, &value)?;
            match &n_rows {
                None => n_rows = Some((words.len(), name.clone())),
                Some((n, first)) if *n != words.len() => {
                    return Err(PyValueError::new_err(format!(
                        "extend() columns differ in length: '{first}' has {n} rows, '{name}' has {}; nothing was recorded",
                        words.len()
                    )))
                }
                _ => {}
            }
            seen[field] = true;
            converted.push((slot, words, validity));
        }
        let n = n_rows.map(|(n, _)| n).unwrap_or(0);
        // Missing columns: nulls, a stamped t_wall_ms, or an error.
        let mut template = layout.new_row();
        fill_missing(a, &mut template, &mut seen, |field| {
            SchemaError::new_err(format!(
                "extend() is missing non-nullable field '{}'; the schema is {}",
                schema.fields[field].name, a.describe
            ))
        })?;
        let rec = &a.rec;
        let result = py.detach(|| {
            guard_core(|| {
                let mut row = template.clone();
                let mut budget_first = false;
                for r in 0..n {
                    row.copy_from_slice(&template);
                    for (slot, words, validity) in &converted {
                        row[*slot] = words[r];
                        if let Some(v) = validity {
                            if !v[r] {
                                layout.set_null(&mut row, *slot);
                            }
                        }
                    }
                    // `offer`, not `push`: a write error reported while this
                    // call runs stays pending for the next call, so the batch
                    // is recorded whole (checked once above).
                    if let Offer::OverBudget { first: true } = rec.offer(&row)? {
                        budget_first = true;
                    }
                }
                Ok(budget_first)
            })
        });
        match result {
            Ok(true) => warn_budget(py, rec)?,
            Ok(false) => {}
            Err(e) => return Err(e),
        }
        Ok(n)
    }

    /// The same positional call as `record`, doing nothing: the call floor.
    #[pyo3(signature = (*values))]
    fn _noop(&self, values: &Bound<'_, PyTuple>) -> usize {
        values.len()
    }

    /// Records an event (payload already JSON text).
    #[pyo3(signature = (name, payload_json=None, t_wall_ms=None))]
    fn event(
        &self,
        name: &str,
        payload_json: Option<String>,
        t_wall_ms: Option<f64>,
    ) -> PyResult<()> {
        let a = self.active()?;
        a.rec.event(name, payload_json, t_wall_ms).map_err(to_py)
    }

    /// Blocks until every earlier row is durable.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        match self.active.get() {
            Some(a) => py.detach(|| guard_core(|| a.rec.flush())),
            None => self.active().map(|_| ()).or(Ok(())),
        }
    }

    /// Makes everything durable, merges segments, stops the flusher.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Some(a) = self.active.get() else {
            // Never got a schema: nothing was recorded, nothing to write.
            *self.deferred.lock().unwrap_or_else(|e| e.into_inner()) = None;
            self.closed_without_schema
                .store(true, std::sync::atomic::Ordering::Release);
            return Ok(());
        };
        let report = py.detach(|| guard_core(|| a.rec.close()))?;
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        for (p, rows, bytes) in report.files {
            files.push((p.to_string_lossy().into_owned(), rows, bytes));
        }
        Ok(())
    }

    /// Published files after close: (path, rows, bytes).
    #[getter]
    fn files(&self) -> Vec<(String, u64, u64)> {
        self.files.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    #[getter]
    fn closed(&self) -> bool {
        match self.active.get() {
            Some(a) => a.rec.is_closed(),
            None => self
                .closed_without_schema
                .load(std::sync::atomic::Ordering::Acquire),
        }
    }

    /// The schema as field specs and version, or None before inference.
    fn schema_spec(&self) -> Option<(Vec<FieldSpec>, i64)> {
        self.active
            .get()
            .map(|a| (spec_of(a.rec.schema()), a.rec.schema().version))
    }

    /// Counters.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.active.get().map(|a| a.rec.stats()).unwrap_or_default();
        let d = PyDict::new(py);
        d.set_item("rows_offered", s.rows_offered)?;
        d.set_item("rows_written", s.rows_written)?;
        d.set_item("rows_sampled_out", s.rows_sampled_out)?;
        d.set_item("rows_dropped", s.rows_dropped)?;
        d.set_item("rows_over_budget", s.rows_over_budget)?;
        d.set_item("rows_lost", s.rows_lost)?;
        d.set_item("segments", s.segments)?;
        d.set_item("bytes_written", s.bytes_written)?;
        d.set_item("flush_secs", s.flush_nanos as f64 / 1e9)?;
        d.set_item("producer_stalls", s.producer_stalls)?;
        d.set_item("events", s.events)?;
        Ok(d)
    }

    /// Milliseconds since the recorder started (monotonic).
    fn now_ms(&self) -> f64 {
        self.active.get().map(|a| a.rec.now_ms()).unwrap_or(0.0)
    }

    /// Durable telemetry as an Arrow stream source (re-readable).
    fn to_arrow(&self, py: Python<'_>) -> PyResult<ArrowData> {
        let layout = self.layout.clone();
        let schema = self.active.get().map(|a| a.rec.schema().arrow_schema());
        py.detach(|| {
            let parts = flightlog_core::read::read_telemetry(&layout).map_err(to_py)?;
            ArrowData::from_parts(parts, schema)
        })
    }

    /// Durable events as an Arrow stream source.
    fn events_to_arrow(&self, py: Python<'_>) -> PyResult<ArrowData> {
        let layout = self.layout.clone();
        py.detach(|| {
            let parts = flightlog_core::read::read_events(&layout).map_err(to_py)?;
            ArrowData::from_parts(parts, Some(flightlog_core::recorder::events_arrow_schema()))
        })
    }
}

fn guard_core<T>(f: impl FnOnce() -> flightlog_core::Result<T>) -> PyResult<T> {
    guard(|| f().map_err(to_py))
}

fn record_arity_error(a: &Active, got: usize) -> PyErr {
    let layout = a.layout();
    let names: Vec<&str> = (0..layout.stored_len())
        .map(|s| a.rec.schema().fields[layout.field_of_slot(s)].name.as_str())
        .collect();
    let (count, note) = if a.min_record_values == names.len() {
        (format!("{}", names.len()), "")
    } else {
        (
            format!("{} to {}", a.min_record_values, names.len()),
            "; trailing nullable fields may be omitted",
        )
    };
    SchemaError::new_err(format!(
        "record() takes {count} values in schema order ({}), got {got}{note}",
        names.join(", ")
    ))
}

/// Fills fields not in `seen`: a stamped `t_wall_ms`, a null, or `missing(field)`.
fn fill_missing(
    a: &Active,
    row: &mut [u64],
    seen: &mut [bool],
    missing: impl Fn(usize) -> PyErr,
) -> PyResult<()> {
    let layout = a.layout();
    for slot in 0..layout.stored_len() {
        let field = layout.field_of_slot(slot);
        if seen[field] {
            continue;
        }
        if Some(slot) == a.t_wall_slot {
            row[slot] = f64_word(a.rec.now_ms());
        } else if a.rec.schema().fields[field].nullable {
            layout.set_null(row, slot);
        } else {
            return Err(missing(field));
        }
    }
    Ok(())
}

/// Converts one `extend()` column into words (and validity when it has None).
fn column_words(
    a: &Active,
    field: usize,
    value: &Bound<'_, PyAny>,
) -> PyResult<(Vec<u64>, Option<Vec<bool>>)> {
    let f = &a.rec.schema().fields[field];
    if let Ok(array) = value.cast::<PyUntypedArray>() {
        if array.ndim() != 1 {
            return Err(PyValueError::new_err(format!(
                "extend() column '{}' must be 1-D, got an array of shape {:?}",
                f.name,
                array.shape()
            )));
        }
        if let Some(words) = crate::columns::numeric_words(&f.name, &f.dtype, array)? {
            return Ok((words, None));
        }
        // Object, string or other arrays: convert element by element below.
    } else if value.is_instance_of::<PyString>()
        || value.is_instance_of::<pyo3::types::PyBytes>()
        || !value.hasattr("__len__")?
    {
        return Err(PyTypeError::new_err(format!(
            "extend() column '{}' must be a 1-D numpy array or a sequence, got {}",
            f.name,
            value.get_type().name()?
        )));
    }
    let conv = a.conv(field);
    let len = value.len()?;
    let mut words = Vec::with_capacity(len);
    let mut validity: Option<Vec<bool>> = None;
    let items: Bound<'_, PyAny> =
        if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
            value.clone()
        } else {
            value
                .call_method0("tolist")
                .unwrap_or_else(|_| value.clone())
        };
    for (i, item) in items.try_iter()?.enumerate() {
        let item = item?;
        if item.is_none() {
            if !f.nullable {
                return Err(PyTypeError::new_err(format!(
                    "field '{}' is not nullable, got None at row {i}",
                    f.name
                )));
            }
            validity.get_or_insert_with(|| vec![true; len])[i] = false;
            words.push(0);
        } else {
            words.push(to_word(&conv, &item).map_err(|e| {
                let msg = e.to_string();
                let err_type = e.get_type(value.py());
                PyErr::from_type(err_type, format!("{msg} (row {i})"))
            })?);
        }
    }
    if let Some(v) = validity.as_mut() {
        v.resize(words.len(), true);
    }
    Ok((words, validity))
}
