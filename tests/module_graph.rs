//! The core's module graph is acyclic, read from its `use` lines: no file (and no folder) of
//! `src/core` imports from a module that imports it back. Test modules (`#[cfg(test)]` and
//! after) may reach anywhere and are not part of the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn core_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/core is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `config/compile.rs` -> `config::compile`; `denial.rs` -> `denial`; `keys/mod.rs` -> `keys`.
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(core_dir()).expect("under src/core");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// Module paths named after `crate::core::` in production code, braces expanded one level.
fn imports(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::core::") {
        let rest = &code[at + "crate::core::".len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let path = path.trim_end_matches(':').to_string();
        let after = &rest[path.len()..];
        if let Some(group) = after.strip_prefix("::{") {
            let inner = group.split('}').next().unwrap_or_default();
            for item in inner.split(',') {
                let item = item.split_whitespace().next().unwrap_or_default();
                if !item.is_empty() && item != "self" {
                    found.push(format!("{path}::{item}"));
                }
            }
        }
        found.push(path);
    }
    found
}

/// The longest prefix of `path` that is a module of the core.
fn resolve(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| modules.contains(m))
}

fn graphs() -> (Graph, Graph) {
    let mut files = Vec::new();
    rust_files(&core_dir(), &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut by_file = Graph::new();
    let mut by_folder = Graph::new();
    for f in &files {
        let from = module_of(f);
        let text = std::fs::read_to_string(f).expect("readable source");
        for target in imports(&text).iter().filter_map(|p| resolve(p, &modules)) {
            let top = |m: &str| m.split("::").next().unwrap_or_default().to_string();
            if target != from && !from.starts_with(&format!("{target}::")) {
                by_file
                    .entry(from.clone())
                    .or_default()
                    .insert(target.clone());
            }
            if top(&target) != top(&from) {
                by_folder
                    .entry(top(&from))
                    .or_default()
                    .insert(top(&target));
            }
        }
    }
    (by_file, by_folder)
}

/// A cycle, if the graph has one, as the list of its nodes.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &Graph,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for next in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

#[test]
fn the_core_files_import_each_other_without_cycles() {
    let (by_file, _) = graphs();
    assert!(
        by_file.len() > 20,
        "the parser found too few edges: {by_file:?}"
    );
    if let Some(cycle) = find_cycle(&by_file) {
        panic!("import cycle between core files: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_core_folders_import_each_other_without_cycles() {
    let (_, by_folder) = graphs();
    assert!(by_folder.contains_key("decision"), "{by_folder:?}");
    if let Some(cycle) = find_cycle(&by_folder) {
        panic!("import cycle between core folders: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        imports(
            "use crate::core::keys::{jwk_set::KeySet, state};\n#[cfg(test)]\nuse crate::core::x;"
        ),
        vec!["keys::jwk_set::KeySet", "keys::state", "keys"]
    );
}

#[test]
fn the_core_knows_nothing_of_proxy_wasm() {
    let mut files = Vec::new();
    rust_files(&core_dir(), &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable source");
        assert!(
            !text.contains("proxy_wasm"),
            "{} names proxy_wasm",
            f.display()
        );
    }
}
