//! The documentation against the code, so the two cannot drift apart: the config
//! reference against `config.example.toml` and the real config structs, the metrics
//! chapter against the registry the server exports, the architecture chapter against
//! `src/lib.rs`, and every page's links, size and wording.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use tollgate::config::{AuthMode, Config};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn chapter(name: &str) -> String {
    read(&root().join("docs/src").join(name))
}

/// README.md and every page of the book.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut dirs = vec![root().join("docs/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                pages.push(path);
            }
        }
    }
    pages.sort();
    pages
}

/// The lines of `text` outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The text of every `code span` in `text`.
fn code_spans(text: &str) -> Vec<String> {
    text.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, span)| span.to_owned())
        .collect()
}

/// The rows of the markdown tables in `text` whose header row is `header`, as cells.
fn table_rows(text: &str, header: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut inside = false;
    for line in prose(text) {
        if line.trim() == header {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        if !line.starts_with('|') {
            inside = false;
            continue;
        }
        if line.starts_with("|---") {
            continue;
        }
        // `\|` inside a cell is a literal bar, not a separator.
        let cells = line
            .trim()
            .trim_matches('|')
            .replace("\\|", "\u{1}")
            .split('|')
            .map(|cell| cell.trim().replace('\u{1}', "|"))
            .collect();
        rows.push(cells);
    }
    rows
}

// ---- configuration ----

/// Splits a dotted TOML key path (`pricing.models."gpt-4o-mini".flex`) into its parts.
fn split_path(path: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut part = String::new();
    let mut quoted = false;
    for ch in path.trim().chars() {
        match ch {
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut part)),
            c if c.is_whitespace() && !quoted => {}
            c => part.push(c),
        }
    }
    parts.push(part);
    parts
}

/// A key path with the names a user chooses replaced by the placeholders the
/// reference uses (`limits.tiers.batch-jobs.rpm` → `limits.tiers.<tier>.<figure>`).
fn canonical(parts: &[String]) -> String {
    let mut out: Vec<String> = Vec::new();
    for part in parts {
        let at = out.join(".");
        let name = match at.as_str() {
            "limits.tiers" => Some("<tier>"),
            "limits.models" | "limits.tiers.<tier>.models" | "pricing.models" => Some("<model>"),
            "batch.enqueued_token_limits" => Some("<model>"),
            "pricing.aliases" => Some("<name>"),
            "teams" => Some("<team>"),
            "pricing.models.<model>"
                if ["flex", "priority", "ft_flex", "ft_priority"].contains(&part.as_str()) =>
            {
                Some("<sheet>")
            }
            _ if at.starts_with("limits.")
                && ["rpm", "tpm", "rpd", "tpd"].contains(&part.as_str()) =>
            {
                Some("<figure>")
            }
            _ => None,
        };
        out.push(name.map_or_else(|| part.clone(), str::to_owned));
    }
    out.join(".")
}

/// One key of config.example.toml: its table path, its key, and its value as TOML.
struct ExampleKey {
    table: Vec<String>,
    /// Whether `table` is an array of tables (`[[upstreams]]`) and this key starts
    /// a new entry of it.
    new_entry: Option<bool>,
    key: String,
    value: toml::Value,
}

/// A table header (`[a.b]` or `[[a]]`) or a `key = value` line, if `line` is one.
enum Line {
    Table { path: Vec<String>, array: bool },
    Key { key: String, value: toml::Value },
}

fn parse_line(line: &str) -> Option<Line> {
    let line = line.trim();
    if let Some(inner) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
        return Some(Line::Table {
            path: split_path(inner),
            array: true,
        });
    }
    if let Some(inner) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
        return Some(Line::Table {
            path: split_path(inner),
            array: false,
        });
    }
    // A key: a bare or quoted name, then `=`; prose never starts so.
    let (name, _) = line.split_once('=')?;
    let name = name.trim();
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let quoted = name.len() > 2
        && name.starts_with('"')
        && name.ends_with('"')
        && !name[1..name.len() - 1].contains('"');
    if !bare && !quoted {
        return None;
    }
    let table: toml::Table = line.parse().ok()?;
    let (key, value) = table.into_iter().next()?;
    Some(Line::Key { key, value })
}

/// Every key of config.example.toml, the commented-out examples (`# key = value`,
/// `# [table]`) included. An example table holds the example keys below it until the
/// next real key or table, which belongs to the enclosing real table again: that is
/// how the file is written (`backend = "local"` under `[limits]` follows the commented
/// `[limits.tiers.…]` examples).
fn example_keys() -> Vec<ExampleKey> {
    let text = read(&root().join("config.example.toml"));
    let mut keys = Vec::new();
    let mut real: (Vec<String>, bool) = (Vec::new(), false);
    let mut example: Option<(Vec<String>, bool)> = None;
    let mut fresh_entry = false;
    for raw in text.lines() {
        let trimmed = raw.trim_start();
        let (commented, body) = match trimmed.strip_prefix('#') {
            Some(rest) => (true, rest.strip_prefix(' ').unwrap_or(rest)),
            None => (false, trimmed),
        };
        let Some(line) = parse_line(body) else {
            continue;
        };
        match (line, commented) {
            (Line::Table { path, array }, false) => {
                real = (path, array);
                example = None;
                fresh_entry = array;
            }
            (Line::Table { path, array }, true) => {
                example = Some((path, array));
                fresh_entry = array;
            }
            (Line::Key { key, value }, commented) => {
                if !commented {
                    example = None;
                }
                let (table, array) = example.clone().unwrap_or_else(|| real.clone());
                keys.push(ExampleKey {
                    table,
                    new_entry: array.then_some(fresh_entry),
                    key,
                    value,
                });
                fresh_entry = false;
            }
        }
    }
    keys
}

/// The reference's name for a key: `upstreams[].name` for a key of an array entry.
fn reference_path(table: &[String], array: bool, key: &str) -> String {
    let mut parts = table.to_vec();
    if array && let Some(last) = parts.last_mut() {
        last.push_str("[]");
    }
    parts.push(key.to_owned());
    canonical(&parts)
}

fn example_paths() -> BTreeSet<String> {
    example_keys()
        .iter()
        .map(|k| reference_path(&k.table, k.new_entry.is_some(), &k.key))
        .collect()
}

/// config.example.toml with every example uncommented, as one TOML document.
fn uncommented_example() -> toml::Table {
    let mut doc = toml::Table::new();
    for key in example_keys() {
        let mut at = &mut doc;
        let (last, parents) = key.table.split_last().expect("no key sits outside a table");
        for part in parents {
            at = at
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap();
        }
        let table = match key.new_entry {
            None => at
                .entry(last.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap(),
            Some(new_entry) => {
                let entries = at
                    .entry(last.clone())
                    .or_insert_with(|| toml::Value::Array(Vec::new()))
                    .as_array_mut()
                    .unwrap();
                if new_entry || entries.is_empty() {
                    entries.push(toml::Value::Table(toml::Table::new()));
                }
                entries.last_mut().unwrap().as_table_mut().unwrap()
            }
        };
        let previous = table.insert(key.key.clone(), key.value);
        assert!(previous.is_none(), "{} given twice in the example", key.key);
    }
    doc
}

/// The leaf paths of a loaded config, serialized back: arrays of tables at the top
/// (`upstreams`, `routes`…) are walked per entry, other arrays, the from → to map of a
/// downgrade and an Azure upstream's deployment → model map are one value each, as
/// the file writes them.
fn serialized_paths(value: &toml::Value, parts: &mut Vec<String>, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::Table(table)
            if !["downgrades[].models", "upstreams[].deployments"]
                .contains(&canonical(parts).as_str()) =>
        {
            for (key, value) in table {
                parts.push(key.clone());
                serialized_paths(value, parts, out);
                parts.pop();
            }
        }
        toml::Value::Array(entries)
            if parts.len() == 1 && entries.iter().all(toml::Value::is_table) =>
        {
            parts[0].push_str("[]");
            for entry in entries {
                serialized_paths(entry, parts, out);
            }
            let name = parts[0].trim_end_matches("[]").to_owned();
            parts[0] = name;
        }
        _ => {
            out.insert(canonical(parts));
        }
    }
}

fn reference_keys() -> BTreeSet<String> {
    let rows = table_rows(&chapter("configuration.md"), "| key | default | meaning |");
    assert!(rows.len() > 50, "the key table was not found: {rows:?}");
    rows.iter()
        .map(|row| {
            let spans = code_spans(&row[0]);
            assert_eq!(spans.len(), 1, "one key per row: {row:?}");
            spans[0].clone()
        })
        .collect()
}

#[test]
fn the_config_reference_and_the_example_name_the_same_keys() {
    let example = example_paths();
    let reference = reference_keys();
    assert!(example.len() > 80, "{example:?}");
    let undocumented: Vec<_> = example.difference(&reference).collect();
    let not_in_example: Vec<_> = reference.difference(&example).collect();
    assert!(
        undocumented.is_empty() && not_in_example.is_empty(),
        "in config.example.toml, not in docs/src/configuration.md: {undocumented:?}\n\
         in docs/src/configuration.md, not in config.example.toml: {not_in_example:?}"
    );
}

#[test]
fn the_example_with_every_example_uncommented_loads_and_names_every_field() {
    let doc = uncommented_example();
    let text = toml::to_string(&doc).unwrap();
    // The real loader: unknown keys are refused there, so every key the example
    // names is a field of the config structs.
    let config = Config::from_toml(&text, "config.example.toml, uncommented")
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    config.validate().unwrap_or_else(|e| panic!("{e}\n{text}"));
    // And back: every field the structs serialize is a key the example shows.
    let mut fields = BTreeSet::new();
    serialized_paths(
        &toml::Value::try_from(&config).unwrap(),
        &mut Vec::new(),
        &mut fields,
    );
    let example = example_paths();
    let missing: Vec<_> = fields.difference(&example).collect();
    assert!(
        missing.is_empty(),
        "config fields config.example.toml does not show: {missing:?}"
    );
    assert!(fields.len() > 80, "{fields:?}");
}

#[test]
fn the_readme_configs_load() {
    let readme = read(&root().join("README.md"));
    let mut blocks = Vec::new();
    let mut block: Option<String> = None;
    for line in readme.lines() {
        match (&mut block, line.trim()) {
            (None, "```toml") => block = Some(String::new()),
            (Some(text), "```") => {
                blocks.push(std::mem::take(text));
                block = None;
            }
            (Some(text), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(blocks.len() >= 2, "{blocks:?}");
    let modes: Vec<AuthMode> = blocks
        .iter()
        .map(|text| {
            let config = Config::from_toml(text, "README.md").unwrap();
            config.validate().unwrap_or_else(|e| panic!("{e}\n{text}"));
            config.auth.mode
        })
        .collect();
    assert!(modes.contains(&AuthMode::Keys) && modes.contains(&AuthMode::Passthrough));
}

// ---- metrics ----

/// The metrics chapter's tables: metric → (type, label names).
fn documented_metrics() -> BTreeMap<String, (String, Vec<String>)> {
    let mut metrics = BTreeMap::new();
    for row in table_rows(&chapter("metrics.md"), "| metric | type | labels | what |") {
        let name = code_spans(&row[0]);
        assert_eq!(name.len(), 1, "{row:?}");
        let mut labels = code_spans(&row[2]);
        labels.sort();
        let previous = metrics.insert(name[0].clone(), (row[1].clone(), labels));
        assert!(previous.is_none(), "{} documented twice", name[0]);
    }
    metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_chapter_lists_every_exported_family_with_its_labels() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.database.url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    config.ledger.spill_dir = dir.path().join("spill");
    config.auth.mode = AuthMode::Passthrough;
    // Nothing listens there: the request below is answered 502 and still recorded.
    config.upstreams[0].base_url = "http://127.0.0.1:9/v1".to_owned();
    config.upstreams[0].api_key_env = None;
    let running = tollgate::server::start(config, &HashMap::new())
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://{}", running.addr);
    let answer = client
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth("sk-docs-test")
        .json(&serde_json::json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 502);
    let scrape = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // Every family registered, with or without a series yet.
    let registered: BTreeMap<String, Vec<String>> = running
        .metrics
        .families()
        .into_iter()
        .map(|family| {
            let mut labels = family.labels;
            labels.sort();
            (family.name, labels)
        })
        .collect();
    let documented = documented_metrics();
    for (name, labels) in &registered {
        let Some((_, doc_labels)) = documented.get(name) else {
            panic!("{name} is exported but not in docs/src/metrics.md");
        };
        assert_eq!(
            doc_labels, labels,
            "labels of {name} in docs/src/metrics.md"
        );
    }
    let unknown: Vec<_> = documented
        .keys()
        .filter(|name| !registered.contains_key(*name))
        .collect();
    assert!(
        unknown.is_empty(),
        "documented, not registered: {unknown:?}"
    );

    // What /metrics shows is a subset of the registry, with the documented types.
    let mut scraped = 0;
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        assert!(
            registered.contains_key(name),
            "{name} scraped, not registered"
        );
        assert_eq!(documented[name].0, kind, "type of {name}");
        scraped += 1;
    }
    assert!(scraped >= 10, "{scrape}");
    assert!(registered.len() >= 35, "{registered:?}");
    running.shutdown().await;
}

// ---- architecture ----

#[test]
fn the_architecture_chapter_describes_each_top_level_module() {
    let lib = read(&root().join("src/lib.rs"));
    let modules: BTreeSet<String> = lib
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(';').trim().to_owned())
        .collect();
    let chapter = chapter("architecture.md");
    let described: BTreeSet<String> = prose(&chapter)
        .into_iter()
        .filter_map(|line| line.strip_prefix("### `"))
        .map(|rest| rest.trim_end_matches('`').to_owned())
        .collect();
    assert!(modules.len() >= 10, "{modules:?}");
    assert_eq!(
        modules, described,
        "src/lib.rs's modules against docs/src/architecture.md's `### `module`` headings"
    );
}

// ---- every page ----

#[test]
fn the_readme_is_a_landing_page() {
    let size = std::fs::metadata(root().join("README.md")).unwrap().len();
    assert!(size < 12 * 1024, "README.md is {size} bytes");
}

/// Where `text` names an internal work item: "issue 5", "issue #14", "issue-15",
/// "task 3".
fn work_items(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let bytes = lower.as_bytes();
    let mut found = Vec::new();
    for word in ["issues", "issue", "task"] {
        let mut from = 0;
        while let Some(at) = lower[from..].find(word) {
            let start = from + at;
            let end = start + word.len();
            from = end;
            let boundary = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
            let after = &lower[end..];
            let gap = after.len() - after.trim_start_matches([' ', '-', '#', '\n']).len();
            let digits = after[gap..]
                .chars()
                .take_while(char::is_ascii_digit)
                .count();
            if boundary && digits > 0 {
                found.push(lower[start..end + gap + digits].to_owned());
            }
        }
    }
    found
}

#[test]
fn no_page_names_an_internal_work_item() {
    assert_eq!(
        work_items("see issue 5, Issue #14 and issue-15"),
        ["issue 5", "issue #14", "issue-15"]
    );
    assert!(work_items("an issue with 5 keys; tissue 3; tasks").is_empty());
    for page in pages() {
        let found = work_items(&read(&page));
        assert!(found.is_empty(), "{}: {found:?}", page.display());
    }
}

/// The anchor mdBook (and GitHub) gives a heading.
fn slug(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_ascii_lowercase())
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

fn anchors(page: &Path) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    for line in prose(&read(page)) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let text = heading.trim_start_matches('#').trim();
        let base = slug(text);
        let n = seen.entry(base.clone()).or_default();
        anchors.insert(if *n == 0 { base } else { format!("{base}-{n}") });
        *n += 1;
    }
    anchors
}

/// The targets of the inline links `[text](target)` in `text`, outside code.
fn links(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose(text) {
        let outside_code: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, part)| part)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = outside_code.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                targets.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    targets
}

#[test]
fn every_relative_link_points_at_a_file_and_anchor_that_exist() {
    let mut checked = 0;
    for page in pages() {
        for target in links(&read(&page)) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let path = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            assert!(
                path.exists(),
                "{}: link to {target}: no such file",
                page.display()
            );
            if !anchor.is_empty() {
                assert!(
                    anchors(&path).contains(anchor),
                    "{}: link to {target}: no such heading in {}",
                    page.display(),
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "{checked} links");
}

#[test]
fn the_book_lists_every_page_and_only_pages_that_exist() {
    let summary = chapter("SUMMARY.md");
    let listed: BTreeSet<String> = links(&summary).into_iter().collect();
    let on_disk: BTreeSet<String> = pages()
        .iter()
        .filter_map(|p| p.strip_prefix(root().join("docs/src")).ok())
        .map(|p| p.display().to_string())
        .filter(|p| p != "SUMMARY.md")
        .collect();
    assert_eq!(listed, on_disk, "docs/src/SUMMARY.md against docs/src/*.md");
    let book = read(&root().join("docs/book.toml"));
    assert!(book.contains("create-missing = false"), "{book}");
}
