//! The sidecar index: a fixed-size entry per row, read straight from a memory map.

use std::path::Path;

use crate::checksum::crc32c;
use crate::error::{Error, Result};
use crate::format::{INDEX_ENTRY_LEN, INDEX_HEADER_LEN, INDEX_MAGIC};

/// Index file format version, bumped when the index bytes change (store format 2 kept
/// index version 1: only the manifest's `index_checksum` changed).
pub const INDEX_VERSION: u32 = 1;

/// Where one row's payload lies in its Parquet file, and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Byte offset of the payload in the Parquet file.
    pub offset: u64,
    /// Payload length in bytes.
    pub len: u32,
    /// CRC-32C of the payload.
    pub crc: u32,
    /// Image width in pixels, as PIL's `convert('RGB')` sees it.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Offset of the source path in the path blob.
    pub path_offset: u32,
    /// Length of the source path in bytes.
    pub path_len: u32,
}

impl Entry {
    #[cfg(any(feature = "write", test))]
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        for v in [
            self.len,
            self.crc,
            self.width,
            self.height,
            self.path_offset,
            self.path_len,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn read(b: &[u8]) -> Entry {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        Entry {
            offset: u64::from_le_bytes(b[0..8].try_into().unwrap()),
            len: u32_at(8),
            crc: u32_at(12),
            width: u32_at(16),
            height: u32_at(20),
            path_offset: u32_at(24),
            path_len: u32_at(28),
        }
    }
}

/// Serialises an index: header, entries, path blob, trailing CRC.
#[cfg(any(feature = "write", test))]
pub fn encode(first_id: u64, entries: &[Entry], paths: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(INDEX_HEADER_LEN + entries.len() * INDEX_ENTRY_LEN + paths.len() + 4);
    out.extend_from_slice(&INDEX_MAGIC);
    out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    out.extend_from_slice(&(INDEX_ENTRY_LEN as u32).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    out.extend_from_slice(&first_id.to_le_bytes());
    for e in entries {
        e.write(&mut out);
    }
    out.extend_from_slice(paths.as_bytes());
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A checked view of an index file's bytes (usually a memory map).
#[derive(Clone, Copy, Debug)]
pub struct IndexView<'a> {
    entries: &'a [u8],
    paths: &'a [u8],
    rows: u64,
    first_id: u64,
}

impl<'a> IndexView<'a> {
    /// Checks magic, version, sizes, the trailing CRC and every path range.
    pub fn parse(path: &Path, bytes: &'a [u8]) -> Result<Self> {
        let corrupt = |reason: String| Error::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.len() < INDEX_HEADER_LEN + 4 || bytes[..8] != INDEX_MAGIC {
            return Err(corrupt("not a slotcon index file (bad magic or too short)".into()));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes(tail.try_into().unwrap());
        if crc32c(body) != stored {
            return Err(corrupt("index checksum mismatch".into()));
        }
        let header = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().unwrap());
        let version = u32::from_le_bytes(body[8..12].try_into().unwrap());
        let entry_len = u32::from_le_bytes(body[12..16].try_into().unwrap()) as usize;
        if version != INDEX_VERSION || entry_len != INDEX_ENTRY_LEN {
            return Err(corrupt(format!(
                "index version {version} / entry size {entry_len} unsupported"
            )));
        }
        let (rows, first_id) = (header(16), header(24));
        let end = rows
            .checked_mul(INDEX_ENTRY_LEN as u64)
            .and_then(|n| n.checked_add(INDEX_HEADER_LEN as u64));
        let Some(end) = end.filter(|&end| end <= body.len() as u64) else {
            return Err(corrupt(format!("index claims {rows} rows but is too short")));
        };
        if first_id.checked_add(rows).is_none() {
            return Err(corrupt(format!("ids {first_id}+{rows} pass 2^64")));
        }
        let paths = &body[end as usize..];
        let view = IndexView {
            entries: &body[INDEX_HEADER_LEN..end as usize],
            paths,
            rows,
            first_id,
        };
        if let Err(row) = view.check_paths() {
            return Err(corrupt(format!("row {row}: path range out of bounds or not UTF-8")));
        }
        Ok(view)
    }

    /// Re-slices bytes that [`IndexView::parse`] already accepted, without re-checking.
    pub(crate) fn reslice(bytes: &'a [u8]) -> Self {
        let body = &bytes[..bytes.len() - 4];
        let rows = u64::from_le_bytes(body[16..24].try_into().unwrap());
        let first_id = u64::from_le_bytes(body[24..32].try_into().unwrap());
        let end = INDEX_HEADER_LEN + rows as usize * INDEX_ENTRY_LEN;
        let paths = &body[end..];
        IndexView {
            entries: &body[INDEX_HEADER_LEN..end],
            paths,
            rows,
            first_id,
        }
    }

    /// Checks that every row's path range lies in the path blob and is UTF-8; the error
    /// is the first row whose path is not.
    fn check_paths(&self) -> std::result::Result<(), u64> {
        for i in 0..self.rows {
            let e = self.entry(i);
            let end = e.path_offset as usize + e.path_len as usize;
            let ok = self.paths.get(e.path_offset as usize..end).map(std::str::from_utf8);
            if !matches!(ok, Some(Ok(_))) {
                return Err(i);
            }
        }
        Ok(())
    }

    /// Number of rows.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The id of the first row.
    pub fn first_id(&self) -> u64 {
        self.first_id
    }

    /// Entry `row` (`row < rows()`).
    pub fn entry(&self, row: u64) -> Entry {
        let at = row as usize * INDEX_ENTRY_LEN;
        Entry::read(&self.entries[at..at + INDEX_ENTRY_LEN])
    }

    /// The source path of `entry`.
    pub fn path(&self, entry: &Entry) -> &'a str {
        let start = entry.path_offset as usize;
        let bytes = &self.paths[start..start + entry.path_len as usize];
        // Checked by `parse` when the file was opened.
        std::str::from_utf8(bytes).unwrap_or("<invalid path>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let e = |o, p| Entry {
            offset: o,
            len: 5,
            crc: 7,
            width: 3,
            height: 2,
            path_offset: p,
            path_len: 3,
        };
        encode(10, &[e(100, 0), e(200, 3)], "a/xb/y")
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let v = IndexView::parse(Path::new("x.idx"), &bytes).unwrap();
        assert_eq!((v.rows(), v.first_id()), (2, 10));
        let e = v.entry(1);
        assert_eq!((e.offset, e.len, v.path(&e)), (200, 5, "b/y"));
    }

    #[test]
    fn any_flipped_byte_is_caught() {
        let bytes = sample();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(IndexView::parse(Path::new("x.idx"), &b).is_err(), "byte {i}");
        }
    }
}
