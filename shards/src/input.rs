//! Reading an input file whole, bounded: no read that can block forever or fill memory.
//!
//! Input paths come from users (folders to ingest, `--image`, masks, configs). A FIFO,
//! a character device (`/dev/zero`), a socket or a file of the kernel's that blocks
//! (`/proc/kmsg`) would hang a plain `read` or grow its buffer until memory runs out. So
//! [`read_bounded`] opens without blocking (`O_NONBLOCK`: a FIFO with no writer opens at
//! once, a read that would wait fails with "would block" instead), refuses anything but a
//! regular file (checked on the open file, so a swap between check and read changes
//! nothing), and reads at most `max` bytes, refusing a file that holds more.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{io_err, Error, Result};

/// The largest image file slotcon reads: more than any JPEG or PNG within Pillow's pixel
/// limit needs (89 M pixels, 268 MB as raw RGB).
pub const MAX_IMAGE_FILE: u64 = 1 << 30;

/// The largest JSON file (config, manifest, report, checkpoint manifest) slotcon reads.
pub const MAX_JSON_FILE: u64 = 256 << 20;

/// The bytes of the regular file `path`, at most `max` of them.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    let file = open_nonblocking(path)?;
    let meta = file.metadata().map_err(io_err(path))?;
    let invalid = |reason: String| Error::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    if !meta.is_file() {
        return Err(invalid(format!("not a regular file ({})", kind(&meta))));
    }
    if meta.len() > max {
        return Err(invalid(format!("{} bytes, more than the {max} allowed", meta.len())));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(io_err(path))?;
    if bytes.len() as u64 > max {
        return Err(invalid(format!(
            "more than the {max} bytes allowed (it grew while read)"
        )));
    }
    Ok(bytes)
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io_err(path))
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> Result<File> {
    File::open(path).map_err(io_err(path))
}

/// What a file that is not a regular one is, for the message.
fn kind(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_are_read_and_others_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.jpg");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_bounded(&file, 10).unwrap(), b"0123456789");
        let e = read_bounded(&file, 9).unwrap_err().to_string();
        assert!(e.contains("10 bytes, more than the 9 allowed"), "{e}");
        let e = read_bounded(Path::new("/dev/zero"), MAX_IMAGE_FILE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file (a device)"), "{e}");
        let fifo = dir.path().join("pipe.jpg");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path; mkfifo has no other precondition.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_bounded(&fifo, MAX_IMAGE_FILE).unwrap_err().to_string();
        assert!(e.contains("not a regular file (a FIFO)"), "{e}");
        let e = read_bounded(dir.path(), MAX_IMAGE_FILE).unwrap_err().to_string();
        assert!(e.contains("not a regular file (a directory)"), "{e}");
    }
}
