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

mod batch;
mod chunks;
mod config;
mod events;
mod finish;
mod flusher;
mod pending;
mod rows;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use arrow_schema::SchemaRef;
use flightlog_ring::{Cursor, Full, Gate, Lanes};
use std::sync::OnceLock;

use crate::claim::{instance_id, Claim, Owner};
use crate::dict::Dictionary;
use crate::error::{CoreError, Result};
use crate::output_layout::OutputLayout;
use crate::parquet_io::FORMAT_VERSION;
use crate::producer::{self, LaneRing};
use crate::row_layout::RowLayout;
use crate::schema::{DType, Schema, Value};
use crate::spool::{self, Spool, SpoolMeta, SpooledEvent};

pub(crate) use batch::{salvage_props, salvaged_batches};
use config::{check_constant, constant_json};
pub use config::{shared_spool_base, spool_dir, spool_location, OnFull, RecorderConfig, Sampling};
pub use events::events_arrow_schema;
use events::EventRow;
use finish::prepare_dirs;
pub use finish::CloseReport;
use flusher::{run_flusher, FlushState, FlusherExit};
pub use pending::{NotStarted, PendingRecorder, ReadyRecorder};
pub use rows::RowCall;
use rows::RowRules;

/// A push that found the ring full under `OnFull::Block`; [`Blocked::wait`]
/// completes it.
pub struct Blocked<'a> {
    shared: &'a Shared,
    row: &'a [u64],
    lane: &'a LaneRing,
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
            let Ok(_busy) = self.shared.gate.enter(&self.lane.busy) else {
                self.shared.unoffer(self.lane);
                return Err(CoreError::Closed);
            };
            if self.lane.ring.push(self.cursor, self.row).is_ok() {
                return Ok(Offer::Accepted);
            }
        }
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
    /// Spool files that could not be made or appended to (a full disk): a
    /// ring or a chunk of drained rows kept in memory instead, or a string or
    /// event not logged. Rows and events since are protected against a crash
    /// only once they are in a published file.
    pub spool_errors: u64,
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

/// Most threads that record into one recorder at the same time.
pub const MAX_LANES: usize = 256;

/// `repr(C)`: a row reads [`RowPath`] and the gate (its flags and the lanes'
/// busy words): these first, in two cache lines.
#[repr(C)]
pub(crate) struct Shared {
    /// What every row reads, in one cache line.
    row_path: RowPath,
    /// The recording threads' lanes, their rings (mapped on a lane's first
    /// claim), and the gate that closes them.
    pub(crate) gate: Gate,
    pub(crate) lanes: Lanes,
    lane_rings: Box<[OnceLock<Arc<LaneRing>>]>,
    lane_init: Mutex<()>,
    spool: Arc<Spool>,
    /// Rows offered, for the sampling policy's index (only with sampling).
    sample_index: AtomicU64,
    /// Events recorded so far: the next event's sequence number.
    events_seq: AtomicU64,
    schema: Schema,
    arrow_schema: SchemaRef,
    row_layout: RowLayout,
    /// What fills the fields a row leaves out.
    rules: RowRules,
    dictionaries: Vec<Option<Dictionary>>,
    constants: Vec<Option<Value>>,
    config: RecorderConfig,
    counters: Counters,
    start: Instant,
    budget_hit: AtomicBool,
    /// A write error not yet reported to a producer.
    pending_error: Mutex<Option<CoreError>>,
    flush: Mutex<FlushState>,
    flush_done: Condvar,
    events: Mutex<Vec<EventRow>>,
    flusher_thread: std::sync::OnceLock<Thread>,
    /// Set when the flusher thread has returned (normally at close, or after a
    /// panic outside its per-cycle guard): nothing drains the ring any more,
    /// so waiting producers and flushes give up instead of hanging.
    flusher_stopped: AtomicBool,
    file_kv: Vec<(String, String)>,
    /// What of `config.sync_first` is still owed (see [`Shared::sync_first`]).
    owed_syncs: Mutex<Vec<PathBuf>>,
}

/// The fields of [`Shared`] a recorded row reads, together. A solver's loop
/// evicts the recorder's data between two rows, so each cache line a row
/// touches is a miss: these were spread over six lines of `Shared` (callgrind's
/// cache simulation of `benches/peers/overhead.py`, RESULTS.md).
#[derive(Debug)]
#[repr(C, align(64))]
struct RowPath {
    /// Why producers must take the slow check, in one word that every row
    /// tests once: [`REFUSE_ERROR`] (a write error not yet reported to a
    /// producer) and [`REFUSE_CLOSED`] (`close` has begun).
    refuse: AtomicU8,
    /// Sampling or a row budget is set: each row takes [`Recorder::admit_by_policy`].
    has_policy: bool,
    /// The `iter` field's slot (an i64 field named `iter`), and its validity
    /// word and bit if it is nullable: the iteration events are stamped with.
    iter: Option<(usize, Option<(usize, u64)>)>,
    /// Lane 0's ring once mapped (also in `lane_rings`): its owner, the first
    /// thread to record, finds it here ([`producer::with_lane`]).
    first_lane: OnceLock<Arc<LaneRing>>,
}

const _: () = assert!(
    std::mem::size_of::<RowPath>() == 64,
    "RowPath is one cache line"
);

/// [`RowPath::refuse`]: a write error waits for a producer to report it.
const REFUSE_ERROR: u8 = 1;
/// [`RowPath::refuse`]: `close` has begun (set just before the recorder's
/// `closed` flag, so that a thread that saw `is_closed()` has its next row
/// refused; a producer that passed the check before is caught by the close
/// gate).
const REFUSE_CLOSED: u8 = 2;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning means a thread panicked while holding the lock; every critical
    // section here leaves the data consistent, so keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A flight recorder over one output layout. `repr(C)`: what every row reads
/// (the shared state's pointer, the closed flag, the owner) comes first, in
/// one cache line with whatever its holder puts just before it.
#[repr(C)]
pub struct Recorder {
    shared: Arc<Shared>,
    closed: AtomicBool,
    /// The process the recorder belongs to (checked on every producer call).
    owner: Owner,
    flusher: Mutex<Option<JoinHandle<FlusherExit>>>,
    close_lock: Mutex<()>,
    /// The folder's one-writer claim, released at the end of `close`.
    claim: Option<Claim>,
}

/// Key-value metadata of every file of a recording: the schema (None while it
/// is not known: the events-only spool of a [`PendingRecorder`]), versions,
/// the run id and the caller's metadata, whose keys may not be flightlog's.
fn file_metadata(
    schema_version: i64,
    schema: Option<&Schema>,
    config: &RecorderConfig,
) -> Result<Vec<(String, String)>> {
    let mut file_kv = vec![
        ("schema_version".to_string(), schema_version.to_string()),
        (
            "flightlog.format_version".to_string(),
            FORMAT_VERSION.to_string(),
        ),
        (
            "flightlog.writer".to_string(),
            format!("flightlog {}", env!("CARGO_PKG_VERSION")),
        ),
    ];
    if let Some(schema) = schema {
        file_kv.insert(2, ("flightlog.schema".to_string(), schema.to_json()));
    }
    if let Some(run_id) = &config.run_id {
        file_kv.push(("flightlog.run_id".to_string(), run_id.clone()));
    }
    for (k, v) in &config.metadata {
        if file_kv.iter().any(|(key, _)| key == k) || k == "flightlog.schema" {
            return Err(CoreError::Config(format!(
                "metadata key '{k}' is reserved by flightlog"
            )));
        }
        file_kv.push((k.clone(), v.clone()));
    }
    Ok(file_kv)
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
        config: RecorderConfig,
        mut claim: Option<Claim>,
    ) -> Result<Recorder> {
        Recorder::start(
            schema,
            config,
            &mut claim,
            &mut pending::Handover::default(),
        )
    }

    /// [`Recorder::new_claimed`], taking over what a [`PendingRecorder`]
    /// kept: its events, the spool they are in (whose instance number this
    /// recording then has), and its clock (this recorder's `now_ms` counts
    /// from when the pending recorder was made, so the early events' times
    /// stand as they are).
    ///
    /// `claim` and `handover` are taken only once nothing can fail before
    /// they are in use: an error of the checks and folders before that (a
    /// constant that does not fit, a finished recording that appeared in the
    /// folder, a folder that cannot be made) leaves both with the caller,
    /// whose early events and their spool are then neither lost nor removed
    /// (a pending recorder keeps them for another try).
    fn start(
        schema: Schema,
        mut config: RecorderConfig,
        claim: &mut Option<Claim>,
        handover: &mut pending::Handover,
    ) -> Result<Recorder> {
        config.validate()?;
        let instance = handover
            .spool
            .as_ref()
            .map_or_else(instance_id, |spool| spool.instance);
        config.layout = config.layout.with_instance(instance);
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

        let file_kv = file_metadata(schema.version, Some(&schema), &config)?;

        let ring_capacity = config.ring_capacity.next_power_of_two().max(2);
        let spool_meta = SpoolMeta {
            format: spool::FORMAT,
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
            location: spool_location(&config),
        };
        // The clock continues the pending recorder's: the events recorded
        // before the schema was known are on it already.
        let start = handover.clock_origin.unwrap_or_else(Instant::now);
        fail::fail_point!("recorder::start", |_| Err(CoreError::write(
            "injected failure starting the recorder"
        )));
        let early: Vec<EventRow> = handover
            .events
            .iter()
            .map(|(name, payload, t_wall_ms)| EventRow {
                t_wall_ms: *t_wall_ms,
                iter: None,
                name: name.clone(),
                payload: payload.clone(),
            })
            .collect();
        // From here the early events' spool belongs to this recorder: an error
        // below leaves its files (and the events in them) for `recover`.
        let spool = match handover.spool.take() {
            // The early events are in this spool already: rewritten as they
            // are (one that failed to append is then in), under the same
            // sequence numbers.
            Some(pending) => {
                let spooled: Vec<(u64, SpooledEvent)> = early
                    .iter()
                    .enumerate()
                    .map(|(seq, e)| (seq as u64, e.spooled()))
                    .collect();
                Arc::new(pending.into_spool().adopt(&spool_meta, &spooled)?)
            }
            None => {
                // `create` refuses a folder holding an unfinished recording's spool.
                let (spool_base, _) = spool_dir(&config);
                let spool = Spool::create(&spool_base, &spool_meta)?;
                for (seq, e) in early.iter().enumerate() {
                    if spool.log_event(seq as u64, &e.spooled()).is_err() {
                        spool.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Arc::new(spool)
            }
        };
        for (i, d) in dictionaries.iter().enumerate() {
            if let Some(d) = d {
                d.spool_to(i, Arc::clone(&spool));
            }
        }
        let owed_syncs = Mutex::new(config.sync_first.clone());
        let shared = Arc::new(Shared {
            lanes: Lanes::new(MAX_LANES),
            gate: Gate::new(Some(crate::barrier::process_wide_fence)),
            lane_rings: (0..MAX_LANES).map(|_| OnceLock::new()).collect(),
            lane_init: Mutex::new(()),
            spool,
            sample_index: AtomicU64::new(0),
            events_seq: AtomicU64::new(early.len() as u64),
            row_path: RowPath {
                refuse: AtomicU8::new(0),
                has_policy: config.sampling.is_some() || config.max_rows.is_some(),
                iter: iter_slot.map(|slot| (slot, row_layout.validity_of(slot))),
                first_lane: OnceLock::new(),
            },
            arrow_schema: schema.arrow_schema(),
            rules: RowRules::new(&schema, &row_layout),
            schema,
            row_layout,
            dictionaries,
            constants,
            config,
            counters: Counters {
                events: AtomicU64::new(early.len() as u64),
                ..Counters::default()
            },
            start,
            budget_hit: AtomicBool::new(false),
            pending_error: Mutex::new(None),
            flush: Mutex::new(FlushState::default()),
            flush_done: Condvar::new(),
            events: Mutex::new(early),
            flusher_thread: std::sync::OnceLock::new(),
            flusher_stopped: AtomicBool::new(false),
            file_kv,
            owed_syncs,
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
            claim: claim.take(),
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

    /// Milliseconds since the recorder started, from a monotonic clock: since
    /// it was made, or for one whose schema came with its first row, since
    /// its [`PendingRecorder`] was made.
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
        if self.has_pending_error() {
            return self.take_pending_error();
        }
        Ok(())
    }

    #[cold]
    fn take_pending_error(&self) -> Result<()> {
        // The bit is cleared under the lock: an error the flusher stores
        // meanwhile waits for the lock and sets the bit again after.
        let mut pending = lock(&self.shared.pending_error);
        let err = pending.take();
        self.shared
            .row_path
            .refuse
            .fetch_and(!REFUSE_ERROR, Ordering::Release);
        drop(pending);
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether the flusher hit a write error no call has reported yet.
    pub fn has_pending_error(&self) -> bool {
        self.shared.row_path.refuse.load(Ordering::Acquire) & REFUSE_ERROR != 0
    }

    /// Fails if the recorder is closed, or returns (and clears) a pending
    /// write error: what every producer call checks first.
    #[inline]
    pub fn check_open(&self) -> Result<()> {
        self.owner.check()?;
        let refuse = self.shared.row_path.refuse.load(Ordering::Acquire);
        if refuse != 0 {
            return self.refused(refuse);
        }
        Ok(())
    }

    /// [`Recorder::check_open`] once the refuse word is set: closed wins over
    /// a pending error (which is then reported by `close`).
    #[cold]
    #[inline(never)]
    fn refused(&self, refuse: u8) -> Result<()> {
        if refuse & REFUSE_CLOSED != 0 {
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
        producer::with_lane(shared, |lane, cursor| {
            if let Some(refused) = self.admit(lane) {
                return Ok(refused);
            }
            let Ok(busy) = shared.gate.enter(&lane.busy) else {
                // `close` began after this call passed the closed check: the
                // call fails, so the row is not counted.
                shared.unoffer(lane);
                return Err(CoreError::Closed);
            };
            let pushed = lane.ring.push(cursor, row);
            drop(busy);
            match pushed {
                Ok(pos) => Ok(shared.accepted(lane, pos)),
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
        producer::with_lane_cell(shared, |lane, cursor| {
            let Some(reserved) = lane.ring.reserve_slot_in(cursor) else {
                return Ok(InPlace::Declined);
            };
            let words = reserved.words();
            if !fill(words) {
                return Ok(InPlace::Declined);
            }
            if let Some(refused) = self.admit(lane) {
                return Ok(InPlace::Offered(refused));
            }
            let Ok(busy) = shared.gate.enter(&lane.busy) else {
                shared.unoffer(lane);
                return Err(CoreError::Closed);
            };
            let pos = lane.ring.publish_slot_in(cursor, reserved);
            drop(busy);
            Ok(InPlace::Offered(shared.accepted(lane, pos)))
        })
    }

    /// Counts an offered row and applies sampling and the row budget: the
    /// refusal, if the row goes no further.
    #[inline(always)]
    fn admit(&self, lane: &LaneRing) -> Option<Offer> {
        LaneRing::bump(&lane.offered, 1);
        if self.shared.row_path.has_policy {
            if let Some(refused) = self.admit_by_policy() {
                return Some(refused);
            }
        }
        None
    }

    /// Sampling and the row budget, out of the common row's way (a recorder
    /// with neither never calls it).
    #[cold]
    #[inline(never)]
    fn admit_by_policy(&self) -> Option<Offer> {
        let shared = &self.shared;
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
        if shared.spool.log_event(seq, &event.spooled()).is_err() {
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
            spool_errors: self.shared.spool.errors.load(Ordering::Relaxed),
        }
    }
}

impl Shared {
    /// Makes what the caller left unsynced durable (`config.sync_first`)
    /// before this recording's first file, once. A failure fails the write
    /// that needed it (its rows are kept for the retry, as after any failed
    /// write) and is not tried again: after a failed fsync the kernel may have
    /// dropped the data it was to write, and a second fsync would then succeed
    /// without making anything durable (the write-error rule of
    /// `atomic_file`: a file whose fsync failed is written afresh, never
    /// fsynced again). Only the caller can write such a file afresh: a run's
    /// final manifest is, at close.
    pub(crate) fn sync_first(&self) -> Result<()> {
        let owed = self.take_syncs();
        crate::atomic_file::sync_paths(&owed)
    }

    /// The paths of `config.sync_first` still owed, taken by a publish that
    /// fsyncs them in its own wait (see [`Shared::sync_first`] for a failure);
    /// it puts them back ([`Shared::owe_syncs`]) if it fails before trying.
    pub(crate) fn take_syncs(&self) -> Vec<PathBuf> {
        std::mem::take(&mut *lock(&self.owed_syncs))
    }

    /// Puts back syncs taken by [`Shared::take_syncs`] and not tried.
    pub(crate) fn owe_syncs(&self, paths: Vec<PathBuf>) {
        lock(&self.owed_syncs).extend(paths);
    }

    /// Lane `i`'s ring, once mapped.
    pub(crate) fn lane(&self, i: usize) -> Option<&LaneRing> {
        self.lane_rings[i].get().map(|ring| &**ring)
    }

    /// Lane `i`'s ring, mapping it in the spool on the lane's first use.
    pub(crate) fn ensure_lane(&self, i: usize) -> Result<Arc<LaneRing>> {
        if let Some(lane) = self.lane_rings[i].get() {
            return Ok(Arc::clone(lane));
        }
        let _guard = lock(&self.lane_init);
        if let Some(lane) = self.lane_rings[i].get() {
            return Ok(Arc::clone(lane));
        }
        let ring = Arc::new(LaneRing::new(self.spool.map_lane(i)?));
        if i == 0 {
            let _ = self.row_path.first_lane.set(Arc::clone(&ring));
        }
        let _ = self.lane_rings[i].set(Arc::clone(&ring));
        Ok(ring)
    }

    /// Lane 0's ring, once mapped.
    #[inline(always)]
    pub(crate) fn first_lane(&self) -> Option<&LaneRing> {
        self.row_path.first_lane.get().map(|ring| &**ring)
    }

    /// The `iter` of the newest row published: by the calling thread's lane
    /// if it published one, else by the first lane that did (another
    /// thread's, read while it may be recording: a recent row's). Read from
    /// the ring when an event asks (events are rare), rather than kept by
    /// every row: a row that was dropped, sampled out or refused by the
    /// budget has no say, and a row whose `iter` is null gives none.
    fn last_iter(&self, mine: Option<usize>) -> Option<i64> {
        let (slot, validity) = self.row_path.iter?;
        // Outer `None`: the lane published no row; inner: its `iter` is null.
        let of = |lane: &LaneRing| -> Option<Option<i64>> {
            let row = lane.ring.last_published()?;
            let valid = validity.is_none_or(|(word, bit)| {
                row.get(word)
                    .is_some_and(|w| w.load(Ordering::Relaxed) & bit != 0)
            });
            Some(
                valid
                    .then(|| row.get(slot).map(|w| w.load(Ordering::Relaxed) as i64))
                    .flatten(),
            )
        };
        mine.and_then(|i| self.lane(i))
            .and_then(of)
            .or_else(|| {
                self.lane_rings
                    .iter()
                    .filter_map(OnceLock::get)
                    .find_map(|lane| of(lane))
            })
            .flatten()
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
    fn accepted(&self, lane: &LaneRing, pos: u64) -> Offer {
        let mask = lane.wake_mask;
        if pos & mask == mask {
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
        self.row_path
            .refuse
            .fetch_or(REFUSE_ERROR, Ordering::Release);
    }
}
