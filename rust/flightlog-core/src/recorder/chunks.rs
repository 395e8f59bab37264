//! The rows a flusher drained and not yet published ([`Pending`]), in chunks
//! that are spool files ([`crate::spool::ChunkMemory`]).
//!
//! A drain copies a row out of its ring slot into a chunk, commits it (the
//! chunk's header counts it) and then releases the slot: the row is in the
//! page cache from the ring to the published segment, written once on the
//! way. Building a batch lends the chunk's columns to Arrow as they lie
//! ([`crate::mapped::ColumnWords::lend`]), so the segment encoder reads the
//! spool's pages themselves. A chunk keeps taking rows past the ones lent,
//! and is refilled from its first row once no batch of it is left: a
//! recording keeps about a segment and a quarter of chunks, whatever its
//! rate, and never removes a file while it records (an unlink evicts its
//! pages, which at full rate cost as much as writing them).

use std::sync::atomic::AtomicU64;

use arrow_buffer::Buffer;

use super::batch::{extend_cover, Cover};
use crate::error::Result;
#[cfg(test)]
use crate::spool::chunk_tag;
use crate::spool::{ChunkMemory, Spool};

/// Rows a chunk holds at most: 128 KiB a column of words.
pub(super) const CHUNK_ROWS: usize = 16 * 1024;

/// Most memory kept in chunks whose rows are all published: a recording of
/// wide rows or huge segments keeps fewer and maps new ones after a burst.
/// The defaults (10 columns and a tag, 256k-row segments) keep about 30 MiB.
const MAX_SPARE_BYTES: usize = 64 << 20;

/// One chunk: its memory, the rows committed, and the rows already lent to a
/// batch (`built`).
pub(super) struct Chunk {
    memory: ChunkMemory,
    rows: usize,
    built: usize,
    /// Ring positions of rows `[built, rows)`.
    cover: Cover,
}

impl Chunk {
    /// Rows it still has room for.
    pub(super) fn room(&self) -> usize {
        self.memory.columns.rows() - self.rows
    }

    /// Word `w` of the rows to come, for the drain to write.
    pub(super) fn word_column(&self, w: usize) -> &[AtomicU64] {
        self.memory.columns.writable(1 + w, self.rows)
    }

    /// The tags of the rows to come ([`chunk_tag`]).
    pub(super) fn tag_column(&self) -> &[AtomicU64] {
        self.memory.columns.writable(0, self.rows)
    }
}

/// A hold on a chunk's rows: while it lives the chunk is not refilled. The
/// words lent for a batch are its lease: the batch itself may hold only
/// copies (of f32, bool and string columns), so the flusher keeps the lease
/// beside the batch until a published segment holds its rows.
pub(super) type Lease = Vec<Buffer>;

/// Rows of one chunk lent for a batch: `width` word columns of `rows` words
/// each (the batch's [`Lease`]), and the ring positions they came from.
pub(super) struct ChunkRows {
    pub(super) words: Vec<Buffer>,
    pub(super) rows: usize,
    pub(super) cover: Cover,
}

/// Rows drained from the rings and not yet built into batches, in chunks of
/// [`CHUNK_ROWS`] rows (a chunk holds the rows of several batches when
/// segments are smaller).
pub(super) struct Pending {
    /// Chunks holding rows not built yet, in drain order; only the last one
    /// has room.
    chunks: Vec<Chunk>,
    /// Full chunks whose rows are all built: refilled once no batch of them
    /// is left.
    sealed: Vec<Chunk>,
    /// Empty chunks, ready.
    spare: Vec<Chunk>,
    width: usize,
    chunk_rows: usize,
    /// Most spare chunks kept: those of a segment and a quarter, within
    /// [`MAX_SPARE_BYTES`].
    max_spare: usize,
    /// The number of the next chunk file.
    next_index: u64,
    /// Rows not built yet, in all chunks.
    pub(super) rows: usize,
}

impl Pending {
    /// Pending rows of `width` words, for segments of `segment_rows`, in
    /// chunks of `chunk_rows` ([`CHUNK_ROWS`] but in tests).
    pub(super) fn new(width: usize, segment_rows: usize, chunk_rows: usize) -> Self {
        let chunk_rows = chunk_rows.max(1);
        let chunks_kept = (segment_rows + segment_rows / 4).div_ceil(chunk_rows) + 1;
        let in_budget = MAX_SPARE_BYTES / (chunk_rows * 8 * (1 + width));
        Pending {
            chunks: Vec::new(),
            sealed: Vec::new(),
            spare: Vec::new(),
            width,
            chunk_rows,
            max_spare: chunks_kept.min(in_budget).max(1),
            next_index: 0,
            rows: 0,
        }
    }

    /// The chunk that takes the next rows, and how many it has room for (at
    /// least one): once the last one is full, a chunk whose rows are all
    /// published, or a new one (a file of `spool`; memory without one, or
    /// when the spool cannot hold it).
    pub(super) fn chunk_with_room(&mut self, spool: Option<&Spool>) -> Result<(&mut Chunk, usize)> {
        if self.chunks.last().is_none_or(|c| c.room() == 0) {
            let chunk = match self.refilled() {
                Some(c) => c,
                None => {
                    let memory = match spool {
                        Some(s) => s.map_chunk(self.next_index, self.chunk_rows)?,
                        None => ChunkMemory::anonymous(self.width, self.chunk_rows)?,
                    };
                    self.next_index += 1;
                    Chunk {
                        memory,
                        rows: 0,
                        built: 0,
                        cover: Cover::new(),
                    }
                }
            };
            self.chunks.push(chunk);
        }
        let chunk = self.chunks.last_mut().expect("pushed above if none");
        let room = chunk.room();
        Ok((chunk, room))
    }

    /// A spare chunk, or a sealed one no batch reads any more, emptied;
    /// sealed chunks freed beyond the spares kept are given up (their files
    /// removed: their rows are published, or were counted lost), and so are
    /// chunks in memory (the spool could not hold them then: the next one
    /// tries again).
    fn refilled(&mut self) -> Option<Chunk> {
        let mut i = 0;
        while i < self.sealed.len() {
            if self.sealed[i].memory.columns.reset() {
                let mut chunk = self.sealed.swap_remove(i);
                if chunk.memory.path.is_some() && self.spare.len() < self.max_spare {
                    chunk.rows = 0;
                    chunk.built = 0;
                    chunk.memory.commit(0);
                    self.spare.push(chunk);
                } else {
                    chunk.memory.remove_file();
                }
            } else {
                i += 1;
            }
        }
        self.spare.pop()
    }

    /// Commits `n` rows just written to the last chunk, from `lane`'s ring
    /// positions `start..start + n`: a reader of the spool takes them from
    /// now on, so their ring slots may be released.
    pub(super) fn added(&mut self, lane: usize, start: u64, n: usize) {
        let chunk = self.chunks.last_mut().expect("rows go into a chunk");
        chunk.rows += n;
        chunk.memory.commit(chunk.rows);
        extend_cover(&mut chunk.cover, lane, start, start + n as u64);
        self.rows += n;
    }

    /// Lends the rows not built yet, chunk by chunk in drain order, for
    /// batches. They stay counted in [`Pending::rows`] until
    /// [`Pending::built`] (or [`Pending::clear`]): a batch build that panics
    /// leaves them counted as not written, not gone.
    pub(super) fn take_rows(&mut self) -> Vec<ChunkRows> {
        let mut out = Vec::with_capacity(self.chunks.len());
        for chunk in &mut self.chunks {
            if chunk.rows > chunk.built {
                let (start, end) = (chunk.built, chunk.rows);
                let words = (0..self.width)
                    .map(|w| chunk.memory.columns.lend(1 + w, start, end))
                    .collect();
                out.push(ChunkRows {
                    words,
                    rows: end - start,
                    cover: std::mem::take(&mut chunk.cover),
                });
                chunk.built = end;
            }
        }
        self.seal_built();
        out
    }

    /// The rows taken are built into batches: they are no longer pending.
    pub(super) fn built(&mut self) {
        self.rows = 0;
    }

    /// Drops every pending row (a batch that could not be built; they are
    /// counted as lost by the caller).
    pub(super) fn clear(&mut self) {
        for chunk in &mut self.chunks {
            chunk.built = chunk.rows;
            chunk.cover.clear();
        }
        self.seal_built();
        self.rows = 0;
    }

    /// Full chunks whose rows are all built wait for their batches to go.
    fn seal_built(&mut self) {
        let mut i = 0;
        while i < self.chunks.len() {
            let c = &self.chunks[i];
            if c.room() == 0 && c.built == c.rows {
                let chunk = self.chunks.remove(i);
                self.sealed.push(chunk);
            } else {
                i += 1;
            }
        }
    }

    /// Chunks mapped so far (files, or memory the spool could not hold).
    pub(super) fn chunks_mapped(&self) -> u64 {
        self.next_index
    }
}

/// Writes rows `start..start + n` of `lane` into `pending` as a drain does,
/// `word(pos, w)` giving word `w` of the row at ring position `pos`.
#[cfg(test)]
pub(super) fn add_rows(
    pending: &mut Pending,
    spool: Option<&Spool>,
    lane: usize,
    start: u64,
    n: usize,
    word: impl Fn(u64, usize) -> u64,
) {
    use std::sync::atomic::Ordering;
    let width = pending.width;
    let mut k = start;
    while k < start + n as u64 {
        let (chunk, room) = pending.chunk_with_room(spool).unwrap();
        let take = room.min((start + n as u64 - k) as usize);
        for (j, pos) in (k..k + take as u64).enumerate() {
            for w in 0..width {
                chunk.word_column(w)[j].store(word(pos, w), Ordering::Relaxed);
            }
            chunk.tag_column()[j].store(chunk_tag(lane, pos), Ordering::Relaxed);
        }
        pending.added(lane, k, take);
        k += take as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn meta(width: usize) -> crate::spool::SpoolMeta {
        crate::spool::SpoolMeta {
            format: 2,
            boot_id: crate::spool::boot_id(),
            pid: std::process::id(),
            instance: 1,
            width,
            ring_capacity: 8,
            schema_json: "{}".into(),
            constants: vec![],
            file_kv: vec![],
            run_id: None,
            location: None,
        }
    }

    fn values(rows: &ChunkRows, w: usize) -> Vec<u64> {
        rows.words[w].typed_data::<u64>().to_vec()
    }

    #[test]
    fn rows_are_chunked_in_order_with_each_chunks_positions() {
        let mut pending = Pending::new(2, 10, 10);
        add_rows(&mut pending, None, 3, 100, 7, |p, w| p * 10 + w as u64);
        add_rows(&mut pending, None, 5, 0, 18, |p, w| p * 10 + w as u64);
        assert_eq!(pending.rows, 25);
        let out = pending.take_rows();
        assert_eq!(pending.rows, 25, "counted until built");
        pending.built();
        let sizes: Vec<usize> = out.iter().map(|r| r.rows).collect();
        assert_eq!(sizes, [10, 10, 5], "chunks of at most a segment's rows");
        let covers: Vec<Vec<(usize, (u64, u64))>> = out
            .iter()
            .map(|r| r.cover.iter().map(|(&l, &r)| (l, r)).collect())
            .collect();
        assert_eq!(
            covers,
            [
                vec![(3, (100, 107)), (5, (0, 3))],
                vec![(5, (3, 13))],
                vec![(5, (13, 18))],
            ]
        );
        let firsts: Vec<u64> = out.iter().flat_map(|r| values(r, 0)).collect();
        let want: Vec<u64> = (100..107).chain(0..18).map(|p| p * 10).collect();
        assert_eq!(firsts, want);
        assert_eq!(values(&out[2], 1), [131, 141, 151, 161, 171]);
    }

    /// The last chunk keeps taking rows past the ones lent; a chunk is
    /// refilled only once no batch of it is left, and a spool's reader sees
    /// every committed row meanwhile.
    #[test]
    fn chunks_are_refilled_only_once_their_batches_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::create(&dir.path().join("s"), &meta(1)).unwrap();
        let mut pending = Pending::new(1, 8, 8);
        add_rows(&mut pending, Some(&spool), 0, 0, 5, |p, _| p);
        let first = pending.take_rows();
        pending.built();
        add_rows(&mut pending, Some(&spool), 0, 5, 3, |p, _| p);
        assert_eq!(
            pending.chunks_mapped(),
            1,
            "the chunk took rows past those lent"
        );
        // Both batches' rows, and the chunk file holds all 8.
        let second = pending.take_rows();
        pending.built();
        assert_eq!(values(&first[0], 0), [0, 1, 2, 3, 4]);
        assert_eq!(values(&second[0], 0), [5, 6, 7]);
        let s = crate::spool::salvage(spool.dir(), &BTreeMap::new(), 0).unwrap();
        assert_eq!(s.rows.len(), 8);
        // The full chunk is sealed; with its batches alive a new one is made.
        add_rows(&mut pending, Some(&spool), 0, 8, 1, |p, _| p);
        assert_eq!(pending.chunks_mapped(), 2);
        drop(first);
        add_rows(&mut pending, Some(&spool), 0, 9, 7, |p, _| p);
        let third = pending.take_rows();
        pending.built();
        assert_eq!(values(&third[0], 0), (8..16).collect::<Vec<u64>>());
        // Rows 5..8 are still lent: the first chunk is not refilled.
        add_rows(&mut pending, Some(&spool), 0, 16, 1, |p, _| p);
        assert_eq!(pending.chunks_mapped(), 3);
        assert_eq!(values(&second[0], 0), [5, 6, 7], "lent rows unchanged");
        drop(second);
        drop(third);
        add_rows(&mut pending, Some(&spool), 0, 17, 7, |p, _| p);
        add_rows(&mut pending, Some(&spool), 0, 24, 8, |p, _| p);
        assert_eq!(
            pending.chunks_mapped(),
            3,
            "the first two chunks were refilled"
        );
        let rest = pending.take_rows();
        let all: Vec<u64> = rest.iter().flat_map(|r| values(r, 0)).collect();
        assert_eq!(all, (16..32).collect::<Vec<u64>>());
        // A reader takes each committed row once: the refilled chunks'
        // earlier rows are gone from it.
        let s = crate::spool::salvage(spool.dir(), &BTreeMap::new(), 0).unwrap();
        let got: Vec<u64> = s.rows.iter().map(|r| r[0]).collect();
        assert_eq!(got, (16..32).collect::<Vec<u64>>());
        assert_eq!(spool.errors.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[test]
    fn spare_chunks_are_bounded_to_about_a_segment_and_a_quarter() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::create(&dir.path().join("s"), &meta(2)).unwrap();
        let mut pending = Pending::new(2, 8, 8);
        // 8-row segments: 10 rows (a segment and a quarter) in 2 chunks, +1.
        assert_eq!(pending.max_spare, 3);
        add_rows(&mut pending, Some(&spool), 0, 0, 20 * 8, |p, _| p);
        let built = pending.take_rows();
        pending.built();
        assert_eq!(pending.sealed.len(), 20);
        drop(built);
        add_rows(&mut pending, Some(&spool), 0, 160, 1, |p, _| p);
        assert_eq!(pending.spare.len(), 2, "3 kept, one of them in use");
        let files = std::fs::read_dir(spool.dir())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("chunk-"))
            .count();
        assert_eq!(files, 3, "the chunks given up have no file left");
    }

    /// Chunks in memory (no spool, or one that could not hold them) are not
    /// kept for refilling: the next chunk asks the spool again.
    #[test]
    fn chunks_in_memory_are_given_up_once_published() {
        let mut pending = Pending::new(1, 4, 4);
        add_rows(&mut pending, None, 0, 0, 4, |p, _| p);
        drop(pending.take_rows());
        pending.built();
        add_rows(&mut pending, None, 0, 4, 1, |p, _| p);
        assert_eq!(pending.chunks_mapped(), 2);
        assert!(pending.spare.is_empty());
    }

    #[test]
    fn a_cleared_chunk_is_not_built_again() {
        let mut pending = Pending::new(1, 1 << 20, CHUNK_ROWS);
        add_rows(&mut pending, None, 0, 0, 3, |p, _| p);
        pending.clear();
        assert_eq!(pending.rows, 0);
        assert!(pending.take_rows().is_empty());
        add_rows(&mut pending, None, 0, 3, 2, |p, _| p);
        let out = pending.take_rows();
        assert_eq!(values(&out[0], 0), [3, 4]);
    }
}
