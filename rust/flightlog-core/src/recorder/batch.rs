//! Rows into Arrow batches: the rows a flusher drained and not yet wrote
//! ([`Pending`]), the telemetry batch built from them, and the same for rows
//! salvaged from a dead recorder's spool.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, BooleanArray, DictionaryArray, Float32Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray,
};
use arrow_buffer::{NullBuffer, ScalarBuffer};
use arrow_schema::{DataType, SchemaRef};

use super::config::{constant_from_json, RecorderConfig};
use super::events::{build_events_batch, EventRow};
use super::Shared;
use crate::dict::Dictionary;
use crate::error::{CoreError, Result};
use crate::parquet_io::{self, Codec};
use crate::row_layout::RowLayout;
use crate::schema::{DType, Schema, Value};
use crate::spool;

/// Rows drained from the ring and not yet in a published segment.
pub(super) struct Pending {
    pub(super) columns: Vec<Vec<u64>>,
    pub(super) validity: Vec<Vec<bool>>,
    pub(super) rows: usize,
    /// Ring positions the rows came from, per lane: [start, end).
    pub(super) cover: Cover,
}

/// Ring positions per lane, [start, end): what a batch or segment holds.
pub(super) type Cover = BTreeMap<usize, (u64, u64)>;

pub(super) fn extend_cover(cover: &mut Cover, lane: usize, start: u64, end: u64) {
    let e = cover.entry(lane).or_insert((start, end));
    e.0 = e.0.min(start);
    e.1 = e.1.max(end);
}

impl Pending {
    pub(super) fn new(stored: usize, with_validity: bool) -> Self {
        Pending {
            columns: vec![Vec::new(); stored],
            validity: if with_validity {
                vec![Vec::new(); stored]
            } else {
                Vec::new()
            },
            rows: 0,
            cover: Cover::new(),
        }
    }

    /// Room for `n` more rows. A column that must grow takes room for `cap`
    /// rows at once (the segment it fills: a batch takes the columns, so each
    /// segment starts from empty ones): growing by doubling from empty copied
    /// every column about eighteen times a segment, into freshly faulted pages.
    pub(super) fn reserve(&mut self, n: usize, cap: usize) {
        let want = (self.rows + n).max(cap);
        for col in &mut self.columns {
            if col.capacity() < self.rows + n {
                col.reserve_exact(want - col.len());
            }
        }
        for v in &mut self.validity {
            if v.capacity() < self.rows + n {
                v.reserve_exact(want - v.len());
            }
        }
    }
}

pub(super) fn telemetry_props(
    shared: &Shared,
    extra: Vec<(String, String)>,
) -> parquet::file::properties::WriterProperties {
    let dict_cols: Vec<&str> = shared
        .schema
        .fields
        .iter()
        .filter(|f| f.dtype.is_dictionary())
        .map(|f| f.name.as_str())
        .collect();
    parquet_io::writer_properties(
        &dict_cols,
        shared.config.compression,
        shared.config.segment_rows,
        parquet_io::key_values(shared.file_kv.iter().cloned().chain(extra)),
    )
}

/// Builds a telemetry batch of `pending`'s rows (which it leaves empty).
pub(super) fn batch_from_rows(
    schema: &Schema,
    arrow_schema: &SchemaRef,
    row_layout: &RowLayout,
    dictionaries: &[Option<Dictionary>],
    constants: &[Option<Value>],
    pending: &mut Pending,
) -> Result<RecordBatch> {
    let n = pending.rows;
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields.len());
    for (i, field) in schema.fields.iter().enumerate() {
        let array: ArrayRef = match row_layout.slot_of_field(i) {
            None => constant_array(
                &field.dtype,
                constants[i].as_ref().expect("constant field has a value"),
                n,
            ),
            Some(slot) => {
                let words = std::mem::take(&mut pending.columns[slot]);
                let nulls = pending
                    .validity
                    .get_mut(slot)
                    .map(std::mem::take)
                    .filter(|v| v.iter().any(|ok| !ok))
                    .map(NullBuffer::from);
                column_array(&field.dtype, words, nulls, dictionaries[i].as_ref())?
            }
        };
        columns.push(array);
    }
    for v in &mut pending.validity {
        v.clear();
    }
    pending.rows = 0;
    Ok(RecordBatch::try_new(Arc::clone(arrow_schema), columns)?)
}

/// Rows and events a dead recorder's spool held beyond its published
/// segments, as batches ready to publish (see [`crate::spool::salvage`]).
pub(crate) struct SalvagedBatches {
    pub(crate) telemetry: Option<RecordBatch>,
    pub(crate) events: Option<RecordBatch>,
    pub(crate) arrow_schema: SchemaRef,
    pub(crate) file_kv: Vec<(String, String)>,
}

/// Turns salvaged spool contents back into batches, with the schema,
/// constants and strings the spool recorded.
pub(crate) fn salvaged_batches(s: &spool::Salvaged) -> Result<Option<SalvagedBatches>> {
    let Some(meta) = &s.meta else {
        return Ok(None);
    };
    if meta.events_only() {
        // A recorder killed before its first row gave it a schema: its events.
        return Ok(Some(SalvagedBatches {
            telemetry: None,
            events: salvaged_events(s, meta)?,
            arrow_schema: Arc::new(arrow_schema::Schema::empty()),
            file_kv: meta.file_kv.clone(),
        }));
    }
    let schema = Schema::from_json(&meta.schema_json)?;
    let mut constants: Vec<Option<Value>> = vec![None; schema.fields.len()];
    let mut constant_idx = Vec::new();
    for (name, v) in &meta.constants {
        if let (Some(i), Some(value)) = (schema.index_of(name), constant_from_json(v)) {
            constants[i] = Some(value);
            constant_idx.push(i);
        }
    }
    let row_layout = RowLayout::new(&schema, &constant_idx);
    if row_layout.width() != meta.width {
        return Err(CoreError::write(format!(
            "the spool's rows are {} words wide, its schema makes {}: not salvaged",
            meta.width,
            row_layout.width()
        )));
    }
    let dictionaries: Vec<Option<Dictionary>> = schema
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| match &f.dtype {
            DType::Str => Some(Dictionary::from_codes(
                &f.name,
                s.strings.get(&i).map(Vec::as_slice).unwrap_or(&[]),
            )),
            DType::Enum(v) => Some(Dictionary::fixed(&f.name, v)),
            _ => None,
        })
        .collect();
    let arrow_schema = schema.arrow_schema();
    let telemetry = if s.rows.is_empty() {
        None
    } else {
        let mut pending = Pending::new(row_layout.stored_len(), row_layout.has_validity());
        for row in &s.rows {
            for (slot, col) in pending.columns.iter_mut().enumerate() {
                col.push(row[slot]);
            }
            for (slot, v) in pending.validity.iter_mut().enumerate() {
                v.push(row_layout.is_valid(row, slot));
            }
        }
        pending.rows = s.rows.len();
        Some(batch_from_rows(
            &schema,
            &arrow_schema,
            &row_layout,
            &dictionaries,
            &constants,
            &mut pending,
        )?)
    };
    Ok(Some(SalvagedBatches {
        telemetry,
        events: salvaged_events(s, meta)?,
        arrow_schema,
        file_kv: meta.file_kv.clone(),
    }))
}

/// The salvaged events as one batch (None without any).
fn salvaged_events(s: &spool::Salvaged, meta: &spool::SpoolMeta) -> Result<Option<RecordBatch>> {
    if s.events.is_empty() {
        return Ok(None);
    }
    let rows: Vec<EventRow> = s
        .events
        .iter()
        .map(|e| EventRow {
            t_wall_ms: e.t_wall_ms,
            iter: e.iter,
            name: e.name.clone(),
            payload: e.payload.clone(),
        })
        .collect();
    Ok(Some(build_events_batch(meta.run_id.as_deref(), &rows)?))
}

/// Writer properties of a salvaged segment: the recording's metadata plus `extra`.
pub(crate) fn salvage_props(
    arrow_schema: &SchemaRef,
    file_kv: &[(String, String)],
    extra: Vec<(String, String)>,
    events: bool,
) -> parquet::file::properties::WriterProperties {
    let dict_cols: Vec<&str> = if events {
        vec!["run_id", "event"]
    } else {
        arrow_schema
            .fields()
            .iter()
            .filter(|f| matches!(f.data_type(), DataType::Dictionary(_, _)))
            .map(|f| f.name().as_str())
            .collect()
    };
    parquet_io::writer_properties(
        &dict_cols,
        Codec::Zstd,
        RecorderConfig::DEFAULT_SEGMENT_ROWS,
        parquet_io::key_values(file_kv.iter().cloned().chain(extra)),
    )
}

fn column_array(
    dtype: &DType,
    words: Vec<u64>,
    nulls: Option<NullBuffer>,
    dictionary: Option<&Dictionary>,
) -> Result<ArrayRef> {
    Ok(match dtype {
        DType::F64 => {
            // Zero-copy: the words are the f64 bit patterns, so the buffer is
            // reinterpreted, not converted (NaN payloads and -0.0 survive).
            let buffer = arrow_buffer::Buffer::from_vec(words);
            let len = buffer.len() / 8;
            Arc::new(Float64Array::new(ScalarBuffer::new(buffer, 0, len), nulls))
        }
        DType::I64 => {
            let buffer = arrow_buffer::Buffer::from_vec(words);
            let len = buffer.len() / 8;
            Arc::new(Int64Array::new(ScalarBuffer::new(buffer, 0, len), nulls))
        }
        DType::F32 => {
            let values: Vec<f32> = words.iter().map(|&w| f32::from_bits(w as u32)).collect();
            Arc::new(Float32Array::new(values.into(), nulls))
        }
        DType::Bool => {
            let values: Vec<bool> = words.iter().map(|&w| w != 0).collect();
            Arc::new(BooleanArray::new(values.into(), nulls))
        }
        DType::Str | DType::Enum(_) => {
            let dictionary = dictionary.expect("dictionary fields have a dictionary");
            let keys: Vec<i32> = words.iter().map(|&w| w as i32).collect();
            let keys = Int32Array::new(keys.into(), nulls);
            let values: Arc<StringArray> = Arc::new(dictionary.values());
            Arc::new(DictionaryArray::<Int32Type>::try_new(keys, values)?)
        }
    })
}

fn constant_array(dtype: &DType, value: &Value, n: usize) -> ArrayRef {
    match (dtype, value) {
        (DType::F64, Value::F64(v)) => Arc::new(Float64Array::from(vec![*v; n])),
        (DType::F32, Value::F64(v)) => Arc::new(Float32Array::from(vec![*v as f32; n])),
        (DType::I64, Value::I64(v)) => Arc::new(Int64Array::from(vec![*v; n])),
        (DType::Bool, Value::Bool(v)) => Arc::new(BooleanArray::from(vec![*v; n])),
        (DType::Str | DType::Enum(_), Value::Str(s)) => {
            let keys = Int32Array::from(vec![0; n]);
            let values = Arc::new(StringArray::from(vec![s.as_str()]));
            Arc::new(
                DictionaryArray::<Int32Type>::try_new(keys, values)
                    .expect("code 0 indexes a one-value dictionary"),
            )
        }
        _ => unreachable!("constants are checked against their field at construction"),
    }
}
