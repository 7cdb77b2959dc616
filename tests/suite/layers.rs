//! The module map holds (issue 17): no import cycle anywhere in `src/`, and the leaves stay
//! leaves. Read from the sources themselves, `use crate::…` and `super::…` outside test code,
//! so a change that makes a low module reach up fails here before review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that import nothing of authgate's, or only the leaves listed with them.
const LEAVES: &[(&str, &[&str])] = &[
    ("clock", &[]),
    ("config", &[]),
    ("path", &[]),
    ("redirect", &[]),
    ("metrics", &["spans"]),
    ("spans", &[]),
    ("logline", &[]),
    ("request", &["path"]),
    ("identity", &["config"]),
    ("decision", &["identity", "config"]),
];

/// The module a source file is (`src/authn/login.rs` → `authn::login`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Each module's imports of other authgate modules, at the depth the modules exist (a module
/// under `authn/` is one node; `crate::authn::Authenticator` is `authn`).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let path_re = regex::Regex::new(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)").unwrap();
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == "main" || module.ends_with("tests") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests may reach anywhere; the code may not.
        let code = text.split("#[cfg(test)]").next().unwrap();
        let mut deps = BTreeSet::new();
        for line in code.lines() {
            let line = line.split("//").next().unwrap();
            for m in path_re.captures_iter(line) {
                let mut segments: Vec<String> = match &m[1] {
                    "crate" => Vec::new(),
                    _ => {
                        let mut parent: Vec<String> =
                            module.split("::").map(String::from).collect();
                        if !file.ends_with("mod.rs") {
                            parent.pop();
                        }
                        parent
                    }
                };
                let mut target = None;
                for segment in m[2].split("::").filter(|s| !s.is_empty()) {
                    segments.push(segment.to_string());
                    let candidate = segments.join("::");
                    if modules.contains(&candidate) {
                        target = Some(candidate);
                    } else {
                        break;
                    }
                }
                if let Some(target) = target
                    && target != module
                    && !module.starts_with(&format!("{target}::"))
                {
                    deps.insert(target);
                }
            }
        }
        graph.insert(module, deps);
    }
    graph
}

/// A cycle, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, bool>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), false);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next) {
                Some(false) => {
                    let start = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(true) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, state, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_string(), true);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node)
            && let Some(cycle) = visit(node, graph, &mut state, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

/// The graph with every module folded into its top-level module.
fn top_level(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let top = |m: &str| m.split("::").next().unwrap().to_string();
    let mut folded: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, deps) in graph {
        let entry = folded.entry(top(module)).or_default();
        entry.extend(deps.iter().map(|d| top(d)).filter(|d| *d != top(module)));
    }
    folded
}

#[test]
fn no_module_imports_in_a_cycle() {
    let graph = imports();
    assert!(
        graph.contains_key("gate") && graph["gate"].contains("authn"),
        "{graph:?}"
    );
    assert_eq!(find_cycle(&graph), None, "between modules");
    assert_eq!(
        find_cycle(&top_level(&graph)),
        None,
        "between top-level modules"
    );
}

#[test]
fn leaves_stay_leaves() {
    let graph = top_level(&imports());
    for (leaf, allowed) in LEAVES {
        let deps = graph
            .get(*leaf)
            .unwrap_or_else(|| panic!("no module {leaf}"));
        let beyond: Vec<&String> = deps
            .iter()
            .filter(|d| !allowed.contains(&d.as_str()))
            .collect();
        assert!(beyond.is_empty(), "{leaf} imports {beyond:?}");
    }
}

#[test]
fn the_checker_sees_a_cycle() {
    let mut graph = imports();
    graph.get_mut("config").unwrap().insert("settings".into());
    assert!(find_cycle(&graph).is_some());
}
