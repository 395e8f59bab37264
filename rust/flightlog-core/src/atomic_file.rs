//! Atomic publication of files: the only way flightlog puts a file where a
//! reader may look.
//!
//! Guarantees (each has a test below or in `tests/failpoints.rs`):
//! * A reader never sees a partial file under its final name: content goes to a
//!   dot-prefixed temp file in the same directory (`.NAME.tmp-RANDOM`, opened
//!   with `O_EXCL`), which is fsynced, then linked to the final name, then
//!   the directory is fsynced so the new name itself survives power loss.
//! * A published file is never replaced: the final name is made with `link`,
//!   which fails if the name exists, and the temp name is then unlinked. A
//!   publish onto an existing name fails loudly (`CoreError::Write`, "never
//!   replaced") and leaves the existing file as it was. The one exception is
//!   [`publish_replacing`], for a compaction whose output absorbs the file it
//!   replaces.
//! * Temp names never end in `.parquet`, so `*.parquet` globs never match them.
//! * On an error before the rename the temp file is removed and nothing is
//!   published; the error names the file and the step that failed. An error of
//!   the final directory fsync comes after the rename: the file is complete and
//!   in place, but its name may not survive a power loss: the new name is
//!   removed again, so the caller can rewrite the same content under the same
//!   name (nothing was published).
//! * A failed fsync is never retried on the same file (Linux may drop the dirty
//!   pages and report success the second time): the caller rewrites from memory.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{CoreError, Result};

/// Marker inside every temp file name; [`sweep_temp_files`] removes files with it.
pub const TEMP_MARKER: &str = ".tmp-";

/// A unique suffix: pid, time and a process-wide counter (no RNG dependency).
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:x}{:x}", std::process::id(), nanos & 0xffff_ffff, n)
}

/// The temp path used to publish `final_path`.
fn temp_path_for(final_path: &Path) -> PathBuf {
    let name = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    final_path.with_file_name(format!(".{name}{TEMP_MARKER}{}", unique_suffix()))
}

/// fsyncs a directory so that renames and unlinks inside it are durable.
/// (On macOS `sync_all` is `F_FULLFSYNC`, which also flushes the drive's cache.)
#[cfg(unix)]
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| CoreError::io("open directory", dir, e))?;
    d.sync_all()
        .map_err(|e| CoreError::io("fsync directory", dir, e))
}

/// Windows has no fsync of a folder (std cannot even open one as a `File`):
/// a no-op there. NTFS journals its metadata, so a rename is durable once the
/// journal commits, a few seconds at most; a power loss inside that window may
/// lose the newest file name (the data stay in the segments for `recover`).
/// The weaker guarantee is documented in docs/PLATFORMS.md.
#[cfg(not(unix))]
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let _ = dir;
    Ok(())
}

/// The error of a rename or remove. On Windows a file that another program
/// has open (a reader without `FILE_SHARE_DELETE`, as Python's `open()` and
/// most readers are) can be neither replaced nor removed: say so, instead of
/// a bare "Access is denied".
/// `path` is the path the error names elsewhere, `in_use` the file another
/// program may hold open.
fn in_use_error(op: &'static str, path: &Path, in_use: &Path, e: std::io::Error) -> CoreError {
    // ERROR_ACCESS_DENIED (5) and ERROR_SHARING_VIOLATION (32).
    if cfg!(windows) && matches!(e.raw_os_error(), Some(5 | 32)) {
        return CoreError::write(format!(
            "{op} {}: {e}; on Windows a file that another program has open \
             (a reader of {}: pandas, pyarrow, DuckDB) cannot be replaced or removed; \
             close it and retry (nothing was lost: the rows are still in their segments)",
            path.display(),
            in_use.display()
        ));
    }
    CoreError::io(op, path, e)
}

/// Writes a file through `write` and publishes it atomically at `final_path`.
/// Returns the published size in bytes.
///
/// `write` receives a buffered writer over the temp file and must return it
/// (possibly after wrapping and unwrapping it, as the Parquet writer does).
/// Fails (nothing published, the existing file untouched) if `final_path`
/// exists: a published file is never replaced.
pub fn publish<F>(final_path: &Path, write: F) -> Result<u64>
where
    F: FnOnce(BufWriter<File>) -> Result<BufWriter<File>>,
{
    publish_mode(final_path, write, false)
}

/// [`publish`], replacing an existing `final_path` (rename over it). Only for
/// outputs that contain the file they replace (a compaction merging the
/// previous compacted file with new parts).
pub fn publish_replacing<F>(final_path: &Path, write: F) -> Result<u64>
where
    F: FnOnce(BufWriter<File>) -> Result<BufWriter<File>>,
{
    publish_mode(final_path, write, true)
}

fn publish_mode<F>(final_path: &Path, write: F, replace: bool) -> Result<u64>
where
    F: FnOnce(BufWriter<File>) -> Result<BufWriter<File>>,
{
    let dir = final_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = temp_path_for(final_path);
    let result = publish_via(&tmp, final_path, dir, write, replace);
    if result.is_err() {
        // Best effort: the temp name never matches *.parquet, and recovery
        // sweeps leftovers, so a failure to remove it is not an error itself.
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn publish_via<F>(tmp: &Path, final_path: &Path, dir: &Path, write: F, replace: bool) -> Result<u64>
where
    F: FnOnce(BufWriter<File>) -> Result<BufWriter<File>>,
{
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(|e| CoreError::io("create temp file", tmp, e))?;
    let mut buffered = write(BufWriter::with_capacity(1 << 20, file))?;
    fail::fail_point!("atomic_file::write", |_| Err(CoreError::io(
        "write",
        tmp,
        std::io::Error::other("injected write failure")
    )));
    buffered
        .flush()
        .map_err(|e| CoreError::io("write", tmp, e))?;
    let file = buffered
        .into_inner()
        .map_err(|e| CoreError::io("write", tmp, e.into_error()))?;
    fail::fail_point!("atomic_file::fsync", |_| Err(CoreError::io(
        "fsync",
        tmp,
        std::io::Error::from_raw_os_error(5)
    )));
    file.sync_all()
        .map_err(|e| CoreError::io("fsync", tmp, e))?;
    let size = file
        .metadata()
        .map_err(|e| CoreError::io("stat", tmp, e))?
        .len();
    drop(file);
    fail::fail_point!("atomic_file::rename", |_| Err(CoreError::io(
        "rename",
        tmp,
        std::io::Error::other("injected rename failure")
    )));
    if replace {
        fs::rename(tmp, final_path).map_err(|e| in_use_error("rename", tmp, final_path, e))?;
        fsync_dir(dir)?;
        return Ok(size);
    }
    link_new(tmp, final_path)?;
    // The temp name is a second link to the same file; a failure to remove it
    // leaves a dot-name that recovery sweeps.
    let _ = fs::remove_file(tmp);
    if let Err(e) = fsync_dir(dir) {
        // Not durable: take the new name back so that the caller's retry
        // (same content, same name) is not refused as a replacement.
        let _ = fs::remove_file(final_path);
        return Err(e);
    }
    Ok(size)
}

/// Gives the file `from` the new name `to`, failing if `to` exists: `link`
/// is create-only (unlike `rename`, which replaces). Where a filesystem has
/// no hard links, falls back to a rename after checking that `to` is free
/// (a narrow race there, documented in the README).
pub fn link_new(from: &Path, to: &Path) -> Result<()> {
    fail::fail_point!("atomic_file::link_new", |_| Err(CoreError::write(format!(
        "{} already exists: a published file is never replaced (injected)",
        to.display()
    ))));
    match fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exists_error(to)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::Unsupported | std::io::ErrorKind::PermissionDenied
            ) || e.raw_os_error() == Some(31) =>
        {
            // EPERM/EOPNOTSUPP (no hard links here) or EMLINK (31).
            if to.symlink_metadata().is_ok() {
                return Err(exists_error(to));
            }
            fs::rename(from, to).map_err(|e| CoreError::io("rename", from, e))
        }
        Err(e) => Err(CoreError::io("link", to, e)),
    }
}

fn exists_error(to: &Path) -> CoreError {
    CoreError::write(format!(
        "{} already exists: a published file is never replaced (another writer, \
         or a recover, published it); the rows stay in their segments for recover",
        to.display()
    ))
}

/// Moves the published file `from` to the new name `to` (same folder),
/// never replacing an existing `to`, and fsyncs the folder. A crash between
/// the link and the unlink leaves both names on one file; recovery sees they
/// are the same file and removes the old name.
pub fn move_new(from: &Path, to: &Path) -> Result<()> {
    fail::fail_point!("atomic_file::rename", |_| Err(CoreError::io(
        "rename",
        from,
        std::io::Error::other("injected rename failure")
    )));
    link_new(from, to)?;
    if from.symlink_metadata().is_ok() {
        fs::remove_file(from).map_err(|e| in_use_error("remove", from, from, e))?;
    }
    if let Some(dir) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        fsync_dir(dir)?;
    }
    if let Some(dir) = from.parent().filter(|p| !p.as_os_str().is_empty()) {
        if Some(dir) != to.parent() {
            fsync_dir(dir)?;
        }
    }
    Ok(())
}

/// Removes leftover temp files (from a crash mid-publish) in `dir`.
/// Returns how many were removed. A missing directory counts as empty.
pub fn sweep_temp_files(dir: &Path) -> Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(CoreError::io("list directory", dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| CoreError::io("list directory", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(TEMP_MARKER) {
            fs::remove_file(entry.path())
                .map_err(|e| CoreError::io("remove temp file", entry.path(), e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        fsync_dir(dir)?;
    }
    Ok(removed)
}

/// Publishes the bytes `data` at `final_path` atomically and durably, for
/// small documents (manifests, a catalog file) that Python writes whole:
/// temp file in the same folder (`O_EXCL`), write, fsync, then
///
/// * `create_only`: a link to the final name, which fails with
///   [`CoreError::Exists`] if the name is taken (the existing file untouched):
///   the complete file appears at once, so it can claim a name. Where the
///   filesystem has no hard links the name is claimed with an empty
///   `O_EXCL` file, then replaced by the temp file (an instant where the name
///   is empty, never where it is partial);
/// * otherwise a rename over the final name (a reader sees the old or the new
///   file, never a mix);
///
/// then an fsync of the folder, so that the name survives a power loss. A
/// folder fsync the filesystem does not support (`EINVAL`, `EOPNOTSUPP`,
/// `EBADF`: some network and FUSE filesystems) is skipped, as Python's
/// manifest writer always did; any other failure is an error, raised after the
/// file is in place (the content is complete, the name may not be durable).
/// The temp file never survives an error before the rename. Returns the size.
pub fn publish_bytes(final_path: &Path, data: &[u8], create_only: bool) -> Result<u64> {
    publish_bytes_after(final_path, data, create_only, None)
}

/// [`publish_bytes`], whose name must never be durable before the names in
/// the folder `after` are: `after`'s fsync (owed by
/// [`publish_together_then`]) runs on a thread at the same time as the temp
/// file's, and the link or rename waits for both. The order the crash
/// guarantee needs (the names in `after` durable, then this name placed) is
/// kept; only the two fsyncs overlap, where one after the other they are two
/// waits for the disk. If `after`'s fsync fails, nothing is placed (the temp
/// file is removed) and that error is returned: the caller still owes it.
pub fn publish_bytes_after(
    final_path: &Path,
    data: &[u8],
    create_only: bool,
    after: Option<&Path>,
) -> Result<u64> {
    let wait = match after {
        Some(earlier) => Wait::FileAndFolder(earlier),
        None => Wait::File,
    };
    publish_bytes_waiting(final_path, data, create_only, wait)
}

/// [`publish_bytes`] without waiting for the disk: the file is written under
/// its temp name and placed as `publish_bytes` places it (a reader, or a
/// process that dies, sees no file or the whole file; a rename replaces
/// atomically), but neither its data nor its name are fsynced, so a power
/// loss may take both back or leave an empty file. The caller owes
/// [`sync_paths`] of the file and its folder before anything that must never
/// be durable without it: a run's start manifest is written so, and the run's
/// recorder makes it durable before its first file
/// (`RecorderConfig::sync_first`), in the same wait as that file's own fsync.
pub fn place_bytes(final_path: &Path, data: &[u8], create_only: bool) -> Result<u64> {
    publish_bytes_waiting(final_path, data, create_only, Wait::Nothing)
}

/// What a byte publish waits for before it returns.
#[derive(Clone, Copy)]
enum Wait<'a> {
    /// Nothing: [`place_bytes`].
    Nothing,
    /// The file's fsync before its name is placed, the folder's after.
    File,
    /// As `File`, and the fsync of an earlier folder (at the same time as the
    /// file's) before the name is placed: [`publish_bytes_after`].
    FileAndFolder(&'a Path),
}

fn publish_bytes_waiting(
    final_path: &Path,
    data: &[u8],
    create_only: bool,
    wait: Wait<'_>,
) -> Result<u64> {
    let dir = final_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if create_only && final_path.symlink_metadata().is_ok() {
        // A cheap early answer; the link below is what decides.
        return Err(exists_now(final_path));
    }
    let tmp = temp_path_for(final_path);
    let placed = write_and_place(&tmp, final_path, data, create_only, wait);
    // After a link the temp name is a second name of the published file;
    // after a rename or an error before it, it is gone or must go.
    let _ = fs::remove_file(&tmp);
    placed?;
    if !matches!(wait, Wait::Nothing) {
        fsync_dir_if_supported(dir)?;
    }
    Ok(data.len() as u64)
}

/// fsyncs every path of `paths` (files and folders alike), all at the same
/// time (one thread each but the first): the debt [`place_bytes`] leaves.
/// Only what is still a regular file or a folder there is fsynced: a path
/// that is gone has nothing left to make durable, and one that something
/// else put there since (a symlink, a FIFO, a device) is not what was placed
/// and is never opened (a FIFO would block the open). A folder whose
/// filesystem cannot fsync one is skipped as [`publish_bytes`] skips it. The
/// first error is returned once every fsync has finished.
pub fn sync_paths(paths: &[PathBuf]) -> Result<()> {
    all_at_once(paths, |p| sync_path(p))
}

fn sync_path(path: &Path) -> Result<()> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    // Not followed, and never waiting for a writer (a FIFO swapped in after
    // the check below).
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NOFOLLOW | libc::O_NONBLOCK);
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CoreError::io("stat", path, e)),
        Ok(m) if m.is_dir() => fsync_dir_if_supported(path),
        Ok(m) if !m.is_file() => Ok(()),
        Ok(_) => match opts.open(path) {
            Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => {
                f.sync_all().map_err(|e| CoreError::io("fsync", path, e))
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            // ELOOP: a symlink swapped in after the check.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Ok(()),
            Err(e) => Err(CoreError::io("open", path, e)),
        },
    }
}

/// Runs `job` on every item at the same time: one scoped thread each but the
/// first, which runs here (as does any whose thread cannot start). Waits for
/// all; the first error in `items`' order wins.
fn all_at_once<T: Sync>(items: &[T], job: impl Fn(&T) -> Result<()> + Sync) -> Result<()> {
    let Some((first, rest)) = items.split_first() else {
        return Ok(());
    };
    let job = &job;
    std::thread::scope(|scope| {
        let mut threads = Vec::with_capacity(rest.len());
        let mut here = vec![first];
        for item in rest {
            match std::thread::Builder::new()
                .name("flightlog-fsync".into())
                .spawn_scoped(scope, move || job(item))
            {
                Ok(handle) => threads.push(handle),
                Err(_) => here.push(item),
            }
        }
        let mut result = Ok(());
        for item in here {
            let r = job(item);
            if result.is_ok() {
                result = r;
            }
        }
        for handle in threads {
            let r = handle
                .join()
                .unwrap_or_else(|_| Err(CoreError::write("an fsync thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

fn exists_now(path: &Path) -> CoreError {
    CoreError::Exists(format!(
        "{} already exists (create-only publish: the existing file is left as it is)",
        path.display()
    ))
}

fn write_and_place(
    tmp: &Path,
    final_path: &Path,
    data: &[u8],
    create_only: bool,
    wait: Wait<'_>,
) -> Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o644);
    let mut file = opts
        .open(tmp)
        .map_err(|e| CoreError::io("create temp file", tmp, e))?;
    file.write_all(data)
        .map_err(|e| CoreError::io("write", tmp, e))?;
    let sync_file = || file.sync_all().map_err(|e| CoreError::io("fsync", tmp, e));
    match wait {
        Wait::Nothing => {}
        Wait::File => sync_file()?,
        // The earlier folder's fsync and the temp file's at the same time;
        // both must succeed before the name below is placed (the folder's
        // error first).
        Wait::FileAndFolder(earlier) => all_at_once(&[Some(earlier), None], |item| match item {
            Some(folder) => fsync_dir(folder),
            None => sync_file(),
        })?,
    }
    drop(file);
    if !create_only {
        return fs::rename(tmp, final_path).map_err(|e| in_use_error("rename", tmp, final_path, e));
    }
    match fs::hard_link(tmp, final_path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exists_now(final_path)),
        // EPERM/EOPNOTSUPP/ENOSYS (no hard links here) or EMLINK (31).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::Unsupported | std::io::ErrorKind::PermissionDenied
            ) || matches!(e.raw_os_error(), Some(31 | 38 | 95)) =>
        {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(final_path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(exists_now(final_path))
                }
                Err(e) => return Err(CoreError::io("create", final_path, e)),
            }
            fs::rename(tmp, final_path).map_err(|e| CoreError::io("rename", tmp, e))
        }
        Err(e) => Err(CoreError::io("link", final_path, e)),
    }
}

/// [`fsync_dir`], skipping filesystems that cannot fsync a folder.
fn fsync_dir_if_supported(dir: &Path) -> Result<()> {
    match fsync_dir(dir) {
        Err(CoreError::Io { ref source, .. })
            if matches!(source.raw_os_error(), Some(9 | 22 | 95)) =>
        {
            Ok(()) // EBADF, EINVAL, EOPNOTSUPP
        }
        other => other,
    }
}

/// A file written under its temp name and not yet published (nor fsynced):
/// the first half of [`publish`], for [`publish_together`].
pub struct Staged {
    tmp: PathBuf,
    final_path: PathBuf,
    file: File,
    size: u64,
}

impl Staged {
    /// The name the file will be published under.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Never published: the temp name goes (a no-op once it was linked
        // and unlinked by `publish_together`). Recovery sweeps what a crash
        // leaves.
        let _ = fs::remove_file(&self.tmp);
    }
}

/// One fsync of [`publish_together_then`]'s wait.
enum SyncJob<'a> {
    Staged(&'a Staged),
    Path(&'a Path),
}

/// Writes the content of `final_path` to a fresh temp file beside it, as
/// [`publish`] does, without publishing it: [`publish_together`] does that.
pub fn stage<F>(final_path: &Path, write: F) -> Result<Staged>
where
    F: FnOnce(BufWriter<File>) -> Result<BufWriter<File>>,
{
    let tmp = temp_path_for(final_path);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| CoreError::io("create temp file", &tmp, e))?;
    // From here the temp file is removed on every error (`Staged::drop`).
    let mut staged = Staged {
        tmp,
        final_path: final_path.to_path_buf(),
        file,
        size: 0,
    };
    let writer = staged
        .file
        .try_clone()
        .map_err(|e| CoreError::io("open", &staged.tmp, e))?;
    let mut buffered = write(BufWriter::with_capacity(1 << 20, writer))?;
    fail::fail_point!("atomic_file::write", |_| Err(CoreError::io(
        "write",
        &staged.tmp,
        std::io::Error::other("injected write failure")
    )));
    buffered
        .flush()
        .map_err(|e| CoreError::io("write", &staged.tmp, e))?;
    drop(buffered);
    staged.size = staged
        .file
        .metadata()
        .map_err(|e| CoreError::io("stat", &staged.tmp, e))?
        .len();
    Ok(staged)
}

/// Publishes staged files of one folder in one step, with [`publish`]'s
/// guarantees and fewer waits: their fsyncs run at the same time (one
/// thread each), then each is linked to its final name (create-only), then
/// one fsync of the folder makes every new name durable. A name appears only
/// once its data are durable (each fsync precedes every link). On any error
/// nothing stays published: names already linked are removed again, so the
/// caller can retry with the same content under the same names. Returns the
/// sizes, in the order given.
pub fn publish_together(files: Vec<Staged>) -> Result<Vec<u64>> {
    publish_together_then(files, true, &[]).map(|(sizes, _)| sizes)
}

/// [`publish_together`], with the folder fsync left to the caller when
/// `sync_folder` is false: then every name is in place and its data durable,
/// but the names themselves are not yet (a power loss may take them back),
/// and the folder to fsync is returned. The caller owes that fsync before
/// anything that must never be durable without these names (a manifest that
/// lists them; see [`publish_bytes_after`], which runs it at the same time as
/// the manifest's own fsync) and before it reports them durable.
///
/// `also`: paths (files or folders) fsynced in the same wait as the files,
/// before any name is placed ([`sync_paths`]; the debt of a [`place_bytes`]).
pub fn publish_together_then(
    files: Vec<Staged>,
    sync_folder: bool,
    also: &[PathBuf],
) -> Result<(Vec<u64>, Option<PathBuf>)> {
    let Some(first) = files.first() else {
        return Ok((Vec::new(), None));
    };
    let dir = first
        .final_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    if files.iter().any(|f| {
        f.final_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            != dir
    }) {
        return Err(CoreError::write(
            "publish_together: every file must be in one folder (one folder fsync covers them)",
        ));
    }
    let sync = |f: &Staged| -> Result<()> {
        fail::fail_point!("atomic_file::fsync", |_| Err(CoreError::io(
            "fsync",
            &f.tmp,
            std::io::Error::from_raw_os_error(5)
        )));
        f.file
            .sync_all()
            .map_err(|e| CoreError::io("fsync", &f.tmp, e))
    };
    // The files' fsyncs and the `also` paths' at the same time.
    let jobs: Vec<SyncJob<'_>> = files
        .iter()
        .map(SyncJob::Staged)
        .chain(also.iter().map(|p| SyncJob::Path(p)))
        .collect();
    all_at_once(&jobs, |job| match job {
        SyncJob::Staged(f) => sync(f),
        SyncJob::Path(p) => sync_path(p),
    })?;
    fail::fail_point!("atomic_file::rename", |_| Err(CoreError::io(
        "rename",
        &files[0].tmp,
        std::io::Error::other("injected rename failure")
    )));
    let mut linked: Vec<&Path> = Vec::with_capacity(files.len());
    let undo = |linked: &[&Path]| {
        for p in linked {
            let _ = fs::remove_file(p);
        }
    };
    for f in &files {
        if let Err(e) = link_new(&f.tmp, &f.final_path) {
            undo(&linked);
            return Err(e);
        }
        linked.push(&f.final_path);
    }
    for f in &files {
        // A second link to the same file; a leftover dot-name is swept.
        let _ = fs::remove_file(&f.tmp);
    }
    let sizes = files.iter().map(|f| f.size).collect();
    if !sync_folder {
        return Ok((sizes, Some(dir)));
    }
    if let Err(e) = fsync_dir(&dir) {
        undo(&linked);
        return Err(e);
    }
    Ok((sizes, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_writes_the_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.parquet");
        let size = publish(&target, |mut w| {
            w.write_all(b"hello").unwrap();
            Ok(w)
        })
        .unwrap();
        assert_eq!(size, 5);
        assert_eq!(fs::read(&target).unwrap(), b"hello");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_failing_writer_publishes_nothing_and_removes_its_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.parquet");
        let err = publish(&target, |mut w| {
            w.write_all(b"partial").unwrap();
            Err(CoreError::write("encoder failed"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("encoder failed"));
        assert!(!target.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn publish_never_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("telemetry.parquet");
        fs::write(&target, b"finished").unwrap();
        let err = publish(&target, |mut w| {
            w.write_all(b"other").unwrap();
            Ok(w)
        })
        .unwrap_err();
        assert!(err.to_string().contains("never replaced"), "{err}");
        assert!(err.is_write_error());
        assert_eq!(fs::read(&target).unwrap(), b"finished");
        // No temp file left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // move_new too.
        let seg = dir.path().join("seg.parquet");
        fs::write(&seg, b"seg").unwrap();
        assert!(move_new(&seg, &target).is_err());
        assert_eq!(fs::read(&target).unwrap(), b"finished");
        assert_eq!(fs::read(&seg).unwrap(), b"seg");
        // publish_replacing is the explicit exception.
        publish_replacing(&target, |mut w| {
            w.write_all(b"superset").unwrap();
            Ok(w)
        })
        .unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"superset");
    }

    #[test]
    fn temp_names_never_match_parquet_globs_and_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = temp_path_for(&dir.path().join("telemetry-000001.parquet"));
        let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with('.') && !name.ends_with(".parquet"),
            "{name}"
        );
        fs::write(&tmp, b"x").unwrap();
        fs::write(dir.path().join("keep.parquet"), b"y").unwrap();
        assert_eq!(sweep_temp_files(dir.path()).unwrap(), 1);
        assert!(dir.path().join("keep.parquet").exists());
        assert_eq!(sweep_temp_files(&dir.path().join("missing")).unwrap(), 0);
    }

    #[test]
    fn publish_bytes_replaces_or_creates_only() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("manifest.toml");
        assert_eq!(publish_bytes(&target, b"a = 1\n", true).unwrap(), 6);
        assert_eq!(fs::read(&target).unwrap(), b"a = 1\n");
        // create_only onto an existing name: Exists, the file as it was, no temp left.
        let err = publish_bytes(&target, b"a = 2\n", true).unwrap_err();
        assert!(matches!(err, CoreError::Exists(_)), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"a = 1\n");
        // Replacing is a rename over it.
        publish_bytes(&target, b"a = 3\n", false).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"a = 3\n");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // A dangling symbolic link is a taken name too (never followed).
        #[cfg(unix)]
        {
            let link = dir.path().join("l.toml");
            std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
            assert!(matches!(
                publish_bytes(&link, b"x", true).unwrap_err(),
                CoreError::Exists(_)
            ));
            assert!(!dir.path().join("nowhere").exists());
        }
    }

    #[test]
    fn publish_together_then_leaves_the_folder_fsync_to_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let staged = ["a.parquet", "b.parquet"]
            .iter()
            .map(|n| {
                stage(&dir.path().join(n), |mut w| {
                    w.write_all(n.as_bytes()).unwrap();
                    Ok(w)
                })
                .unwrap()
            })
            .collect();
        let (sizes, owed) = publish_together_then(staged, false, &[]).unwrap();
        assert_eq!(sizes, vec![9, 9]);
        assert_eq!(owed.as_deref(), Some(dir.path()));
        assert_eq!(
            fs::read(dir.path().join("b.parquet")).unwrap(),
            b"b.parquet"
        );
        // The manifest that lists them is placed only after that fsync.
        let manifest = dir.path().join("manifest.toml");
        publish_bytes_after(&manifest, b"a = 1\n", false, owed.as_deref()).unwrap();
        assert_eq!(fs::read(&manifest).unwrap(), b"a = 1\n");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn place_bytes_places_like_publish_bytes_and_sync_paths_pays_the_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("manifest.toml");
        assert_eq!(place_bytes(&manifest, b"a = 1\n", true).unwrap(), 6);
        // Create-only refuses an existing file and leaves it as it is.
        let err = place_bytes(&manifest, b"a = 2\n", true).unwrap_err();
        assert!(matches!(err, CoreError::Exists(_)), "{err}");
        assert_eq!(fs::read(&manifest).unwrap(), b"a = 1\n");
        // A replace is a rename over it; no temp file is left either way.
        place_bytes(&manifest, b"a = 3\n", false).unwrap();
        assert_eq!(fs::read(&manifest).unwrap(), b"a = 3\n");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // The debt: the file and its folder; a path gone since is skipped.
        let gone = dir.path().join("gone.toml");
        sync_paths(&[manifest.clone(), dir.path().to_path_buf(), gone]).unwrap();
        sync_paths(&[]).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn sync_paths_never_opens_what_was_swapped_in() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("manifest.toml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        // Neither blocks (an open of a FIFO waits for a writer) nor fails.
        sync_paths(&[fifo, link]).unwrap();
    }

    #[test]
    fn publish_together_then_syncs_the_also_paths_in_its_wait() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("manifest.toml");
        place_bytes(&manifest, b"a = 1\n", false).unwrap();
        let staged = vec![stage(&dir.path().join("a.parquet"), |mut w| {
            w.write_all(b"a").unwrap();
            Ok(w)
        })
        .unwrap()];
        let (sizes, owed) =
            publish_together_then(staged, true, std::slice::from_ref(&manifest)).unwrap();
        assert_eq!((sizes, owed), (vec![1], None));
        // An also-path that cannot be fsynced (here: not even looked up, its
        // "folder" is a file) fails the publish before any name is placed.
        let staged = vec![stage(&dir.path().join("b.parquet"), |mut w| {
            w.write_all(b"b").unwrap();
            Ok(w)
        })
        .unwrap()];
        let bad = dir.path().join("a.parquet").join("x");
        let err = publish_together_then(staged, true, &[bad]).unwrap_err();
        assert!(matches!(err, CoreError::Io { op: "stat", .. }), "{err}");
        assert!(!dir.path().join("b.parquet").exists());
        let names = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(names, 2, "manifest.toml and a.parquet only");
    }

    #[test]
    fn publish_bytes_after_a_failing_folder_fsync_places_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("manifest.toml");
        let err = publish_bytes_after(&manifest, b"x", false, Some(&dir.path().join("gone")))
            .unwrap_err();
        assert!(matches!(err, CoreError::Io { .. }), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn publish_bytes_into_a_missing_folder_fails_naming_it_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("gone").join("manifest.toml");
        let err = publish_bytes(&target, b"x", false).unwrap_err();
        assert!(
            matches!(
                &err,
                CoreError::Io {
                    op: "create temp file",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("gone"), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
