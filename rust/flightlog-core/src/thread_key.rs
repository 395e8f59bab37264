//! A cheap identity of the calling thread, for the producer's fast path
//! ([`crate::producer`]): a thread that owns a lane recognises it by this key
//! instead of searching its thread-local registrations.
#![allow(unsafe_code)]

/// The calling thread's `pthread_self()`, shifted left by one so that the low
/// bit is free for the lane's "in an offer" mark: nonzero, distinct between
/// live threads of the process (a `pthread_t` is the address of the thread's
/// control block, far below 2^63), and reused only once a thread has
/// terminated, which is after its thread-local destructors ran (POSIX: an ID
/// may be reused after the thread was joined or, detached, terminated). A
/// lane's owner clears its key in such a destructor, so no other thread can
/// ever read its own key in a lane it does not own.
#[cfg(unix)]
#[inline(always)]
pub(crate) fn thread_key() -> usize {
    // SAFETY: `pthread_self` has no preconditions, cannot fail, and touches no
    // memory of ours (glibc reads the thread pointer register).
    (unsafe { libc::pthread_self() } as usize) << 1
}

#[cfg(all(test, unix))]
mod tests {
    use super::thread_key;

    #[test]
    fn keys_are_nonzero_and_differ_between_live_threads() {
        let here = thread_key();
        assert_ne!(here, 0);
        assert_eq!(here & 1, 0, "the low bit is the lane's in-offer mark");
        let (tx, rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(thread_key()).unwrap();
            release_rx.recv().unwrap();
        });
        let there = rx.recv().unwrap();
        assert_ne!(there, 0);
        assert_ne!(here, there);
        assert_eq!(here, thread_key(), "stable within a thread");
        release_tx.send(()).unwrap();
        t.join().unwrap();
    }
}
