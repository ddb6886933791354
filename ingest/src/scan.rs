//! Finding the images under a folder, in a deterministic order.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A candidate image file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// Path relative to the source folder, `/`-separated: the sort key and the stored path.
    pub rel: String,
    /// The path to open.
    pub abs: PathBuf,
}

/// A file (or folder) left out, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The path, relative to the source folder where possible.
    pub path: String,
    /// Why it was left out.
    pub reason: String,
}

/// True for `.jpg`, `.jpeg` and `.png`, in any case.
pub fn has_image_extension(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png"))
}

/// Walks `src` recursively, following symlinks, and returns the image files sorted by
/// their relative path (byte order), plus what could not be walked (symlink loops,
/// unreadable folders, broken links, non-UTF-8 names).
pub fn scan(src: &Path) -> (Vec<SourceFile>, Vec<Skipped>) {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for entry in walkdir::WalkDir::new(src).follow_links(true) {
        match entry {
            Ok(e) if e.file_type().is_dir() => {}
            Ok(e) if has_image_extension(e.path()) => match relative(src, e.path()) {
                Some(rel) => files.push(SourceFile {
                    rel,
                    abs: e.path().to_path_buf(),
                }),
                None => skipped.push(Skipped {
                    path: e.path().display().to_string(),
                    reason: "path is not valid UTF-8".into(),
                }),
            },
            Ok(_) => {}
            Err(err) => skipped.extend(walk_error(src, &err)),
        }
    }
    files.sort_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    (files, skipped)
}

fn relative(src: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

/// A walk error becomes a skipped entry, unless it concerns a file we would not ingest.
fn walk_error(src: &Path, err: &walkdir::Error) -> Option<Skipped> {
    let path = err.path().map(Path::to_path_buf).unwrap_or_else(|| src.to_path_buf());
    let is_loop = err.loop_ancestor().is_some();
    if !is_loop && path.is_file() && !has_image_extension(&path) {
        return None;
    }
    let shown = relative(src, &path).unwrap_or_else(|| path.display().to_string());
    let reason = match err.loop_ancestor() {
        Some(a) => format!("symlink loop (back to {})", a.display()),
        None => err.io_error().map(|e| e.to_string()).unwrap_or_else(|| err.to_string()),
    };
    Some(Skipped { path: shown, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_any_case() {
        for p in ["a.jpg", "b.JPEG", "c.Png", "d/e.jpeg"] {
            assert!(has_image_extension(Path::new(p)), "{p}");
        }
        for p in ["a.gif", "b", "c.jpg.txt", ".png/x"] {
            assert!(!has_image_extension(Path::new(p)), "{p}");
        }
    }
}
