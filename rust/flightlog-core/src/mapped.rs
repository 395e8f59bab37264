//! A file mapped into memory as `AtomicU64` words: the backing of the spool's
//! per-thread rings and of the flusher's pending chunks ([`crate::spool`]).
//!
//! This is the core's only `unsafe`: mapping a file (`memmap2`), viewing the
//! mapping as atomics, and lending columns of it to Arrow as buffers
//! ([`ColumnWords::lend`]). The arguments are below; everything else that
//! reads or writes the words goes through `AtomicU64`'s safe methods.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::ops::Deref;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_buffer::Buffer;

use memmap2::MmapMut;

use crate::error::{CoreError, Result};

/// The most bytes [`MappedWords::populate_words`] faults in with one call.
const POPULATE_PIECE_BYTES: usize = 128 << 10;

/// `n` words of a file, shared with the page cache (`MAP_SHARED`), or of
/// anonymous memory ([`MappedWords::anonymous`]: a ring the spool cannot hold).
/// `repr(C)`: the mapping's address and the word count first, what a row reads.
#[derive(Debug)]
#[repr(C)]
pub struct MappedWords {
    map: MmapMut,
    words: usize,
}

impl MappedWords {
    /// Creates (or truncates) `path` to `words` zero words, allocates its
    /// blocks, and maps it.
    ///
    /// The allocation matters: a store to a page of a sparse file that the
    /// filesystem cannot back (a full disk) is not an error a program can
    /// handle but a `SIGBUS` that kills it. With the blocks allocated up front
    /// a full disk fails here, as an error, and never later.
    pub fn create(path: &Path, words: usize) -> Result<MappedWords> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| CoreError::io("create", path, e))?;
        file.set_len((words * 8) as u64)
            .map_err(|e| CoreError::io("size", path, e))?;
        allocate(&file, path, words * 8)?;
        Self::map(&file, path, words)
    }

    /// Maps an existing file of at least `words` words (recovery).
    pub fn open(path: &Path, words: usize) -> Result<MappedWords> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| CoreError::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| CoreError::io("stat", path, e))?
            .len();
        if len < (words * 8) as u64 {
            return Err(CoreError::write(format!(
                "{} holds {len} bytes, a ring needs {}: not a spool ring of this recording",
                path.display(),
                words * 8
            )));
        }
        Self::map(&file, path, words)
    }

    /// Faults every page in, writable (`MADV_POPULATE_WRITE`): for memory
    /// about to be written through from start to end, a page fault each
    /// (with the zero-fill of a new page of the file) costs more than the
    /// pages themselves. Advisory: a kernel without it (before Linux 5.14)
    /// leaves the pages to be faulted in one by one.
    ///
    /// The mapping's `MADV_RANDOM` (see [`MappedWords::create`]) is lifted
    /// first: memory written through needs no protection from readahead, and
    /// with readahead the kernel prepares the file's pages in batches. On
    /// ext4 that made populating a 1.5 MiB chunk about a quarter cheaper
    /// (2.5 against 3.3 µs a page on the CI VM class, benches/RESULTS.md).
    pub fn populate(&self) {
        #[cfg(target_os = "linux")]
        let _ = self.map.advise(memmap2::Advice::Normal);
        self.populate_words(0..self.words);
    }

    /// [`MappedWords::populate`] for words `words` only (clipped to the
    /// mapping), leaving the mapping's advice as it is: the pages a producer
    /// is about to write for the first time, faulted in by another thread
    /// ahead of it (see the flusher). Faulting in a page already mapped
    /// writable does nothing, and a concurrent write to the same page is
    /// safe: the kernel writes no data, it only maps the page.
    ///
    /// In pieces of [`POPULATE_PIECE_BYTES`]: the kernel holds the process's
    /// memory-map lock (for reading) while it faults a range in, and a
    /// thread that maps or unmaps memory meanwhile (numpy allocating a large
    /// array, say) waits for it; a piece takes about a tenth of a
    /// millisecond.
    pub fn populate_words(&self, words: std::ops::Range<usize>) {
        let end = words.end.min(self.words);
        let mut start = words.start;
        while start < end {
            let piece_end = end.min(start + POPULATE_PIECE_BYTES / 8);
            #[cfg(target_os = "linux")]
            let _ = self.map.advise_range(
                memmap2::Advice::PopulateWrite,
                start * 8,
                (piece_end - start) * 8,
            );
            start = piece_end;
        }
    }

    /// `words` zero words of anonymous memory (no file): a ring that records
    /// as fast as a mapped one but dies with the process.
    pub fn anonymous(words: usize) -> Result<MappedWords> {
        let map = MmapMut::map_anon(words * 8).map_err(|e| {
            CoreError::write(format!(
                "could not map {} bytes of memory for a ring: {e}",
                words * 8
            ))
        })?;
        Ok(MappedWords { map, words })
    }

    fn map(file: &File, path: &Path, words: usize) -> Result<MappedWords> {
        // SAFETY: memmap2's contract is that the file is not truncated or
        // modified outside this mapping while it exists (that would be
        // undefined behaviour for a `&[u8]`). The file is the recorder's own
        // ring in its hidden spool folder, created here and held under the
        // folder's one-writer claim; recovery maps it only after taking that
        // claim (its writer is dead). We never hand out `&[u8]`/`&mut [u8]`
        // of the mapping: every access is an atomic load or store through
        // `Deref` below, so even a concurrent writer could not make a plain
        // read observe a torn or changing value.
        let map = unsafe { MmapMut::map_mut(file) }.map_err(|e| CoreError::io("map", path, e))?;
        assert!(map.len() >= words * 8);
        // No readahead: a ring's pages are allocated but unwritten, so the kernel
        // would zero-fill (and later evict) a large folio around each first touch.
        // A short run touches a few pages of its megabytes; a long one faults each
        // page in once either way. Advisory: a refusal changes nothing else.
        let _ = map.advise(memmap2::Advice::Random);
        Ok(MappedWords { map, words })
    }
}

impl MappedWords {
    /// Lets go of the file while keeping the memory: the same addresses are
    /// mapped again to fresh anonymous memory. A closed recorder's rings may
    /// still be referenced (by a thread's registration, until that thread
    /// records again or ends) but are never written again (an event refused
    /// by the closing recorder may still read one: zeros); holding the
    /// file for them would keep its filesystem busy (it could not be made
    /// read-only or unmounted) and its blocks allocated after the spool was
    /// removed. False if the system refused (the file then stays mapped).
    pub fn release_file(&self) -> bool {
        #[cfg(unix)]
        {
            let len = self.map.len();
            // SAFETY: MAP_FIXED replaces exactly the pages of our own mapping
            // (`self.map`: its address and length) with anonymous read-write
            // pages, atomically: the range stays mapped, so every reference
            // into it stays valid; only its contents become zeros. No other
            // mapping is touched. `MmapMut`'s drop later unmaps the range,
            // which is as valid for anonymous pages as for file pages.
            let p = unsafe {
                libc::mmap(
                    self.map.as_ptr() as *mut libc::c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            p != libc::MAP_FAILED
        }
        #[cfg(not(unix))]
        {
            false
        }
    }
}

/// Allocates the blocks of `file`'s first `len` bytes (see [`MappedWords::create`]).
#[cfg(target_os = "linux")]
fn allocate(file: &File, path: &Path, len: usize) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fallocate takes a file descriptor we own (open for the
    // duration of the call) and two integers; it touches no memory of ours.
    let err = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    if err != 0 {
        return Err(CoreError::io(
            "allocate",
            path,
            std::io::Error::from_raw_os_error(err),
        ));
    }
    Ok(())
}

/// Elsewhere the file stays sparse: a full disk while recording can then end
/// the process with `SIGBUS` (documented in docs/PLATFORMS.md).
#[cfg(not(target_os = "linux"))]
fn allocate(_file: &File, _path: &Path, _len: usize) -> Result<()> {
    Ok(())
}

impl Deref for MappedWords {
    type Target = [AtomicU64];

    #[inline(always)]
    fn deref(&self) -> &[AtomicU64] {
        let ptr = self.map.as_ptr();
        // SAFETY: a mapping starts on a page boundary, so `ptr` is aligned for
        // `AtomicU64` (align 8); `words * 8` bytes are mapped (checked in
        // `map`) and stay mapped while `self` lives, which bounds the returned
        // lifetime. `AtomicU64` has the size and bit validity of `u64`, and
        // every bit pattern is a valid `u64`. Shared `&AtomicU64`s may be
        // written through (interior mutability), which is why the mapping is
        // never also exposed as a byte slice.
        // `from_raw_parts` already requires a non-null pointer (true of every
        // mapping memmap2 hands out: a failed `mmap` is an error, an empty
        // request still maps a page), so the hint adds no requirement. It
        // tells the compiler, which otherwise tests the pointer of every slot
        // a row reserves (`Option<Reserved>`'s null niche).
        debug_assert_eq!(ptr as usize % std::mem::align_of::<AtomicU64>(), 0);
        unsafe {
            std::hint::assert_unchecked(!ptr.is_null());
            std::slice::from_raw_parts(ptr.cast::<AtomicU64>(), self.words)
        }
    }
}

/// A mapping laid out as a header of `first` words, then `columns` columns of
/// `rows` words each, filled row by row from row 0, whose filled rows can be
/// lent to Arrow as buffers over the mapping itself (no copy).
///
/// Rows lent are frozen: no slice handed out for writing reaches below the
/// highest row lent ([`ColumnWords::writable`]), until [`ColumnWords::reset`]
/// finds that no buffer is left. That is the argument for the one `unsafe` of
/// [`ColumnWords::lend`]: Arrow reads the buffer's bytes as plain memory, so
/// nothing may store to them while it lives, and nothing here can.
#[derive(Debug)]
pub(crate) struct ColumnWords {
    /// Shared only with the buffers lent (each holds a clone): the strong
    /// count tells whether any is left.
    memory: Arc<MappedWords>,
    first: usize,
    columns: usize,
    rows: usize,
    /// Rows `[0, lent)` of every column may be in a lent buffer.
    lent: usize,
}

impl ColumnWords {
    /// `memory` viewed as a header of `first` words and `columns` columns of
    /// `rows` words (it must hold them all).
    pub(crate) fn new(
        memory: MappedWords,
        first: usize,
        columns: usize,
        rows: usize,
    ) -> ColumnWords {
        assert!(
            first + columns * rows <= memory.words,
            "{} words cannot hold {first} + {columns} x {rows}",
            memory.words
        );
        ColumnWords {
            memory: Arc::new(memory),
            first,
            columns,
            rows,
            lent: 0,
        }
    }

    /// Rows per column.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// The header words (never lent).
    pub(crate) fn header(&self) -> &[AtomicU64] {
        &self.memory[..self.first]
    }

    /// Column `column` from row `from` on, for writing. Panics below the rows
    /// lent: those may be in an Arrow buffer.
    pub(crate) fn writable(&self, column: usize, from: usize) -> &[AtomicU64] {
        assert!(
            from >= self.lent,
            "row {from} of a column is lent (rows below {} are)",
            self.lent
        );
        &self.column_words(column)[from..]
    }

    /// Row `row` of column `column`.
    pub(crate) fn get(&self, column: usize, row: usize) -> u64 {
        self.column_words(column)[row].load(Ordering::Relaxed)
    }

    /// Rows `[start, end)` of `column` as an Arrow buffer over the mapping,
    /// which it keeps mapped. Those rows are frozen from now on (see the type).
    pub(crate) fn lend(&mut self, column: usize, start: usize, end: usize) -> Buffer {
        assert!(start <= end && end <= self.rows && column < self.columns);
        self.lent = self.lent.max(end);
        let word = self.first + column * self.rows + start;
        let ptr = self.memory.map.as_ptr().wrapping_add(word * 8).cast_mut();
        let ptr = NonNull::new(ptr).expect("a mapping is never at address 0");
        let owner: Arc<dyn arrow_buffer::alloc::Allocation> = self.memory.clone();
        // SAFETY: the `(end - start) * 8` bytes from `ptr` are inside the
        // mapping (asserted above and in `new`), which `owner` keeps mapped for
        // as long as the buffer or any slice of it lives. Arrow reads them as
        // plain bytes: every bit pattern is a valid byte, and no store reaches
        // them while a buffer lives, because `writable` refuses rows below
        // `lent` (raised above before the buffer exists) and `reset` lowers it
        // only once `memory` is unique again, no buffer left (and `&mut self`
        // rules out a lend meanwhile). `MappedWords` is never handed
        // out, so nothing else writes through it. The file itself is the
        // spool's, under the folder's one-writer claim (see `MappedWords::map`).
        unsafe { Buffer::from_custom_allocation(ptr, (end - start) * 8, owner) }
    }

    /// Makes every row writable again, if no lent buffer is left (true);
    /// false while one lives.
    pub(crate) fn reset(&mut self) -> bool {
        // `get_mut` is the uniqueness test that synchronizes with the drop of
        // the last clone (an acquire, where `strong_count` is a relaxed read):
        // every read of a lent buffer, on whatever thread it was dropped,
        // happens before the stores that follow.
        if Arc::get_mut(&mut self.memory).is_some() {
            self.lent = 0;
            true
        } else {
            false
        }
    }

    fn column_words(&self, column: usize) -> &[AtomicU64] {
        assert!(column < self.columns);
        let start = self.first + column * self.rows;
        &self.memory[start..start + self.rows]
    }
}

#[cfg(all(test, target_os = "linux"))]
impl MappedWords {
    /// Whether each page of the mapping is mapped in this process's page
    /// tables (bit 63 of its `/proc/self/pagemap` entry, readable without
    /// privileges): a write to a page that is not is a page fault, whatever
    /// the filesystem.
    pub(crate) fn mapped_pages(&self) -> Vec<bool> {
        use std::io::{Read, Seek, SeekFrom};
        let page = page_bytes();
        let first = self.map.as_ptr() as usize / page;
        let pages = self.map.len().div_ceil(page);
        let mut entries = vec![0u8; pages * 8];
        let mut pagemap = File::open("/proc/self/pagemap").expect("open /proc/self/pagemap");
        pagemap
            .seek(SeekFrom::Start(first as u64 * 8))
            .and_then(|_| pagemap.read_exact(&mut entries))
            .expect("read /proc/self/pagemap");
        entries
            .chunks_exact(8)
            .map(|e| u64::from_le_bytes(e.try_into().expect("8 bytes")) >> 63 == 1)
            .collect()
    }
}

/// The system's page size.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn page_bytes() -> usize {
    // SAFETY: sysconf reads a system constant; it takes no pointer.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).expect("a page size")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn populate_words_maps_the_pages_of_those_words_only() {
        let dir = tempfile::tempdir().unwrap();
        let page_words = page_bytes() / 8;
        let m = MappedWords::create(&dir.path().join("ring"), 16 * page_words).unwrap();
        let mapped =
            |pages: std::ops::Range<usize>| -> Vec<bool> { m.mapped_pages()[pages].to_vec() };
        assert_eq!(mapped(0..16), [false; 16], "a new mapping maps no page yet");
        // Words in pages 1..=3, from the middle of one to the middle of another.
        m.populate_words(page_words + page_words / 2..3 * page_words + 1);
        assert_eq!(mapped(0..5), [false, true, true, true, false]);
        // Clipped to the mapping; an empty range does nothing.
        m.populate_words(15 * page_words..1 << 30);
        m.populate_words(9 * page_words..9 * page_words);
        assert_eq!(mapped(4..16), [[false; 11].as_slice(), &[true]].concat());
        // Longer than a piece: every page.
        m[2 * page_words].store(5, Ordering::Relaxed);
        m.populate_words(0..16 * page_words);
        assert_eq!(mapped(0..16), [true; 16]);
        // What was written before is still there: populating writes nothing.
        assert_eq!(m[2 * page_words].load(Ordering::Relaxed), 5);
    }

    #[test]
    fn words_written_through_one_mapping_are_read_through_another() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ring");
        let a = MappedWords::create(&p, 1024).unwrap();
        a[3].store(42, Ordering::Release);
        a[1023].store(7, Ordering::Release);
        let b = MappedWords::open(&p, 1024).unwrap();
        assert_eq!(b[3].load(Ordering::Acquire), 42);
        assert_eq!(b[1023].load(Ordering::Acquire), 7);
        assert!(MappedWords::open(&p, 2048).is_err());
    }

    #[test]
    fn anonymous_words_start_zero_and_keep_what_is_stored() {
        let a = MappedWords::anonymous(4096).unwrap();
        assert_eq!(a.len(), 4096);
        assert!(a.iter().all(|w| w.load(Ordering::Relaxed) == 0));
        a[4095].store(9, Ordering::Release);
        assert_eq!(a[4095].load(Ordering::Acquire), 9);
        // Releasing the (absent) file keeps the memory mapped.
        a.release_file();
        assert_eq!(a.len(), 4096);
    }

    #[test]
    fn lent_rows_are_read_in_place_and_frozen_until_the_buffers_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("chunk");
        let mut c = ColumnWords::new(MappedWords::create(&p, 2 + 3 * 8).unwrap(), 2, 3, 8);
        for row in 0..4 {
            c.writable(1, row)[0].store(100 + row as u64, Ordering::Relaxed);
        }
        let buffer = c.lend(1, 1, 4);
        let values: &[u64] = buffer.typed_data();
        assert_eq!(values, [101, 102, 103]);
        // The buffer is the mapping: what another mapping of the file reads.
        let other = MappedWords::open(&p, 2 + 3 * 8).unwrap();
        assert_eq!(other[2 + 8 + 2].load(Ordering::Relaxed), 102);
        // Rows past the lent ones stay writable, those below are refused.
        c.writable(1, 4)[0].store(104, Ordering::Relaxed);
        assert_eq!(c.get(1, 4), 104);
        let below = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.writable(0, 3);
        }));
        assert!(below.is_err(), "a row below the lent ones was writable");
        assert!(!c.reset(), "reset while a buffer lives");
        let slice = buffer.slice(8);
        drop(buffer);
        assert!(!c.reset(), "a slice of a lent buffer still reads the rows");
        assert_eq!(slice.typed_data::<u64>(), [102, 103]);
        drop(slice);
        assert!(c.reset());
        c.writable(1, 0)[0].store(7, Ordering::Relaxed);
        assert_eq!(c.get(1, 0), 7);
        assert_eq!(c.header().len(), 2);
    }
}
