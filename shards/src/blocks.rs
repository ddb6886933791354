//! Blocks: runs of consecutive samples of one shard whose payloads span a bounded byte
//! range. A remote store fetches, caches and evicts whole blocks (one ranged read each,
//! so nearby samples coalesce into one request).
//!
//! The partition depends on the store's index and the block size only: every process
//! that opens a store with the same block size sees the same blocks (and the cache's
//! file names, which name them, agree).

use crate::index::IndexView;

/// The default block size: 1 MiB. At 20 ms per request and 8 requests in flight that is
/// 400 MiB/s, and the first batches of a cold epoch wait for few bytes; 8 MiB blocks
/// (FFCV's page) made the first epoch of a 170 MB store 0.6x the local store's, as its
/// first batch needs most blocks at once (bench/RESULTS.md).
pub const DEFAULT_BLOCK_BYTES: u64 = 1 << 20;

/// One block: rows `first_row..first_row + rows` of shard `shard`, whose payloads lie in
/// the shard file's bytes `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// The shard (its position in the manifest).
    pub shard: usize,
    /// The first row (within the shard) the block holds.
    pub first_row: u64,
    /// How many consecutive rows it holds (at least one).
    pub rows: u64,
    /// The first byte of the shard file it spans.
    pub start: u64,
    /// One past its last byte.
    pub end: u64,
}

impl Block {
    /// The bytes the block spans.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// True when it spans no byte (a block of empty payloads).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// A store's blocks, with the lookup from a sample to its block.
#[derive(Clone, Debug, Default)]
pub struct Blocks {
    blocks: Vec<Block>,
    /// `first[s]`: the number of the first block of shard `s`; one more entry at the end.
    first: Vec<usize>,
}

impl Blocks {
    /// Partitions each shard greedily: a block grows by the next row while its byte span
    /// stays within `block_bytes`, and holds at least one row.
    pub(crate) fn new(views: &[IndexView<'_>], block_bytes: u64) -> Self {
        let mut blocks = Vec::new();
        let mut first = Vec::with_capacity(views.len() + 1);
        for (shard, view) in views.iter().enumerate() {
            first.push(blocks.len());
            let mut open: Option<Block> = None;
            for row in 0..view.rows() {
                let e = view.entry(row);
                let (start, end) = (e.offset, e.offset + e.len as u64);
                open = match open {
                    Some(b) if b.end.max(end) - b.start.min(start) <= block_bytes => Some(Block {
                        rows: b.rows + 1,
                        start: b.start.min(start),
                        end: b.end.max(end),
                        ..b
                    }),
                    other => {
                        blocks.extend(other);
                        Some(Block {
                            shard,
                            first_row: row,
                            rows: 1,
                            start,
                            end,
                        })
                    }
                };
            }
            blocks.extend(open);
        }
        first.push(blocks.len());
        Blocks { blocks, first }
    }

    /// Every block, shard by shard, in row order.
    pub fn all(&self) -> &[Block] {
        &self.blocks
    }

    /// The number of blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// True for a store without samples.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The number of the block that holds row `row` of shard `shard`.
    pub fn of(&self, shard: usize, row: u64) -> usize {
        let range = &self.blocks[self.first[shard]..self.first[shard + 1]];
        self.first[shard] + range.partition_point(|b| b.first_row + b.rows <= row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{encode, Entry};

    fn view_bytes(lens: &[u32]) -> Vec<u8> {
        let mut offset = 4;
        let entries: Vec<Entry> = lens
            .iter()
            .map(|&len| {
                let e = Entry {
                    offset,
                    len,
                    crc: 0,
                    width: 1,
                    height: 1,
                    path_offset: 0,
                    path_len: 0,
                };
                offset += len as u64 + 10;
                e
            })
            .collect();
        encode(0, &entries, "")
    }

    #[test]
    fn blocks_cover_every_row_once_within_the_size() {
        let a = view_bytes(&[30, 30, 30, 100, 5, 5]);
        let b = view_bytes(&[7]);
        let views = [
            IndexView::parse("a".as_ref(), &a).unwrap(),
            IndexView::parse("b".as_ref(), &b).unwrap(),
        ];
        let blocks = Blocks::new(&views, 80);
        let spans: Vec<(usize, u64, u64)> = blocks.all().iter().map(|b| (b.shard, b.first_row, b.rows)).collect();
        // 30+10+30 = 70 <= 80; a third would span 110. The 100-byte row is alone (over the size).
        assert_eq!(spans, vec![(0, 0, 2), (0, 2, 1), (0, 3, 1), (0, 4, 2), (1, 0, 1)]);
        assert!(blocks.all().iter().all(|b| b.len() <= 80 || b.rows == 1));
        for (shard, view) in views.iter().enumerate() {
            for row in 0..view.rows() {
                let b = blocks.all()[blocks.of(shard, row)];
                assert_eq!(b.shard, shard);
                assert!((b.first_row..b.first_row + b.rows).contains(&row));
                let e = view.entry(row);
                assert!(b.start <= e.offset && e.offset + e.len as u64 <= b.end);
            }
        }
    }
}
