//! A cheap identity of the calling thread, for the producer's fast path
//! ([`crate::producer`]): a thread that owns a lane recognises it by this key
//! instead of searching its thread-local registrations.
#![allow(unsafe_code)]

/// The calling thread's identity, shifted left by one so that the low bit is
/// free for the lane's "in an offer" mark: nonzero, distinct between live
/// threads of the process (the address of the thread's control block, far
/// below 2^63), and reused only once a thread has terminated, which is after
/// its thread-local destructors ran (POSIX: an ID may be reused after the
/// thread was joined or, detached, terminated). A lane's owner clears its key
/// in such a destructor, so no other thread can ever read its own key in a
/// lane it does not own.
///
/// On x86-64 Linux the thread pointer register is read in line: the TLS ABI
/// keeps the control block's own address at `%fs:0`, which is what
/// `pthread_self()` returns (glibc and musl alike). A call to `pthread_self`
/// instead cost the row path the call and, worse, the registers the call
/// clobbers. Only there: macOS keeps its thread data behind `%gs` (`%fs:0`
/// would fault), and other systems lay `%fs` out their own way.
#[cfg(all(
    target_os = "linux",
    target_arch = "x86_64",
    target_pointer_width = "64"
))]
#[inline(always)]
pub(crate) fn thread_key() -> usize {
    let control_block: usize;
    // SAFETY: one load through the thread's own %fs segment, which the ABI
    // sets up for every thread before it runs any code; it writes nothing,
    // touches no memory of ours and no flags. `pure`: it reads the same word
    // every time on one thread.
    unsafe {
        std::arch::asm!(
            "mov {}, qword ptr fs:[0]",
            out(reg) control_block,
            options(pure, readonly, nostack, preserves_flags)
        );
    }
    control_block << 1
}

/// Elsewhere: `pthread_self()`, the same identity through a call.
#[cfg(all(
    unix,
    not(all(
        target_os = "linux",
        target_arch = "x86_64",
        target_pointer_width = "64"
    ))
))]
#[inline(always)]
pub(crate) fn thread_key() -> usize {
    // SAFETY: `pthread_self` has no preconditions, cannot fail, and touches no
    // memory of ours.
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

    #[test]
    fn the_key_is_pthread_self() {
        // The identity POSIX gives the thread: the reuse argument above is
        // about it, so the register read must be the same value.
        for _ in 0..2 {
            let t = std::thread::spawn(|| {
                // SAFETY: no preconditions.
                let id = unsafe { libc::pthread_self() } as usize;
                assert_eq!(thread_key(), id << 1);
            });
            t.join().unwrap();
        }
        // SAFETY: no preconditions.
        assert_eq!(
            thread_key(),
            (unsafe { libc::pthread_self() } as usize) << 1
        );
    }
}
