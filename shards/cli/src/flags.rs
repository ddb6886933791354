//! Numeric flags, checked where they are parsed, before anything is allocated or started.
//!
//! Every numeric flag of every binary goes through one of these parsers
//! (`#[arg(long, value_parser = flags::int(1..=65536usize))]`, `value_parser =
//! flags::threads`), so a bad value (0 where a count is needed, `-1`, `nan`, `inf`, a
//! number too large to mean anything) is clap's usage error: exit code 2 and a message
//! naming the flag, the value and what is allowed. Values that can only be judged later,
//! against data (a batch larger than the store), are reported as a [`BadFlag`], which
//! [`crate::exit`] also turns into exit code 2.
//!
//! ```
//! use slotcon_cli::flags::{int, positive};
//!
//! let batch = int(1..=65536usize);
//! assert_eq!(batch("32"), Ok(32));
//! assert!(batch("0").unwrap_err().to_string().contains("1..=65536"));
//! assert!(batch("-1").is_err() && batch("1e300").is_err());
//! let seconds = positive(86400.0);
//! assert_eq!(seconds("0.5"), Ok(0.5));
//! assert!(seconds("nan").is_err() && seconds("inf").is_err() && seconds("0").is_err());
//! ```

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

use slotcon_augment::threads::cores;
pub use slotcon_augment::threads::{max_threads, THREADS_CAP};

/// What a numeric flag accepts, in the words of its messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// A whole number in `lo..=hi` (with the reason for the bound, for thread counts).
    Range(String),
    /// A whole number of at least this.
    AtLeast(String),
    /// A finite number in `(0, max]`.
    Positive(String),
}

/// Why a numeric flag's value was refused, as clap prints it after the flag and value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadValue {
    /// The value does not parse as the number the flag takes.
    #[error("{}", match .0 {
        Accepted::Range(r) => format!("expected a whole number in {r}"),
        Accepted::AtLeast(m) => format!("expected a whole number of at least {m}"),
        Accepted::Positive(max) => format!("expected a number in (0, {max}]"),
    })]
    NotANumber(Accepted),
    /// `nan` or an infinity, where a number in `(0, max]` is expected.
    #[error("not a finite number (expected one in (0, {max}])")]
    NotFinite {
        /// The largest value accepted, as written.
        max: String,
    },
    /// A number outside what the flag accepts.
    #[error("must be {}", outside(.0))]
    Outside(Accepted),
}

fn outside(a: &Accepted) -> String {
    match a {
        Accepted::Range(r) => format!("in {r}"),
        Accepted::AtLeast(m) => format!("at least {m}"),
        Accepted::Positive(max) => format!("in (0, {max}]"),
    }
}

/// A flag parser's result.
pub type Parsed<T> = Result<T, BadValue>;

/// A whole number in `range`; for `value_parser`.
pub fn int<T>(range: RangeInclusive<T>) -> impl Fn(&str) -> Parsed<T> + Clone + Send + Sync + 'static
where
    T: FromStr + PartialOrd + Display + Clone + Send + Sync + 'static,
{
    move |s: &str| {
        let accepted = || Accepted::Range(format!("{}..={}", range.start(), range.end()));
        let v: T = s.trim().parse().map_err(|_| BadValue::NotANumber(accepted()))?;
        if range.contains(&v) {
            Ok(v)
        } else {
            Err(BadValue::Outside(accepted()))
        }
    }
}

/// A whole number of at least `min` (any larger value of the type); for `value_parser`.
pub fn at_least<T>(min: T) -> impl Fn(&str) -> Parsed<T> + Clone + Send + Sync + 'static
where
    T: FromStr + PartialOrd + Display + Clone + Send + Sync + 'static,
{
    move |s: &str| {
        let accepted = || Accepted::AtLeast(min.to_string());
        let v: T = s.trim().parse().map_err(|_| BadValue::NotANumber(accepted()))?;
        if v >= min {
            Ok(v)
        } else {
            Err(BadValue::Outside(accepted()))
        }
    }
}

/// A finite number in `(0, max]`; for `value_parser`.
pub fn positive(max: f64) -> impl Fn(&str) -> Parsed<f64> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let accepted = || Accepted::Positive(max.to_string());
        let v: f64 = s.trim().parse().map_err(|_| BadValue::NotANumber(accepted()))?;
        if !v.is_finite() {
            Err(BadValue::NotFinite { max: max.to_string() })
        } else if v > 0.0 && v <= max {
            Ok(v)
        } else {
            Err(BadValue::Outside(accepted()))
        }
    }
}

fn count(s: &str, min: usize) -> Parsed<usize> {
    let max = max_threads();
    let accepted = || {
        Accepted::Range(format!(
            "{min}..={max} (at most 4 x the {} available core(s), and never more than {THREADS_CAP})",
            cores()
        ))
    };
    let n: usize = s.trim().parse().map_err(|_| BadValue::NotANumber(accepted()))?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(BadValue::Outside(accepted()))
    }
}

/// A thread or worker count: 1 to [`max_threads`]; for `value_parser`.
pub fn threads(s: &str) -> Parsed<usize> {
    count(s, 1)
}

/// A thread count where 0 means one per core: 0 to [`max_threads`]; for `value_parser`.
pub fn threads_or_all(s: &str) -> Parsed<usize> {
    count(s, 0)
}

/// A flag whose value was found bad after parsing (against the data, or together with
/// other flags): `FLAG VALUE: reason`. [`crate::exit`] makes it exit code 2, like clap's
/// own usage errors, wherever it sits in an error's chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadFlag {
    /// The flag, with its dashes: `--batch-size`.
    pub flag: String,
    /// The value given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Display for BadFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.flag, self.value, self.reason)
    }
}

impl std::error::Error for BadFlag {}

/// A [`BadFlag`] as an `anyhow::Error`.
pub fn bad_flag(flag: &str, value: impl Display, reason: impl Display) -> anyhow::Error {
    anyhow::Error::new(BadFlag {
        flag: flag.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_are_refused_with_the_range() {
        for bad in ["0", "-1", "nan", "inf", "18446744073709551615", "1e300", "", "x"] {
            assert!(int(1..=65536usize)(bad).is_err(), "{bad}");
            assert!(threads(bad).is_err(), "{bad}");
            assert!(positive(3600.0)(bad).is_err(), "{bad}");
        }
        assert_eq!(
            int(32..=1024u32)("4294967296").unwrap_err().to_string(),
            "expected a whole number in 32..=1024"
        );
        assert_eq!(at_least(1u64)("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(at_least(1u64)("0").unwrap_err().to_string(), "must be at least 1");
        assert_eq!(threads_or_all("0"), Ok(0));
        assert_eq!(threads("1"), Ok(1));
        assert!(threads(&(max_threads() + 1).to_string())
            .unwrap_err()
            .to_string()
            .contains("available core"));
        assert!((4..=THREADS_CAP).contains(&max_threads()));
        assert_eq!(positive(1.0)("1"), Ok(1.0));
        assert!(positive(1.0)("1.5").unwrap_err().to_string().contains("(0, 1]"));
    }

    #[test]
    fn a_bad_flag_names_flag_value_and_reason() {
        let e = bad_flag("--batch-size", 1000000, "the store holds 128 images");
        assert_eq!(e.to_string(), "--batch-size 1000000: the store holds 128 images");
        assert!(e.is::<BadFlag>());
    }
}
