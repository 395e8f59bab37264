//! `flightlog._core.Recorder`: argument conversion over `flightlog_core::Recorder`.
//! No policy lives here: sampling, budgets, blocking and durability are the
//! core's, and so are the row rules (the stamped `t_wall_ms`, omitted and
//! missing fields, constant columns: `Recorder::fill_missing` and friends)
//! and the schema-not-yet-known state (`PendingRecorder`: inference rules,
//! early events, the folder's claim); this file converts values, maps errors
//! and releases the GIL.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use flightlog_core::row_layout::f64_word;
use flightlog_core::{
    Codec, CoreError, DType, Field, InPlace, NotStarted, Offer, OnFull, OutputLayout,
    PendingRecorder, Recorder, RecorderConfig, RowCall, RowLayout, Sampling, Schema, Storage,
    Value,
};
use numpy::{PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyDict, PyFloat, PyList, PyString, PyTuple};

use crate::arrow::ArrowData;
use crate::columns::NumericColumn;
use crate::convert::{infer_dtype, to_constant, to_word, FieldConv};
use crate::error::{guard, to_py, RecorderClosedError, RowBudgetWarning, SchemaError};
use crate::fastcall::{self, Entry, IntRead};
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
        let dtype = match dtype.as_str() {
            // No variants: `Schema::new` says so, naming the field.
            "enum" => DType::Enum(variants.unwrap_or_default()),
            other => DType::parse(other).map_err(to_py)?,
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

/// The dtype of a stored slot, as far as the fast path cares. A plain byte
/// (the enum labels live beside it) so the per-value dispatch is one compare.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SlotKind {
    F64,
    I64,
    Enum,
    Other,
}

/// Longest list (enum labels, field names) searched by pointer identity; a
/// longer one is searched by hash, so a row costs O(1) in the schema's width
/// and in an enum's number of labels.
const MAX_IDENTITY_SCAN: usize = 16;

/// One field as `log()`'s in-place loop reads it: one load per keyword.
#[derive(Clone, Copy)]
struct FieldPlan {
    /// The address of the interned name (held by `Active::names`).
    name: usize,
    /// The stored slot; `usize::MAX` for a constant column (no slot).
    slot: usize,
    /// The fast-path kind of the slot.
    kind: SlotKind,
}

/// A recorder whose schema is known.
/// What a started recorder's calls use. The fields `record()` reads on every
/// row come first, with the core recorder's own (its `Shared`, closed flag
/// and owner, first in `Recorder`): one cache line, where a solver's loop
/// (whose numpy work evicts them between two rows) misses each line a row
/// touches (`benches/bench_instructions.py --cache`).
#[repr(C, align(64))]
struct Active {
    /// The number of values of a `record()` call that may be converted
    /// straight into the ring (`Recorder::offer_in_place`): every stored slot,
    /// when each is of a kind `fast_word` converts; else `usize::MAX`. Never
    /// 0 (nor is a row that matches it empty: the compiler knows its first
    /// value is there).
    in_place_len: NonZeroUsize,
    /// The first slot from which every slot is an f64 (a telemetry row's
    /// floats after its ints and labels): `record()` converts those with no
    /// per-value kind test.
    f64_from: usize,
    /// When the first slot is an i64: how many f64 slots follow it before
    /// any other kind (the iteration, then floats: the usual telemetry row),
    /// converted by a loop with no kind test and no call; else 0.
    lead_floats: usize,
    /// Every slot after the leading run is an enum's (a solver's phase after
    /// its floats): [`Active::fill_labels`] converts them, not `fill_mixed`.
    labels_after_lead: bool,
    /// Per stored slot: the fast-path kind of its field.
    slot_kinds: Box<[SlotKind]>,
    rec: Recorder,
    /// Per stored slot: an enum's labels as interned strings (empty for other
    /// kinds). A label written as a literal in the caller's code is the same
    /// object, found by pointer comparison.
    enum_labels: Box<[Box<[Py<PyString>]>]>,
    index: HashMap<String, usize>,
    /// Field names as interned Python strings: keyword names in a call are
    /// interned too, so `log()` finds most fields by pointer comparison.
    names: Vec<Py<PyString>>,
    /// The same, by object address: a keyword out of schema order is found
    /// in O(1) however wide the schema (a scan cost O(fields) per keyword).
    /// The addresses stay valid: `names` holds a reference to each string.
    by_ptr: HashMap<usize, usize>,
    /// Per field: its name's address, slot and kind, for `log()`.
    plan: Box<[FieldPlan]>,
    describe: String,
}

impl Active {
    fn new(py: Python<'_>, rec: Recorder) -> Self {
        let schema = rec.schema();
        let names: Vec<Py<PyString>> = schema
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
        let by_ptr = names
            .iter()
            .enumerate()
            .map(|(i, n): (usize, &Py<PyString>)| (n.as_ptr() as usize, i))
            .collect();
        let describe = schema.describe();
        let layout = rec.row_layout();
        let dtypes =
            (0..layout.stored_len()).map(|slot| &schema.fields[layout.field_of_slot(slot)].dtype);
        let slot_kinds = dtypes
            .clone()
            .map(|dtype| match dtype {
                DType::F64 => SlotKind::F64,
                DType::I64 => SlotKind::I64,
                DType::Enum(_) => SlotKind::Enum,
                _ => SlotKind::Other,
            })
            .collect::<Box<[SlotKind]>>();
        let plan = names
            .iter()
            .enumerate()
            .map(|(field, name)| {
                let slot = layout.slot_of_field(field);
                FieldPlan {
                    name: name.as_ptr() as usize,
                    slot: slot.unwrap_or(usize::MAX),
                    kind: slot.map_or(SlotKind::Other, |s| slot_kinds[s]),
                }
            })
            .collect();
        let in_place_len = NonZeroUsize::new(layout.stored_len())
            .filter(|_| slot_kinds.iter().all(|&k| k != SlotKind::Other))
            .unwrap_or(NonZeroUsize::MAX);
        let f64_from = slot_kinds.len()
            - slot_kinds
                .iter()
                .rev()
                .take_while(|&&k| k == SlotKind::F64)
                .count();
        let lead_floats = match slot_kinds.split_first() {
            Some((SlotKind::I64, rest)) => rest.iter().take_while(|&&k| k == SlotKind::F64).count(),
            _ => 0,
        };
        let labels_after_lead = lead_floats > 0
            && slot_kinds.len() > 1 + lead_floats
            && slot_kinds[1 + lead_floats..]
                .iter()
                .all(|&k| k == SlotKind::Enum);
        let enum_labels = dtypes
            .map(|dtype| match dtype {
                // Only the first labels: the identity scan runs on every
                // row, so it stays short; other labels are found by hash
                // (`Dictionary::code`) on the general path.
                DType::Enum(labels) => labels
                    .iter()
                    .take(MAX_IDENTITY_SCAN)
                    .map(|l| PyString::intern(py, l).unbind())
                    .collect(),
                _ => Box::default(),
            })
            .collect();
        Active {
            rec,
            slot_kinds,
            enum_labels,
            index,
            names,
            by_ptr,
            plan,
            in_place_len,
            f64_from,
            lead_floats,
            labels_after_lead,
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
    /// The common cases (a float for an f64 field, an int for an i64 field, an
    /// interned enum label) are decided here, inlined into the caller's loop;
    /// everything else goes to the out-of-line `put_general`.
    #[inline(always)]
    fn put(&self, row: &mut [u64], slot: usize, value: &Bound<'_, PyAny>) -> PyResult<()> {
        match self.fast_word(self.slot_kinds[slot], slot, value) {
            Some(word) => {
                row[slot] = word;
                Ok(())
            }
            None => self.put_general(row, slot, value, false),
        }
    }

    /// [`Active::fast_word`] for the kinds that need no per-slot data (f64
    /// and i64); None for the others, which then take the slot-aware path.
    #[inline(always)]
    fn fast_word_no_slot(&self, kind: SlotKind, value: &Bound<'_, PyAny>) -> Option<u64> {
        match kind {
            SlotKind::F64 | SlotKind::I64 => self.fast_word(kind, 0, value),
            _ => None,
        }
    }

    /// The word for `value` in slot `slot` of kind `kind`, when it is one of
    /// the common cases; `None` sends the caller to `put_general`.
    #[inline(always)]
    fn fast_word(&self, kind: SlotKind, slot: usize, value: &Bound<'_, PyAny>) -> Option<u64> {
        // Branches, not a `match`: a jump table per value costs more than the
        // two well-predicted compares the common kinds take.
        if kind == SlotKind::F64 {
            match crate::fastcall::exact_float(value) {
                Some(x) => Some(f64_word(x)),
                None => value.cast::<PyFloat>().ok().map(|x| f64_word(x.value())),
            }
        } else if kind == SlotKind::I64 {
            crate::fastcall::exact_int(value).map(|v| v as u64)
        } else if kind == SlotKind::Enum {
            self.enum_labels[slot]
                .iter()
                .position(|l| value.is(l))
                .map(|code| code as u64)
        } else {
            None
        }
    }

    /// Every conversion the fast path does not take: subclasses, `__float__`
    /// and `__index__` objects, strings, bools, `None` (a null, an error for a
    /// non-nullable field, or with `stamp_none` the time for `t_wall_ms`, as
    /// `record()` defines it), and the errors naming the field.
    #[cold]
    #[inline(never)]
    fn put_general(
        &self,
        row: &mut [u64],
        slot: usize,
        value: &Bound<'_, PyAny>,
        stamp_none: bool,
    ) -> PyResult<()> {
        if value.is_none() {
            return self.rec.put_none(row, slot, stamp_none).map_err(to_py);
        }
        row[slot] = to_word(&self.conv(self.layout().field_of_slot(slot)), value)?;
        Ok(())
    }

    #[inline]
    fn push(&self, py: Python<'_>, row: &[u64]) -> PyResult<()> {
        // A full ring makes the push wait for the flusher: other Python threads
        // run meanwhile.
        let offer = self
            .rec
            .push_with(row, |blocked| py.detach(|| blocked.wait()))
            .map_err(to_py)?;
        self.offered(py, offer)
    }

    /// Warns once when the row budget refused its first row.
    #[inline(always)]
    fn offered(&self, py: Python<'_>, offer: Offer) -> PyResult<()> {
        if let Offer::OverBudget { first: true } = offer {
            warn_budget(py, &self.rec)?;
        }
        Ok(())
    }

    /// Converts a whole row (`values`, one per stored slot) into `words`, the
    /// row words of a ring slot, validity words included; false at the first
    /// value `fast_word` does not take (the slot is then left unpublished).
    #[inline(always)]
    fn fill_in_place(
        &self,
        words: &[AtomicU64],
        values: &[Bound<'_, PyAny>],
        ints: impl IntRead,
    ) -> bool {
        let n = values.len();
        let (stored, validity) = words.split_at(n);
        if !self.fill_values(stored, values, ints) {
            return false;
        }
        // Every slot holds a value.
        for word in validity {
            word.store(u64::MAX, Ordering::Relaxed);
        }
        true
    }

    /// The value loop of [`Active::fill_in_place`]. The usual telemetry row
    /// (the iteration, then a run of floats, then perhaps labels) is converted
    /// by a loop that calls nothing (the iteration read in place on CPython
    /// 3.11, through the C API elsewhere): the first value it does not take
    /// (not an exact int, not an exact float) goes to [`Active::fill_mixed`]
    /// from that slot on, and so does whatever follows the run, unless it is
    /// only enum labels ([`Active::fill_labels`]).
    #[inline(always)]
    fn fill_values(
        &self,
        stored: &[AtomicU64],
        values: &[Bound<'_, PyAny>],
        ints: impl IntRead,
    ) -> bool {
        let run = self.lead_floats;
        if run > 0 {
            if let (Some((first_word, words)), Some((first, rest))) =
                (stored.split_first(), values.split_first())
            {
                // In place where CPython's int layout is known (3.11), else
                // through the C API (a call, but the row stays on this path):
                // `ints` is one or the other, fixed for the entry point.
                if let Some(v) = ints.exact_int(first) {
                    first_word.store(v as u64, Ordering::Relaxed);
                    let n = run.min(words.len()).min(rest.len());
                    // Two floats a turn: the loop's own count and branch are
                    // paid once a pair (7 instructions a float, 5.5 in pairs).
                    // An odd one goes first, where its index is known.
                    let (odd_word, word_pairs) = words[..n].as_rchunks::<2>();
                    let (odd_value, value_pairs) = rest[..n].as_rchunks::<2>();
                    if let ([w], [v]) = (odd_word, odd_value) {
                        match crate::fastcall::exact_float(v) {
                            Some(x) => w.store(f64_word(x), Ordering::Relaxed),
                            None => return self.fill_mixed(stored, values, 1),
                        }
                    }
                    let from = 1 + odd_word.len();
                    for (k, (w, v)) in word_pairs.iter().zip(value_pairs).enumerate() {
                        let (Some(a), Some(b)) = (
                            crate::fastcall::exact_float(&v[0]),
                            crate::fastcall::exact_float(&v[1]),
                        ) else {
                            // The index, not the rest sliced here: that kept a
                            // second counter in the loop.
                            return self.fill_mixed(stored, values, from + 2 * k);
                        };
                        w[0].store(f64_word(a), Ordering::Relaxed);
                        w[1].store(f64_word(b), Ordering::Relaxed);
                    }
                    if n == words.len() {
                        return true;
                    }
                    // `n` is the whole run here: a row that reaches this
                    // path has one value per stored slot.
                    return if self.labels_after_lead {
                        self.fill_labels(stored, values, 1 + n)
                    } else {
                        self.fill_mixed(stored, values, 1 + n)
                    };
                }
            }
        }
        self.fill_mixed(stored, values, 0)
    }

    /// The enum slots from `from` on (every slot after the leading run, when
    /// `labels_after_lead`), each value found by identity among its field's
    /// first interned labels, as `fast_word` finds it: without `fill_mixed`'s
    /// split and kind tests, a solver's row with a phase label runs fewer
    /// instructions and fetches less code. False at a value that is not one of
    /// those labels (the general path takes the row).
    #[inline(never)]
    fn fill_labels(&self, stored: &[AtomicU64], values: &[Bound<'_, PyAny>], from: usize) -> bool {
        let (Some(words), Some(values), Some(labels)) = (
            stored.get(from..),
            values.get(from..),
            self.enum_labels.get(from..),
        ) else {
            return false;
        };
        // One value and one label list per slot (all three are per stored
        // slot): never a slot left unwritten by a shorter zip.
        if values.len() != words.len() || labels.len() != words.len() {
            return false;
        }
        for ((word, value), labels) in words.iter().zip(values).zip(labels) {
            match labels.iter().position(|l| value.is(l)) {
                Some(code) => word.store(code as u64, Ordering::Relaxed),
                None => return false,
            }
        }
        true
    }

    /// [`Active::fill_values`] for any row, from slot `from` on: an exact float
    /// for an f64 slot and an exact int for an i64 slot inline, anything else
    /// out of line.
    #[inline(never)]
    fn fill_mixed(&self, stored: &[AtomicU64], values: &[Bound<'_, PyAny>], from: usize) -> bool {
        let split = self.f64_from.clamp(from, values.len().max(from));
        let (Some(head), Some(floats)) = (values.get(from..split), values.get(split..)) else {
            // `from` past the row: not reached (callers pass at most its
            // length); declined rather than publish a slot left unwritten.
            return false;
        };
        let kinds = &self.slot_kinds[from..split];
        let words = &stored[from..];
        for (i, ((word, value), &kind)) in words.iter().zip(head).zip(kinds).enumerate() {
            let w = match crate::fastcall::exact_float(value) {
                Some(x) if kind == SlotKind::F64 => f64_word(x),
                _ if kind == SlotKind::I64 => match crate::fastcall::exact_int(value) {
                    Some(v) => v as u64,
                    None => return false,
                },
                _ => match self.other_word(kind, from + i, value) {
                    Some(w) => w,
                    None => return false,
                },
            };
            word.store(w, Ordering::Relaxed);
        }
        // A row that ends in labels (a solver's phase) has no trailing floats:
        // no call (one out-of-line function's code fewer for the row to fetch).
        floats.is_empty() || self.fill_floats(&stored[split..], floats)
    }

    /// The trailing f64 slots, with no kind test (three instructions a value
    /// fewer); anything but an exact float goes through [`Active::other_word`]
    /// (which needs no slot index for an f64: no counter in the loop).
    #[inline(never)]
    fn fill_floats(&self, words: &[AtomicU64], floats: &[Bound<'_, PyAny>]) -> bool {
        for (word, value) in words.iter().zip(floats) {
            let w = match crate::fastcall::exact_float(value) {
                Some(x) => f64_word(x),
                None => match self.other_word(SlotKind::F64, 0, value) {
                    Some(w) => w,
                    None => return false,
                },
            };
            word.store(w, Ordering::Relaxed);
        }
        true
    }

    /// `log()`'s row converted into `words` in place (as [`Active::fill_in_place`]),
    /// each value's slot found by its keyword's identity with the interned field
    /// name. The caller passes exactly one keyword per stored slot; keywords of one
    /// call are distinct objects (CPython refuses a repeated keyword), so keywords
    /// that are all stored field names by identity fill every slot once. False at a
    /// keyword or value it does not take (a name equal but not identical, a
    /// constant column, a value `fast_word` does not convert).
    #[inline(never)]
    fn fill_log_in_place(
        &self,
        words: &[AtomicU64],
        keys: &[Bound<'_, PyAny>],
        values: &[Bound<'_, PyAny>],
    ) -> bool {
        let layout = self.layout();
        let plan = &*self.plan;
        let mut guess = 0;
        for (key, value) in keys.iter().zip(values) {
            let key_addr = key.as_ptr() as usize;
            let field = match plan.get(guess) {
                Some(p) if p.name == key_addr => guess,
                _ => match self.by_ptr.get(&key_addr) {
                    Some(&field) => field,
                    None => return false,
                },
            };
            guess = field + 1;
            let FieldPlan { slot, kind, .. } = plan[field];
            // A constant column has no slot (`usize::MAX`): declined.
            let Some(word) = words.get(slot) else {
                return false;
            };
            let w = match crate::fastcall::exact_float(value) {
                Some(x) if kind == SlotKind::F64 => f64_word(x),
                _ if kind == SlotKind::I64 => match crate::fastcall::exact_int(value) {
                    Some(v) => v as u64,
                    None => return false,
                },
                _ => match self.other_word(kind, slot, value) {
                    Some(w) => w,
                    None => return false,
                },
            };
            word.store(w, Ordering::Relaxed);
        }
        // Every slot holds a value.
        for word in &words[layout.stored_len()..] {
            word.store(u64::MAX, Ordering::Relaxed);
        }
        true
    }

    /// [`Active::fast_word`] out of line, for the values of an in-place row
    /// that are not exact floats (the iteration counter, enum labels).
    #[inline(never)]
    fn other_word(&self, kind: SlotKind, slot: usize, value: &Bound<'_, PyAny>) -> Option<u64> {
        self.fast_word(kind, slot, value)
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
        self.field_of_other_key(key)
    }

    #[cold]
    #[inline(never)]
    fn field_of_other_key(&self, key: &Bound<'_, PyAny>) -> PyResult<usize> {
        // A short scan beats hashing for the usual narrow schema.
        if self.names.len() <= MAX_IDENTITY_SCAN {
            if let Some(i) = self.names.iter().position(|n| key.is(n)) {
                return Ok(i);
            }
        } else if let Some(&i) = self.by_ptr.get(&(key.as_ptr() as usize)) {
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

/// A recorder whose schema is not known yet (inferred from the first log()):
/// the core's pending recorder, and the constant columns' values, converted
/// once their dtypes are known.
struct Deferred {
    pending: PendingRecorder,
    constants: Vec<(String, Py<PyAny>)>,
}

/// A Python error through the core's generic policy code (which raises its
/// own errors as `CoreError`).
struct PyFail(PyErr);

impl From<CoreError> for PyFail {
    fn from(e: CoreError) -> Self {
        PyFail(to_py(e))
    }
}

/// Rows up to this many words are built on the stack (zeroing it is part of
/// every call, so it is sized for telemetry rows, not for the largest schema).
const ROW_BUF_WORDS: usize = 32;

/// Runs `f` on a fresh row (as `RowLayout::new_row` makes it): in a stack
/// buffer for the common widths, so a per-row call allocates nothing.
#[inline(always)]
fn with_row<R>(layout: &RowLayout, f: impl FnOnce(&mut [u64]) -> R) -> R {
    let width = layout.width();
    if width <= ROW_BUF_WORDS {
        let mut buf = [0u64; ROW_BUF_WORDS];
        let row = &mut buf[..width];
        if layout.has_validity() {
            layout.reset_row(row);
        }
        f(row)
    } else {
        f(&mut layout.new_row())
    }
}

/// Says that a recorder `how` ("closed", "garbage-collected") before any row
/// gave it a schema drops its `dropped` events (their files need the schema).
fn warn_events_not_written(py: Python<'_>, how: &str, dropped: usize) -> PyResult<()> {
    let msg = format!(
        "the recorder was {how} before any row gave it a schema: its {dropped} \
         event(s) are not written (pass schema= to record events without rows)"
    );
    let msg = std::ffi::CString::new(msg).expect("no NUL in message");
    PyErr::warn(
        py,
        &py.get_type::<pyo3::exceptions::PyRuntimeWarning>(),
        &msg,
        1,
    )
}

/// The native recorder behind `flightlog.FlightRecorder`.
#[pyclass(frozen, module = "flightlog._core", name = "Recorder")]
pub struct PyRecorder {
    /// Boxed: a row reads the lock's state and the pointer (one line of the
    /// Python object), then the first line of `Active` (see there).
    active: OnceLock<Box<Active>>,
    deferred: Mutex<Option<Deferred>>,
    layout: OutputLayout,
    files: Mutex<Vec<(String, u64, u64)>>,
    closed_without_schema: std::sync::atomic::AtomicBool,
    /// The output file of the output-file form, with true when this recording
    /// replaces it at close (`overwrite=True`).
    output_file: Option<(PathBuf, bool)>,
    /// Set once a replacing recording has moved into place: reads then go to
    /// the output file instead of the (moved) staged files.
    replaced: std::sync::atomic::AtomicBool,
}

impl Drop for PyRecorder {
    /// A recorder dropped before any row gave it a schema (never closed) is
    /// given up as `close()` gives it up: its claim and spool let go, and the
    /// same warning that its events are not written, not a silent loss. (A
    /// started recorder closes when its core recorder is dropped.)
    fn drop(&mut self) {
        let deferred = self
            .deferred
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(d) = deferred {
            let dropped = d.pending.abandon();
            if dropped > 0 {
                Python::attach(|py| {
                    if let Err(e) = warn_events_not_written(py, "garbage-collected", dropped) {
                        // Warnings turned into errors: nowhere to raise from a drop.
                        e.write_unraisable(py, None);
                    }
                });
            }
        }
    }
}

impl PyRecorder {
    /// Where the durable rows are: the recording's layout, or the output
    /// file's once a replacing recording has moved into place.
    fn read_layout(&self) -> OutputLayout {
        match &self.output_file {
            Some((file, true)) if self.replaced.load(std::sync::atomic::Ordering::Acquire) => {
                OutputLayout::output_file(file, false)
            }
            _ => self.layout.clone(),
        }
    }

    /// The state kept until the schema is known. Locked without holding the
    /// interpreter: the thread that holds it may be starting the recorder with
    /// the interpreter released (`init`), and waits for nothing this thread
    /// holds.
    fn lock_deferred(&self, py: Python<'_>) -> MutexGuard<'_, Option<Deferred>> {
        self.deferred
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner())
    }

    fn active(&self) -> PyResult<&Active> {
        self.active.get().map(|a| &**a).ok_or_else(|| {
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

    ///
    /// On an error the deferred state comes back with it, whole (the early
    /// events, their spool, the claim), for the caller to keep: the next
    /// row tries again, and a close still has the events.
    ///
    /// `known`: the constants' values, converted already (for their dtypes in
    /// `schema`); else they are converted here.
    fn init(
        &self,
        schema: Schema,
        deferred: Deferred,
        known: Option<Vec<Value>>,
        py: Python<'_>,
    ) -> Result<&Active, Box<(PyErr, Deferred)>> {
        let Deferred { pending, constants } = deferred;
        let prepared = pending.prepare(schema, |i, name, dtype| match &known {
            Some(values) => Ok(values[i].clone()),
            None => to_constant(name, dtype, constants[i].1.bind(py)).map_err(PyFail),
        });
        let ready = match prepared {
            Ok(ready) => ready,
            Err(NotStarted {
                error: PyFail(e),
                pending,
            }) => {
                let pending = *pending;
                return Err(Box::new((e, Deferred { pending, constants })));
            }
        };
        match py.detach(|| ready.start()) {
            Ok(rec) => {
                let _ = self.active.set(Box::new(Active::new(py, rec)));
                Ok(self.active.get().expect("just set"))
            }
            Err(NotStarted { error, pending }) => {
                let pending = *pending;
                Err(Box::new((to_py(error), Deferred { pending, constants })))
            }
        }
    }

    /// [`PyRecorder::init`] for a caller holding the deferred state's lock:
    /// a failed start puts the state back.
    fn init_or_restore(
        &self,
        guard: &mut MutexGuard<'_, Option<Deferred>>,
        schema: Schema,
        deferred: Deferred,
        known: Option<Vec<Value>>,
        py: Python<'_>,
    ) -> PyResult<&Active> {
        self.init(schema, deferred, known, py).map_err(|failed| {
            let (e, deferred) = *failed;
            **guard = Some(deferred);
            e
        })
    }

    /// The common `record(*values)` row: every value converted straight into
    /// the ring slot. `Declined` (nothing recorded, nothing counted) when the
    /// schema is not known yet, the row is not the full width, or a value is
    /// not one the fast conversion takes (an int for an f64 field, None, a
    /// numpy scalar...): [`PyRecorder::record_general`] then converts or
    /// rejects the row. Small result, no `PyErr`: the caller's hot path stays
    /// in registers.
    #[inline(always)]
    pub(crate) fn record_in_place(
        &self,
        values: &[Bound<'_, PyAny>],
        ints: impl IntRead,
    ) -> Result<InPlace, Box<CoreError>> {
        match self.active.get() {
            Some(a) if values.len() == a.in_place_len.get() => a
                .rec
                .offer_in_place(|words| a.fill_in_place(words, values, ints))
                .map_err(Box::new),
            _ => Ok(InPlace::Declined),
        }
    }

    /// What `record()` does with the outcome of [`PyRecorder::record_in_place`]
    /// other than a plain offer: warn once at the row budget, raise an error.
    #[cold]
    #[inline(never)]
    pub(crate) fn row_offered(
        &self,
        py: Python<'_>,
        offered: Result<Offer, Box<CoreError>>,
    ) -> PyResult<()> {
        let offer = offered.map_err(|e| to_py(*e))?;
        match self.active.get() {
            Some(a) => a.offered(py, offer),
            None => Ok(()),
        }
    }

    /// `record(*values)`: one row from values in schema order (constant
    /// columns excluded); trailing nullable fields may be omitted. The path
    /// of every row [`PyRecorder::record_in_place`] declined.
    #[inline(never)]
    pub(crate) fn record_general(
        &self,
        py: Python<'_>,
        values: &[Bound<'_, PyAny>],
    ) -> PyResult<()> {
        let a = self.active()?;
        let layout = a.layout();
        let given = values.len();
        if a.rec.is_closed() {
            // Said before anything about the row: its fields need not fit
            // the schema of a closed recorder.
            return Err(to_py(CoreError::Closed));
        }
        a.rec.check_record_arity(given).map_err(to_py)?;
        let kinds = &a.slot_kinds[..given];
        with_row(layout, |row| {
            // The common row first, zipped (no bounds check per value): an
            // exact float for an f64 field (nearly every value of a telemetry
            // row) is read in place, the rest through `fast_word`. Any other
            // value sends the whole row through the general loop below.
            let mut fast = true;
            for ((word, value), &kind) in row[..given].iter_mut().zip(values).zip(kinds) {
                let w = if kind == SlotKind::F64 {
                    crate::fastcall::exact_float(value).map(f64_word)
                } else {
                    None
                };
                match w.or_else(|| a.fast_word_no_slot(kind, value)) {
                    Some(w) => *word = w,
                    None => {
                        fast = false;
                        break;
                    }
                }
            }
            if !fast {
                for slot in 0..given {
                    let value = &values[slot];
                    match a.fast_word(kinds[slot], slot, value) {
                        Some(word) => row[slot] = word,
                        // Also where `None` for t_wall_ms stamps the time.
                        None => a.put_general(row, slot, value, true)?,
                    }
                }
            }
            // Omitted trailing fields: nulls or a stamped t_wall_ms.
            a.rec.fill_omitted(row, given);
            a.push(py, row)
        })
    }

    /// `log(**fields)`: one row from (keyword, value) pairs.
    /// The common `log(**fields)` row: every stored field by keyword, each
    /// found by identity, converted straight into the ring slot (as
    /// [`PyRecorder::record_in_place`]); anything else declines to
    /// [`PyRecorder::log_general`].
    #[inline(always)]
    pub(crate) fn log_in_place(
        &self,
        keys: &[Bound<'_, PyAny>],
        values: &[Bound<'_, PyAny>],
    ) -> Result<InPlace, Box<CoreError>> {
        match self.active.get() {
            Some(a) if keys.len() == a.in_place_len.get() => a
                .rec
                .offer_in_place(|words| a.fill_log_in_place(words, keys, values))
                .map_err(Box::new),
            _ => Ok(InPlace::Declined),
        }
    }

    /// `log(**fields)`: one row from (keyword, value) pairs, for every row
    /// [`PyRecorder::log_in_place`] declined.
    #[inline(never)]
    pub(crate) fn log_general(
        &self,
        py: Python<'_>,
        keys: &[Bound<'_, PyAny>],
        values: &[Bound<'_, PyAny>],
    ) -> PyResult<()> {
        let a = match self.active.get() {
            Some(a) => a,
            None => {
                // The first log() of a recorder without a schema infers it.
                self.infer(py, keys, values)?
            }
        };
        if a.rec.is_closed() {
            // Said before anything about the row: a closed run's schema may
            // be one no row ever gave (the constants of a run closed before
            // its first log()), which would call every field unknown.
            return Err(to_py(CoreError::Closed));
        }
        let layout = a.layout();
        with_row(layout, |row| {
            let n_fields = a.rec.schema().fields.len();
            let mut seen_stack = [false; 128];
            let mut seen_heap;
            let seen: &mut [bool] = if n_fields <= 128 {
                &mut seen_stack[..n_fields]
            } else {
                seen_heap = vec![false; n_fields];
                &mut seen_heap
            };
            let mut guess = 0;
            let mut filled = 0;
            for (key, value) in keys.iter().zip(values) {
                let field = a.field_of_key(key, guess)?;
                guess = field + 1;
                let slot = a.rec.slot_given(field).map_err(to_py)?;
                filled += usize::from(!std::mem::replace(&mut seen[field], true));
                a.put(row, slot, value)?;
            }
            if filled < layout.stored_len() {
                a.rec.fill_missing(row, seen, RowCall::Log).map_err(to_py)?;
            }
            a.push(py, row)
        })
    }

    /// Infers the schema from the first `log()`'s keywords (the core's rules;
    /// the dtypes from the values).
    fn infer(
        &self,
        py: Python<'_>,
        keys: &[Bound<'_, PyAny>],
        values: &[Bound<'_, PyAny>],
    ) -> PyResult<&Active> {
        // First, without the lock, everything that may run the values' own
        // code (`__index__`, `__float__`, `__getattr__`), which may call back
        // into this recorder (`now_ms()`, `event()`: they take the lock too).
        // The row must convert under the schema it gives: a refused first row
        // (an int past i64, a str with a lone surrogate) leaves the schema to
        // the next one.
        let fields = keys
            .iter()
            .zip(values)
            .map(|(k, v)| {
                let name = k.extract::<String>()?;
                let dtype = infer_dtype(&name, v)?;
                to_constant(&name, &dtype, v)?;
                Ok((name, dtype))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let constants: Vec<(String, Py<PyAny>)> = {
            let guard = self.lock_deferred(py);
            match (self.active.get(), guard.as_ref()) {
                (Some(a), _) => return Ok(a),
                (None, None) => return self.active(),
                (None, Some(d)) => d
                    .constants
                    .iter()
                    .map(|(n, v)| (n.clone(), v.clone_ref(py)))
                    .collect(),
            }
        };
        let constant_values = constants
            .iter()
            .map(|(name, value)| {
                let value = value.bind(py);
                let dtype = infer_dtype(name, value)?;
                let converted = to_constant(name, &dtype, value)?;
                Ok((dtype, converted))
            })
            .collect::<PyResult<Vec<_>>>()?;

        let mut guard = self.lock_deferred(py);
        if let Some(a) = self.active.get() {
            return Ok(a);
        }
        let Some(deferred) = guard.take() else {
            return self.active();
        };
        let inferred = deferred.pending.infer_schema(
            |i, _| Ok::<_, CoreError>(constant_values[i].0.clone()),
            fields,
            |_, dtype| Ok(dtype.clone()),
        );
        match inferred {
            Ok(schema) => {
                let values = constant_values.into_iter().map(|(_, v)| v).collect();
                self.init_or_restore(&mut guard, schema, deferred, Some(values), py)
            }
            Err(e) => {
                *guard = Some(deferred);
                Err(to_py(e))
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
        metadata=None, constants=None, parts=None, store=None, output_file=None, sync_first=None
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
        output_file: Option<bool>,
        sync_first: Option<Vec<PathBuf>>,
    ) -> PyResult<Self> {
        // `output_file`: Some(replacing) for a path ending in `.parquet` (the
        // Python side decides), where `path` is the file itself.
        let mut layout = match (parts, output_file) {
            (Some((events_dir, part_run_id)), _) => {
                OutputLayout::append_parts(&path, &events_dir, &part_run_id)
            }
            (None, Some(replacing)) => OutputLayout::output_file(&path, replacing),
            (None, None) => OutputLayout::run_folder(&path),
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
        config.sync_first = sync_first.unwrap_or_default();
        let constants = constants.unwrap_or_default();
        let names = constants.iter().map(|(n, _)| n.clone()).collect();
        // Validated, and the folder claimed now (also for a recorder whose
        // schema comes with its first log()).
        let pending = py
            .detach(|| PendingRecorder::new(config, schema_version, names))
            .map_err(to_py)?;
        let deferred = Deferred { pending, constants };
        let this = PyRecorder {
            active: OnceLock::new(),
            deferred: Mutex::new(None),
            layout,
            files: Mutex::new(Vec::new()),
            closed_without_schema: std::sync::atomic::AtomicBool::new(false),
            output_file: output_file.map(|replacing| (path.clone(), replacing)),
            replaced: std::sync::atomic::AtomicBool::new(false),
        };
        match schema {
            Some(spec) => {
                let schema = schema_from_spec(spec, schema_version)?;
                // Nothing was kept yet: a failed start only fails the constructor.
                this.init(schema, deferred, None, py)
                    .map_err(|failed| failed.0)?;
            }
            None => *this.deferred.lock().unwrap_or_else(|e| e.into_inner()) = Some(deferred),
        }
        Ok(this)
    }

    /// The per-row entry points, as builtins bound to this recorder that
    /// CPython calls through vectorcall (see `fastcall.rs`).
    #[getter]
    fn record<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        fastcall::bind(slf, Entry::Record)
    }

    #[getter]
    fn log<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        fastcall::bind(slf, Entry::Log)
    }

    /// `record` as bound where ints are not read in place (any interpreter
    /// but CPython 3.11): the usual row's leading int is read through the C
    /// API (other ints as `exact_int` reads them). The tests run that entry
    /// point too on 3.11.
    #[getter]
    fn _record_ints_by_api<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        fastcall::bind(slf, Entry::RecordIntsByApi)
    }

    /// The same call as `record` doing nothing: the call floor.
    #[getter]
    fn _noop<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        fastcall::bind(slf, Entry::Noop)
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
        // Check every column before pushing anything: a bad column records
        // nothing. Numeric arrays are checked whole here and converted later,
        // a chunk at a time, so memory stays flat (a copy of every column
        // would double the caller's peak); other columns are converted now.
        let mut columns_in: Vec<(usize, Column<'_>)> = Vec::new();
        let mut seen = vec![false; schema.fields.len()];
        let mut n_rows: Option<(usize, String)> = None;
        for (key, value) in columns.iter() {
            let name: String = key.extract()?;
            let Some(&field) = a.index.get(&name) else {
                return Err(a.unknown_field(&name));
            };
            let slot = a.rec.slot_given(field).map_err(to_py)?;
            let column = column_source(a, field, &value)?;
            match &n_rows {
                None => n_rows = Some((column.len(), name.clone())),
                Some((n, first)) if *n != column.len() => {
                    return Err(PyValueError::new_err(format!(
                        "extend() columns differ in length: '{first}' has {n} rows, '{name}' has {}; nothing was recorded",
                        column.len()
                    )))
                }
                _ => {}
            }
            seen[field] = true;
            columns_in.push((slot, column));
        }
        let n = n_rows.map(|(n, _)| n).unwrap_or(0);
        // Missing columns: nulls, a stamped t_wall_ms, or an error.
        let mut template = layout.new_row();
        a.rec
            .fill_missing(&mut template, &seen, RowCall::Extend)
            .map_err(to_py)?;
        let rec = &a.rec;
        let width = layout.width();
        let mut rows: Vec<u64> = Vec::with_capacity(EXTEND_CHUNK_ROWS.min(n) * width);
        let mut words: Vec<u64> = Vec::with_capacity(EXTEND_CHUNK_ROWS.min(n));
        let mut masked: Vec<bool> = Vec::new();
        let mut budget_first = false;
        let mut start = 0;
        while start < n {
            // Rows of one chunk are built with the GIL held (numpy arrays
            // are read in place, and another thread may write to them only
            // while we do not hold it), then pushed without it.
            let end = (start + EXTEND_CHUNK_ROWS).min(n);
            rows.clear();
            for _ in start..end {
                rows.extend_from_slice(&template);
            }
            for (slot, column) in &columns_in {
                let slot = *slot;
                match column {
                    Column::Numeric { col, mask } => {
                        words.clear();
                        col.words(start, end, &mut words);
                        for (row, &w) in rows.chunks_exact_mut(width).zip(&words) {
                            row[slot] = w;
                        }
                        if let Some(mask) = mask {
                            masked.clear();
                            mask.bools(start, end, &mut masked);
                            for (row, &m) in rows.chunks_exact_mut(width).zip(&masked) {
                                if m {
                                    layout.set_null(row, slot);
                                }
                            }
                        }
                    }
                    Column::Words { words, validity } => {
                        for (row, &w) in rows.chunks_exact_mut(width).zip(&words[start..end]) {
                            row[slot] = w;
                        }
                        if let Some(v) = validity {
                            for (row, &ok) in rows.chunks_exact_mut(width).zip(&v[start..end]) {
                                if !ok {
                                    layout.set_null(row, slot);
                                }
                            }
                        }
                    }
                }
            }
            let rows_ref = &rows;
            let (first, refused) = py.detach(|| {
                guard_core(|| {
                    let mut first = false;
                    for (k, row) in rows_ref.chunks_exact(width).enumerate() {
                        // `offer`, not `push`: a write error reported while
                        // this call runs stays pending for the next call, so
                        // the batch is recorded whole (checked once above).
                        match rec.offer(row) {
                            Ok(Offer::OverBudget { first: true }) => first = true,
                            Ok(_) => {}
                            // Closed by another thread part-way: the rows
                            // before this one are recorded; say how many.
                            Err(CoreError::Closed) => return Ok((first, Some(k))),
                            Err(e) => return Err(e),
                        }
                    }
                    Ok((first, None))
                })
            })?;
            if let Some(k) = refused {
                return Err(RecorderClosedError::new_err(format!(
                    "the recorder was closed (by another thread) during extend(): the first {} of its {n} rows \
                     were recorded, the other {} were not; do not retry them whole",
                    start + k,
                    n - start - k
                )));
            }
            budget_first |= first;
            start = end;
        }
        if budget_first {
            warn_budget(py, rec)?;
        }
        Ok(n)
    }

    /// Records an event (payload already JSON text).
    #[pyo3(signature = (name, payload_json=None, t_wall_ms=None))]
    fn event(
        &self,
        py: Python<'_>,
        name: &str,
        payload_json: Option<String>,
        t_wall_ms: Option<f64>,
    ) -> PyResult<()> {
        if let Some(a) = self.active.get() {
            return a.rec.event(name, payload_json, t_wall_ms).map_err(to_py);
        }
        let mut deferred = self.lock_deferred(py);
        // The schema may have been set while this thread waited for the lock.
        if let Some(a) = self.active.get() {
            drop(deferred);
            return a.rec.event(name, payload_json, t_wall_ms).map_err(to_py);
        }
        match deferred.as_mut() {
            Some(d) => d
                .pending
                .event(name, payload_json, t_wall_ms)
                .map_err(to_py),
            None => self.active().map(|_| ()),
        }
    }

    /// Gives a recorder whose schema is not known yet the schema `spec` (of
    /// the version it was made with) instead of one its first `log()` would
    /// infer: a run closed before its first row, whose events the recorder
    /// holds. An error if it has a schema already.
    fn start(&self, py: Python<'_>, spec: Vec<FieldSpec>) -> PyResult<()> {
        let has_schema = || SchemaError::new_err("the recorder has a schema already");
        // Under the lock only long enough to copy the version and the
        // constants: converting them may run their own code (`__float__`,
        // `__index__`), which may call back into this recorder (`now_ms()`,
        // `event()` take the lock too), as in `infer`.
        let (version, constants): (i64, Vec<(String, Py<PyAny>)>) = {
            let guard = self.lock_deferred(py);
            if self.active.get().is_some() {
                return Err(has_schema());
            }
            match guard.as_ref() {
                None => return self.active().map(|_| ()),
                Some(d) => (
                    d.pending.schema_version(),
                    d.constants
                        .iter()
                        .map(|(n, v)| (n.clone(), v.clone_ref(py)))
                        .collect(),
                ),
            }
        };
        let schema = schema_from_spec(spec, version)?;
        let values = constants
            .iter()
            .map(|(name, value)| match schema.index_of(name) {
                Some(i) => to_constant(name, &schema.fields[i].dtype, value.bind(py)),
                // Never read: the start refuses a schema without the column.
                None => Ok(Value::Null),
            })
            .collect::<PyResult<Vec<_>>>()?;
        let mut guard = self.lock_deferred(py);
        if self.active.get().is_some() {
            return Err(has_schema());
        }
        let Some(deferred) = guard.take() else {
            return self.active().map(|_| ());
        };
        self.init_or_restore(&mut guard, schema, deferred, Some(values), py)
            .map(|_| ())
    }

    /// Blocks until every earlier row is durable. Before the schema is known
    /// there is no row to flush (early events are in the spool already); a
    /// recorder closed without ever getting one raises as any closed one.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        match self.active.get() {
            Some(a) => py.detach(|| guard_core(|| a.rec.flush())),
            None if self
                .closed_without_schema
                .load(std::sync::atomic::Ordering::Acquire) =>
            {
                Err(to_py(CoreError::Closed))
            }
            None => Ok(()),
        }
    }

    /// Makes everything durable, merges segments, stops the flusher.
    ///
    /// `defer_folder_sync`: the final folder fsync of a short recording may be
    /// left to the caller, who gets that folder back and must fsync it before
    /// anything listing the files can be durable (`publish_bytes(after=...)`);
    /// otherwise (and whenever close did it) returns None.
    #[pyo3(signature = (defer_folder_sync=false))]
    fn close(&self, py: Python<'_>, defer_folder_sync: bool) -> PyResult<Option<PathBuf>> {
        let Some(a) = self.active.get() else {
            // Never got a schema: no row was recorded, and no recording was
            // started to hold the events (its files need the row schema).
            let deferred = self.lock_deferred(py).take();
            let dropped = deferred.map_or(0, |d| py.detach(|| d.pending.abandon()));
            self.closed_without_schema
                .store(true, std::sync::atomic::Ordering::Release);
            if dropped > 0 {
                warn_events_not_written(py, "closed", dropped)?;
            }
            return Ok(None);
        };
        // The replacing form publishes after close: nothing is deferred there.
        let defer = defer_folder_sync && self.output_file.is_none();
        let report = py.detach(|| {
            guard_core(|| {
                if defer {
                    a.rec.close_deferring_folder_sync()
                } else {
                    a.rec.close()
                }
            })
        })?;
        let unsynced = report.unsynced_folder.clone();
        if report.replaced {
            // The replacing form: the core moved the complete recording into
            // place before it let go of the claim (a close that failed leaves
            // the old output and the segments for recover).
            self.replaced
                .store(true, std::sync::atomic::Ordering::Release);
        }
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let moved = self.read_layout();
        for (p, rows, bytes) in report.files {
            // Published names as they are after the replacement.
            let p = if Some(&p) == self.layout.final_telemetry.as_ref() {
                moved.final_telemetry.clone().unwrap_or(p)
            } else if Some(&p) == self.layout.final_events.as_ref() {
                moved.final_events.clone().unwrap_or(p)
            } else {
                p
            };
            files.push((p.to_string_lossy().into_owned(), rows, bytes));
        }
        Ok(unsynced)
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
        d.set_item("spool_errors", s.spool_errors)?;
        Ok(d)
    }

    /// Milliseconds since the recorder was made (monotonic): before the
    /// first log() of an inferred schema too, on the clock the recorder then
    /// continues. 0.0 once closed without ever getting a schema.
    fn now_ms(&self, py: Python<'_>) -> f64 {
        if let Some(a) = self.active.get() {
            return a.rec.now_ms();
        }
        let deferred = self.lock_deferred(py);
        match (self.active.get(), deferred.as_ref()) {
            (Some(a), _) => a.rec.now_ms(),
            (None, Some(d)) => d.pending.now_ms(),
            (None, None) => 0.0,
        }
    }

    /// Durable telemetry as an Arrow stream source (re-readable).
    fn to_arrow(&self, py: Python<'_>) -> PyResult<ArrowData> {
        let layout = self.read_layout();
        let schema = self.active.get().map(|a| a.rec.schema().arrow_schema());
        py.detach(|| {
            let parts = flightlog_core::read::read_telemetry(&layout).map_err(to_py)?;
            ArrowData::from_parts(parts, schema)
        })
    }

    /// Durable events as an Arrow stream source.
    fn events_to_arrow(&self, py: Python<'_>) -> PyResult<ArrowData> {
        let layout = self.read_layout();
        py.detach(|| {
            let parts = flightlog_core::read::read_events(&layout).map_err(to_py)?;
            ArrowData::from_parts(parts, Some(flightlog_core::recorder::events_arrow_schema()))
        })
    }
}

fn guard_core<T>(f: impl FnOnce() -> flightlog_core::Result<T>) -> PyResult<T> {
    guard(|| f().map_err(to_py))
}

/// Rows `extend()` converts and pushes at a time: its extra memory is this
/// many rows, whatever the length of the columns.
const EXTEND_CHUNK_ROWS: usize = 16 * 1024;

/// One `extend()` column, checked and ready to be read a chunk at a time.
enum Column<'py> {
    /// A numeric numpy array read in place; `mask` is a masked array's mask
    /// (true: null), present only when some entry is masked.
    Numeric {
        col: NumericColumn<'py>,
        mask: Option<NumericColumn<'py>>,
    },
    /// Converted element by element (strings, objects, sequences), with
    /// validity when some entry is missing.
    Words {
        words: Vec<u64>,
        validity: Option<Vec<bool>>,
    },
}

impl Column<'_> {
    fn len(&self) -> usize {
        match self {
            Column::Numeric { col, .. } => col.len(),
            Column::Words { words, .. } => words.len(),
        }
    }
}

/// True for pandas' missing-value marker `pd.NA` (recognised without
/// importing pandas): a missing entry, like None.
fn is_pandas_na(value: &Bound<'_, PyAny>) -> bool {
    let ty = value.get_type();
    ty.name()
        .is_ok_and(|n| n.to_str().is_ok_and(|n| n == "NAType"))
        && ty
            .module()
            .is_ok_and(|m| m.to_str().is_ok_and(|m| m.starts_with("pandas")))
}

fn not_a_column(f: &Field, value: &Bound<'_, PyAny>) -> PyResult<PyErr> {
    Ok(PyTypeError::new_err(format!(
        "extend() column '{}' must be a 1-D numpy array or a sequence (list, tuple, \
         pandas Series), got {}",
        f.name,
        value.get_type().name()?
    )))
}

/// Checks one `extend()` column and makes it readable by chunks: numeric
/// numpy arrays (and pandas columns backed by one) in place, anything else
/// converted element by element. Masked entries (numpy masked arrays) and
/// missing ones (None, `pd.NA`) are nulls, or an error for a non-nullable field.
fn column_source<'py>(
    a: &Active,
    field: usize,
    value: &Bound<'py, PyAny>,
) -> PyResult<Column<'py>> {
    let f = &a.rec.schema().fields[field];
    let py = value.py();
    let mut value = value.clone();
    if value.cast::<PyUntypedArray>().is_err() {
        if value.is_instance_of::<PyString>()
            || value.is_instance_of::<pyo3::types::PyBytes>()
            || value.is_instance_of::<PyDict>()
            || value.is_instance_of::<pyo3::types::PySet>()
            || value.is_instance_of::<pyo3::types::PyFrozenSet>()
            || !value.hasattr("__len__")?
        {
            return Err(not_a_column(f, &value)?);
        }
        let abc = py.import("collections.abc")?;
        if value.is_instance(&abc.getattr("Mapping")?)?
            || value.is_instance(&abc.getattr("Set")?)?
        {
            return Err(not_a_column(f, &value)?);
        }
        // A pandas Series or Index over a numpy array: that array, no copy.
        if !value.is_instance_of::<PyList>() && !value.is_instance_of::<PyTuple>() {
            if let Ok(dt) = value.getattr("dtype") {
                if dt.cast::<numpy::PyArrayDescr>().is_ok() && value.hasattr("__array__")? {
                    value = py.import("numpy")?.call_method1("asarray", (&value,))?;
                }
            }
        }
    }
    if let Ok(array) = value.cast::<PyUntypedArray>() {
        if array.ndim() != 1 {
            return Err(PyValueError::new_err(format!(
                "extend() column '{}' must be 1-D, got an array of shape {:?}",
                f.name,
                array.shape()
            )));
        }
        if let Some(col) = crate::columns::numeric_column(&f.name, &f.dtype, array)? {
            let mask = masked_entries(f, &value)?;
            return Ok(Column::Numeric { col, mask });
        }
        // Object, string or other arrays: convert element by element below
        // (a masked array's `tolist()` gives None for its masked entries).
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
        if item.is_none() || is_pandas_na(&item) {
            if !f.nullable {
                return Err(PyTypeError::new_err(format!(
                    "field '{}' is not nullable, got {} at row {i}",
                    f.name,
                    if item.is_none() { "None" } else { "pd.NA" }
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
    if words.len() != len {
        return Err(PyValueError::new_err(format!(
            "extend() column '{}' has {len} rows by len() but yielded {}",
            f.name,
            words.len()
        )));
    }
    Ok(Column::Words { words, validity })
}

/// The mask of a numpy masked array when some entry is masked (an error for a
/// non-nullable field); None for plain arrays and masks with nothing set.
fn masked_entries<'py>(
    f: &Field,
    value: &Bound<'py, PyAny>,
) -> PyResult<Option<NumericColumn<'py>>> {
    // Only a masked array has `_mask`; plain arrays pay one attribute miss.
    if !value.hasattr("_mask")? {
        return Ok(None);
    }
    let py = value.py();
    let ma = py.import("numpy.ma")?;
    if !value.is_instance(&ma.getattr("MaskedArray")?)? {
        return Ok(None);
    }
    let mask = ma.call_method1("getmaskarray", (value,))?;
    let mask = mask.cast_into::<PyUntypedArray>()?;
    let Some(mask) = crate::columns::bool_column(&mask) else {
        return Err(PyValueError::new_err(format!(
            "extend() column '{}': the mask of the masked array is not a 1-D bool array",
            f.name
        )));
    };
    match mask.first_set() {
        None => Ok(None),
        Some(i) if !f.nullable => Err(PyTypeError::new_err(format!(
            "field '{}' is not nullable, got a masked entry at row {i}",
            f.name
        ))),
        Some(_) => Ok(Some(mask)),
    }
}
