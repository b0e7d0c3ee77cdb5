#!/usr/bin/env bash
# CI step: a short fuzz run of every target (FUZZ_SECONDS, default 20) when a nightly toolchain
# is available; cargo-fuzz comes from crates.io. Without nightly the step is skipped, not failed.
set -eu
cd "$(dirname "$0")/.."
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "== fuzz: SKIPPED (no nightly toolchain; rustup toolchain install nightly to enable)"
    exit 0
fi
FUZZ_SECONDS=${FUZZ_SECONDS:-20} exec scripts/fuzz.sh
