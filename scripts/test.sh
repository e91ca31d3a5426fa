#!/usr/bin/env bash
# Flotilla's whole test suite, for a fresh Debian machine that has the Rust toolchain.
# Installs what the tests need (etcd, Azurite, …), then runs: fmt check, clippy, docs, the dependency rule of
# flotilla-proto, every test (unit, integration, doc) and a benchmark smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-off run gains nothing from incremental caches, which are most of a debug target's size.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Flotilla builds with the Rust toolchain alone: every build below runs with `protoc` pointing
# nowhere, so a dependency that needs it fails the suite.
export PROTOC=/nonexistent/protoc

step() { printf '\n== %s\n' "$*"; }

step "toolchain components"
if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

step "servers and tools the tests run against (installed if missing)"
scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --document-private-items --locked --quiet

step "the library crates package for publishing"
cargo package --workspace --exclude flotilla-cli --exclude flotilla-bench --locked --no-verify --quiet

step "flotilla-proto depends on no runtime"
scripts/check-proto-deps.sh

step "doc tests"
cargo test --workspace --doc --locked --quiet

step "tests"
df -h . | tail -n 1
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --all-targets --no-fail-fast
fi


step "examples (each runs to completion by itself, bounded)"
for example in crates/flotilla/examples/*.rs; do
  name="$(basename "$example" .rs)"
  echo "-- $name"
  timeout 300 cargo run --locked --quiet -p flotilla --all-features --example "$name"
done
