#!/usr/bin/env bash
# Parses the server's /metrics with Python's reference parser (prometheus_client).
#   scripts/prometheus.sh           install prometheus_client if missing, then run the check
#   scripts/prometheus.sh --if-able run it when prometheus_client is importable, else say it was
#                                   skipped; with WXMP_REQUIRE_PROMETHEUS set, a missing parser
#                                   fails (make test in CI)
set -eu
cd "$(dirname "$0")/.."
have() { python3 -c "import prometheus_client.parser" 2>/dev/null; }
if [ "${1:-}" = "--if-able" ]; then
    if ! have; then
        if [ -n "${WXMP_REQUIRE_PROMETHEUS:-}" ]; then
            echo "prometheus: WXMP_REQUIRE_PROMETHEUS is set but python3 cannot import prometheus_client" >&2
            exit 1
        fi
        echo "prometheus: SKIPPED (python3 cannot import prometheus_client; pip install prometheus_client, or scripts/prometheus.sh)"
        exit 0
    fi
else
    have || python3 -m pip install --quiet prometheus_client
fi
cargo test --test it prometheus_client -- --ignored
