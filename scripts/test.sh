#!/usr/bin/env bash
# make test: every check CI holds a change to. Each step is one command, in the order that
# fails fastest.
set -eu -o pipefail
cd "$(dirname "$0")/.."

# curl, patch, rustfmt, clippy...: all missing ones named at once, with how to install them.
scripts/prereqs.sh

# vendor/tiny_http is the published 0.12.0 plus the patch files in vendor/tiny_http/patches.
scripts/check-vendor.sh
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
cargo test --doc
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
# The fuzz crate must compile even without nightly, and its lockfile must be in step.
cargo check --manifest-path fuzz/Cargo.toml --locked --bins --quiet
# Safe mode against wechatpy, and /metrics through prometheus_client's parser, when they are
# installed (CI installs them and requires them).
scripts/interop.sh --if-able
scripts/prometheus.sh --if-able
