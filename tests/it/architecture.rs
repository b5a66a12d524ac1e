//! The dependency table of docs/ARCHITECTURE.md ("Dependencies") is the
//! crate's real one, and its "Never:" rules hold.
//!
//! Every `src/**/*.rs` file is read; its references to the crate's modules
//! (`crate::…`, `super::…`, `self::…`, and a child module declared in the
//! file named as `child::…`; in `use` trees and in paths; comments and
//! literals excluded) are mapped to the table's rows (the longest row that
//! prefixes the path: `dashboard::model`, `cli::common`, `codec`…). Code
//! under `#[cfg(test)]` may also use what a row lists as `(tests: …)`.
//! The test fails, naming the file, the module and the edge, when a module
//! uses one its row does not list, when a row lists one it no longer uses,
//! when a file has no row, or when top-level modules form a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One row of the table.
#[derive(Debug)]
struct Row {
    layer: String,
    /// What the module's own code may use.
    deps: BTreeSet<String>,
    /// What only its tests may use (besides `deps`).
    tests: BTreeSet<String>,
}

/// Where a module is used from: the first place seen.
#[derive(Debug, Clone)]
struct Site {
    file: String,
    line: usize,
    path: String,
}

/// The edges of one row: production code, and code under `#[cfg(test)]`.
#[derive(Debug, Default)]
struct Uses {
    code: BTreeMap<String, Site>,
    tests: BTreeMap<String, Site>,
}

#[test]
fn the_dependency_table_is_the_crates_real_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).expect("docs/ARCHITECTURE.md");
    let mut problems = Vec::new();
    let rows = parse_table(&doc, &mut problems);
    assert!(rows.len() > 10, "the table was not found or is nearly empty: {problems:?}");
    let files = source_files(&root.join("src"));
    let uses = crate_uses(root, &files, &rows, &mut problems);

    for (name, row) in &rows {
        for dep in row.deps.iter().chain(&row.tests) {
            if !rows.contains_key(dep) {
                problems.push(format!("row `{name}` lists `{dep}`, which has no row of its own"));
            }
        }
        let Some(used) = uses.get(name) else {
            problems.push(format!("row `{name}`: no file in src/ belongs to this module"));
            continue;
        };
        for (dep, at) in &used.code {
            if !row.deps.contains(dep) {
                problems.push(format!("`{name}` uses `{dep}` ({at}), which its row does not list"));
            }
        }
        for (dep, at) in &used.tests {
            if !row.deps.contains(dep) && !row.tests.contains(dep) && !used.code.contains_key(dep) {
                problems.push(format!("`{name}`'s tests use `{dep}` ({at}), which its row does not list"));
            }
        }
        for dep in &row.deps {
            if !used.code.contains_key(dep) {
                let tests_only =
                    if used.tests.contains_key(dep) { " outside its tests (write `(tests: …)`)" } else { "" };
                problems.push(format!("row `{name}` lists `{dep}`, which it no longer uses{tests_only}"));
            }
        }
        for dep in &row.tests {
            if !used.tests.contains_key(dep) || used.code.contains_key(dep) {
                problems.push(format!(
                    "row `{name}` lists `{dep}` under tests: its tests do not use it, or its code does too"
                ));
            }
        }
    }
    problems.extend(cycles(&uses));
    problems.extend(never(&doc, &rows, &uses));
    problems.extend(main_only_calls_cli(root));
    assert!(problems.is_empty(), "docs/ARCHITECTURE.md, \"Dependencies\":\n  {}", problems.join("\n  "));
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.path)
    }
}

// === the table ===

/// The rows of the table under "### Dependencies".
fn parse_table(doc: &str, problems: &mut Vec<String>) -> BTreeMap<String, Row> {
    let mut rows = BTreeMap::new();
    let Some(start) = doc.find("### Dependencies") else {
        problems.push("no \"### Dependencies\" section".into());
        return rows;
    };
    let mut lines = doc[start..].lines().skip_while(|l| !l.starts_with("| module | layer | depends on |")).skip(2);
    for line in lines.by_ref().take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        let [module, layer, deps] = cells[..] else {
            problems.push(format!("a row without three cells: {line}"));
            continue;
        };
        let Some(name) = ticked(module).into_iter().next() else {
            problems.push(format!("a row without a `module`: {line}"));
            continue;
        };
        // Notes in parentheses name items, not modules; `(tests: …)` is
        // what only the module's tests use.
        let (code, tests) = match deps.find("(tests:") {
            Some(at) => {
                let end = deps[at..].find(')').map_or(deps.len(), |e| at + e);
                (format!("{}{}", &deps[..at], &deps[end + 1..]), deps[at + "(tests:".len()..end].to_string())
            }
            None => (deps.to_string(), String::new()),
        };
        let code = without_notes(&code);
        let mut list = |text: &str| {
            let names = ticked(text);
            let rest: String = strip_ticked(text).chars().filter(|c| !matches!(c, ',' | ' ' | '—')).collect();
            if !rest.is_empty() {
                problems.push(format!("row `{name}`: cannot read {rest:?} (list modules as `a`, `b::{{c, d}}`)"));
            }
            names.iter().flat_map(|n| expand(n)).collect::<BTreeSet<String>>()
        };
        let row = Row { layer: layer.to_string(), deps: list(&code), tests: list(&tests) };
        if rows.insert(name.clone(), row).is_some() {
            problems.push(format!("two rows for `{name}`"));
        }
    }
    rows
}

/// The text between backticks.
fn ticked(text: &str) -> Vec<String> {
    text.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

fn strip_ticked(text: &str) -> String {
    text.split('`').step_by(2).collect()
}

fn without_notes(text: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// `a::{b, c}` → `a::b`, `a::c`.
fn expand(name: &str) -> Vec<String> {
    match name.split_once("::{") {
        Some((head, rest)) => {
            rest.trim_end_matches('}').split(',').map(|part| format!("{head}::{}", part.trim())).collect()
        }
        None => vec![name.to_string()],
    }
}

// === the sources ===

fn source_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(source_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The module a file is: `src/cli/audit/mod.rs` → `["cli", "audit"]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> =
        rel.strip_prefix("src").unwrap_or(rel).iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    match last.as_str() {
        "mod.rs" | "lib.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// The row a module path belongs to: the longest row that prefixes it.
fn row_of(path: &[String], rows: &BTreeMap<String, Row>) -> Option<String> {
    (1..=path.len()).rev().map(|n| path[..n].join("::")).find(|name| rows.contains_key(name))
}

/// Each row's edges, read from the sources.
fn crate_uses(
    root: &Path,
    files: &[PathBuf],
    rows: &BTreeMap<String, Row>,
    problems: &mut Vec<String>,
) -> BTreeMap<String, Uses> {
    let scanned: Vec<(String, Vec<String>, Scan)> = files
        .iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(root).expect("under the crate").to_path_buf();
            // The binary is its own crate; `main_only_calls_cli` checks it.
            if rel == Path::new("src/main.rs") {
                return None;
            }
            let text = std::fs::read_to_string(f).expect("a source file");
            let module = module_of(&rel);
            Some((rel.display().to_string(), module.clone(), scan(&text, &module)))
        })
        .collect();
    // A file is test code when its parent declares it under #[cfg(test)].
    let test_modules: BTreeSet<Vec<String>> = scanned
        .iter()
        .flat_map(|(_, m, s)| s.test_children.iter().map(move |c| [m.clone(), vec![c.clone()]].concat()))
        .collect();
    let mut uses: BTreeMap<String, Uses> = BTreeMap::new();
    let mut unmapped = BTreeSet::new();
    for (file, module, scan) in &scanned {
        if module.is_empty() {
            continue; // lib.rs: the module declarations only
        }
        let Some(row) = row_of(module, rows) else {
            problems.push(format!("{file}: module `{}` has no row in the table", module.join("::")));
            continue;
        };
        let test_file = test_modules.iter().any(|t| module.starts_with(t));
        let entry = uses.entry(row.clone()).or_default();
        for r in &scan.refs {
            let shown = format!("crate::{}", r.path.join("::"));
            let Some(target) = row_of(&r.path, rows) else {
                let first = format!("{file}: `crate::{}`", r.path.first().map_or("", String::as_str));
                if unmapped.insert(first) {
                    problems.push(format!("{file}:{}: `{shown}` is in no row of the table", r.line));
                }
                continue;
            };
            if target == row {
                continue;
            }
            let site = Site { file: file.clone(), line: r.line, path: shown };
            let side = if test_file || r.test { &mut entry.tests } else { &mut entry.code };
            side.entry(target).or_insert(site);
        }
    }
    uses
}

// === reading Rust, just enough ===

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Colons,
    Punct(char),
}

/// Tokens with their line: comments, string and char literals, lifetimes
/// and numbers dropped.
fn tokens(text: &str) -> Vec<(Tok, usize)> {
    let b: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| b.get(i).copied().unwrap_or('\0');
    while i < b.len() {
        let c = b[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(b[i] == '\n');
                    i += 1;
                }
            }
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                line += usize::from(at(i) == '\n');
                i += 1;
            }
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if at(i + 1) == '\\' {
                i += 3;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
                while at(i).is_alphanumeric() || at(i) == '_' {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() {
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            let raw = matches!(word.as_str(), "r" | "br") && matches!(at(i), '"' | '#');
            if raw && (at(i) == '"' || at(i + 1) == '"' || at(i + 1) == '#') {
                let mut hashes = 0;
                while at(i) == '#' {
                    hashes += 1;
                    i += 1;
                }
                i += 1; // the opening quote
                loop {
                    if i >= b.len() {
                        break;
                    }
                    if b[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                        i += 1 + hashes;
                        break;
                    }
                    line += usize::from(b[i] == '\n');
                    i += 1;
                }
            } else if word == "b" && matches!(at(i), '"' | '\'') {
                // b"…" and b'…': the literal is lexed next time round.
            } else {
                out.push((Tok::Ident(word), line));
            }
        } else if c == ':' && at(i + 1) == ':' {
            out.push((Tok::Colons, line));
            i += 2;
        } else {
            out.push((Tok::Punct(c), line));
            i += 1;
        }
    }
    out
}

/// A reference to a module path (from the crate's root) at a line.
#[derive(Debug)]
struct Ref {
    path: Vec<String>,
    line: usize,
    test: bool,
}

#[derive(Debug, Default)]
struct Scan {
    refs: Vec<Ref>,
    /// Child modules in their own files declared under `#[cfg(test)]`.
    test_children: Vec<String>,
}

/// The module references of one file whose module is `module`.
fn scan(text: &str, module: &[String]) -> Scan {
    let toks = tokens(text);
    let ident = |i: usize| match toks.get(i) {
        Some((Tok::Ident(w), _)) => Some(w.as_str()),
        _ => None,
    };
    let is = |i: usize, t: &Tok| toks.get(i).is_some_and(|(x, _)| x == t);
    // Child modules in their own files, named from here as `child::…`.
    let mut children = BTreeSet::new();
    let mut out = Scan::default();
    let mut depth = 0usize;
    // Inline `mod name {`: (depth inside it, name).
    let mut inline: Vec<(usize, String)> = Vec::new();
    // Where code under #[cfg(test)] ends: at a depth's closing brace, or
    // at the next `;` of the current depth.
    let mut test_until: Option<(usize, bool)> = None;
    let mut pending_test = false;
    let mut i = 0;
    while i < toks.len() {
        let here =
            |inline: &[(usize, String)]| [module.to_vec(), inline.iter().map(|(_, n)| n.clone()).collect()].concat();
        match &toks[i].0 {
            Tok::Punct('#')
                if is(i + 1, &Tok::Punct('['))
                    && ident(i + 2) == Some("cfg")
                    && is(i + 3, &Tok::Punct('('))
                    && ident(i + 4) == Some("test")
                    && is(i + 5, &Tok::Punct(')')) =>
            {
                pending_test = test_until.is_none();
                i += 6;
                continue;
            }
            Tok::Punct('{') => {
                depth += 1;
                if pending_test {
                    test_until = Some((depth, true));
                    pending_test = false;
                }
                if i >= 2 && ident(i - 2) == Some("mod") {
                    inline.push((depth, ident(i - 1).unwrap_or_default().to_string()));
                }
            }
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(d, _)| *d == depth) {
                    inline.pop();
                }
                if test_until == Some((depth, true)) {
                    test_until = None;
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Punct(';') => {
                if pending_test {
                    pending_test = false;
                    if i >= 2 && ident(i - 2) == Some("mod") && inline.is_empty() {
                        out.test_children.push(ident(i - 1).unwrap_or_default().to_string());
                    }
                } else if test_until == Some((depth, false)) {
                    test_until = None;
                }
                if i >= 2 && ident(i - 2) == Some("mod") && inline.is_empty() {
                    children.insert(ident(i - 1).unwrap_or_default().to_string());
                }
            }
            Tok::Ident(w) if is(i + 1, &Tok::Colons) && !(i > 0 && is(i - 1, &Tok::Colons)) => {
                let base: Option<Vec<String>> = match w.as_str() {
                    "crate" => Some(Vec::new()),
                    "self" => Some(here(&inline)),
                    "super" => {
                        let mut m = here(&inline);
                        m.pop();
                        Some(m)
                    }
                    child
                        if inline.is_empty() && children.contains(child) && ident(i.wrapping_sub(1)) != Some("mod") =>
                    {
                        Some([module.to_vec(), vec![child.to_string()]].concat())
                    }
                    _ => None,
                };
                if let Some(base) = base {
                    if pending_test {
                        // `#[cfg(test)] use …;`
                        test_until = Some((depth, false));
                        pending_test = false;
                    }
                    let line = toks[i].1;
                    let test = test_until.is_some();
                    let mut paths = Vec::new();
                    i = path_tail(&toks, i + 1, base, &mut paths);
                    out.refs.extend(paths.into_iter().map(|path| Ref { path, line, test }));
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Reads `::a::b`, `::{a, b::c}`, `::*`, `super::` chains from `i`;
/// pushes the full paths; returns where the path ends.
fn path_tail(toks: &[(Tok, usize)], mut i: usize, mut base: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut leading = true;
    while toks.get(i).is_some_and(|(t, _)| *t == Tok::Colons) {
        match toks.get(i + 1).map(|(t, _)| t) {
            Some(Tok::Ident(w)) if w == "super" && leading => {
                base.pop();
                i += 2;
            }
            Some(Tok::Ident(w)) => {
                leading = false;
                base.push(w.clone());
                i += 2;
            }
            Some(Tok::Punct('{')) => return group(toks, i + 1, &base, out),
            _ => {
                // `::*`, `::<T>`: the path so far.
                i += 1;
                break;
            }
        }
    }
    out.push(base);
    i
}

/// A `{…}` use group at `i` under `prefix`; returns the index after `}`.
fn group(toks: &[(Tok, usize)], mut i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    i += 1; // `{`
    loop {
        match toks.get(i).map(|(t, _)| t) {
            None => return i,
            Some(Tok::Punct('}')) => return i + 1,
            Some(Tok::Punct(',')) | Some(Tok::Punct('*')) => i += 1,
            Some(Tok::Punct('{')) => i = group(toks, i, prefix, out),
            Some(Tok::Ident(w)) if w == "self" => {
                out.push(prefix.to_vec());
                i += 1;
            }
            Some(Tok::Ident(w)) if w == "as" => i += 2,
            Some(Tok::Ident(w)) => {
                let base = [prefix.to_vec(), vec![w.clone()]].concat();
                i = path_tail(toks, i + 1, base, out);
            }
            Some(_) => i += 1,
        }
    }
}

// === cycles and the "Never:" rules ===

/// Cycles between top-level modules (a module and its own submodules are
/// one node).
fn cycles(uses: &BTreeMap<String, Uses>) -> Vec<String> {
    let top = |m: &str| top_of(m).to_string();
    let mut graph: BTreeMap<String, BTreeMap<String, Site>> = BTreeMap::new();
    for (from, used) in uses {
        for (to, site) in used.code.iter().chain(&used.tests) {
            if top(from) != top(to) {
                graph.entry(top(from)).or_default().entry(top(to)).or_insert_with(|| site.clone());
            }
        }
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for start in graph.keys() {
        let mut stack = vec![start.clone()];
        walk(&graph, &mut stack, &mut done, &mut found);
    }
    found
}

fn walk(
    graph: &BTreeMap<String, BTreeMap<String, Site>>,
    stack: &mut Vec<String>,
    done: &mut BTreeSet<String>,
    found: &mut Vec<String>,
) {
    let node = stack.last().cloned().unwrap_or_default();
    if done.contains(&node) {
        return;
    }
    for (next, _) in graph.get(&node).into_iter().flatten() {
        if let Some(at) = stack.iter().position(|n| n == next) {
            let mut text = String::from("import cycle:");
            let ring: Vec<&String> = stack[at..].iter().chain(std::iter::once(next)).collect();
            for pair in ring.windows(2) {
                let _ = write!(text, " `{}` → `{}` ({});", pair[0], pair[1], graph[pair[0]][pair[1]]);
            }
            found.push(text);
        } else {
            stack.push(next.clone());
            walk(graph, stack, done, found);
            stack.pop();
        }
    }
    done.insert(node);
}

/// The "Never:" paragraph's rules, each with the words the page uses for
/// it (so that the page and this check change together).
fn never(doc: &str, rows: &BTreeMap<String, Row>, uses: &BTreeMap<String, Uses>) -> Vec<String> {
    let mut broken = Vec::new();
    let paragraph = doc.find("Never: ").map(|at| &doc[at..]).and_then(|p| p.split("\n\n").next()).unwrap_or("");
    let paragraph = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
    let layer = |m: &str| rows.get(m).map_or("", |r| r.layer.as_str()).to_string();
    // (the page's words, whether `from` may not use `to`)
    type Rule = (&'static str, fn(&str, &str, &str, &str) -> bool);
    let rules: [Rule; 6] = [
        ("a core using anything but a core", |from_layer, to_layer, _, _| {
            from_layer.starts_with("core") && !to_layer.starts_with("core")
        }),
        ("`relay` using `aggregate`, `dashboard`, `server` or `client`", |_, _, from, to| {
            from == "relay" && ["aggregate", "dashboard", "server", "client"].contains(&top_of(to))
        }),
        ("`server` or `client` using `relay`", |_, _, from, to| {
            ["server", "client"].contains(&top_of(from)) && top_of(to) == "relay"
        }),
        ("a module outside `cli` using `cli`", |_, _, from, to| top_of(from) != "cli" && top_of(to) == "cli"),
        ("a subcommand of `cli` using another, or `cli`'s dispatch (only `cli::common`)", |_, _, from, to| {
            top_of(from) == "cli"
                && !["cli", "cli::common"].contains(&from)
                && top_of(to) == "cli"
                && to != "cli::common"
        }),
        ("`cli::common` using a subcommand", |_, _, from, to| from == "cli::common" && top_of(to) == "cli"),
    ];
    for (words, forbidden) in rules {
        if !paragraph.contains(words) {
            broken.push(format!("the \"Never:\" paragraph no longer says \"{words}\" (this test checks it)"));
        }
        for (from, used) in uses {
            for (to, site) in used.code.iter().chain(&used.tests) {
                if forbidden(&layer(from), &layer(to), from, to) {
                    broken.push(format!("never {words}: `{from}` uses `{to}` ({site})"));
                }
            }
        }
    }
    broken
}

/// `dashboard::model` → `dashboard`.
fn top_of(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// The binary only calls `cli::main`.
fn main_only_calls_cli(root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(root.join("src/main.rs")).expect("src/main.rs");
    let toks = tokens(&text);
    let mut wrong = Vec::new();
    for (i, (t, line)) in toks.iter().enumerate() {
        if *t == Tok::Ident("popfault".into()) && toks.get(i + 1).is_some_and(|(t, _)| *t == Tok::Colons) {
            let mut paths = Vec::new();
            path_tail(&toks, i + 1, Vec::new(), &mut paths);
            for p in paths {
                if p != ["cli", "main"] {
                    wrong.push(format!(
                        "src/main.rs:{line}: uses `popfault::{}`; it only calls `cli::main`",
                        p.join("::")
                    ));
                }
            }
        }
    }
    wrong
}
