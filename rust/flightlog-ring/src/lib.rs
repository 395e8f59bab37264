//! A bounded, lock-free, multi-producer / single-consumer ring of fixed-width rows.
//!
//! Each row is `width` 64-bit words (f64 bits, i64, bools, dictionary codes, a
//! validity mask: whatever the caller packs). Producers on any number of threads
//! [`RowRing::try_push`] rows; one consumer [`RowRing::pop_with`]s them in order.
//!
//! The algorithm is Dmitry Vyukov's bounded MPMC queue (the one behind
//! crossbeam's `ArrayQueue`), specialised to one consumer and to rows whose
//! width is chosen at run time:
//!
//! * every slot carries a `stamp`; slot `i` starts with stamp `i`;
//! * a producer that reads `tail = t` and finds `stamp == t` in slot `t % cap`
//!   owns that slot once its CAS moves `tail` to `t + 1`; it writes the row and
//!   publishes it with `stamp = t + 1` (Release);
//! * the consumer at `head = h` reads slot `h % cap` when `stamp == h + 1`
//!   (Acquire), copies the row out and frees the slot for the next lap with
//!   `stamp = h + cap` (Release).
//!
//! Guarantees:
//! * a push never overwrites an unread row: a full ring returns [`PushError::Full`];
//! * rows are consumed in the order their slots were claimed;
//! * a row is seen by the consumer either whole or not at all;
//! * after [`RowRing::close`] no push succeeds ([`PushError::Closed`]), and
//!   every push that succeeded claimed a position below the one `close`
//!   returns: a consumer that reaches it has every accepted row.
//!
//! Closing is a bit of `tail` set with one `fetch_or`: a producer's claiming
//! CAS either lands before it (its row is below the returned position) or
//! fails and sees the bit. The hot path pays nothing for it: the bit makes
//! `tail` larger than every stamp, so it is tested only on the slow branch a
//! push already takes when its slot is not free.
//!
//! This ring's `unsafe` is `RowRing::write_row` and `RowRing::read_row`;
//! it is model-checked with loom (`tests/loom_ring.rs`).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod sync;

pub mod lanes;
pub mod spsc;

pub use lanes::{Busy, BusyFlag, Closed, Gate, LaneState, Lanes};
pub use spsc::{Cursor, CursorCell, Full, Reserved, SpscRing};

use sync::atomic::{AtomicU64, Ordering};
use sync::UnsafeCell;

/// Why a push wrote nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// Every slot holds an unread row.
    Full,
    /// The ring was closed: it takes no more rows.
    Closed,
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PushError::Full => "ring buffer is full",
            PushError::Closed => "ring buffer is closed",
        })
    }
}

impl std::error::Error for PushError {}

/// The bit of `tail` that marks the ring closed. Positions never reach it
/// (2^63 rows at 10^9 rows/s is 292 years), and stamps, which are positions,
/// never have it, so a closed `tail` matches no slot's stamp.
const CLOSED: u64 = 1 << 63;

/// Pads a value to its own cache line so producers and the consumer do not
/// false-share the `head` and `tail` counters.
#[repr(align(128))]
struct CachePadded<T>(T);

/// A bounded lock-free ring of rows of `width` u64 words.
pub struct RowRing {
    /// Next position a producer will claim (monotonic, never wraps in practice),
    /// with the [`CLOSED`] bit once the ring is closed.
    tail: CachePadded<AtomicU64>,
    /// Next position the consumer will read.
    head: CachePadded<AtomicU64>,
    stamps: Box<[AtomicU64]>,
    words: Box<[UnsafeCell<u64>]>,
    width: usize,
    capacity: usize,
    /// `capacity - 1`; the capacity is a power of two so a slot is `pos & mask`.
    mask: u64,
}

// SAFETY: every access to `words` is guarded by the stamp protocol described in
// the module docs: a slot's words are written only by the single producer whose
// CAS claimed that position, and read only by the consumer after it observed the
// producer's Release store of the stamp with Acquire. The consumer frees the slot
// with a Release store that the next producer observes with Acquire before
// writing. So no two threads ever access the same word concurrently with one of
// them writing, and `u64` is `Send`.
unsafe impl Sync for RowRing {}
// SAFETY: the ring owns plain `u64`s and atomics; moving it between threads is fine.
unsafe impl Send for RowRing {}

impl RowRing {
    /// A ring of at least `capacity` rows of `width` words each (the capacity
    /// is rounded up to a power of two, so that a slot index is a mask, not a
    /// division, on the hot path).
    ///
    /// # Panics
    /// If `capacity < 2`, `width` is zero, or `capacity * width` overflows.
    /// (With one slot the stamp that publishes a row, `pos + 1`, would equal the
    /// stamp that frees it for the next lap, `pos + capacity`: a producer could
    /// overwrite an unread row. The loom model found this.)
    pub fn new(capacity: usize, width: usize) -> Self {
        assert!(capacity >= 2, "ring capacity must be at least 2");
        assert!(width > 0, "ring width must be at least 1 word");
        let capacity = capacity
            .checked_next_power_of_two()
            .expect("ring capacity overflows usize");
        let total = capacity
            .checked_mul(width)
            .expect("ring capacity * width overflows usize");
        let stamps = (0..capacity as u64).map(AtomicU64::new).collect();
        let words = (0..total).map(|_| UnsafeCell::new(0)).collect();
        RowRing {
            tail: CachePadded(AtomicU64::new(0)),
            head: CachePadded(AtomicU64::new(0)),
            stamps,
            words,
            width,
            capacity,
            mask: capacity as u64 - 1,
        }
    }

    /// Words per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Rows the ring holds at most (a power of two).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Positions claimed so far: every row pushed (or being pushed) has a
    /// position below this. The consumer has consumed everything once
    /// [`RowRing::consumed`] reaches it.
    pub fn claimed(&self) -> u64 {
        self.tail.0.load(Ordering::Acquire) & !CLOSED
    }

    /// Closes the ring: every later push fails with [`PushError::Closed`],
    /// including producers waiting for room. Returns the final position:
    /// every push that succeeded (or will succeed: one that claimed its slot
    /// and is still copying its row) took a position below it, so the
    /// consumer has every row once [`RowRing::consumed`] reaches it.
    /// Idempotent.
    pub fn close(&self) -> u64 {
        self.tail.0.fetch_or(CLOSED, Ordering::AcqRel) & !CLOSED
    }

    /// True once [`RowRing::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.tail.0.load(Ordering::Acquire) & CLOSED != 0
    }

    /// Rows consumed so far.
    pub fn consumed(&self) -> u64 {
        self.head.0.load(Ordering::Acquire)
    }

    /// Rows in the ring (claimed and not yet consumed); approximate while
    /// producers race.
    pub fn len(&self) -> usize {
        let tail = self.claimed();
        let head = self.consumed();
        tail.saturating_sub(head) as usize
    }

    /// True when no row is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, pos: u64) -> usize {
        let slot = (pos & self.mask) as usize;
        debug_assert!(slot < self.capacity);
        slot
    }

    /// Pushes one row. `row.len()` must equal the ring's width.
    ///
    /// Returns the position the row took (its sequence number),
    /// [`PushError::Full`] when every slot holds an unread row (the ring is
    /// never overwritten), or [`PushError::Closed`] once the ring is closed.
    ///
    /// # Panics
    /// If `row.len() != self.width()`.
    #[inline]
    pub fn try_push(&self, row: &[u64]) -> Result<u64, PushError> {
        assert_eq!(row.len(), self.width, "row width does not match the ring");
        let mut pos = self.tail.0.load(Ordering::Relaxed);
        loop {
            let slot = self.slot(pos);
            let stamp = self.stamps[slot].load(Ordering::Acquire);
            if stamp == pos {
                // The slot is free for this lap: try to claim it.
                match self.tail.0.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: our CAS moved `tail` past `pos`, so no other
                        // producer can claim `pos` in this lap, and the consumer
                        // will not read the slot until it sees stamp `pos + 1`,
                        // which only we store, below, after writing.
                        unsafe { self.write_row(slot, row) };
                        self.stamps[slot].store(pos + 1, Ordering::Release);
                        return Ok(pos);
                    }
                    Err(current) => pos = current,
                }
            } else if stamp < pos {
                // A closed tail is above every stamp, so it lands here (a CAS
                // that lost to `close` reloaded the closed tail).
                if pos & CLOSED != 0 {
                    return Err(PushError::Closed);
                }
                // The slot still holds the row of the previous lap: full.
                // (Re-read the tail first: another producer may have moved on.)
                let current = self.tail.0.load(Ordering::Relaxed);
                if current == pos {
                    return Err(PushError::Full);
                }
                pos = current;
            } else {
                // Another producer claimed `pos` already; catch up.
                pos = self.tail.0.load(Ordering::Relaxed);
            }
            sync::spin_hint();
        }
    }

    /// Consumes up to `max_rows` rows in order, handing each to `f` as a slice of
    /// `width` words. Stops early at the first slot whose producer has claimed but
    /// not yet published it. Returns the number of rows consumed.
    ///
    /// Only one thread may consume: `pop_with` takes `&mut`-free `&self` so the
    /// ring can be shared, but callers must guarantee a single consumer (the
    /// recorder's flusher thread is the only caller).
    pub fn pop_with(&self, max_rows: usize, mut f: impl FnMut(&[u64])) -> usize {
        let mut head = self.head.0.load(Ordering::Relaxed);
        let mut row = vec![0u64; self.width];
        let mut n = 0;
        while n < max_rows {
            let slot = self.slot(head);
            let stamp = self.stamps[slot].load(Ordering::Acquire);
            if stamp != head + 1 {
                break;
            }
            // SAFETY: stamp `head + 1` was stored with Release by the producer
            // that finished writing this slot, and we loaded it with Acquire, so
            // its writes are visible; no producer writes the slot again until we
            // store `head + capacity` below.
            unsafe { self.read_row(slot, &mut row) };
            self.stamps[slot].store(head + self.capacity as u64, Ordering::Release);
            head += 1;
            self.head.0.store(head, Ordering::Release);
            f(&row);
            n += 1;
        }
        n
    }

    /// Copies `row` into `slot`.
    ///
    /// # Safety
    /// The caller must own `slot` exclusively: it claimed it with the CAS in
    /// `try_push` and has not yet published it.
    unsafe fn write_row(&self, slot: usize, row: &[u64]) {
        let base = slot * self.width;
        // One bounds check for the slot, not one per word.
        let cells = &self.words[base..base + self.width];
        for (cell, &word) in cells.iter().zip(row) {
            // SAFETY: exclusive ownership of the slot is the caller's contract.
            cell.with_mut(|p| unsafe { *p = word });
        }
    }

    /// Copies the words of `slot` into `out`.
    ///
    /// # Safety
    /// The caller must be the single consumer and have observed the slot's
    /// published stamp with Acquire.
    unsafe fn read_row(&self, slot: usize, out: &mut [u64]) {
        let base = slot * self.width;
        let cells = &self.words[base..base + self.width];
        for (word, cell) in out.iter_mut().zip(cells) {
            // SAFETY: the slot is published and not yet freed (caller's
            // contract), so no producer writes it.
            *word = cell.with(|p| unsafe { *p });
        }
    }
}

impl std::fmt::Debug for RowRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowRing")
            .field("capacity", &self.capacity)
            .field("width", &self.width)
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn capacity_is_rounded_up_to_a_power_of_two() {
        assert_eq!(RowRing::new(5, 1).capacity(), 8);
        assert_eq!(RowRing::new(8, 1).capacity(), 8);
    }

    #[test]
    fn push_pop_in_order_and_full_is_reported() {
        let ring = RowRing::new(4, 2);
        for i in 0..4u64 {
            assert_eq!(ring.try_push(&[i, i * 10]), Ok(i));
        }
        assert_eq!(ring.try_push(&[9, 9]), Err(PushError::Full));
        let mut seen = Vec::new();
        assert_eq!(ring.pop_with(3, |r| seen.push(r.to_vec())), 3);
        assert_eq!(seen, vec![vec![0, 0], vec![1, 10], vec![2, 20]]);
        // Freed slots are reusable on the next lap.
        assert_eq!(ring.try_push(&[4, 40]), Ok(4));
        assert_eq!(ring.len(), 2);
        seen.clear();
        assert_eq!(ring.pop_with(usize::MAX, |r| seen.push(r.to_vec())), 2);
        assert_eq!(seen, vec![vec![3, 30], vec![4, 40]]);
        assert!(ring.is_empty());
        assert_eq!(ring.pop_with(10, |_| unreachable!()), 0);
    }

    #[test]
    fn close_refuses_later_pushes_and_returns_the_final_position() {
        let ring = RowRing::new(4, 1);
        for i in 0..4u64 {
            assert_eq!(ring.try_push(&[i]), Ok(i));
        }
        // Full, then closed: a producer waiting for room learns it is closed.
        assert_eq!(ring.try_push(&[9]), Err(PushError::Full));
        assert!(!ring.is_closed());
        assert_eq!(ring.close(), 4);
        assert!(ring.is_closed());
        assert_eq!(ring.try_push(&[9]), Err(PushError::Closed));
        assert_eq!(ring.claimed(), 4);
        let mut seen = Vec::new();
        assert_eq!(ring.pop_with(usize::MAX, |r| seen.push(r[0])), 4);
        assert_eq!(seen, vec![0, 1, 2, 3]);
        // Room does not reopen it; closing again changes nothing.
        assert_eq!(ring.try_push(&[9]), Err(PushError::Closed));
        assert_eq!(ring.close(), 4);
        assert!(ring.is_empty());
    }

    #[test]
    fn close_racing_producers_keeps_every_accepted_row() {
        for _ in 0..20 {
            let ring = Arc::new(RowRing::new(8, 2));
            let producers: Vec<_> = (0..4u64)
                .map(|p| {
                    let ring = Arc::clone(&ring);
                    std::thread::spawn(move || {
                        let mut accepted = 0u64;
                        loop {
                            match ring.try_push(&[p, accepted]) {
                                Ok(_) => accepted += 1,
                                Err(PushError::Full) => std::thread::yield_now(),
                                Err(PushError::Closed) => return accepted,
                            }
                        }
                    })
                })
                .collect();
            let mut seen = 0u64;
            while seen < 10_000 {
                seen += ring.pop_with(usize::MAX, |_| {}) as u64;
            }
            let last = ring.close();
            while ring.consumed() < last {
                seen += ring.pop_with(usize::MAX, |_| {}) as u64;
            }
            let accepted: u64 = producers.into_iter().map(|h| h.join().unwrap()).sum();
            assert_eq!(seen, accepted);
            assert_eq!(last, accepted);
            assert!(ring.is_empty());
        }
    }

    #[test]
    #[should_panic(expected = "at least 2")]
    fn one_slot_ring_is_rejected() {
        RowRing::new(1, 1);
    }

    #[test]
    #[should_panic(expected = "row width")]
    fn wrong_width_panics() {
        RowRing::new(2, 3).try_push(&[1, 2]).ok();
    }

    #[test]
    fn many_producers_lose_and_duplicate_nothing() {
        const PRODUCERS: u64 = 4;
        const PER: u64 = 50_000;
        let ring = Arc::new(RowRing::new(64, 3));
        let handles: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let ring = Arc::clone(&ring);
                std::thread::spawn(move || {
                    for i in 0..PER {
                        let row = [p, i, p ^ i];
                        while ring.try_push(&row).is_err() {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut next = [0u64; PRODUCERS as usize];
        let mut total = 0;
        while total < PRODUCERS * PER {
            total += ring.pop_with(usize::MAX, |r| {
                let (p, i) = (r[0] as usize, r[1]);
                assert_eq!(r[2], r[0] ^ r[1], "torn row");
                // Each producer's rows arrive in its own order.
                assert_eq!(next[p], i);
                next[p] += 1;
            }) as u64;
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(next, [PER; PRODUCERS as usize]);
        assert!(ring.is_empty());
    }
}
