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

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use flightlog_ring::Cursor;

use crate::error::{CoreError, Result};
use crate::recorder::Shared;
use crate::spool::MappedRing;

/// One lane: its ring and the counters only its producer writes.
#[derive(Debug)]
pub(crate) struct LaneRing {
    pub(crate) ring: MappedRing,
    pub(crate) offered: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) stalls: AtomicU64,
    pub(crate) last_iter: AtomicI64,
    pub(crate) has_iter: AtomicBool,
}

impl LaneRing {
    pub(crate) fn new(ring: MappedRing) -> Self {
        LaneRing {
            ring,
            offered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            last_iter: AtomicI64::new(0),
            has_iter: AtomicBool::new(false),
        }
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

/// A thread's registration with one recorder.
pub(crate) struct Registration {
    shared: Arc<Shared>,
    pub(crate) lane: usize,
    /// The lane's ring, found once: a row then reads its registration and
    /// the ring, not `shared`'s table of lanes (a cache line less a row).
    ring: Arc<LaneRing>,
    pub(crate) cursor: Cursor,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The thread is done with this recorder (it ended, or the recorder is
        // closed): its rows are all published, the flusher drains the rest.
        self.shared.lanes.retire(self.lane);
        self.shared.wake_flusher();
    }
}

thread_local! {
    static REGISTRATIONS: RefCell<Vec<Registration>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with the calling thread's lane of `shared` (registering the
/// thread on its first row) and its cursor.
#[inline]
pub(crate) fn with_lane<R>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&LaneRing, &mut Cursor, usize) -> Result<R>,
) -> Result<R> {
    REGISTRATIONS
        .try_with(|cell| {
            let mut regs = cell.borrow_mut();
            let i = match regs.iter().position(|r| Arc::ptr_eq(&r.shared, shared)) {
                Some(i) => i,
                None => register(shared, &mut regs)?,
            };
            let r = &mut regs[i];
            f(&r.ring, &mut r.cursor, r.lane)
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
    regs.push(Registration {
        shared: Arc::clone(shared),
        lane,
        cursor: ring.ring.cursor(),
        ring,
    });
    Ok(regs.len() - 1)
}
