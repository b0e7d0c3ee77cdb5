#!/usr/bin/env bash
# `make run`: start the release binary on a port that needs no root. Without WXMP_TOKEN a
# development token is used and printed, so a newcomer sees it working with one command.
set -eu
port="${1:-8080}"
if [ -z "${WXMP_TOKEN:-}" ]; then
    export WXMP_TOKEN=devtoken
    echo "WXMP_TOKEN is not set: using the development token '$WXMP_TOKEN' (set WXMP_TOKEN to your console Token)"
fi
export WXMP_PORT="${WXMP_PORT:-$port}"
exec ./target/release/wxmp serve
