//! The flusher thread: drains the lanes' rings into pending rows, builds
//! batches and publishes segments, answers `flush()` requests, and keeps rows
//! the disk refuses for a retry.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use flightlog_ring::LaneState;

use super::batch::{batch_of_words, dictionary_values, extend_cover, telemetry_props, Cover};
use super::chunks::{Lease, Pending, CHUNK_ROWS};
use super::events::{build_events_batch, events_arrow_schema, events_props, EventRow};
use super::{lock, Shared, MAX_LANES};
use crate::atomic_file;
use crate::error::{CoreError, FlusherError, Result};
use crate::parquet_io;
use crate::spool;

#[derive(Default)]
pub(super) struct FlushState {
    requested: u64,
    completed: u64,
    /// The error of the last flush cycle, for the `flush()` that asked for it.
    last_error: Option<CoreError>,
    closing: bool,
    /// Set by `close_deferring_folder_sync`: the closing flush may leave the
    /// folder fsync of the final files to the caller.
    pub(super) defer_folder_sync: bool,
}

/// What the flusher thread hands back: its outcome, or the message of a
/// panic that escaped its per-cycle guard (its state is then gone).
pub(super) type FlusherExit = std::result::Result<FlusherOutcome, String>;

/// The flusher thread's body. Every panic, wherever it happens, becomes an
/// error that the next producer call, `flush` or `close` returns: nothing
/// unwinds out of the thread, and `flusher_stopped` tells waiters that
/// nothing will drain the ring any more.
pub(super) fn run_flusher(shared: Arc<Shared>) -> FlusherExit {
    let flusher_shared = Arc::clone(&shared);
    let exit = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        Flusher::new(flusher_shared).run()
    }))
    .map_err(|panic| panic_message(&panic));
    if let Err(msg) = &exit {
        shared.record_error(FlusherError::ThreadPanicked(msg.clone()).into());
    }
    shared.flusher_stopped.store(true, Ordering::Release);
    // Under the lock, so a flush about to wait cannot miss the wake-up.
    drop(lock(&shared.flush));
    shared.flush_done.notify_all();
    exit
}

/// What the flusher hands back when it stops.
pub(super) struct FlusherOutcome {
    /// Published telemetry segments with their row counts.
    pub(super) telemetry_segments: Vec<(String, u64)>,
    pub(super) event_segments: Vec<String>,
    /// Rows and events the flusher still held (kept for a retry) when it
    /// stopped: the disk refused them to the end, so they are lost.
    pub(super) rows_not_written: u64,
    pub(super) events_not_written: u64,
    /// (rows, bytes) of final files written directly by the closing flush
    /// (nothing had been published yet, so there was nothing to merge).
    pub(super) final_telemetry: Option<(u64, u64)>,
    pub(super) final_events: Option<(u64, u64)>,
    /// The folder whose fsync the closing flush left to the caller
    /// ([`atomic_file::publish_together_then`]); None when it did it.
    pub(super) unsynced_folder: Option<PathBuf>,
    /// The chunks of drained rows, still mapped: `close` lets go of them
    /// beside the merge ([`Pending::chunks_mapped`] says how many there were).
    pub(super) chunks: Option<Pending>,
}

impl Shared {
    /// Asks the flusher to make every row pushed so far durable and waits.
    pub(super) fn flush_and_wait(&self, closing: bool) -> Result<()> {
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
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

struct Flusher {
    shared: Arc<Shared>,
    pending: Pending,
    /// Batches not yet in a published segment (one per pending chunk), oldest
    /// first, with the ring positions they hold and the lease on their
    /// chunk's rows: those of the write under way, and those kept for a retry
    /// after a write failed.
    unwritten: VecDeque<(RecordBatch, Cover, Lease)>,
    /// Per lane: the next ring position to drain (every slot below it is
    /// released: its row is in a chunk of the spool).
    drained: Vec<u64>,
    /// Per lane: how far its ring's first lap is faulted in ahead of its
    /// producer ([`RingWarmup`]).
    warmed: Vec<RingWarmup>,
    /// A ring had its first warm-up look this cycle: look again after
    /// [`WARMUP_PACE_LOOK`] rather than a whole drain period.
    pace_look_due: bool,
    /// The lane a drain starts with (rotates, so no lane waits behind others).
    next_lane: usize,
    /// The last drain found no chunk to move rows into (not even memory):
    /// the rows wait in their rings, and a flush stops waiting for them.
    drain_failed: bool,
    /// Producer stalls and dropped rows (all lanes) at the last segment's
    /// encode ([`Flusher::encode_threads`]).
    backlog_seen: u64,
    /// A flush request (a close's or a `flush()`'s) was waiting when this
    /// cycle began: its caller is blocked until the cycle answers it.
    waited_on: bool,
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
    /// The closing request allows leaving the final folder fsync to `close`'s
    /// caller (see `FlushState::defer_folder_sync`).
    defer_folder_sync: bool,
    unsynced_folder: Option<PathBuf>,
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

/// How far a lane's ring is faulted in ahead of its producer, on its first
/// lap: the flusher's share of a new ring's cost.
///
/// A producer's first write to each page of its ring (a file of the spool)
/// is a page fault: the page allocated in the page cache, zeroed, and made
/// writable by the filesystem, about 5 µs on the recording thread. At ten
/// fields a row that is one fault every 42 rows, which made a row cost
/// several times more over a ring's first lap (64k rows by default) than
/// after it. The flusher, which looks at every ring each drain, faults the
/// pages in ahead of the producer instead (`MADV_POPULATE_WRITE`), on its own
/// core: as far ahead as the producer's pace since the last look would take
/// it in [`WARMUP_HORIZON_DRAINS`] drain periods, or twice the most it ever
/// went between two looks (a producer that records in bursts), whichever
/// is more (at most [`WARMUP_MAX_PACE_BYTES`] of slots), plus
/// [`WARMUP_LEAD_BYTES`]. A thread's registration wakes the flusher for a
/// first look (the lead, and twice what it has published if it was
/// quicker: a short run warms little more than it writes, and a close soon
/// after the first row waits for little), which asks for a second one soon
/// after ([`WARMUP_PACE_LOOK`]) to learn the pace. After the first lap every
/// page is mapped and this stops.
#[derive(Debug, Clone, Copy, Default)]
struct RingWarmup {
    /// The producer's position at the last look, and when that was (None
    /// before the first look).
    seen: u64,
    seen_at: Option<Instant>,
    /// The most rows the producer published between two looks.
    largest_step: u64,
    /// Positions below this are faulted in (or were written).
    faulted: u64,
}

/// How far a warm-up goes ahead of the producer besides its pace: 512
/// ten-field slots, 12 pages, faulted in in about 40 µs.
const WARMUP_LEAD_BYTES: u64 = 48 << 10;

/// The most a warm-up adds for the producer's pace: a producer recording flat
/// out into a large ring (`ring_capacity`) and stopping has at most this
/// and the lead (16,896 ten-field slots) faulted in that it never writes.
/// (Flat out, the warm-up cannot shorten the run anyway: the flusher, which
/// would fault the pages in, is what sets the pace.)
const WARMUP_MAX_PACE_BYTES: u64 = 3 << 19;

/// A warm-up covers the producer's pace for this many drain periods: the
/// next timed look, and a margin for a late one.
const WARMUP_HORIZON_DRAINS: u32 = 2;

/// When the flusher looks again after a ring's first look (its thread's
/// registration), to learn its producer's pace before that producer runs
/// out of warm pages.
const WARMUP_PACE_LOOK: Duration = Duration::from_millis(2);

impl RingWarmup {
    /// Faults in the slots `ring`'s producer, now (`now`) at `published`,
    /// writes next, if its first lap is not done, for `horizon` at its pace.
    /// True on a ring's first look: the pace is not known yet, and the
    /// flusher should look again soon ([`WARMUP_PACE_LOOK`]).
    fn fault_in_ahead(
        &mut self,
        ring: &spool::MappedRing,
        published: u64,
        now: Instant,
        horizon: Duration,
    ) -> bool {
        let lap = ring.capacity() as u64;
        if self.faulted >= lap {
            return false;
        }
        let first_look = self.seen_at.is_none();
        let advanced = published.saturating_sub(self.seen);
        self.largest_step = self.largest_step.max(advanced);
        let pace = self.seen_at.map_or(0, |then| {
            let elapsed = now.saturating_duration_since(then).as_secs_f64().max(1e-4);
            (advanced as f64 / elapsed * horizon.as_secs_f64()) as u64
        });
        self.seen = published;
        self.seen_at = Some(now);
        let from = self.faulted.max(published);
        let ahead = pace.max(self.largest_step.saturating_mul(2));
        let to = published
            .saturating_add(ahead.min(Self::slots_in(ring, WARMUP_MAX_PACE_BYTES)))
            .saturating_add(Self::slots_in(ring, WARMUP_LEAD_BYTES))
            .min(lap);
        if from < to {
            ring.memory().populate_words(ring.first_lap_words(from, to));
        }
        self.faulted = self.faulted.max(to).max(published.min(lap));
        first_look
    }

    /// How many of `ring`'s slots `bytes` hold (at least one).
    fn slots_in(ring: &spool::MappedRing, bytes: u64) -> u64 {
        (bytes / ((ring.width() as u64 + 1) * 8)).max(1)
    }
}

/// Rows a drain copies column by column at a time: 256 slots of a 10-field
/// row are 24 KiB, which stay in the L1 cache across the columns' passes.
const DRAIN_BLOCK_ROWS: u64 = 256;

impl Flusher {
    fn new(shared: Arc<Shared>) -> Self {
        Flusher {
            pending: Pending::new(
                shared.row_layout.width(),
                shared.config.segment_rows,
                CHUNK_ROWS,
            ),
            shared,
            unwritten: VecDeque::new(),
            drained: vec![0; MAX_LANES],
            warmed: vec![RingWarmup::default(); MAX_LANES],
            pace_look_due: false,
            next_lane: 0,
            drain_failed: false,
            backlog_seen: 0,
            waited_on: false,
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
            defer_folder_sync: false,
            unsynced_folder: None,
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

    /// How often the flusher drains when no producer wakes it: often enough
    /// that producers rarely find a ring full, but asleep when idle.
    fn drain_period(&self) -> Duration {
        Duration::from_secs_f64(self.shared.config.flush_interval_secs)
            .min(Duration::from_millis(20))
    }

    fn run(mut self) -> FlusherOutcome {
        let interval = Duration::from_secs_f64(self.shared.config.flush_interval_secs);
        let drain_period = self.drain_period();
        loop {
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.cycle(interval)));
            match outcome {
                Ok(true) => break,
                Ok(false) => {}
                Err(panic) => {
                    let err = FlusherError::CyclePanicked(panic_message(&panic));
                    // Report it once: to the flush() waiting for this cycle if
                    // there is one, else to the next producer call.
                    let waiting = {
                        let st = lock(&self.shared.flush);
                        st.requested > st.completed
                    };
                    if waiting {
                        self.complete_flush_requests(Some(err.into()));
                    } else {
                        self.shared.record_error(err.into());
                    }
                    if lock(&self.shared.flush).closing {
                        break;
                    }
                }
            }
            if std::mem::take(&mut self.pace_look_due) {
                thread::park_timeout(WARMUP_PACE_LOOK.min(drain_period));
            } else {
                thread::park_timeout(drain_period);
            }
        }
        let rows_not_written = self
            .unwritten
            .iter()
            .map(|(b, _, _)| b.num_rows() as u64)
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
            unsynced_folder: self.unsynced_folder.take(),
            chunks: Some(std::mem::replace(&mut self.pending, Pending::new(1, 1, 1))),
        }
    }

    /// One wake-up: drain, write what is due, answer flush requests.
    /// Returns true when the recorder is closing and everything is written.
    fn cycle(&mut self, interval: Duration) -> bool {
        fail::fail_point!("recorder::flush_cycle");
        // A flush request waiting: its caller is blocked from now on, so the
        // segments this cycle writes (the full ones the drain writes first
        // included) may take a second core.
        self.waited_on = {
            let st = lock(&self.shared.flush);
            st.requested > st.completed
        };
        self.drain_available();
        let (requested, completed, closing, defer_folder_sync) = {
            let st = lock(&self.shared.flush);
            (st.requested, st.completed, st.closing, st.defer_folder_sync)
        };
        if requested > completed {
            // Every row published before the request must be drained: a push
            // publishes before it returns, so those are the rows published now.
            let targets: Vec<(usize, u64)> = (0..MAX_LANES)
                .filter_map(|i| self.shared.lane(i).map(|l| (i, l.ring.published())))
                .collect();
            while targets.iter().any(|&(i, t)| self.drained[i] < t) {
                if self.drain_available() == 0 {
                    if self.drain_failed {
                        // Reported already; the rows left in the rings are
                        // counted as not written if the recorder closes.
                        break;
                    }
                    thread::yield_now();
                }
            }
            self.closing = closing;
            self.defer_folder_sync = closing && defer_folder_sync;
            self.waited_on = true;
            let mut written = self.write_due(true);
            // A large segment is written while the ring keeps draining into
            // `pending`; at close those rows must go out too, not be left
            // behind as "kept for a retry".
            while closing && written.is_ok() && self.pending.rows > 0 {
                written = self.write_due(false);
            }
            let error = written.err();
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

    fn complete_flush_requests(&mut self, error: Option<CoreError>) {
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
    /// A row is copied from its ring slot into a chunk of the spool
    /// ([`super::chunks`]), committed there, and only then is its slot
    /// released: a kill at any point finds it in the one or the other. A
    /// retired lane whose rows are all drained is freed for a new thread.
    fn drain_into_pending(&mut self, cap: usize) -> usize {
        let cap = cap.min(self.shared.config.segment_rows);
        let mut room = cap - self.pending.rows.min(cap);
        if room == 0 {
            return 0;
        }
        let shared = Arc::clone(&self.shared);
        let width = shared.row_layout.width();
        let warmup_horizon = self.drain_period() * WARMUP_HORIZON_DRAINS;
        let mut moved = 0;
        let mut retired: Vec<usize> = Vec::new();
        'lanes: for k in 0..MAX_LANES {
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
            if self.warmed[i].faulted < lane.ring.capacity() as u64 {
                self.pace_look_due |=
                    self.warmed[i].fault_in_ahead(&lane.ring, end, Instant::now(), warmup_horizon);
            }
            let from = self.drained[i];
            let n = ((end - from) as usize).min(room);
            // Column by column, in blocks whose slots stay in the cache
            // across the columns' passes (and within one chunk).
            let end_of_drain = from + n as u64;
            let mut block = from;
            while block < end_of_drain {
                let (chunk, chunk_room) = match self.pending.chunk_with_room(Some(&shared.spool)) {
                    Ok(c) => c,
                    Err(e) => {
                        // Not even memory for a chunk: the rows stay in
                        // their ring until a later drain finds some.
                        if !self.drain_failed {
                            shared.record_error(e);
                        }
                        self.drain_failed = true;
                        break 'lanes;
                    }
                };
                self.drain_failed = false;
                let to = (block + DRAIN_BLOCK_ROWS)
                    .min(end_of_drain)
                    .min(block + chunk_room as u64);
                assert!(
                    to <= spool::MAX_CHUNK_POS,
                    "ring position {to} is past what a chunk's tag holds"
                );
                for w in 0..width {
                    for (out, word) in chunk
                        .word_column(w)
                        .iter()
                        .zip(lane.ring.column(block, to, w))
                    {
                        out.store(word, Ordering::Relaxed);
                    }
                }
                for (out, pos) in chunk.tag_column().iter().zip(block..to) {
                    out.store(spool::chunk_tag(i, pos), Ordering::Relaxed);
                }
                self.pending.added(i, block, (to - block) as usize);
                // Committed in the chunk: the slots may take new rows.
                lane.ring.release(to);
                let taken = (to - block) as usize;
                self.drained[i] = to;
                moved += taken;
                room -= taken;
                block = to;
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
        for i in retired {
            shared.lanes.free_if_drained(i);
        }
        moved
    }

    /// Builds the pending rows (if any) into batches, one per chunk, and
    /// writes them with earlier unwritten batches as one segment; writes
    /// pending events when `with_events`.
    fn write_due(&mut self, with_events: bool) -> Result<()> {
        let started = Instant::now();
        if self.pending.rows > 0 {
            match self.build_batches() {
                Ok(batches) => self.unwritten.extend(batches),
                Err(e) => {
                    // Cannot happen with a validated schema; if it does, the
                    // rows are counted as lost rather than retried forever.
                    let rows = self.pending.rows;
                    self.pending.clear();
                    self.shared
                        .counters
                        .lost
                        .fetch_add(rows as u64, Ordering::Relaxed);
                    return Err(FlusherError::Batch {
                        rows,
                        source: Box::new(e),
                    }
                    .into());
                }
            }
        }
        let mut result = Ok(());
        let together = if with_events {
            self.write_final_files_together()
        } else {
            None
        };
        if let Some(written) = together {
            result = written;
        } else {
            if !self.unwritten.is_empty() {
                result = self.write_telemetry_segment();
            }
            if with_events {
                let ev = self.write_events_segment();
                if result.is_ok() {
                    result = ev;
                }
            }
        }
        self.last_write = Instant::now();
        self.shared
            .counters
            .flush_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result
    }

    /// A short recording's close on a local disk: nothing was published yet,
    /// so its rows and events go straight to both final files, published
    /// together ([`atomic_file::publish_together`]): the two files' fsyncs run
    /// at the same time and one folder fsync covers both names, where writing
    /// them one after the other waits for four fsyncs in a row. The crash
    /// guarantees are [`atomic_file::publish`]'s: a final name appears only
    /// once its data are durable. None when this is not such a close (the
    /// writes then go the usual way, one file at a time).
    fn write_final_files_together(&mut self) -> Option<Result<()>> {
        let shared = Arc::clone(&self.shared);
        let layout = &shared.config.layout;
        let (Some(final_telemetry), Some(final_events)) = (
            layout.final_telemetry.as_ref(),
            layout.final_events.as_ref(),
        ) else {
            return None;
        };
        let rows: usize = self.unwritten.iter().map(|(b, _, _)| b.num_rows()).sum();
        let short_close = self.closing
            && layout.storage.is_local()
            && final_telemetry.parent() == final_events.parent()
            && self.telemetry_segments.is_empty()
            && self.event_segments.is_empty()
            && self.failed_telemetry.is_none()
            && self.failed_events.is_none()
            && rows > 0
            && rows < CONCURRENT_WRITE_MIN_ROWS;
        if !short_close {
            return None;
        }
        self.unwritten_events
            .extend(std::mem::take(&mut *lock(&shared.events)));
        let mut cover = Cover::new();
        let batches: Vec<RecordBatch> = self
            .unwritten
            .iter()
            .map(|(b, c, _)| {
                for (&lane, &(start, end)) in c {
                    extend_cover(&mut cover, lane, start, end);
                }
                b.clone()
            })
            .collect();
        let lanes_kv = vec![(spool::LANES_KEY.to_string(), spool::format_lanes(&cover))];
        let events = self.unwritten_events.len();
        let sync_folder = !self.defer_folder_sync;
        // What the caller left unsynced is fsynced in the files' own wait; the
        // files' folder but the one their folder fsync covers (it makes every
        // name placed in it durable, those placed before included).
        let owed = shared.take_syncs();
        let folder = final_telemetry.parent();
        let also: Vec<PathBuf> = owed
            .iter()
            .filter(|p| Some(p.as_path()) != folder)
            .cloned()
            .collect();
        let staged = (|| -> Result<Vec<atomic_file::Staged>> {
            let telemetry = atomic_file::stage(final_telemetry, |out| {
                parquet_io::write_batches(
                    out,
                    Arc::clone(&shared.arrow_schema),
                    &batches,
                    telemetry_props(&shared, lanes_kv),
                    // Fewer rows than a parallel encode starts for.
                    1,
                )
            })?;
            // No events: the empty events file `close` would write.
            let event_batches = if events == 0 {
                Vec::new()
            } else {
                vec![build_events_batch(
                    shared.config.run_id.as_deref(),
                    &self.unwritten_events,
                )?]
            };
            let events_file = atomic_file::stage(final_events, |out| {
                parquet_io::write_batches(
                    out,
                    events_arrow_schema(),
                    &event_batches,
                    events_props(&shared, self.events_published + events as u64),
                    1,
                )
            })?;
            Ok(vec![telemetry, events_file])
        })();
        let published = match staged {
            // Deferred: the caller (a run's close) fsyncs the folder at the
            // same time as its manifest's temp file, before that manifest's
            // rename (atomic_file::publish_bytes_after); close() does it
            // itself on every path that does not hand it over.
            Ok(files) => atomic_file::publish_together_then(files, sync_folder, &also),
            Err(e) => {
                // The owed syncs were not tried: still owed.
                shared.owe_syncs(owed);
                Err(e)
            }
        };
        let sizes = match published {
            Ok((sizes, unsynced)) => {
                self.unsynced_folder = unsynced;
                sizes
            }
            Err(e) => {
                // Nothing was published: the rows and events stay kept, and
                // the closing recorder counts them lost, as after a failed
                // write of either file alone.
                return Some(Err(FlusherError::Segment {
                    path: layout.storage.describe(final_telemetry),
                    source: Box::new(e),
                    kept: rows,
                    lost: 0,
                    closed: false,
                }
                .into()));
            }
        };
        let c = &shared.counters;
        self.unwritten.clear();
        self.next_seq += 1;
        self.final_telemetry = Some((rows as u64, sizes[0]));
        c.written.fetch_add(rows as u64, Ordering::Relaxed);
        c.segments.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(sizes[0], Ordering::Relaxed);
        self.unwritten_events.clear();
        self.final_events = Some((events as u64, sizes[1]));
        if events > 0 {
            self.events_published += events as u64;
            self.next_event_seq += 1;
            c.bytes.fetch_add(sizes[1], Ordering::Relaxed);
        }
        Some(Ok(()))
    }

    /// Threads for the next segment's encode: two (where there are two
    /// cores, [`parquet_io::encode_threads`]) when a core is idle anyway, one
    /// otherwise.
    ///
    /// A core is idle while someone waits for this write (a close, a flush),
    /// and while a producer that records faster than one encoder keeps up
    /// sleeps on its full ring (or drops rows): producers stalled or dropped
    /// since the last segment. A producer that keeps up (a solver recording
    /// each iteration) keeps its core to itself: the encode stays on one
    /// thread beside it rather than taking turns with it.
    fn encode_threads(&mut self, rows: usize) -> usize {
        if rows < parquet_io::PARALLEL_ENCODE_MIN_ROWS {
            // Encoded on one thread whatever is asked: the backlog seen
            // stays for the next segment that can use a second.
            return 1;
        }
        let backlog: u64 = (0..MAX_LANES)
            .filter_map(|i| self.shared.lane(i))
            .map(|l| l.stalls.load(Ordering::Relaxed) + l.dropped.load(Ordering::Relaxed))
            .sum();
        let behind = backlog > self.backlog_seen;
        self.backlog_seen = backlog;
        if behind || self.waited_on {
            parquet_io::MAX_ENCODE_THREADS
        } else {
            1
        }
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
            .map(|(b, c, _)| {
                for (&lane, &(start, end)) in c {
                    extend_cover(&mut cover, lane, start, end);
                }
                b.clone()
            })
            .collect();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let lanes_kv = vec![(spool::LANES_KEY.to_string(), spool::format_lanes(&cover))];
        let threads = self.encode_threads(rows);
        let write = || {
            shared.sync_first()?;
            if !target.direct {
                layout.storage.ensure_dir(&layout.segment_dir)?;
            }
            layout.storage.write_parquet(
                &target.path,
                Arc::clone(&shared.arrow_schema),
                &batches,
                telemetry_props(&shared, lanes_kv.clone()),
                threads,
            )
        };
        let written = if rows >= CONCURRENT_WRITE_MIN_ROWS {
            self.write_while_draining(&write)
        } else {
            write()
        };
        drop(batches);
        match written {
            Ok(size) => {
                // Their chunks are refilled once the last batch of each is
                // gone (a clone of one may live on in a failed write's retry).
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
                let mut kept: usize = self.unwritten.iter().map(|(b, _, _)| b.num_rows()).sum();
                while kept > self.max_unwritten_rows() && self.unwritten.len() > 1 {
                    if let Some((b, _, _)) = self.unwritten.pop_front() {
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
                Err(FlusherError::Segment {
                    path,
                    source: Box::new(e),
                    kept,
                    lost,
                    closed: false,
                }
                .into())
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
            shared.sync_first()?;
            if !target.direct {
                layout.storage.ensure_dir(&layout.events_dir)?;
            }
            let batch = build_events_batch(shared.config.run_id.as_deref(), events)?;
            layout.storage.write_parquet(
                &target.path,
                events_arrow_schema(),
                &[batch],
                events_props(&shared, self.events_published + target.items as u64),
                1,
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
                Err(FlusherError::EventsSegment {
                    path,
                    source: Box::new(e),
                    kept: n,
                    closed: false,
                }
                .into())
            }
        }
    }

    /// The pending rows as batches (one per chunk) with the ring positions
    /// each holds; pending is left empty. All or none: a chunk that cannot
    /// be built fails the lot.
    fn build_batches(&mut self) -> Result<Vec<(RecordBatch, Cover, Lease)>> {
        let shared = &*self.shared;
        let taken = self.pending.take_rows();
        // Rows counted as pending but in no chunk: those of a build that
        // panicked (its cycle was reported as failed). Counted lost here,
        // once, rather than carried as pending rows that no longer exist.
        let in_chunks: usize = taken.iter().map(|c| c.rows).sum();
        let vanished = self.pending.rows.saturating_sub(in_chunks);
        if vanished > 0 {
            shared
                .counters
                .lost
                .fetch_add(vanished as u64, Ordering::Relaxed);
            self.pending.rows = in_chunks;
        }
        let dictionaries = dictionary_values(&shared.dictionaries);
        let mut batches = Vec::with_capacity(taken.len());
        for rows in taken {
            fail::fail_point!("recorder::build_chunk");
            let batch = batch_of_words(
                &shared.schema,
                &shared.arrow_schema,
                &shared.row_layout,
                &dictionaries,
                &shared.constants,
                &rows.words,
                rows.rows,
            )?;
            // The batch's own columns may be copies (f32, bool, strings):
            // the lent words keep the chunk from being refilled until the
            // batch is published, or given up.
            batches.push((batch, rows.cover, rows.words));
        }
        self.pending.built();
        Ok(batches)
    }
}

pub(super) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::mapped::{page_bytes, MappedWords};
    use crate::spool::MappedRing;

    #[test]
    fn a_warmup_faults_in_the_ring_ahead_of_its_producer_on_the_first_lap_only() {
        let dir = tempfile::tempdir().unwrap();
        // Ten fields and a stamp: 96-byte slots.
        let (capacity, width) = (32 * 1024, 11);
        let ring = MappedRing::new(
            MappedWords::create(
                &dir.path().join("lane-000.ring"),
                MappedRing::words_needed(capacity, width),
            )
            .unwrap(),
            capacity,
            width,
        );
        // Whether the page holding the slot of first-lap position `pos` is
        // mapped: a producer's write to it would not fault.
        let mapped = |pos: u64| {
            let page = ring.first_lap_words(pos, pos + 1).start * 8 / page_bytes();
            ring.memory().mapped_pages()[page]
        };
        let (lead, max_pace) = (512, 16 * 1024);
        assert_eq!(RingWarmup::slots_in(&ring, WARMUP_LEAD_BYTES), lead);
        assert_eq!(RingWarmup::slots_in(&ring, WARMUP_MAX_PACE_BYTES), max_pace);
        assert!(!mapped(0), "a new ring has no page mapped");
        let mut warmup = RingWarmup::default();
        let t0 = Instant::now();
        let horizon = Duration::from_millis(40);

        // At registration (nothing published, pace unknown): the lead only,
        // and a second look is asked for.
        assert!(warmup.fault_in_ahead(&ring, 0, t0, horizon));
        assert!((0..lead).all(mapped));
        assert_eq!(warmup.faulted, lead);
        assert!(!mapped(lead + 100));

        // 1,000 rows in 10 ms: 100k rows a second, 4,000 in the 40 ms horizon,
        // and the lead, ahead of the producer.
        let later = t0 + Duration::from_millis(10);
        assert!(!warmup.fault_in_ahead(&ring, 1000, later, horizon));
        let ahead = 1000 + 4000 + lead;
        assert_eq!(warmup.faulted, ahead);
        assert!((1000..ahead).all(mapped));
        // Slots past the lead and below the producer are the producer's own
        // to fault in (here 512..1000: there is no producer); nothing past
        // the warm-up's reach is mapped either.
        assert!(!mapped(700));
        assert!(!mapped(ahead + 100));

        // A producer at rest: the warm-up stays where it is.
        let rest = later + Duration::from_millis(20);
        assert!(!warmup.fault_in_ahead(&ring, 1000, rest, horizon));
        assert_eq!(warmup.faulted, ahead);
        // A burst after a long rest (a slow pace since the last look) is
        // met by twice the largest step seen: 4,000 rows, this one.
        let resumed = rest + Duration::from_secs(1);
        warmup.fault_in_ahead(&ring, 5000, resumed, horizon);
        assert_eq!(warmup.faulted, 5000 + 2 * 4000 + lead);
        assert!((5000..5000 + 2 * 4000 + lead).all(mapped));

        // Flat out, the pace is capped.
        let burst = resumed + Duration::from_millis(1);
        warmup.fault_in_ahead(&ring, 14_000, burst, horizon);
        assert_eq!(warmup.faulted, 14_000 + max_pace + lead);

        // Past the first lap every page has been written: the warm-up stops.
        let end = burst + Duration::from_millis(20);
        warmup.fault_in_ahead(&ring, capacity as u64 + 5, end, horizon);
        assert_eq!(warmup.faulted, capacity as u64);
        let before = ring.memory().mapped_pages();
        warmup.fault_in_ahead(&ring, 3 * capacity as u64, end, horizon);
        assert_eq!(ring.memory().mapped_pages(), before);
    }
}
