//! Rows into Arrow batches: the telemetry batch built from the word columns
//! of drained rows ([`super::chunks`]), and the same for rows salvaged from a
//! dead recorder's spool.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, BooleanArray, DictionaryArray, Float32Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray,
};
use arrow_buffer::{BooleanBuffer, Buffer, NullBuffer, ScalarBuffer};
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

/// Ring positions per lane, [start, end): what a batch or segment holds.
pub(super) type Cover = BTreeMap<usize, (u64, u64)>;

pub(super) fn extend_cover(cover: &mut Cover, lane: usize, start: u64, end: u64) {
    let e = cover.entry(lane).or_insert((start, end));
    e.0 = e.0.min(start);
    e.1 = e.1.max(end);
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

/// The values of each dictionary field (None for the others), taken once for
/// all the batches built together: every row in them was published after its
/// code was handed out, so this snapshot holds every code they use.
pub(super) fn dictionary_values(
    dictionaries: &[Option<Dictionary>],
) -> Vec<Option<Arc<StringArray>>> {
    dictionaries
        .iter()
        .map(|d| d.as_ref().map(|d| Arc::new(d.values())))
        .collect()
}

/// Builds a telemetry batch of `rows` rows from their word columns (`words[w]`
/// holds word `w` of every row: a chunk's columns lent as they lie, or a
/// salvage's), with the dictionaries' values of [`dictionary_values`].
/// `f64` and `i64` columns are the words' buffers themselves; the others are
/// converted, and validity words become null buffers.
pub(super) fn batch_of_words(
    schema: &Schema,
    arrow_schema: &SchemaRef,
    row_layout: &RowLayout,
    dictionaries: &[Option<Arc<StringArray>>],
    constants: &[Option<Value>],
    words: &[Buffer],
    rows: usize,
) -> Result<RecordBatch> {
    debug_assert_eq!(words.len(), row_layout.width());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields.len());
    for (i, field) in schema.fields.iter().enumerate() {
        let array: ArrayRef = match row_layout.slot_of_field(i) {
            None => constant_array(
                &field.dtype,
                constants[i].as_ref().expect("constant field has a value"),
                rows,
            ),
            Some(slot) => {
                let nulls = row_layout.validity_of(slot).and_then(|(word, bit)| {
                    let flags: &[u64] = words[word].typed_data();
                    let valid = BooleanBuffer::collect_bool(rows, |r| flags[r] & bit != 0);
                    Some(NullBuffer::new(valid)).filter(|n| n.null_count() > 0)
                });
                column_array(
                    &field.dtype,
                    &words[slot],
                    rows,
                    nulls,
                    dictionaries[i].as_ref(),
                )?
            }
        };
        columns.push(array);
    }
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
        let words: Vec<Buffer> = (0..row_layout.width())
            .map(|w| Buffer::from_vec(s.rows.iter().map(|row| row[w]).collect::<Vec<u64>>()))
            .collect();
        Some(batch_of_words(
            &schema,
            &arrow_schema,
            &row_layout,
            &dictionary_values(&dictionaries),
            &constants,
            &words,
            s.rows.len(),
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

/// The array of a column's words, and the words back when the array is a
/// conversion of them (not the words themselves).
fn column_array(
    dtype: &DType,
    words: &Buffer,
    rows: usize,
    nulls: Option<NullBuffer>,
    dictionary: Option<&Arc<StringArray>>,
) -> Result<ArrayRef> {
    let values = || -> &[u64] { &words.typed_data::<u64>()[..rows] };
    Ok(match dtype {
        // No copy: the words are the f64 bit patterns (and i64 values), so
        // the buffer is reinterpreted, not converted (NaN payloads and -0.0
        // survive).
        DType::F64 => Arc::new(Float64Array::new(
            ScalarBuffer::new(words.clone(), 0, rows),
            nulls,
        )),
        DType::I64 => Arc::new(Int64Array::new(
            ScalarBuffer::new(words.clone(), 0, rows),
            nulls,
        )),
        DType::F32 => {
            let v: Vec<f32> = values().iter().map(|&w| f32::from_bits(w as u32)).collect();
            Arc::new(Float32Array::new(v.into(), nulls))
        }
        DType::Bool => {
            let v = BooleanBuffer::collect_bool(rows, |r| values()[r] != 0);
            Arc::new(BooleanArray::new(v, nulls))
        }
        DType::Str | DType::Enum(_) => {
            let dictionary = Arc::clone(dictionary.expect("dictionary fields have a dictionary"));
            let keys: Vec<i32> = values().iter().map(|&w| w as i32).collect();
            let keys = Int32Array::new(keys.into(), nulls);
            Arc::new(DictionaryArray::<Int32Type>::try_new(keys, dictionary)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Field;
    use arrow_array::Array;

    /// `iter` (i64), `x` (nullable f64), `on` (bool), `k` (enum), `y` (f32):
    /// word columns taken as they are, converted ones, and validity words.
    #[test]
    fn word_columns_become_typed_columns_with_their_nulls() {
        let schema = Schema::new(
            vec![
                Field::new("iter", DType::I64),
                Field::new("x", DType::F64).nullable(),
                Field::new("on", DType::Bool),
                Field::new("k", DType::Enum(vec!["A".into(), "B".into()])),
                Field::new("y", DType::F32),
            ],
            1,
        )
        .unwrap();
        let arrow = schema.arrow_schema();
        let layout = RowLayout::new(&schema, &[]);
        let n = 6usize;
        let mut rows: Vec<Vec<u64>> = Vec::new();
        for r in 0..n as u64 {
            let mut row = layout.new_row();
            row[0] = r;
            row[1] = (r as f64 / 2.0).to_bits();
            row[2] = r % 2;
            row[3] = r % 2;
            row[4] = crate::row_layout::f32_word(r as f32 + 0.5);
            if r % 5 == 0 {
                layout.set_null(&mut row, 1);
            }
            rows.push(row);
        }
        let words: Vec<Buffer> = (0..layout.width())
            .map(|w| Buffer::from_vec(rows.iter().map(|row| row[w]).collect::<Vec<u64>>()))
            .collect();
        let dict = Dictionary::fixed("k", &["A".to_string(), "B".to_string()]);
        let dictionaries = dictionary_values(&[None, None, None, Some(dict), None]);
        let batch = batch_of_words(
            &schema,
            &arrow,
            &layout,
            &dictionaries,
            &[None, None, None, None, None],
            &words,
            n,
        )
        .unwrap();
        let iter = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(iter.values().to_vec(), (0..n as i64).collect::<Vec<_>>());
        assert_eq!(
            iter.values().inner().as_ptr(),
            words[0].as_ptr(),
            "i64 words are taken as they are"
        );
        let x = batch
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(x.null_count(), 2, "rows 0 and 5");
        assert!(x.is_null(0) && x.is_null(5));
        assert_eq!(x.value(3), 1.5);
        let on = batch
            .column(2)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .unwrap();
        assert!(on.value(1) && !on.value(0));
        assert_eq!(on.null_count(), 0);
        let k = batch
            .column(3)
            .as_any()
            .downcast_ref::<DictionaryArray<Int32Type>>()
            .unwrap();
        assert_eq!(k.keys().values().to_vec(), [0, 1, 0, 1, 0, 1]);
        let y = batch
            .column(4)
            .as_any()
            .downcast_ref::<Float32Array>()
            .unwrap();
        assert_eq!(y.value(2), 2.5);
    }
}
