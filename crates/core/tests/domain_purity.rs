//! Proves `core::domain` stays pure: no source file under `src/domain/` names IO, a clock,
//! randomness, threads, the environment, async, or the store (the architecture invariant in
//! `src/domain/mod.rs`). The seeded day model (`src/workload/`) keeps the same rule, so the
//! same seed yields the same day: its only chance comes from its seed.
//!
//! The check reads the code's tokens, not its text, so comments and strings may mention what
//! the code must not use, and a word that merely contains a forbidden one (`operand`) passes.

use std::fs;
use std::path::{Path, PathBuf};

/// Identifiers the domain must not use, with what they would bring in. `std::fs` and friends
/// are caught by their last segment, so `use std::{env, fs}` is caught too.
const FORBIDDEN: &[(&str, &str)] = &[
    ("tokio", "an async runtime"),
    ("async", "async code"),
    ("await", "async code"),
    ("fs", "file IO (std::fs)"),
    ("net", "network IO (std::net)"),
    ("thread", "threads (std::thread)"),
    ("env", "the process environment (std::env)"),
    ("SystemTime", "a clock"),
    ("Instant", "a clock"),
    ("rand", "randomness"),
    ("orderly_store", "the store"),
];

/// A token of Rust code that the check cares about.
#[derive(Debug, PartialEq)]
enum Token<'a> {
    Ident(&'a str),
    PathSep,
}

/// The identifiers and `::` of `source`, skipping comments, strings and character literals.
/// Enough of a lexer for this check: raw strings and nested block comments are not handled,
/// and the domain does not use them.
fn tokens(source: &str) -> Vec<(usize, Token<'_>)> {
    let bytes = source.as_bytes();
    let (mut out, mut line, mut i) = (Vec::new(), 1, 0);
    let skip_to = |from: usize, end: &str| {
        source[from..].find(end).map_or(source.len(), |at| from + at + end.len())
    };
    while i < bytes.len() {
        let rest = &source[i..];
        let next = if rest.starts_with("//") {
            rest.find('\n').map_or(source.len(), |at| i + at)
        } else if rest.starts_with("/*") {
            skip_to(i + 2, "*/")
        } else if rest.starts_with('"') {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            j + 1
        } else if rest.starts_with("'\\") {
            // An escaped character: the escape's first character may itself be a quote.
            skip_to(i + 3, "'")
        } else if rest.starts_with('\'') && rest.chars().nth(2) == Some('\'') {
            i + 1 + rest[1..].chars().next().map_or(0, char::len_utf8) + 1
        } else if rest.starts_with("::") {
            out.push((line, Token::PathSep));
            i + 2
        } else if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            let len =
                rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            out.push((line, Token::Ident(&rest[..len])));
            i + len
        } else {
            i + rest.chars().next().map_or(1, char::len_utf8)
        };
        line += source[i..next.min(source.len())].matches('\n').count();
        i = next;
    }
    out
}

/// Every forbidden use in `source`, as "line N: `word` (why)". Besides the forbidden
/// identifiers, a `crate::` path must stay inside `crate::domain`: the crate root re-exports
/// store types.
fn violations(source: &str) -> Vec<String> {
    let tokens = tokens(source);
    let mut found = Vec::new();
    for (at, (line, token)) in tokens.iter().enumerate() {
        let Token::Ident(word) = token else { continue };
        if let Some((_, why)) = FORBIDDEN.iter().find(|(forbidden, _)| forbidden == word) {
            found.push(format!("line {line}: `{word}` ({why})"));
        }
        let leaves_domain = *word == "crate"
            && tokens.get(at + 1).map(|(_, t)| t) == Some(&Token::PathSep)
            && tokens.get(at + 2).map(|(_, t)| t) != Some(&Token::Ident("domain"));
        if leaves_domain {
            found.push(format!("line {line}: `crate::` outside `crate::domain`"));
        }
    }
    found
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn the_domain_does_no_io_reads_no_clock_draws_no_randomness_and_is_not_async() {
    assert_pure("src/domain", 9);
}

#[test]
fn the_workload_model_is_as_pure_as_the_domain() {
    assert_pure("src/workload", 4);
}

fn assert_pure(folder: &str, at_least: usize) {
    let domain = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let files = rust_files(&domain);
    assert!(
        files.iter().any(|f| f.ends_with("mod.rs")) && files.len() >= at_least,
        "expected the pure files under {}, found {files:?}",
        domain.display()
    );
    let mut report = Vec::new();
    for file in &files {
        let source = fs::read_to_string(file).expect("a readable source file");
        for violation in violations(&source) {
            report.push(format!("{}: {violation}", file.display()));
        }
    }
    assert!(
        report.is_empty(),
        "{folder} must stay pure (see src/domain/mod.rs):\n{}",
        report.join("\n")
    );
}

// The check itself.

#[test]
fn the_check_catches_each_forbidden_use() {
    let uses = [
        "use tokio::sync::mpsc;",
        "tokio::spawn(work);",
        "pub async fn decide() {}",
        "let events = decide().await;",
        "let log = std::fs::read(path);",
        "use std::{collections::BTreeMap, fs};",
        "use std::net::TcpStream;",
        "std::thread::sleep(pause);",
        "let ttl = std::env::var(\"TTL\");",
        "let now = std::time::SystemTime::now();",
        "use std::time::Instant;",
        "let pick: u8 = rand::random();",
        "use rand::Rng;",
        "extern crate rand;",
        "use orderly_store::Log;",
        "use crate::Position;",
        "fn f() -> crate::StreamVersion { todo!() }",
    ];
    for code in uses {
        assert!(!violations(code).is_empty(), "missed a forbidden use in {code:?}");
    }
    assert_eq!(violations("fn f() {}\n\nuse std::fs;"), ["line 3: `fs` (file IO (std::fs))"]);
}

#[test]
fn the_check_ignores_comments_strings_and_lookalikes() {
    let allowed = [
        "let operand = brand + random_order + grand_total;",
        "let environment = 1; let fsm = 2; let network = 3; let instant_refund = 4;",
        "// The domain does no IO: no tokio, no std::fs, no rand.",
        "/* async and .await are for the engine */ let x = 1;",
        "let message = \"use std::fs; tokio::spawn; rand::random()\";",
        "let escaped = \"a \\\" then std::env\";",
        "let quote = '\"'; let tick = '\\''; let t: &'static str = \"tokio\";",
        "pub(crate) fn decide() {}",
        "use crate::domain::types::Sku;",
        "use super::limits::MAX_QUANTITY;",
    ];
    for code in allowed {
        assert_eq!(violations(code), Vec::<String>::new(), "in {code:?}");
    }
}
