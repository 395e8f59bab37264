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

/// Rows a [`Pending`] chunk holds at most: 128 KiB a column of words.
///
/// Pending rows are kept in chunks, each written as its own batch, so that a
/// written segment's columns come back to the flusher a chunk at a time and
/// are filled again (see [`Pending::recycle`]). Fresh columns are faulted in
/// page by page, zeroed by the kernel: at full rate that was a sixth of the
/// flusher's time. Recycled in chunks, the columns in use stay at about a
/// segment and the quarter segment drained while it is written, as before.
pub(super) const CHUNK_ROWS: usize = 16 * 1024;

/// Most memory kept in spare columns: a recording of wide rows or huge
/// segments refills part of its columns and allocates the rest, rather than
/// holding that much after a burst. The defaults (10 columns, 256k-row
/// segments) keep about 26 MiB.
const MAX_SPARE_BYTES: usize = 64 << 20;

/// Rows drained from the rings and not yet in a published segment, in chunks
/// of at most [`CHUNK_ROWS`] (fewer when segments are smaller).
pub(super) struct Pending {
    /// Chunks in drain order; only the last one has room.
    chunks: Vec<Chunk>,
    /// Columns of written batches, emptied, for the chunks to come.
    spare_words: Vec<Vec<u64>>,
    spare_validity: Vec<Vec<bool>>,
    stored: usize,
    with_validity: bool,
    chunk_rows: usize,
    /// Most spare columns kept: the chunks of a segment and a quarter, within
    /// [`MAX_SPARE_BYTES`].
    max_spare: usize,
    /// Rows in all chunks.
    pub(super) rows: usize,
}

/// Rows of one chunk, column by column (word slots and validity flags), and
/// the ring positions they came from.
pub(super) struct Chunk {
    pub(super) columns: Vec<Vec<u64>>,
    pub(super) validity: Vec<Vec<bool>>,
    pub(super) rows: usize,
    pub(super) cover: Cover,
}

/// Ring positions per lane, [start, end): what a batch or segment holds.
pub(super) type Cover = BTreeMap<usize, (u64, u64)>;

pub(super) fn extend_cover(cover: &mut Cover, lane: usize, start: u64, end: u64) {
    let e = cover.entry(lane).or_insert((start, end));
    e.0 = e.0.min(start);
    e.1 = e.1.max(end);
}

impl Chunk {
    /// A chunk of `rows` rows given row by row (a salvage's).
    pub(super) fn of_rows(stored: usize, with_validity: bool, rows: usize) -> Chunk {
        Chunk {
            columns: (0..stored).map(|_| Vec::with_capacity(rows)).collect(),
            validity: if with_validity {
                (0..stored).map(|_| Vec::with_capacity(rows)).collect()
            } else {
                Vec::new()
            },
            rows: 0,
            cover: Cover::new(),
        }
    }
}

impl Pending {
    /// Pending rows of `stored` word slots (and as many validity flags if
    /// `with_validity`), for segments of `segment_rows`.
    pub(super) fn new(stored: usize, with_validity: bool, segment_rows: usize) -> Self {
        let chunk_rows = segment_rows.clamp(1, CHUNK_ROWS);
        let chunks_kept = (segment_rows + segment_rows / 4).div_ceil(chunk_rows) + 1;
        let columns_in_budget = MAX_SPARE_BYTES / (chunk_rows * 8);
        Pending {
            chunks: Vec::new(),
            spare_words: Vec::new(),
            spare_validity: Vec::new(),
            stored,
            with_validity,
            chunk_rows,
            max_spare: (chunks_kept * stored).min(columns_in_budget),
            rows: 0,
        }
    }

    /// The chunk that takes the next rows, and how many it has room for
    /// (at least one): a new chunk, of recycled columns when there are, once
    /// the last one is full.
    pub(super) fn chunk_with_room(&mut self) -> (&mut Chunk, usize) {
        let full = self.chunks.last().is_none_or(|c| c.rows == self.chunk_rows);
        if full {
            let rows = self.chunk_rows;
            let mut words = || {
                self.spare_words
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(rows))
            };
            let columns = (0..self.stored).map(|_| words()).collect();
            let validity = if self.with_validity {
                (0..self.stored)
                    .map(|_| {
                        self.spare_validity
                            .pop()
                            .unwrap_or_else(|| Vec::with_capacity(rows))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            self.chunks.push(Chunk {
                columns,
                validity,
                rows: 0,
                cover: Cover::new(),
            });
        }
        let room = self.chunk_rows;
        let chunk = self.chunks.last_mut().expect("pushed above if none");
        let left = room - chunk.rows;
        (chunk, left)
    }

    /// Counts `n` rows just added to the last chunk, from `lane`'s ring
    /// positions `start..start + n`.
    pub(super) fn added(&mut self, lane: usize, start: u64, n: usize) {
        let chunk = self.chunks.last_mut().expect("rows go into a chunk");
        chunk.rows += n;
        extend_cover(&mut chunk.cover, lane, start, start + n as u64);
        self.rows += n;
    }

    /// Takes every chunk (leaving none), in drain order. Their rows stay
    /// counted in [`Pending::rows`] until [`Pending::built`] (or
    /// [`Pending::clear`]): a batch build that panics leaves them counted as
    /// not written, not gone.
    ///
    /// A chunk less than a quarter full gives its columns' room back first:
    /// it may wait long for a disk that refuses writes, and a full chunk's
    /// room (128 KiB a column) for a few rows a flush would bound the rows
    /// kept then, not the memory.
    pub(super) fn take_chunks(&mut self) -> Vec<Chunk> {
        let mut chunks = std::mem::take(&mut self.chunks);
        for chunk in &mut chunks {
            if chunk.rows < self.chunk_rows / 4 {
                chunk.columns.iter_mut().for_each(Vec::shrink_to_fit);
                chunk.validity.iter_mut().for_each(Vec::shrink_to_fit);
            }
        }
        chunks
    }

    /// The chunks taken are built into batches: their rows are no longer
    /// pending.
    pub(super) fn built(&mut self) {
        self.rows = 0;
    }

    /// Drops every pending row (a batch that could not be built; they are
    /// counted as lost by the caller).
    pub(super) fn clear(&mut self) {
        self.chunks.clear();
        self.rows = 0;
    }

    /// Takes back the `f64` and `i64` columns of a written batch (built by
    /// [`batch_of_chunk`] from this recorder's chunks) for the chunks to
    /// come; the other columns' words were taken back when the batch was
    /// built. A column still shared (a clone or slice of the batch alive)
    /// cannot be taken (`Buffer::into_vec` refuses), nor one of another
    /// capacity than a chunk's ([`Pending::spare`]): both are dropped.
    pub(super) fn recycle(&mut self, batch: RecordBatch) {
        let (_, columns, _) = batch.into_parts();
        for column in columns {
            if self.spare_words.len() >= self.max_spare {
                return;
            }
            let values = if let Some(a) = column.as_any().downcast_ref::<Float64Array>() {
                a.values().inner().clone()
            } else if let Some(a) = column.as_any().downcast_ref::<Int64Array>() {
                a.values().inner().clone()
            } else {
                continue;
            };
            drop(column);
            if let Ok(words) = values.into_vec::<u64>() {
                self.spare(words, None);
            }
        }
    }

    /// Keeps a chunk's emptied column (and validity flags) for reuse.
    fn spare(&mut self, mut words: Vec<u64>, validity: Option<Vec<bool>>) {
        if words.capacity() == self.chunk_rows && self.spare_words.len() < self.max_spare {
            words.clear();
            self.spare_words.push(words);
        }
        if let Some(mut v) = validity {
            if v.capacity() == self.chunk_rows && self.spare_validity.len() < self.max_spare {
                v.clear();
                self.spare_validity.push(v);
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

/// Builds a telemetry batch of `chunk`'s rows, with the dictionaries' values
/// of [`dictionary_values`]. Word columns that the batch does not take as
/// they are (converted, or validity flags) go back to `pending`'s spares when
/// there is one.
pub(super) fn batch_of_chunk(
    schema: &Schema,
    arrow_schema: &SchemaRef,
    row_layout: &RowLayout,
    dictionaries: &[Option<Arc<StringArray>>],
    constants: &[Option<Value>],
    chunk: Chunk,
    mut pending: Option<&mut Pending>,
) -> Result<RecordBatch> {
    let n = chunk.rows;
    let mut words_of = chunk.columns.into_iter().map(Some).collect::<Vec<_>>();
    let mut validity_of = chunk.validity.into_iter().map(Some).collect::<Vec<_>>();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields.len());
    for (i, field) in schema.fields.iter().enumerate() {
        let array: ArrayRef = match row_layout.slot_of_field(i) {
            None => constant_array(
                &field.dtype,
                constants[i].as_ref().expect("constant field has a value"),
                n,
            ),
            Some(slot) => {
                let words = words_of[slot].take().expect("a slot is one field's");
                let flags = validity_of.get_mut(slot).and_then(Option::take);
                let nulls = flags
                    .as_ref()
                    .filter(|v| v.iter().any(|ok| !ok))
                    .map(|v| NullBuffer::from(v.as_slice()));
                let (array, unused) =
                    column_array(&field.dtype, words, nulls, dictionaries[i].as_ref())?;
                if let Some(p) = pending.as_deref_mut() {
                    match unused {
                        Some(words) => p.spare(words, flags),
                        None => {
                            if let Some(v) = flags {
                                p.spare(Vec::new(), Some(v));
                            }
                        }
                    }
                }
                array
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
        let mut chunk = Chunk::of_rows(
            row_layout.stored_len(),
            row_layout.has_validity(),
            s.rows.len(),
        );
        for row in &s.rows {
            for (slot, col) in chunk.columns.iter_mut().enumerate() {
                col.push(row[slot]);
            }
            for (slot, v) in chunk.validity.iter_mut().enumerate() {
                v.push(row_layout.is_valid(row, slot));
            }
        }
        chunk.rows = s.rows.len();
        Some(batch_of_chunk(
            &schema,
            &arrow_schema,
            &row_layout,
            &dictionary_values(&dictionaries),
            &constants,
            chunk,
            None,
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
    words: Vec<u64>,
    nulls: Option<NullBuffer>,
    dictionary: Option<&Arc<StringArray>>,
) -> Result<(ArrayRef, Option<Vec<u64>>)> {
    Ok(match dtype {
        DType::F64 => {
            // Zero-copy: the words are the f64 bit patterns, so the buffer is
            // reinterpreted, not converted (NaN payloads and -0.0 survive).
            let buffer = arrow_buffer::Buffer::from_vec(words);
            let len = buffer.len() / 8;
            let array = Float64Array::new(ScalarBuffer::new(buffer, 0, len), nulls);
            (Arc::new(array), None)
        }
        DType::I64 => {
            let buffer = arrow_buffer::Buffer::from_vec(words);
            let len = buffer.len() / 8;
            let array = Int64Array::new(ScalarBuffer::new(buffer, 0, len), nulls);
            (Arc::new(array), None)
        }
        DType::F32 => {
            let values: Vec<f32> = words.iter().map(|&w| f32::from_bits(w as u32)).collect();
            (
                Arc::new(Float32Array::new(values.into(), nulls)),
                Some(words),
            )
        }
        DType::Bool => {
            let values: Vec<bool> = words.iter().map(|&w| w != 0).collect();
            (
                Arc::new(BooleanArray::new(values.into(), nulls)),
                Some(words),
            )
        }
        DType::Str | DType::Enum(_) => {
            let values = Arc::clone(dictionary.expect("dictionary fields have a dictionary"));
            let keys: Vec<i32> = words.iter().map(|&w| w as i32).collect();
            let keys = Int32Array::new(keys.into(), nulls);
            let array = DictionaryArray::<Int32Type>::try_new(keys, values)?;
            (Arc::new(array), Some(words))
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

    /// `iter` (i64), `x` (nullable f64), `on` (bool): two word columns taken
    /// as they are, one converted, and validity flags.
    fn layout() -> (Schema, SchemaRef, RowLayout) {
        let schema = Schema::new(
            vec![
                Field::new("iter", DType::I64),
                Field::new("x", DType::F64).nullable(),
                Field::new("on", DType::Bool),
            ],
            1,
        )
        .unwrap();
        let arrow = schema.arrow_schema();
        let rows = RowLayout::new(&schema, &[]);
        (schema, arrow, rows)
    }

    /// Adds rows `start..start + n` of lane `lane` as a drain does: row `k`
    /// holds `k`, `k / 2` (null when `k % 5 == 0`) and `k % 2 == 1`.
    fn add_rows(pending: &mut Pending, lane: usize, start: u64, n: usize) {
        let mut k = start;
        while k < start + n as u64 {
            let (chunk, room) = pending.chunk_with_room();
            let take = room.min((start + n as u64 - k) as usize);
            for r in k..k + take as u64 {
                chunk.columns[0].push(r);
                chunk.columns[1].push((r as f64 / 2.0).to_bits());
                chunk.columns[2].push(r % 2);
                for (slot, v) in chunk.validity.iter_mut().enumerate() {
                    v.push(slot != 1 || r % 5 != 0);
                }
            }
            pending.added(lane, k, take);
            k += take as u64;
        }
    }

    fn batches(pending: &mut Pending) -> Vec<(RecordBatch, Cover)> {
        let (schema, arrow, rows) = layout();
        let out = pending
            .take_chunks()
            .into_iter()
            .map(|mut chunk| {
                let cover = std::mem::take(&mut chunk.cover);
                let batch = batch_of_chunk(
                    &schema,
                    &arrow,
                    &rows,
                    &[None, None, None],
                    &[None, None, None],
                    chunk,
                    Some(&mut *pending),
                )
                .unwrap();
                (batch, cover)
            })
            .collect();
        pending.built();
        out
    }

    fn values_ptr(batch: &RecordBatch, column: usize) -> *const u8 {
        batch.column(column).to_data().buffers()[0].as_ptr()
    }

    #[test]
    fn rows_are_chunked_in_order_with_each_chunks_positions() {
        let (_, _, rows) = layout();
        let mut pending = Pending::new(rows.stored_len(), rows.has_validity(), 10);
        add_rows(&mut pending, 3, 100, 7);
        add_rows(&mut pending, 5, 0, 18);
        assert_eq!(pending.rows, 25);
        let out = batches(&mut pending);
        assert_eq!(pending.rows, 0);
        let sizes: Vec<usize> = out.iter().map(|(b, _)| b.num_rows()).collect();
        assert_eq!(sizes, [10, 10, 5], "chunks of at most a segment's rows");
        let covers: Vec<Vec<(usize, (u64, u64))>> = out
            .iter()
            .map(|(_, c)| c.iter().map(|(&l, &r)| (l, r)).collect())
            .collect();
        assert_eq!(
            covers,
            [
                vec![(3, (100, 107)), (5, (0, 3))],
                vec![(5, (3, 13))],
                vec![(5, (13, 18))],
            ]
        );
        let iters: Vec<i64> = out
            .iter()
            .flat_map(|(b, _)| {
                let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                a.values().to_vec()
            })
            .collect();
        let want: Vec<i64> = (100..107).chain(0..18).collect();
        assert_eq!(iters, want);
        let x = out[2]
            .0
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        // Rows 13..18 of lane 5: row 15 is null.
        assert_eq!(x.null_count(), 1);
        assert!(x.is_null(2));
        assert_eq!(x.value(1), 7.0);
        let on = out[0]
            .0
            .column(2)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .unwrap();
        assert!(on.value(1) && !on.value(0));
    }

    #[test]
    fn written_columns_are_filled_again_and_shared_ones_are_left_alone() {
        let (_, _, rows) = layout();
        let mut pending = Pending::new(rows.stored_len(), rows.has_validity(), 8);
        add_rows(&mut pending, 0, 0, 16);
        let mut out = batches(&mut pending);
        let (second, _) = out.pop().unwrap();
        let (first, _) = out.pop().unwrap();
        let first_iter = values_ptr(&first, 0);
        // A clone of the second batch is still alive (a write in progress):
        // its columns must not be refilled under it.
        let alive = second.clone();
        pending.recycle(first);
        pending.recycle(second);
        add_rows(&mut pending, 0, 16, 8);
        let out = batches(&mut pending);
        let refilled = &out[0].0;
        let ptrs: Vec<*const u8> = (0..2).map(|c| values_ptr(refilled, c)).collect();
        assert!(
            ptrs.contains(&first_iter),
            "a written chunk's `iter` column was not reused"
        );
        for c in 0..2 {
            assert!(!ptrs.contains(&values_ptr(&alive, c)));
        }
        let kept = alive
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(kept.values().to_vec(), (8..16).collect::<Vec<i64>>());
        let kept_x = alive
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(kept_x.value(1), 4.5);
        assert!(kept_x.is_null(2), "row 10 is null");
        let iters = refilled
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(iters.values().to_vec(), (16..24).collect::<Vec<i64>>());
        // Reused validity flags: rows 16..24, only row 20 null.
        let x = refilled
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(x.null_count(), 1);
        assert!(x.is_null(4));
        assert_eq!(x.value(7), 11.5);
    }

    #[test]
    fn spare_columns_are_bounded_to_about_a_segment_and_a_quarter() {
        // Only columns a written batch gives back (i64, f64), so that the
        // bound is reached by `recycle`, not by building.
        let schema = Schema::new(
            vec![Field::new("iter", DType::I64), Field::new("x", DType::F64)],
            1,
        )
        .unwrap();
        let arrow = schema.arrow_schema();
        let rows = RowLayout::new(&schema, &[]);
        let mut pending = Pending::new(rows.stored_len(), rows.has_validity(), 8);
        // 8-row segments: 10 rows (a segment and a quarter) in 2 chunks, +1.
        assert_eq!(pending.max_spare, 3 * 2);
        for k in 0..20 * 8u64 {
            let (chunk, _) = pending.chunk_with_room();
            chunk.columns[0].push(k);
            chunk.columns[1].push((k as f64).to_bits());
            pending.added(0, k, 1);
        }
        let built: Vec<RecordBatch> = pending
            .take_chunks()
            .into_iter()
            .map(|chunk| {
                batch_of_chunk(
                    &schema,
                    &arrow,
                    &rows,
                    &[None, None],
                    &[None, None],
                    chunk,
                    None,
                )
                .unwrap()
            })
            .collect();
        pending.built();
        assert!(pending.spare_words.is_empty());
        let mut counts = Vec::new();
        for batch in built {
            pending.recycle(batch);
            counts.push(pending.spare_words.len());
        }
        assert_eq!(&counts[..4], [2, 4, 6, 6], "taken back up to the bound");
        assert_eq!(pending.spare_words.len(), pending.max_spare);
    }

    #[test]
    fn a_chunk_built_nearly_empty_gives_its_room_back() {
        let (_, _, rows) = layout();
        let mut pending = Pending::new(rows.stored_len(), rows.has_validity(), 1 << 20);
        add_rows(&mut pending, 0, 0, 3);
        let chunks = pending.take_chunks();
        assert_eq!(pending.rows, 3, "counted until built");
        assert!(chunks[0].columns.iter().all(|c| c.capacity() < 1024));
        pending.built();
        assert_eq!(pending.rows, 0);
    }
}
