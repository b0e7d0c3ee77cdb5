#!/usr/bin/env bash
# Checks that vendor/tiny_http is the published tiny_http 0.12.0 plus exactly the patches in
# vendor/tiny_http/patches/ (applied in name order, each listed in PATCHES.md). The pristine
# crate is downloaded from crates.io into a temporary directory and checked against its
# published SHA-256; nothing is written inside the clone.
#
#   scripts/check-vendor.sh                 check (run by `make test`)
#   scripts/check-vendor.sh --record NAME   after editing vendor/tiny_http, save the edits as
#                                           vendor/tiny_http/patches/NAME.patch (then list it in
#                                           PATCHES.md)
set -eu -o pipefail
cd "$(dirname "$0")/.."

crate=tiny_http-0.12.0
url=https://static.crates.io/crates/tiny_http/$crate.crate
# From the crates.io index entry of tiny_http 0.12.0 ("cksum").
sha256=389915df6413a2e74fb181895f933386023c71110878cd0825588928e64cdc82
vendor=vendor/tiny_http
# Published files wxmp does not vendor: upstream's tests, benches, examples and repository
# metadata (wxmp builds none of them).
left_out=(.cargo_vcs_info.json .gitattributes .github .gitignore Cargo.lock Cargo.toml.orig
    benches examples tests)
# Files in vendor/tiny_http that are wxmp's own, not part of the crate.
ours=(PATCHES.md patches)

record=
if [ "${1:-}" = --record ]; then
    record=${2:?--record needs a NAME, e.g. 07-something}
elif [ $# -gt 0 ]; then
    echo "usage: $0 [--record NAME]" >&2
    exit 2
fi

die() { echo "check-vendor: $*" >&2; exit 1; }
for tool in curl sha256sum tar patch diff; do
    command -v "$tool" >/dev/null || die "needs $tool (e.g. apt-get install $tool)"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -sSfL --retry 3 -o "$tmp/$crate.crate" "$url" || die "cannot download $url"
echo "$sha256  $tmp/$crate.crate" | sha256sum -c --quiet - || die "$url does not match its published checksum"
tar -xzf "$tmp/$crate.crate" -C "$tmp"
a=$tmp/$crate
for f in "${left_out[@]}"; do
    rm -rf "${a:?}/$f"
done

shopt -s nullglob
patches=("$vendor"/patches/*.patch)
for p in "${patches[@]}"; do
    name=$(basename "$p")
    patch -d "$a" -p1 --batch --forward --fuzz=0 --no-backup-if-mismatch --quiet <"$p" >"$tmp/patch.log" 2>&1 ||
        { cat "$tmp/patch.log" >&2; die "$name does not apply to the pristine crate plus the patches before it"; }
    if [ -z "$record" ]; then
        grep -q -F "$name" "$vendor/PATCHES.md" || die "$name is not listed in $vendor/PATCHES.md"
    fi
done

excludes=()
for f in "${ours[@]}"; do
    excludes+=(--exclude="$f")
done
# Paths relative to the two trees (a/..., b/...), without timestamps, so patches are stable.
ln -s "$(pwd)/$vendor" "$tmp/b"
ln -s "$a" "$tmp/a"
set +e
(cd "$tmp" && diff -ruN "${excludes[@]}" a/ b/) | sed -E -e 's/^((---|\+\+\+) [^\t]*)\t.*/\1/' -e 's/^diff -ruN .* (a\/[^ ]+ b\/[^ ]+)$/diff -ruN \1/' >"$tmp/rest.diff"
set -e

if [ -n "$record" ]; then
    [ -s "$tmp/rest.diff" ] || die "vendor/tiny_http has no edits beyond the existing patches"
    out=$vendor/patches/$record.patch
    [ -e "$out" ] && die "$out exists"
    cp "$tmp/rest.diff" "$out"
    echo "check-vendor: wrote $out ($(grep -c '^@@' "$out") hunks); list it in $vendor/PATCHES.md"
    exit 0
fi

if [ -s "$tmp/rest.diff" ]; then
    cat "$tmp/rest.diff" >&2
    die "vendor/tiny_http differs from $crate + patches/ by the hunks above (record them with --record NAME)"
fi
for listed in $(grep -o '[0-9][0-9]-[A-Za-z0-9_-]*\.patch' "$vendor/PATCHES.md" | sort -u); do
    [ -e "$vendor/patches/$listed" ] || die "PATCHES.md lists $listed, which is not in $vendor/patches/"
done
echo "check-vendor: $vendor = $crate + ${#patches[@]} patches, nothing else"
