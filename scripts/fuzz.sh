#!/usr/bin/env bash
# make fuzz: runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60) each, starting
# from the committed seeds in fuzz/corpus/<target>/. Any panic, 500 or hang (10 s on one input)
# fails; the input is saved under fuzz/artifacts/<target>/ and the full log under
# fuzz/target/logs/. Needs a nightly toolchain; installs cargo-fuzz from crates.io if missing.
set -eu -o pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: needs a nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

# The code under test is safe Rust, so AddressSanitizer adds cost and nothing else; debug
# assertions and overflow checks stay on.
flags=(--sanitizer none)
echo "== building fuzz targets"
cargo +nightly fuzz build "${flags[@]}"

mkdir -p fuzz/target/logs
failed=()
for target in $(cargo +nightly fuzz list); do
    echo "== fuzz $target for ${seconds}s"
    log=fuzz/target/logs/$target.log
    mkdir -p "fuzz/corpus/$target"
    # The handler logs every refused request; keep those lines out of the log.
    if cargo +nightly fuzz run "${flags[@]}" "$target" -- \
        -max_total_time="$seconds" -timeout=10 2>&1 |
        grep -av -E '^[0-9-]+T[0-9:]+Z (INFO|WARN|ERROR) ' >"$log"; then
        grep -a -E '^#[0-9]+[[:space:]]+DONE' "$log" || tail -n 2 "$log"
    else
        failed+=("$target")
        # The panic message, then libFuzzer's verdict and how to reproduce it.
        grep -a -A2 'panicked at' "$log" || true
        sed -n '/ERROR: libFuzzer/,$p' "$log" | grep -a -v '^ *[0-9]*: \|^ *at ' || tail -n 30 "$log"
    fi
done
if ((${#failed[@]})); then
    echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/, logs in fuzz/target/logs/)" >&2
    exit 1
fi
echo "fuzz: all targets ran ${seconds}s without a failure"
