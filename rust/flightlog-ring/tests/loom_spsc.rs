//! Loom model of the per-thread rings: one producer and the consumer on one
//! ring (full ring, slot reuse across laps), lanes claimed, retired and reused
//! against a drain, and the gate that closes every lane.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p flightlog-ring --test loom_spsc --release`
#![cfg(loom)]

use flightlog_ring::spsc::heap_words;
use flightlog_ring::{BusyFlag, CursorCell, Gate, LaneState, Lanes, SpscRing};
use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

type Ring = SpscRing<Box<[AtomicU64]>>;

fn ring(cap: usize, width: usize) -> Ring {
    SpscRing::new(heap_words(Ring::words_needed(cap, width)), cap, width)
}

/// The producer must wait for the consumer to release (ring of 2, 3 rows):
/// every row arrives once, whole and in order, across two laps.
#[test]
fn producer_and_consumer_on_one_ring() {
    loom::model(|| {
        let r = Arc::new(ring(2, 2));
        let producer = {
            let r = Arc::clone(&r);
            thread::spawn(move || {
                let mut c = r.cursor();
                for i in 0..3u64 {
                    while r.push(&mut c, &[i, i + 100]).is_err() {
                        thread::yield_now();
                    }
                }
            })
        };
        let mut next = 0u64;
        let mut row = [0u64; 2];
        while next < 3 {
            let end = r.published();
            while next < end {
                assert!(r.read(next, &mut row), "stamp of row {next}");
                assert_eq!(row, [next, next + 100], "torn or reordered row");
                next += 1;
            }
            r.release(next);
            thread::yield_now();
        }
        producer.join().unwrap();
        assert_eq!(r.published(), 3);
    });
}

/// Rows filled in place (reserve, fill, publish), one of them abandoned
/// half-filled: the consumer sees exactly the published rows, whole and in
/// order, never the abandoned words, across a lap of a ring of 2.
#[test]
fn rows_filled_in_place_and_one_abandoned() {
    filled_in_place_and_one_abandoned(false);
}

/// The same, with the slots reserved and published on a cursor kept in its
/// cell ([`SpscRing::reserve_slot_in`], the recorder's row path).
#[test]
fn rows_filled_in_place_in_the_cell_and_one_abandoned() {
    filled_in_place_and_one_abandoned(true);
}

fn filled_in_place_and_one_abandoned(in_cell: bool) {
    loom::model(move || {
        let r = Arc::new(ring(2, 2));
        let producer = {
            let r = Arc::clone(&r);
            thread::spawn(move || {
                let mut c = r.cursor();
                let cell = CursorCell::new(r.cursor());
                for i in 0..3u64 {
                    let (words, slot) = loop {
                        if in_cell {
                            if let Some(slot) = r.reserve_slot_in(&cell) {
                                break (slot.words(), Some(slot));
                            }
                        } else if let Some(w) = r.reserve(&mut c) {
                            break (w, None);
                        }
                        thread::yield_now();
                    };
                    if i == 1 {
                        // A row the caller gave up on (a bad value): half
                        // written, never published; the slot is reused.
                        words[0].store(999, loom::sync::atomic::Ordering::Relaxed);
                        continue;
                    }
                    words[0].store(i, loom::sync::atomic::Ordering::Relaxed);
                    words[1].store(i + 100, loom::sync::atomic::Ordering::Relaxed);
                    match slot {
                        Some(slot) => r.publish_slot_in(&cell, slot),
                        None => r.publish(&mut c),
                    };
                }
            })
        };
        let mut next = 0u64;
        let mut row = [0u64; 2];
        let mut seen = Vec::new();
        while next < 2 {
            let end = r.published();
            while next < end {
                assert!(r.read(next, &mut row), "stamp of row {next}");
                seen.push(row);
                next += 1;
            }
            r.release(next);
            thread::yield_now();
        }
        producer.join().unwrap();
        assert_eq!(r.published(), 2);
        assert_eq!(seen, vec![[0, 100], [2, 102]]);
    });
}

/// One lane, two producer threads: the second claims it only if the consumer
/// drained and freed it after the first retired; it then continues the
/// ring's positions. No row is lost or seen twice, whatever the interleaving.
#[test]
fn lanes_retired_and_reused_against_a_drain() {
    loom::model(|| {
        let lanes = Arc::new(Lanes::new(1));
        let r = Arc::new(ring(2, 1));
        let producers: Vec<_> = [10u64, 20]
            .into_iter()
            .map(|tag| {
                let (lanes, r) = (Arc::clone(&lanes), Arc::clone(&r));
                thread::spawn(move || {
                    let Some(lane) = lanes.claim() else {
                        return 0;
                    };
                    let mut c = r.cursor();
                    r.push(&mut c, &[tag]).unwrap();
                    lanes.retire(lane);
                    1
                })
            })
            .collect();
        let mut seen = Vec::new();
        let mut released = 0u64;
        let mut drain = |seen: &mut Vec<u64>| {
            let state = lanes.state(0);
            if state == LaneState::Free {
                return;
            }
            let end = r.published();
            let mut row = [0u64; 1];
            for pos in released..end {
                assert!(r.read(pos, &mut row));
                seen.push(row[0]);
            }
            released = end;
            r.release(end);
            if state == LaneState::Retired {
                assert!(lanes.free_if_drained(0));
            }
        };
        drain(&mut seen);
        let pushed: usize = producers.into_iter().map(|p| p.join().unwrap()).sum();
        drain(&mut seen);
        assert_eq!(seen.len(), pushed, "rows lost or duplicated: {seen:?}");
        let mut unique = seen.clone();
        unique.dedup();
        assert_eq!(unique, seen);
        assert!(pushed >= 1, "the first claim always finds the lane free");
    });
}

/// A producer racing `close`: if its push went through the gate, the closer
/// sees the row after `close` returns; if not, nothing was published.
#[test]
fn gate_close_sees_every_row_that_got_in() {
    loom::model(|| {
        let gate = Arc::new(Gate::new(None));
        let flag = Arc::new(BusyFlag::new());
        let r = Arc::new(ring(2, 1));
        let producer = {
            let (flag, gate, r) = (Arc::clone(&flag), Arc::clone(&gate), Arc::clone(&r));
            thread::spawn(move || {
                let mut c = r.cursor();
                let mut accepted = 0u64;
                for i in 0..2u64 {
                    match gate.enter(&flag) {
                        Ok(_busy) => {
                            r.push(&mut c, &[i]).unwrap();
                            accepted += 1;
                        }
                        Err(_) => break,
                    }
                }
                accepted
            })
        };
        gate.close(|| [&*flag], thread::yield_now);
        let final_published = r.published();
        let accepted = producer.join().unwrap();
        assert_eq!(final_published, accepted, "a row got in after close");
    });
}

/// A producer that makes its flag findable while the closer is closing (a
/// recorder maps a thread's lane, flag included, on its first row): the closer
/// lists the flags after its fence, so either it finds the flag (and waits for
/// the row) or the producer finds the gate closed (and publishes nothing).
#[test]
fn gate_close_finds_a_flag_made_findable_meanwhile() {
    loom::model(|| {
        let gate = Arc::new(Gate::new(None));
        let flag = Arc::new(BusyFlag::new());
        let findable = Arc::new(AtomicBool::new(false));
        let r = Arc::new(ring(2, 1));
        let producer = {
            let (flag, findable) = (Arc::clone(&flag), Arc::clone(&findable));
            let (gate, r) = (Arc::clone(&gate), Arc::clone(&r));
            thread::spawn(move || {
                findable.store(true, Ordering::Release);
                let mut c = r.cursor();
                match gate.enter(&flag) {
                    Ok(_busy) => {
                        r.push(&mut c, &[7]).unwrap();
                        1u64
                    }
                    Err(_) => 0,
                }
            })
        };
        gate.close(
            || findable.load(Ordering::Acquire).then_some(&*flag),
            thread::yield_now,
        );
        let final_published = r.published();
        let accepted = producer.join().unwrap();
        assert_eq!(final_published, accepted, "a row got in after close");
    });
}
