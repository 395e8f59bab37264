//! One writer per recording, and who owns a recorder after `fork()`.
//!
//! **The claim.** A recorder on a local folder holds an exclusive `flock` on a
//! lock file in it (`.flightlog.lock` in a run folder, `.{prefix}flightlog.lock`
//! beside append-mode parts) from construction until `close()` or the death
//! of its process: the kernel drops the lock with the process, so a `kill -9`
//! leaves nothing that blocks `recover`. A second recorder on the same folder
//! fails at construction naming the holder (pid, host, since when): in another
//! process, or in the same one (`flock` locks belong to an open file
//! description, and every claim opens the file anew, so two claims in one
//! process conflict too). `recover` takes the same lock (try-lock) before it
//! touches a run, so it never finalises a live writer's folder, and two
//! recovers never work on the same run at once.
//!
//! The lock file is removed by its holder when it lets go (unlink while still
//! holding the lock, then unlock). A claimer therefore checks, after locking,
//! that the path still names the file it locked, and starts over if not; the
//! Python side (`flightlog._recover`) follows the same protocol.
//!
//! Lock file names start with a dot and never end in `.parquet`, so globs of
//! data files never match them. Object stores have no locks: there the
//! create-only puts of the final files (and the manager's create-only
//! `running` manifest) are the claim, and segment names carry a per-instance
//! component (see [`instance_id`]) so two writers never overwrite each other.
//!
//! **Fork.** A forked child inherits the parent's recorders as memory, but not
//! its flusher thread. [`Owner::check`] compares a process-wide fork generation
//! with the one the recorder was made in: one relaxed load on the hot path.
//! The generation is bumped in the child of every `fork()` by a
//! `pthread_atfork` handler (registered with the first [`Owner`]), so a fork
//! Python's hooks never see (a C extension's, or libc's through `ctypes`) is
//! caught too; and by [`after_fork_in_child`], which the Python package
//! registers with `os.register_at_fork` and which also closes the child's
//! copies of the claim files (without unlocking, which would release the
//! parent's lock too).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
#[cfg(unix)]
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{CoreError, Result};
use crate::output_layout::OutputLayout;

/// Name of the lock file of a run folder.
pub const RUN_LOCK_NAME: &str = ".flightlog.lock";

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Every claim this process made, so that a forked child can close its copies.
static CLAIMS: Mutex<Vec<Weak<ClaimInner>>> = Mutex::new(Vec::new());

/// Call in a forked child, before it runs anything else: recorders made
/// before the fork then refuse to write, and their claims' files are closed
/// in the child (the parent keeps its locks).
pub fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    // `try_lock`: a thread of the parent may have held the registry at the
    // fork; it does not exist here, so waiting would hang. The copies are then
    // left open, which only keeps the parent's lock alive as long as the child.
    if let Ok(mut claims) = CLAIMS.try_lock() {
        for weak in claims.drain(..) {
            if let Some(inner) = weak.upgrade() {
                if let Ok(mut file) = inner.file.try_lock() {
                    // Closing (not unlocking) the child's descriptor: the lock
                    // stays with the parent's descriptor of the same file.
                    drop(file.take());
                }
            }
        }
    }
}

/// Registers, once per process, a `pthread_atfork` child handler that bumps
/// the fork generation: every `fork()`, whoever makes it, turns the parent's
/// recorders into ones the child may not write to (they map the parent's
/// spool files: the child's rows would overwrite the parent's).
#[cfg(unix)]
#[allow(unsafe_code)]
fn watch_forks() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    extern "C" fn in_child() {
        // An atomic add: what a child handler of a multithreaded process may
        // do (async-signal-safe; no lock, no allocation).
        FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    }
    REGISTERED.call_once(|| {
        // SAFETY: registers a handler with the C library; the handler is a
        // plain `extern "C" fn` that lives as long as the program and only
        // does an atomic add. It fails only for lack of memory (ENOMEM): then
        // `os.fork` is still caught by the Python hook.
        unsafe {
            libc::pthread_atfork(None, None, Some(in_child));
        }
    });
}

#[cfg(not(unix))]
fn watch_forks() {}

/// The process (and fork generation) a recorder belongs to. `repr(C)`: the
/// generation, which every row compares, first.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct Owner {
    generation: u64,
    pid: u32,
}

impl Owner {
    /// This process, now.
    pub fn current() -> Owner {
        watch_forks();
        Owner {
            generation: FORK_GENERATION.load(Ordering::Relaxed),
            pid: std::process::id(),
        }
    }

    /// True in the process that made the recorder (false in a forked child).
    #[inline]
    pub fn is_current(&self) -> bool {
        FORK_GENERATION.load(Ordering::Relaxed) == self.generation
    }

    /// Fails in a forked child: the recorder belongs to its parent.
    #[inline]
    pub fn check(&self) -> Result<()> {
        if self.is_current() {
            Ok(())
        } else {
            Err(self.not_ours())
        }
    }

    #[cold]
    fn not_ours(&self) -> CoreError {
        CoreError::Forked(format!(
            "this recorder belongs to process {} (this is a forked child, process {}); \
             open a recorder in the child, e.g. a TelemetryManager per worker",
            self.pid,
            std::process::id()
        ))
    }
}

/// A per-instance number for segment names: 8 decimal digits from the pid,
/// the time and a process-wide counter. Digits keep part names parsable as
/// `part-<run_id>-<digits>.parquet`.
pub fn instance_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // A multiplicative mix so that close pids/times/counters spread out.
    let mixed = (nanos ^ (u64::from(std::process::id()) << 40) ^ n.wrapping_mul(0x9E37_79B9))
        .wrapping_mul(0x2545_F491_4F6C_DD1D);
    (mixed >> 11) % 100_000_000
}

struct ClaimInner {
    path: PathBuf,
    pid: u32,
    file: Mutex<Option<File>>,
}

impl ClaimInner {
    fn release(&self) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let Some(f) = file.take() else { return };
        if self.pid == std::process::id() {
            // Unlink while holding the lock (see the module doc), then unlock.
            let _ = fs::remove_file(&self.path);
            let _ = f.unlock();
        }
        // In a forked child without the fork hook: only close the copy.
        drop(f);
    }
}

impl Drop for ClaimInner {
    fn drop(&mut self) {
        self.release();
    }
}

/// A held claim on a folder; released by [`Claim::release`] or on drop.
pub struct Claim {
    inner: Arc<ClaimInner>,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Claim({})", self.inner.path.display())
    }
}

/// The lock file of `layout`, or None on an object store.
pub fn lock_path(layout: &OutputLayout) -> Option<PathBuf> {
    if !layout.storage.is_local() {
        return None;
    }
    if let Some(dir) = &layout.claim_dir {
        return Some(dir.join(RUN_LOCK_NAME));
    }
    match layout
        .final_telemetry
        .as_deref()
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
    {
        Some(run_dir) => Some(run_dir.join(RUN_LOCK_NAME)),
        None => Some(
            layout
                .segment_dir
                .join(format!(".{}flightlog.lock", layout.telemetry_prefix)),
        ),
    }
}

/// What a try-lock found.
pub enum TryClaim {
    /// The claim is ours.
    Held(Claim),
    /// Another open file holds it; the text names the holder.
    Busy(String),
}

impl Claim {
    /// Claims `layout` for one writer, creating its folder if needed. None on
    /// an object store, or on a filesystem without `flock`. Fails with
    /// [`CoreError::Claimed`] naming the holder if another writer (or a
    /// recover) has it.
    pub fn acquire(layout: &OutputLayout) -> Result<Option<Claim>> {
        let Some(path) = lock_path(layout) else {
            return Ok(None);
        };
        let what = path.parent().unwrap_or(Path::new("."));
        // Bounded: each retry means the folder went while it was being made or
        // before the lock file was (an output file's hidden folder, removed by
        // a recorder closed without a row as it let go of its claim).
        let mut tries = 0;
        let claimed = loop {
            let attempt = fs::create_dir_all(what)
                .map_err(|e| CoreError::io("create directory", what, e))
                .and_then(|()| Claim::try_path(&path));
            match attempt {
                Err(e) if tries < 100 && folder_went(&e) => tries += 1,
                claimed => break claimed,
            }
        };
        match claimed? {
            Some(TryClaim::Held(c)) => Ok(Some(c)),
            None => Ok(None),
            Some(TryClaim::Busy(holder)) => Err(CoreError::Claimed(format!(
                "{} is being written by {holder}: one writer per run folder; \
                 use a new folder, or wait until that recorder closes",
                what.display()
            ))),
        }
    }

    /// Try-locks the lock file at `path` (created if missing). None when the
    /// filesystem does not support `flock`.
    pub fn try_path(path: &Path) -> Result<Option<TryClaim>> {
        // Bounded: each retry means another process removed the file between
        // our open and our lock, which only a releasing holder does.
        for _ in 0..100 {
            // The lock is held through a read-only descriptor: a file open for
            // writing for the whole recording would make a read-only remount
            // of the filesystem fail ("busy"). `flock` needs no write access.
            refuse_odd_lock_file(path)?;
            lock_file_options()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| CoreError::io("create lock file", path, e))?;
            let mut file = match lock_file_options().read(true).open(path) {
                Ok(f) => f,
                // Removed by a releasing holder between the two opens.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(CoreError::io("open lock file", path, e)),
            };
            // Swapped for something else between the look and the open.
            if !file.metadata().is_ok_and(|m| m.is_file()) {
                return Err(odd_lock_file(path, "not a regular file"));
            }
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    return Ok(Some(TryClaim::Busy(describe_holder(&text))));
                }
                Err(fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                    return Ok(None);
                }
                Err(fs::TryLockError::Error(e)) => {
                    return Err(CoreError::io("lock", path, e));
                }
            }
            let ours = file
                .metadata()
                .map_err(|e| CoreError::io("stat lock file", path, e))?;
            match fs::metadata(path) {
                Ok(now) if same_file_id(&now, &ours) => {}
                // Removed (or replaced) by its previous holder: start over.
                _ => continue,
            }
            // Who holds it, for the error of the next claimer. Informational:
            // not fsynced, and a failure to write it does not fail the claim.
            let _ = lock_file_options()
                .write(true)
                .truncate(true)
                .open(path)
                .and_then(|mut w| {
                    w.write_all(
                        format!(
                            "pid={} host={} since={}\n",
                            std::process::id(),
                            hostname(),
                            utc_now_iso()
                        )
                        .as_bytes(),
                    )
                });
            let inner = Arc::new(ClaimInner {
                path: path.to_path_buf(),
                pid: std::process::id(),
                file: Mutex::new(Some(file)),
            });
            let mut claims = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
            claims.retain(|w| w.strong_count() > 0);
            claims.push(Arc::downgrade(&inner));
            return Ok(Some(TryClaim::Held(Claim { inner })));
        }
        Err(CoreError::Claimed(format!(
            "{}: the claim changed hands 100 times while taking it; try again",
            path.display()
        )))
    }

    /// Lets go: removes the lock file and unlocks. Idempotent; in a forked
    /// child it only closes the child's copy.
    pub fn release(&self) {
        self.inner.release();
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

/// "process 123 on host h since 2026-01-01T00:00:00Z" from a lock file's text.
fn describe_holder(text: &str) -> String {
    let get = |key: &str| {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .map(str::to_string)
    };
    match (get("pid"), get("host"), get("since")) {
        (Some(pid), host, since) => format!(
            "process {pid} on host {} since {}",
            host.unwrap_or_else(|| "?".into()),
            since.unwrap_or_else(|| "?".into())
        ),
        _ => "another writer (it is taking the claim right now)".into(),
    }
}

/// `read()`'s answer, kept in `cell` after the first call: for facts that
/// cannot change while the process lives, read once instead of by every run
/// (short runs pay for every system call: issue 13).
///
/// Never waits: a `OnceLock` (or a blocking lock) that a thread of the parent
/// held at `fork()` would hang the child at its first run, since that thread
/// does not exist there. With `try_lock`, a lock that is busy (or poisoned)
/// only means `read()` runs again.
pub(crate) fn read_once<T: Clone>(cell: &Mutex<Option<T>>, read: impl FnOnce() -> T) -> T {
    if let Ok(known) = cell.try_lock() {
        if let Some(value) = known.as_ref() {
            return value.clone();
        }
    }
    let value = read();
    if let Ok(mut known) = cell.try_lock() {
        *known = Some(value.clone());
    }
    value
}

/// This machine's name, for the claim's diagnostic text only (who holds a
/// run): the process's answer is fresh enough, so it is read once.
fn hostname() -> String {
    static HOSTNAME: Mutex<Option<String>> = Mutex::new(None);
    read_once(&HOSTNAME, || {
        fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".into())
    })
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ` (UTC), without a date library.
fn utc_now_iso() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// How a lock file is opened: a symbolic link planted as the lock file is never
/// followed (the holder's line would overwrite its target, perhaps outside the
/// folder), and a FIFO is never waited on (opening one blocks until a peer opens
/// the other end: the constructor and `recover` hung on one).
#[cfg(unix)]
const LOCK_OPEN_FLAGS: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK;

/// `OpenOptions` for the lock file: [`LOCK_OPEN_FLAGS`] on Unix. Windows has
/// no FIFOs, and a symbolic link there is refused by [`refuse_odd_lock_file`]
/// only (a link swapped in between that look and the open is followed; see
/// docs/PLATFORMS.md).
fn lock_file_options() -> OpenOptions {
    #[allow(unused_mut)] // mutated on Unix only
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    options.custom_flags(LOCK_OPEN_FLAGS);
    options
}

/// True when `a` and `b` (metadata of the lock file by name, and of the
/// descriptor we locked) are the same file: its previous holder did not
/// remove it between our open and our lock.
#[cfg(unix)]
fn same_file_id(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Without file ids in stable std (Windows: `file_index` is unstable), the
/// name still existing is the whole check. Weaker than Unix's: when a holder
/// releases at the moment two others claim, both may end up believing they
/// hold it (documented in docs/PLATFORMS.md).
#[cfg(not(unix))]
fn same_file_id(_a: &fs::Metadata, _b: &fs::Metadata) -> bool {
    true
}

fn odd_lock_file(path: &Path, what: &str) -> CoreError {
    CoreError::Write {
        message: format!(
            "the lock file {} is {what}: it is not used as the run's claim; remove it",
            path.display()
        ),
    }
}

/// Refuses a lock file that is a symbolic link, FIFO, socket, device or folder,
/// with an error naming it (the open flags refuse them too, with a less clear one).
fn refuse_odd_lock_file(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(odd_lock_file(path, "a symbolic link")),
        Ok(m) if !m.file_type().is_file() => Err(odd_lock_file(path, "not a regular file")),
        _ => Ok(()),
    }
}

/// Whether `e`, met while claiming a lock file, may be its folder going away
/// meanwhile: removed by another recorder between `create_dir_all`'s `mkdir`
/// and its check that the folder is there (AlreadyExists), or before the lock
/// file was created (NotFound). A retry then claims it; a path that really is
/// a file fails the same way on every try, and the bounded retries end.
fn folder_went(e: &CoreError) -> bool {
    match e {
        CoreError::Io { source, .. } => matches!(
            source.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::AlreadyExists
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_once_reads_once_then_answers_from_the_cell() {
        let cell = Mutex::new(None);
        let mut reads = 0;
        assert_eq!(
            read_once(&cell, || {
                reads += 1;
                7
            }),
            7
        );
        assert_eq!(
            read_once(&cell, || {
                reads += 1;
                8
            }),
            7
        );
        assert_eq!(reads, 1);
    }

    #[test]
    fn read_once_never_waits_for_a_held_or_poisoned_cell() {
        // As after fork() in a child whose parent had a thread inside the
        // cell: the lock is held by no one who will let go. A blocking lock
        // here would deadlock this very thread.
        let cell = Mutex::new(Some(1));
        let held = cell.lock().unwrap();
        assert_eq!(read_once(&cell, || 2), 2);
        drop(held);
        assert_eq!(read_once(&cell, || 3), 1);

        let poisoned = std::sync::Arc::new(Mutex::new(None::<i32>));
        let p = std::sync::Arc::clone(&poisoned);
        let _ = std::thread::spawn(move || {
            let _guard = p.lock().unwrap();
            panic!("poison the cell");
        })
        .join();
        assert!(poisoned.is_poisoned());
        assert_eq!(read_once(&poisoned, || 4), 4);
        assert_eq!(read_once(&poisoned, || 5), 5);
    }

    #[test]
    fn two_claims_in_one_process_conflict_and_release_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OutputLayout::run_folder(&dir.path().join("r"));
        let a = Claim::acquire(&layout).unwrap().expect("local claim");
        let err = Claim::acquire(&layout).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CoreError::Claimed(_)), "{msg}");
        assert!(
            msg.contains(&format!("process {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("since 20"), "{msg}");
        a.release();
        assert!(!a.path().exists());
        let b = Claim::acquire(&layout).unwrap().expect("free again");
        drop(b);
        assert!(!dir.path().join("r").join(RUN_LOCK_NAME).exists());
    }

    #[test]
    fn utc_iso_has_the_shape() {
        let s = utc_now_iso();
        assert_eq!(s.len(), 20, "{s}");
        assert!(s.starts_with("20") && s.ends_with('Z'), "{s}");
    }

    #[test]
    fn instance_ids_fit_eight_digits_and_differ() {
        let a = instance_id();
        let b = instance_id();
        assert!(a < 100_000_000 && b < 100_000_000);
        assert_ne!(a, b);
    }

    #[test]
    fn a_fifo_lock_file_is_refused_at_once_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("r");
        fs::create_dir_all(&run).unwrap();
        let lock = run.join(RUN_LOCK_NAME);
        let made = std::process::Command::new("mkfifo")
            .arg(&lock)
            .status()
            .unwrap();
        assert!(made.success());
        let layout = OutputLayout::run_folder(&run);
        // Before: opening the FIFO blocked until a reader came, forever.
        let err = Claim::acquire(&layout).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("r");
        fs::create_dir_all(&run).unwrap();
        let outside = dir.path().join("precious.txt");
        fs::write(&outside, "keep me").unwrap();
        std::os::unix::fs::symlink(&outside, run.join(RUN_LOCK_NAME)).unwrap();
        let err = Claim::acquire(&OutputLayout::run_folder(&run))
            .unwrap_err()
            .to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep me");
        // A dangling link does not create its target either.
        let run2 = dir.path().join("r2");
        fs::create_dir_all(&run2).unwrap();
        let target = dir.path().join("created-outside");
        std::os::unix::fs::symlink(&target, run2.join(RUN_LOCK_NAME)).unwrap();
        assert!(Claim::acquire(&OutputLayout::run_folder(&run2)).is_err());
        assert!(!target.exists());
    }
}
