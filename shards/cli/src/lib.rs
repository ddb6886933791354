//! What every slotcon binary shares, so that they all behave alike: one exit convention
//! ([`exit`]), one way to check numeric flags ([`flags`]), one look for progress bars
//! ([`bar`], [`spinner`]), and one way to find the Python interpreter that runs reference
//! scripts ([`python`]).
//!
//! Libraries report progress through callbacks; binaries turn them into these bars.
//!
//! ```
//! use std::process::{ExitCode, Termination};
//!
//! fn run(quiet: bool) -> anyhow::Result<u64> {
//!     let bar = slotcon_cli::bar(3, "steps", quiet);
//!     for _ in 0..3 {
//!         bar.inc(1);
//!     }
//!     bar.finish_and_clear();
//!     Ok(bar.position())
//! }
//!
//! let code: ExitCode = slotcon_cli::exit(run(true).map(|n| assert_eq!(n, 3)));
//! assert_eq!(code, ExitCode::SUCCESS);
//! ```

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Termination};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

pub mod flags;
pub mod store;

pub use flags::{bad_flag, BadFlag};
pub use store::StoreArgs;

/// The exit code of a usage error: a flag clap rejects, or a [`BadFlag`].
pub const USAGE: u8 = 2;

/// The end of every binary's `main`: the run's own code (`()` is success), or `error: `
/// and the error's cause chain ([`chain`]) on stderr with exit code 1, or 2 when the
/// chain holds a [`BadFlag`] (a flag value found bad after parsing). clap's own usage
/// errors exit with 2 before `main` gets here.
pub fn exit<T: Termination>(result: anyhow::Result<T>) -> ExitCode {
    match result {
        Ok(done) => done.report(),
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            if e.chain().any(|c| c.is::<BadFlag>()) {
                ExitCode::from(USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// An error and its causes joined by `: `, each said once: a cause whose text its
/// parent's message already ends with (`PATH: cause` errors) is not repeated.
pub fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// A progress bar of `len` units named `prefix`, with elapsed time, ETA, rate and a
/// message slot; hidden when `quiet`. `len` may be set later (`set_length`).
pub fn bar(len: u64, prefix: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let template = "{prefix} {wide_bar} {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}] {msg}";
    let style = ProgressStyle::with_template(template).expect("a valid template");
    ProgressBar::new(len).with_style(style).with_prefix(prefix.to_string())
}

/// A spinner with `message`, ticking on its own; hidden when `quiet`.
pub fn spinner(message: String, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// The Python interpreter for reference scripts and pickle writing: `explicit` (a
/// `--python` flag) if given, else `$SLOTCON_PYTHON`, else `.venv/bin/python` in the
/// current folder or the nearest folder above it that has one (the venv that
/// `scripts/python-env.sh` makes in a checkout). Never creates anything.
pub fn python(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let chosen = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("SLOTCON_PYTHON").map(PathBuf::from));
    if let Some(path) = chosen {
        anyhow::ensure!(
            path.is_file(),
            "{}: no such Python interpreter (from --python or SLOTCON_PYTHON)",
            path.display()
        );
        return Ok(path);
    }
    let cwd = std::env::current_dir()?;
    cwd.ancestors()
        .map(|dir| dir.join(".venv/bin/python"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no .venv/bin/python here or above; pass --python or set SLOTCON_PYTHON \
                 (scripts/python-env.sh makes the project's venv)",
                cwd.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_interpreter_that_does_not_exist_is_a_clear_error() {
        let e = python(Some(Path::new("/nonexistent/python"))).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/python: no such"), "{e}");
    }

    #[test]
    fn a_cause_already_in_its_parents_message_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        #[derive(Debug)]
        struct WithPath(std::io::Error);
        impl std::fmt::Display for WithPath {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "/x: {}", self.0)
            }
        }
        impl std::error::Error for WithPath {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(WithPath(io)).context("training into /run");
        assert_eq!(chain(&e), "training into /run: /x: gone");
    }

    #[test]
    fn an_error_exits_with_failure() {
        assert_eq!(exit::<()>(Err(anyhow::anyhow!("boom"))), ExitCode::FAILURE);
    }

    #[test]
    fn a_bad_flag_exits_with_2_even_under_context() {
        let e = bad_flag("--batch-size", 1000000, "the store holds 128 images").context("benchmarking");
        assert_eq!(
            chain(&e),
            "benchmarking: --batch-size 1000000: the store holds 128 images"
        );
        assert_eq!(exit::<()>(Err(e)), ExitCode::from(USAGE));
    }
}
