//! Every `slotcon-*` command in README.md and docs/*.md names a binary, a subcommand and
//! flags that exist: each is looked up in that binary's own `--help`, so a renamed or
//! removed flag fails here before a reader meets it.

use std::collections::BTreeMap;

use slotcon_tests::{bin, files_with_extension, root, run_ok};

/// The shell lines of the fenced code blocks of `text` (not those marked as another
/// language), with `\` continuations joined.
fn shell_lines(text: &str) -> Vec<String> {
    let (mut lines, mut inside, mut shell, mut pending) = (Vec::new(), false, false, String::new());
    for line in text.lines() {
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            inside = !inside;
            shell = inside && matches!(lang.trim(), "" | "sh" | "bash" | "shell" | "console");
            continue;
        }
        if !(inside && shell) {
            continue;
        }
        let line = line.split(" # ").next().unwrap_or("").trim();
        if line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => lines.push(std::mem::take(&mut pending) + line),
        }
    }
    lines
}

/// `(binary, subcommand, flags)` of every `slotcon-*` command on `line`.
fn commands(line: &str) -> Vec<(String, Option<String>, Vec<String>)> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let mut found = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let name = t.rsplit('/').next().unwrap_or(t);
        if !name.starts_with("slotcon-") || !root().join("target/release").join(name).is_file() {
            continue;
        }
        let rest: Vec<&str> = tokens[i + 1..]
            .iter()
            .take_while(|t| !matches!(**t, "|" | ">" | ">>" | "&&" | ";" | "#" | "2>&1"))
            .copied()
            .collect();
        let sub = rest.first().filter(|s| !s.starts_with('-')).map(|s| s.to_string());
        let flags = rest
            .iter()
            .filter(|t| t.starts_with("--") && t.len() > 2)
            .map(|t| t.split('=').next().unwrap_or(t).to_string())
            .collect();
        found.push((name.to_string(), sub, flags));
    }
    found
}

#[test]
fn every_documented_command_names_flags_its_binary_has() {
    let mut files = vec![root().join("README.md")];
    files.extend(files_with_extension("docs", "md"));
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut help = |name: &str, sub: Option<&str>| -> String {
        let key = format!("{name} {}", sub.unwrap_or(""));
        helps
            .entry(key)
            .or_insert_with(|| run_ok(bin(name).args(sub).arg("--help")))
            .clone()
    };
    let (mut checked, mut missing) = (0, Vec::new());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for line in shell_lines(&text) {
            for (name, sub, flags) in commands(&line) {
                let top = help(&name, None);
                // A subcommand only where the binary has them and this one is listed.
                let sub = sub.filter(|s| top.contains("Commands:") && top.contains(&format!("  {s} ")));
                let text = help(&name, sub.as_deref());
                for flag in flags {
                    checked += 1;
                    if !text.contains(&format!("{flag} "))
                        && !text.contains(&format!("{flag}\n"))
                        && !text.contains(&format!("{flag},"))
                    {
                        let at = file.strip_prefix(root()).unwrap().display().to_string();
                        missing.push(format!(
                            "{at}: `{name} {}` has no {flag}",
                            sub.clone().unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} flags found in the docs' commands");
    assert!(
        missing.is_empty(),
        "documented flags that do not exist:\n{}",
        missing.join("\n")
    );
}

/// Every `.rs` file of the workspace's crates, with its text.
fn sources() -> Vec<(std::path::PathBuf, String)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.ends_with("target") && !p.ends_with(".venv") {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push((p.clone(), std::fs::read_to_string(&p).unwrap_or_default()));
            }
        }
    }
    let mut out = Vec::new();
    for dir in ["shards", "ingest", "augment", "train", "bench", "tests", "python"] {
        walk(&root().join(dir), &mut out);
    }
    out
}

/// Whether `text` defines `name` (a function, a type or a constant).
fn defines(text: &str, name: &str) -> bool {
    ["fn", "struct", "enum", "trait", "type", "const", "mod"]
        .iter()
        .any(|kw| {
            text.contains(&format!("{kw} {name}("))
                || text.contains(&format!("{kw} {name} "))
                || text.contains(&format!("{kw} {name}<"))
                || text.contains(&format!("{kw} {name};"))
        })
}

/// ARCHITECTURE.md names only what exists: every backticked workspace path (`train/src/align.rs`,
/// `augment/src/ops/`) is there, and in the table of one image's path each row's file exists
/// and defines the row's first named function, and every other code name in the row is
/// defined somewhere in the workspace.
#[test]
fn architecture_names_only_files_and_functions_that_exist() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let sources = sources();
    let tops = [
        "shards/", "ingest/", "augment/", "train/", "bench/", "tests/", "python/", "scripts/", "docs/", "configs/",
    ];
    let ticked: Vec<&str> = text.split('`').skip(1).step_by(2).collect();
    let mut missing = Vec::new();
    let paths: Vec<&str> = ticked
        .iter()
        .copied()
        .filter(|t| tops.iter().any(|top| t.starts_with(top)) && !t.contains(' '))
        .collect();
    for p in &paths {
        if !root().join(p).exists() {
            missing.push(format!("file {p}"));
        }
    }
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("| ") && l[2..].starts_with(|c: char| c.is_ascii_digit()) && l.contains(".rs` |"))
        .collect();
    let mut named = 0;
    for row in &rows {
        let cols: Vec<&str> = row.split('|').map(str::trim).collect();
        let (file, function) = (cols[2].trim_matches('`'), cols[3]);
        let names: Vec<&str> = function
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|n| n.chars().all(|c| c.is_alphanumeric() || c == '_' || c == ':') && !n.is_empty())
            .collect();
        let here = root().join(file);
        let own = sources
            .iter()
            .filter(|(p, _)| p.starts_with(&here))
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        for (i, name) in names.iter().enumerate() {
            let last = name.rsplit("::").next().unwrap();
            let found = if i == 0 {
                defines(&own, last)
            } else {
                sources.iter().any(|(_, t)| defines(t, last))
            };
            named += 1;
            if !found {
                missing.push(format!("{name} ({})", if i == 0 { file } else { "the workspace" }));
            }
        }
    }
    assert!(
        paths.len() >= 40 && rows.len() >= 18 && named >= 25,
        "the parser lost ARCHITECTURE.md: {} paths, {} rows, {named} names",
        paths.len(),
        rows.len()
    );
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names what does not exist: {missing:?}"
    );
}
