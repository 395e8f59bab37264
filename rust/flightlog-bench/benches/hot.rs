//! The core's hot functions, one row or one batch at a time (`make bench-rust`):
//!
//! - a push into one lane's ring and its drain (the producer's cost per row);
//! - `Recorder::offer_in_place` and `Recorder::push` of a 10-field row into a real
//!   recorder (spool files in a temp folder, the flusher draining on its thread);
//! - a Parquet segment of 10,000 rows written and published atomically.
//!
//! Criterion prints times with confidence intervals; nothing here asserts a number.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field as ArrowField, Schema as ArrowSchema};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use flightlog_core::parquet_io::{self, Codec};
use flightlog_core::row_layout::{f64_word, i64_word};
use flightlog_core::{DType, Field, OnFull, OutputLayout, Recorder, RecorderConfig, Schema};
use flightlog_ring::spsc::heap_words;
use flightlog_ring::SpscRing;

const WIDTH: usize = 10;

fn ring_push(c: &mut Criterion) {
    let capacity = 4096;
    let ring = SpscRing::new(
        heap_words(SpscRing::<Box<[AtomicU64]>>::words_needed(capacity, WIDTH)),
        capacity,
        WIDTH,
    );
    let mut cursor = ring.cursor();
    let row: [u64; WIDTH] = std::array::from_fn(|i| i as u64);
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(1));
    g.bench_function("push one 10-word row (drained every 1,024)", |b| {
        b.iter(|| {
            if ring.push(&mut cursor, black_box(&row)).is_err() {
                ring.release(ring.published());
                ring.push(&mut cursor, &row)
                    .expect("a drained ring has room");
            }
            if cursor.position() % 1024 == 0 {
                ring.release(ring.published());
            }
        })
    });
    g.finish();
}

fn schema() -> Schema {
    let mut fields = vec![Field::new("iter", DType::I64)];
    fields.extend((1..WIDTH).map(|i| Field::new(format!("x{i}"), DType::F64)));
    Schema::new(fields, 1).expect("a valid schema")
}

fn recorder(dir: &std::path::Path) -> Recorder {
    let mut cfg = RecorderConfig::new(OutputLayout::run_folder(dir));
    cfg.flush_interval_secs = 3600.0;
    cfg.on_full = OnFull::Drop;
    Recorder::new(schema(), cfg).expect("a recorder in a temp folder")
}

fn recorder_offer(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temp folder");
    let rec = recorder(&dir.path().join("run"));
    let mut g = c.benchmark_group("recorder");
    g.throughput(Throughput::Elements(1));
    let mut i = 0i64;
    g.bench_function("offer_in_place 1 i64 + 9 f64", |b| {
        b.iter(|| {
            i += 1;
            rec.offer_in_place(|words| {
                words[0].store(i64_word(i), Ordering::Relaxed);
                for w in &words[1..WIDTH] {
                    w.store(f64_word(0.5), Ordering::Relaxed);
                }
                true
            })
            .expect("an open recorder")
        })
    });
    let mut row = [0u64; WIDTH];
    g.bench_function("push 1 i64 + 9 f64 (a row built on the stack)", |b| {
        b.iter(|| {
            i += 1;
            row[0] = i64_word(i);
            for w in &mut row[1..] {
                *w = f64_word(0.5);
            }
            rec.push(black_box(&row)).expect("an open recorder")
        })
    });
    g.finish();
    rec.close().expect("close");
}

fn segment_write(c: &mut Criterion) {
    let n = 10_000;
    let mut fields = vec![ArrowField::new("iter", DataType::Int64, false)];
    fields.extend((1..WIDTH).map(|i| ArrowField::new(format!("x{i}"), DataType::Float64, false)));
    let arrow_schema = Arc::new(ArrowSchema::new(fields));
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(0..n as i64))];
    for k in 1..WIDTH {
        columns.push(Arc::new(Float64Array::from_iter_values(
            (0..n).map(|i| (i * k) as f64 * 0.001),
        )));
    }
    let batch = RecordBatch::try_new(arrow_schema.clone(), columns).expect("a batch");
    let dir = tempfile::tempdir().expect("a temp folder");
    let mut g = c.benchmark_group("segment");
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(20);
    let mut k = 0u64;
    g.bench_function("write + publish 10,000 rows x 10 columns (zstd)", |b| {
        b.iter_batched(
            || {
                k += 1;
                dir.path().join(format!("seg-{k:06}.parquet"))
            },
            |path| {
                let props = parquet_io::writer_properties(&[], Codec::Zstd, n, Vec::new());
                parquet_io::write_file(
                    &path,
                    arrow_schema.clone(),
                    std::slice::from_ref(&batch),
                    props,
                    1,
                )
                .expect("a segment")
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, ring_push, recorder_offer, segment_write);
criterion_main!(benches);
