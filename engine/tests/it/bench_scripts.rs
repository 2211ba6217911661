//! The bench scripts run by hand (scripts/compare_cryptofeed.sh and its Python driver,
//! scripts/cpu_per_message.sh) still parse, and the driver's pure parts (lost-trade count
//! against ground truth, report rows and table, /proc CPU reading) behave: its `selftest`,
//! under the test venv's Python (`HOTPATH_PYTHON`, from scripts/servers.sh `ensure_venv`).

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_cryptofeed_driver_passes_its_selftest() {
    let python = std::env::var_os("HOTPATH_PYTHON").unwrap_or_else(|| {
        panic!(
            "HOTPATH_PYTHON is unset: source scripts/servers.sh; ensure_venv (scripts/test.sh does)"
        )
    });
    let out = Command::new(&python)
        .arg(repo().join("scripts/compare_cryptofeed.py"))
        .arg("selftest")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", PathBuf::from(&python).display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("selftest ok"),
        "selftest failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_bench_shell_scripts_parse() {
    for script in [
        "scripts/compare_cryptofeed.sh",
        "scripts/cpu_per_message.sh",
        "scripts/bench_common.sh",
    ] {
        let status = Command::new("bash")
            .arg("-n")
            .arg(repo().join(script))
            .status()
            .unwrap_or_else(|e| panic!("cannot run bash: {e}"));
        assert!(status.success(), "bash -n {script}: {status}");
    }
}
