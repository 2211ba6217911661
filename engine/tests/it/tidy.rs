//! Tidy checks over the repository's own Rust files: each opens with a `//!` doc saying what it
//! is for, and none carries a debugging macro, a placeholder or a skipped test.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            // Build output, and generator snapshots (generated code, checked by their test).
            if !matches!(
                name.as_ref(),
                "target" | ".git" | "fixtures" | "corpus" | "artifacts"
            ) {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_is_documented_and_free_of_placeholders() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.len() > 20,
        "found only {} files under {}",
        files.len(),
        root.display()
    );
    // Spelled in pieces so this file does not match itself.
    let banned = [
        concat!("db", "g!("),
        concat!("to", "do!("),
        concat!("#[ig", "nore"),
        concat!("unimple", "mented!("),
    ];
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable source");
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            problems.push(format!("{}: does not open with a //! doc", file.display()));
        }
        for pattern in banned {
            if text.contains(pattern) {
                problems.push(format!("{}: contains {pattern}", file.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
