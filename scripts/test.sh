#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test of every crate. CI runs exactly this
# (.ci/run). Needs only the Rust toolchain, and ../shared beside the repository (the tests read
# the SBE conformance vectors and Binance samples where they stand).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f ../shared/sbe-conformance/example-schema.xml ]; then
  echo "error: ../shared is missing: the tests read ../shared/sbe-conformance and ../shared/binance" >&2
  exit 1
fi

echo "== test servers"
source scripts/servers.sh
ensure_redis
ensure_kinesalite
ensure_prometheus
ensure_postgres
ensure_venv
ensure_moto

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== the fuzz target builds (its own workspace, see fuzz/README.md)"
# Not --locked: the fuzz lock file follows the engine's dependencies, which change often.
cargo check --manifest-path fuzz/Cargo.toml
