//! The layering of `src/lib.rs`, kept true by reading the sources.
//!
//! 1. Each top-level module (a *layer*) uses only the layers below it in
//!    [`LAYERS`], the table of `src/lib.rs` from top to bottom. Every
//!    `crate::x` path (also inside `crate::{…}` groups, and `super::` chains
//!    that climb to the crate root) outside `#[cfg(test)]` items counts;
//!    comments and string literals do not. Test modules may reach anywhere.
//! 2. The call controller, `src/b2bua/`, is sans-IO: outside test modules it
//!    names no tokio, no socket (`UdpSocket`, `TcpStream`, `TcpListener`), no
//!    channel (`mpsc`) and no clock (`Instant::now`, `SystemTime::now`,
//!    `Timestamp::now`, `Zoned::now`). Until it exists the check passes.
//!
//! A failure names the file and line of every offending path.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, top to bottom, as in the table of `src/lib.rs`: a layer may
/// use only the layers after it. `b2bua` may be missing (being written).
const LAYERS: &[&str] = &[
    "api", "engine", "b2bua", "config", "acd", "callback", "ivr", "sip", "media", "acl", "domain",
];

/// Words that mean IO, a channel or a clock; none may appear in the
/// controller's non-test code.
const NOT_IN_B2BUA: &[&str] = &[
    "tokio",
    "UdpSocket",
    "TcpStream",
    "TcpListener",
    "mpsc",
    "Instant::now",
    "SystemTime::now",
    "Timestamp::now",
    "Zoned::now",
];

#[test]
fn layers_use_only_the_layers_below_them() {
    let src = src_dir();
    let test_only = test_only_files(&src);
    let mut violations = Vec::new();
    for (rank, layer) in LAYERS.iter().enumerate() {
        for file in layer_files(&src, layer) {
            if is_test_only(&file, &test_only) {
                continue;
            }
            let code = non_test_code(&file, &mut Vec::new());
            for (line, target) in crate_refs(&code, module_depth(&src, &file)) {
                let Some(target_rank) = LAYERS.iter().position(|l| *l == target) else {
                    continue;
                };
                if target_rank < rank {
                    violations.push(format!(
                        "{}:{line}: `{layer}` uses `{target}`, which is not below it",
                        shown(&file)
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "dependencies must point down (src/lib.rs, tests/layers.rs LAYERS):\n{}",
        violations.join("\n")
    );
}

#[test]
fn b2bua_is_sans_io() {
    let src = src_dir();
    let test_only = test_only_files(&src);
    let mut violations = Vec::new();
    for file in layer_files(&src, "b2bua") {
        if is_test_only(&file, &test_only) {
            continue;
        }
        let code = non_test_code(&file, &mut Vec::new());
        for (n, line) in code.lines().enumerate() {
            for word in NOT_IN_B2BUA {
                if contains_word(line, word) {
                    violations.push(format!(
                        "{}:{}: names `{word}`: the controller does no IO and reads no clock",
                        shown(&file),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// Every module `src/lib.rs` declares is a layer of the table, so that a new
/// module cannot escape the check.
#[test]
fn every_module_of_lib_rs_is_a_layer() {
    let lib = src_dir().join("lib.rs");
    let code = non_test_code(&lib, &mut Vec::new());
    let declared: BTreeSet<&str> = code
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .filter_map(|l| l.strip_suffix(';'))
        .collect();
    assert!(!declared.is_empty(), "no `pub mod` found in src/lib.rs");
    for module in &declared {
        assert!(
            LAYERS.contains(module),
            "src/lib.rs declares `{module}`, which is not in tests/layers.rs LAYERS \
             (add it to both tables at its place)"
        );
    }
}

/// The checks themselves: comments, strings and test modules do not count;
/// grouped and `super::` paths do.
#[test]
fn the_scanner_sees_what_the_compiler_sees() {
    let text = r##"
//! A doc comment naming crate::api::Thing.
use crate::{acl::Acl, media::{g711::Law, rtp}};
use super::super::engine::Shell;
const S: &str = "crate::api in a string";
const R: &str = r#"crate::api in a raw string"#;
fn f<'a>(x: &'a str) -> char { let _ = crate::sip::parse(x); '{' }
/* crate::api in a block comment */
#[cfg(test)]
mod tests {
    use crate::api::Router;
    fn g() { let _ = "}"; }
}
#[cfg(test)]
#[path = "elsewhere_tests.rs"]
mod more_tests;
use crate::ivr::Flow;
"##;
    let mut out_of_line = Vec::new();
    let code = strip(text, &mut out_of_line);
    let refs: Vec<(usize, String)> = crate_refs(&code, 2);
    let names: Vec<&str> = refs.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(names, ["acl", "media", "engine", "sip", "ivr"]);
    assert_eq!(refs.last().map(|(line, _)| *line), Some(17));
    assert_eq!(
        out_of_line,
        [(
            String::from("more_tests"),
            Some(String::from("elsewhere_tests.rs"))
        )]
    );
    assert!(contains_word("let t = Instant::now();", "Instant::now"));
    assert!(contains_word("use tokio::net;", "tokio"));
    assert!(!contains_word("let tokionet = 1;", "tokio"));
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn shown(file: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    file.strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string()
}

/// `src/<layer>.rs` and every `.rs` file under `src/<layer>/`, sorted.
fn layer_files(src: &Path, layer: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let single = src.join(format!("{layer}.rs"));
    if single.is_file() {
        files.push(single);
    }
    let dir = src.join(layer);
    if dir.is_dir() {
        collect_rs(&dir, &mut files);
    }
    files.sort();
    files
}

fn collect_rs(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect_rs(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// Files (and module directories) that only `#[cfg(test)] mod x;`
/// declarations bring in, anywhere under `src/`.
fn test_only_files(src: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    collect_rs(src, &mut all);
    let mut test_only = Vec::new();
    for file in &all {
        let mut out_of_line = Vec::new();
        non_test_code(file, &mut out_of_line);
        let dir = file.parent().expect("a file under src/");
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        // Children of `x.rs` live in `x/`; of `mod.rs` and `lib.rs` beside it.
        let child_dir = match stem {
            "mod" | "lib" | "main" => dir.to_path_buf(),
            _ => dir.join(stem),
        };
        for (name, path) in out_of_line {
            match path {
                // `#[path]` is relative to the directory of the declaring file.
                Some(path) => test_only.push(dir.join(path)),
                None => {
                    test_only.push(child_dir.join(format!("{name}.rs")));
                    test_only.push(child_dir.join(&name));
                }
            }
        }
    }
    test_only
}

fn is_test_only(file: &Path, test_only: &[PathBuf]) -> bool {
    test_only.iter().any(|t| file.starts_with(t))
}

/// How many `super::` climb from `file` to the crate root: 1 for
/// `src/acd/mod.rs` or `src/acl.rs`, 2 for `src/acd/queue.rs`.
fn module_depth(src: &Path, file: &Path) -> usize {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let parts = rel.components().count();
    if rel.file_name().is_some_and(|n| n == "mod.rs") {
        parts - 1
    } else {
        parts
    }
}

/// The file's code with comments, string and char literals blanked and
/// `#[cfg(test)]` items removed; lines and columns are kept. Out-of-line
/// test modules (`name`, `#[path]` if any) are pushed to `out_of_line`.
fn non_test_code(file: &Path, out_of_line: &mut Vec<(String, Option<String>)>) -> String {
    let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    strip(&text, out_of_line)
}

fn strip(text: &str, out_of_line: &mut Vec<(String, Option<String>)>) -> String {
    let masked = mask(text);
    let mut code = masked.clone().into_bytes();
    let bytes = masked.as_bytes();
    let mut from = 0;
    while let Some(found) = masked[from..].find("#[cfg(test)]") {
        let start = from + found;
        let mut i = start;
        // This and any further attributes on the item.
        let mut path_attr = None;
        loop {
            i = skip_space(bytes, i);
            if bytes.get(i) != Some(&b'#') {
                break;
            }
            let end = matching(bytes, i + 1).unwrap_or(bytes.len());
            let attr = &text[i..end];
            if let Some(rest) = attr.split_once("path").map(|(_, r)| r)
                && let Some(value) = rest.split('"').nth(1)
            {
                path_attr = Some(value.to_owned());
            }
            i = end;
        }
        // The item ends at `;` or at the `}` closing its first `{`.
        let item = i;
        let mut depth = 0usize;
        let mut end = bytes.len();
        while i < bytes.len() {
            match bytes[i] {
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth = depth.saturating_sub(1),
                b';' if depth == 0 => {
                    end = i + 1;
                    if let Some(name) = mod_name(&masked[item..i]) {
                        out_of_line.push((name, path_attr.take()));
                    }
                    break;
                }
                b'{' if depth == 0 => {
                    end = matching(bytes, i).unwrap_or(bytes.len());
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        for b in &mut code[start..end] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
        from = end.max(start + 1);
    }
    String::from_utf8_lossy(&code).into_owned()
}

/// `name` of an item text `[pub[(…)]] mod name`.
fn mod_name(item: &str) -> Option<String> {
    let mut words = item.split_whitespace().skip_while(|w| w.starts_with("pub"));
    (words.next()? == "mod").then(|| words.next().map(str::to_owned))?
}

fn skip_space(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// The index just past the bracket that closes the one at `open`.
fn matching(bytes: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in bytes.iter().enumerate().skip(open) {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// `text` with the insides of comments, strings and char literals replaced
/// by spaces (newlines kept), so that only code is left to search.
fn mask(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        let next = b.get(i + 1).copied();
        match b[i] {
            b'/' if next == Some(b'/') => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if next == Some(b'*') => {
                let (mut j, mut depth) = (i + 2, 1);
                while j < b.len() && depth > 0 {
                    if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            b'r' if (i == 0
                || !ident(b[i - 1])
                || (b[i - 1] == b'b' && (i < 2 || !ident(b[i - 2]))))
                && matches!(next, Some(b'"' | b'#')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                let open = i + 1 + hashes;
                if b.get(open) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                let end = b[open + 1..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(b.len(), |p| open + 1 + p);
                blank(&mut out, open + 1, end);
                i = end + close.len();
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i + 1, j);
                i = j + 1;
            }
            b'\'' => {
                // A char literal ('x', '\n', '€'), else a lifetime ('a).
                let width = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                if next == Some(b'\\') {
                    let end = b[i + 2..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map_or(b.len(), |p| i + 2 + p);
                    blank(&mut out, i + 1, end);
                    i = end + 1;
                } else if b.get(i + 1 + width) == Some(&b'\'') {
                    blank(&mut out, i + 1, i + 1 + width);
                    i += 2 + width;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every top-level module that `code` names through `crate::`, a
/// `crate::{…}` group, or `depth` or more `super::`s, with its line.
fn crate_refs(code: &str, depth: usize) -> Vec<(usize, String)> {
    let b = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let word_at = |i: usize| -> String {
        b[i..]
            .iter()
            .take_while(|&&c| ident(c))
            .map(|&c| c as char)
            .collect()
    };
    let line_of = |i: usize| b[..i].iter().filter(|&&c| c == b'\n').count() + 1;
    let mut refs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if i > 0 && (ident(b[i - 1]) || b[i - 1] == b':') {
            i += 1;
            continue;
        }
        let rest = &code[i..];
        let after = if rest.starts_with("crate::") {
            Some(i + "crate::".len())
        } else if depth > 0 && rest.starts_with("super::") {
            let mut j = i;
            let mut climbs = 0;
            while code[j..].starts_with("super::") {
                j += "super::".len();
                climbs += 1;
            }
            (climbs >= depth).then_some(j)
        } else {
            None
        };
        let Some(at) = after else {
            i += 1;
            continue;
        };
        let at = skip_space(b, at);
        if b.get(at) == Some(&b'{') {
            // The first name of each entry of the group.
            let end = matching(b, at).unwrap_or(b.len());
            let mut level = 0;
            let mut entry_start = true;
            for (j, &c) in b.iter().enumerate().take(end - 1).skip(at + 1) {
                match c {
                    b'{' => level += 1,
                    b'}' => level -= 1,
                    b',' if level == 0 => entry_start = true,
                    c if entry_start && level == 0 && ident(c) => {
                        refs.push((line_of(j), word_at(j)));
                        entry_start = false;
                    }
                    _ => {}
                }
            }
            i = end;
        } else {
            refs.push((line_of(at), word_at(at)));
            i = at;
        }
    }
    refs
}

/// Whether `word` occurs in `line` not as part of a longer identifier.
fn contains_word(line: &str, word: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    line.match_indices(word).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}
