//! Snapshot of the generator (as prost-build does with `src/fixtures/*/_expected_*.rs`): the code
//! generated for `tests/fixtures/snapshot.xml` must equal `tests/fixtures/snapshot.expected.rs`.
//! On a difference the test rewrites the expected file and fails, so the change shows up in
//! `git diff` for review, and the next run passes.

use std::path::PathBuf;

#[test]
fn generated_code_matches_snapshot() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let schema = fixtures.join("snapshot.xml");
    let expected_path = fixtures.join("snapshot.expected.rs");
    let xml = std::fs::read_to_string(&schema)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", schema.display()));
    // The path is relative so that nothing machine-specific can reach the output.
    let generated = sbe_codegen::generate_str("tests/fixtures/snapshot.xml", &xml)
        .unwrap_or_else(|e| panic!("the snapshot schema is rejected: {e}"));
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    if generated.code != expected {
        std::fs::write(&expected_path, &generated.code)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", expected_path.display()));
        panic!(
            "the generated code differs from {}; the file was updated. Review it with \
             `git diff` and run the test again.",
            expected_path.display()
        );
    }
}
