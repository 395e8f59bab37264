//! Every run manifest under a local root, with its `lstat` signature, in one call.
//!
//! Listing the runs of a root that a catalog already holds needs, per run, one
//! `lstat` of its manifest: unchanged (same modification time, size and inode)
//! means the catalog's row still says what the manifest says. At 100,000 runs
//! those calls are most of `flightlog runs` when made from Python (~3-5 us of
//! interpreter work around a ~1 us system call each); here they are made on a
//! few threads and handed over as columns.
//!
//! The root-level names (the manifest's name, the flows folder and its runs
//! folder) are the Python layer's (`flightlog.runs.layout`) and are passed in.

use std::ffi::OsString;
use std::io;
use std::path::Path;

/// The names of a root's layout that the scan looks for.
#[derive(Debug, Clone)]
pub struct RootNames<'a> {
    /// A run folder's manifest (`manifest.toml`).
    pub manifest: &'a str,
    /// The folder of dev/tuner flows below the root (`flows`).
    pub flows_dir: &'a str,
    /// A flow's folder of per-run manifests (`runs`).
    pub runs_dir: &'a str,
    /// Suffix of a per-run manifest file (`.toml`).
    pub manifest_suffix: &'a str,
}

/// `lstat` of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub mtime_ns: i64,
    pub size: u64,
    /// None where the platform has no inode numbers.
    pub ino: Option<u64>,
    /// A regular file (not a symlink, folder, FIFO, ...).
    pub is_regular: bool,
}

/// One possible run under a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// The manifest's path relative to the root, `/`-separated.
    pub rel: String,
    /// A run folder's manifest (else a dev/tuner run's manifest file).
    pub is_folder: bool,
    /// None when there is no such file (a folder that is no run, or not yet one)
    /// or it cannot be examined.
    pub stat: Option<FileStat>,
}

/// Below this many entries the `lstat`s run on the calling thread.
const PARALLEL_FROM: usize = 4096;
const MAX_THREADS: usize = 8;

/// Every possible run under `root`, unordered: each folder right below it (not
/// hidden, not the flows folder; a symlink to a folder counts, as `os.scandir`'s
/// `is_dir()` has it) as `{folder}/{manifest}`, and each `{flows}/{flow}/{runs}/*{suffix}`
/// file (not hidden). A root that does not exist or is no folder has none.
///
/// Returns `Ok(None)` when a name is not valid UTF-8 (the caller lists such a
/// root itself, where names keep their exact bytes); an error only when the root
/// or the flows folder exists but cannot be read.
pub fn list_run_manifests(
    root: &Path,
    names: &RootNames<'_>,
) -> io::Result<Option<Vec<ManifestEntry>>> {
    let Some(top) = top_entries(root, names.flows_dir)? else {
        return Ok(None);
    };
    let mut found: Vec<(String, bool)> = top
        .into_iter()
        .filter(|e| e.is_dir)
        .map(|e| (format!("{}/{}", e.name, names.manifest), true))
        .collect();
    let flows = root.join(names.flows_dir);
    if flows.is_dir() {
        for flow in std::fs::read_dir(&flows)? {
            let flow = flow?;
            let Some(flow_name) = utf8(flow.file_name()) else {
                return Ok(None);
            };
            let runs = flow.path().join(names.runs_dir);
            if !is_dir_following(&flow) || !runs.is_dir() {
                continue;
            }
            // A flow folder removed while it is listed has no runs (as a missing root).
            let Ok(listing) = std::fs::read_dir(&runs) else {
                continue;
            };
            for m in listing {
                let m = m?;
                let Some(file) = utf8(m.file_name()) else {
                    return Ok(None);
                };
                if file.ends_with(names.manifest_suffix) && !file.starts_with('.') {
                    let rel = format!("{}/{flow_name}/{}/{file}", names.flows_dir, names.runs_dir);
                    found.push((rel, false));
                }
            }
        }
    }
    Ok(Some(stat_all(root, found)))
}

fn utf8(name: OsString) -> Option<String> {
    name.into_string().ok()
}

/// `DirEntry::file_type` does not follow symlinks; `os.scandir`'s `is_dir()` does.
fn is_dir_following(entry: &std::fs::DirEntry) -> bool {
    match entry.file_type() {
        Ok(t) if t.is_dir() => true,
        Ok(t) if t.is_symlink() => entry.path().is_dir(),
        _ => false,
    }
}

/// A folder (or anything else) right below a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopEntry {
    pub name: String,
    /// A folder, or a symlink to one (`os.scandir`'s `is_dir()`).
    pub is_dir: bool,
    pub is_symlink: bool,
}

/// The entries right below `root` but hidden ones and the flows folder, unordered;
/// `Ok(Some(empty))` for a root that does not exist or is no folder, `Ok(None)` when
/// a name is not UTF-8.
fn top_entries(root: &Path, flows_dir: &str) -> io::Result<Option<Vec<TopEntry>>> {
    let listing = match std::fs::read_dir(root) {
        Ok(it) => it,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            return Ok(Some(Vec::new()));
        }
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in listing {
        let entry = entry?;
        let Some(name) = utf8(entry.file_name()) else {
            return Ok(None);
        };
        if name.starts_with('.') || name == flows_dir {
            continue;
        }
        let is_symlink = entry.file_type().is_ok_and(|t| t.is_symlink());
        found.push(TopEntry {
            is_dir: is_dir_following(&entry),
            is_symlink,
            name,
        });
    }
    Ok(Some(found))
}

/// A folder right below a root with the `lstat` of some of its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderEntry {
    pub entry: TopEntry,
    /// One per file asked for, in that order; all None for a symlink or a non-folder
    /// (they are not looked into).
    pub files: Vec<Option<FileStat>>,
}

/// Every entry right below `root` but hidden ones and `flows_dir`, sorted by name,
/// with the `lstat` of each of `files` inside each real folder (not a symlink): what
/// `consolidate` needs to recognise, in one query, the run folders that did not change.
/// `Ok(None)` when a name is not UTF-8.
pub fn scan_run_folders(
    root: &Path,
    flows_dir: &str,
    files: &[&str],
) -> io::Result<Option<Vec<FolderEntry>>> {
    let Some(mut top) = top_entries(root, flows_dir)? else {
        return Ok(None);
    };
    top.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Some(on_threads(top, |entry| {
        let files = if entry.is_dir && !entry.is_symlink {
            let folder = root.join(&entry.name);
            files.iter().map(|f| lstat(&folder.join(f))).collect()
        } else {
            vec![None; files.len()]
        };
        FolderEntry { entry, files }
    })))
}

fn stat_all(root: &Path, found: Vec<(String, bool)>) -> Vec<ManifestEntry> {
    on_threads(found, |(rel, is_folder)| {
        let stat = lstat(&root.join(&rel));
        ManifestEntry {
            rel,
            is_folder,
            stat,
        }
    })
}

/// `f` of each item, in order; on a few threads when there are many (the work is
/// mostly system calls: `lstat`s and small reads that each wait on the kernel).
pub(crate) fn on_threads<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS);
    if items.len() < PARALLEL_FROM || threads < 2 {
        return items.into_iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut rest = items.into_iter();
    loop {
        let part: Vec<_> = rest.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        chunks.push(part);
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|part| s.spawn(move || part.into_iter().map(f).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

fn lstat(path: &Path) -> Option<FileStat> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some(signature(&meta))
}

#[cfg(unix)]
fn signature(meta: &std::fs::Metadata) -> FileStat {
    use std::os::unix::fs::MetadataExt;
    FileStat {
        mtime_ns: meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
        size: meta.size(),
        ino: Some(meta.ino()),
        is_regular: meta.file_type().is_file(),
    }
}

#[cfg(not(unix))]
fn signature(meta: &std::fs::Metadata) -> FileStat {
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    FileStat {
        mtime_ns,
        size: meta.len(),
        ino: None,
        is_regular: meta.file_type().is_file(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: RootNames<'static> = RootNames {
        manifest: "manifest.toml",
        flows_dir: "flows",
        runs_dir: "runs",
        manifest_suffix: ".toml",
    };

    fn sorted(root: &Path) -> Vec<ManifestEntry> {
        let mut v = list_run_manifests(root, &NAMES).unwrap().unwrap();
        v.sort_by(|a, b| a.rel.cmp(&b.rel));
        v
    }

    #[test]
    fn lists_run_folders_and_flow_manifests_with_their_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("run_a")).unwrap();
        std::fs::write(root.join("run_a/manifest.toml"), b"x = 1\n").unwrap();
        std::fs::create_dir(root.join("run_b")).unwrap(); // no manifest yet
        std::fs::create_dir(root.join(".hidden")).unwrap();
        std::fs::write(root.join("duckdb.db"), b"").unwrap(); // a file: no run
        std::fs::create_dir_all(root.join("flows/f1/runs")).unwrap();
        std::fs::write(root.join("flows/f1/runs/r1.toml"), b"y = 22\n").unwrap();
        std::fs::write(root.join("flows/f1/runs/.tmp-r2.toml"), b"").unwrap();
        std::fs::write(root.join("flows/f1/runs/notes.txt"), b"").unwrap();
        std::fs::create_dir(root.join("flows/empty")).unwrap();
        let got = sorted(root);
        let rels: Vec<_> = got.iter().map(|e| (e.rel.as_str(), e.is_folder)).collect();
        assert_eq!(
            rels,
            [
                ("flows/f1/runs/r1.toml", false),
                ("run_a/manifest.toml", true),
                ("run_b/manifest.toml", true)
            ]
        );
        let st = got[1].stat.unwrap();
        assert_eq!(st.size, 6);
        assert!(st.is_regular);
        assert_eq!(got[0].stat.unwrap().size, 7);
        assert_eq!(got[2].stat, None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::symlink_metadata(root.join("run_a/manifest.toml")).unwrap();
            assert_eq!(st.ino, Some(meta.ino()));
            assert_eq!(
                st.mtime_ns,
                meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
            );
        }
    }

    #[test]
    fn a_missing_root_has_no_runs_and_many_runs_are_statted_on_threads() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            list_run_manifests(&dir.path().join("nope"), &NAMES).unwrap(),
            Some(vec![])
        );
        let n = PARALLEL_FROM + 10;
        for i in 0..n {
            let run = dir.path().join(format!("r{i:05}"));
            std::fs::create_dir(&run).unwrap();
            if i % 2 == 0 {
                std::fs::write(run.join("manifest.toml"), vec![b'x'; i % 7]).unwrap();
            }
        }
        let got = sorted(dir.path());
        assert_eq!(got.len(), n);
        for (i, e) in got.iter().enumerate() {
            assert_eq!(e.rel, format!("r{i:05}/manifest.toml"));
            assert_eq!(
                e.stat.map(|s| s.size),
                (i % 2 == 0).then_some((i % 7) as u64)
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinked_run_folders_count_and_a_symlinked_manifest_is_not_regular() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::write(dir.path().join("elsewhere.toml"), b"z").unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("elsewhere.toml"),
            root.join("real/manifest.toml"),
        )
        .unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere.toml"), root.join("filelink"))
            .unwrap();
        let got = sorted(&root);
        let rels: Vec<_> = got.iter().map(|e| e.rel.as_str()).collect();
        assert_eq!(rels, ["link/manifest.toml", "real/manifest.toml"]);
        assert!(!got[1].stat.unwrap().is_regular);
    }

    #[cfg(unix)]
    #[test]
    fn a_name_that_is_not_utf8_is_left_to_the_caller() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(std::ffi::OsStr::from_bytes(b"run_\xff"))).unwrap();
        assert_eq!(list_run_manifests(dir.path(), &NAMES).unwrap(), None);
    }

    #[test]
    fn run_folders_come_sorted_with_their_files_statted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in ["b_run", "a_run"] {
            std::fs::create_dir(root.join(name)).unwrap();
            std::fs::write(root.join(name).join("manifest.toml"), name.as_bytes()).unwrap();
        }
        std::fs::write(root.join("a_run/telemetry.parquet"), b"12345").unwrap();
        std::fs::write(root.join("c_file"), b"").unwrap();
        std::fs::create_dir(root.join("flows")).unwrap();
        std::fs::create_dir(root.join(".hidden")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("a_run"), root.join("d_link")).unwrap();
        let got = scan_run_folders(root, "flows", &["manifest.toml", "telemetry.parquet"])
            .unwrap()
            .unwrap();
        let names: Vec<_> = got
            .iter()
            .map(|f| (f.entry.name.as_str(), f.entry.is_dir))
            .collect();
        #[cfg(unix)]
        assert_eq!(
            names,
            [
                ("a_run", true),
                ("b_run", true),
                ("c_file", false),
                ("d_link", true)
            ]
        );
        let sizes = |i: usize| {
            got[i]
                .files
                .iter()
                .map(|s| s.map(|s| s.size))
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(0), [Some(5), Some(5)]);
        assert_eq!(sizes(1), [Some(5), None]);
        assert_eq!(sizes(2), [None, None]);
        #[cfg(unix)]
        {
            assert!(got[3].entry.is_symlink);
            assert_eq!(
                sizes(3),
                [None, None],
                "a symlinked folder is not looked into"
            );
        }
    }
}
