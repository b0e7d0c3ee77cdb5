#!/usr/bin/env bash
# Cross-checks safe mode against Python's wechatpy.
#   scripts/interop.sh           install wechatpy if missing, then run the check (make interop)
#   scripts/interop.sh --if-able run it when wechatpy is importable, else say it was skipped;
#                                with WXMP_REQUIRE_INTEROP set, a missing wechatpy fails (make test)
set -eu
cd "$(dirname "$0")/.."
have() { python3 -c "import wechatpy.crypto" 2>/dev/null; }
if [ "${1:-}" = "--if-able" ]; then
    if ! have; then
        if [ -n "${WXMP_REQUIRE_INTEROP:-}" ]; then
            echo "interop: WXMP_REQUIRE_INTEROP is set but python3 cannot import wechatpy" >&2
            exit 1
        fi
        echo "interop: SKIPPED (python3 cannot import wechatpy; pip install wechatpy cryptography, or make interop)"
        exit 0
    fi
else
    have || python3 -m pip install --quiet wechatpy cryptography
fi
cargo test --test it interop -- --ignored
