//! A bounded single-producer / single-consumer ring of fixed-width rows, laid
//! out in caller-provided words so that it can live in a memory-mapped file.
//!
//! One producer thread pushes rows; one consumer reads them in order and later
//! *releases* them (says they are safe elsewhere), which frees their slots. The
//! words are `AtomicU64` throughout: the row words are written and read with
//! relaxed operations (a plain `mov` on x86-64 and AArch64) and ordered by the
//! two position words, so there is no data race even if a caller broke the
//! single-producer contract (it would only read garbage). The one `unsafe`
//! here is a prefetch hint (`prefetch_next_slot`), which touches no memory.
//!
//! Layout, in words (128-byte lines so the producer's and the consumer's
//! positions never share a cache line):
//!
//! | words | meaning |
//! |---|---|
//! | 0 | `tail`: rows published (written by the producer, Release) |
//! | 16 | `released`: rows the consumer no longer needs (Release) |
//! | 32.. | `capacity` slots of `1 + width` words: the slot's stamp `pos + 1`, then the row |
//!
//! The producer keeps its position and a cached bound (`released + capacity`)
//! in a [`Cursor`] it owns, so a push is: compare with the bound, store the
//! stamp and the row (relaxed), then one Release store of `tail`. It reads the
//! consumer's `released` only when the cached bound says the ring is full.
//!
//! The stamps are for a reader of the words after the process died (recovery
//! from a spool file): a slot whose stamp is not `pos + 1` does not hold row
//! `pos`, and is not trusted.

use crate::sync::atomic::{AtomicU64, Ordering};
use std::ops::Deref;

/// Word index of the published position.
const TAIL: usize = 0;
/// Word index of the released position.
const RELEASED: usize = 16;
/// Words before the first slot.
pub const HEADER_WORDS: usize = 32;

/// Why a push wrote nothing: every slot holds a row not yet released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ring buffer is full")
    }
}

impl std::error::Error for Full {}

/// A single-producer / single-consumer ring over the words `M` holds (a heap
/// slice, or a memory-mapped file).
///
/// `repr(C)`: what a push reads to find its slot (the words, the mask and the
/// stride) comes first, so that a holder can keep it in one cache line.
#[repr(C)]
pub struct SpscRing<M> {
    words: M,
    mask: u64,
    stride: usize,
    width: usize,
    capacity: usize,
}

/// A slot [`SpscRing::reserve_slot`] handed to the producer: the stamp word
/// and the row words, published by [`SpscRing::publish_slot`].
#[derive(Debug)]
pub struct Reserved<'a> {
    slot: &'a [AtomicU64],
}

impl<'a> Reserved<'a> {
    /// The row words (the stamp excluded), for the producer to fill.
    #[inline(always)]
    pub fn words(&self) -> &'a [AtomicU64] {
        &self.slot[1..]
    }
}

/// The producer's private state: the next position, and how far it may go
/// before it must look at the consumer's `released` again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pos: u64,
    limit: u64,
}

impl Cursor {
    /// The next position this producer will publish.
    pub fn position(&self) -> u64 {
        self.pos
    }
}

/// A producer's [`Cursor`] kept where the producer finds it by address (a
/// table shared with other threads) rather than owned by it. Only the ring's
/// one producer loads and stores it, so relaxed operations (plain moves) are
/// enough: whoever hands the ring to a new producer orders that handover.
#[derive(Debug)]
pub struct CursorCell {
    pos: AtomicU64,
    limit: AtomicU64,
}

impl CursorCell {
    /// A cell holding `cursor`.
    pub fn new(cursor: Cursor) -> Self {
        CursorCell {
            pos: AtomicU64::new(cursor.pos),
            limit: AtomicU64::new(cursor.limit),
        }
    }

    /// The cursor last stored.
    #[inline(always)]
    pub fn load(&self) -> Cursor {
        Cursor {
            pos: self.pos.load(Ordering::Relaxed),
            limit: self.limit.load(Ordering::Relaxed),
        }
    }

    /// Keeps `cursor` for the producer's next push.
    #[inline(always)]
    pub fn store(&self, cursor: Cursor) {
        self.pos.store(cursor.pos, Ordering::Relaxed);
        self.limit.store(cursor.limit, Ordering::Relaxed);
    }
}

impl<M: Deref<Target = [AtomicU64]>> SpscRing<M> {
    /// Words a ring of `capacity` rows of `width` words needs.
    pub fn words_needed(capacity: usize, width: usize) -> usize {
        HEADER_WORDS + capacity * (width + 1)
    }

    /// A ring over `words` (at least [`SpscRing::words_needed`]). Fresh words
    /// (all zero) make an empty ring; words that already hold a ring (a
    /// mapped file reopened) keep its positions and rows.
    ///
    /// # Panics
    /// If `capacity` is not a power of two of at least 2, `width` is zero, or
    /// `words` is too short.
    pub fn new(words: M, capacity: usize, width: usize) -> Self {
        assert!(
            capacity >= 2 && capacity.is_power_of_two(),
            "ring capacity must be a power of two of at least 2"
        );
        assert!(width > 0, "ring width must be at least 1 word");
        assert!(
            words.len() >= Self::words_needed(capacity, width),
            "ring memory too small: {} words for {} rows of {} words",
            words.len(),
            capacity,
            width
        );
        SpscRing {
            words,
            width,
            capacity,
            mask: capacity as u64 - 1,
            stride: width + 1,
        }
    }

    /// The memory the ring lives in.
    pub fn memory(&self) -> &M {
        &self.words
    }

    /// Where in [`SpscRing::memory`] the slots of positions `from..to` of
    /// the ring's first lap lie: a word range, clipped to the last slot (a
    /// position past the first lap reuses a slot of it). For memory that is
    /// faulted in ahead of the producer's first writes.
    pub fn first_lap_words(&self, from: u64, to: u64) -> std::ops::Range<usize> {
        let slot = |pos: u64| HEADER_WORDS + pos.min(self.capacity as u64) as usize * self.stride;
        slot(from)..slot(to.max(from))
    }

    /// Words per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Rows the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Rows published so far (Acquire: the rows below are visible).
    pub fn published(&self) -> u64 {
        self.words[TAIL].load(Ordering::Acquire)
    }

    /// The row words (stamp excluded) of the newest row published, `None`
    /// before the first. Exact for the producer itself (nothing else writes
    /// its slots). Another thread reads while the producer may go on: if the
    /// producer laps the ring meanwhile, the words may be those of a later
    /// row, or of a slot being filled, word by word (each word whole). Good
    /// for "a recent row", not for a row's contents.
    pub fn last_published(&self) -> Option<&[AtomicU64]> {
        let pos = self.published().checked_sub(1)?;
        let base = self.base(pos);
        self.words.get(base + 1..base + self.stride)
    }

    /// Rows the consumer has released.
    pub fn released(&self) -> u64 {
        self.words[RELEASED].load(Ordering::Acquire)
    }

    /// Rows published and not yet released.
    pub fn len(&self) -> usize {
        self.published().saturating_sub(self.released()) as usize
    }

    /// True when every published row was released.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn base(&self, pos: u64) -> usize {
        HEADER_WORDS + (pos & self.mask) as usize * self.stride
    }

    // ---- producer side ----

    /// The producer's cursor, continuing from what the ring already holds. Only
    /// one producer may push at a time: the caller hands the cursor to one
    /// thread (a second cursor pushing concurrently would overwrite its rows).
    pub fn cursor(&self) -> Cursor {
        let pos = self.words[TAIL].load(Ordering::Acquire);
        Cursor {
            pos,
            limit: self.released() + self.capacity as u64,
        }
    }

    /// Pushes one row (`row.len() == width`) and publishes it. Returns its
    /// position, or [`Full`] when every slot holds an unreleased row.
    ///
    /// # Panics
    /// If `row.len() != self.width()`.
    #[inline]
    pub fn push(&self, cursor: &mut Cursor, row: &[u64]) -> Result<u64, Full> {
        assert_eq!(row.len(), self.width, "row width does not match the ring");
        let pos = cursor.pos;
        if pos >= cursor.limit && !self.refresh(cursor, 1) {
            return Err(Full);
        }
        let slot = self.write(pos, row);
        cursor.pos = pos + 1;
        self.words[TAIL].store(pos + 1, Ordering::Release);
        prefetch_next_slot(slot);
        Ok(pos)
    }

    /// Pushes as many whole rows of `rows` (a multiple of `width` words) as
    /// there is room for, and publishes them with one store. Returns how many
    /// rows were pushed (0 when the ring is full).
    ///
    /// # Panics
    /// If `rows.len()` is not a multiple of `width`.
    pub fn push_rows(&self, cursor: &mut Cursor, rows: &[u64]) -> usize {
        assert_eq!(rows.len() % self.width, 0, "rows are not whole rows");
        let n = rows.len() / self.width;
        if n == 0 {
            return 0;
        }
        if cursor.pos + n as u64 > cursor.limit {
            self.refresh(cursor, n as u64);
        }
        let room = cursor.limit.saturating_sub(cursor.pos).min(n as u64) as usize;
        for (i, row) in rows.chunks_exact(self.width).take(room).enumerate() {
            self.write(cursor.pos + i as u64, row);
        }
        if room > 0 {
            cursor.pos += room as u64;
            self.words[TAIL].store(cursor.pos, Ordering::Release);
        }
        room
    }

    /// Re-reads `released`; true when `want` more rows fit.
    #[cold]
    fn refresh(&self, cursor: &mut Cursor, want: u64) -> bool {
        // Acquire: the consumer's reads of the slots it released happened
        // before this producer overwrites them.
        cursor.limit = self.released() + self.capacity as u64;
        cursor.pos + want <= cursor.limit
    }

    /// The row words (the stamp excluded) of the next slot, for the producer
    /// to fill in place and then [`SpscRing::publish`]: a row converted
    /// straight into the ring skips a copy through the stack. `None` when the
    /// ring is full. Filling without publishing records nothing: the consumer
    /// reads no slot at or beyond `tail`, and the next reservation returns the
    /// same slot.
    #[inline]
    pub fn reserve(&self, cursor: &mut Cursor) -> Option<&[AtomicU64]> {
        self.reserve_slot(cursor).map(|r| r.words())
    }

    /// [`SpscRing::reserve`] keeping the whole slot, so that
    /// [`SpscRing::publish_slot`] stamps it without finding it again.
    #[inline(always)]
    pub fn reserve_slot(&self, cursor: &mut Cursor) -> Option<Reserved<'_>> {
        let pos = cursor.pos;
        if pos >= cursor.limit && !self.refresh(cursor, 1) {
            return None;
        }
        Some(self.slot_at(pos))
    }

    /// [`SpscRing::reserve_slot`] on the cursor where it is kept: nothing is
    /// copied out of the cell and back (a refreshed bound is stored in it).
    #[inline(always)]
    pub fn reserve_slot_in(&self, cell: &CursorCell) -> Option<Reserved<'_>> {
        let pos = cell.pos.load(Ordering::Relaxed);
        if pos >= cell.limit.load(Ordering::Relaxed) && !self.refresh_in(cell, pos) {
            return None;
        }
        Some(self.slot_at(pos))
    }

    /// [`SpscRing::refresh`] of a kept cursor at `pos`, for one row.
    #[cold]
    fn refresh_in(&self, cell: &CursorCell, pos: u64) -> bool {
        let mut cursor = Cursor {
            pos,
            limit: cell.limit.load(Ordering::Relaxed),
        };
        let room = self.refresh(&mut cursor, 1);
        cell.limit.store(cursor.limit, Ordering::Relaxed);
        room
    }

    /// [`SpscRing::publish_slot`] on the cursor where it is kept: `slot` is
    /// what the last [`SpscRing::reserve_slot_in`] on this ring and `cell`
    /// returned.
    #[inline(always)]
    pub fn publish_slot_in(&self, cell: &CursorCell, slot: Reserved<'_>) -> u64 {
        let pos = cell.pos.load(Ordering::Relaxed);
        debug_assert!(
            pos < cell.limit.load(Ordering::Relaxed),
            "publish without a reservation"
        );
        self.publish_at(pos, slot, |next| cell.pos.store(next, Ordering::Relaxed));
        pos
    }

    /// Publishes the slot the last [`SpscRing::reserve`] returned, with the
    /// words the producer left in it, and returns its position.
    ///
    /// # Panics
    /// If no slot is reserved (the cursor is at its bound): a debug assertion.
    #[inline]
    pub fn publish(&self, cursor: &mut Cursor) -> u64 {
        self.publish_slot(cursor, self.slot_at(cursor.pos))
    }

    /// Publishes `slot`, which the last [`SpscRing::reserve_slot`] on this
    /// ring and `cursor` returned (no other reservation or push since), with
    /// the words the producer left in it, and returns its position.
    ///
    /// # Panics
    /// If no slot is reserved (the cursor is at its bound), or `slot` is not
    /// the reserved one: debug assertions.
    #[inline(always)]
    pub fn publish_slot(&self, cursor: &mut Cursor, slot: Reserved<'_>) -> u64 {
        let pos = cursor.pos;
        debug_assert!(pos < cursor.limit, "publish without a reservation");
        self.publish_at(pos, slot, |next| cursor.pos = next);
        pos
    }

    /// The slot of position `pos`.
    #[inline(always)]
    fn slot_at(&self, pos: u64) -> Reserved<'_> {
        let base = self.base(pos);
        Reserved {
            slot: &self.words[base..base + self.stride],
        }
    }

    /// Stamps `slot`, reserved at `pos`, and publishes it; `advance` keeps
    /// the producer's next position (wherever its cursor lives) in between.
    #[inline(always)]
    fn publish_at(&self, pos: u64, slot: Reserved<'_>, advance: impl FnOnce(u64)) {
        debug_assert!(
            std::ptr::eq(slot.slot.as_ptr(), self.words[self.base(pos)..].as_ptr()),
            "publish of a slot that is not the reserved one"
        );
        // The stamp last: a reader of the file after a crash trusts the slot
        // only once it says `pos + 1`, and `tail` (Release) orders it and the
        // row before the consumer's Acquire.
        slot.slot[0].store(pos + 1, Ordering::Relaxed);
        advance(pos + 1);
        self.words[TAIL].store(pos + 1, Ordering::Release);
        prefetch_next_slot(slot.slot);
    }

    /// Stamps and fills the slot of `pos`, and returns it.
    #[inline(always)]
    fn write(&self, pos: u64, row: &[u64]) -> &[AtomicU64] {
        let base = self.base(pos);
        let slot = &self.words[base..base + self.stride];
        slot[0].store(pos + 1, Ordering::Relaxed);
        for (w, &v) in slot[1..].iter().zip(row) {
            w.store(v, Ordering::Relaxed);
        }
        slot
    }

    // ---- consumer side ----

    /// Copies row `pos` into `out` (`width` words). `pos` must be below
    /// [`SpscRing::published`] (as read by this consumer) and not yet released;
    /// returns false if the slot's stamp says otherwise (memory that is not
    /// this ring's, or a caller's mistake), and then `out` is not to be used.
    #[inline]
    pub fn read(&self, pos: u64, out: &mut [u64]) -> bool {
        let base = self.base(pos);
        let slot = &self.words[base..base + self.stride];
        for (o, w) in out.iter_mut().zip(&slot[1..]) {
            *o = w.load(Ordering::Relaxed);
        }
        slot[0].load(Ordering::Relaxed) == pos + 1
    }

    /// The words of each row `from..to` (stamps excluded), in order: the
    /// consumer's bulk read, with the same contract as [`SpscRing::read`] for
    /// every position (below `published`, not released). Slots are walked in
    /// at most two contiguous runs (the ring wraps once at most), so the
    /// iterator's length is exact.
    ///
    /// # Panics
    /// If the range spans more than the capacity.
    pub fn rows(&self, from: u64, to: u64) -> impl Iterator<Item = &[AtomicU64]> + '_ {
        assert!(
            from <= to && to - from <= self.capacity as u64,
            "rows {from}..{to} do not fit a ring of {}",
            self.capacity
        );
        let n = (to - from) as usize;
        let first = (from & self.mask) as usize;
        let before_wrap = n.min(self.capacity - first);
        let run = |slot: usize, rows: usize| {
            let start = HEADER_WORDS + slot * self.stride;
            self.words[start..start + rows * self.stride]
                .chunks_exact(self.stride)
                .map(|s| &s[1..])
        };
        run(first, before_wrap).chain(run(0, n - before_wrap))
    }

    /// Word `k` of each row `from..to`: one column of [`SpscRing::rows`],
    /// the consumer's transposing read.
    ///
    /// # Panics
    /// If `k` is not below the width, or as [`SpscRing::rows`].
    pub fn column(&self, from: u64, to: u64, k: usize) -> impl Iterator<Item = u64> + '_ {
        assert!(k < self.width, "word {k} of a row of {} words", self.width);
        self.rows(from, to)
            .map(move |row| row[k].load(Ordering::Relaxed))
    }

    /// Frees every slot below `upto` for the producer (Release: the reads of
    /// those slots happen before the producer's next writes to them).
    pub fn release(&self, upto: u64) {
        debug_assert!(upto <= self.published());
        self.words[RELEASED].store(upto, Ordering::Release);
    }

    // ---- after the producer's process died ----

    /// The rows a dead producer published that were not released, oldest
    /// first, from `from` on (a position already safe elsewhere, or 0): each
    /// is handed to `f` with its position. Stops at the first slot whose
    /// stamp does not match its position. Returns (rows handed over, rows
    /// that should have been there but whose stamp did not match).
    pub fn salvage(&self, from: u64, mut f: impl FnMut(u64, &[u64])) -> (u64, u64) {
        let tail = self.published();
        // Rows below `tail - capacity` were overwritten by a later lap.
        let start = from
            .max(self.released())
            .max(tail.saturating_sub(self.capacity as u64));
        let mut row = vec![0u64; self.width];
        let mut pos = start;
        while pos < tail {
            if !self.read(pos, &mut row) {
                return (pos - start, tail - pos);
            }
            f(pos, &row);
            pos += 1;
        }
        (tail.saturating_sub(start), 0)
    }
}

impl<M> std::fmt::Debug for SpscRing<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpscRing")
            .field("capacity", &self.capacity)
            .field("width", &self.width)
            .finish()
    }
}

/// Fresh zeroed words on the heap (tests, and rings that need no file).
pub fn heap_words(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// Asks the CPU to bring the slot after `slot` into this core's caches while
/// the caller goes on with its own work: the lines of the slot's first and
/// last words. Those are all of its lines for a slot of up to 9 words (72
/// bytes, two lines at most), and for the common 12-word slot of a 10-value
/// row at the offsets such slots start at (every 96 bytes from a 64-byte
/// boundary: two lines each); a wider slot's middle lines are left to the
/// hardware's next-line prefetcher.
///
/// Why: when a thread records one row per iteration of a solver, the lines of
/// its next slot are in none of its core's caches: this core last wrote them a
/// lap of the ring ago, and the consumer last read them on another core. Each
/// row's stores then missed to L3 or memory. Fetched at publish, the lines
/// wait in this core's L2 (which a solver's working set of a few hundred KiB
/// leaves them in) through the iteration's own work. In the 10 µs solver loop
/// of `benches/peers/overhead.py` the whole overhead went from 1.45-1.69% to
/// 1.14-1.23% (`benches/RESULTS.md`, session 28), for 5 instructions a row.
/// After the ring's last slot the address lies past the slots (in whatever is
/// mapped there, or nothing): a prefetch never faults, and slot 0 just misses
/// once a lap. On other architectures this does nothing (Rust has no stable
/// prefetch there); `_MM_HINT_ET0` (write intent) compiles to the same
/// `prefetcht0` for the baseline x86-64 that wheels target.
#[inline(always)]
fn prefetch_next_slot(slot: &[AtomicU64]) {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let next = slot.as_ptr_range().end;
        let last = next.wrapping_add(slot.len() - 1);
        // SAFETY: `prefetcht0` is a hint: it reads and writes no memory the
        // program can observe and never faults, whatever the address (an
        // unmapped one is ignored), so no invariant depends on it; SSE, which
        // it needs, is part of every x86-64 CPU.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(next.cast());
            _mm_prefetch::<_MM_HINT_T0>(last.cast());
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    let _ = slot;
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ring(cap: usize, width: usize) -> SpscRing<Box<[AtomicU64]>> {
        SpscRing::new(
            heap_words(SpscRing::<Box<[AtomicU64]>>::words_needed(cap, width)),
            cap,
            width,
        )
    }

    #[test]
    fn reserve_fill_publish_and_abandon() {
        let r = ring(2, 2);
        let mut c = r.cursor();
        let w = r.reserve(&mut c).expect("an empty ring has room");
        w[0].store(7, Ordering::Relaxed);
        // Abandoned: nothing published, the same slot comes back.
        assert_eq!(r.published(), 0);
        let w = r.reserve(&mut c).expect("still room");
        w[0].store(1, Ordering::Relaxed);
        w[1].store(2, Ordering::Relaxed);
        assert_eq!(r.publish(&mut c), 0);
        assert_eq!(r.push(&mut c, &[3, 4]), Ok(1));
        assert!(r.reserve(&mut c).is_none(), "two rows fill a ring of 2");
        let mut out = [0u64; 2];
        assert!(r.read(0, &mut out));
        assert_eq!(out, [1, 2]);
        r.release(1);
        assert!(r.reserve(&mut c).is_some(), "a released slot is free again");
    }

    #[test]
    fn first_lap_words_are_the_slots_of_those_positions() {
        let r = ring(4, 2);
        let mut c = r.cursor();
        for pos in 0..4u64 {
            r.push(&mut c, &[10 * pos + 1, 10 * pos + 2]).unwrap();
        }
        let words = |range: std::ops::Range<usize>| -> Vec<u64> {
            r.memory()[range]
                .iter()
                .map(|w| w.load(Ordering::Relaxed))
                .collect()
        };
        // Each slot: its stamp (position + 1), then the row.
        assert_eq!(words(r.first_lap_words(1, 3)), [2, 11, 12, 3, 21, 22]);
        assert_eq!(words(r.first_lap_words(3, 4)), [4, 31, 32]);
        // Clipped to the lap: nothing past the last slot, nothing backwards.
        assert_eq!(r.first_lap_words(3, 9), r.first_lap_words(3, 4));
        assert!(r.first_lap_words(5, 9).is_empty());
        assert!(r.first_lap_words(2, 1).is_empty());
        assert_eq!(r.first_lap_words(4, 4).end, r.memory().len());
    }

    #[test]
    fn a_cursor_kept_in_a_cell_continues_where_it_stopped() {
        let r = ring(2, 1);
        let cell = CursorCell::new(r.cursor());
        for i in 0..2u64 {
            let mut c = cell.load();
            r.push(&mut c, &[i]).unwrap();
            cell.store(c);
        }
        // Full, and the cell remembers that bound.
        let mut c = cell.load();
        assert_eq!(r.push(&mut c, &[9]), Err(Full));
        cell.store(c);
        r.release(1);
        let mut c = cell.load();
        assert_eq!(c.position(), 2);
        assert_eq!(r.push(&mut c, &[2]), Ok(2));
        cell.store(c);
        assert_eq!(cell.load(), c);
        let mut out = [0u64];
        assert!(r.read(1, &mut out) && out == [1]);
        assert!(r.read(2, &mut out) && out == [2]);
    }

    #[test]
    fn slots_reserved_and_published_in_the_cell_match_pushes() {
        let r = ring(2, 2);
        let cell = CursorCell::new(r.cursor());
        for i in 0..2u64 {
            let slot = r.reserve_slot_in(&cell).expect("room");
            slot.words()[0].store(10 * i, Ordering::Relaxed);
            slot.words()[1].store(10 * i + 1, Ordering::Relaxed);
            assert_eq!(r.publish_slot_in(&cell, slot), i);
        }
        assert_eq!(r.published(), 2);
        // Full: no slot, and the cell keeps its position.
        assert!(r.reserve_slot_in(&cell).is_none());
        assert_eq!(cell.load().position(), 2);
        // A slot filled but not published records nothing; the next
        // reservation after a release is the same position.
        r.release(1);
        let slot = r
            .reserve_slot_in(&cell)
            .expect("a released slot is free again");
        slot.words()[0].store(99, Ordering::Relaxed);
        assert_eq!(r.published(), 2);
        let slot = r.reserve_slot_in(&cell).expect("still reserved");
        slot.words()[1].store(21, Ordering::Relaxed);
        assert_eq!(r.publish_slot_in(&cell, slot), 2);
        // The copying cursor API continues from the cell.
        let mut c = cell.load();
        assert_eq!(c.position(), 3);
        assert_eq!(r.push(&mut c, &[7, 8]), Err(Full));
        let mut out = [0u64; 2];
        assert!(r.read(1, &mut out) && out == [10, 11]);
        assert!(r.read(2, &mut out) && out == [99, 21]);
    }

    #[test]
    fn columns_read_across_the_wrap_match_rows() {
        let r = ring(4, 3);
        let mut c = r.cursor();
        // Positions 0..6 of a ring of 4: the last rows wrap to slots 0 and 1.
        for i in 0..6u64 {
            if i >= 4 {
                r.release(i - 3);
            }
            r.push(&mut c, &[i, i * 10, i * 100]).unwrap();
        }
        for (from, to) in [(2u64, 6u64), (3, 5), (4, 6), (5, 5)] {
            for k in 0..3 {
                let col: Vec<u64> = r.column(from, to, k).collect();
                let want: Vec<u64> = (from..to).map(|i| i * [1, 10, 100][k]).collect();
                assert_eq!(col, want, "word {k} of rows {from}..{to}");
                assert_eq!(
                    r.column(from, to, k).size_hint(),
                    ((to - from) as usize, Some((to - from) as usize))
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "word 3 of a row of 3 words")]
    fn a_column_past_the_width_panics() {
        let r = ring(4, 3);
        let _ = r.column(0, 0, 3);
    }

    #[test]
    fn push_read_release_and_full() {
        let r = ring(4, 2);
        let mut c = r.cursor();
        for i in 0..4u64 {
            assert_eq!(r.push(&mut c, &[i, i * 10]), Ok(i));
        }
        assert_eq!(r.push(&mut c, &[9, 9]), Err(Full));
        assert_eq!(r.published(), 4);
        let mut out = [0u64; 2];
        assert!(r.read(1, &mut out));
        assert_eq!(out, [1, 10]);
        // Read but not released: still full.
        assert_eq!(r.push(&mut c, &[9, 9]), Err(Full));
        r.release(2);
        assert_eq!(r.push(&mut c, &[4, 40]), Ok(4));
        assert_eq!(r.push(&mut c, &[5, 50]), Ok(5));
        assert_eq!(r.push(&mut c, &[6, 60]), Err(Full));
        assert!(r.read(5, &mut out));
        assert_eq!(out, [5, 50]);
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn block_push_takes_what_fits_with_one_publish() {
        let r = ring(4, 1);
        let mut c = r.cursor();
        assert_eq!(r.push_rows(&mut c, &[1, 2, 3]), 3);
        assert_eq!(r.push_rows(&mut c, &[4, 5, 6]), 1);
        assert_eq!(r.published(), 4);
        r.release(4);
        assert_eq!(r.push_rows(&mut c, &[5, 6]), 2);
        let mut seen = Vec::new();
        r.salvage(0, |pos, row| seen.push((pos, row[0])));
        assert_eq!(seen, vec![(4, 5), (5, 6)]);
    }

    #[test]
    fn a_reopened_ring_continues_and_salvage_skips_what_is_safe() {
        let words = heap_words(SpscRing::<Box<[AtomicU64]>>::words_needed(8, 1));
        let r = SpscRing::new(words, 8, 1);
        let mut c = r.cursor();
        for i in 0..6u64 {
            r.push(&mut c, &[100 + i]).unwrap();
        }
        r.release(2);
        // A new cursor (a new producer thread on the same slot) continues.
        let mut c2 = r.cursor();
        assert_eq!(c2.position(), 6);
        r.push(&mut c2, &[106]).unwrap();
        let mut seen = Vec::new();
        // Rows 2..4 are safe elsewhere (say, in a published file).
        assert_eq!(r.salvage(4, |p, row| seen.push((p, row[0]))), (3, 0));
        assert_eq!(seen, vec![(4, 104), (5, 105), (6, 106)]);
    }

    #[test]
    fn salvage_stops_at_a_stamp_that_does_not_match() {
        let r = ring(4, 1);
        let mut c = r.cursor();
        for i in 0..3u64 {
            r.push(&mut c, &[i]).unwrap();
        }
        // Corrupt slot 1's stamp, as a damaged file would.
        r.words[HEADER_WORDS + 2].store(77, Ordering::Relaxed);
        let mut seen = Vec::new();
        assert_eq!(r.salvage(0, |p, _| seen.push(p)), (1, 2));
        assert_eq!(seen, vec![0]);
    }

    #[test]
    fn producer_and_consumer_threads_lose_and_duplicate_nothing() {
        const N: u64 = 50_000;
        let r = Arc::new(ring(64, 3));
        let producer = {
            let r = Arc::clone(&r);
            std::thread::spawn(move || {
                let mut c = r.cursor();
                for i in 0..N {
                    while r.push(&mut c, &[i, i * 3, i ^ 0x55]).is_err() {
                        std::thread::yield_now();
                    }
                }
            })
        };
        let mut next = 0u64;
        let mut row = [0u64; 3];
        while next < N {
            let end = r.published();
            while next < end {
                assert!(r.read(next, &mut row));
                assert_eq!(row, [next, next * 3, next ^ 0x55], "torn or reordered row");
                next += 1;
            }
            r.release(next);
        }
        producer.join().unwrap();
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn capacity_must_be_a_power_of_two() {
        ring(6, 1);
    }
}
