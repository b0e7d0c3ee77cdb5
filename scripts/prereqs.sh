#!/usr/bin/env bash
# What `make test` needs beyond Rust and make, checked up front: every missing tool is named at
# once, with the command that installs it, instead of failing halfway through the run.
set -u
missing=()
command -v cargo >/dev/null || missing+=("cargo: install Rust from https://rustup.rs")
if command -v cargo >/dev/null; then
    cargo fmt --version >/dev/null 2>&1 || missing+=("rustfmt: rustup component add rustfmt")
    cargo clippy --version >/dev/null 2>&1 || missing+=("clippy: rustup component add clippy")
fi
# scripts/check-vendor.sh fetches the pristine tiny_http from crates.io and re-applies the patches.
for tool in curl patch sha256sum tar diff; do
    case $tool in
        sha256sum) pkg=coreutils ;;
        diff) pkg=diffutils ;;
        *) pkg=$tool ;;
    esac
    command -v "$tool" >/dev/null || missing+=("$tool: apt-get install $pkg (or your system's package)")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "make test needs:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    exit 1
fi
