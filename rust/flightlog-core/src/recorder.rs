//! The recorder: producers push rows into a lock-free ring; one flusher thread
//! drains it into Arrow batches and publishes Parquet segments atomically.
//!
//! Guarantees:
//! * Rows are never lost without being counted: a full ring blocks the producer
//!   (`OnFull::Block`, counted in `producer_stalls`) or drops the row
//!   (`OnFull::Drop`, counted in `rows_dropped`); rows the disk refuses stay in
//!   memory for a retry and are counted in `rows_lost` only past a bound.
//! * [`Recorder::flush`] returns once every row pushed before the call is in a
//!   published segment (or returns the write error that prevented it).
//! * A flusher error is kept and returned by the next producer call, `flush` or
//!   `close`; a panic on the flusher thread becomes such an error.
//! * [`Recorder::close`] makes everything durable, then merges the segments into
//!   the final file by raw column-chunk copy and removes them.
//! * One writer per folder: a recorder holds its folder's claim
//!   ([`crate::claim`]) from construction to `close`, and in a forked child it
//!   refuses to write and its `close` does nothing (see [`crate::claim::Owner`]).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, BooleanArray, DictionaryArray, Float32Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray,
};
use arrow_buffer::{NullBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field as ArrowField, Schema as ArrowSchema, SchemaRef};
use flightlog_ring::{PushError, RowRing};

use crate::claim::{instance_id, Claim, Owner};
use crate::dict::Dictionary;
use crate::error::{CoreError, Result};
use crate::layout::{OutputLayout, RowLayout};
use crate::parquet_io::{self, Codec, FORMAT_VERSION};
use crate::schema::{DType, Schema, Value};
use crate::storage::{key_of, Storage};
use crate::store::ObjectRoot;

/// A push that found the ring full under `OnFull::Block`; [`Blocked::wait`]
/// completes it.
pub struct Blocked<'a> {
    shared: &'a Shared,
    row: &'a [u64],
}

impl Blocked<'_> {
    /// Waits (spinning, then yielding, then sleeping 50 µs at a time) until the
    /// flusher makes room, and pushes the row.
    ///
    /// Fails with [`CoreError::Closed`] when the recorder is closed meanwhile
    /// (closing closes the ring, which refuses this push), or with a write
    /// error if the flusher thread died: either way the row was not recorded
    /// and is not counted as offered.
    pub fn wait(self) -> Result<Offer> {
        let mut spins = 0u32;
        loop {
            if self.shared.flusher_stopped.load(Ordering::Acquire) {
                self.shared.unoffer();
                return Err(CoreError::write(
                    "the flusher thread stopped, so the ring can never drain: the row was not recorded",
                ));
            }
            self.shared.wake_flusher();
            if spins < 16 {
                std::hint::spin_loop();
            } else if spins < 64 {
                thread::yield_now();
            } else {
                thread::sleep(Duration::from_micros(50));
            }
            spins = spins.saturating_add(1);
            match self.shared.ring.try_push(self.row) {
                Ok(_) => return Ok(Offer::Accepted),
                Err(PushError::Full) => {}
                Err(PushError::Closed) => {
                    self.shared.unoffer();
                    return Err(CoreError::Closed);
                }
            }
        }
    }
}

/// What a producer does when the ring is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Wait for the flusher (lossless; the wait is counted as a stall).
    Block,
    /// Drop the row and count it.
    Drop,
}

impl OnFull {
    /// Parses `block` or `drop`.
    pub fn parse(s: &str) -> Result<OnFull> {
        match s {
            "block" => Ok(OnFull::Block),
            "drop" => Ok(OnFull::Drop),
            other => Err(CoreError::Config(format!(
                "on_full='{other}' is not supported: use 'block' or 'drop'"
            ))),
        }
    }
}

/// Keep every row up to `keep_first`, then one row in `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampling {
    pub keep_first: u64,
    pub every: u64,
}

impl Sampling {
    fn keeps(&self, offered_index: u64) -> bool {
        offered_index < self.keep_first
            || (offered_index - self.keep_first).is_multiple_of(self.every)
    }
}

/// Recorder settings. Units are in the names; [`RecorderConfig::validate`]
/// says what is allowed.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    pub layout: OutputLayout,
    pub flush_interval_secs: f64,
    pub segment_rows: usize,
    pub ring_capacity: usize,
    pub compression: Codec,
    pub on_full: OnFull,
    pub sampling: Option<Sampling>,
    pub max_rows: Option<u64>,
    pub run_id: Option<String>,
    /// Extra key-value metadata for every file.
    pub metadata: Vec<(String, String)>,
    /// Fields filled with one value in every row (e.g. `run_id`).
    pub constants: Vec<(String, Value)>,
}

impl RecorderConfig {
    /// Default flush interval.
    pub const DEFAULT_FLUSH_INTERVAL_SECS: f64 = 1.0;
    /// Default rows per segment (and per row group).
    pub const DEFAULT_SEGMENT_ROWS: usize = 256 * 1024;
    /// Default ring capacity in rows.
    pub const DEFAULT_RING_CAPACITY: usize = 64 * 1024;
    /// Longest flush interval: long enough to mean "only on flush() and
    /// close()", and far inside what a `Duration` holds.
    pub const MAX_FLUSH_INTERVAL_SECS: f64 = 1e9;

    /// Defaults for a run folder.
    pub fn new(layout: OutputLayout) -> Self {
        RecorderConfig {
            layout,
            flush_interval_secs: Self::DEFAULT_FLUSH_INTERVAL_SECS,
            segment_rows: Self::DEFAULT_SEGMENT_ROWS,
            ring_capacity: Self::DEFAULT_RING_CAPACITY,
            compression: Codec::Zstd,
            on_full: OnFull::Block,
            sampling: None,
            max_rows: None,
            run_id: None,
            metadata: Vec::new(),
            constants: Vec::new(),
        }
    }

    /// Checks ranges; errors say what is allowed.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(CoreError::Config(m));
        if !(self.flush_interval_secs > 0.0
            && self.flush_interval_secs <= Self::MAX_FLUSH_INTERVAL_SECS)
        {
            return bad(format!(
                "flush_interval must be a positive number of seconds, at most {} (about 31 years), got {}",
                Self::MAX_FLUSH_INTERVAL_SECS,
                self.flush_interval_secs
            ));
        }
        if !(1..=(1 << 26)).contains(&self.segment_rows) {
            return bad(format!(
                "segment_rows must be between 1 and {}, got {}",
                1 << 26,
                self.segment_rows
            ));
        }
        if !(2..=(1 << 24)).contains(&self.ring_capacity) {
            return bad(format!(
                "ring_capacity must be between 2 and {}, got {}",
                1 << 24,
                self.ring_capacity
            ));
        }
        if let Some(s) = self.sampling {
            if s.every == 0 {
                return bad("sampling 'every' must be at least 1".into());
            }
        }
        // Every `flightlog.*` key is the recorder's (run id, schema, merged
        // segment lists): a user key of that name would forge or corrupt them.
        for (k, _) in &self.metadata {
            if k.starts_with("flightlog.") || k == "schema_version" {
                return bad(format!(
                    "metadata key '{k}' is reserved by flightlog (keys starting with \
                     'flightlog.', and 'schema_version'); choose another name"
                ));
            }
        }
        Ok(())
    }
}

/// Counters of a recorder (a snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Rows handed to the recorder.
    pub rows_offered: u64,
    /// Rows in published files.
    pub rows_written: u64,
    /// Rows skipped by the sampling policy.
    pub rows_sampled_out: u64,
    /// Rows dropped because the ring was full (`on_full="drop"`).
    pub rows_dropped: u64,
    /// Rows refused because `max_rows` was reached.
    pub rows_over_budget: u64,
    /// Rows that could not be written and were given up on.
    pub rows_lost: u64,
    /// Telemetry segments published.
    pub segments: u64,
    /// Bytes of every file published (segments, then the merged file).
    pub bytes_written: u64,
    /// Nanoseconds the flusher spent building and writing files.
    pub flush_nanos: u64,
    /// Pushes that had to wait for room in the ring.
    pub producer_stalls: u64,
    /// Events recorded.
    pub events: u64,
}

/// What happened to an offered row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Accepted,
    SampledOut,
    Dropped,
    /// Refused by the row budget; `first` is true exactly once per recorder.
    OverBudget {
        first: bool,
    },
}

#[derive(Default)]
struct Counters {
    offered: AtomicU64,
    accepted: AtomicU64,
    written: AtomicU64,
    sampled_out: AtomicU64,
    dropped: AtomicU64,
    over_budget: AtomicU64,
    lost: AtomicU64,
    segments: AtomicU64,
    bytes: AtomicU64,
    flush_nanos: AtomicU64,
    stalls: AtomicU64,
    events: AtomicU64,
}

#[derive(Default)]
struct FlushState {
    /// Highest ring position a flush has been asked to cover.
    target: u64,
    requested: u64,
    completed: u64,
    /// The error of the last flush cycle, for the `flush()` that asked for it.
    last_error: Option<String>,
    closing: bool,
}

#[derive(Debug, Clone)]
struct EventRow {
    t_wall_ms: f64,
    iter: Option<i64>,
    name: String,
    payload: Option<String>,
}

struct Shared {
    ring: RowRing,
    schema: Schema,
    arrow_schema: SchemaRef,
    row_layout: RowLayout,
    dictionaries: Vec<Option<Dictionary>>,
    constants: Vec<Option<Value>>,
    config: RecorderConfig,
    counters: Counters,
    start: Instant,
    iter_slot: Option<usize>,
    last_iter: AtomicI64,
    has_iter: AtomicBool,
    budget_hit: AtomicBool,
    /// A write error not yet reported to a producer.
    pending_error: Mutex<Option<CoreError>>,
    has_error: AtomicBool,
    flush: Mutex<FlushState>,
    flush_done: Condvar,
    events: Mutex<Vec<EventRow>>,
    flusher_thread: std::sync::OnceLock<Thread>,
    /// Set when the flusher thread has returned (normally at close, or after a
    /// panic outside its per-cycle guard): nothing drains the ring any more,
    /// so waiting producers and flushes give up instead of hanging.
    flusher_stopped: AtomicBool,
    /// Producers wake the flusher when `pos & wake_mask == wake_mask`: four
    /// times per lap of the ring (its capacity is a power of two).
    wake_mask: u64,
    file_kv: Vec<(String, String)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning means a thread panicked while holding the lock; every critical
    // section here leaves the data consistent, so keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A flight recorder over one output layout.
pub struct Recorder {
    shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<FlusherExit>>>,
    closed: AtomicBool,
    close_lock: Mutex<()>,
    /// The process the recorder belongs to (checked on every producer call).
    owner: Owner,
    /// The folder's one-writer claim, released at the end of `close`.
    claim: Option<Claim>,
}

/// What the flusher thread hands back: its outcome, or the message of a
/// panic that escaped its per-cycle guard (its state is then gone).
type FlusherExit = std::result::Result<FlusherOutcome, String>;

/// The flusher thread's body. Every panic, wherever it happens, becomes an
/// error that the next producer call, `flush` or `close` returns: nothing
/// unwinds out of the thread, and `flusher_stopped` tells waiters that
/// nothing will drain the ring any more.
fn run_flusher(shared: Arc<Shared>) -> FlusherExit {
    let flusher_shared = Arc::clone(&shared);
    let exit = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        Flusher::new(flusher_shared).run()
    }))
    .map_err(|panic| panic_message(&panic));
    if let Err(msg) = &exit {
        shared.record_error(CoreError::write(format!(
            "the flusher thread panicked: {msg}; published segments are intact, run recover"
        )));
    }
    shared.flusher_stopped.store(true, Ordering::Release);
    // Under the lock, so a flush about to wait cannot miss the wake-up.
    drop(lock(&shared.flush));
    shared.flush_done.notify_all();
    exit
}

/// What the flusher hands back when it stops.
struct FlusherOutcome {
    /// Published telemetry segments with their row counts.
    telemetry_segments: Vec<(String, u64)>,
    event_segments: Vec<String>,
    /// Rows and events the flusher still held (kept for a retry) when it
    /// stopped: the disk refused them to the end, so they are lost.
    rows_not_written: u64,
    events_not_written: u64,
    /// (rows, bytes) of final files written directly by the closing flush
    /// (nothing had been published yet, so there was nothing to merge).
    final_telemetry: Option<(u64, u64)>,
    final_events: Option<(u64, u64)>,
}

/// Files a closed recorder left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloseReport {
    /// Published files with their row counts and sizes.
    pub files: Vec<(PathBuf, u64, u64)>,
}

impl Recorder {
    /// Creates the output directories and starts the flusher thread.
    ///
    /// Fails if the layout already holds a recording (a final file or
    /// segments of the same prefix): recordings are never mixed.
    pub fn new(schema: Schema, config: RecorderConfig) -> Result<Recorder> {
        config.validate()?;
        let claim = Claim::acquire(&config.layout)?;
        Recorder::new_claimed(schema, config, claim)
    }

    /// [`Recorder::new`] with the folder's claim already taken (a binding that
    /// claims at construction but learns the schema later); `claim` is held
    /// until `close`.
    pub fn new_claimed(
        schema: Schema,
        mut config: RecorderConfig,
        claim: Option<Claim>,
    ) -> Result<Recorder> {
        config.validate()?;
        config.layout = config.layout.with_instance(instance_id());
        let mut constants: Vec<Option<Value>> = vec![None; schema.fields.len()];
        let mut constant_idx = Vec::new();
        for (name, value) in &config.constants {
            let i = schema.index_of(name).ok_or_else(|| {
                CoreError::Schema(format!(
                    "constant column '{name}' is not in the schema {}",
                    schema.describe()
                ))
            })?;
            check_constant(&schema.fields[i].name, &schema.fields[i].dtype, value)?;
            constants[i] = Some(value.clone());
            constant_idx.push(i);
        }
        let row_layout = RowLayout::new(&schema, &constant_idx);
        let dictionaries = schema
            .fields
            .iter()
            .map(|f| match &f.dtype {
                DType::Str => Some(Dictionary::growing(&f.name)),
                DType::Enum(v) => Some(Dictionary::fixed(&f.name, v)),
                _ => None,
            })
            .collect();
        let iter_slot = schema
            .index_of("iter")
            .filter(|&i| schema.fields[i].dtype == DType::I64)
            .and_then(|i| row_layout.slot_of_field(i));

        prepare_dirs(&config.layout)?;

        let mut file_kv = vec![
            ("schema_version".to_string(), schema.version.to_string()),
            (
                "flightlog.format_version".to_string(),
                FORMAT_VERSION.to_string(),
            ),
            ("flightlog.schema".to_string(), schema.to_json()),
            (
                "flightlog.writer".to_string(),
                format!("flightlog {}", env!("CARGO_PKG_VERSION")),
            ),
        ];
        if let Some(run_id) = &config.run_id {
            file_kv.push(("flightlog.run_id".to_string(), run_id.clone()));
        }
        for (k, v) in &config.metadata {
            if file_kv.iter().any(|(key, _)| key == k) {
                return Err(CoreError::Config(format!(
                    "metadata key '{k}' is reserved by flightlog"
                )));
            }
            file_kv.push((k.clone(), v.clone()));
        }

        let ring = RowRing::new(config.ring_capacity, row_layout.width());
        let wake_mask = (ring.capacity() as u64 / 4).max(1) - 1;
        let shared = Arc::new(Shared {
            ring,
            wake_mask,
            arrow_schema: schema.arrow_schema(),
            schema,
            row_layout,
            dictionaries,
            constants,
            config,
            counters: Counters::default(),
            start: Instant::now(),
            iter_slot,
            last_iter: AtomicI64::new(0),
            has_iter: AtomicBool::new(false),
            budget_hit: AtomicBool::new(false),
            pending_error: Mutex::new(None),
            has_error: AtomicBool::new(false),
            flush: Mutex::new(FlushState::default()),
            flush_done: Condvar::new(),
            events: Mutex::new(Vec::new()),
            flusher_thread: std::sync::OnceLock::new(),
            flusher_stopped: AtomicBool::new(false),
            file_kv,
        });
        let flusher_shared = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("flightlog-flusher".into())
            .spawn(move || run_flusher(flusher_shared))
            .map_err(|e| CoreError::write(format!("cannot start the flusher thread: {e}")))?;
        let _ = shared.flusher_thread.set(handle.thread().clone());
        Ok(Recorder {
            shared,
            flusher: Mutex::new(Some(handle)),
            closed: AtomicBool::new(false),
            close_lock: Mutex::new(()),
            owner: Owner::current(),
            claim,
        })
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.shared.schema
    }

    /// The row layout producers pack rows with.
    pub fn row_layout(&self) -> &RowLayout {
        &self.shared.row_layout
    }

    /// The output layout.
    pub fn layout(&self) -> &OutputLayout {
        &self.shared.config.layout
    }

    /// The dictionary of field `field` (string and enum fields).
    pub fn dictionary(&self, field: usize) -> Option<&Dictionary> {
        self.shared.dictionaries[field].as_ref()
    }

    /// The constant value of field `field`, if it is constant.
    pub fn constant(&self, field: usize) -> Option<&Value> {
        self.shared.constants[field].as_ref()
    }

    /// Milliseconds since the recorder started, from a monotonic clock.
    pub fn now_ms(&self) -> f64 {
        self.shared.start.elapsed().as_secs_f64() * 1e3
    }

    /// True once `close` has begun.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Returns (and clears) a write error the flusher hit since the last call.
    #[inline]
    pub fn take_error(&self) -> Result<()> {
        if self.shared.has_error.load(Ordering::Acquire) {
            return self.take_pending_error();
        }
        Ok(())
    }

    #[cold]
    fn take_pending_error(&self) -> Result<()> {
        let err = lock(&self.shared.pending_error).take();
        self.shared.has_error.store(false, Ordering::Release);
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether the flusher hit a write error no call has reported yet.
    pub fn has_pending_error(&self) -> bool {
        self.shared.has_error.load(Ordering::Acquire)
    }

    /// Fails if the recorder is closed, or returns (and clears) a pending
    /// write error: what every producer call checks first.
    #[inline]
    pub fn check_open(&self) -> Result<()> {
        self.owner.check()?;
        if self.closed.load(Ordering::Acquire) {
            return Err(CoreError::Closed);
        }
        self.take_error()
    }

    /// Offers one packed row (see [`RowLayout`]). Applies sampling, the row
    /// budget and the `on_full` policy.
    pub fn push(&self, row: &[u64]) -> Result<Offer> {
        self.push_with(row, |blocked| blocked.wait())
    }

    /// [`Recorder::push`], letting the caller decide how to wait when the
    /// ring is full under `OnFull::Block`: `on_block` must call
    /// [`Blocked::wait`] (a binding releases its interpreter lock around it).
    #[inline]
    pub fn push_with(
        &self,
        row: &[u64],
        on_block: impl FnOnce(Blocked<'_>) -> Result<Offer>,
    ) -> Result<Offer> {
        self.check_open()?;
        self.offer_with(row, on_block)
    }

    /// Offers one row of a batch whose call already ran [`Recorder::check_open`]:
    /// like [`Recorder::push`], but a write error the flusher reports meanwhile
    /// stays pending for the next call instead of failing this row. A batch is
    /// then recorded whole: the error concerns rows offered earlier (kept for
    /// a retry), and failing mid-batch would leave the caller unable to tell
    /// which of its rows were recorded. Fails only if the recorder was closed.
    pub fn offer(&self, row: &[u64]) -> Result<Offer> {
        self.offer_with(row, |blocked| blocked.wait())
    }

    /// [`Recorder::offer`] with the caller's wait (see [`Recorder::push_with`]).
    #[inline]
    pub fn offer_with(
        &self,
        row: &[u64],
        on_block: impl FnOnce(Blocked<'_>) -> Result<Offer>,
    ) -> Result<Offer> {
        if self.closed.load(Ordering::Acquire) {
            return Err(CoreError::Closed);
        }
        let shared = &*self.shared;
        let offered = shared.counters.offered.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = shared.config.sampling {
            if !s.keeps(offered) {
                shared.counters.sampled_out.fetch_add(1, Ordering::Relaxed);
                return Ok(Offer::SampledOut);
            }
        }
        if let Some(max) = shared.config.max_rows {
            let accepted = shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
            if accepted >= max {
                shared.counters.accepted.fetch_sub(1, Ordering::Relaxed);
                shared.counters.over_budget.fetch_add(1, Ordering::Relaxed);
                let first = !shared.budget_hit.swap(true, Ordering::AcqRel);
                if first {
                    self.push_event(
                        "ROW_BUDGET_EXCEEDED",
                        Some(format!("{{\"max_rows\": {max}}}")),
                        None,
                    );
                }
                return Ok(Offer::OverBudget { first });
            }
        }
        if let Some(slot) = shared.iter_slot {
            if shared.row_layout.is_valid(row, slot) {
                shared.last_iter.store(row[slot] as i64, Ordering::Relaxed);
                shared.has_iter.store(true, Ordering::Relaxed);
            }
        }
        match shared.ring.try_push(row) {
            Ok(pos) => {
                // Wake the flusher a few times per ring lap so it drains before
                // producers ever find the ring full.
                if pos & shared.wake_mask == shared.wake_mask {
                    shared.wake_flusher();
                }
                Ok(Offer::Accepted)
            }
            Err(PushError::Full) => match shared.config.on_full {
                OnFull::Drop => {
                    shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    if shared.config.max_rows.is_some() {
                        shared.counters.accepted.fetch_sub(1, Ordering::Relaxed);
                    }
                    shared.wake_flusher();
                    Ok(Offer::Dropped)
                }
                OnFull::Block => {
                    shared.counters.stalls.fetch_add(1, Ordering::Relaxed);
                    on_block(Blocked { shared, row })
                }
            },
            Err(PushError::Closed) => {
                // `close` closed the ring after this call passed the closed
                // check: the call fails, so the row is not counted.
                shared.unoffer();
                Err(CoreError::Closed)
            }
        }
    }

    /// Records an event. `payload_json` must already be JSON text.
    pub fn event(
        &self,
        name: &str,
        payload_json: Option<String>,
        t_wall_ms: Option<f64>,
    ) -> Result<()> {
        self.check_open()?;
        if self.push_event(name, payload_json, t_wall_ms) {
            Ok(())
        } else {
            Err(CoreError::Closed)
        }
    }

    /// Queues an event for the flusher; false (and nothing queued) once
    /// `close` has begun. `closed` is read under the events lock, which
    /// `close` takes after setting it and before its final flush: an event is
    /// either queued in time for that flush or refused, never left behind.
    fn push_event(&self, name: &str, payload: Option<String>, t_wall_ms: Option<f64>) -> bool {
        let shared = &*self.shared;
        let iter = shared
            .has_iter
            .load(Ordering::Relaxed)
            .then(|| shared.last_iter.load(Ordering::Relaxed));
        let mut events = lock(&shared.events);
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        events.push(EventRow {
            t_wall_ms: t_wall_ms.unwrap_or_else(|| self.now_ms()),
            iter,
            name: name.to_owned(),
            payload,
        });
        shared.counters.events.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Blocks until every row pushed (and event recorded) before the call is in
    /// a published file.
    pub fn flush(&self) -> Result<()> {
        self.check_open()?;
        self.shared.flush_and_wait(false)?;
        self.take_error()
    }

    /// Counters now.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            rows_offered: c.offered.load(Ordering::Relaxed),
            rows_written: c.written.load(Ordering::Relaxed),
            rows_sampled_out: c.sampled_out.load(Ordering::Relaxed),
            rows_dropped: c.dropped.load(Ordering::Relaxed),
            rows_over_budget: c.over_budget.load(Ordering::Relaxed),
            rows_lost: c.lost.load(Ordering::Relaxed),
            segments: c.segments.load(Ordering::Relaxed),
            bytes_written: c.bytes.load(Ordering::Relaxed),
            flush_nanos: c.flush_nanos.load(Ordering::Relaxed),
            producer_stalls: c.stalls.load(Ordering::Relaxed),
            events: c.events.load(Ordering::Relaxed),
        }
    }

    /// Makes everything durable, stops the flusher, merges segments into the
    /// final files and removes them. Idempotent: a second call returns
    /// `Ok` with an empty report. Releases the folder's claim, also when it
    /// fails (the segments then stay for `recover`). In a forked child it does
    /// nothing: the files are the parent's.
    pub fn close(&self) -> Result<CloseReport> {
        if !self.owner.is_current() {
            return Ok(CloseReport::default());
        }
        let result = self.close_owned();
        if let Some(claim) = &self.claim {
            claim.release();
        }
        result
    }

    /// The published telemetry file's footer must hold every row written.
    fn check_final_rows(&self, report: &CloseReport) -> Result<()> {
        let layout = &self.shared.config.layout;
        let Some(final_path) = &layout.final_telemetry else {
            return Ok(());
        };
        if !report.files.iter().any(|(p, _, _)| p == final_path) {
            return Ok(());
        }
        let written = self.shared.counters.written.load(Ordering::Relaxed);
        let found = layout.storage.row_count(final_path)?;
        if found != written {
            return Err(CoreError::write(format!(
                "{} holds {found} rows in its footer, but this recorder wrote {written}: \
                 the file is not this recording's alone; run recover on the folder",
                layout.storage.describe(final_path)
            )));
        }
        Ok(())
    }

    fn close_owned(&self) -> Result<CloseReport> {
        let _guard = lock(&self.close_lock);
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(CloseReport::default());
        }
        // No push succeeds after this, producers waiting for room included
        // (they fail with `Closed`), and every push that did succeed is below
        // the closing flush's target: producers that passed the closed check
        // above before it was set cannot slip a row in after the final drain.
        self.shared.ring.close();
        // A barrier for `push_event`, which reads `closed` under this lock.
        drop(lock(&self.shared.events));
        let flush_result = self.shared.flush_and_wait(true);
        let outcome = match lock(&self.flusher).take().map(|h| h.join()) {
            Some(Ok(Ok(outcome))) => outcome,
            Some(Ok(Err(msg))) => return Err(self.flusher_died(&msg)),
            Some(Err(panic)) => return Err(self.flusher_died(&panic_message(&panic))),
            None => return Ok(CloseReport::default()),
        };
        // An error the caller has not seen yet wins over the merge: the merge
        // still runs so that everything that was written ends up in one file.
        let mut earlier = self.take_error().err().or(flush_result.err());
        // Rows still held for a retry die with the recorder: count them.
        if outcome.rows_not_written > 0 || outcome.events_not_written > 0 {
            self.shared
                .counters
                .lost
                .fetch_add(outcome.rows_not_written, Ordering::Relaxed);
            let cause = earlier
                .take()
                .map(|e| {
                    e.to_string()
                        .replace("kept in memory for a retry", "not written")
                })
                .unwrap_or_else(|| "the last write failed".into());
            earlier = Some(CoreError::write(format!(
                "{cause}; the recorder is closed: {} rows and {} events that were kept for a retry \
                 are lost (counted in rows_lost)",
                outcome.rows_not_written, outcome.events_not_written
            )));
        }
        // Segments deleted behind our back (the run folder removed, a person
        // cleaning up) cannot be merged: merge the rest and say so.
        let layout = &self.shared.config.layout;
        let mut vanished = Vec::new();
        let mut telemetry_segments = Vec::new();
        for (name, rows) in &outcome.telemetry_segments {
            let present = layout
                .storage
                .exists(&layout.segment_dir.join(name))
                .unwrap_or(true);
            if present {
                telemetry_segments.push(name.clone());
            } else {
                vanished.push(name.clone());
                self.shared
                    .counters
                    .lost
                    .fetch_add(*rows, Ordering::Relaxed);
            }
        }
        let event_segments: Vec<String> = outcome
            .event_segments
            .iter()
            .filter(|n| {
                layout
                    .storage
                    .exists(&layout.events_dir.join(n))
                    .unwrap_or(true)
            })
            .cloned()
            .collect();
        let lost = self.shared.counters.lost.load(Ordering::Relaxed);
        let mut report = CloseReport::default();
        let merge = (|| -> Result<()> {
            if let (Some(final_path), Some((rows, size))) =
                (&layout.final_telemetry, outcome.final_telemetry)
            {
                report.files.push((final_path.clone(), rows, size));
            } else if let Some(final_path) = &layout.final_telemetry {
                let expected: u64 = outcome
                    .telemetry_segments
                    .iter()
                    .filter(|(n, _)| telemetry_segments.contains(n))
                    .map(|(_, rows)| rows)
                    .sum();
                let (rows, size) = layout.storage.finalize(
                    &layout.segment_dir,
                    &telemetry_segments,
                    final_path,
                    Some(expected),
                    || empty_file(final_path, &self.shared),
                )?;
                if telemetry_segments.len() != 1 || !layout.storage.is_local() {
                    // A merge (or an empty file) wrote new bytes; a rename did not.
                    self.shared
                        .counters
                        .bytes
                        .fetch_add(size, Ordering::Relaxed);
                }
                report.files.push((final_path.clone(), rows, size));
            } else {
                for (name, rows) in &outcome.telemetry_segments {
                    if telemetry_segments.contains(name) {
                        let p = layout.segment_dir.join(name);
                        let size = layout.storage.size(&p)?;
                        report.files.push((p, *rows, size));
                    }
                }
            }
            if let (Some(final_events), Some((rows, size))) =
                (&layout.final_events, outcome.final_events)
            {
                report.files.push((final_events.clone(), rows, size));
            } else if let Some(final_events) = &layout.final_events {
                let (rows, size) = layout.storage.finalize(
                    &layout.events_dir,
                    &event_segments,
                    final_events,
                    None,
                    || {
                        layout.storage.write_parquet(
                            final_events,
                            events_arrow_schema(),
                            &[],
                            events_props(&self.shared),
                        )
                    },
                )?;
                report.files.push((final_events.clone(), rows, size));
            } else {
                for name in &event_segments {
                    let p = layout.events_dir.join(name);
                    let size = layout.storage.size(&p)?;
                    report
                        .files
                        .push((p.clone(), layout.storage.row_count(&p)?, size));
                }
            }
            layout.storage.remove_dir_if_empty(&layout.segment_dir);
            Ok(())
        })();
        if let Some(e) = earlier {
            return Err(e);
        }
        merge?;
        if vanished.is_empty() && lost == 0 {
            self.check_final_rows(&report)?;
        }
        if !vanished.is_empty() {
            return Err(CoreError::write(format!(
                "published segments were deleted by something else before close: {}; \
                 their rows are lost, the others are merged",
                vanished.join(", ")
            )));
        }
        if lost > 0 {
            return Err(CoreError::write(format!(
                "{lost} rows could not be written and were lost; see the earlier write errors"
            )));
        }
        Ok(report)
    }
}

impl Recorder {
    /// The flusher thread died with its state (segments not merged, rows in
    /// memory): count every accepted row not in a published file as lost, so
    /// that the counters still add up, and say what to do.
    #[cold]
    fn flusher_died(&self, msg: &str) -> CoreError {
        let c = &self.shared.counters;
        let accounted = c.written.load(Ordering::Relaxed)
            + c.sampled_out.load(Ordering::Relaxed)
            + c.dropped.load(Ordering::Relaxed)
            + c.over_budget.load(Ordering::Relaxed)
            + c.lost.load(Ordering::Relaxed);
        let missing = c.offered.load(Ordering::Relaxed).saturating_sub(accounted);
        c.lost.fetch_add(missing, Ordering::Relaxed);
        // The panic was also recorded as the pending error; it is reported here.
        let _ = self.take_error();
        CoreError::write(format!(
            "the flusher thread panicked: {msg}; {missing} rows not yet written are lost \
             (counted in rows_lost); published segments are intact, run recover"
        ))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.owner.is_current() {
            // A forked child: the flusher thread is the parent's. Dropping its
            // handle would detach a thread that does not exist here.
            if let Ok(mut handle) = self.flusher.try_lock() {
                std::mem::forget(handle.take());
            }
            return;
        }
        // Closing at drop keeps every row; errors have nowhere to go here and
        // the published segments stay on disk for `recover` if the merge fails.
        let _ = self.close();
    }
}

fn check_constant(name: &str, dtype: &DType, value: &Value) -> Result<()> {
    let ok = matches!(
        (dtype, value),
        (DType::F64 | DType::F32, Value::F64(_))
            | (DType::I64, Value::I64(_))
            | (DType::Bool, Value::Bool(_))
            | (DType::Str, Value::Str(_))
    ) || matches!((dtype, value), (DType::Enum(v), Value::Str(s)) if v.contains(s));
    if ok {
        Ok(())
    } else {
        Err(CoreError::Schema(format!(
            "constant {value:?} does not fit field '{name}' of dtype {}",
            dtype.name()
        )))
    }
}

fn prepare_dirs(layout: &OutputLayout) -> Result<()> {
    // The folders that hold the segment folders exist from the start; the
    // segment folders themselves appear with the first flush (a short run
    // closed before it ever flushes never creates them). Object stores have
    // no folders.
    let storage = &layout.storage;
    if let Storage::Object(root) = storage {
        return prepare_object_layout(layout, root);
    }
    for dir in [&layout.segment_dir, &layout.events_dir] {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| CoreError::io("create directory", parent, e))?;
        }
    }
    for f in [&layout.final_telemetry, &layout.final_events]
        .into_iter()
        .flatten()
    {
        if storage.exists(f)? {
            return Err(CoreError::Exists(format!(
                "{} already exists: a recording is never appended to a finished one; use a new folder",
                storage.describe(f)
            )));
        }
    }
    if !storage
        .segments(&layout.segment_dir, &layout.telemetry_prefix)?
        .is_empty()
    {
        return Err(CoreError::Exists(format!(
            "{} already holds segments named {}*: recover or remove them, or use a new folder",
            storage.describe(&layout.segment_dir),
            layout.telemetry_prefix
        )));
    }
    Ok(())
}

/// The object-store twin of the checks above, in one listing of the run folder
/// instead of a request per file. Append-mode parts are not listed: their
/// folder holds every run's parts, so a listing per run start would grow with
/// the flow; a part name another run already took is refused by the
/// create-only put of the first flush instead (the rows stay for a retry).
fn prepare_object_layout(layout: &OutputLayout, root: &ObjectRoot) -> Result<()> {
    let (Some(final_telemetry), Some(final_events)) =
        (&layout.final_telemetry, &layout.final_events)
    else {
        return Ok(());
    };
    let Some(run_dir) = final_telemetry.parent() else {
        return Ok(());
    };
    let finals = [key_of(final_telemetry)?, key_of(final_events)?];
    let segment_prefix = format!(
        "{}/{}",
        key_of(&layout.segment_dir)?,
        layout.telemetry_prefix
    );
    for object in root.list(&key_of(run_dir)?)? {
        if finals.contains(&object.key) {
            return Err(CoreError::Exists(format!(
                "{} already exists: a recording is never appended to a finished one; use a new folder",
                root.url(&object.key)
            )));
        }
        if object.key.starts_with(&segment_prefix) && object.key.ends_with(".parquet") {
            return Err(CoreError::Exists(format!(
                "{} already holds segments named {}*: recover or remove them, or use a new folder",
                layout.storage.describe(&layout.segment_dir),
                layout.telemetry_prefix
            )));
        }
    }
    Ok(())
}

fn empty_file(path: &Path, shared: &Shared) -> Result<u64> {
    shared.config.layout.storage.write_parquet(
        path,
        Arc::clone(&shared.arrow_schema),
        &[],
        telemetry_props(shared),
    )
}

fn telemetry_props(shared: &Shared) -> parquet::file::properties::WriterProperties {
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
        parquet_io::key_values(shared.file_kv.iter().cloned()),
    )
}

/// Arrow schema of events files.
pub fn events_arrow_schema() -> SchemaRef {
    Arc::new(ArrowSchema::new(vec![
        ArrowField::new("run_id", DataType::Utf8, true),
        ArrowField::new("t_wall_ms", DataType::Float64, false),
        ArrowField::new("iter", DataType::Int64, true),
        ArrowField::new("event", DataType::Utf8, false),
        ArrowField::new("payload", DataType::Utf8, true),
    ]))
}

fn events_props(shared: &Shared) -> parquet::file::properties::WriterProperties {
    parquet_io::writer_properties(
        &["run_id", "event"],
        shared.config.compression,
        1 << 20,
        parquet_io::key_values(shared.file_kv.iter().cloned()),
    )
}

impl Shared {
    fn wake_flusher(&self) {
        if let Some(t) = self.flusher_thread.get() {
            t.unpark();
        }
    }

    /// Takes back the count of a row whose call fails without recording it
    /// (the ring was closed, or nothing drains it any more).
    #[cold]
    fn unoffer(&self) {
        self.counters.offered.fetch_sub(1, Ordering::Relaxed);
        if self.config.max_rows.is_some() {
            self.counters.accepted.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn record_error(&self, err: CoreError) {
        let mut slot = lock(&self.pending_error);
        // Keep the first error: it is usually the cause of the later ones.
        if slot.is_none() {
            *slot = Some(err);
        }
        self.has_error.store(true, Ordering::Release);
    }

    /// Asks the flusher to make every row pushed so far durable and waits.
    fn flush_and_wait(&self, closing: bool) -> Result<()> {
        let mut st = lock(&self.flush);
        st.target = st.target.max(self.ring.claimed());
        st.requested += 1;
        st.closing |= closing;
        let mine = st.requested;
        drop(st);
        self.wake_flusher();
        let mut st = lock(&self.flush);
        while st.completed < mine {
            if self.flusher_stopped.load(Ordering::Acquire) {
                // Nothing will answer: closed meanwhile, or the thread died
                // (its panic is the pending error the caller gets next).
                return Err(if self.ring.is_closed() {
                    CoreError::Closed
                } else {
                    CoreError::write("the flusher thread stopped before this flush completed")
                });
            }
            st = self
                .flush_done
                .wait_timeout(st, Duration::from_millis(50))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
            if st.completed < mine {
                drop(st);
                self.wake_flusher();
                st = lock(&self.flush);
            }
        }
        match st.last_error.take() {
            Some(msg) => Err(CoreError::write(msg)),
            None => Ok(()),
        }
    }
}

/// Rows drained from the ring and not yet in a published segment.
struct Pending {
    columns: Vec<Vec<u64>>,
    validity: Vec<Vec<bool>>,
    rows: usize,
}

impl Pending {
    fn new(stored: usize, with_validity: bool) -> Self {
        Pending {
            columns: vec![Vec::new(); stored],
            validity: if with_validity {
                vec![Vec::new(); stored]
            } else {
                Vec::new()
            },
            rows: 0,
        }
    }
}

struct Flusher {
    shared: Arc<Shared>,
    pending: Pending,
    /// Batches whose write failed, oldest first, kept for a retry.
    unwritten: VecDeque<RecordBatch>,
    unwritten_events: Vec<EventRow>,
    /// The last telemetry (events) write that failed, retried as it was.
    failed_telemetry: Option<WriteTarget>,
    failed_events: Option<WriteTarget>,
    telemetry_segments: Vec<(String, u64)>,
    event_segments: Vec<String>,
    next_seq: u64,
    next_event_seq: u64,
    last_write: Instant,
    /// Set by the closing flush request: the last write may go straight to
    /// the final file when nothing was published before.
    closing: bool,
    final_telemetry: Option<(u64, u64)>,
    final_events: Option<(u64, u64)>,
}

/// Where one segment write goes and how many of the kept batches (events) it
/// holds.
///
/// A write that failed is retried with exactly the same rows at the same
/// path, and rows that arrived meanwhile go to the next segment. On an object
/// store a failed put's outcome is unknown (it may have been stored with only
/// the response lost); a retry with the same bytes is then recognised by the
/// create-only put as this very file (`ObjectWriter::finish`), where a retry
/// with more rows would be refused forever, or a retry under a new name would
/// leave the rows twice. On a local disk the retry replaces what a failed
/// rename or folder fsync may have left.
#[derive(Debug, Clone)]
struct WriteTarget {
    /// The final file itself (a recording closed before its first flush).
    direct: bool,
    name: String,
    path: PathBuf,
    items: usize,
}

impl WriteTarget {
    /// A new write of `items` kept batches (events): segment `name` in `dir`,
    /// or, for a recording closed before its first flush (`first_and_last`),
    /// straight to its final file: one publish instead of a segment, a rename
    /// and a merge.
    fn next(
        final_file: Option<&PathBuf>,
        first_and_last: bool,
        dir: &Path,
        name: String,
        items: usize,
    ) -> Self {
        match final_file {
            Some(f) if first_and_last => WriteTarget {
                direct: true,
                name,
                path: f.clone(),
                items,
            },
            _ => WriteTarget {
                direct: false,
                path: dir.join(&name),
                name,
                items,
            },
        }
    }
}

/// Segments of at least this many rows are encoded on a scoped thread while
/// the flusher keeps draining the ring; smaller ones are written in place (a
/// thread start costs more than they take).
const CONCURRENT_WRITE_MIN_ROWS: usize = 16 * 1024;

impl Flusher {
    fn new(shared: Arc<Shared>) -> Self {
        let stored = shared.row_layout.stored_len();
        let with_validity = shared.row_layout.has_validity();
        Flusher {
            pending: Pending::new(stored, with_validity),
            shared,
            unwritten: VecDeque::new(),
            unwritten_events: Vec::new(),
            failed_telemetry: None,
            failed_events: None,
            telemetry_segments: Vec::new(),
            event_segments: Vec::new(),
            next_seq: 1,
            next_event_seq: 1,
            last_write: Instant::now(),
            closing: false,
            final_telemetry: None,
            final_events: None,
        }
    }

    /// Most rows kept in memory while the disk refuses them; past this the
    /// oldest are counted as lost so memory stays bounded.
    fn max_unwritten_rows(&self) -> usize {
        self.shared
            .config
            .segment_rows
            .saturating_mul(8)
            .max(1 << 20)
    }

    fn run(mut self) -> FlusherOutcome {
        let interval = Duration::from_secs_f64(self.shared.config.flush_interval_secs);
        // Drain often enough that producers rarely find the ring full, but
        // sleep when idle.
        let drain_period = interval.min(Duration::from_millis(20));
        loop {
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.cycle(interval)));
            match outcome {
                Ok(true) => break,
                Ok(false) => {}
                Err(panic) => {
                    let msg = format!(
                        "the flusher panicked: {}; published segments are intact",
                        panic_message(&panic)
                    );
                    // Report it once: to the flush() waiting for this cycle if
                    // there is one, else to the next producer call.
                    let waiting = {
                        let st = lock(&self.shared.flush);
                        st.requested > st.completed
                    };
                    if waiting {
                        self.complete_flush_requests(Some(msg));
                    } else {
                        self.shared.record_error(CoreError::write(msg));
                    }
                    if lock(&self.shared.flush).closing {
                        break;
                    }
                }
            }
            thread::park_timeout(drain_period);
        }
        let rows_not_written = self
            .unwritten
            .iter()
            .map(|b| b.num_rows() as u64)
            .sum::<u64>()
            + self.pending.rows as u64
            // Rows still in the ring: only if a closing cycle panicked.
            + self.shared.ring.len() as u64;
        let events_not_written =
            (self.unwritten_events.len() + lock(&self.shared.events).len()) as u64;
        FlusherOutcome {
            telemetry_segments: std::mem::take(&mut self.telemetry_segments),
            event_segments: std::mem::take(&mut self.event_segments),
            rows_not_written,
            events_not_written,
            final_telemetry: self.final_telemetry,
            final_events: self.final_events,
        }
    }

    /// One wake-up: drain, write what is due, answer flush requests.
    /// Returns true when the recorder is closing and everything is written.
    fn cycle(&mut self, interval: Duration) -> bool {
        fail::fail_point!("recorder::flush_cycle");
        self.drain_available();
        let (requested, completed, target, closing) = {
            let st = lock(&self.shared.flush);
            (st.requested, st.completed, st.target, st.closing)
        };
        if requested > completed {
            // Every row claimed before the request must be drained, including
            // rows a producer is still copying into its slot.
            while self.shared.ring.consumed() < target {
                if self.drain_available() == 0 {
                    thread::yield_now();
                }
            }
            self.closing = closing;
            let mut written = self.write_due(true);
            // A large segment is written while the ring keeps draining into
            // `pending`; at close those rows must go out too, not be left
            // behind as "kept for a retry".
            while closing && written.is_ok() && self.pending.rows > 0 {
                written = self.write_due(false);
            }
            let error = written.err().map(|e| e.to_string());
            let mut st = lock(&self.shared.flush);
            st.completed = requested;
            st.last_error = error;
            drop(st);
            self.shared.flush_done.notify_all();
            return closing;
        }
        let due = self.last_write.elapsed() >= interval;
        if due || self.pending.rows >= self.shared.config.segment_rows {
            if let Err(e) = self.write_due(due) {
                self.shared.record_error(e);
            }
        }
        false
    }

    fn complete_flush_requests(&mut self, error: Option<String>) {
        let mut st = lock(&self.shared.flush);
        st.completed = st.requested;
        st.last_error = error;
        drop(st);
        self.shared.flush_done.notify_all();
    }

    /// Moves what the ring holds into `pending`, writing full segments as
    /// they fill. Returns rows drained.
    fn drain_available(&mut self) -> usize {
        let mut total = 0;
        loop {
            if self.pending.rows >= self.shared.config.segment_rows {
                if let Err(e) = self.write_due(false) {
                    self.shared.record_error(e);
                }
                continue;
            }
            let n = self.drain_into_pending(self.shared.config.segment_rows);
            total += n;
            if n == 0 || self.pending.rows < self.shared.config.segment_rows {
                return total;
            }
        }
    }

    /// Runs `write` (encoding and publishing a segment) on a scoped thread
    /// while this one keeps draining the ring into `pending`: producers then
    /// wait for the encoder only once a whole segment has piled up behind it,
    /// not whenever the ring's few rows run out. Falls back to writing here if
    /// no thread can be started; a panic of the writer resumes here, where
    /// `run` turns it into an error (the batches stay kept for a retry).
    fn write_while_draining(&mut self, write: &(dyn Fn() -> Result<u64> + Sync)) -> Result<u64> {
        thread::scope(|scope| {
            let encoder = thread::Builder::new()
                .name("flightlog-encode".into())
                .spawn_scoped(scope, write);
            let Ok(encoder) = encoder else {
                return write();
            };
            // Up to a quarter segment piles up meanwhile: enough to cover an
            // encode at millions of rows per second, without holding two
            // whole segments in memory.
            let cap = self.pending.rows + (self.shared.config.segment_rows / 4).max(1);
            while !encoder.is_finished() {
                if self.drain_into_pending(cap) == 0 {
                    // Producers unpark this thread as the ring fills.
                    thread::park_timeout(Duration::from_millis(1));
                }
            }
            encoder
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Moves rows from the ring into `pending`, until it holds `cap` rows (at
    /// most a segment), without writing anything. Returns rows moved.
    fn drain_into_pending(&mut self, cap: usize) -> usize {
        let cap = cap.min(self.shared.config.segment_rows);
        let room = cap - self.pending.rows.min(cap);
        if room == 0 {
            return 0;
        }
        let pending = &mut self.pending;
        let layout = &self.shared.row_layout;
        let n = self.shared.ring.pop_with(room, |row| {
            for (slot, col) in pending.columns.iter_mut().enumerate() {
                col.push(row[slot]);
            }
            for (slot, v) in pending.validity.iter_mut().enumerate() {
                v.push(layout.is_valid(row, slot));
            }
        });
        pending.rows += n;
        n
    }

    /// Builds a batch of pending rows (if any) and writes it with earlier
    /// unwritten batches as one segment; writes pending events when
    /// `with_events`.
    fn write_due(&mut self, with_events: bool) -> Result<()> {
        let started = Instant::now();
        if self.pending.rows > 0 {
            let rows = self.pending.rows;
            match self.build_batch() {
                Ok(batch) => self.unwritten.push_back(batch),
                Err(e) => {
                    // Cannot happen with a validated schema; if it does, the
                    // rows are counted as lost rather than retried forever.
                    self.pending = Pending::new(
                        self.shared.row_layout.stored_len(),
                        self.shared.row_layout.has_validity(),
                    );
                    self.shared
                        .counters
                        .lost
                        .fetch_add(rows as u64, Ordering::Relaxed);
                    return Err(CoreError::write(format!(
                        "building a batch of {rows} rows failed, rows lost: {e}"
                    )));
                }
            }
        }
        let mut result = Ok(());
        if !self.unwritten.is_empty() {
            result = self.write_telemetry_segment();
        }
        if with_events {
            let ev = self.write_events_segment();
            if result.is_ok() {
                result = ev;
            }
        }
        self.last_write = Instant::now();
        self.shared
            .counters
            .flush_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result
    }

    fn write_telemetry_segment(&mut self) -> Result<()> {
        // A clone of the Arc, so that `self` stays free for draining meanwhile.
        let shared = Arc::clone(&self.shared);
        let layout = &shared.config.layout;
        let target = self.failed_telemetry.take().unwrap_or_else(|| {
            WriteTarget::next(
                layout.final_telemetry.as_ref(),
                self.closing && self.telemetry_segments.is_empty(),
                &layout.segment_dir,
                layout.telemetry_segment_name(self.next_seq),
                self.unwritten.len(),
            )
        });
        let batches: Vec<RecordBatch> = self.unwritten.iter().take(target.items).cloned().collect();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let write = || {
            if !target.direct {
                layout.storage.ensure_dir(&layout.segment_dir)?;
            }
            layout.storage.write_parquet(
                &target.path,
                Arc::clone(&shared.arrow_schema),
                &batches,
                telemetry_props(&shared),
            )
        };
        let written = if rows >= CONCURRENT_WRITE_MIN_ROWS {
            self.write_while_draining(&write)
        } else {
            write()
        };
        match written {
            Ok(size) => {
                self.unwritten.drain(..target.items);
                self.next_seq += 1;
                if target.direct {
                    self.final_telemetry = Some((rows as u64, size));
                } else {
                    self.telemetry_segments.push((target.name, rows as u64));
                }
                let c = &self.shared.counters;
                c.written.fetch_add(rows as u64, Ordering::Relaxed);
                c.segments.fetch_add(1, Ordering::Relaxed);
                c.bytes.fetch_add(size, Ordering::Relaxed);
                if self.unwritten.is_empty() {
                    Ok(())
                } else {
                    // Rows kept since a failed write was retried: the next segment.
                    self.write_telemetry_segment()
                }
            }
            Err(e) => {
                // Keep the rows for a retry, up to a bound.
                let mut lost = 0;
                let mut kept: usize = self.unwritten.iter().map(|b| b.num_rows()).sum();
                while kept > self.max_unwritten_rows() && self.unwritten.len() > 1 {
                    if let Some(b) = self.unwritten.pop_front() {
                        lost += b.num_rows();
                        kept -= b.num_rows();
                    }
                }
                if lost > 0 {
                    self.shared
                        .counters
                        .lost
                        .fetch_add(lost as u64, Ordering::Relaxed);
                    // The failed write's rows changed, so the retry cannot be
                    // the same file: a fresh name, from the kept rows.
                    self.next_seq += 1;
                }
                let path = layout.storage.describe(&target.path);
                if lost == 0 {
                    self.failed_telemetry = Some(target);
                }
                let fate = if lost > 0 {
                    format!(
                        "{kept} rows kept in memory for a retry, {lost} older rows lost (memory bound)"
                    )
                } else {
                    format!("{kept} rows kept in memory for a retry")
                };
                Err(CoreError::write(format!(
                    "writing segment {path}: {e}; {fate}"
                )))
            }
        }
    }

    fn write_events_segment(&mut self) -> Result<()> {
        self.unwritten_events
            .extend(std::mem::take(&mut *lock(&self.shared.events)));
        if self.unwritten_events.is_empty() {
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        let layout = &shared.config.layout;
        let target = self.failed_events.take().unwrap_or_else(|| {
            WriteTarget::next(
                layout.final_events.as_ref(),
                self.closing && self.event_segments.is_empty(),
                &layout.events_dir,
                layout.events_segment_name(self.next_event_seq),
                self.unwritten_events.len(),
            )
        });
        let events = &self.unwritten_events[..target.items];
        let written = (|| {
            if !target.direct {
                layout.storage.ensure_dir(&layout.events_dir)?;
            }
            let batch = build_events_batch(shared.config.run_id.as_deref(), events)?;
            layout.storage.write_parquet(
                &target.path,
                events_arrow_schema(),
                &[batch],
                events_props(&shared),
            )
        })();
        match written {
            Ok(size) => {
                self.unwritten_events.drain(..target.items);
                self.next_event_seq += 1;
                if target.direct {
                    self.final_events = Some((target.items as u64, size));
                } else {
                    self.event_segments.push(target.name);
                }
                self.shared
                    .counters
                    .bytes
                    .fetch_add(size, Ordering::Relaxed);
                if self.unwritten_events.is_empty() {
                    Ok(())
                } else {
                    self.write_events_segment()
                }
            }
            Err(e) => {
                let n = self.unwritten_events.len();
                let path = layout.storage.describe(&target.path);
                self.failed_events = Some(target);
                Err(CoreError::write(format!(
                    "writing events segment {path}: {e}; {n} events kept in memory for a retry"
                )))
            }
        }
    }

    fn build_batch(&mut self) -> Result<RecordBatch> {
        let shared = &*self.shared;
        let n = self.pending.rows;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(shared.schema.fields.len());
        for (i, field) in shared.schema.fields.iter().enumerate() {
            let array: ArrayRef = match shared.row_layout.slot_of_field(i) {
                None => constant_array(
                    &field.dtype,
                    shared.constants[i]
                        .as_ref()
                        .expect("constant field has a value"),
                    n,
                ),
                Some(slot) => {
                    let words = std::mem::take(&mut self.pending.columns[slot]);
                    let nulls = self
                        .pending
                        .validity
                        .get_mut(slot)
                        .map(std::mem::take)
                        .filter(|v| v.iter().any(|ok| !ok))
                        .map(NullBuffer::from);
                    column_array(&field.dtype, words, nulls, shared.dictionaries[i].as_ref())?
                }
            };
            columns.push(array);
        }
        for v in &mut self.pending.validity {
            v.clear();
        }
        self.pending.rows = 0;
        Ok(RecordBatch::try_new(
            Arc::clone(&shared.arrow_schema),
            columns,
        )?)
    }
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

fn build_events_batch(run_id: Option<&str>, events: &[EventRow]) -> Result<RecordBatch> {
    let n = events.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![run_id; n])),
        Arc::new(Float64Array::from_iter_values(
            events.iter().map(|e| e.t_wall_ms),
        )),
        Arc::new(Int64Array::from_iter(events.iter().map(|e| e.iter))),
        Arc::new(StringArray::from_iter_values(
            events.iter().map(|e| e.name.as_str()),
        )),
        Arc::new(StringArray::from_iter(
            events.iter().map(|e| e.payload.as_deref()),
        )),
    ];
    Ok(RecordBatch::try_new(events_arrow_schema(), columns)?)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}
