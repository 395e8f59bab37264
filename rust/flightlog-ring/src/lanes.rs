//! Producer lanes: which per-thread rings are in use, and the gate that closes
//! them all without a read-modify-write on any producer's row path.
//!
//! A recorder has a fixed number of lanes, one per recording thread. A thread
//! takes a free lane on its first row ([`Lanes::claim`], a CAS: once per
//! thread, not per row), and gives it back when it ends ([`Lanes::retire`]).
//! The consumer drains every lane that is not free, and frees a retired lane
//! once it has released all of its rows ([`Lanes::free_if_drained`]), so a
//! thread that stopped recording or exited never holds rows back.
//!
//! Closing ([`Gate`]) must guarantee that no row is published after the
//! consumer's final drain. The producer marks itself busy (its [`BusyFlag`],
//! kept wherever the producer's other per-row state is, so that the mark
//! costs no cache line of its own), checks `closed`, pushes, and marks itself
//! idle; the closer sets `closed`, then waits for every busy flag to clear. That is Dekker's pattern, which needs a full
//! fence on both sides (a store followed by a load of another location). The
//! producer's fence would cost as much as the row, so it is made asymmetric:
//! the producer has only a compiler fence, and the closer runs a process-wide
//! barrier (Linux `membarrier`, supplied by the caller as `heavy_fence`) that
//! forces the full fence onto every running thread. Where that barrier is not
//! available, the producer takes the full fence itself. Under loom both sides
//! use `fence(SeqCst)`, which is what the asymmetric pair is equivalent to.

use crate::sync::atomic::{fence, AtomicU64, AtomicU8, Ordering};

const FREE: u8 = 0;
const ACTIVE: u8 = 1;
const RETIRED: u8 = 2;

/// The state of one lane, padded to its own cache line (claims and
/// retirements of one lane do not disturb another's).
#[repr(align(128))]
#[derive(Debug)]
pub struct Lane {
    state: AtomicU8,
}

impl Lane {
    fn new() -> Self {
        Lane {
            state: AtomicU8::new(FREE),
        }
    }
}

/// A producer's mark for the [`Gate`]: set while it is between its closed
/// check and its publish. Only that producer writes it; the closer reads it.
#[derive(Debug, Default)]
pub struct BusyFlag {
    busy: AtomicU64,
}

impl BusyFlag {
    /// A flag that is not set.
    pub fn new() -> Self {
        BusyFlag {
            busy: AtomicU64::new(0),
        }
    }
}

/// A fixed set of lanes.
#[derive(Debug)]
pub struct Lanes {
    lanes: Box<[Lane]>,
}

/// What [`Lanes::state`] says about a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneState {
    Free,
    /// A live producer owns it.
    Active,
    /// Its producer is gone; its rows still need draining.
    Retired,
}

impl Lanes {
    /// `n` free lanes.
    pub fn new(n: usize) -> Self {
        Lanes {
            lanes: (0..n).map(|_| Lane::new()).collect(),
        }
    }

    /// Number of lanes.
    pub fn len(&self) -> usize {
        self.lanes.len()
    }

    /// True when there are no lanes at all.
    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// Takes a free lane for the calling producer; `None` when all are taken.
    pub fn claim(&self) -> Option<usize> {
        self.lanes.iter().position(|l| {
            l.state
                .compare_exchange(FREE, ACTIVE, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// The producer of lane `i` is done (its last publish happened before):
    /// the consumer drains what is left and frees the lane.
    pub fn retire(&self, i: usize) {
        self.lanes[i].state.store(RETIRED, Ordering::Release);
    }

    /// Lane `i`'s state (Acquire: a `Retired` lane's rows are all published).
    pub fn state(&self, i: usize) -> LaneState {
        match self.lanes[i].state.load(Ordering::Acquire) {
            FREE => LaneState::Free,
            ACTIVE => LaneState::Active,
            _ => LaneState::Retired,
        }
    }

    /// Frees retired lane `i` for a new producer; the caller has released every
    /// row its producer published (read after it saw `Retired`).
    pub fn free_if_drained(&self, i: usize) -> bool {
        self.lanes[i]
            .state
            .compare_exchange(RETIRED, FREE, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

/// The recorder-wide closed flag, with the asymmetric handshake described in
/// the module docs.
#[derive(Debug)]
pub struct Gate {
    /// [`GATE_CLOSED`] once closing began, and [`GATE_SYMMETRIC`] when
    /// producers fence themselves: one word, so that a producer of an open
    /// asymmetric gate (the usual case) reads it once and tests it once.
    state: AtomicU8,
    heavy_fence: fn() -> bool,
}

/// [`Gate`]'s state: closing began.
const GATE_CLOSED: u8 = 1;
/// [`Gate`]'s state: no process-wide barrier, producers fence themselves.
const GATE_SYMMETRIC: u8 = 2;

/// Why [`Gate::enter`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// A producer between [`Gate::enter`] and the drop of this guard may publish
/// rows; the closer waits for it.
#[must_use = "the producer stays busy until the guard is dropped"]
pub struct Busy<'a> {
    flag: &'a BusyFlag,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        // Release: the rows published inside are visible to a closer that
        // reads `busy == 0` with Acquire.
        self.flag.busy.store(0, Ordering::Release);
    }
}

fn full_fence() -> bool {
    fence(Ordering::SeqCst);
    true
}

impl Gate {
    /// An open gate. `heavy_fence` forces a full memory barrier on every
    /// thread of the process and returns true, or returns false when it cannot
    /// (then producers fence themselves). Call it once here to learn which.
    pub fn new(heavy_fence: Option<fn() -> bool>) -> Self {
        let (asymmetric, heavy_fence) = match heavy_fence {
            Some(f) if !cfg!(loom) && f() => (true, f),
            _ => (false, full_fence as fn() -> bool),
        };
        Gate {
            state: AtomicU8::new(if asymmetric { 0 } else { GATE_SYMMETRIC }),
            heavy_fence,
        }
    }

    /// True when producers use only a compiler fence.
    pub fn is_asymmetric(&self) -> bool {
        // The symmetric bit is set at construction and never changes.
        self.state.load(Ordering::Relaxed) & GATE_SYMMETRIC == 0
    }

    /// True once [`Gate::close`] began.
    pub fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & GATE_CLOSED != 0
    }

    /// Sets the producer's `flag` and checks the gate: `Err(Closed)` once
    /// closing began (nothing may be published then); otherwise the producer
    /// publishes while it holds the guard. The flag must be one the closer
    /// finds ([`Gate::close`]'s `flags`) from before this call on.
    #[inline(always)]
    pub fn enter<'a>(&self, flag: &'a BusyFlag) -> Result<Busy<'a>, Closed> {
        flag.busy.store(1, Ordering::Relaxed);
        // Paired with the closer's process-wide barrier when the gate is
        // asymmetric. (A compiler fence is not a memory operation: std's, also
        // under loom.)
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        let busy = Busy { flag };
        let state = self.state.load(Ordering::Relaxed);
        if state == 0 {
            // Asymmetric and open: the closer's barrier orders this read.
            return Ok(busy);
        }
        // A symmetric gate's producer fences, then reads the closed bit again
        // (the read before the fence decides nothing else): every row of a
        // platform without a process-wide barrier comes this way.
        if state & GATE_SYMMETRIC != 0 {
            fence(Ordering::SeqCst);
            if self.state.load(Ordering::Relaxed) & GATE_CLOSED == 0 {
                return Ok(busy);
            }
        }
        Err(Closed)
    }

    /// Closes the gate and waits until no producer is inside: afterwards no
    /// row is published on any lane, and every row published so far is
    /// visible. Producers that entered before keep going; `wait` is called
    /// while one is still inside (spin, yield or sleep: the caller's choice).
    ///
    /// `flags` lists every producer's [`BusyFlag`]. It is called after the
    /// closed flag is set and fenced, so it may read a table that producers
    /// add to as they come (Acquire): a producer that made its flag findable
    /// before it entered, and then found the gate open, is found here (its
    /// fence came before the closer's, so its earlier writes are visible).
    pub fn close<'a, I>(&self, flags: impl FnOnce() -> I, mut wait: impl FnMut())
    where
        I: IntoIterator<Item = &'a BusyFlag>,
    {
        self.state.fetch_or(GATE_CLOSED, Ordering::SeqCst);
        if !(self.heavy_fence)() {
            fence(Ordering::SeqCst);
        }
        for flag in flags() {
            while flag.busy.load(Ordering::Acquire) != 0 {
                wait();
            }
        }
    }
}
