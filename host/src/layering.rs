//! The layering rule, checked on the source text: every `crate::X` path
//! (and `super::` path reaching the crate root) in a file under `src/`
//! must name a module of the file's own layer or a lower one. The layers
//! are listed in [`LAYERS`]; `lib.rs`, `main.rs` and this file stand
//! outside them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The top-level modules, lowest layer first (the order lib.rs declares
/// them in).
const LAYERS: &[&str] = &[
    "sys",
    "config",
    "transport",
    "comm",
    "witness",
    "ip",
    "resources",
    "appmon",
    "control",
    "daemon",
    "cli",
    "demo",
];

/// Imports of a higher layer tolerated for now, as (from, to).
const EXCEPTIONS: &[(&str, &str)] = &[];

/// Files outside the layers: the crate root, the binary, and this test.
const EXEMPT: &[&str] = &["lib.rs", "main.rs", "layering.rs"];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == module)
}

/// One `crate::` (or root-reaching `super::`) reference.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    /// 1-based line.
    line: usize,
    /// The top-level module it names.
    top: String,
}

/// `source` with comments, string and character literals blanked out
/// (newlines kept), so only code is left to read.
fn code_of(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && next == Some('r')))
            && !prev_is_ident(&chars, i)
            && raw_string_start(&chars, i + usize::from(c == 'b') + 1).is_some()
        {
            let start = i + usize::from(c == 'b') + 1;
            let hashes = raw_string_start(&chars, start).unwrap_or(0);
            let body = start + hashes + 1;
            let mut j = body;
            while j < chars.len() {
                if chars[j] == '"' && chars[j + 1..].iter().take(hashes).all(|&h| h == '#') {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &chars[i..j.min(chars.len())] {
                out.push(blank(ch));
            }
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{1F600}'), not a
            // lifetime ('a).
            let end = if next == Some('\\') {
                chars
                    .get(i + 3..)
                    .and_then(|rest| rest.iter().position(|&ch| ch == '\''))
                    .map(|p| i + 3 + p)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.extend(std::iter::repeat_n(' ', end + 1 - i));
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// At `at`: `#...#"` opening a raw string; how many `#`.
fn raw_string_start(chars: &[char], at: usize) -> Option<usize> {
    let hashes = chars[at.min(chars.len())..]
        .iter()
        .take_while(|&&c| c == '#')
        .count();
    (chars.get(at + hashes) == Some(&'"')).then_some(hashes)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    PathSep,
    Punct(char),
}

fn tokens(code: &str) -> Vec<(usize, Token)> {
    let mut out = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_alphabetic() || c == '_' {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push((n + 1, Token::Ident(chars[start..i].iter().collect())));
            } else if c == ':' && chars.get(i + 1) == Some(&':') {
                out.push((n + 1, Token::PathSep));
                i += 2;
            } else if c.is_whitespace() {
                i += 1;
            } else {
                out.push((n + 1, Token::Punct(c)));
                i += 1;
            }
        }
    }
    out
}

/// The first segment of each item of the use group opening at
/// `tokens[at]` (`{`): `{a, b::c, d::{e, f}}` names a, b and d.
fn group_heads(tokens: &[(usize, Token)], at: usize) -> Vec<(usize, String)> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    for (line, token) in &tokens[at..] {
        match token {
            Token::Punct('{') => {
                depth += 1;
                expect_head = depth == 1;
            }
            Token::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            Token::Punct(',') if depth == 1 => expect_head = true,
            Token::Ident(name) if depth == 1 && expect_head => {
                heads.push((*line, name.clone()));
                expect_head = false;
            }
            _ => {}
        }
    }
    heads
}

/// The top-level modules the code of the file for module `module`
/// (e.g. `["comm", "manager"]`) names through `crate::` or through
/// `super::` reaching the crate root.
fn references(code: &str, module: &[String]) -> Vec<Reference> {
    let tokens = tokens(code);
    let mut found = Vec::new();
    // Inline modules (`mod tests { ... }`) deepen `super`: each with
    // the brace depth inside it.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i].1;
        let after_path_sep = i > 0 && tokens[i - 1].1 == Token::PathSep;
        match token {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                if inline.last() == Some(&depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Token::Ident(word) if word == "mod" => {
                if let (Some((_, Token::Ident(_))), Some((_, Token::Punct('{')))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    inline.push(depth + 1);
                }
            }
            Token::Ident(word) if (word == "crate" || word == "super") && !after_path_sep => {
                // How far up the path climbs, and where its next
                // segment starts.
                let mut at = i;
                let mut ups = 0;
                if word == "crate" {
                    ups = usize::MAX;
                    at += 1;
                } else {
                    while tokens.get(at).map(|t| &t.1) == Some(&Token::Ident("super".into()))
                        && tokens.get(at + 1).map(|t| &t.1) == Some(&Token::PathSep)
                    {
                        ups += 1;
                        at += 2;
                    }
                    at -= 1;
                }
                let reaches_root = ups == usize::MAX || ups == module.len() + inline.len();
                if reaches_root && tokens.get(at).map(|t| &t.1) == Some(&Token::PathSep) {
                    match tokens.get(at + 1) {
                        Some((line, Token::Ident(name))) => found.push(Reference {
                            line: *line,
                            top: name.clone(),
                        }),
                        Some((_, Token::Punct('{'))) => {
                            for (line, name) in group_heads(&tokens, at + 1) {
                                found.push(Reference { line, top: name });
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `comm/manager.rs` is module `comm::manager`; `comm/mod.rs` is `comm`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" {
            parts.push(stem.to_string());
        }
    }
    parts
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_module_imports_a_higher_layer() {
    let src = src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut used_exceptions = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("a file under src");
        let shown = relative.display().to_string().replace('\\', "/");
        if EXEMPT.contains(&shown.as_str()) {
            continue;
        }
        let module = module_of(relative);
        let Some(own) = module.first().and_then(|top| layer(top)) else {
            violations.push(format!(
                "{shown}: belongs to no layer (add its top-level module to LAYERS in lib.rs)"
            ));
            continue;
        };
        let source = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let lines: Vec<&str> = source.lines().collect();
        for reference in references(&code_of(&source), &module) {
            let Some(theirs) = layer(&reference.top) else {
                // Not a top-level module (an item of the crate root,
                // or a module of this file's own folder).
                continue;
            };
            if theirs <= own {
                continue;
            }
            let pair = (LAYERS[own], LAYERS[theirs]);
            if EXCEPTIONS.contains(&pair) {
                used_exceptions.insert(pair);
                continue;
            }
            violations.push(format!(
                "{shown}:{}: {} (layer {own}) imports {} (layer {theirs}), a higher layer: `{}`",
                reference.line,
                LAYERS[own],
                reference.top,
                lines.get(reference.line - 1).map_or("", |l| l.trim())
            ));
        }
    }
    for exception in EXCEPTIONS {
        if !used_exceptions.contains(exception) {
            violations.push(format!(
                "the exception {} -> {} is no longer needed: remove it from EXCEPTIONS in layering.rs",
                exception.0, exception.1
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "layering (lowest first: {}):\n{}",
        LAYERS.join(", "),
        violations.join("\n")
    );
}

/// LAYERS names exactly the modules lib.rs declares (but this test).
#[test]
fn every_top_level_module_has_a_layer() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("mod "))?;
            rest.strip_suffix(';').map(str::to_string)
        })
        .filter(|module| module != "layering")
        .collect();
    let layers: BTreeSet<String> = LAYERS.iter().map(|l| (*l).to_string()).collect();
    assert_eq!(declared, layers, "lib.rs's modules and LAYERS differ");
}

#[test]
fn the_scanner_finds_paths_and_groups_and_skips_comments_and_strings() {
    let source = r##"
//! Uses [`crate::demo`] in a comment only.
use crate::{cli, control::{client, ipc}, sys as system};
use crate::comm::Command;
/* crate::daemon, /* nested */ crate::daemon */
fn f() -> &'static str {
    let _ = crate::appmon::proto::DEFAULT_PORT;
    let _ = 'x';
    let _ = ['\'', '\\', '"'];
    let _ = "crate::demo \" crate::demo";
    let _ = r#"crate::demo "quoted" "#;
    pub(crate) fn g() {}
    crate::transport::tcp::run_path;
    "done"
}
"##;
    let module = vec!["transport".to_string(), "tcp".to_string()];
    let found: Vec<(usize, String)> = references(&code_of(source), &module)
        .into_iter()
        .map(|r| (r.line, r.top))
        .collect();
    assert_eq!(
        found,
        [
            (3, "cli".to_string()),
            (3, "control".to_string()),
            (3, "sys".to_string()),
            (4, "comm".to_string()),
            (7, "appmon".to_string()),
            (13, "transport".to_string()),
        ]
    );
}

#[test]
fn super_counts_from_the_file_and_its_inline_modules() {
    let source = "
use super::Inbound;
use super::super::cli;
mod tests {
    use super::super::super::demo;
    use super::super::tcp;
}
use super::super::{control, daemon};
";
    let module = vec!["transport".to_string(), "tcp".to_string()];
    let found: Vec<(usize, String)> = references(&code_of(source), &module)
        .into_iter()
        .map(|r| (r.line, r.top))
        .collect();
    assert_eq!(
        found,
        [
            (3, "cli".to_string()),
            (5, "demo".to_string()),
            (8, "control".to_string()),
            (8, "daemon".to_string()),
        ]
    );
    assert_eq!(module_of(Path::new("comm/mod.rs")), ["comm"]);
    assert_eq!(
        module_of(Path::new("resources/lcd/model.rs")),
        ["resources", "lcd", "model"]
    );
    assert_eq!(module_of(Path::new("daemon.rs")), ["daemon"]);
}
