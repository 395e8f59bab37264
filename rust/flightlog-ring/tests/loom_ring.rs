//! Loom model of the ring: every interleaving (up to the preemption bound) of
//! several producers and the consumer loses no row, duplicates none, never
//! tears a row and never overwrites an unread one.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p flightlog-ring --test loom_ring --release`
#![cfg(loom)]

use flightlog_ring::RowRing;
use loom::sync::Arc;
use loom::thread;

/// Two producers racing for the slots of a ring smaller than what they push,
/// so both the full path and slot reuse across laps are explored.
#[test]
fn two_producers_one_consumer_lose_nothing() {
    loom::model(|| {
        let ring = Arc::new(RowRing::new(2, 2));
        let producers: Vec<_> = (1..=2u64)
            .map(|p| {
                let ring = Arc::clone(&ring);
                thread::spawn(move || {
                    let mut pushed = 0;
                    for i in 0..2u64 {
                        // Drop mode: a full ring is reported, never overwritten.
                        if ring.try_push(&[p, p * 100 + i]).is_ok() {
                            pushed += 1;
                        }
                    }
                    pushed
                })
            })
            .collect();

        let mut seen = Vec::new();
        ring.pop_with(usize::MAX, |r| seen.push((r[0], r[1])));
        let pushed: u64 = producers.into_iter().map(|h| h.join().unwrap()).sum();
        ring.pop_with(usize::MAX, |r| seen.push((r[0], r[1])));

        assert_eq!(seen.len() as u64, pushed, "rows lost or duplicated");
        for &(p, v) in &seen {
            assert_eq!(v / 100, p, "torn row {p} {v}");
        }
        // Per-producer order is preserved.
        for p in 1..=2u64 {
            let mine: Vec<_> = seen.iter().filter(|r| r.0 == p).map(|r| r.1).collect();
            let mut sorted = mine.clone();
            sorted.sort_unstable();
            assert_eq!(mine, sorted);
        }
    });
}

/// A producer that must wait for the consumer (block mode) gets every row
/// through the smallest ring, across two laps, in order.
#[test]
fn blocking_producer_and_consumer_handoff() {
    loom::model(|| {
        let ring = Arc::new(RowRing::new(2, 1));
        let producer = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                for i in 0..3u64 {
                    while ring.try_push(&[i]).is_err() {
                        thread::yield_now();
                    }
                }
            })
        };
        let mut seen = Vec::new();
        while seen.len() < 3 {
            if ring.pop_with(usize::MAX, |r| seen.push(r[0])) == 0 {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert_eq!(seen, vec![0, 1, 2]);
    });
}

/// Three producers contending for two slots while the consumer drains: the
/// CAS races on `tail` and the full/free stamps of both laps are all explored.
#[test]
fn three_producers_contend_for_two_slots() {
    loom::model(|| {
        let ring = Arc::new(RowRing::new(2, 1));
        let producers: Vec<_> = (1..=3u64)
            .map(|p| {
                let ring = Arc::clone(&ring);
                thread::spawn(move || ring.try_push(&[p]).is_ok() as u64)
            })
            .collect();
        let mut seen = Vec::new();
        ring.pop_with(usize::MAX, |r| seen.push(r[0]));
        let pushed: u64 = producers.into_iter().map(|h| h.join().unwrap()).sum();
        ring.pop_with(usize::MAX, |r| seen.push(r[0]));
        assert_eq!(seen.len() as u64, pushed);
        assert!(pushed >= 2, "two slots were free at the start");
        let mut uniq = seen.clone();
        uniq.sort_unstable();
        uniq.dedup();
        assert_eq!(uniq.len(), seen.len(), "a row was delivered twice");
    });
}

/// `close` racing two producers (one of them waiting on a full ring): every
/// push that succeeded is below the position `close` returns, so a consumer
/// that drains up to it sees each accepted row exactly once; every push after
/// the close fails with `Closed`, a waiting producer included (no hang).
#[test]
fn close_racing_producers_loses_no_accepted_row() {
    use flightlog_ring::PushError;
    loom::model(|| {
        let ring = Arc::new(RowRing::new(2, 1));
        // One slot left: the producers contend, and one may find it full.
        ring.try_push(&[0]).unwrap();
        let producers: Vec<_> = (1..=2u64)
            .map(|p| {
                let ring = Arc::clone(&ring);
                thread::spawn(move || {
                    loop {
                        match ring.try_push(&[p]) {
                            Ok(_) => return Some(p),
                            // Block mode: wait for the consumer or the close.
                            Err(PushError::Full) => thread::yield_now(),
                            Err(PushError::Closed) => return None,
                        }
                    }
                })
            })
            .collect();

        let mut seen = Vec::new();
        ring.pop_with(usize::MAX, |r| seen.push(r[0]));
        let last = ring.close();
        // The final drain: wait out producers that claimed a slot before the
        // close and are still writing it.
        while ring.consumed() < last {
            if ring.pop_with(usize::MAX, |r| seen.push(r[0])) == 0 {
                thread::yield_now();
            }
        }
        let mut accepted: Vec<u64> = vec![0];
        for h in producers {
            accepted.extend(h.join().unwrap());
        }
        assert_eq!(ring.try_push(&[99]), Err(PushError::Closed));
        assert_eq!(
            ring.pop_with(usize::MAX, |_| {}),
            0,
            "a row after the close"
        );
        assert_eq!(last as usize, accepted.len());
        seen.sort_unstable();
        accepted.sort_unstable();
        assert_eq!(seen, accepted, "an accepted row was lost or duplicated");
    });
}
