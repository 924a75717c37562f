//! The emulator's modules import one way. Every reference from one source file to another module
//! (`crate::…`, `super::…`, or a child module by name) is an edge; the edges must respect the
//! layers below and, within a layer, form no cycle. README.md and ARCHITECTURE.md say why the
//! layers are in this order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Lowest first: a module may use only modules of its own layer or the layers before it.
const LAYERS: [&str; 7] = ["config", "model", "store", "engine", "api", "pages", "server"];

/// `engine/billing.rs` → `engine::billing`; `engine/mod.rs` → `engine`.
fn module_of(relative: &Path) -> String {
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// Identifier paths following `prefix` in code (whole-line comments skipped): `crate::a::b` → `a::b`.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    code.match_indices(prefix)
        .filter(|(i, _)| code[..*i].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':')))
        .map(|(i, _)| code[i + prefix.len()..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect::<String>())
        .collect()
}

/// The longest known module that `path` starts with.
fn resolve(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    (1..=segments.len()).rev().map(|n| segments[..n].join("::")).find(|m| modules.contains(m))
}

/// Every module-to-module edge in `src/`.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let sources = test_support::rust_sources(src);
    let modules: BTreeSet<String> = sources.iter().map(|p| module_of(p.strip_prefix(src).unwrap())).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in &sources {
        let module = module_of(path.strip_prefix(src).unwrap());
        if module == "lib" || module == "main" {
            continue; // the crate root declares the layers and re-exports the embedding API
        }
        let text = std::fs::read_to_string(path).unwrap();
        // Unit tests (their `super` is the file itself) and comments are not imports.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        let is_mod_file = path.file_name().is_some_and(|n| n == "mod.rs");
        // `super` is the module's parent, whether the module is a file or a directory's mod.rs.
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p).to_string();
        let mut targets: Vec<String> = paths_after(&code, "crate::").into_iter().filter_map(|p| resolve(&p, &modules)).collect();
        for p in paths_after(&code, "super::") {
            targets.extend(resolve(&format!("{parent}::{p}"), &modules).or_else(|| (!parent.is_empty()).then(|| parent.clone())));
        }
        // A mod.rs names its children directly: `use webhooks::Dispatcher`, `billing::catch_up(…)`.
        if is_mod_file {
            for child in modules.iter().filter_map(|m| m.strip_prefix(&format!("{module}::"))).filter(|c| !c.contains("::")) {
                for p in paths_after(&code, &format!("{child}::")) {
                    targets.extend(resolve(&format!("{module}::{child}::{p}"), &modules));
                }
            }
        }
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(targets.into_iter().filter(|t| *t != module));
    }
    graph
}

fn layer(module: &str) -> usize {
    let top = module.split("::").next().unwrap();
    LAYERS.iter().position(|l| *l == top).unwrap_or_else(|| panic!("module `{module}` has no place in LAYERS"))
}

/// A cycle of the graph, if it has one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            return Some(path[i..].iter().cloned().chain([node.to_string()]).collect());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn modules_import_one_way_without_cycles() {
    let graph = edges(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    for (module, targets) in &graph {
        for target in targets {
            assert!(layer(target) <= layer(module), "{module} uses {target}, a higher layer");
        }
    }
    assert_eq!(cycle(&graph), None, "an import cycle");
    // The check can fail: these edges exist and are found.
    for (from, to) in [
        ("store", "model"),
        ("engine::billing", "store"),
        ("api::resources::subscriptions", "engine::billing"),
        ("engine", "engine::webhooks"),
        ("server", "api::middleware"),
    ] {
        assert!(graph[from].contains(to), "{from} → {to} not found: {:?}", graph[from]);
    }
}

#[test]
fn the_checker_finds_cycles() {
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("a", "b"), ("b", "c"), ("c", "a")].iter().map(|(f, t)| (f.to_string(), BTreeSet::from([t.to_string()]))).collect();
    assert_eq!(cycle(&graph), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    assert_eq!(paths_after("use crate::store::Store;\n let x = crate::model::new_id(\"\");", "crate::"), ["store::Store", "model::new_id"]);
}
