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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
use flightlog_ring::{Cursor, Full, Gate, LaneState, Lanes};
use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::claim::{instance_id, Claim, Owner};
use crate::dict::Dictionary;
use crate::error::{CoreError, Result};
use crate::layout::{OutputLayout, RowLayout};
use crate::parquet_io::{self, Codec, FORMAT_VERSION};
use crate::producer::{self, LaneRing};
use crate::schema::{DType, Schema, Value};
use crate::spool::{self, Spool, SpoolMeta, SpooledEvent};
use crate::storage::{key_of, Storage};
use crate::store::ObjectRoot;

/// A push that found the ring full under `OnFull::Block`; [`Blocked::wait`]
/// completes it.
pub struct Blocked<'a> {
    shared: &'a Shared,
    row: &'a [u64],
    lane: &'a LaneRing,
    lane_index: usize,
    cursor: &'a mut Cursor,
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
                self.shared.unoffer(self.lane);
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
            let Ok(_busy) = self.shared.gate.enter(&self.shared.lanes, self.lane_index) else {
                self.shared.unoffer(self.lane);
                return Err(CoreError::Closed);
            };
            if self.lane.ring.push(self.cursor, self.row).is_ok() {
                return Ok(Offer::Accepted);
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
    /// Where the spool of a recorder on an object store lives (a local
    /// folder); None: `FLIGHTLOG_SPOOL_DIR`, else the user's cache folder.
    /// A local recording's spool is always beside its claim file.
    pub spool_dir: Option<PathBuf>,
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
            spool_dir: None,
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

/// What [`Recorder::offer_in_place`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InPlace {
    /// The row was offered: what happened to it.
    Offered(Offer),
    /// Nothing recorded or counted: offer the row through `push_with`.
    Declined,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    written: AtomicU64,
    sampled_out: AtomicU64,
    over_budget: AtomicU64,
    lost: AtomicU64,
    segments: AtomicU64,
    bytes: AtomicU64,
    flush_nanos: AtomicU64,
    events: AtomicU64,
}

#[derive(Default)]
struct FlushState {
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

/// Most threads that record into one recorder at the same time.
pub const MAX_LANES: usize = 256;

pub(crate) struct Shared {
    /// The recording threads' lanes, their rings (mapped on a lane's first
    /// claim), and the gate that closes them.
    pub(crate) lanes: Lanes,
    pub(crate) gate: Gate,
    lane_rings: Box<[OnceLock<LaneRing>]>,
    lane_init: Mutex<()>,
    spool: Arc<Spool>,
    /// Rows offered, for the sampling policy's index (only with sampling).
    sample_index: AtomicU64,
    /// Events recorded so far: the next event's sequence number.
    events_seq: AtomicU64,
    schema: Schema,
    arrow_schema: SchemaRef,
    row_layout: RowLayout,
    dictionaries: Vec<Option<Dictionary>>,
    constants: Vec<Option<Value>>,
    config: RecorderConfig,
    counters: Counters,
    start: Instant,
    iter_slot: Option<usize>,
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
    /// times per lap of their ring (its capacity is a power of two).
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
        let dictionaries: Vec<Option<Dictionary>> = schema
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

        let ring_capacity = config.ring_capacity.next_power_of_two().max(2);
        let wake_mask = (ring_capacity as u64 / 4).max(1) - 1;
        let spool_meta = SpoolMeta {
            format: 1,
            boot_id: spool::boot_id(),
            pid: std::process::id(),
            instance: config.layout.instance.unwrap_or(0),
            width: row_layout.width(),
            ring_capacity,
            schema_json: schema.to_json(),
            constants: config
                .constants
                .iter()
                .map(|(k, v)| (k.clone(), constant_json(v)))
                .collect(),
            file_kv: file_kv.clone(),
            run_id: config.run_id.clone(),
        };
        let (spool_base, local) = spool_dir(&config);
        if local {
            spool::check_no_unfinished(&spool_base)?;
        }
        let spool = Arc::new(Spool::create(&spool_base, &spool_meta)?);
        for (i, d) in dictionaries.iter().enumerate() {
            if let Some(d) = d {
                d.spool_to(i, Arc::clone(&spool));
            }
        }
        let shared = Arc::new(Shared {
            lanes: Lanes::new(MAX_LANES),
            gate: Gate::new(Some(crate::barrier::process_wide_fence)),
            lane_rings: (0..MAX_LANES).map(|_| OnceLock::new()).collect(),
            lane_init: Mutex::new(()),
            spool,
            sample_index: AtomicU64::new(0),
            events_seq: AtomicU64::new(0),
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
        self.offer_open(row, on_block)
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
        self.offer_open(row, on_block)
    }

    /// The body of every offer, once the caller checked that the recorder is
    /// open (a `close` racing this call is caught by the gate).
    #[inline(always)]
    fn offer_open(
        &self,
        row: &[u64],
        on_block: impl FnOnce(Blocked<'_>) -> Result<Offer>,
    ) -> Result<Offer> {
        let shared = &self.shared;
        producer::with_lane(shared, |lane, cursor, lane_index| {
            let iter = shared
                .iter_slot
                .filter(|&slot| shared.row_layout.is_valid(row, slot))
                .map(|slot| row[slot] as i64);
            if let Some(refused) = self.admit(lane, iter) {
                return Ok(refused);
            }
            let Ok(busy) = shared.gate.enter(&shared.lanes, lane_index) else {
                // `close` began after this call passed the closed check: the
                // call fails, so the row is not counted.
                shared.unoffer(lane);
                return Err(CoreError::Closed);
            };
            let pushed = lane.ring.push(cursor, row);
            drop(busy);
            match pushed {
                Ok(pos) => Ok(shared.accepted(pos)),
                Err(Full) => match shared.config.on_full {
                    OnFull::Drop => {
                        LaneRing::bump(&lane.dropped, 1);
                        if shared.config.max_rows.is_some() {
                            shared.counters.accepted.fetch_sub(1, Ordering::Relaxed);
                        }
                        shared.wake_flusher();
                        Ok(Offer::Dropped)
                    }
                    OnFull::Block => {
                        LaneRing::bump(&lane.stalls, 1);
                        on_block(Blocked {
                            shared,
                            row,
                            lane,
                            lane_index,
                            cursor,
                        })
                    }
                },
            }
        })
    }

    /// Offers one row that `fill` writes straight into the calling thread's
    /// ring slot (the row words of [`RowLayout`], validity words included):
    /// the row is not built on the stack and copied. `fill` returns false to
    /// decline (a value it does not convert); so does a full ring. A declined
    /// row is not recorded, not counted, and its half-written slot is never
    /// published: the caller then offers it through [`Recorder::push_with`],
    /// which applies `on_full`. Otherwise like `push_with`: the same checks,
    /// sampling, budget and counters, in the same order.
    #[inline(always)]
    pub fn offer_in_place(&self, fill: impl FnOnce(&[AtomicU64]) -> bool) -> Result<InPlace> {
        self.check_open()?;
        let shared = &self.shared;
        producer::with_lane(shared, |lane, cursor, lane_index| {
            let Some(words) = lane.ring.reserve(cursor) else {
                return Ok(InPlace::Declined);
            };
            if !fill(words) {
                return Ok(InPlace::Declined);
            }
            let iter = shared.iter_slot.and_then(|slot| {
                let valid = shared
                    .row_layout
                    .validity_of(slot)
                    .is_none_or(|(word, bit)| words[word].load(Ordering::Relaxed) & bit != 0);
                valid.then(|| words[slot].load(Ordering::Relaxed) as i64)
            });
            if let Some(refused) = self.admit(lane, iter) {
                return Ok(InPlace::Offered(refused));
            }
            let Ok(busy) = shared.gate.enter(&shared.lanes, lane_index) else {
                shared.unoffer(lane);
                return Err(CoreError::Closed);
            };
            let pos = lane.ring.publish(cursor);
            drop(busy);
            Ok(InPlace::Offered(shared.accepted(pos)))
        })
    }

    /// Counts an offered row and applies sampling and the row budget: the
    /// refusal, if the row goes no further. `iter` is the row's iteration,
    /// remembered for the events that follow it.
    #[inline(always)]
    fn admit(&self, lane: &LaneRing, iter: Option<i64>) -> Option<Offer> {
        let shared = &self.shared;
        LaneRing::bump(&lane.offered, 1);
        if let Some(s) = shared.config.sampling {
            // The policy counts rows across threads: one shared counter,
            // paid only by recorders that sample.
            let index = shared.sample_index.fetch_add(1, Ordering::Relaxed);
            if !s.keeps(index) {
                shared.counters.sampled_out.fetch_add(1, Ordering::Relaxed);
                return Some(Offer::SampledOut);
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
                return Some(Offer::OverBudget { first });
            }
        }
        if let Some(iter) = iter {
            lane.last_iter.store(iter, Ordering::Relaxed);
            lane.has_iter.store(true, Ordering::Relaxed);
        }
        None
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
        let iter = shared.last_iter(producer::current_lane(&self.shared));
        let mut events = lock(&shared.events);
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let event = EventRow {
            t_wall_ms: t_wall_ms.unwrap_or_else(|| self.now_ms()),
            iter,
            name: name.to_owned(),
            payload,
        };
        // In the spool before the call returns (under the events lock, so
        // sequence numbers follow the order of `events`).
        let seq = shared.events_seq.fetch_add(1, Ordering::Relaxed);
        if shared
            .spool
            .log_event(
                seq,
                &SpooledEvent {
                    t_wall_ms: event.t_wall_ms,
                    iter: event.iter,
                    name: event.name.clone(),
                    payload: event.payload.clone(),
                },
            )
            .is_err()
        {
            shared.spool.errors.fetch_add(1, Ordering::Relaxed);
        }
        events.push(event);
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
        let (mut offered, mut dropped, mut stalls) = (0, 0, 0);
        for lane in self.shared.lane_rings.iter().filter_map(OnceLock::get) {
            offered += lane.offered.load(Ordering::Relaxed);
            dropped += lane.dropped.load(Ordering::Relaxed);
            stalls += lane.stalls.load(Ordering::Relaxed);
        }
        Stats {
            rows_offered: offered,
            rows_written: c.written.load(Ordering::Relaxed),
            rows_sampled_out: c.sampled_out.load(Ordering::Relaxed),
            rows_dropped: dropped,
            rows_over_budget: c.over_budget.load(Ordering::Relaxed),
            rows_lost: c.lost.load(Ordering::Relaxed),
            segments: c.segments.load(Ordering::Relaxed),
            bytes_written: c.bytes.load(Ordering::Relaxed),
            flush_nanos: c.flush_nanos.load(Ordering::Relaxed),
            producer_stalls: stalls,
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
        let mut spins = 0u32;
        self.shared.gate.close(&self.shared.lanes, || {
            // A producer is between its closed check and its publish: a few
            // instructions, unless it was preempted there.
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        });
        // A barrier for `push_event`, which reads `closed` under this lock.
        drop(lock(&self.shared.events));
        let flush_result = self.shared.flush_and_wait(true);
        let outcome = match lock(&self.flusher).take().map(|h| h.join()) {
            Some(Ok(Ok(outcome))) => outcome,
            Some(Ok(Err(msg))) => return Err(self.flusher_died(&msg)),
            Some(Err(panic)) => return Err(self.flusher_died(&panic_message(&panic))),
            None => return Ok(CloseReport::default()),
        };
        // Every row and event is in a published file (a segment, or the final
        // file): the spool has nothing recovery would need. Otherwise it stays
        // for `recover`, which salvages what the disk refused here.
        // Nothing writes the rings or the spool's files any more (the gate is
        // closed, the flusher stopped): let go of them, so that threads that
        // recorded (their registrations outlive the recorder) hold no file.
        self.shared.spool.close_files();
        for lane in self.shared.lane_rings.iter().filter_map(OnceLock::get) {
            lane.ring.memory().release_file();
        }
        if outcome.rows_not_written == 0 && outcome.events_not_written == 0 {
            self.shared.spool.remove();
        }
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
                            events_props(&self.shared, 0),
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
        let stats = self.stats();
        let accounted = stats.rows_written
            + stats.rows_sampled_out
            + stats.rows_dropped
            + stats.rows_over_budget
            + stats.rows_lost;
        let missing = stats.rows_offered.saturating_sub(accounted);
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

/// Where a recorder's spool lives, and whether it is the local folder's own:
/// on a local disk beside its segments (parts: beside its claim file); for
/// an object store, in
/// `config.spool_dir`, `FLIGHTLOG_SPOOL_DIR` or the user's cache folder,
/// named after the run's location (so that `recover` on this host finds it).
pub fn spool_dir(config: &RecorderConfig) -> (PathBuf, bool) {
    let layout = &config.layout;
    if layout.storage.is_local() {
        // Beside the segments of a recording that is merged at close (a run
        // folder: `run/.flightlog.spool`), so that two layouts sharing one
        // claim (an output file and its replacement) never share a spool.
        let beside_segments = layout
            .final_telemetry
            .as_ref()
            .and(layout.segment_dir.parent())
            .filter(|p| !p.as_os_str().is_empty());
        if let Some(dir) = beside_segments {
            return (dir.join(spool::SPOOL_DIR_NAME), true);
        }
        // Append-mode parts share their folder: named after the run's claim.
        if let Some(lock) = crate::claim::lock_path(layout) {
            return (spool::spool_dir_for_lock(&lock), true);
        }
    }
    let base = match config
        .spool_dir
        .clone()
        .or_else(|| std::env::var_os("FLIGHTLOG_SPOOL_DIR").map(PathBuf::from))
    {
        Some(d) => d,
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("flightlog")
            .join("spool"),
    };
    let mut name: String = layout
        .storage
        .describe(&layout.segment_dir.join(&layout.telemetry_prefix))
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    name.push_str(".spool");
    (base.join(name), false)
}

/// A constant's value as JSON (the spool's metadata).
fn constant_json(v: &Value) -> serde_json::Value {
    match v {
        Value::F64(x) => serde_json::json!({"f64": x}),
        Value::I64(x) => serde_json::json!({"i64": x}),
        Value::Bool(x) => serde_json::json!({"bool": x}),
        Value::Str(x) => serde_json::json!({"str": x}),
        Value::Null => serde_json::Value::Null,
    }
}

/// The inverse of [`constant_json`].
pub(crate) fn constant_from_json(v: &serde_json::Value) -> Option<Value> {
    if v.is_null() {
        return Some(Value::Null);
    }
    let o = v.as_object()?;
    let (k, x) = o.iter().next()?;
    Some(match k.as_str() {
        "f64" => Value::F64(x.as_f64()?),
        "i64" => Value::I64(x.as_i64()?),
        "bool" => Value::Bool(x.as_bool()?),
        "str" => Value::Str(x.as_str()?.to_owned()),
        _ => return None,
    })
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
        telemetry_props(shared, Vec::new()),
    )
}

fn telemetry_props(
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

/// `events_upto`: the events in published files once this one is (their
/// sequence numbers are below it; see [`spool::EVENTS_UPTO_KEY`]).
fn events_props(shared: &Shared, events_upto: u64) -> parquet::file::properties::WriterProperties {
    let upto = (spool::EVENTS_UPTO_KEY.to_string(), events_upto.to_string());
    parquet_io::writer_properties(
        &["run_id", "event"],
        shared.config.compression,
        1 << 20,
        parquet_io::key_values(shared.file_kv.iter().cloned().chain([upto])),
    )
}

impl Shared {
    /// Lane `i`'s ring, once mapped.
    pub(crate) fn lane(&self, i: usize) -> Option<&LaneRing> {
        self.lane_rings[i].get()
    }

    /// Lane `i`'s ring, mapping it in the spool on the lane's first use.
    pub(crate) fn ensure_lane(&self, i: usize) -> Result<&LaneRing> {
        if let Some(lane) = self.lane_rings[i].get() {
            return Ok(lane);
        }
        let _guard = lock(&self.lane_init);
        if let Some(lane) = self.lane_rings[i].get() {
            return Ok(lane);
        }
        let ring = self.spool.map_lane(i);
        let _ = self.lane_rings[i].set(LaneRing::new(ring));
        Ok(self.lane_rings[i].get().expect("just set"))
    }

    /// The last `iter` recorded: by the calling thread's lane if it has one,
    /// else by any lane.
    fn last_iter(&self, mine: Option<usize>) -> Option<i64> {
        let of = |lane: &LaneRing| {
            lane.has_iter
                .load(Ordering::Relaxed)
                .then(|| lane.last_iter.load(Ordering::Relaxed))
        };
        mine.and_then(|i| self.lane(i)).and_then(of).or_else(|| {
            self.lane_rings
                .iter()
                .filter_map(OnceLock::get)
                .find_map(of)
        })
    }

    pub(crate) fn wake_flusher(&self) {
        if let Some(t) = self.flusher_thread.get() {
            t.unpark();
        }
    }

    /// Takes back the count of a row whose call fails without recording it
    /// (the ring was closed, or nothing drains it any more).
    #[cold]
    /// A row published at `pos`: wakes the flusher a few times per ring lap
    /// so that it drains before the producer ever finds its ring full.
    #[inline(always)]
    fn accepted(&self, pos: u64) -> Offer {
        if pos & self.wake_mask == self.wake_mask {
            self.wake_flusher();
        }
        Offer::Accepted
    }

    fn unoffer(&self, lane: &LaneRing) {
        LaneRing::bump(&lane.offered, u64::MAX); // minus one
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
                return Err(if self.gate.is_closed() {
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
    /// Ring positions the rows came from, per lane: [start, end).
    cover: Cover,
}

/// Ring positions per lane, [start, end): what a batch or segment holds.
type Cover = BTreeMap<usize, (u64, u64)>;

fn extend_cover(cover: &mut Cover, lane: usize, start: u64, end: u64) {
    let e = cover.entry(lane).or_insert((start, end));
    e.0 = e.0.min(start);
    e.1 = e.1.max(end);
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
            cover: Cover::new(),
        }
    }
}

struct Flusher {
    shared: Arc<Shared>,
    pending: Pending,
    /// Batches whose write failed, oldest first, kept for a retry, with the
    /// ring positions they hold.
    unwritten: VecDeque<(RecordBatch, Cover)>,
    /// Per lane: the next ring position to drain.
    drained: Vec<u64>,
    /// The lane a drain starts with (rotates, so no lane waits behind others).
    next_lane: usize,
    /// Drained rows as journal records (`lane`, `pos`, row words), reused.
    journal_buf: Vec<u64>,
    /// Events in published segments (their sequence numbers are below).
    events_published: u64,
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
            drained: vec![0; MAX_LANES],
            next_lane: 0,
            journal_buf: Vec::new(),
            events_published: 0,
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
            .map(|(b, _)| b.num_rows() as u64)
            .sum::<u64>()
            + self.pending.rows as u64
            // Rows still in the rings: only if a closing cycle panicked.
            + self.undrained();
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
        let (requested, completed, closing) = {
            let st = lock(&self.shared.flush);
            (st.requested, st.completed, st.closing)
        };
        if requested > completed {
            // Every row published before the request must be drained: a push
            // publishes before it returns, so those are the rows published now.
            let targets: Vec<(usize, u64)> = (0..MAX_LANES)
                .filter_map(|i| self.shared.lane(i).map(|l| (i, l.ring.published())))
                .collect();
            while targets.iter().any(|&(i, t)| self.drained[i] < t) {
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

    /// Rows published in the rings and not yet drained.
    fn undrained(&self) -> u64 {
        (0..MAX_LANES)
            .filter_map(|i| {
                self.shared
                    .lane(i)
                    .map(|l| l.ring.published() - self.drained[i])
            })
            .sum()
    }

    /// Moves rows from the lanes' rings into `pending`, until it holds `cap`
    /// rows (at most a segment), without writing a segment. Returns rows
    /// moved.
    ///
    /// The rows are appended to the spool's journal before their slots are
    /// released: until a segment holds them, a row is always in a ring or in
    /// the journal, both of which outlive the process. A retired lane whose
    /// rows are all drained is freed for a new thread.
    fn drain_into_pending(&mut self, cap: usize) -> usize {
        let cap = cap.min(self.shared.config.segment_rows);
        let mut room = cap - self.pending.rows.min(cap);
        if room == 0 {
            return 0;
        }
        let shared = Arc::clone(&self.shared);
        let width = shared.row_layout.width();
        let mut row = vec![0u64; width];
        let mut moved = 0;
        let mut touched: Vec<(usize, u64)> = Vec::new();
        let mut retired: Vec<usize> = Vec::new();
        self.journal_buf.clear();
        for k in 0..MAX_LANES {
            let i = (self.next_lane + k) % MAX_LANES;
            let state = shared.lanes.state(i);
            if state == LaneState::Free {
                continue;
            }
            let Some(lane) = shared.lane(i) else {
                // Claimed, then its ring could not be mapped: nothing to drain.
                if state == LaneState::Retired {
                    shared.lanes.free_if_drained(i);
                }
                continue;
            };
            // Read after the state: a retired lane's rows are all published.
            let end = lane.ring.published();
            let from = self.drained[i];
            let n = ((end - from) as usize).min(room);
            for pos in from..from + n as u64 {
                lane.ring.read(pos, &mut row);
                self.journal_buf.push(i as u64);
                self.journal_buf.push(pos);
                self.journal_buf.extend_from_slice(&row);
                for (slot, col) in self.pending.columns.iter_mut().enumerate() {
                    col.push(row[slot]);
                }
                for (slot, v) in self.pending.validity.iter_mut().enumerate() {
                    v.push(shared.row_layout.is_valid(&row, slot));
                }
            }
            if n > 0 {
                extend_cover(&mut self.pending.cover, i, from, from + n as u64);
                self.drained[i] = from + n as u64;
                touched.push((i, from + n as u64));
                moved += n;
                room -= n;
            }
            if state == LaneState::Retired && self.drained[i] == end {
                retired.push(i);
            }
            if room == 0 {
                // Next time, start after the lane that filled this drain.
                self.next_lane = (i + 1) % MAX_LANES;
                break;
            }
        }
        self.pending.rows += moved;
        if moved > 0 && shared.spool.journal(&self.journal_buf).is_err() {
            // The rows are in memory and go to the next segment as usual; only
            // their protection against a crash before then is gone. Counted.
            shared.spool.errors.fetch_add(1, Ordering::Relaxed);
        }
        for (i, upto) in touched {
            if let Some(lane) = shared.lane(i) {
                lane.ring.release(upto);
            }
        }
        for i in retired {
            shared.lanes.free_if_drained(i);
        }
        moved
    }

    /// Builds a batch of pending rows (if any) and writes it with earlier
    /// unwritten batches as one segment; writes pending events when
    /// `with_events`.
    fn write_due(&mut self, with_events: bool) -> Result<()> {
        let started = Instant::now();
        if self.pending.rows > 0 {
            let rows = self.pending.rows;
            let cover = std::mem::take(&mut self.pending.cover);
            match self.build_batch() {
                Ok(batch) => self.unwritten.push_back((batch, cover)),
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
        let mut cover = Cover::new();
        let batches: Vec<RecordBatch> = self
            .unwritten
            .iter()
            .take(target.items)
            .map(|(b, c)| {
                for (&lane, &(start, end)) in c {
                    extend_cover(&mut cover, lane, start, end);
                }
                b.clone()
            })
            .collect();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let lanes_kv = vec![(spool::LANES_KEY.to_string(), spool::format_lanes(&cover))];
        // Rows drained from now on are journaled apart: once this segment is
        // published they are the only ones the spool still needs.
        let journals_before = shared.spool.rotate_journal();
        let write = || {
            if !target.direct {
                layout.storage.ensure_dir(&layout.segment_dir)?;
            }
            layout.storage.write_parquet(
                &target.path,
                Arc::clone(&shared.arrow_schema),
                &batches,
                telemetry_props(&shared, lanes_kv.clone()),
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
                if self.unwritten.is_empty() {
                    shared.spool.drop_journals(journals_before);
                }
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
                let mut kept: usize = self.unwritten.iter().map(|(b, _)| b.num_rows()).sum();
                while kept > self.max_unwritten_rows() && self.unwritten.len() > 1 {
                    if let Some((b, _)) = self.unwritten.pop_front() {
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
                events_props(&shared, self.events_published + target.items as u64),
            )
        })();
        match written {
            Ok(size) => {
                self.unwritten_events.drain(..target.items);
                self.events_published += target.items as u64;
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
        batch_from_rows(
            &shared.schema,
            &shared.arrow_schema,
            &shared.row_layout,
            &shared.dictionaries,
            &shared.constants,
            &mut self.pending,
        )
    }
}

/// Builds a telemetry batch of `pending`'s rows (which it leaves empty).
fn batch_from_rows(
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
    let events = if s.events.is_empty() {
        None
    } else {
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
        Some(build_events_batch(meta.run_id.as_deref(), &rows)?)
    };
    Ok(Some(SalvagedBatches {
        telemetry,
        events,
        arrow_schema,
        file_kv: meta.file_kv.clone(),
    }))
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
