#!/usr/bin/env bash
# `make install`: build the release binary and put `wxmp` on PATH (cargo's bin directory), so the
# bare `wxmp ...` of the README works. Then say where it went, and how to reach it when that
# directory is not on PATH yet.
set -eu
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || {
    echo "make install: needs cargo: install Rust from https://rustup.rs" >&2
    exit 1
}
cargo install --locked --path .
bin_dir="${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin"
if [ "$(command -v wxmp || true)" = "$bin_dir/wxmp" ]; then
    echo "make install: installed $bin_dir/wxmp; run wxmp --help"
else
    echo "make install: installed $bin_dir/wxmp, but a bare wxmp does not run it ($bin_dir is not on PATH, or another wxmp comes first);"
    echo "  add it: export PATH=\"$bin_dir:\$PATH\"  (in ~/.bashrc or ~/.profile to keep it)"
fi
