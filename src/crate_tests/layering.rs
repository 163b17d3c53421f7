//! The layering of ARCHITECTURE.md, enforced: every module of `src/` may import only the
//! modules its row of the module table lists under "may import". The test reads that table and
//! every source file, test modules included, and resolves each path that leaves the module:
//! `crate::...` (a root re-export such as `crate::Result` counts as the module it comes from,
//! as `src/lib.rs` says) and a `super::` that climbs out of it. Comments and string literals are
//! not code and are left out. The rows of `src/lib.rs` ("everything") and of the CLI (a crate of
//! its own, which can reach only the public API) are not checked; this module is part of the
//! crate root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The module table of ARCHITECTURE.md: each checked module with what it may import.
fn table() -> BTreeMap<String, Vec<String>> {
    let text = read(&root().join("ARCHITECTURE.md"));
    let mut rules = BTreeMap::new();
    for line in text.lines().filter(|line| line.starts_with("| `src/")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(module), Some(may_import)) = (cells.get(1), cells.get(3)) else {
            panic!("a module table row without three cells: {line}");
        };
        let module = module
            .trim_matches('`')
            .trim_start_matches("src/")
            .trim_end_matches('/')
            .trim_end_matches(".rs");
        if module == "lib" || module.starts_with("bin") || module == "crate_tests" {
            continue;
        }
        let allowed = may_import
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        rules.insert(module.to_owned(), allowed);
    }
    assert!(
        rules.len() >= 8,
        "the module table was not found: {rules:?}"
    );
    rules
}

/// Which module each item re-exported at the crate root comes from (`pub use module::...` or
/// `pub use crate::module::...` in `src/lib.rs`, outside its inline modules).
fn root_exports() -> BTreeMap<String, String> {
    let mut exports = BTreeMap::new();
    for statement in root_statements(&strip(&read(&root().join("src/lib.rs")))) {
        let Some((_, rest)) = statement.split_once("pub use ") else {
            continue;
        };
        let rest = rest.trim_start().trim_start_matches("crate::");
        let Some((module, items)) = rest.split_once("::") else {
            continue;
        };
        for item in items.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if !item.is_empty() {
                exports.insert(item.to_owned(), module.trim().to_owned());
            }
        }
    }
    exports
}

/// The statements of `code` (split at `;`) outside any inline `mod name { ... }`.
fn root_statements(code: &str) -> Vec<String> {
    let mut statements = vec![String::new()];
    let mut mods_open: Vec<bool> = Vec::new();
    for (i, c) in code.char_indices() {
        match c {
            '{' => mods_open.push(opens_inline_mod(code.get(..i).unwrap_or_default())),
            '}' => {
                mods_open.pop();
            }
            _ => {}
        }
        let inside_mod = mods_open.iter().any(|&m| m);
        if c == ';' && !inside_mod {
            statements.push(String::new());
        } else if !inside_mod && let Some(statement) = statements.last_mut() {
            statement.push(c);
        }
    }
    statements
}

/// `source` with comments, string literals and character literals blanked out (newlines and
/// byte positions kept), so that only code is left.
fn strip(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let next = chars.get(i + 1).copied();
        let end = match (c, next) {
            ('/', Some('/')) => line_end(&chars, i),
            ('/', Some('*')) => block_comment_end(&chars, i),
            ('"', _) => string_end(&chars, i + 1, 0),
            ('r', Some('"' | '#')) if !ident_before(&chars, i) => raw_string_end(&chars, i + 1),
            ('\'', _) => char_literal_end(&chars, i),
            _ => None,
        };
        match end {
            Some(end) => {
                let blanked = chars.get(i..end).unwrap_or_default();
                out.extend(blanked.iter().map(|&c| if c == '\n' { '\n' } else { ' ' }));
                i = end;
            }
            None => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i.checked_sub(1)
        .and_then(|j| chars.get(j))
        .is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

fn line_end(chars: &[char], from: usize) -> Option<usize> {
    let len = chars.iter().skip(from).take_while(|&&c| c != '\n').count();
    Some(from + len)
}

fn block_comment_end(chars: &[char], from: usize) -> Option<usize> {
    let mut depth = 0;
    let mut i = from;
    while i < chars.len() {
        match (chars.get(i), chars.get(i + 1)) {
            (Some('/'), Some('*')) => (depth, i) = (depth + 1, i + 2),
            (Some('*'), Some('/')) if depth == 1 => return Some(i + 2),
            (Some('*'), Some('/')) => (depth, i) = (depth - 1, i + 2),
            _ => i += 1,
        }
    }
    Some(chars.len())
}

/// The end of a string whose body starts at `from`, closed by `"` and `hashes` `#`s.
fn string_end(chars: &[char], from: usize, hashes: usize) -> Option<usize> {
    let mut i = from;
    while let Some(&c) = chars.get(i) {
        if c == '\\' && hashes == 0 {
            i += 2;
            continue;
        }
        let closing = (1..=hashes).all(|k| chars.get(i + k) == Some(&'#'));
        if c == '"' && closing {
            return Some(i + 1 + hashes);
        }
        i += 1;
    }
    Some(chars.len())
}

/// A raw string `r#"..."#` whose `r` is just before `from`; `None` when it is not one.
fn raw_string_end(chars: &[char], from: usize) -> Option<usize> {
    let hashes = chars.iter().skip(from).take_while(|&&c| c == '#').count();
    (chars.get(from + hashes) == Some(&'"')).then_some(())?;
    string_end(chars, from + hashes + 1, hashes)
}

/// A character literal at `from` (`'x'`, `'\n'`, `'\u{..}'`); `None` for a lifetime.
fn char_literal_end(chars: &[char], from: usize) -> Option<usize> {
    match chars.get(from + 1) {
        Some('\\') => {
            let len = chars
                .iter()
                .skip(from + 2)
                .take_while(|&&c| c != '\'')
                .count();
            Some(from + 2 + len + 1)
        }
        Some(_) if chars.get(from + 2) == Some(&'\'') => Some(from + 3),
        _ => None,
    }
}

/// The modules a path that leaves the module names: the first segment of `crate::...`, or of
/// each path of a `crate::{...}` group.
fn first_segments(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(group) = rest.trim_start().strip_prefix('{') else {
        return vec![ident(rest)];
    };
    let mut segments = Vec::new();
    let (mut depth, mut item_start) = (0usize, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                segments.push(ident(group.get(item_start..i).unwrap_or_default()));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                segments.push(ident(group.get(item_start..i).unwrap_or_default()));
                item_start = i + 1;
            }
            _ => {}
        }
    }
    segments.retain(|s| !s.is_empty());
    segments
}

/// Every path in `code` that leaves its module, as the first segment after `crate::`. `depth`
/// is the file's own module depth (1 for `src/log/mod.rs`, 2 for `src/log/scan.rs`); inline
/// `mod name { ... }` blocks add one each, for `super::`.
fn leaving_paths(code: &str, depth: usize) -> Vec<String> {
    let mut paths = Vec::new();
    let mut mods_open: Vec<bool> = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let rest = code.get(i..).unwrap_or_default();
        let boundary = i == 0
            || !matches!(bytes.get(i - 1), Some(b) if b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$');
        if rest.starts_with('{') {
            mods_open.push(opens_inline_mod(code.get(..i).unwrap_or_default()));
        } else if rest.starts_with('}') {
            mods_open.pop();
        } else if boundary && rest.starts_with("crate::") {
            paths.extend(first_segments(rest.get(7..).unwrap_or_default()));
        } else if boundary && rest.starts_with("super::") {
            let climbs = count_leading(rest, "super::");
            let module_depth = depth + mods_open.iter().filter(|&&m| m).count();
            if climbs >= module_depth {
                paths.extend(first_segments(rest.get(7 * climbs..).unwrap_or_default()));
            }
            i += 7 * climbs;
            continue;
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    paths
}

fn count_leading(text: &str, prefix: &str) -> usize {
    let mut count = 0;
    let mut rest = text;
    while let Some(after) = rest.strip_prefix(prefix) {
        count += 1;
        rest = after;
    }
    count
}

/// Whether the code just before a `{` is `mod name` (an inline module).
fn opens_inline_mod(before: &str) -> bool {
    let mut words = before.split_whitespace().rev();
    let name = words.next().unwrap_or_default();
    let keyword = words.next().unwrap_or_default();
    keyword == "mod" && name.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// The modules of `src/`, each with its source files and their depths.
fn source_files(module: &str) -> Vec<(PathBuf, usize)> {
    let src = root().join("src");
    let file = src.join(format!("{module}.rs"));
    if file.is_file() {
        return vec![(file, 1)];
    }
    let mut files = Vec::new();
    collect(&src.join(module), 1, &mut files);
    assert!(!files.is_empty(), "module {module} has no source files");
    files
}

fn collect(dir: &Path, depth: usize, files: &mut Vec<(PathBuf, usize)>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect(&path, depth + 1, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let own = path.file_name().is_some_and(|n| n == "mod.rs");
            files.push((path, if own { depth } else { depth + 1 }));
        }
    }
}

/// The violations of `module`'s rule in one file's source.
fn violations(
    module: &str,
    allowed: &[String],
    exports: &BTreeMap<String, String>,
    source: &str,
    depth: usize,
) -> Vec<String> {
    let mut found = Vec::new();
    for first in leaving_paths(&strip(source), depth) {
        let target = if table_module(&first) {
            first.clone()
        } else if let Some(from) = exports.get(&first) {
            from.clone()
        } else {
            found.push(format!(
                "crate::{first}: neither a module nor a root re-export"
            ));
            continue;
        };
        if target != module && !allowed.contains(&target) {
            found.push(target);
        }
    }
    found.sort();
    found.dedup();
    found
}

fn table_module(name: &str) -> bool {
    let src = root().join("src");
    src.join(format!("{name}.rs")).is_file() || src.join(name).join("mod.rs").is_file()
}

#[test]
fn every_module_imports_only_what_the_architecture_table_allows() {
    let rules = table();
    let exports = root_exports();
    for (item, module) in [
        ("Result", "error"),
        ("Store", "store"),
        ("Options", "options"),
    ] {
        assert_eq!(
            exports.get(item).map(String::as_str),
            Some(module),
            "lib.rs re-exports"
        );
    }
    let mut broken = Vec::new();
    for (module, allowed) in &rules {
        for (path, depth) in source_files(module) {
            let name = path
                .strip_prefix(root())
                .unwrap_or(&path)
                .display()
                .to_string();
            for target in violations(module, allowed, &exports, &read(&path), depth) {
                broken.push(format!(
                    "{name} imports `{target}`; `{module}` may import {allowed:?}"
                ));
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

#[test]
fn every_module_of_src_has_a_row_in_the_table() {
    let rules = table();
    let entries = std::fs::read_dir(root().join("src")).expect("src");
    for entry in entries {
        let path = entry.expect("entry").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if ["lib", "bin", "crate_tests"].contains(&stem) {
            continue;
        }
        assert!(
            rules.contains_key(stem),
            "src/{stem} has no row in ARCHITECTURE.md"
        );
    }
}

#[test]
fn the_checker_sees_every_kind_of_path_and_ignores_comments_and_strings() {
    let exports = BTreeMap::from([("Result".to_owned(), "error".to_owned())]);
    let allowed = vec!["log".to_owned(), "error".to_owned()];
    let check = |source: &str, depth| violations("store", &allowed, &exports, source, depth);
    assert_eq!(
        check("use crate::{log::Log, format::{A, B}};", 2),
        ["format"]
    );
    assert_eq!(
        check("fn f() -> crate::Result<()> { crate::storage::x() }", 2),
        ["storage"]
    );
    assert_eq!(check("use super::super::format::X;", 2), ["format"]);
    assert_eq!(check("use super::index::Index;", 2), Vec::<String>::new());
    assert_eq!(check("use super::format::X;", 1), ["format"]);
    assert_eq!(
        check("mod tests { use super::*; use super::super::job; }", 1),
        ["job"]
    );
    let quiet = "// crate::format\n/// [x](crate::storage)\nlet s = \"crate::format\"; let c = '\"';\nlet r = r#\"crate::job\"#; fn f<'a>(x: &'a u8) {}";
    assert_eq!(check(quiet, 2), Vec::<String>::new());
}
