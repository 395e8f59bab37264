//! Parquet files: writer settings, atomic segment writing, merging segments by
//! raw column-chunk copy (no re-encoding), and reading back.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{KeyValue, PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::ChunkReader;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use crate::atomic_file;
use crate::error::{CoreError, Result};

/// Metadata key listing the segments a merged file was made from.
pub const SEGMENTS_KEY: &str = "flightlog.segments";
/// Metadata key with the row counts of the merged segments, in order: rows of
/// segment `k` are rows `[sum(counts[..k]), sum(counts[..=k]))` of the merged file.
pub const SEGMENT_ROWS_KEY: &str = "flightlog.segment_rows";
/// Version of flightlog's file conventions.
pub const FORMAT_VERSION: &str = "1";

/// Compression codecs flightlog exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Snappy,
    Zstd,
    Lz4,
}

impl Codec {
    /// Parses `none`, `snappy`, `zstd` or `lz4`.
    pub fn parse(name: &str) -> Result<Codec> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "none" | "uncompressed" => Codec::None,
            "snappy" => Codec::Snappy,
            "zstd" => Codec::Zstd,
            "lz4" | "lz4_raw" => Codec::Lz4,
            other => {
                return Err(CoreError::Config(format!(
                    "compression '{other}' is not supported: use 'none', 'snappy', 'zstd' or 'lz4'"
                )))
            }
        })
    }

    fn parquet(self) -> Compression {
        match self {
            Codec::None => Compression::UNCOMPRESSED,
            Codec::Snappy => Compression::SNAPPY,
            // Level 1: telemetry is written on the hot thread's heels; higher
            // levels cost CPU for a few percent of size.
            Codec::Zstd => Compression::ZSTD(ZstdLevel::default()),
            Codec::Lz4 => Compression::LZ4_RAW,
        }
    }
}

/// Writer properties: dictionary encoding only for the given (string) columns,
/// the codec, row groups of at most `max_row_group_rows`, and `kv` metadata.
pub fn writer_properties(
    dictionary_columns: &[&str],
    codec: Codec,
    max_row_group_rows: usize,
    kv: Vec<KeyValue>,
) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(codec.parquet())
        .set_dictionary_enabled(false)
        .set_max_row_group_row_count(Some(max_row_group_rows.max(1)))
        .set_created_by(format!("flightlog {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(kv));
    for name in dictionary_columns {
        b = b.set_column_dictionary_enabled(ColumnPath::from(*name), true);
    }
    b.build()
}

/// Builds a `KeyValue` list from pairs.
pub fn key_values<K: Into<String>, V: Into<String>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Vec<KeyValue> {
    pairs
        .into_iter()
        .map(|(k, v)| KeyValue::new(k.into(), v.into()))
        .collect()
}

/// Files of fewer rows than this are written uncompressed, whatever codec
/// was asked for. Compressing a column chunk costs a fixed setup (the writer
/// makes a compression and a decompression context per column chunk; zstd's
/// runs `cpuid`, which traps to the hypervisor in a VM) that a chunk of a few
/// hundred values cannot repay: at most 2 KiB a column is left uncompressed.
/// That is a short run's files (issue 13: a tenth of such a run's cost), and
/// the last segment of a run that ended soon after a flush.
pub const SMALL_FILE_ROWS: usize = 256;

/// Writes `batches` (all of `schema`) as one Parquet file into `out`
/// (uncompressed if it holds fewer than [`SMALL_FILE_ROWS`] rows), its
/// columns encoded on up to `threads` threads (see [`encode_threads`]).
pub fn write_batches<W: Write + Send>(
    out: W,
    schema: SchemaRef,
    batches: &[RecordBatch],
    props: WriterProperties,
    threads: usize,
) -> Result<W> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let props = if rows < SMALL_FILE_ROWS {
        props
            .into_builder()
            .set_compression(Compression::UNCOMPRESSED)
            .build()
    } else {
        props
    };
    // One row group (ArrowWriter would split more rows), flat fields (one
    // Parquet column each), enough rows to repay a thread, and two threads.
    let parallel = threads > 1
        && rows >= PARALLEL_ENCODE_MIN_ROWS
        && rows <= props.max_row_group_row_count().unwrap_or(usize::MAX)
        && schema.fields().iter().all(|f| !f.data_type().is_nested());
    let threads = if parallel { encode_threads(threads) } else { 1 };
    let mut writer = ArrowWriter::try_new(out, Arc::clone(&schema), Some(props))?;
    if threads > 1 {
        let (file, factory) = writer.into_serialized_writer()?;
        return write_row_group_in_parallel(file, &factory, &schema, batches, threads);
    }
    for batch in batches {
        writer.write(batch)?;
    }
    Ok(writer.into_inner()?)
}

/// Files of at least this many rows may have their columns encoded on
/// several threads at once: below it, a thread start costs more than the
/// columns' share of the encode.
pub const PARALLEL_ENCODE_MIN_ROWS: usize = 16 * 1024;

/// Most threads that encode one file's columns.
///
/// Encoding (and compressing) a file is most of a recorder's background work.
/// Spread over two threads it takes the same CPU in about half the time,
/// which pays when a core is idle: a producer that records flat out sleeps
/// while its ring is full, and a close or flush waits for the encode. Not
/// more than two: the other cores are the user's computation's.
pub const MAX_ENCODE_THREADS: usize = 2;

/// The threads a write asking for `wanted` gets: at most
/// [`MAX_ENCODE_THREADS`], and not more than the machine has cores.
pub fn encode_threads(wanted: usize) -> usize {
    // Asked once: on Linux each call reads the cgroup's CPU limit anew.
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    wanted.clamp(1, MAX_ENCODE_THREADS).min(cores)
}

/// Writes `batches` as one row group of `file` (an [`ArrowWriter`]'s, so the
/// footer carries the Arrow schema as usual), its columns encoded on
/// `threads` threads: each takes the next column not yet taken, encodes it
/// across all the batches, and keeps the chunk; the chunks are then appended
/// in column order. The file is the one [`ArrowWriter`] writes (same pages,
/// statistics and page index), made faster.
fn write_row_group_in_parallel<W: Write + Send>(
    mut file: SerializedFileWriter<W>,
    factory: &ArrowRowGroupWriterFactory,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    threads: usize,
) -> Result<W> {
    let writers = factory.create_column_writers(0)?;
    // Flat fields only (the caller checks): column k is field k.
    assert_eq!(writers.len(), schema.fields().len(), "one column per field");
    let writers: Vec<Mutex<Option<ArrowColumnWriter>>> =
        writers.into_iter().map(|w| Mutex::new(Some(w))).collect();
    let next = AtomicUsize::new(0);
    let encode_column = |k: usize| -> Result<ArrowColumnChunk> {
        let mut writer = writers[k]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .expect("each column is taken once");
        for batch in batches {
            for leaf in compute_leaves(schema.field(k), batch.column(k))? {
                writer.write(&leaf)?;
            }
        }
        Ok(writer.close()?)
    };
    let encode_columns = || -> Result<Vec<(usize, ArrowColumnChunk)>> {
        let mut done = Vec::new();
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            if k >= writers.len() {
                return Ok(done);
            }
            match encode_column(k) {
                Ok(chunk) => done.push((k, chunk)),
                Err(e) => {
                    // The file fails: the other threads take no new column.
                    next.store(writers.len(), Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
    };
    let mut chunks = std::thread::scope(|scope| -> Result<Vec<(usize, ArrowColumnChunk)>> {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("flightlog-encode".into())
                    .spawn_scoped(scope, encode_columns)
                    .ok()
            })
            .collect();
        // This thread encodes too; with no helper started it encodes them all.
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(encode_columns));
        // Every helper is joined before anything is returned, so that the
        // error or panic reported is a thread's own, not the scope's.
        let theirs: Vec<_> = helpers.into_iter().map(|h| h.join()).collect();
        let mut chunks = mine.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        for joined in theirs {
            chunks.extend(joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?);
        }
        Ok(chunks)
    })?;
    chunks.sort_unstable_by_key(|(k, _)| *k);
    let mut row_group = file.next_row_group()?;
    for (_, chunk) in chunks {
        chunk.append_to_row_group(&mut row_group)?;
    }
    row_group.close()?;
    Ok(file.into_inner()?)
}

/// Writes `batches` (all of `schema`) to a new Parquet file published
/// atomically at `path`, encoded on up to `threads` threads. Returns the file
/// size.
pub fn write_file(
    path: &Path,
    schema: SchemaRef,
    batches: &[RecordBatch],
    props: WriterProperties,
    threads: usize,
) -> Result<u64> {
    atomic_file::publish(path, |out| {
        write_batches(out, schema, batches, props, threads)
    })
}

/// One input of a merge: a name (for provenance), its bytes and its footer.
pub struct MergeInput<R> {
    pub name: String,
    pub reader: R,
    pub metadata: ParquetMetaData,
}

impl<R: ChunkReader> MergeInput<R> {
    /// Reads the footer (with the page index when present) of `reader`.
    pub fn open(name: String, reader: R) -> Result<Self> {
        let metadata = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .parse_and_finish(&reader)
            .map_err(|e| CoreError::write(format!("reading footer of {name}: {e}")))?;
        Ok(MergeInput {
            name,
            reader,
            metadata,
        })
    }
}

/// Writes the inputs (identical schemas) into one Parquet file on `out` by
/// copying their column chunks byte for byte. The key-value metadata of the
/// first input is kept (with `extra_kv` added) so the merged file describes
/// itself like its parts. Returns the writer.
pub fn merge_into<R: ChunkReader, W: Write + Send>(
    out: W,
    inputs: &[MergeInput<R>],
    extra_kv: Vec<KeyValue>,
) -> Result<W> {
    let Some(first) = inputs.first() else {
        return Err(CoreError::Config("nothing to merge".into()));
    };
    let expected = first.metadata.file_metadata().schema();
    for input in &inputs[1..] {
        if input.metadata.file_metadata().schema() != expected {
            return Err(CoreError::write(format!(
                "cannot merge {}: its schema differs from {}",
                input.name, first.name
            )));
        }
    }
    let mut kv: Vec<KeyValue> = first
        .metadata
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|k| !extra_kv.iter().any(|e| e.key == k.key))
        .collect();
    kv.extend(extra_kv);
    let props = Arc::new(
        WriterProperties::builder()
            .set_created_by(format!("flightlog {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(kv))
            .build(),
    );
    let root = first
        .metadata
        .file_metadata()
        .schema_descr()
        .root_schema_ptr();
    let mut writer = SerializedFileWriter::new(out, root, props)?;
    for input in inputs {
        let page_index = input.metadata.page_index();
        for (rg_idx, rg) in input.metadata.row_groups().iter().enumerate() {
            let mut rg_out = writer.next_row_group()?;
            for (col_idx, column) in rg.columns().iter().enumerate() {
                let result = ColumnCloseResult {
                    bytes_written: column.compressed_size() as _,
                    rows_written: rg.num_rows() as _,
                    metadata: column.clone(),
                    bloom_filter: None,
                    column_index: page_index
                        .and_then(|pi| pi.column_index(rg_idx, col_idx))
                        .cloned(),
                    offset_index: page_index
                        .and_then(|pi| pi.offset_index(rg_idx, col_idx))
                        .cloned(),
                };
                rg_out.append_column(&input.reader, result)?;
            }
            rg_out.close()?;
        }
    }
    Ok(writer.into_inner()?)
}

fn open_files(inputs: &[PathBuf]) -> Result<Vec<MergeInput<File>>> {
    inputs
        .iter()
        .map(|path| {
            let file = File::open(path).map_err(|e| CoreError::io("open", path, e))?;
            MergeInput::open(path.display().to_string(), file)
        })
        .collect()
}

/// Merges Parquet files of identical schema into one, published atomically at
/// `out` (see [`merge_into`]). Returns the merged file size.
pub fn merge_files(out: &Path, inputs: &[PathBuf], extra_kv: Vec<KeyValue>) -> Result<u64> {
    let opened = open_files(inputs)?;
    atomic_file::publish(out, |w| merge_into(w, &opened, extra_kv))
}

/// Key-value pairs of a footer.
pub fn key_values_of(metadata: &ParquetMetaData) -> Vec<(String, String)> {
    metadata
        .file_metadata()
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// Segment names a footer lists under [`SEGMENTS_KEY`] (empty if none);
/// `name` is used in the error of a malformed list.
pub fn segments_listed_in(metadata: &ParquetMetaData, name: &str) -> Result<Vec<String>> {
    for (k, v) in key_values_of(metadata) {
        if k == SEGMENTS_KEY {
            return serde_json::from_str(&v)
                .map_err(|e| CoreError::write(format!("{name}: malformed {SEGMENTS_KEY}: {e}")));
        }
    }
    Ok(Vec::new())
}

/// Key-value metadata of a Parquet file.
pub fn read_key_values(path: &Path) -> Result<Vec<(String, String)>> {
    let file = File::open(path).map_err(|e| CoreError::io("open", path, e))?;
    let metadata = ParquetMetaDataReader::new().parse_and_finish(&file)?;
    Ok(key_values_of(&metadata))
}

/// What a footer says of its file: the row count and the key-value metadata.
pub type FooterFacts = (u64, Vec<(String, String)>);

/// Row count and key-value metadata of Parquet files, one footer read each, on a few
/// threads (a consolidation reads tens of thousands of tiny files' footers). Each
/// file's own result, in order; an error names its file.
pub fn read_footers(paths: &[PathBuf]) -> Vec<Result<FooterFacts>> {
    crate::root_scan::on_threads(paths.iter().collect(), |path: &PathBuf| {
        let file = File::open(path).map_err(|e| CoreError::io("open", path, e))?;
        let metadata = ParquetMetaDataReader::new()
            .parse_and_finish(&file)
            .map_err(|e| CoreError::write(format!("{}: {e}", path.display())))?;
        let rows = metadata.file_metadata().num_rows().max(0) as u64;
        Ok((rows, key_values_of(&metadata)))
    })
}

/// Number of rows in a Parquet file (from its footer).
pub fn row_count(path: &Path) -> Result<u64> {
    let file = File::open(path).map_err(|e| CoreError::io("open", path, e))?;
    let metadata = ParquetMetaDataReader::new().parse_and_finish(&file)?;
    Ok(metadata.file_metadata().num_rows().max(0) as u64)
}

/// Segment names a merged file lists in its metadata (empty if none).
pub fn listed_segments(path: &Path) -> Result<Vec<String>> {
    let file = File::open(path).map_err(|e| CoreError::io("open", path, e))?;
    let metadata = ParquetMetaDataReader::new().parse_and_finish(&file)?;
    segments_listed_in(&metadata, &path.display().to_string())
}

/// Reads a whole Parquet file into batches, with its Arrow schema.
pub fn read_file(path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let file = File::open(path).map_err(|e| CoreError::io("open", path, e))?;
    read_batches(file)
}

/// Reads all of a Parquet file's rows from any reader (a file, bytes in memory).
pub fn read_batches<R: ChunkReader + 'static>(reader: R) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(reader)?
        .with_batch_size(64 * 1024)
        .build()?;
    let schema = reader.schema();
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

/// Metadata recording which segments (names and row counts) the merge of
/// `inputs` is made of, so readers can tell which rows came from which
/// segment: [`SEGMENTS_KEY`] and [`SEGMENT_ROWS_KEY`]. An input that is itself a
/// merge contributes the segments it lists (so compacting twice still names
/// every original part). Returns the pairs and the total row count.
pub fn segment_provenance<R>(inputs: &[MergeInput<R>]) -> Result<(Vec<KeyValue>, u64)> {
    let mut names: Vec<String> = Vec::with_capacity(inputs.len());
    let mut counts: Vec<u64> = Vec::with_capacity(inputs.len());
    for input in inputs {
        let rows = input.metadata.file_metadata().num_rows().max(0) as u64;
        let kv = key_values_of(&input.metadata);
        let listed = kv.iter().find(|(k, _)| k == SEGMENTS_KEY);
        let listed_rows = kv.iter().find(|(k, _)| k == SEGMENT_ROWS_KEY);
        if let (Some((_, n)), Some((_, r))) = (listed, listed_rows) {
            let n: Vec<String> = serde_json::from_str(n).map_err(|e| {
                CoreError::write(format!("{}: malformed {SEGMENTS_KEY}: {e}", input.name))
            })?;
            let r: Vec<u64> = serde_json::from_str(r).map_err(|e| {
                CoreError::write(format!("{}: malformed {SEGMENT_ROWS_KEY}: {e}", input.name))
            })?;
            if n.len() == r.len() && r.iter().sum::<u64>() == rows {
                names.extend(n);
                counts.extend(r);
                continue;
            }
        }
        let base = input.name.rsplit('/').next().unwrap_or(&input.name);
        names.push(base.to_string());
        counts.push(rows);
    }
    let kv = key_values([
        (
            SEGMENTS_KEY,
            serde_json::to_string(&names).expect("names serialise"),
        ),
        (
            SEGMENT_ROWS_KEY,
            serde_json::to_string(&counts).expect("counts serialise"),
        ),
    ]);
    Ok((kv, counts.iter().sum()))
}

/// Merges `inputs` into `out` (see [`merge_files`]) recording their
/// provenance (see [`segment_provenance`]). Returns (rows, bytes).
/// Never replaces an existing `out`.
pub fn merge_segments(out: &Path, inputs: &[PathBuf]) -> Result<(u64, u64)> {
    let opened = open_files(inputs)?;
    let (kv, rows) = segment_provenance(&opened)?;
    let size = atomic_file::publish(out, |w| merge_into(w, &opened, kv))?;
    Ok((rows, size))
}

/// [`merge_segments`] for a compaction: `out` may be replaced, but only when
/// it is one of the inputs (the new file then holds every row of the old
/// one); otherwise an existing `out` is refused like any publish.
pub fn merge_segments_over(out: &Path, inputs: &[PathBuf]) -> Result<(u64, u64)> {
    let opened = open_files(inputs)?;
    let (kv, rows) = segment_provenance(&opened)?;
    let absorbs_out = inputs.iter().any(|p| p == out);
    let size = if absorbs_out {
        atomic_file::publish_replacing(out, |w| merge_into(w, &opened, kv))?
    } else {
        atomic_file::publish(out, |w| merge_into(w, &opened, kv))?
    };
    Ok((rows, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Float64Array;
    use arrow_schema::{DataType, Field, Schema};

    /// The codec of each column chunk of a file of `rows` rows written with `codec`.
    fn codecs_of(rows: usize, codec: Codec) -> Vec<Compression> {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, false)]));
        let values = Float64Array::from_iter_values((0..rows).map(|i| i as f64));
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(values)]).unwrap();
        let props = writer_properties(&[], codec, 1 << 20, Vec::new());
        let bytes = write_batches(Vec::new(), schema, &[batch], props, 1).unwrap();
        let meta = ParquetMetaDataReader::new()
            .parse_and_finish(&bytes::Bytes::from(bytes))
            .unwrap();
        meta.row_groups()
            .iter()
            .flat_map(|g| g.columns().iter().map(|c| c.compression()))
            .collect()
    }

    /// Five columns of every kind a recorder writes (nulls, a dictionary),
    /// `rows` rows cut into batches of 7,000.
    fn mixed_batches(rows: usize) -> (SchemaRef, Vec<RecordBatch>) {
        use arrow_array::types::Int32Type;
        use arrow_array::{BooleanArray, DictionaryArray, Float32Array, Int64Array};
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let schema = Arc::new(Schema::new(vec![
            Field::new("iter", DataType::Int64, false),
            Field::new("E", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("r", DataType::Float32, false),
            Field::new("phase", dict, true),
        ]));
        let batches = (0..rows)
            .step_by(7000)
            .map(|start| {
                let range = start..(start + 7000).min(rows);
                let iter = Int64Array::from_iter_values(range.clone().map(|i| i as i64));
                let e = Float64Array::from_iter(
                    range
                        .clone()
                        .map(|i| (i % 11 != 0).then(|| (i as f64).sin())),
                );
                let ok = BooleanArray::from_iter(
                    range.clone().map(|i| (i % 5 != 0).then_some(i % 3 == 0)),
                );
                let r = Float32Array::from_iter_values(range.clone().map(|i| i as f32 * 0.5));
                let phase: DictionaryArray<Int32Type> = range
                    .map(|i| (i % 7 != 0).then(|| ["warmup", "descent", "polish"][i % 3]))
                    .collect();
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(iter),
                        Arc::new(e),
                        Arc::new(ok),
                        Arc::new(r),
                        Arc::new(phase),
                    ],
                )
                .unwrap()
            })
            .collect();
        (schema, batches)
    }

    #[test]
    fn columns_encoded_in_parallel_make_the_file_arrow_writer_makes() {
        let (schema, batches) = mixed_batches(PARALLEL_ENCODE_MIN_ROWS * 3 + 123);
        let props =
            || writer_properties(&["phase"], Codec::Zstd, 1 << 20, key_values([("k", "v")]));
        let mut plain =
            ArrowWriter::try_new(Vec::new(), Arc::clone(&schema), Some(props())).unwrap();
        for b in &batches {
            plain.write(b).unwrap();
        }
        let plain = plain.into_inner().unwrap();
        for threads in [1, 2, 3] {
            let writer =
                ArrowWriter::try_new(Vec::new(), Arc::clone(&schema), Some(props())).unwrap();
            let (file, factory) = writer.into_serialized_writer().unwrap();
            let parallel =
                write_row_group_in_parallel(file, &factory, &schema, &batches, threads).unwrap();
            // Byte for byte: the same pages, statistics, page index and footer.
            assert!(parallel == plain, "{threads} threads wrote another file");
        }
        // And the public entry point, asked for two threads, writes it too
        // (on two threads where the machine has two cores).
        let written = write_batches(Vec::new(), Arc::clone(&schema), &batches, props(), 2).unwrap();
        assert!(written == plain);
    }

    #[test]
    fn nested_fields_are_written_by_arrow_writer() {
        // Several Parquet columns for one field: not the parallel path's.
        use arrow_array::types::Float64Type;
        use arrow_array::ListArray;
        let rows = PARALLEL_ENCODE_MIN_ROWS + 1;
        let item = Arc::new(Field::new("item", DataType::Float64, true));
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::List(item), true),
            Field::new("x", DataType::Float64, false),
        ]));
        let v = ListArray::from_iter_primitive::<Float64Type, _, _>(
            (0..rows).map(|i| Some(vec![Some(i as f64), None])),
        );
        let x = Float64Array::from_iter_values((0..rows).map(|i| i as f64));
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(v), Arc::new(x)]).unwrap();
        let props = writer_properties(&[], Codec::Zstd, 1 << 20, Vec::new());
        let bytes = write_batches(Vec::new(), schema, &[batch], props, 2).unwrap();
        let meta = ParquetMetaDataReader::new()
            .parse_and_finish(&bytes::Bytes::from(bytes))
            .unwrap();
        assert_eq!(meta.file_metadata().num_rows(), rows as i64);
    }

    #[test]
    fn a_file_of_several_row_groups_is_written_by_arrow_writer() {
        // Past the row group limit the batches are split as ArrowWriter splits
        // them; the parallel path writes one row group only.
        let (schema, batches) = mixed_batches(PARALLEL_ENCODE_MIN_ROWS * 2);
        let props = writer_properties(&[], Codec::Zstd, PARALLEL_ENCODE_MIN_ROWS, Vec::new());
        let bytes = write_batches(Vec::new(), schema, &batches, props, 2).unwrap();
        let meta = ParquetMetaDataReader::new()
            .parse_and_finish(&bytes::Bytes::from(bytes))
            .unwrap();
        let groups: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
        assert_eq!(groups, [PARALLEL_ENCODE_MIN_ROWS as i64; 2]);
    }

    #[test]
    fn files_below_the_small_file_rows_are_uncompressed_whatever_the_codec() {
        for codec in [Codec::Zstd, Codec::Snappy, Codec::Lz4, Codec::None] {
            assert_eq!(
                codecs_of(SMALL_FILE_ROWS - 1, codec),
                [Compression::UNCOMPRESSED],
                "{codec:?}"
            );
            assert_eq!(
                codecs_of(SMALL_FILE_ROWS, codec),
                [codec.parquet()],
                "{codec:?}"
            );
        }
    }
}
