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
