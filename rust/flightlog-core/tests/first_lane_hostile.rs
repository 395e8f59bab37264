//! Hostile (but legal) use of the first-lane fast path (lane 0's owner found by
//! `pthread_self`, the cursor in the lane, the in-offer bit of the owner word):
//! callbacks of an offer that record into other recorders, close the recorder
//! or panic; hundreds of joined threads (whose ids the next ones reuse) taking
//! turns on lane 0 of two recorders at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use flightlog_core::row_layout::{f64_word, i64_word};
use flightlog_core::{
    parquet_io, CoreError, DType, Field, InPlace, Offer, OutputLayout, Recorder, RecorderConfig,
    Schema,
};

const K: i64 = 1_000_000;

fn schema() -> Schema {
    Schema::new(
        vec![Field::new("iter", DType::I64), Field::new("x", DType::F64)],
        1,
    )
    .unwrap()
}

fn recorder(dir: &std::path::Path, capacity: usize, flush: f64) -> Arc<Recorder> {
    let mut cfg = RecorderConfig::new(OutputLayout::run_folder(dir));
    cfg.ring_capacity = capacity;
    cfg.flush_interval_secs = flush;
    Arc::new(Recorder::new(schema(), cfg).unwrap())
}

fn row(rec: &Recorder, i: i64) -> Vec<u64> {
    let mut row = rec.row_layout().new_row();
    row[0] = i64_word(i);
    row[1] = f64_word(0.5);
    row
}

fn fill(words: &[std::sync::atomic::AtomicU64], row: &[u64]) {
    for (w, v) in words.iter().zip(row) {
        w.store(*v, Ordering::Relaxed);
    }
}

fn iters_in(dir: &std::path::Path) -> Vec<i64> {
    let (_, batches) = parquet_io::read_file(&dir.join("telemetry.parquet")).unwrap();
    batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<arrow_array::Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

/// Every thread `t` has rows `0..n` exactly once, in file order.
fn check_rows(iters: &[i64], expected: &std::collections::BTreeMap<i64, i64>) {
    let mut next = std::collections::BTreeMap::new();
    for &it in iters {
        let (t, i) = (it / K, it % K);
        let want = next.entry(t).or_insert(0);
        assert_eq!(i, *want, "thread {t}: row {i} where {want} was due");
        *want += 1;
    }
    let expected: std::collections::BTreeMap<_, _> = expected
        .iter()
        .filter(|(_, &n)| n > 0)
        .map(|(&t, &n)| (t, n))
        .collect();
    assert_eq!(next, expected);
}

/// Inside the fill of an offer into A (on the thread that owns A's lane 0, and
/// on one that does not), a row pushed into B (registering the thread with B)
/// is recorded, and so is the outer row.
#[test]
fn a_fill_that_records_into_another_recorder_records_both_rows() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = recorder(da.path(), 8, 0.002);
    let b = recorder(db.path(), 8, 0.002);
    let work = |a: &Arc<Recorder>, b: &Arc<Recorder>, t: i64| {
        let mut nested = 0;
        for i in 0..200 {
            let mut b_done = false;
            let outer = a
                .offer_in_place(|words| {
                    b.push(&row(b, t * K + i)).unwrap();
                    b_done = true;
                    fill(words, &row(a, t * K + i));
                    true
                })
                .unwrap();
            if outer == InPlace::Declined {
                // A full ring declines before the fill runs.
                assert!(!b_done);
                a.push(&row(a, t * K + i)).unwrap();
                b.push(&row(b, t * K + i)).unwrap();
            } else {
                nested += 1;
            }
        }
        assert!(nested > 0);
    };
    work(&a, &b, 0);
    let (a2, b2) = (Arc::clone(&a), Arc::clone(&b));
    std::thread::spawn(move || work(&a2, &b2, 1))
        .join()
        .unwrap();
    a.close().unwrap();
    b.close().unwrap();
    let expected = [(0, 200), (1, 200)].into_iter().collect();
    check_rows(&iters_in(da.path()), &expected);
    check_rows(&iters_in(db.path()), &expected);
    assert_eq!(a.stats().rows_offered, 400);
    assert_eq!(b.stats().rows_offered, 400);
}

/// `on_block` (the ring is full) pushing into the same recorder before it
/// waits: refused with Misuse, through lane 0 and through another lane; the
/// outer row is then recorded by `wait`, and the lane records on afterwards.
#[test]
fn a_row_pushed_from_on_block_into_the_same_recorder_is_refused_and_the_lane_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recorder(dir.path(), 8, 3600.0);
    // Rows until `on_block` ran (and was refused) 3 times: the flusher cannot
    // keep an 8-row ring from filling over that many rows.
    let work = |rec: &Arc<Recorder>, t: i64| -> i64 {
        let mut refused = 0;
        let mut i = 0;
        while refused < 3 {
            assert!(i < 1_000_000, "the ring never filled");
            let offer = rec
                .push_with(&row(rec, t * K + i), |blocked| {
                    match rec.push(&row(rec, t * K + 500_000 + i)) {
                        Err(CoreError::Misuse(m)) => {
                            assert!(m.contains("already inside an offer"), "{m}");
                            refused += 1;
                        }
                        other => panic!("nested push: {other:?}"),
                    }
                    blocked.wait()
                })
                .unwrap();
            assert_eq!(offer, Offer::Accepted);
            i += 1;
        }
        // The lane records on, without waiting or refusing.
        for _ in 0..20 {
            rec.push(&row(rec, t * K + i)).unwrap();
            i += 1;
        }
        i
    };
    let n0 = work(&rec, 0);
    let r2 = Arc::clone(&rec);
    let n1 = std::thread::spawn(move || work(&r2, 1)).join().unwrap();
    rec.close().unwrap();
    check_rows(
        &iters_in(dir.path()),
        &[(0, n0), (1, n1)].into_iter().collect(),
    );
    assert_eq!(rec.stats().rows_offered, (n0 + n1) as u64);
    assert_eq!(rec.stats().rows_written, (n0 + n1) as u64);
}

/// A fill that panics (a bug of the caller's) leaves the lane "in an offer":
/// that thread's later rows are refused, nothing it published is lost, and once
/// the thread has ended its lane goes to the next threads, who lose nothing.
#[test]
fn a_fill_that_panics_blocks_only_its_thread_and_the_lane_serves_the_next_ones() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recorder(dir.path(), 8, 0.002);
    let r = Arc::clone(&rec);
    std::thread::spawn(move || {
        for i in 0..20 {
            r.push(&row(&r, K + i)).unwrap();
        }
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            r.offer_in_place(|_| panic!("the caller's bug"))
        }));
        assert!(caught.is_err());
        match r.push(&row(&r, K + 20)) {
            Err(CoreError::Misuse(m)) => assert!(m.contains("already inside an offer"), "{m}"),
            other => panic!("after the panic: {other:?}"),
        }
    })
    .join()
    .unwrap();
    let mut expected: std::collections::BTreeMap<i64, i64> = [(1, 20)].into_iter().collect();
    for t in 2..40 {
        let r = Arc::clone(&rec);
        std::thread::spawn(move || {
            for i in 0..100 {
                r.push(&row(&r, t * K + i)).unwrap();
            }
        })
        .join()
        .unwrap();
        expected.insert(t, 100);
    }
    rec.close().unwrap();
    check_rows(&iters_in(dir.path()), &expected);
    let n: i64 = expected.values().sum();
    assert_eq!(rec.stats().rows_offered, n as u64);
    assert_eq!(rec.stats().rows_written, n as u64);
}

/// While the thread that owns A's lane 0 is inside an offer's fill, another
/// thread closes A, and the fill then records into a new recorder B: the
/// thread's registration with the closed A is dropped (its owner word cleared,
/// its lane retired) under the offer, which then ends. The offer fails with
/// Closed and is not counted; A's file holds exactly the earlier rows; the
/// thread goes on recording into B and into a third recorder C.
#[test]
fn a_close_and_a_registration_elsewhere_under_an_offer_leave_every_recorder_exact() {
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = recorder(da.path(), 8, 0.002);
    let b = recorder(db.path(), 8, 0.002);
    for i in 0..50 {
        a.push(&row(&a, i)).unwrap();
    }
    let outer = a.offer_in_place(|words| {
        let closer = Arc::clone(&a);
        std::thread::spawn(move || closer.close().unwrap())
            .join()
            .unwrap();
        b.push(&row(&b, 0)).unwrap();
        fill(words, &row(&a, 50));
        true
    });
    assert!(matches!(outer, Err(CoreError::Closed)), "{outer:?}");
    assert!(matches!(a.push(&row(&a, 51)), Err(CoreError::Closed)));
    for i in 1..100 {
        b.push(&row(&b, i)).unwrap();
    }
    let c = recorder(dc.path(), 8, 0.002);
    for i in 0..100 {
        c.push(&row(&c, i)).unwrap();
        b.push(&row(&b, 100 + i)).unwrap();
    }
    b.close().unwrap();
    c.close().unwrap();
    assert_eq!(iters_in(da.path()), (0..50).collect::<Vec<_>>());
    assert_eq!(a.stats().rows_offered, 50);
    assert_eq!(a.stats().rows_written, 50);
    assert_eq!(iters_in(db.path()), (0..200).collect::<Vec<_>>());
    assert_eq!(iters_in(dc.path()), (0..100).collect::<Vec<_>>());
}

/// 300 joined threads one after another (the next one usually gets the id of
/// the one just joined), each recording into two recorders alternately, with
/// a long-lived thread beside them on each: every row once, each thread's rows
/// in order, exact counts, in both recorders.
#[test]
fn hundreds_of_joined_threads_take_turns_on_lane_0_of_two_recorders() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = recorder(da.path(), 8, 0.001);
    let b = recorder(db.path(), 8, 0.001);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = |rec: &Arc<Recorder>, t: i64| {
        let (rec, stop) = (Arc::clone(rec), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) || i < 1000 {
                rec.push(&row(&rec, t * K + i)).unwrap();
                i += 1;
            }
            (t, i)
        })
    };
    let mut expected_a = std::collections::BTreeMap::new();
    let mut expected_b = std::collections::BTreeMap::new();
    let mut keys = std::collections::HashSet::new();
    let mut steadies = Vec::new();
    for t in 1..=300i64 {
        if t == 100 {
            steadies.push((true, steady(&a, 900)));
            steadies.push((false, steady(&b, 901)));
        }
        let (a2, b2) = (Arc::clone(&a), Arc::clone(&b));
        let key = std::thread::spawn(move || {
            for i in 0..40 {
                let rec = if (i + t) % 2 == 0 { &a2 } else { &b2 };
                rec.push(&row(rec, t * K + i / 2)).unwrap();
            }
            format!("{:?}", std::thread::current().id())
        })
        .join()
        .unwrap();
        keys.insert(key);
        expected_a.insert(t, 20);
        expected_b.insert(t, 20);
    }
    stop.store(true, Ordering::Relaxed);
    for (is_a, s) in steadies {
        let (t, n) = s.join().unwrap();
        if is_a {
            expected_a.insert(t, n);
        } else {
            expected_b.insert(t, n);
        }
    }
    a.close().unwrap();
    b.close().unwrap();
    for (dir, rec, expected) in [(&da, &a, &expected_a), (&db, &b, &expected_b)] {
        check_rows(&iters_in(dir.path()), expected);
        let n: i64 = expected.values().sum();
        assert_eq!(rec.stats().rows_offered, n as u64);
        assert_eq!(rec.stats().rows_written, n as u64);
    }
}
