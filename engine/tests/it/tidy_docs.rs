//! Tidy checks that keep the documentation true of the code, mechanically: every path in
//! ARCHITECTURE.md's code map exists, every key documented in `config/*.toml` (commented-out
//! examples included) is a key the code reads and every key the code reads is documented, and
//! production modules keep the layering ARCHITECTURE.md states (nothing outside the simulator and
//! `main` reaches `crate::sim`; a lower layer never imports a higher one).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The backticked paths in the first column of ARCHITECTURE.md's code map table.
fn code_map_paths(architecture: &str) -> Vec<String> {
    let start = architecture
        .find("## Code map")
        .expect("ARCHITECTURE.md has a code map section");
    let mut paths = Vec::new();
    for line in architecture[start..].lines().skip(1) {
        if line.starts_with("## ") {
            break;
        }
        let Some(first_cell) = line.strip_prefix('|').and_then(|l| l.split('|').next()) else {
            continue;
        };
        for (i, piece) in first_cell.split('`').enumerate() {
            if i % 2 == 1 {
                paths.push(piece.to_string());
            }
        }
    }
    paths
}

#[test]
fn every_path_in_the_code_map_exists() {
    let root = root();
    let paths = code_map_paths(&read(&root.join("ARCHITECTURE.md")));
    assert!(paths.len() >= 10, "code map too short: {paths:?}");
    let missing: Vec<_> = paths
        .iter()
        .filter(|p| !root.join(p.trim_end_matches('/')).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );
}

/// Keys per section (`""` for the top level) of a documented TOML file: every `key = value`
/// line, commented out (`# key = value`) or not.
fn documented_keys(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim_start();
        let uncommented = line.trim_start_matches('#').trim_start();
        if let Some(name) = line.strip_prefix('[') {
            section = name.split(']').next().unwrap_or("").trim().to_string();
            keys.entry(section.clone()).or_default();
            continue;
        }
        let Some((key, value)) = uncommented.split_once('=') else {
            continue;
        };
        let key = key.trim();
        // Prose such as "(isolcpus=, nohz_full=)" is not a key: a value must follow.
        let value = value.trim_start();
        let is_key = !key.is_empty()
            && !value.is_empty()
            && !value.starts_with([')', ','])
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if is_key {
            keys.entry(section.clone())
                .or_default()
                .insert(key.to_string());
        }
    }
    keys
}

/// The keys the code accepts in `section`, read from the parser's own "unknown field, expected
/// one of ..." error (every table is `deny_unknown_fields`).
fn accepted_keys(parse: &dyn Fn(&str) -> String, section: &str) -> BTreeSet<String> {
    let probe = if section.is_empty() {
        "zz_probe = 1\n".to_string()
    } else {
        format!("[{section}]\nzz_probe = 1\n")
    };
    let error = parse(&probe);
    let expected = error
        .split("expected one of")
        .nth(1)
        .or_else(|| error.split("expected").nth(1))
        .unwrap_or_else(|| panic!("[{section}]: no list of keys in {error:?}"));
    expected
        .split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, k)| k.to_string())
        .collect()
}

fn check_documented(file: &str, parse: &dyn Fn(&str) -> String, complete: bool) {
    let text = read(&root().join("config").join(file));
    let documented = documented_keys(&text);
    let mut problems = Vec::new();
    let sections: BTreeSet<&String> = documented.keys().filter(|s| !s.is_empty()).collect();
    for (section, keys) in &documented {
        let mut accepted = accepted_keys(parse, section);
        if section.is_empty() {
            // Tables appear in the top level's list; the secret trap key is never documented.
            accepted.retain(|k| !sections.contains(k) && k != "api_key");
        } else {
            // The secret trap keys (read only to be rejected) are never documented.
            accepted.remove("api_key");
            if section == "http" {
                accepted.remove("token");
            }
        }
        for key in keys.difference(&accepted) {
            problems.push(format!(
                "{file}: [{section}] {key} is documented but the code has no such key"
            ));
        }
        if complete {
            for key in accepted.difference(keys) {
                problems.push(format!(
                    "{file}: [{section}] {key} is read by the code but not documented"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn run_config_error(text: &str) -> String {
    hotpath::config::RunConfig::from_toml(text)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

fn sim_config_error(text: &str) -> String {
    hotpath::sim::config::SimConfig::from_toml(text)
        .err()
        .unwrap_or_default()
}

#[test]
fn every_run_config_key_is_documented_and_real() {
    // binance.toml is the reference: it documents every key; sim-run.toml only real ones.
    check_documented("binance.toml", &run_config_error, true);
    check_documented("sim-run.toml", &run_config_error, false);
}

#[test]
fn every_simulator_config_key_is_documented_and_real() {
    check_documented("sim.toml", &sim_config_error, true);
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module of `engine/src` a file belongs to (`feed`, `sink`, `book`, ...).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("under src");
    let first = relative.components().next().expect("non-empty");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// Layers, top to bottom. A module may import lower layers freely, its own layer's modules only
/// through what [`allowed_across`] lists (the bottom layer's leaves may use each other).
const LAYERS: &[&[&str]] = &[
    &["main", "sim", "backfill"],
    &["control"],
    &["feed", "sink", "sidecar"],
    &[
        "archive",
        "binance",
        "codec",
        "sbe",
        "book",
        "analytics",
        "metrics",
        "idle",
        "tls",
        "config",
        "constants",
        "cores",
        "clock",
        "backoff",
        "rng",
        "stream",
        "sync",
        "shard",
        "tally",
        "kline",
        "frames",
        "gaps",
        "decode",
        "lib",
    ],
];

/// Imports across one layer that ARCHITECTURE.md allows: the sinks and the sidecar consume
/// the ring items the feed defines (events, notices, repairs, book requests), and `feed::run` wires the sinks and the
/// sidecar to the rings (LAYOUT.md: feed, sink and sidecar are one level, talking through the
/// rings `feed::run` wires, not through each other's types).
fn allowed_across(from: &str, to_path: &str) -> bool {
    matches!(
        (from, to_path),
        ("sink" | "sidecar", p) if p.starts_with("feed::event")
    ) || (from == "feed" && (to_path.starts_with("sink") || to_path.starts_with("sidecar")))
}

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("module {module} is in no layer of this test: add it"))
}

#[test]
fn production_code_keeps_the_layering() {
    let src = root().join("engine/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let from = module_of(&src, file);
        let from_layer = layer_of(&from);
        let text = read(file);
        // Unit tests may reach anything (the simulator is their Binance); comments are prose.
        // `*_tests.rs` files are unit tests kept beside their module (`#[cfg(test)] #[path]`).
        if file.to_string_lossy().ends_with("_tests.rs") {
            continue;
        }
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or("")
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for (at, _) in code.match_indices("crate::") {
            let path: String = code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let to = path.split("::").next().unwrap_or("").to_string();
            if to.is_empty() || to == from {
                continue;
            }
            let to_layer = layer_of(&to);
            let upward = to_layer < from_layer;
            let bottom = from_layer == LAYERS.len() - 1;
            let sideways = to_layer == from_layer && !bottom && !allowed_across(&from, &path);
            if upward || sideways {
                problems.push(format!(
                    "{}: {from} (layer {from_layer}) imports crate::{path} (layer {to_layer})",
                    file.display()
                ));
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
}
