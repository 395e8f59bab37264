//! A process-wide memory barrier (Linux `membarrier(2)`), the heavy side of
//! the close gate's asymmetric fence ([`flightlog_ring::Gate`]).
#![allow(unsafe_code)]

/// Forces a full memory barrier on every running thread of this process;
/// false when the kernel does not offer it (producers then fence themselves).
pub fn process_wide_fence() -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::sync::OnceLock;
        const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
        const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;
        static REGISTERED: OnceLock<bool> = OnceLock::new();
        // SAFETY: membarrier takes two integers (command, flags) and a cpu id,
        // touches no memory of ours, and fails with an error code (ENOSYS,
        // EINVAL, EPERM under seccomp) where it is not available.
        let registered = *REGISTERED.get_or_init(|| unsafe {
            libc::syscall(libc::SYS_membarrier, CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0
        });
        // SAFETY: as above.
        registered
            && unsafe { libc::syscall(libc::SYS_membarrier, CMD_PRIVATE_EXPEDITED, 0, 0) } == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn membarrier_is_available_here() {
        // Not a requirement (producers fall back to their own fence), but this
        // machine's kernel has it: say so if that ever changes.
        assert!(super::process_wide_fence());
    }
}
