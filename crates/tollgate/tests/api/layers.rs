//! Tollgate's modules import one way. Every `crate::module` path in `src/` may only name a module
//! lower in `LAYERS` than its own (so there is no import cycle between modules); a new module must
//! be given its place here. ARCHITECTURE.md says why the layers are in this order.

use std::collections::BTreeMap;
use std::path::Path;

/// Lowest first: a module may use only modules before it.
const LAYERS: [&str; 15] = [
    "domain", "config", "telemetry", "kv", "mail", "stripe", "billing", "auth", "access", "gateway", "state", "http", "startup", "doctor",
    "cli",
];

/// Every `crate::name` named in `text`.
fn crate_paths(text: &str) -> Vec<String> {
    text.match_indices("crate::")
        .map(|(i, _)| text[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>())
        .filter(|name| !name.is_empty())
        .collect()
}

#[test]
fn modules_import_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let sources = test_support::rust_sources(&src);
    let mut uses: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for path in &sources {
        let relative = path.strip_prefix(&src).unwrap();
        let module = relative.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue; // the crate root only declares the modules (and two leaf helpers)
        }
        let rank = LAYERS.iter().position(|l| *l == module).unwrap_or_else(|| panic!("module `{module}` has no place in LAYERS"));
        for used in crate_paths(&std::fs::read_to_string(path).unwrap()) {
            let Some(used_rank) = LAYERS.iter().position(|l| *l == used) else { continue }; // a root item: unix_now, random_token
            if used != module {
                assert!(used_rank < rank, "{} uses crate::{used}, a higher layer than `{module}`", relative.display());
                uses.entry(module.clone()).or_default().push(used);
            }
        }
    }
    // The check can fail: the layers above do use each other downwards.
    assert!(uses["http"].contains(&"state".to_string()) && uses["billing"].contains(&"kv".to_string()));
}

#[test]
fn the_check_finds_paths() {
    assert_eq!(crate_paths("use crate::kv::{keys, Kv};\nlet x = crate::unix_now();"), ["kv", "unix_now"]);
}
