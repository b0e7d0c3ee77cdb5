#!/usr/bin/env bash
# `make run`: build and start the release binary on a port that needs no root. Without
# WXMP_TOKEN a development token is used and printed, so a newcomer sees it working with one
# command; without WXMP_METRICS_ADDR the metrics listener opens on 127.0.0.1:9100 (when that port
# is free), so `wxmp tail` works from a second terminal. The binary is found where cargo puts it,
# CARGO_TARGET_DIR included.
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
if [ -z "${WXMP_METRICS_ADDR+set}" ]; then
    # Something already answering there (node_exporter's default port is 9100): leave it off.
    if (exec 3<>/dev/tcp/127.0.0.1/9100) 2>/dev/null; then
        echo "127.0.0.1:9100 is taken: no metrics listener (set WXMP_METRICS_ADDR=127.0.0.1:PORT for /metrics and wxmp tail)"
    else
        export WXMP_METRICS_ADDR=127.0.0.1:9100
    fi
fi
exec "$bin" serve
