//! Slurm's launch environment, read as torchrun's (see [`torchrun_equivalent`]).
//!
//! Under `srun` each task learns its place from Slurm's variables
//! (<https://slurm.schedmd.com/srun.html#SECTION_OUTPUT-ENVIRONMENT-VARIABLES>):
//! `SLURM_PROCID` is the rank, `SLURM_NTASKS` the world size, `SLURM_LOCALID` the rank on
//! its node and `SLURM_JOB_NODELIST` the job's hosts in Slurm's compressed host-list form
//! (`node[01-04,07]`), which [`expand_nodelist`] expands as `scontrol show hostnames` does.
//! The rendezvous host is the first of them unless `MASTER_ADDR` says otherwise, and the
//! port is `MASTER_PORT` or [`DEFAULT_MASTER_PORT`].

/// The most hosts [`expand_nodelist`] returns; a longer expansion is an error, checked
/// before anything is allocated.
pub const MAX_HOSTS: usize = 1_000_000;

/// torch.distributed's customary rendezvous port, used when `MASTER_PORT` is unset under
/// Slurm.
pub const DEFAULT_MASTER_PORT: u16 = 29500;

/// A Slurm host list that cannot be expanded; each variant names the offending text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeListError {
    /// The list has no host at all.
    #[error("empty host list \"{list}\"")]
    Empty {
        /// The list.
        list: String,
    },
    /// Two commas in a row, or one at either end.
    #[error("empty host name in host list \"{list}\"")]
    EmptyHost {
        /// The list.
        list: String,
    },
    /// A `[` without its `]`, or a `]` without its `[`.
    #[error("unbalanced '{bracket}' in host list \"{list}\"")]
    Unbalanced {
        /// The bracket that has no partner.
        bracket: char,
        /// The list.
        list: String,
    },
    /// A `[` inside brackets.
    #[error("nested '[' in host list \"{list}\"")]
    Nested {
        /// The list.
        list: String,
    },
    /// A range whose low bound is above its high one.
    #[error("range \"{range}\" has its low above its high in host list \"{list}\"")]
    Backwards {
        /// The range, as written.
        range: String,
        /// The list.
        list: String,
    },
    /// A range bound that is not a decimal number (or is empty, or too large for `u64`).
    #[error("non-numeric range bound \"{bound}\" in host list \"{list}\"")]
    NotNumber {
        /// The bound, as written.
        bound: String,
        /// The list.
        list: String,
    },
    /// An expansion of more than [`MAX_HOSTS`] hosts.
    #[error("host list \"{list}\" expands to more than {max} hosts", max = MAX_HOSTS)]
    TooMany {
        /// The list.
        list: String,
    },
}

/// One process's place in a Slurm launch, as the strings torchrun's variables would hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlurmVars {
    /// `RANK`, from `SLURM_PROCID`.
    pub rank: String,
    /// `WORLD_SIZE`, from `SLURM_NTASKS`.
    pub world_size: String,
    /// `LOCAL_RANK`, from `SLURM_LOCALID` when set.
    pub local_rank: Option<String>,
    /// `MASTER_ADDR` when set, else the first host of the job's node list, if any.
    pub master_addr: Option<String>,
    /// `MASTER_PORT` when set, else [`DEFAULT_MASTER_PORT`].
    pub master_port: Option<String>,
}

impl SlurmVars {
    /// The value that stands for torchrun's variable `name` (`RANK`, `WORLD_SIZE`,
    /// `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`); `None` for any other name.
    pub fn get(&self, name: &str) -> Option<String> {
        match name {
            "RANK" => Some(self.rank.clone()),
            "WORLD_SIZE" => Some(self.world_size.clone()),
            "LOCAL_RANK" => self.local_rank.clone(),
            "MASTER_ADDR" => self.master_addr.clone(),
            "MASTER_PORT" => self.master_port.clone(),
            _ => None,
        }
    }
}

/// The torchrun variables a Slurm task stands for, read through `get`: `Ok(None)` unless
/// both `SLURM_PROCID` and `SLURM_NTASKS` are set. Values pass through as strings (the
/// caller checks the numbers); the error is a malformed `SLURM_JOB_NODELIST` (or
/// `SLURM_NODELIST`, read when the former is unset) when `MASTER_ADDR` is unset.
pub fn torchrun_equivalent(get: &impl Fn(&str) -> Option<String>) -> Result<Option<SlurmVars>, NodeListError> {
    let (Some(rank), Some(world_size)) = (get("SLURM_PROCID"), get("SLURM_NTASKS")) else {
        return Ok(None);
    };
    let master_addr = match get("MASTER_ADDR") {
        Some(addr) => Some(addr),
        None => get("SLURM_JOB_NODELIST")
            .or_else(|| get("SLURM_NODELIST"))
            .map(|list| first_host(&list))
            .transpose()?,
    };
    Ok(Some(SlurmVars {
        rank,
        world_size,
        local_rank: get("SLURM_LOCALID"),
        master_addr,
        master_port: Some(get("MASTER_PORT").unwrap_or_else(|| DEFAULT_MASTER_PORT.to_string())),
    }))
}

/// Every host of a Slurm host list, in order, as `scontrol show hostnames` prints them:
/// `a,b[1-2],c[05,07-08]x` is `a b1 b2 c05x c07x c08x`. A range keeps its low bound's
/// width (`[01-04]` pads, `[8-11]` does not); several groups in one name multiply, the
/// leftmost outermost. More than [`MAX_HOSTS`] hosts is an error, found before expanding.
pub fn expand_nodelist(list: &str) -> Result<Vec<String>, NodeListError> {
    let patterns = parse_list(list)?;
    let total = patterns
        .iter()
        .try_fold(0usize, |sum, p| sum.checked_add(p.count()?))
        .filter(|&n| n <= MAX_HOSTS)
        .ok_or_else(|| NodeListError::TooMany { list: list.to_owned() })?;
    let mut hosts = Vec::with_capacity(total);
    for pattern in &patterns {
        hosts.extend(pattern.expand());
    }
    Ok(hosts)
}

/// The first host of a Slurm host list, built without expanding the rest. The whole list's
/// syntax is checked; the [`MAX_HOSTS`] bound is not, since nothing is expanded.
pub fn first_host(list: &str) -> Result<String, NodeListError> {
    let patterns = parse_list(list)?;
    let first = patterns
        .first()
        .ok_or_else(|| NodeListError::Empty { list: list.to_owned() })?;
    Ok(first.first())
}

/// `lo..=hi`, each number written with at least `width` digits.
#[derive(Clone, Copy, Debug)]
struct Range {
    lo: u64,
    hi: u64,
    width: usize,
}

/// A piece of one host name: literal text, or a bracket group of ranges.
#[derive(Debug)]
enum Part<'a> {
    Text(&'a str),
    Group(Vec<Range>),
}

/// One comma-separated entry of a host list.
#[derive(Debug)]
struct Pattern<'a> {
    parts: Vec<Part<'a>>,
}

impl Pattern<'_> {
    /// The number of hosts it expands to; `None` past `usize`.
    fn count(&self) -> Option<usize> {
        self.parts.iter().try_fold(1usize, |product, part| match part {
            Part::Text(_) => Some(product),
            Part::Group(ranges) => product.checked_mul(group_size(ranges)?),
        })
    }

    /// Its hosts; the caller has bounded [`Pattern::count`].
    fn expand(&self) -> Vec<String> {
        let mut hosts = vec![String::new()];
        for part in &self.parts {
            match part {
                Part::Text(text) => hosts.iter_mut().for_each(|h| h.push_str(text)),
                Part::Group(ranges) => {
                    let values: Vec<String> = ranges.iter().flat_map(|r| range_values(*r)).collect();
                    hosts = hosts
                        .iter()
                        .flat_map(|h| values.iter().map(move |v| format!("{h}{v}")))
                        .collect();
                }
            }
        }
        hosts
    }

    /// Its first host: each group's first value.
    fn first(&self) -> String {
        let mut host = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => host.push_str(text),
                Part::Group(ranges) => {
                    if let Some(r) = ranges.first() {
                        host.push_str(&pad(r.lo, r.width));
                    }
                }
            }
        }
        host
    }
}

/// The number of values in a group; `None` past `usize`.
fn group_size(ranges: &[Range]) -> Option<usize> {
    ranges.iter().try_fold(0usize, |sum, r| {
        let size = usize::try_from(r.hi - r.lo).ok()?.checked_add(1)?;
        sum.checked_add(size)
    })
}

/// A range's values, padded.
fn range_values(r: Range) -> impl Iterator<Item = String> {
    (r.lo..=r.hi).map(move |n| pad(n, r.width))
}

/// `n` in decimal, zero-padded to `width` digits.
fn pad(n: u64, width: usize) -> String {
    format!("{n:0width$}")
}

/// The list's entries, parsed.
fn parse_list(list: &str) -> Result<Vec<Pattern<'_>>, NodeListError> {
    let trimmed = list.trim();
    if trimmed.is_empty() {
        return Err(NodeListError::Empty { list: list.to_owned() });
    }
    split_hosts(trimmed, list)?
        .into_iter()
        .map(|host| parse_pattern(host, list))
        .collect()
}

/// Splits at the commas outside brackets, checking that brackets pair and do not nest.
fn split_hosts<'a>(text: &'a str, list: &str) -> Result<Vec<&'a str>, NodeListError> {
    let mut hosts = Vec::new();
    let (mut open, mut start) = (false, 0);
    for (i, c) in text.char_indices() {
        match (c, open) {
            ('[', true) => return Err(NodeListError::Nested { list: list.to_owned() }),
            (']', false) => {
                return Err(NodeListError::Unbalanced {
                    bracket: ']',
                    list: list.to_owned(),
                })
            }
            ('[', false) | (']', true) => open = !open,
            (',', false) => {
                hosts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if open {
        return Err(NodeListError::Unbalanced {
            bracket: '[',
            list: list.to_owned(),
        });
    }
    hosts.push(&text[start..]);
    if hosts.iter().any(|h| h.is_empty()) {
        return Err(NodeListError::EmptyHost { list: list.to_owned() });
    }
    Ok(hosts)
}

/// One entry (its brackets already checked) as text and groups.
fn parse_pattern<'a>(host: &'a str, list: &str) -> Result<Pattern<'a>, NodeListError> {
    let mut parts = Vec::new();
    let mut rest = host;
    while let Some((text, after)) = rest.split_once('[') {
        let (group, tail) = after.split_once(']').ok_or_else(|| NodeListError::Unbalanced {
            bracket: '[',
            list: list.to_owned(),
        })?;
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        let ranges = group
            .split(',')
            .map(|item| parse_range(item, list))
            .collect::<Result<_, _>>()?;
        parts.push(Part::Group(ranges));
        rest = tail;
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest));
    }
    Ok(Pattern { parts })
}

/// `lo-hi` or a single number.
fn parse_range(item: &str, list: &str) -> Result<Range, NodeListError> {
    let (lo_text, hi_text) = item.split_once('-').unwrap_or((item, item));
    let (lo, hi) = (parse_bound(lo_text, list)?, parse_bound(hi_text, list)?);
    if lo > hi {
        return Err(NodeListError::Backwards {
            range: item.to_owned(),
            list: list.to_owned(),
        });
    }
    Ok(Range {
        lo,
        hi,
        width: lo_text.len(),
    })
}

/// A decimal bound: digits only, fitting in `u64`.
fn parse_bound(text: &str, list: &str) -> Result<u64, NodeListError> {
    let not_number = || NodeListError::NotNumber {
        bound: text.to_owned(),
        list: list.to_owned(),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_number());
    }
    text.parse().map_err(|_| not_number())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn forms() {
        let table: &[(&str, &[&str])] = &[
            ("node7", &["node7"]),
            ("a,b,c", &["a", "b", "c"]),
            ("node[01-04,07]", &["node01", "node02", "node03", "node04", "node07"]),
            ("n[8-11]", &["n8", "n9", "n10", "n11"]),
            ("gpu[001-003]", &["gpu001", "gpu002", "gpu003"]),
            (
                "rack[1-2]-node[01-02]",
                &["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"],
            ),
            ("a1,b[1-2],c[05,07-08]x", &["a1", "b1", "b2", "c05x", "c07x", "c08x"]),
            ("n[3]", &["n3"]),
            ("n[1-2]-ib", &["n1-ib", "n2-ib"]),
            ("[1-2]", &["1", "2"]),
            ("n[09-10]", &["n09", "n10"]),
            ("  x[1,3],y  ", &["x1", "x3", "y"]),
        ];
        for (list, want) in table {
            let want: Vec<String> = want.iter().map(ToString::to_string).collect();
            assert_eq!(expand_nodelist(list), Ok(want), "{list}");
        }
    }

    #[test]
    fn errors() {
        let table = [
            ("", "empty host list \"\""),
            ("a,,b", "empty host name in host list \"a,,b\""),
            ("a,", "empty host name in host list \"a,\""),
            ("node[1-2", "unbalanced '[' in host list \"node[1-2\""),
            ("node1-2]", "unbalanced ']' in host list \"node1-2]\""),
            ("n[1[2]]", "nested '[' in host list \"n[1[2]]\""),
            (
                "n[5-3]",
                "range \"5-3\" has its low above its high in host list \"n[5-3]\"",
            ),
            ("n[a-3]", "non-numeric range bound \"a\" in host list \"n[a-3]\""),
            ("n[]", "non-numeric range bound \"\" in host list \"n[]\""),
            ("n[1-2-3]", "non-numeric range bound \"2-3\" in host list \"n[1-2-3]\""),
            (
                "n[1-1000001]",
                "host list \"n[1-1000001]\" expands to more than 1000000 hosts",
            ),
            (
                "a[1-1000]b[1-1001]",
                "host list \"a[1-1000]b[1-1001]\" expands to more than 1000000 hosts",
            ),
            (
                "n[0-18446744073709551615]",
                "host list \"n[0-18446744073709551615]\" expands to more than 1000000 hosts",
            ),
        ];
        for (list, want) in table {
            assert_eq!(
                expand_nodelist(list).map_err(|e| e.to_string()),
                Err(want.to_owned()),
                "{list}"
            );
        }
        let err = expand_nodelist("node[1-2");
        assert_eq!(
            err,
            Err(NodeListError::Unbalanced {
                bracket: '[',
                list: "node[1-2".into()
            })
        );
    }

    #[test]
    fn bound_is_inclusive() {
        assert_eq!(expand_nodelist("n[1-1000000]").map(|h| h.len()), Ok(MAX_HOSTS));
    }

    #[test]
    fn first_host_of_huge_range() {
        assert_eq!(first_host("n[1-99999999999]").as_deref(), Ok("n1"));
        assert_eq!(first_host("r[07-9]-n[0001-9999999],z").as_deref(), Ok("r07-n0001"));
        assert_eq!(first_host("a,b[").ok(), None);
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn torchrun_from_slurm() {
        assert_eq!(torchrun_equivalent(&env(&[])), Ok(None));
        assert_eq!(torchrun_equivalent(&env(&[("SLURM_PROCID", "0")])), Ok(None));
        let base = [("SLURM_PROCID", "3"), ("SLURM_NTASKS", "8"), ("SLURM_LOCALID", "1")];
        let with = |extra: &[(&str, &str)]| torchrun_equivalent(&env(&[&base[..], extra].concat()));
        let vars = |addr: Option<&str>, port: &str| SlurmVars {
            rank: "3".into(),
            world_size: "8".into(),
            local_rank: Some("1".into()),
            master_addr: addr.map(str::to_owned),
            master_port: Some(port.into()),
        };
        assert_eq!(with(&[]), Ok(Some(vars(None, "29500"))));
        let list = ("SLURM_JOB_NODELIST", "gpu[004-007]");
        assert_eq!(with(&[list]), Ok(Some(vars(Some("gpu004"), "29500"))));
        assert_eq!(
            with(&[("SLURM_NODELIST", "x[2-3]")]),
            Ok(Some(vars(Some("x2"), "29500")))
        );
        let given = [list, ("MASTER_ADDR", "head"), ("MASTER_PORT", "1234")];
        assert_eq!(with(&given), Ok(Some(vars(Some("head"), "1234"))));
        let bad = with(&[("SLURM_JOB_NODELIST", "n[2-1]")]);
        assert!(matches!(bad, Err(NodeListError::Backwards { .. })));
    }
}
