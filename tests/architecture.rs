//! The dependency rules of DESIGN.md's pipeline, checked on the source text.
//!
//! Dependency order is pipeline order: the shared model and the line-protocol contract on the
//! ground floor, the generic config reading above them, the shared MQTT connection above that,
//! sources, engine and sink above that (none importing a later stage, none importing another's
//! internals), then the web board, the county side and the simulator, and the agent on top
//! (docs/ARCHITECTURE.md draws the map). This test reads every file under `src/`, finds each
//! path into the crate — `use crate::…` lines (multi-line `use crate::{a, b::{c}}` groups
//! too), `use super::…` resolved to the module it names, `crate::x::…` / `super::x::…` paths
//! written in the code, and paths named in an attribute's string
//! (`#[serde(deserialize_with = "crate::…")]`) — and checks them against [`RULES`]. It also
//! refuses a cycle between two sibling files (a imports b and b imports a); a `mod.rs` and its
//! own child file may use each other.
//!
//! What counts: code, including `#[cfg(test)]` modules (a test's import is still an edge in
//! the module graph). What does not: comments (so doc links are free), other string literals,
//! `$crate` in macros, and paths that do not start with `crate`, `super` or `self` (other
//! crates, or a module's own children). `src/main.rs` is the command line, a crate of its own
//! on top of everything; nothing is forbidden to it.
//!
//! A rule names modules by path (`"sink"`, or deeper, `"source::mqtt"`), and applies to every
//! file at or under that path. Modules that do not exist yet simply match no file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One rule: code in `module` must not import anything in `forbidden`, because `why`.
struct Rule {
    module: &'static str,
    forbidden: &'static [&'static str],
    why: &'static str,
}

/// Everything above the ground floor.
const ABOVE_GROUND: &[&str] = &[
    "config", "common", "source", "engine", "sink", "web", "county", "sim", "agent",
];

/// The rule table: DESIGN.md's pipeline order in layers (docs/ARCHITECTURE.md).
///
/// ```text
/// layer 0  model, line_protocol, metrics, shutdown, queue
/// layer 1  config
/// layer 2  common (the one MQTT connection)
/// layer 3  source, engine, sink
/// layer 4  web, county, sim
/// layer 5  agent (and main.rs)
/// ```
/// Why the ground floor imports nothing above it.
const GROUND_FLOOR: &str = "the ground floor (model, line_protocol, metrics, shutdown, queue) is \
                            the shared vocabulary and data contract every stage uses; it imports \
                            only itself";

const RULES: &[Rule] = &[
    Rule {
        module: "model",
        forbidden: ABOVE_GROUND,
        why: GROUND_FLOOR,
    },
    Rule {
        module: "line_protocol",
        forbidden: ABOVE_GROUND,
        why: GROUND_FLOOR,
    },
    Rule {
        module: "metrics",
        forbidden: ABOVE_GROUND,
        why: GROUND_FLOOR,
    },
    Rule {
        module: "shutdown",
        forbidden: ABOVE_GROUND,
        why: GROUND_FLOOR,
    },
    Rule {
        module: "queue",
        forbidden: ABOVE_GROUND,
        why: "the ground floor's queue table names every bounded channel's capacity and \
              full-queue policy for sources, engine and sinks alike; it imports only itself",
    },
    Rule {
        module: "config",
        forbidden: &[
            "common", "source", "sink", "engine", "web", "county", "sim", "agent",
        ],
        why: "config is the generic reading and checking (layer 1, above the ground floor only); \
              each section's types live beside the code that uses them and the section table \
              lives in agent, so config never imports its users",
    },
    Rule {
        module: "common",
        forbidden: &["source", "engine", "sink", "web", "county", "sim", "agent"],
        why: "common (the one MQTT connection, layer 2) serves the MQTT source, the uplink and \
              the county ingest; it imports only the ground floor and config",
    },
    Rule {
        module: "source",
        forbidden: &["engine", "sink", "web", "county", "sim", "agent"],
        why: "sources only produce samples (layer 3): they know nothing of states, indicators or \
              where records go; what they share with the engine and sink is in model and \
              line_protocol",
    },
    Rule {
        module: "engine",
        forbidden: &["source", "sink", "web", "county", "sim", "agent"],
        why: "the engine (layer 3) does not know where a signal came from nor where a record \
              goes; samples and events come from model, line-protocol lines from line_protocol",
    },
    Rule {
        module: "sink",
        forbidden: &["source", "engine", "web", "county", "sim", "agent"],
        why: "sinks (layer 3) carry records to the store; they meet sources and the engine only \
              through model and line_protocol, and the MQTT client through common",
    },
    Rule {
        module: "web",
        forbidden: &["agent"],
        why: "the web board (layer 4) is started by the agent, not the other way round",
    },
    Rule {
        module: "county",
        forbidden: &["agent"],
        why: "the county side (layer 4) is a program of its own beside the agent; the agent \
              wires the edge pipeline and is imported by nothing but main.rs",
    },
    Rule {
        module: "sim",
        forbidden: &["agent"],
        why: "the simulator (layer 4) stands in for the machines the agent reads; the agent \
              wires the pipeline and is imported by nothing but main.rs",
    },
];

/// What the check says of a file it cannot follow (a bug in the reader below, or a file that
/// does not compile).
const UNREADABLE: &str = "every file must be read to the end for the rules to mean anything";

/// What the cycle check says when two sibling files import each other.
const NO_SIBLING_CYCLE: &str = "two sibling files that import each other are one piece in two \
                                files: move what both need into one of them, or below both";

#[test]
fn the_module_tree_follows_the_pipeline_order() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    read_tree(Path::new(env!("CARGO_MANIFEST_DIR")), &src, &mut files);
    let report = check(&files);
    // The reader must have found the crate, or an empty report proves nothing.
    assert!(
        report.files >= 20 && report.edges >= 100,
        "read {} files and {} paths into the crate under {}: the reader is broken",
        report.files,
        report.edges,
        src.display()
    );
    if !report.violations.is_empty() {
        let why: Vec<String> = report
            .broken
            .iter()
            .map(|(rule, why)| format!("  {rule}: {why}"))
            .collect();
        panic!(
            "{} import(s) break the dependency rules (the rule table is at the top of \
             tests/architecture.rs, the map in docs/ARCHITECTURE.md):\n{}\n\nwhy the rules are there:\n{}",
            report.violations.len(),
            report.violations.join("\n"),
            why.join("\n")
        );
    }
}

fn read_tree(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_tree(root, &path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.insert(rel, text);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The checker: files (path → text) in, broken rules out.
// ---------------------------------------------------------------------------------------------

struct Report {
    files: usize,
    /// Paths into the crate found, over all files.
    edges: usize,
    /// One line per forbidden path: `file:line: what imports what, against which rule`.
    violations: Vec<String>,
    /// Each rule broken at least once, with its reason.
    broken: BTreeMap<String, &'static str>,
}

/// One path into the crate, resolved from the crate root (`["sink", "spool", "Spool"]`).
struct Edge {
    line: usize,
    /// As written in the file, for the message (`super::render::Theme`).
    written: String,
    resolved: Vec<String>,
    /// Written in test code: a `#[cfg(test)]` module, inline or a file of its own.
    test: bool,
}

fn check(files: &BTreeMap<String, String>) -> Report {
    // File → its module path (src/county/html.rs → county::html; src/lib.rs → the root).
    let mut modules: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for path in files.keys() {
        if let Some(module) = module_of(path) {
            modules.insert(path, module);
        }
    }
    let known: BTreeSet<&[String]> = modules.values().map(Vec::as_slice).collect();

    let mut violations = Vec::new();
    let mut broken = BTreeMap::new();
    let mut edges_found = 0;
    // (importing file module, imported file module) → the first place it happens.
    let mut file_edges: BTreeMap<(Vec<String>, Vec<String>), (String, usize)> = BTreeMap::new();
    // Files declared `#[cfg(test)] mod name;` by their parent are test code throughout.
    let mut test_files: BTreeSet<Vec<String>> = BTreeSet::new();
    for (path, module) in &modules {
        if let Ok((_, children)) = crate_paths(&files[*path], module) {
            for child in children {
                let mut m = module.clone();
                m.push(child);
                test_files.insert(m);
            }
        }
    }
    for (path, module) in &modules {
        let edges = match crate_paths(&files[*path], module) {
            Ok((mut edges, _)) => {
                if test_files.iter().any(|t| module.starts_with(t)) {
                    edges.iter_mut().for_each(|e| e.test = true);
                }
                edges
            }
            Err(why) => {
                violations.push(format!("{path}: {why}: rule \"readable\""));
                broken.insert("readable".to_string(), UNREADABLE);
                continue;
            }
        };
        edges_found += edges.len();
        for edge in &edges {
            // Tests build whole configs as fixtures with the agent's loader; that is the one
            // import upward they may make.
            if edge.test && starts_with(&edge.resolved, TEST_FIXTURE_LOADER) {
                continue;
            }
            for rule in RULES {
                if !starts_with(module, rule.module) {
                    continue;
                }
                for forbidden in rule.forbidden {
                    if starts_with(&edge.resolved, forbidden) {
                        let name = format!("{} ↛ {forbidden}", rule.module);
                        let resolved = edge.resolved.join("::");
                        let to = if edge.written == format!("crate::{resolved}") {
                            String::new()
                        } else {
                            format!(" (crate::{resolved})")
                        };
                        violations.push(format!(
                            "{path}:{line}: {from} imports `{written}`{to}: rule \"{name}\"",
                            line = edge.line,
                            from = module.join("::"),
                            written = edge.written,
                        ));
                        broken.insert(name, rule.why);
                    }
                }
            }
            // The file the path lands in: its longest prefix that is a file's module.
            if let Some(target) = (1..=edge.resolved.len())
                .rev()
                .map(|n| &edge.resolved[..n])
                .find(|p| known.contains(p))
                && target != module.as_slice()
            {
                file_edges
                    .entry((module.clone(), target.to_vec()))
                    .or_insert_with(|| (path.to_string(), edge.line));
            }
        }
    }
    for ((a, b), (a_file, a_line)) in &file_edges {
        let siblings = !a.is_empty() && !b.is_empty() && a[..a.len() - 1] == b[..b.len() - 1];
        if siblings
            && a < b
            && let Some((b_file, b_line)) = file_edges.get(&(b.clone(), a.clone()))
        {
            violations.push(format!(
                    "{a_file}:{a_line}: {} imports {} and {b_file}:{b_line}: {} imports {} back: rule \"no sibling cycle\"",
                    a.join("::"),
                    b.join("::"),
                    b.join("::"),
                    a.join("::"),
                ));
            broken.insert("no sibling cycle".to_string(), NO_SIBLING_CYCLE);
        }
    }
    Report {
        files: modules.len(),
        edges: edges_found,
        violations,
        broken,
    }
}

/// What test code may import from above its layer: the agent's config loader, with which unit
/// tests build a whole `Config` from TOML as a fixture.
const TEST_FIXTURE_LOADER: &str = "agent::config";

/// Whether the module path `path` is `prefix` (`"a::b"`) or inside it.
fn starts_with(path: &[String], prefix: &str) -> bool {
    let prefix: Vec<&str> = prefix.split("::").collect();
    path.len() >= prefix.len() && path.iter().zip(&prefix).all(|(a, b)| a == b)
}

/// The module a file under `src/` defines; `None` for the binary's `main.rs` and anything that
/// is not a library file.
fn module_of(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix("src/")?.strip_suffix(".rs")?;
    let mut parts: Vec<String> = rest.split('/').map(str::to_string).collect();
    match parts.last().map(String::as_str) {
        Some("main") if parts.len() == 1 => return None,
        Some("bin") => return None,
        Some("lib") if parts.len() == 1 => return Some(Vec::new()),
        Some("mod") => {
            parts.pop();
        }
        _ => {}
    }
    if parts.first().is_some_and(|p| p == "bin") {
        return None;
    }
    Some(parts)
}

// ---------------------------------------------------------------------------------------------
// Reading paths out of Rust text: a small lexer (comments and literals out), then `use` trees,
// inline `mod name { … }` blocks (for what `super` means inside them) and bare paths.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
    /// An ordinary string literal's text: attributes name functions in strings
    /// (`#[serde(deserialize_with = "crate::config::duration")]`).
    Str(String),
}

fn lex(text: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let is_ident_start = |ch: char| ch == '_' || ch.is_alphabetic();
    let is_ident = |ch: char| ch == '_' || ch.is_alphanumeric();
    // Skips a string body whose opening quote is at `i`; `raw` is the number of `#` (None for
    // an ordinary string with escapes). Returns the index after the closing quote.
    let skip_string = |mut i: usize, raw: Option<usize>, line: &mut usize| -> usize {
        i += 1;
        while i < c.len() {
            match c[i] {
                '\n' => *line += 1,
                '\\' if raw.is_none() => {
                    if c.get(i + 1) == Some(&'\n') {
                        *line += 1;
                    }
                    i += 1;
                }
                '"' => {
                    let hashes = raw.unwrap_or(0);
                    if (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                        return i + 1 + hashes;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            let (start, at) = (i, line);
            i = skip_string(i, None, &mut line);
            let text: String = c[start + 1..i.saturating_sub(1).max(start + 1)]
                .iter()
                .collect();
            out.push((Tok::Str(text), at));
        } else if ch == '\'' {
            // A char literal ('a', '\n', '\u{1F600}', '"') or a lifetime / label ('a, 'static).
            if c.get(i + 1) == Some(&'\\') {
                // Past the quote, the backslash and the escaped character (which may be `'`).
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < c.len() && is_ident(c[i]) {
                    i += 1;
                }
            }
        } else if is_ident_start(ch) {
            let start = i;
            while i < c.len() && is_ident(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let next = c.get(i).copied();
            match (word.as_str(), next) {
                // Byte and C strings, byte chars.
                ("b" | "c", Some('"')) => i = skip_string(i, None, &mut line),
                ("b", Some('\'')) => {
                    i += 1;
                    if c.get(i) == Some(&'\\') {
                        i += 1;
                    }
                    i += 1;
                    while i < c.len() && c[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                }
                // Raw strings r"…", r#"…"#, br#"…"#, cr"…"; or a raw identifier r#type.
                ("r" | "br" | "cr", Some('"' | '#')) => {
                    let mut hashes = 0;
                    while c.get(i + hashes) == Some(&'#') {
                        hashes += 1;
                    }
                    if c.get(i + hashes) == Some(&'"') {
                        i = skip_string(i + hashes, Some(hashes), &mut line);
                    } else if word == "r" && hashes == 1 {
                        let start = i + 1;
                        i = start;
                        while i < c.len() && is_ident(c[i]) {
                            i += 1;
                        }
                        out.push((Tok::Ident(c[start..i].iter().collect()), line));
                    } else {
                        out.push((Tok::Ident(word), line));
                    }
                }
                _ => out.push((Tok::Ident(word), line)),
            }
        } else if ch.is_ascii_digit() {
            while i < c.len() && is_ident(c[i]) {
                i += 1;
            }
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// Every path into the crate that the text of the file for `module` writes, resolved; `Err`
/// when its braces do not balance (then the reader lost its way, and says so).
fn crate_paths(text: &str, module: &[String]) -> Result<(Vec<Edge>, Vec<String>), String> {
    let toks = lex(text);
    let mut edges = Vec::new();
    // Inline modules (`mod tests { … }`): name, the brace depth inside them, and whether it is
    // test code (`#[cfg(test)]`, or inside such a module).
    let mut inline: Vec<(String, usize, bool)> = Vec::new();
    // `#[cfg(test)]` was just read, for the item that follows.
    let mut cfg_test = false;
    // Child files declared `#[cfg(test)] mod name;`.
    let mut test_children = Vec::new();
    let mut depth = 0usize;
    // Inside an attribute `#[…]` / `#![…]`: the depth of its square brackets.
    let mut attribute = 0usize;
    let mut i = 0;
    let ident = |i: usize| match toks.get(i) {
        Some((Tok::Ident(s), _)) => Some(s.as_str()),
        _ => None,
    };
    while i < toks.len() {
        let here: Vec<String> = module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(n, _, _)| n.clone()))
            .collect();
        let in_test = inline.last().is_some_and(|(_, _, t)| *t);
        match &toks[i].0 {
            Tok::Punct('{') => {
                depth += 1;
                cfg_test = false;
                i += 1;
            }
            Tok::Punct(';') if attribute == 0 => {
                cfg_test = false;
                i += 1;
            }
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d, _)| *d == depth) {
                    inline.pop();
                }
                match depth.checked_sub(1) {
                    Some(d) => depth = d,
                    None => return Err("a `}` closes nothing: the reader misread this file".into()),
                }
                i += 1;
            }
            Tok::Ident(w) if w == "mod" => {
                let test = cfg_test || in_test;
                cfg_test = false;
                match (ident(i + 1), toks.get(i + 2)) {
                    (Some(name), Some((Tok::Punct('{'), _))) => {
                        depth += 1;
                        inline.push((name.to_string(), depth, test));
                        i += 3;
                    }
                    (Some(name), Some((Tok::Punct(';'), _))) if test => {
                        test_children.push(name.to_string());
                        i += 3;
                    }
                    _ => i += 1,
                }
            }
            Tok::Ident(w) if w == "cfg" && attribute == 1 => {
                // `#[cfg(test)]` exactly; `cfg(all(test, …))` and the like are left as code.
                if toks.get(i + 1).is_some_and(|(t, _)| *t == Tok::Punct('('))
                    && ident(i + 2) == Some("test")
                    && toks.get(i + 3).is_some_and(|(t, _)| *t == Tok::Punct(')'))
                {
                    cfg_test = true;
                }
                i += 1;
            }
            Tok::Ident(w) if w == "use" => {
                let mut leaves = Vec::new();
                let end = use_tree(&toks, i + 1, Vec::new(), &mut leaves);
                for (path, line) in leaves {
                    if let Some(resolved) = resolve(&path, &here) {
                        edges.push(Edge {
                            line,
                            written: path.join("::"),
                            resolved,
                            test: in_test,
                        });
                    }
                }
                i = end.max(i + 1);
            }
            Tok::Ident(w)
                if matches!(w.as_str(), "crate" | "super" | "self")
                    && toks.get(i + 1).is_some_and(|(t, _)| *t == Tok::PathSep)
                    && !(i > 0 && matches!(toks[i - 1].0, Tok::Punct('$') | Tok::PathSep)) =>
            {
                let mut path = vec![w.clone()];
                let mut line = toks[i].1;
                let mut j = i + 1;
                while toks.get(j).is_some_and(|(t, _)| *t == Tok::PathSep) {
                    match toks.get(j + 1) {
                        Some((Tok::Ident(s), l)) => {
                            path.push(s.clone());
                            line = *l;
                            j += 2;
                        }
                        _ => break,
                    }
                }
                if let Some(resolved) = resolve(&path, &here) {
                    edges.push(Edge {
                        line,
                        written: path.join("::"),
                        resolved,
                        test: in_test,
                    });
                }
                i = j;
            }
            Tok::Punct('#') => {
                let open = match (toks.get(i + 1), toks.get(i + 2)) {
                    (Some((Tok::Punct('['), _)), _) => Some(i + 2),
                    (Some((Tok::Punct('!'), _)), Some((Tok::Punct('['), _))) => Some(i + 3),
                    _ => None,
                };
                match open {
                    Some(next) if attribute == 0 => {
                        attribute = 1;
                        i = next;
                    }
                    _ => i += 1,
                }
            }
            Tok::Punct('[') if attribute > 0 => {
                attribute += 1;
                i += 1;
            }
            Tok::Punct(']') if attribute > 0 => {
                attribute -= 1;
                i += 1;
            }
            // `#[doc = "…"]` is documentation, like a `///` comment.
            Tok::Str(text)
                if attribute > 0
                    && !(i >= 2
                        && toks[i - 1].0 == Tok::Punct('=')
                        && toks[i - 2].0 == Tok::Ident("doc".to_string())) =>
            {
                let path: Vec<String> = text.split("::").map(str::to_string).collect();
                let is_path = path.len() > 1
                    && path.iter().all(|s| {
                        !s.is_empty() && s.chars().all(|ch| ch == '_' || ch.is_alphanumeric())
                    });
                if is_path && let Some(resolved) = resolve(&path, &here) {
                    edges.push(Edge {
                        line: toks[i].1,
                        written: text.clone(),
                        resolved,
                        test: in_test,
                    });
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    if depth != 0 || !inline.is_empty() {
        return Err(format!(
            "{depth} brace(s) left open at the end: the reader misread this file"
        ));
    }
    Ok((edges, test_children))
}

/// Reads one use tree starting at `i` under `prefix`; pushes each leaf path with the line of
/// its last segment. Returns the index after the tree (at the `,`, `}` or `;` that ends it).
fn use_tree(
    toks: &[(Tok, usize)],
    mut i: usize,
    prefix: Vec<String>,
    leaves: &mut Vec<(Vec<String>, usize)>,
) -> usize {
    let mut path = prefix;
    let mut line;
    if toks.get(i).is_some_and(|(t, _)| *t == Tok::PathSep) {
        i += 1;
    }
    loop {
        match toks.get(i) {
            Some((Tok::Ident(s), l)) if s == "self" && !path.is_empty() => {
                // `a::{self, b}`: the module `a` itself.
                line = *l;
                i += 1;
            }
            Some((Tok::Ident(s), l)) => {
                path.push(s.clone());
                line = *l;
                i += 1;
            }
            Some((Tok::Punct('*'), l)) => {
                line = *l;
                i += 1;
                leaves.push((path, line));
                return i;
            }
            Some((Tok::Punct('{'), _)) => {
                i += 1;
                loop {
                    match toks.get(i) {
                        None => return i,
                        Some((Tok::Punct('}'), _)) => return i + 1,
                        Some((Tok::Punct(','), _)) => i += 1,
                        Some(_) => {
                            let before = i;
                            i = use_tree(toks, i, path.clone(), leaves);
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
            }
            _ => return i,
        }
        match toks.get(i) {
            Some((Tok::PathSep, _)) => i += 1,
            Some((Tok::Ident(s), _)) if s == "as" => {
                // `as name` (or `as _`): the path is what counts.
                leaves.push((path, line));
                return i + 2;
            }
            _ => {
                leaves.push((path, line));
                return i;
            }
        }
    }
}

/// A path as written in the module `here`, from the crate root; `None` when it does not start
/// in the crate (`std::…`, another crate, or a child module named without `self::`).
fn resolve(path: &[String], here: &[String]) -> Option<Vec<String>> {
    let (first, rest) = path.split_first()?;
    let mut base: Vec<String> = match first.as_str() {
        "crate" => Vec::new(),
        "self" => here.to_vec(),
        "super" => here.get(..here.len().checked_sub(1)?)?.to_vec(),
        _ => return None,
    };
    let mut rest = rest.iter().peekable();
    if first == "super" || first == "self" {
        while rest.peek().is_some_and(|s| *s == "super") {
            base.pop()?;
            rest.next();
        }
    }
    base.extend(rest.cloned());
    Some(base)
}

// ---------------------------------------------------------------------------------------------
// The checker's own tests, on made-up trees.
// ---------------------------------------------------------------------------------------------

fn tree(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect()
}

fn violations(files: &[(&str, &str)]) -> Vec<String> {
    check(&tree(files)).violations
}

/// A small tree in the target shape: every stage imports only what is below it.
const CLEAN: &[(&str, &str)] = &[
    (
        "src/lib.rs",
        "pub mod agent;\npub mod config;\npub mod engine;\npub mod model;\npub mod sink;\npub mod source;\n",
    ),
    ("src/model.rs", "pub struct Sample;\n"),
    (
        "src/config/mod.rs",
        "mod load;\npub use load::load;\nuse crate::model::Sample;\n",
    ),
    (
        "src/config/load.rs",
        "use super::Diagnostics;\npub fn load() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::Diagnostics;\n}\n",
    ),
    (
        "src/source/mod.rs",
        "pub mod modbus;\nuse crate::{\n    config::Diagnostics,\n    model::{self, Sample},\n};\n",
    ),
    (
        "src/source/modbus/mod.rs",
        "mod config;\nuse self::config::Device;\nuse super::super::model::Sample;\n",
    ),
    (
        "src/source/modbus/config.rs",
        "use super::Link;\nuse crate::config::Checker;\n",
    ),
    (
        "src/engine/mod.rs",
        "use crate::model::Sample;\n// Not `crate::sink::X`: comments do not count.\nconst DOC: &str = \"crate::sink::Spool\";\nconst RAW: &str = r#\"use crate::sink::Spool;\"#;\nfn f<'a>(x: &'a str) -> char { let _ = b'{'; '{' }\n",
    ),
    (
        "src/sink/mod.rs",
        "use crate::model::Sample;\nmacro_rules! m { () => { $crate::agent::run() } }\n",
    ),
    (
        "src/agent.rs",
        "use crate::{config, engine, sink, source};\n",
    ),
];

#[test]
fn a_tree_in_the_target_shape_passes() {
    let report = check(&tree(CLEAN));
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert_eq!(report.files, CLEAN.len());
    // config's one, load's three, source's three (`model::{self, Sample}` is two), modbus's
    // two, its config.rs's two, engine's one, sink's one (not `$crate`), agent's four.
    assert_eq!(report.edges, 1 + 3 + 3 + 2 + 2 + 1 + 1 + 4);
}

#[test]
fn a_forbidden_use_line_is_reported_with_its_file_line_and_rule() {
    let mut files = CLEAN.to_vec();
    files.push((
        "src/config/section.rs",
        "//! Sections.\n\nuse crate::sink::spool::SyncPolicy;\n",
    ));
    let report = check(&tree(&files));
    assert!(
        report.broken["config ↛ sink"].starts_with("config is the generic reading"),
        "{:?}",
        report.broken
    );
    let found = report.violations;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with(
            "src/config/section.rs:3: config::section imports `crate::sink::spool::SyncPolicy`: rule \"config ↛ sink\""
        ),
        "{}",
        found[0]
    );
}

#[test]
fn a_forbidden_path_in_a_multi_line_group_is_reported_on_its_own_line() {
    let mut files = CLEAN.to_vec();
    files.push((
        "src/source/mqtt.rs",
        "use crate::{\n    model::Sample,\n    engine::{\n        calendar,\n        green::parse_period as period,\n    },\n};\n",
    ));
    let found = violations(&files);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0]
            .starts_with("src/source/mqtt.rs:4: source::mqtt imports `crate::engine::calendar`")
    );
    assert!(found[0].ends_with("rule \"source ↛ engine\""));
    assert!(found[1].starts_with(
        "src/source/mqtt.rs:5: source::mqtt imports `crate::engine::green::parse_period`"
    ));
}

#[test]
fn super_bare_and_attribute_paths_are_resolved_to_the_module_they_name() {
    let mut files = CLEAN.to_vec();
    // From engine::state, super::super is the root: this is the sink.
    files.push((
        "src/engine/state.rs",
        "use super::super::sink::LineBuilder;\n",
    ));
    // A function named in an attribute's string; the same text in a plain string is no path.
    files.push((
        "src/config/secret.rs",
        "#[derive(serde::Deserialize)]\nstruct S {\n    #[serde(deserialize_with = \"crate::sink::spool::sync\")]\n    sync: u8,\n    #[doc = \"crate::sink::spool\"]\n    x: u8,\n}\nconst T: &str = \"crate::engine::Engine\";\n",
    ));
    // A path in an expression, inside a test module's function.
    files.push((
        "src/engine/green.rs",
        "#[cfg(test)]\nmod tests {\n    use super::*;\n    fn f() {\n        let _ = crate::source::Value::Int(1);\n    }\n}\n",
    ));
    let found = violations(&files);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_eq!(
        found[0],
        "src/config/secret.rs:3: config::secret imports `crate::sink::spool::sync`: rule \"config ↛ sink\""
    );
    let found = &found[1..];
    assert!(
        found[0].starts_with(
            "src/engine/green.rs:5: engine::green imports `crate::source::Value::Int`"
        ),
        "{}",
        found[0]
    );
    assert!(
        found[0].ends_with("rule \"engine ↛ source\""),
        "{}",
        found[0]
    );
    assert!(
        found[1].starts_with("src/engine/state.rs:1: engine::state imports `super::super::sink::LineBuilder` (crate::sink::LineBuilder): rule \"engine ↛ sink\""),
        "{}",
        found[1]
    );
}

#[test]
fn two_sibling_files_importing_each_other_are_a_cycle_but_a_parent_and_child_are_not() {
    let mut files = CLEAN.to_vec();
    files.push((
        "src/county/mod.rs",
        "mod html;\nmod render;\nuse html::Page;\n",
    ));
    files.push((
        "src/county/html.rs",
        "use super::render::{\n    Theme,\n};\nuse super::Config;\n",
    ));
    files.push((
        "src/county/render.rs",
        "\n\nuse crate::county::html::Page;\n",
    ));
    let found = violations(&files);
    assert_eq!(
        found,
        vec![
            "src/county/html.rs:2: county::html imports county::render and src/county/render.rs:3: county::render imports county::html back: rule \"no sibling cycle\""
        ]
    );
}

#[test]
fn a_module_missing_from_the_tree_breaks_no_rule() {
    // No model, line_protocol or common here: the rules that name them match nothing.
    let found = violations(&[
        ("src/lib.rs", "pub mod config;\npub mod sink;\n"),
        ("src/config/mod.rs", "use crate::metrics::Metrics;\n"),
        ("src/sink/mod.rs", "use crate::config::Output;\n"),
    ]);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn quotes_and_braces_in_literals_do_not_mislead_the_reader() {
    let mut files = CLEAN.to_vec();
    files.push((
        "src/engine/text.rs",
        "fn f(c: char) -> bool {\n    matches!(c, '\\'' | '{' | '\\\\' | '\"')\n        && \"}\\\"{\" != r##\"\"#}\"##\n}\nuse crate::sink::Spool;\n",
    ));
    let found = violations(&files);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with("src/engine/text.rs:5: engine::text imports `crate::sink::Spool`"),
        "{}",
        found[0]
    );
    // A file the reader cannot follow is reported, not skipped.
    let found = violations(&[("src/lib.rs", "pub mod a;\n"), ("src/a.rs", "fn f() {\n")]);
    assert_eq!(
        found,
        vec![
            "src/a.rs: 1 brace(s) left open at the end: the reader misread this file: rule \"readable\""
        ]
    );
}
