//! TensorBoard event files: `RUN/tb/events.out.tfevents.*`, beside `metrics.jsonl`, with
//! the same numbers as scalars, for `tensorboard --logdir RUN` (or a folder of runs).
//!
//! The format is TensorFlow's: a file of records (length, its masked CRC-32C, the bytes,
//! their masked CRC-32C), each an `Event` protocol buffer. The first says the file
//! version, the second a `SessionLog` START at the step the run starts from; each step is
//! one `Event` holding a `Summary` of simple values. Every run, fresh or resumed, opens a
//! new file, and its START makes TensorBoard drop the earlier files' events from that
//! step on (the steps a resumed run redoes), as it does for TensorFlow's own restarts. Each record is written with one
//! `write`: a kill leaves at most a last record cut short, which TensorBoard's reader
//! ignores.

use std::io::Write;
use std::path::{Path, PathBuf};

use slotcon_shards::io_err as io;

use crate::error::Result;

/// The folder of a run's event files.
pub const TB_DIR: &str = "tb";

/// An open event file.
pub struct EventWriter {
    file: std::fs::File,
    path: PathBuf,
}

impl EventWriter {
    /// Creates a new event file in `dir` (made if missing) for a run whose next step is
    /// `step`: the file version and a START at `step`.
    pub fn create(dir: &Path, step: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let now = wall_time();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host: String = host
            .trim()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        // TensorBoard reads a folder's files in name order: the time (to the microsecond)
        // comes first, so a resumed run's file sorts after the files it supersedes.
        let name = format!(
            "events.out.tfevents.{:010}.{:06}.{}.{}",
            now as u64,
            ((now.fract() * 1e6) as u64).min(999_999),
            if host.is_empty() { "localhost" } else { &host },
            std::process::id()
        );
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut writer = EventWriter { file, path };
        let mut version = event_head(now, 0);
        put_bytes(&mut version, 3, b"brain.Event:2");
        writer.write_record(&version)?;
        // A START even at step 0: a run resumed before its first checkpoint redoes step 0.
        let mut start = event_head(now, step);
        let mut log = Vec::new();
        put_varint_field(&mut log, 1, 1); // SessionLog.status = START
        put_bytes(&mut start, 7, &log); // Event.session_log
        writer.write_record(&start)?;
        Ok(writer)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one step's scalars, `(tag, value)`; a value that is not finite is left out.
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        let mut summary = Vec::new();
        for (tag, value) in values.iter().filter(|(_, v)| v.is_finite()) {
            let mut v = Vec::new();
            put_bytes(&mut v, 1, tag.as_bytes());
            put_key(&mut v, 2, 5); // simple_value: float, fixed32
            v.extend_from_slice(&(*value as f32).to_le_bytes());
            put_bytes(&mut summary, 1, &v);
        }
        let mut event = event_head(wall_time(), step);
        put_bytes(&mut event, 5, &summary);
        self.write_record(&event)
    }

    /// One record, in one write.
    fn write_record(&mut self, data: &[u8]) -> Result<()> {
        let mut rec = Vec::with_capacity(data.len() + 16);
        let len = (data.len() as u64).to_le_bytes();
        rec.extend_from_slice(&len);
        rec.extend_from_slice(&masked_crc(&len).to_le_bytes());
        rec.extend_from_slice(data);
        rec.extend_from_slice(&masked_crc(data).to_le_bytes());
        Ok(self.file.write_all(&rec).map_err(io(&self.path))?)
    }
}

/// Seconds since the Unix epoch.
fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// TFRecord's checksum: CRC-32C, rotated right by 15 bits, plus a constant.
fn masked_crc(bytes: &[u8]) -> u32 {
    let c = crc32c::crc32c(bytes);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// An `Event`'s `wall_time` (field 1, double) and `step` (field 2, int64).
fn event_head(wall_time: f64, step: u64) -> Vec<u8> {
    let mut e = Vec::new();
    put_key(&mut e, 1, 1);
    e.extend_from_slice(&wall_time.to_le_bytes());
    put_varint_field(&mut e, 2, step);
    e
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A field's key: its number and wire type (0 varint, 1 fixed64, 2 bytes, 5 fixed32).
fn put_key(out: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(out, (field << 3) | wire);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    put_key(out, field, 0);
    put_varint(out, v);
}

/// A length-delimited field: a string, bytes or a nested message.
fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_the_masked_crc_are_tensorflows() {
        let mut v = Vec::new();
        put_varint(&mut v, 300);
        assert_eq!(v, [0xAC, 0x02]);
        // crc32c("123456789") = 0xE3069283, TensorFlow's mask applied.
        let c: u32 = 0xE306_9283;
        assert_eq!(masked_crc(b"123456789"), c.rotate_right(15).wrapping_add(0xa282_ead8));
    }

    #[test]
    fn a_record_frames_its_event_with_both_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path(), 3).unwrap();
        w.scalars(3, &[("loss", 1.5), ("skipped", f64::NAN)]).unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        let mut at = 0;
        let mut records = Vec::new();
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            assert_eq!(
                u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()),
                masked_crc(&bytes[at..at + 8])
            );
            let data = &bytes[at + 12..at + 12 + len];
            let crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc(data));
            records.push(data.to_vec());
            at += 16 + len;
        }
        assert_eq!(records.len(), 3, "version, START, one step");
        assert!(records[0].ends_with(b"brain.Event:2"));
        assert!(records[2].windows(4).any(|w| w == b"loss"));
        assert!(!records[2].windows(7).any(|w| w == b"skipped"), "a NaN is left out");
    }
}
