//! The producer side of a recorder: one single-producer ring per recording
//! thread (a *lane*), found through a thread-local registration.
//!
//! A thread's first row for a recorder claims a free lane (a CAS, once per
//! thread) and maps its ring in the spool; later rows find the registration in
//! the thread's own list (usually one entry) and push with no shared
//! read-modify-write: the counters of a lane are written only by its thread
//! and summed by whoever reads them. When the thread ends, its registrations
//! are dropped, which retires their lanes: the flusher drains what is left and
//! frees them for new threads.
//!
//! The thread that owns lane 0 (the first thread to record, usually the only
//! one) skips the thread-local list: the lane holds its owner's
//! [`thread_key`], and a thread that reads its own key there owns the lane
//! (only the owner writes its key, and clears it before its registration is
//! gone, before the key can be reused). Reaching the thread-local list from a
//! shared library costs a call into the dynamic linker and a search: about a
//! tenth of a row's instructions (`benches/bench_instructions.py`).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use flightlog_ring::{BusyFlag, Cursor, CursorCell};

use crate::error::{CoreError, Result};
use crate::recorder::Shared;
use crate::spool::MappedRing;
#[cfg(unix)]
use crate::thread_key::thread_key;

/// One lane: its ring, its producer's cursor and owner key, and the counters
/// only its producer writes.
///
/// `repr(C, align(64))`: a row reads the owner, the cursor and where the
/// ring's words are (its first fields) in the first cache line, and bumps
/// `offered` and its gate flag in the second. A solver's loop evicts them
/// between two rows: each line is a miss (`bench_instructions.py --cache`).
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct LaneRing {
    /// The owning thread's [`thread_key`] while a registration holds the
    /// lane, else 0.
    owner: AtomicUsize,
    /// The producer's position and cached bound (only the producer uses it).
    cursor: CursorCell,
    pub(crate) ring: MappedRing,
    pub(crate) offered: AtomicU64,
    /// Set while the producer is inside the close gate (beside `offered`,
    /// which every row bumps: no cache line of its own).
    pub(crate) busy: BusyFlag,
    pub(crate) dropped: AtomicU64,
    pub(crate) stalls: AtomicU64,
    /// The producer wakes the flusher when `pos & wake_mask == wake_mask`:
    /// four times per lap of its ring (a power of two), so that the flusher
    /// drains before the ring is ever full. Beside `offered`, which every row
    /// touches: a row reads no other line to decide.
    pub(crate) wake_mask: u64,
}

// The ring's words, mask and stride (its first fields) end the first line.
const _: () = assert!(
    std::mem::offset_of!(LaneRing, ring) + std::mem::size_of::<crate::spool::RingMemory>() + 16
        <= 64
);

impl LaneRing {
    pub(crate) fn new(ring: MappedRing) -> Self {
        let wake_mask = (ring.capacity() as u64 / 4).max(1) - 1;
        LaneRing {
            cursor: CursorCell::new(ring.cursor()),
            ring,
            owner: AtomicUsize::new(0),
            offered: AtomicU64::new(0),
            busy: BusyFlag::new(),
            dropped: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            wake_mask,
        }
    }

    /// Runs `f` with the producer's cursor, kept for the next row afterwards.
    /// `held` is the owner word as [`lane_of`] read it (not in an offer): the
    /// word says "in an offer" meanwhile, so that a row offered from inside
    /// `f` on this thread (a callback calling back into the recorder) is
    /// refused instead of taking the slot this row is filling.
    ///
    /// No drop guard (it cost a sixth of the row's instructions, the result
    /// then taking a detour through memory): if `f` panics, which is a bug,
    /// the lane stays "in an offer" and this thread's later rows into the
    /// recorder are refused with that error; nothing published is lost.
    #[inline(always)]
    fn with_cursor<R>(&self, held: usize, f: impl FnOnce(&mut Cursor) -> R) -> R {
        self.with_cell(held, |cell| {
            let mut cursor = cell.load();
            let result = f(&mut cursor);
            cell.store(cursor);
            result
        })
    }

    /// [`LaneRing::with_cursor`] handing `f` the cell the cursor is kept in,
    /// for ring operations that use it in place (the row path: a cursor
    /// copied out and back cost the row its loads, stores and spills).
    #[inline(always)]
    fn with_cell<R>(&self, held: usize, f: impl FnOnce(&CursorCell) -> R) -> R {
        self.owner.store(held | IN_OFFER, Ordering::Relaxed);
        let result = f(&self.cursor);
        self.owner.store(held, Ordering::Relaxed);
        result
    }

    /// `counter += by` by the lane's only writer: a load and a store, not a
    /// locked read-modify-write.
    #[inline(always)]
    pub(crate) fn bump(counter: &AtomicU64, by: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(by),
            Ordering::Relaxed,
        );
    }
}

/// The bit of a lane's `owner` word set while its producer is inside an offer.
const IN_OFFER: usize = 1;

/// A thread's registration with one recorder.
pub(crate) struct Registration {
    shared: Arc<Shared>,
    pub(crate) lane: usize,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The thread is done with this recorder (it ended, or the recorder is
        // closed): its rows are all published, the flusher drains the rest.
        // The key goes first: once the lane is retired another thread may
        // claim it, and this thread's key may be reused once it has ended.
        if let Some(ring) = self.shared.lane(self.lane) {
            ring.owner.store(0, Ordering::Relaxed);
        }
        self.shared.lanes.retire(self.lane);
        self.shared.wake_flusher();
    }
}

thread_local! {
    static REGISTRATIONS: RefCell<Vec<Registration>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with the calling thread's lane of `shared` (registering the
/// thread on its first row) and its cursor.
#[inline(always)]
pub(crate) fn with_lane<R>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&LaneRing, &mut Cursor) -> Result<R>,
) -> Result<R> {
    let (lane, held) = lane_of(shared)?;
    lane.with_cursor(held, |cursor| f(lane, cursor))
}

/// [`with_lane`] with the cursor's cell (see [`LaneRing::with_cell`]).
#[inline(always)]
pub(crate) fn with_lane_cell<R>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&LaneRing, &CursorCell) -> Result<R>,
) -> Result<R> {
    let (lane, held) = lane_of(shared)?;
    lane.with_cell(held, |cell| f(lane, cell))
}

/// The calling thread's lane of `shared` and its owner word (not in an
/// offer), registering the thread on its first row.
#[inline(always)]
fn lane_of(shared: &Arc<Shared>) -> Result<(&LaneRing, usize)> {
    #[cfg(unix)]
    if let Some(first) = shared.first_lane() {
        // Relaxed: the word equals our key only if this thread stored it
        // (and it is not in an offer: that sets a bit the key never has).
        let held = first.owner.load(Ordering::Relaxed);
        if held == thread_key() {
            return Ok((first, held));
        }
    }
    other_lane(shared)
}

/// [`lane_of`] for every thread but the first lane's owner (out of the
/// owner's way: its row then runs straight through).
#[cold]
#[inline(never)]
fn other_lane(shared: &Arc<Shared>) -> Result<(&LaneRing, usize)> {
    let index = registered_lane(shared)?;
    let lane = shared
        .lane(index)
        .expect("a registered lane's ring is mapped before its registration");
    let held = lane.owner.load(Ordering::Relaxed);
    if held & IN_OFFER != 0 {
        return Err(reentrant());
    }
    Ok((lane, held))
}

#[cold]
#[inline(never)]
fn reentrant() -> CoreError {
    CoreError::Misuse(
        "this thread is already inside an offer to this recorder (a callback of that offer \
         calling back into the recorder, or an offer that panicked): the row was not recorded"
            .into(),
    )
}

/// The index of the calling thread's lane of `shared`, from its
/// registrations (registering it on its first row).
#[inline(never)]
fn registered_lane(shared: &Arc<Shared>) -> Result<usize> {
    REGISTRATIONS
        .try_with(|cell| {
            let mut regs = cell.borrow_mut();
            match regs.iter().find(|r| Arc::ptr_eq(&r.shared, shared)) {
                Some(r) => Ok(r.lane),
                None => register(shared, &mut regs),
            }
        })
        .unwrap_or_else(|_| {
            Err(CoreError::write(
                "this thread is exiting (its thread-local storage is gone): the row was not recorded",
            ))
        })
}

/// The calling thread's lane of `shared`, if it has one.
pub(crate) fn current_lane(shared: &Arc<Shared>) -> Option<usize> {
    REGISTRATIONS
        .try_with(|cell| {
            cell.try_borrow().ok().and_then(|regs| {
                regs.iter()
                    .find(|r| Arc::ptr_eq(&r.shared, shared))
                    .map(|r| r.lane)
            })
        })
        .ok()
        .flatten()
}

#[cold]
#[inline(never)]
fn register(shared: &Arc<Shared>, regs: &mut Vec<Registration>) -> Result<usize> {
    // Registrations with closed recorders hold their spool mappings: let go.
    regs.retain(|r| !r.shared.gate.is_closed());
    let lane = shared.lanes.claim().ok_or_else(|| {
        CoreError::Config(format!(
            "more than {} threads record into one recorder at once; \
             give each group of threads its own recorder",
            shared.lanes.len()
        ))
    })?;
    let ring = match shared.ensure_lane(lane) {
        Ok(r) => r,
        Err(e) => {
            shared.lanes.retire(lane);
            return Err(e);
        }
    };
    // The lane is this thread's from its claim (Acquire) on: start where the
    // ring's last producer stopped, then let the fast path find it.
    ring.cursor.store(ring.ring.cursor());
    #[cfg(unix)]
    ring.owner.store(thread_key(), Ordering::Relaxed);
    regs.push(Registration {
        shared: Arc::clone(shared),
        lane,
    });
    // The flusher faults in the ring's first pages ahead of this thread's
    // rows (see its `RingWarmup`): now, not at its next timed drain.
    shared.wake_flusher();
    Ok(lane)
}
