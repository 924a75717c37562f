//! Modules import one way, in both crates. Every `crate::module` path in a crate's `src/` may
//! only name a module lower in that crate's layers than its own (so there is no import cycle
//! between modules); a new module must be given its place here. `tollgate-core` is a crate of its
//! own, so the compiler already keeps it from using anything of `tollgate`'s, and `tollgate`'s
//! modules name it directly (`tollgate_core::billing`), never through the crate root.
//! ARCHITECTURE.md says why the layers are in this order.

use std::collections::BTreeMap;
use std::path::Path;

/// `tollgate-core`'s modules, lowest first: a module may use only modules before it.
const CORE_LAYERS: [&str; 12] =
    ["serving", "clock", "random", "domain", "config", "metrics", "kv", "orgs", "api_keys", "mail", "stripe", "billing"];

/// `tollgate`'s own.
const LAYERS: [&str; 11] = ["memory", "threads", "telemetry", "auth", "access", "gateway", "state", "http", "startup", "doctor", "cli"];

/// Every `crate::name` named in `text`.
fn crate_paths(text: &str) -> Vec<String> {
    text.match_indices("crate::")
        .map(|(i, _)| text[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Which module uses which, for the crate at `crate_dir`; panics at a use of a higher layer.
fn uses_by_layer(crate_dir: &Path, layers: &[&str]) -> BTreeMap<String, Vec<String>> {
    let src = crate_dir.join("src");
    let sources = test_support::rust_sources(&src);
    let mut uses: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for path in &sources {
        let relative = path.strip_prefix(&src).unwrap();
        let module = relative.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue; // the crate root only declares the modules (and a few leaf helpers)
        }
        let rank = layers.iter().position(|l| *l == module).unwrap_or_else(|| panic!("module `{module}` has no place in the layers"));
        for used in crate_paths(&std::fs::read_to_string(path).unwrap()) {
            // Nothing below the crate root is used through it: every `crate::` path names a module.
            let used_rank = layers.iter().position(|l| *l == used).unwrap_or_else(|| panic!("{} uses crate::{used}", relative.display()));
            if used != module {
                assert!(used_rank < rank, "{} uses crate::{used}, a higher layer than `{module}`", relative.display());
                uses.entry(module.clone()).or_default().push(used);
            }
        }
    }
    uses
}

#[test]
fn modules_import_only_lower_layers() {
    let tollgate = uses_by_layer(Path::new(env!("CARGO_MANIFEST_DIR")), &LAYERS);
    let core = uses_by_layer(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../tollgate-core"), &CORE_LAYERS);
    // The check can fail: the layers above do use each other downwards.
    assert!(tollgate["http"].contains(&"state".to_string()) && tollgate["startup"].contains(&"http".to_string()));
    assert!(core["billing"].contains(&"kv".to_string()) && core["kv"].contains(&"config".to_string()));
}

#[test]
fn the_check_finds_paths() {
    assert_eq!(crate_paths("use crate::kv::{keys, Kv};\nlet x = crate::clock::Clock::system();"), ["kv", "clock"]);
}
