//! The spool: where a recorder keeps every row between `record()` and a
//! published segment, in files, so that rows survive the death of the process.
//!
//! A recorder's spool is a folder named after its instance number, in a hidden
//! folder beside its claim (`.flightlog.spool/NNNNNNNN/` in a run folder; for
//! an object store, in a local folder). It holds:
//!
//! * `meta.json`: what a reader needs to turn words back into rows (schema,
//!   constants, file metadata, row width, the writer's pid and **boot id**).
//!   A recorder whose schema comes with its first row spools its earlier
//!   events in a spool whose metadata has no schema yet
//!   ([`SpoolMeta::events_only`]); the recorder adopts it ([`Spool::adopt`]);
//! * `lane-NNN.ring`: one memory-mapped [`SpscRing`] per recording thread.
//!   A row is in the page cache once `record()` returns: the kernel keeps it
//!   through `kill -9`, a segfault or an OOM kill of the process;
//! * `chunk-NNNNNN.cols`: rows the flusher took out of the rings and has not
//!   yet published in a segment, column by column, each with its lane and ring
//!   position, and a header counting the rows committed. The flusher copies a
//!   row out of its ring slot straight into a chunk (a mapping of the file,
//!   page cache again), commits it, and only then releases the slot; the
//!   segment is encoded from the chunk's columns in place (lent to Arrow, not
//!   copied), so a row is written once on its way to Parquet. A chunk is
//!   refilled, not removed, once its rows are published. Spools of format 1
//!   kept such rows in `journal-NNNNNN.rows` files instead; [`salvage`] reads
//!   both;
//! * `dict.log`: every string a `str` field was given, with its code, written
//!   before the first row that uses it is published;
//! * `events.log`: every event, one JSON line each, with its sequence number.
//!
//! Every segment records which positions of which lane it holds
//! ([`LANES_KEY`]), and which events ([`EVENTS_UPTO_KEY`]). Recovery
//! ([`salvage`]) takes from the chunks and rings every row beyond what the
//! segments hold, once each, and writes them as one last segment.
//!
//! Nothing here is fsynced: the spool protects against the death of the
//! process, not of the machine. After a reboot (another boot id) the spool is
//! not trusted and is discarded; power loss still loses up to the flush
//! interval.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use flightlog_ring::SpscRing;

use crate::error::{CoreError, Result};
use crate::mapped::{ColumnWords, MappedWords};

/// Footer key of a segment: `{"lane": [start, end], ...}`, the ring positions
/// whose rows the segment holds.
pub const LANES_KEY: &str = "flightlog.lanes";
/// Footer key of an events segment: events with a lower sequence number are
/// in published segments.
pub const EVENTS_UPTO_KEY: &str = "flightlog.events_upto";

/// The spool folder of a merged recording (`run/.flightlog.spool`).
pub const SPOOL_DIR_NAME: &str = ".flightlog.spool";

/// The spool's metadata file (what a reader needs, and the writer's pid and
/// boot id, which `recover` asks whether the writer is gone).
pub const SPOOL_META_NAME: &str = "meta.json";
const DICT_LOG: &str = "dict.log";
const EVENTS_LOG: &str = "events.log";
/// Format 2 keeps drained rows in chunk files; format 1 (still read) kept
/// them in journals.
pub const FORMAT: u32 = 2;
const FORMATS_READ: [u32; 2] = [1, 2];

/// A chunk file's header words: a magic word, the row width, the rows it has
/// room for, the rows committed (the rows a reader takes), then zeros. The
/// columns follow: the rows' tags ([`chunk_tag`]), then the `width` word
/// columns, each `capacity` words.
const CHUNK_HEADER_WORDS: usize = 8;
const CHUNK_MAGIC: u64 = u64::from_le_bytes(*b"FLCHUNK2");
const CHUNK_MAGIC_WORD: usize = 0;
const CHUNK_WIDTH_WORD: usize = 1;
const CHUNK_CAPACITY_WORD: usize = 2;
const CHUNK_COMMITTED_WORD: usize = 3;
/// A tag holds the ring position in its low bits and the lane above them.
const TAG_POS_BITS: u32 = 48;
/// The highest ring position a tag holds: 2^48 rows of one thread, nine
/// years at a million rows a second.
pub(crate) const MAX_CHUNK_POS: u64 = (1 << TAG_POS_BITS) - 1;

/// The tag of a chunk row: its lane and ring position in one word.
pub(crate) fn chunk_tag(lane: usize, pos: u64) -> u64 {
    debug_assert!(pos < 1 << TAG_POS_BITS && lane < 1 << (64 - TAG_POS_BITS));
    ((lane as u64) << TAG_POS_BITS) | pos
}

fn chunk_untag(tag: u64) -> (usize, u64) {
    (
        (tag >> TAG_POS_BITS) as usize,
        tag & ((1 << TAG_POS_BITS) - 1),
    )
}

/// The words of a chunk of `capacity` rows `width` words wide.
fn chunk_words(width: usize, capacity: usize) -> usize {
    CHUNK_HEADER_WORDS + (1 + width) * capacity
}

/// The memory of a pending chunk: a spool file, or anonymous memory (a
/// chunk the spool could not hold, and a salvage's rows). Column 0 holds the
/// rows' tags, column `1 + w` their word `w`.
#[derive(Debug)]
pub(crate) struct ChunkMemory {
    pub(crate) columns: ColumnWords,
    /// The spool file, if any (removed when the chunk is given up).
    pub(crate) path: Option<PathBuf>,
}

impl ChunkMemory {
    /// A chunk in anonymous memory.
    pub(crate) fn anonymous(width: usize, capacity: usize) -> Result<ChunkMemory> {
        let memory = MappedWords::anonymous(chunk_words(width, capacity))?;
        Ok(Self::laid_out(memory, width, capacity, None))
    }

    fn laid_out(
        memory: MappedWords,
        width: usize,
        capacity: usize,
        path: Option<PathBuf>,
    ) -> ChunkMemory {
        let columns = ColumnWords::new(memory, CHUNK_HEADER_WORDS, 1 + width, capacity);
        let header = columns.header();
        header[CHUNK_WIDTH_WORD].store(width as u64, Ordering::Relaxed);
        header[CHUNK_CAPACITY_WORD].store(capacity as u64, Ordering::Relaxed);
        header[CHUNK_MAGIC_WORD].store(CHUNK_MAGIC, Ordering::Release);
        ChunkMemory { columns, path }
    }

    /// Makes rows `[0, rows)` the ones a reader of the file takes: stored
    /// after the rows themselves.
    pub(crate) fn commit(&self, rows: usize) {
        self.columns.header()[CHUNK_COMMITTED_WORD].store(rows as u64, Ordering::Release);
    }

    /// Removes the spool file (its rows are published, or counted lost).
    pub(crate) fn remove_file(&self) {
        if let Some(p) = &self.path {
            let _ = fs::remove_file(p);
        }
    }
}

/// The words of a lane's ring: a mapped spool file, or (when the spool could
/// not provide one: a full disk) anonymous memory, which records as fast but
/// does not outlive the process. One type either way, so that finding the
/// words on every row is two loads, not a match.
pub type RingMemory = crate::mapped::MappedWords;

/// A lane's ring.
pub type MappedRing = SpscRing<RingMemory>;

/// What a reader needs to interpret the spool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpoolMeta {
    pub format: u32,
    pub boot_id: Option<String>,
    pub pid: u32,
    pub instance: u64,
    /// Words per row in the rings (the row layout's width).
    pub width: usize,
    pub ring_capacity: usize,
    pub schema_json: String,
    /// Constant columns: name and value as JSON.
    pub constants: Vec<(String, serde_json::Value)>,
    /// Key-value metadata of every file.
    pub file_kv: Vec<(String, String)>,
    pub run_id: Option<String>,
    /// The recording's location when the spool is in a folder other
    /// recordings' spools may share (see [`crate::recorder::spool_location`]):
    /// recovery of another location leaves it alone. None for a spool in the
    /// recording's own folder (and in spools written before it was kept).
    #[serde(default)]
    pub location: Option<String>,
}

impl SpoolMeta {
    /// True for the spool of a recorder whose schema was not known yet
    /// (its `schema_json` is empty): it holds events, never rows.
    pub fn events_only(&self) -> bool {
        self.schema_json.is_empty()
    }
}

/// This boot's identity (Linux), to tell a spool written before a reboot.
/// Read once per process ([`crate::claim::read_once`]): a process cannot
/// outlive the boot it started in.
pub fn boot_id() -> Option<String> {
    static BOOT_ID: Mutex<Option<Option<String>>> = Mutex::new(None);
    crate::claim::read_once(&BOOT_ID, || {
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_owned())
    })
}

/// The spool folder of a local layout's claim file (`<lock>.spool`).
pub fn spool_dir_for_lock(lock: &Path) -> PathBuf {
    let mut name = lock.file_name().unwrap_or_default().to_os_string();
    let stem = name.to_string_lossy().trim_end_matches(".lock").to_owned();
    name = format!("{stem}.spool").into();
    lock.with_file_name(name)
}

fn io(what: &'static str, path: &Path, e: std::io::Error) -> CoreError {
    CoreError::io(what, path, e)
}

/// A live recorder's spool (the writing side).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    width: usize,
    capacity: usize,
    dict: Mutex<Option<File>>,
    events: Mutex<Option<File>>,
    /// Spool files that could not be made or appended to (a ring or chunk
    /// kept in memory instead, a lost log line): rows since were not
    /// protected against a crash.
    pub errors: AtomicU64,
}

impl Spool {
    /// Creates this recorder's spool folder in `base` (named after
    /// `meta.instance`) and writes `meta.json`. Fails if `base` holds the
    /// spool of a recording that did not finish (see [`check_no_unfinished`]).
    pub fn create(base: &Path, meta: &SpoolMeta) -> Result<Spool> {
        check_no_unfinished(base, meta.location.as_deref())?;
        let dir = base.join(format!("{:08}", meta.instance));
        fs::create_dir_all(&dir).map_err(|e| io("create spool folder", &dir, e))?;
        let text = serde_json::to_string(meta)
            .map_err(|e| CoreError::write(format!("spool metadata: {e}")))?;
        let path = dir.join(SPOOL_META_NAME);
        fs::write(&path, text).map_err(|e| io("write", &path, e))?;
        Ok(Spool {
            dir,
            width: meta.width,
            capacity: meta.ring_capacity,
            dict: Mutex::new(None),
            events: Mutex::new(None),
            errors: AtomicU64::new(0),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The ring of lane `lane`: a mapped file in the spool, or, if the spool
    /// cannot hold it (a full disk), memory (counted in [`Spool::errors`]:
    /// that lane's rows do not survive a crash until they are in a segment).
    pub fn map_lane(&self, lane: usize) -> Result<MappedRing> {
        let words = SpscRing::<RingMemory>::words_needed(self.capacity, self.width);
        let path = self.dir.join(format!("lane-{lane:03}.ring"));
        let memory = match crate::mapped::MappedWords::create(&path, words) {
            Ok(m) => m,
            Err(_) => {
                let _ = fs::remove_file(&path);
                self.errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                crate::mapped::MappedWords::anonymous(words)?
            }
        };
        Ok(SpscRing::new(memory, self.capacity, self.width))
    }

    /// Chunk number `index` for `capacity` drained rows: a spool file, or,
    /// if the spool cannot hold it (a full disk), memory (counted in
    /// [`Spool::errors`]: its rows do not survive a crash until they are in a
    /// segment).
    pub(crate) fn map_chunk(&self, index: u64, capacity: usize) -> Result<ChunkMemory> {
        let path = self.dir.join(format!("chunk-{index:06}.cols"));
        match MappedWords::create(&path, chunk_words(self.width, capacity)) {
            Ok(m) => {
                // A recording past its first chunk fills them all: their
                // pages are faulted in at once. The first is left to fault
                // in page by page, as a short run writes only a few.
                if index > 0 {
                    m.populate();
                }
                Ok(ChunkMemory::laid_out(m, self.width, capacity, Some(path)))
            }
            Err(_) => {
                let _ = fs::remove_file(&path);
                self.errors.fetch_add(1, Ordering::Relaxed);
                ChunkMemory::anonymous(self.width, capacity)
            }
        }
    }

    /// Records that `field`'s string `value` has code `code`.
    pub fn log_string(&self, field: usize, code: i32, value: &str) -> Result<()> {
        let mut rec = Vec::with_capacity(12 + value.len());
        rec.extend_from_slice(&(field as u32).to_le_bytes());
        rec.extend_from_slice(&(code as u32).to_le_bytes());
        rec.extend_from_slice(&(value.len() as u32).to_le_bytes());
        rec.extend_from_slice(value.as_bytes());
        self.append(&self.dict, DICT_LOG, &rec)
    }

    /// Records event number `seq`.
    pub fn log_event(&self, seq: u64, event: &SpooledEvent) -> Result<()> {
        self.append(&self.events, EVENTS_LOG, &event_line(seq, event)?)
    }

    /// Makes the events-only spool of a recorder whose schema was not known
    /// yet (see [`SpoolMeta::events_only`]) the spool of the recorder that now
    /// has one: `events.log` is rewritten with `events` (their times on that
    /// recorder's clock), then `meta.json` is replaced by `meta`. Each file is
    /// replaced by a rename, so a kill leaves the old or the new one whole:
    /// before the second rename the spool still reads as events only, which
    /// it is (no row can be recorded before this returns).
    pub fn adopt(self, meta: &SpoolMeta, events: &[(u64, SpooledEvent)]) -> Result<Spool> {
        let mut log = Vec::new();
        for (seq, event) in events {
            log.extend(event_line(*seq, event)?);
        }
        *lock(&self.events) = None;
        replace(&self.dir.join(EVENTS_LOG), &log)?;
        let text = serde_json::to_string(meta)
            .map_err(|e| CoreError::write(format!("spool metadata: {e}")))?;
        replace(&self.dir.join(SPOOL_META_NAME), text.as_bytes())?;
        Ok(Spool {
            dir: self.dir,
            width: meta.width,
            capacity: meta.ring_capacity,
            dict: self.dict,
            events: Mutex::new(None),
            errors: self.errors,
        })
    }

    fn append(&self, slot: &Mutex<Option<File>>, name: &str, bytes: &[u8]) -> Result<()> {
        let mut f = lock(slot);
        let path = self.dir.join(name);
        if f.is_none() {
            *f = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| io("open", &path, e))?,
            );
        }
        f.as_mut()
            .expect("opened above")
            .write_all(bytes)
            .map_err(|e| io("append to", &path, e))
    }

    /// Closes the spool's files (the recorder is closed): appends stop, and
    /// the files are no longer held open.
    pub fn close_files(&self) {
        *lock(&self.dict) = None;
        *lock(&self.events) = None;
    }

    /// Removes the spool (every row is in published files), and the hidden
    /// folder if it is then empty.
    pub fn remove(&self) {
        let _ = fs::remove_dir_all(&self.dir);
        if let Some(base) = self.dir.parent() {
            let _ = fs::remove_dir(base);
        }
    }
}

/// An f64 in JSON whatever its value: a number when finite, else `"NaN"`,
/// `"inf"` or `"-inf"` (serde_json would write `null`, which reads back as no
/// number at all). `null`, from spools written before, reads as NaN.
mod any_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| serde::de::Error::custom("not an f64")),
            serde_json::Value::Null => Ok(f64::NAN),
            serde_json::Value::String(t) => match t.as_str() {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                _ => Err(serde::de::Error::custom(format!("not an f64: {t:?}"))),
            },
            other => Err(serde::de::Error::custom(format!("not an f64: {other}"))),
        }
    }
}

/// One line of `events.log`: `[seq, event]` as JSON.
fn event_line(seq: u64, event: &SpooledEvent) -> Result<Vec<u8>> {
    let mut line = serde_json::to_vec(&(seq, event))
        .map_err(|e| CoreError::write(format!("event to JSON: {e}")))?;
    line.push(b'\n');
    Ok(line)
}

/// Replaces `path` by `bytes` through a temp file and a rename (no fsync: the
/// spool outlives the process, not the machine).
fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes).map_err(|e| io("write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io("rename", &tmp, e))
}

/// An event as the spool keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpooledEvent {
    /// Any f64: JSON has no NaN or infinity, so those are kept as text.
    #[serde(with = "any_f64")]
    pub t_wall_ms: f64,
    pub iter: Option<i64>,
    pub name: String,
    pub payload: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn journal_index(name: &str) -> Option<u64> {
    name.strip_prefix("journal-")?
        .strip_suffix(".rows")?
        .parse()
        .ok()
}

fn chunk_index(name: &str) -> Option<u64> {
    name.strip_prefix("chunk-")?
        .strip_suffix(".cols")?
        .parse()
        .ok()
}

fn lane_index(name: &str) -> Option<usize> {
    name.strip_prefix("lane-")?
        .strip_suffix(".ring")?
        .parse()
        .ok()
}

/// Fails if `base` holds a recorder's spool with rows or events: that
/// recording did not finish, and its rows belong to it (`recover` salvages
/// them). Spools without any (a live recorder that has not recorded yet, or
/// one that died before it did), and spools of recordings at another
/// location than `location` whose folder shares `base`'s name (see
/// [`belongs_elsewhere`]), are left alone.
pub fn check_no_unfinished(base: &Path, location: Option<&str>) -> Result<()> {
    for dir in spool_dirs(base) {
        if has_rows(&dir) && !belongs_elsewhere(&dir, location) {
            return Err(CoreError::Exists(format!(
                "{} holds the spool of a recording that did not finish: \
                 run recover on the folder (it salvages those rows), or use a new folder",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// The recorders' spool folders in `base`.
pub fn spool_dirs(base: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(base)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// True when a spool folder may hold rows or events (a journal, a ring with
/// published rows, an event).
pub fn has_rows(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                journal_index(&n).is_some()
                    || chunk_index(&n).is_some()
                    || lane_index(&n).is_some()
                    || n == EVENTS_LOG
            })
        })
        .unwrap_or(false)
}

/// True when the spool in `dir` is that of a recording at another location
/// than `location` (its folder's name is shared, see
/// [`crate::recorder::spool_location`]): not the caller's to salvage or
/// remove. A spool without a readable location (none kept, or no metadata
/// yet) is not known to be another's.
pub fn belongs_elsewhere(dir: &Path, location: Option<&str>) -> bool {
    let Some(mine) = location else {
        return false;
    };
    fs::read_to_string(dir.join(SPOOL_META_NAME))
        .ok()
        .and_then(|text| serde_json::from_str::<SpoolMeta>(&text).ok())
        .and_then(|meta| meta.location)
        .is_some_and(|theirs| theirs != mine)
}

/// The rows and events a dead recorder's spool holds beyond its segments.
#[derive(Debug, Default)]
pub struct Salvaged {
    pub meta: Option<SpoolMeta>,
    /// Rows in order (lane by lane, each lane in order), `width` words each.
    pub rows: Vec<Vec<u64>>,
    /// Positions covered, per lane (for the salvage segment's footer).
    pub lanes: BTreeMap<usize, (u64, u64)>,
    /// `str` field strings by code, per field index.
    pub strings: BTreeMap<usize, Vec<Option<String>>>,
    pub events: Vec<SpooledEvent>,
    pub events_upto: u64,
    /// Slots whose stamp did not match (not trusted, not salvaged).
    pub torn_rows: u64,
    /// Why the spool was not used, if it was not (another boot, unreadable).
    pub discarded: Option<String>,
}

/// Reads a dead recorder's spool: every row beyond `covered` (per lane: the
/// end of the positions published segments hold) and every event from
/// `events_from` on. The spool is not changed.
pub fn salvage(dir: &Path, covered: &BTreeMap<usize, u64>, events_from: u64) -> Result<Salvaged> {
    let mut out = Salvaged::default();
    let meta_path = dir.join(SPOOL_META_NAME);
    let meta: SpoolMeta = match fs::read_to_string(&meta_path) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(m) => m,
            Err(e) => {
                out.discarded = Some(format!("{} is not readable: {e}", meta_path.display()));
                return Ok(out);
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Killed before the metadata was written: nothing was recorded.
            return Ok(out);
        }
        Err(e) => return Err(io("read", &meta_path, e)),
    };
    if !FORMATS_READ.contains(&meta.format) {
        out.discarded = Some(format!(
            "spool format {} is not one this version reads ({FORMATS_READ:?})",
            meta.format
        ));
        return Ok(out);
    }
    if meta.boot_id.is_some() && meta.boot_id != boot_id() {
        out.discarded = Some(
            "the spool was written before the machine restarted (another boot id): \
             its page cache did not survive, so its contents are not trusted"
                .into(),
        );
        return Ok(out);
    }
    let width = meta.width;
    let mut rows: BTreeMap<(usize, u64), Vec<u64>> = BTreeMap::new();
    let from = |lane: usize| covered.get(&lane).copied().unwrap_or(0);

    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(|e| io("list", dir, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // The rings before the journals and chunks: a row leaves its ring slot
    // only after it is committed in a chunk (or journal), so reading in this
    // order finds every row once even if its writer is still draining (a
    // recorder leaked in-process, as tests simulate a crash): a row released
    // after the ring was read is in the chunk read next. The other order
    // could miss a row drained in between.
    for name in &names {
        let Some(lane) = lane_index(name) else {
            continue;
        };
        let path = dir.join(name);
        // A thread's first row creates its lane's file, then sizes it
        // (`MappedWords::create`): a kill in between leaves it empty, and
        // no row was ever published in it.
        if fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            continue;
        }
        let words = SpscRing::<RingMemory>::words_needed(meta.ring_capacity, width);
        let mapped = crate::mapped::MappedWords::open(&path, words)?;
        let ring = SpscRing::new(mapped, meta.ring_capacity, width);
        let (_, torn) = ring.salvage(from(lane), |pos, row| {
            rows.insert((lane, pos), row.to_vec());
        });
        out.torn_rows += torn;
    }
    for name in &names {
        if journal_index(name).is_none() {
            continue;
        }
        let path = dir.join(name);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| io("read", &path, e))?;
        let record = (2 + width) * 8;
        // A record cut short by the kill is not a row.
        for chunk in bytes.chunks_exact(record) {
            let words: Vec<u64> = chunk
                .chunks_exact(8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect();
            let (lane, pos) = (words[0] as usize, words[1]);
            if pos >= from(lane) {
                rows.insert((lane, pos), words[2..].to_vec());
            }
        }
    }
    for name in &names {
        if chunk_index(name).is_some() {
            out.torn_rows += salvage_chunk(&dir.join(name), width, &mut |lane, pos, row| {
                if pos >= from(lane) {
                    rows.insert((lane, pos), row);
                }
            })?;
        }
    }
    for ((lane, pos), row) in rows {
        let e = out.lanes.entry(lane).or_insert((pos, pos + 1));
        e.0 = e.0.min(pos);
        e.1 = e.1.max(pos + 1);
        out.rows.push(row);
    }

    // Strings: (field u32, code u32, len u32, bytes)*, possibly cut short.
    let dict_path = dir.join(DICT_LOG);
    if let Ok(bytes) = fs::read(&dict_path) {
        let mut i = 0;
        while i + 12 <= bytes.len() {
            let word = |k: usize| {
                u32::from_le_bytes(bytes[i + k..i + k + 4].try_into().expect("4 bytes")) as usize
            };
            let (field, code, len) = (word(0), word(4), word(8));
            if i + 12 + len > bytes.len() {
                break;
            }
            let s = String::from_utf8_lossy(&bytes[i + 12..i + 12 + len]).into_owned();
            let values = out.strings.entry(field).or_default();
            if values.len() <= code {
                values.resize(code + 1, None);
            }
            values[code] = Some(s);
            i += 12 + len;
        }
    }

    let events_path = dir.join(EVENTS_LOG);
    if let Ok(text) = fs::read_to_string(&events_path) {
        out.events_upto = events_from;
        for line in text.lines() {
            // The last line may be cut short by the kill.
            if let Ok((seq, event)) = serde_json::from_str::<(u64, SpooledEvent)>(line) {
                if seq >= events_from {
                    out.events.push(event);
                    out.events_upto = out.events_upto.max(seq + 1);
                }
            }
        }
    }
    out.meta = Some(meta);
    Ok(out)
}

/// Hands each committed row of the chunk file at `path` to `row` (lane,
/// position, words), and returns how many rows it could not trust. A file
/// killed before its header was written (no magic yet) or before it was sized
/// holds no committed row; one whose header does not fit this spool (another
/// width, or more rows than the file holds) is not read, and its committed
/// rows count as untrusted: the other files are salvaged all the same.
fn salvage_chunk(
    path: &Path,
    width: usize,
    row: &mut dyn FnMut(usize, u64, Vec<u64>),
) -> Result<u64> {
    let len = fs::metadata(path).map_err(|e| io("stat", path, e))?.len() as usize;
    if len < CHUNK_HEADER_WORDS * 8 {
        return Ok(0);
    }
    let words = MappedWords::open(path, len / 8)?;
    let header = |k: usize| words[k].load(Ordering::Acquire);
    if header(CHUNK_MAGIC_WORD) != CHUNK_MAGIC {
        return Ok(0);
    }
    let capacity = header(CHUNK_CAPACITY_WORD) as usize;
    let committed = header(CHUNK_COMMITTED_WORD);
    let fits = (1 + width)
        .checked_mul(capacity)
        .and_then(|w| w.checked_add(CHUNK_HEADER_WORDS))
        .is_some_and(|w| w <= len / 8);
    if header(CHUNK_WIDTH_WORD) as usize != width || !fits {
        return Ok(committed.min((len / 8) as u64));
    }
    let committed = (committed as usize).min(capacity);
    let columns = ColumnWords::new(words, CHUNK_HEADER_WORDS, 1 + width, capacity);
    for k in 0..committed {
        let (lane, pos) = chunk_untag(columns.get(0, k));
        row(
            lane,
            pos,
            (0..width).map(|w| columns.get(1 + w, k)).collect(),
        );
    }
    Ok(0)
}

/// Parses a segment footer's [`LANES_KEY`] value.
pub fn parse_lanes(value: &str) -> BTreeMap<usize, (u64, u64)> {
    serde_json::from_str::<BTreeMap<String, (u64, u64)>>(value)
        .map(|m| {
            m.into_iter()
                .filter_map(|(k, v)| k.parse().ok().map(|k| (k, v)))
                .collect()
        })
        .unwrap_or_default()
}

/// Formats positions per lane for [`LANES_KEY`].
pub fn format_lanes(lanes: &BTreeMap<usize, (u64, u64)>) -> String {
    let m: BTreeMap<String, (u64, u64)> = lanes.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    serde_json::to_string(&m).unwrap_or_default()
}

/// Shared handle.
pub type SpoolRef = Arc<Spool>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn meta(width: usize, cap: usize) -> SpoolMeta {
        SpoolMeta {
            format: FORMAT,
            boot_id: boot_id(),
            pid: std::process::id(),
            instance: 7,
            width,
            ring_capacity: cap,
            schema_json: "{}".into(),
            constants: vec![],
            file_kv: vec![],
            run_id: None,
            location: None,
        }
    }

    #[test]
    fn rows_in_rings_and_chunks_are_salvaged_once_beyond_what_is_covered() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join(".flightlog.spool");
        let spool = Spool::create(&base, &meta(2, 4)).unwrap();
        let sp = spool.dir().to_path_buf();
        let ring = spool.map_lane(0).unwrap();
        let mut c = ring.cursor();
        for i in 0..4u64 {
            ring.push(&mut c, &[i, 10 * i]).unwrap();
        }
        // The flusher took rows 0..3 out into a chunk, committed them and
        // released their slots; a fourth row written but not committed is
        // not taken from the chunk (its ring slot still holds it).
        let chunk = spool.map_chunk(0, 8).unwrap();
        for pos in 0..4u64 {
            let k = pos as usize;
            chunk.columns.writable(0, k)[0].store(chunk_tag(0, pos), Ordering::Relaxed);
            chunk.columns.writable(1, k)[0].store(pos, Ordering::Relaxed);
            chunk.columns.writable(2, k)[0].store(10 * pos, Ordering::Relaxed);
        }
        chunk.commit(3);
        ring.release(3);
        // An empty chunk file (killed before it was sized) holds no row.
        fs::write(sp.join("chunk-000001.cols"), b"").unwrap();
        for i in 4..6u64 {
            ring.push(&mut c, &[i, 10 * i]).unwrap();
        }
        spool.log_string(1, 0, "GREEN").unwrap();
        spool
            .log_event(
                0,
                &SpooledEvent {
                    t_wall_ms: 1.0,
                    iter: Some(2),
                    name: "E".into(),
                    payload: None,
                },
            )
            .unwrap();
        drop(ring);
        // Segments hold lane 0 up to position 1.
        let covered = BTreeMap::from([(0usize, 1u64)]);
        let s = salvage(&sp, &covered, 0).unwrap();
        assert!(s.discarded.is_none());
        let firsts: Vec<u64> = s.rows.iter().map(|r| r[0]).collect();
        assert_eq!(firsts, vec![1, 2, 3, 4, 5]);
        assert_eq!(s.lanes[&0], (1, 6));
        assert_eq!(s.strings[&1], vec![Some("GREEN".to_string())]);
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events_upto, 1);
        assert_eq!(spool.errors.load(Ordering::Relaxed), 0);
    }

    /// A chunk's rows are taken by their tags (lane and position), whichever
    /// lane they came from, and a chunk of another row width is refused.
    #[test]
    fn chunk_rows_carry_their_lane_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::create(&dir.path().join("s"), &meta(1, 4)).unwrap();
        let sp = spool.dir().to_path_buf();
        let chunk = spool.map_chunk(3, 4).unwrap();
        for (k, (lane, pos)) in [(7usize, 40u64), (2, 5), (7, 41)].into_iter().enumerate() {
            chunk.columns.writable(0, k)[0].store(chunk_tag(lane, pos), Ordering::Relaxed);
            chunk.columns.writable(1, k)[0].store(pos * 100, Ordering::Relaxed);
        }
        chunk.commit(3);
        let covered = BTreeMap::from([(7usize, 41u64)]);
        let s = salvage(&sp, &covered, 0).unwrap();
        assert_eq!(s.rows, vec![vec![500], vec![4100]]);
        assert_eq!(s.lanes, BTreeMap::from([(2, (5, 6)), (7, (41, 42))]));
        assert_eq!(
            chunk_untag(chunk_tag(255, (1 << 48) - 1)),
            (255, (1 << 48) - 1)
        );
        drop(chunk);
        let wide = ChunkMemory::laid_out(
            MappedWords::create(&sp.join("chunk-000004.cols"), chunk_words(2, 4)).unwrap(),
            2,
            4,
            None,
        );
        wide.commit(1);
        // Not read, its committed row untrusted; the other chunk is salvaged.
        let s = salvage(&sp, &covered, 0).unwrap();
        assert_eq!(s.rows, vec![vec![500], vec![4100]]);
        assert_eq!(s.torn_rows, 1);
    }

    /// A format-1 spool (rows drained into journals) is still salvaged.
    #[test]
    fn format_1_journals_are_still_salvaged() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = meta(2, 4);
        m.format = 1;
        let spool = Spool::create(&dir.path().join("s"), &m).unwrap();
        let sp = spool.dir().to_path_buf();
        let mut bytes = Vec::new();
        for pos in 0..3u64 {
            for w in [0, pos, pos, 10 * pos] {
                bytes.extend_from_slice(&w.to_le_bytes());
            }
        }
        // A record cut short by the kill is not a row.
        bytes.extend_from_slice(&[1, 2, 3]);
        fs::write(sp.join("journal-000000.rows"), &bytes).unwrap();
        let s = salvage(&sp, &BTreeMap::from([(0usize, 1u64)]), 0).unwrap();
        assert!(s.discarded.is_none());
        assert_eq!(s.rows, vec![vec![1, 10], vec![2, 20]]);
    }

    /// Event times that JSON cannot write as numbers come back as they were
    /// (a `null` of an older spool reads as NaN).
    #[test]
    fn non_finite_event_times_survive_the_events_log() {
        for t in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -2.5] {
            let e = SpooledEvent {
                t_wall_ms: t,
                iter: None,
                name: "E".into(),
                payload: None,
            };
            let line = event_line(3, &e).unwrap();
            let (seq, back): (u64, SpooledEvent) = serde_json::from_slice(&line).unwrap();
            assert_eq!(seq, 3);
            assert!(back.t_wall_ms == t || (t.is_nan() && back.t_wall_ms.is_nan()));
        }
        let old: (u64, SpooledEvent) =
            serde_json::from_str(r#"[0,{"t_wall_ms":null,"iter":null,"name":"E","payload":null}]"#)
                .unwrap();
        assert!(old.1.t_wall_ms.is_nan());
    }

    /// A kill between the creation of a lane's file and its sizing leaves it
    /// empty: it holds no row, and the other lanes are salvaged.
    #[test]
    fn an_empty_lane_file_holds_no_row() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::create(&dir.path().join("s.spool"), &meta(1, 4)).unwrap();
        let sp = spool.dir().to_path_buf();
        let ring = spool.map_lane(0).unwrap();
        let mut c = ring.cursor();
        ring.push(&mut c, &[7]).unwrap();
        File::create(sp.join("lane-001.ring")).unwrap();
        let s = salvage(&sp, &BTreeMap::new(), 0).unwrap();
        assert_eq!(s.rows, vec![vec![7]]);
        assert_eq!(s.lanes, BTreeMap::from([(0, (0, 1))]));
        assert_eq!(s.torn_rows, 0);
    }

    /// A spool keeps its recording's location when its folder may be shared:
    /// another location's recover and recorder leave it alone. A spool
    /// written before the location was kept (no such key) is nobody else's.
    #[test]
    fn a_spool_of_another_location_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("shared.spool");
        let mut m = meta(1, 2);
        m.location = Some("s3://b/a.b/run/segments/telemetry-".into());
        let spool = Spool::create(&base, &m).unwrap();
        let ring = spool.map_lane(0).unwrap();
        ring.push(&mut ring.cursor(), &[1]).unwrap();
        let sp = spool.dir().to_path_buf();
        assert!(belongs_elsewhere(
            &sp,
            Some("s3://b/a_b/run/segments/telemetry-")
        ));
        assert!(!belongs_elsewhere(&sp, m.location.as_deref()));
        assert!(!belongs_elsewhere(&sp, None));
        check_no_unfinished(&base, Some("s3://b/a_b/run/segments/telemetry-")).unwrap();
        assert!(check_no_unfinished(&base, m.location.as_deref()).is_err());
        // The metadata of an older version, without the key.
        let mut old: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(sp.join(SPOOL_META_NAME)).unwrap()).unwrap();
        old.as_object_mut().unwrap().remove("location");
        fs::write(sp.join(SPOOL_META_NAME), old.to_string()).unwrap();
        assert!(!belongs_elsewhere(
            &sp,
            Some("s3://b/a_b/run/segments/telemetry-")
        ));
        assert_eq!(
            salvage(&sp, &BTreeMap::new(), 0).unwrap().rows,
            vec![vec![1]]
        );
    }

    #[test]
    fn a_spool_from_another_boot_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = meta(1, 2);
        m.boot_id = Some("not-this-boot".into());
        let spool = Spool::create(&dir.path().join("s.spool"), &m).unwrap();
        let sp = spool.dir().to_path_buf();
        let ring = spool.map_lane(0).unwrap();
        let mut c = ring.cursor();
        ring.push(&mut c, &[1]).unwrap();
        let s = salvage(&sp, &BTreeMap::new(), 0).unwrap();
        assert!(s.rows.is_empty());
        assert!(s.discarded.unwrap().contains("restarted"));
    }

    #[test]
    fn the_spool_folder_is_named_after_the_lock() {
        assert_eq!(
            spool_dir_for_lock(Path::new("/r/.flightlog.lock")),
            PathBuf::from("/r/.flightlog.spool")
        );
        assert_eq!(
            spool_dir_for_lock(Path::new("/p/.part-a-flightlog.lock")),
            PathBuf::from("/p/.part-a-flightlog.spool")
        );
    }
}
