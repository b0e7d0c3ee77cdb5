#!/usr/bin/env bash
# Checks that each crate in vendor/ is its published version plus exactly the patches in
# vendor/CRATE/patches/ (applied in name order, each listed in vendor/CRATE/PATCHES.md). The
# pristine crate is downloaded from crates.io into a temporary directory and checked against its
# published SHA-256; nothing is written inside the clone.
#
#   scripts/check-vendor.sh                       check (run by `make test`)
#   scripts/check-vendor.sh --record CRATE NAME   after editing vendor/CRATE, save the edits as
#                                                 vendor/CRATE/patches/NAME.patch (then list it
#                                                 in its PATCHES.md)
set -eu -o pipefail
cd "$(dirname "$0")/.."

# name, version, the "cksum" of its crates.io index entry, and the published files wxmp does not
# vendor (upstream's tests, benches, examples and repository metadata: wxmp builds none of them).
vendored=(
    "tiny_http 0.12.0 389915df6413a2e74fb181895f933386023c71110878cd0825588928e64cdc82 .cargo_vcs_info.json .gitattributes .github .gitignore Cargo.lock Cargo.toml.orig benches examples tests"
    "threadpool 1.8.1 d050e60b33d41c19108b32cea32164033a9013fe3b46cbd4457559bfbf77afaa .cargo_vcs_info.json Cargo.toml.orig"
)
# Files in vendor/CRATE that are wxmp's own, not part of the crate.
ours=(PATCHES.md patches)

record_crate=
record=
if [ "${1:-}" = --record ]; then
    record_crate=${2:?--record needs a CRATE and a NAME, e.g. tiny_http 08-something}
    record=${3:?--record needs a CRATE and a NAME, e.g. tiny_http 08-something}
elif [ $# -gt 0 ]; then
    echo "usage: $0 [--record CRATE NAME]" >&2
    exit 2
fi

die() { echo "check-vendor: $*" >&2; exit 1; }
for tool in curl sha256sum tar patch diff; do
    command -v "$tool" >/dev/null || die "needs $tool (e.g. apt-get install $tool)"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# check NAME VERSION SHA256 LEFT_OUT...
check() {
    local name=$1 version=$2 sha256=$3
    shift 3
    local crate=$name-$version
    local url=https://static.crates.io/crates/$name/$crate.crate
    local vendor=vendor/$name
    local work=$tmp/$name
    mkdir -p "$work"
    curl -sSfL --retry 3 -o "$work/$crate.crate" "$url" || die "cannot download $url"
    echo "$sha256  $work/$crate.crate" | sha256sum -c --quiet - || die "$url does not match its published checksum"
    tar -xzf "$work/$crate.crate" -C "$work"
    local a=$work/$crate f
    for f in "$@"; do
        rm -rf "${a:?}/$f"
    done

    shopt -s nullglob
    local patches=("$vendor"/patches/*.patch) p pname
    for p in "${patches[@]}"; do
        pname=$(basename "$p")
        patch -d "$a" -p1 --batch --forward --fuzz=0 --no-backup-if-mismatch --quiet <"$p" >"$work/patch.log" 2>&1 ||
            { cat "$work/patch.log" >&2; die "$vendor: $pname does not apply to the pristine crate plus the patches before it"; }
        if [ -z "$record" ]; then
            grep -q -F "$pname" "$vendor/PATCHES.md" || die "$pname is not listed in $vendor/PATCHES.md"
        fi
    done

    local excludes=()
    for f in "${ours[@]}"; do
        excludes+=(--exclude="$f")
    done
    # Paths relative to the two trees (a/..., b/...), without timestamps, so patches are stable.
    ln -s "$(pwd)/$vendor" "$work/b"
    ln -s "$a" "$work/a"
    set +e
    (cd "$work" && diff -ruN "${excludes[@]}" a/ b/) | sed -E -e 's/^((---|\+\+\+) [^\t]*)\t.*/\1/' -e 's/^diff -ruN .* (a\/[^ ]+ b\/[^ ]+)$/diff -ruN \1/' >"$work/rest.diff"
    set -e

    if [ "$record_crate" = "$name" ]; then
        [ -s "$work/rest.diff" ] || die "$vendor has no edits beyond the existing patches"
        local out=$vendor/patches/$record.patch
        [ -e "$out" ] && die "$out exists"
        mkdir -p "$vendor/patches"
        cp "$work/rest.diff" "$out"
        echo "check-vendor: wrote $out ($(grep -c '^@@' "$out") hunks); list it in $vendor/PATCHES.md"
        return 0
    fi
    [ -n "$record" ] && return 0

    if [ -s "$work/rest.diff" ]; then
        cat "$work/rest.diff" >&2
        die "$vendor differs from $crate + patches/ by the hunks above (record them with --record $name NAME)"
    fi
    local listed
    for listed in $(grep -o '[0-9][0-9]-[A-Za-z0-9_-]*\.patch' "$vendor/PATCHES.md" | sort -u); do
        [ -e "$vendor/patches/$listed" ] || die "$vendor/PATCHES.md lists $listed, which is not in $vendor/patches/"
    done
    echo "check-vendor: $vendor = $crate + ${#patches[@]} patches, nothing else"
}

found=
for entry in "${vendored[@]}"; do
    # shellcheck disable=SC2086 # the entry is a list of words
    set -- $entry
    [ -z "$record_crate" ] || [ "$record_crate" = "$1" ] || continue
    found=1
    check "$@"
done
[ -n "$found" ] || die "no vendored crate named $record_crate"
for dir in vendor/*/; do
    name=$(basename "$dir")
    printf '%s\n' "${vendored[@]}" | grep -q "^$name " || die "vendor/$name is not listed in scripts/check-vendor.sh"
done
