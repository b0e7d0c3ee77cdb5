#!/usr/bin/env bash
# `make run`: build and start the release binary on a port that needs no root. Without
# WXMP_TOKEN a development token is used and printed, so a newcomer sees it working with one
# command. The binary is found where cargo puts it, CARGO_TARGET_DIR included.
set -eu
cd "$(dirname "$0")/.."
port="${1:-8080}"
cargo build --release --bin wxmp
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="${target:-target}/release/wxmp"
if [ -z "${WXMP_TOKEN:-}" ]; then
    export WXMP_TOKEN=devtoken
    echo "WXMP_TOKEN is not set: using the development token '$WXMP_TOKEN' (set WXMP_TOKEN to your console Token)"
fi
export WXMP_PORT="${WXMP_PORT:-$port}"
exec "$bin" serve
