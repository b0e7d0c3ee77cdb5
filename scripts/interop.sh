#!/usr/bin/env bash
# Cross-checks safe mode against Python's wechatpy (installed here if missing).
set -eu
cd "$(dirname "$0")/.."
python3 -c "import wechatpy.crypto" 2>/dev/null || python3 -m pip install --quiet wechatpy cryptography
WXMP_REQUIRE_INTEROP=1 cargo test --test it interop -- --nocapture
