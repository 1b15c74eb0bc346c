//! The top-level modules of `src/` form an acyclic graph (the layering in `src/lib.rs`).
//!
//! A cycle means two concepts cannot be understood, tested or moved apart, so this test
//! reads the source, not the compiler: every `crate::x` path (in `use` trees, grouped or
//! not, and inline anywhere), every `$crate::x` in macros, and every `super::` path that
//! climbs out of its top-level module counts as an edge to `x`. Comments and string
//! literals are skipped, so doc links do not count; `#[cfg(test)]` code does count.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// One place a module names another: the first sighting is enough to explain an edge.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Site {
    file: String,
    line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other,
}

/// Idents and the punctuation path parsing needs, with their line numbers; comments,
/// string, byte-string, raw-string and char literals are dropped.
fn tokenize(src: &str) -> Vec<(Tok, usize)> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let n = chars.len();
    let at = |j: usize| chars.get(j).copied().unwrap_or('\0');
    while i < n {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < n && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < n {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && at(i + 1) == 'r')) && {
            let start = if c == 'b' { i + 2 } else { i + 1 };
            let mut j = start;
            while at(j) == '#' {
                j += 1;
            }
            at(j) == '"'
        } {
            let mut j = if c == 'b' { i + 2 } else { i + 1 };
            let mut hashes = 0;
            while at(j) == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1;
            loop {
                if j >= n {
                    break;
                }
                if chars[j] == '"' && (1..=hashes).all(|h| at(j + h) == '#') {
                    j += 1 + hashes;
                    break;
                }
                if chars[j] == '\n' {
                    line += 1;
                }
                j += 1;
            }
            i = j;
        } else if c == '"' || (c == 'b' && at(i + 1) == '"') {
            let mut j = if c == 'b' { i + 2 } else { i + 1 };
            while j < n && chars[j] != '"' {
                if chars[j] == '\\' {
                    j += 1;
                }
                if at(j) == '\n' {
                    line += 1;
                }
                j += 1;
            }
            i = j + 1;
        } else if c == '\'' || (c == 'b' && at(i + 1) == '\'') {
            let j = if c == 'b' { i + 1 } else { i };
            if at(j + 1) == '\\' {
                let mut k = j + 2;
                while k < n && chars[k] != '\'' {
                    k += 1;
                }
                i = k + 1;
            } else if at(j + 2) == '\'' {
                i = j + 3;
            } else {
                // A lifetime or label: the ident after it is harmless.
                i = j + 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < n && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let word = word.strip_prefix("r#").map(str::to_owned).unwrap_or(word);
            out.push((Tok::Ident(word), line));
        } else if c == '$' && at(i + 1) == 'c' {
            // `$crate` in a macro body is `crate` once expanded.
            i += 1;
        } else if c == ':' && at(i + 1) == ':' {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((
                match c {
                    '{' => Tok::Open,
                    '}' => Tok::Close,
                    ',' => Tok::Comma,
                    _ => Tok::Other,
                },
                line,
            ));
            i += 1;
        }
    }
    out
}

fn ident(toks: &[(Tok, usize)], i: usize) -> Option<&str> {
    match toks.get(i) {
        Some((Tok::Ident(s), _)) => Some(s.as_str()),
        _ => None,
    }
}

fn is(toks: &[(Tok, usize)], i: usize, t: &Tok) -> bool {
    toks.get(i).map(|(k, _)| k) == Some(t)
}

/// The first segments of a path or use tree starting at `i`: one ident, or every
/// item's first ident when the tree is a `{…}` group (nested groups included).
fn first_segments(toks: &[(Tok, usize)], i: usize, out: &mut Vec<(String, usize)>) {
    if let Some(name) = ident(toks, i) {
        out.push((name.to_owned(), toks[i].1));
    } else if is(toks, i, &Tok::Open) {
        let mut j = i + 1;
        let mut depth = 0usize;
        let mut item_start = true;
        while j < toks.len() {
            match &toks[j].0 {
                Tok::Open => depth += 1,
                Tok::Close if depth == 0 => break,
                Tok::Close => depth -= 1,
                Tok::Comma if depth == 0 => {
                    item_start = true;
                    j += 1;
                    continue;
                }
                Tok::Ident(_) if depth == 0 && item_start => first_segments(toks, j, out),
                _ => {}
            }
            item_start = false;
            j += 1;
        }
    }
}

/// Which top-level modules `src` (the file at module path `file_path`, e.g.
/// `["auth", "store"]`) names, each with the line of its first mention.
fn references(src: &str, file_path: &[String], modules: &BTreeSet<String>) -> Vec<(String, usize)> {
    let toks = tokenize(src);
    let own = &file_path[0];
    // Inline `mod x { … }` blocks lengthen the path that `super::` climbs from.
    let mut path: Vec<String> = file_path.to_vec();
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut found: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i].0 {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth = depth.saturating_sub(1);
                if inline.last() == Some(&depth) {
                    inline.pop();
                    path.pop();
                }
            }
            Tok::Ident(word) if word == "mod" => {
                if let Some(name) = ident(&toks, i + 1) {
                    if is(&toks, i + 2, &Tok::Open) {
                        path.push(name.to_owned());
                        inline.push(depth);
                        depth += 1;
                        i += 3;
                        continue;
                    }
                }
            }
            Tok::Ident(word) if word == "crate" && is(&toks, i + 1, &Tok::PathSep) => {
                // `a::crate` cannot occur, so this is always an absolute path.
                let mut segs = Vec::new();
                first_segments(&toks, i + 2, &mut segs);
                found.extend(segs);
                i += 2;
                continue;
            }
            Tok::Ident(word)
                if word == "super"
                    && is(&toks, i + 1, &Tok::PathSep)
                    && !(i > 0 && is(&toks, i - 1, &Tok::PathSep)) =>
            {
                let mut j = i;
                let mut ups = 0;
                while ident(&toks, j) == Some("super") && is(&toks, j + 1, &Tok::PathSep) {
                    ups += 1;
                    j += 2;
                }
                if ups >= path.len() {
                    let mut segs = Vec::new();
                    first_segments(&toks, j, &mut segs);
                    found.extend(segs);
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found.retain(|(name, _)| name != own && modules.contains(name));
    found
}

/// `pub mod x;` lines of `src/lib.rs`: the nodes of the graph.
fn top_level_modules(lib_rs: &str) -> BTreeSet<String> {
    let toks = tokenize(lib_rs);
    let mut out = BTreeSet::new();
    for i in 0..toks.len() {
        if ident(&toks, i) == Some("mod") {
            if let Some(name) = ident(&toks, i + 1) {
                out.insert(name.to_owned());
            }
        }
    }
    out
}

/// `src/auth/store.rs` -> `["auth", "store"]`; `src/auth/mod.rs` -> `["auth"]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs").to_owned();
        if stem != "mod" {
            parts.push(stem);
        }
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
                .path()
        })
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

type Graph = BTreeMap<String, BTreeMap<String, Site>>;

fn build_graph(src_dir: &Path) -> (BTreeSet<String>, Graph) {
    let lib = fs::read_to_string(src_dir.join("lib.rs")).unwrap_or_else(|e| panic!("lib.rs: {e}"));
    let modules = top_level_modules(&lib);
    let mut files = Vec::new();
    rust_files(src_dir, &mut files);
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeMap::new()))
        .collect();
    for file in files {
        let rel = file.strip_prefix(src_dir).unwrap_or(&file).to_path_buf();
        let path = module_path(&rel);
        // lib.rs only declares; main.rs is the binary crate, where `crate` means itself.
        let Some(top) = path.first().filter(|m| modules.contains(*m)) else {
            continue;
        };
        let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let edges = graph.entry(top.clone()).or_default();
        for (target, line) in references(&text, &path, &modules) {
            edges.entry(target).or_insert_with(|| Site {
                file: format!("src/{}", rel.display()),
                line,
            });
        }
    }
    (modules, graph)
}

/// Tarjan's strongly connected components, only those with more than one module.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flat_map(|e| e.keys()) {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

fn describe(graph: &Graph, components: &[Vec<String>]) -> String {
    let mut out = String::new();
    for component in components {
        out.push_str(&format!("cycle among {{{}}}:\n", component.join(", ")));
        for from in component {
            for (to, site) in &graph[from] {
                if component.contains(to) {
                    out.push_str(&format!(
                        "  {from} -> {to}  ({}:{})\n",
                        site.file, site.line
                    ));
                }
            }
        }
    }
    out
}

/// The layer table in `src/lib.rs`'s doc: one line per layer, top first, modules
/// before the first run of two spaces.
fn documented_layers(lib_rs: &str) -> Vec<Vec<String>> {
    let mut layers = Vec::new();
    let mut inside = false;
    for line in lib_rs.lines() {
        let Some(text) = line.strip_prefix("//!") else {
            continue;
        };
        let text = text.trim_start();
        if text.starts_with("```") {
            if inside {
                break;
            }
            inside = text == "```text";
            continue;
        }
        if inside {
            let names = text.split("  ").next().unwrap_or_default();
            layers.push(names.split_whitespace().map(str::to_owned).collect());
        }
    }
    layers
}

#[test]
fn top_level_modules_have_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (modules, graph) = build_graph(&src);
    assert!(modules.len() > 10, "lib.rs lists only {modules:?}");
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "module cycles:\n{}",
        describe(&graph, &found)
    );
}

#[test]
fn every_use_points_down_the_documented_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = fs::read_to_string(src.join("lib.rs")).unwrap_or_else(|e| panic!("lib.rs: {e}"));
    let (modules, graph) = build_graph(&src);
    let layers = documented_layers(&lib);
    let mut layer_of = BTreeMap::new();
    for (depth, layer) in layers.iter().enumerate() {
        for name in layer {
            assert!(
                layer_of.insert(name.clone(), depth).is_none(),
                "{name} is listed twice in lib.rs's layers"
            );
        }
    }
    let listed: BTreeSet<String> = layer_of.keys().cloned().collect();
    assert_eq!(
        listed, modules,
        "lib.rs's layers must list every module once"
    );
    let mut upward = String::new();
    for (from, edges) in &graph {
        for (to, site) in edges {
            if layer_of[to] <= layer_of[from] {
                upward.push_str(&format!(
                    "  {from} -> {to}  ({}:{})\n",
                    site.file, site.line
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "uses that do not point to a lower layer:\n{upward}"
    );
}

fn mods(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn path(p: &[&str]) -> Vec<String> {
    p.iter().map(|s| (*s).to_owned()).collect()
}

fn names(src: &str, file: &[&str]) -> Vec<(String, usize)> {
    references(
        src,
        &path(file),
        &mods(&["auth", "error", "limits", "proxy", "batch"]),
    )
}

#[test]
fn parser_sees_plain_grouped_and_nested_use_trees() {
    let src = "use crate::error::ApiError;\nuse crate::{limits::Tier, proxy::{a, b}};\n\
               use crate::{\n    batch,\n    auth::Identity,\n};";
    assert_eq!(
        names(src, &["auth", "store"]),
        vec![
            ("error".to_owned(), 1),
            ("limits".to_owned(), 2),
            ("proxy".to_owned(), 2),
            ("batch".to_owned(), 4),
        ]
    );
}

#[test]
fn parser_sees_inline_paths_and_macro_crate() {
    let src = "fn f() -> crate::error::ApiError { crate::limits::check() }\n\
               macro_rules! m { () => { $crate::proxy::x() } }";
    assert_eq!(
        names(src, &["batch"]),
        vec![
            ("error".to_owned(), 1),
            ("limits".to_owned(), 1),
            ("proxy".to_owned(), 2),
        ]
    );
}

#[test]
fn parser_resolves_super_against_file_and_inline_modules() {
    // From auth/store.rs one `super` is still inside auth; two climb to the crate.
    assert!(names("use super::Identity;", &["auth", "store"]).is_empty());
    assert_eq!(
        names(
            "use super::super::{error::ApiError, limits};",
            &["auth", "store"]
        ),
        vec![("error".to_owned(), 1), ("limits".to_owned(), 1)]
    );
    // From auth/mod.rs a single `super` is the crate root.
    assert_eq!(
        names("use super::proxy;", &["auth"]),
        vec![("proxy".to_owned(), 1)]
    );
    // Inside an inline test module, `super` is the file's own module again.
    let src =
        "mod tests {\n    use super::*;\n    use super::super::error::X;\n}\nuse super::limits;";
    assert_eq!(
        names(src, &["auth"]),
        vec![("error".to_owned(), 3), ("limits".to_owned(), 5)]
    );
}

#[test]
fn parser_skips_comments_strings_and_own_module() {
    let src = "// use crate::error::X;\n/* crate::limits /* nested */ crate::proxy */\n\
               /// see [`crate::batch::Job`]\nconst S: &str = \"crate::error::X\";\n\
               const R: &str = r#\"crate::limits \" crate::proxy\"#;\nconst C: char = '\"';\n\
               fn f<'a>(x: &'a str) { crate::auth::g(); crate::error::h() }";
    assert_eq!(names(src, &["auth"]), vec![("error".to_owned(), 7)]);
}

#[test]
fn parser_ignores_names_that_are_not_modules() {
    assert!(
        names(
            "use crate::Thing; use std::error::Error; pub(crate) fn f() {}",
            &["auth"]
        )
        .is_empty()
    );
}

#[test]
fn tarjan_reports_each_cycle_once_with_its_edges() {
    let site = |line| Site {
        file: "src/x.rs".to_owned(),
        line,
    };
    let mut graph: Graph = BTreeMap::new();
    for (from, to, line) in [
        ("a", "b", 1),
        ("b", "c", 2),
        ("c", "a", 3),
        ("c", "d", 4),
        ("d", "e", 5),
        ("e", "d", 6),
    ] {
        graph
            .entry(from.to_owned())
            .or_default()
            .insert(to.to_owned(), site(line));
        graph.entry(to.to_owned()).or_default();
    }
    graph
        .entry("f".to_owned())
        .or_default()
        .insert("a".to_owned(), site(7));
    let found = cycles(&graph);
    assert_eq!(found, vec![path(&["a", "b", "c"]), path(&["d", "e"])]);
    let text = describe(&graph, &found);
    assert!(text.contains("c -> a  (src/x.rs:3)"), "{text}");
    assert!(!text.contains("c -> d"), "{text}");
    assert!(!text.contains("f -> a"), "{text}");
}

#[test]
fn layer_table_is_read_from_the_text_block_only() {
    let lib = "//! intro `x`\n//!\n//! ```text\n//! a b      top\n//! c        comment  with gaps\n//! ```\n//! ```text\n//! d\n";
    assert_eq!(
        documented_layers(lib),
        vec![path(&["a", "b"]), path(&["c"])]
    );
}
