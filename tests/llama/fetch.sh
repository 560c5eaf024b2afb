#!/usr/bin/env bash
# Fetch llama.cpp's own ggml as a test reference, from the npm registry only:
#   DEST/lib  the prebuilt linux-x64 shared libraries (libggml-base.so, ...)
#   DEST/src  llama.cpp's source tree cloned from the package's git bundle
# Usage: fetch.sh DEST. Exit 0 when DEST/.complete exists (already fetched or fetched now);
# when the fetch fails: exit 1 under CI=true, otherwise print why and exit 77 (skip).
set -u
PKG=node-llama-cpp@3.21.1
BIN=@node-llama-cpp/linux-x64@3.21.1

dest=${1:?usage: fetch.sh DEST}
[ -e "$dest/.complete" ] && exit 0

fail() {
    echo "fetch.sh: $*" >&2
    if [ "${CI:-}" = true ]; then exit 1; fi
    echo "fetch.sh: skipping (the llama.cpp reference is unavailable; set CI=true to make this an error)" >&2
    exit 77
}

for tool in npm tar git; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool not found"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lmk-llama-ref.XXXXXX") || fail "mktemp failed"
trap 'rm -rf "$tmp" "$dest.partial"' EXIT

( cd "$tmp" && npm pack --loglevel=error "$PKG" "$BIN" >npm.out 2>npm.err ) ||
    fail "npm pack $PKG $BIN failed: $(grep -v "^npm ERR! A complete log" "$tmp/npm.err" 2>/dev/null | head -n 3 | tr "\n" " ")"

main_tgz=$tmp/node-llama-cpp-3.21.1.tgz
bin_tgz=$tmp/node-llama-cpp-linux-x64-3.21.1.tgz
[ -f "$main_tgz" ] && [ -f "$bin_tgz" ] || fail "npm pack did not produce the expected tarballs"

mkdir -p "$tmp/main" "$tmp/bin" || fail "mkdir failed"
tar xzf "$bin_tgz" -C "$tmp/bin" --wildcards 'package/bins/linux-x64/*.so' ||
    fail "could not unpack the shared libraries from $bin_tgz"
tar xzf "$main_tgz" -C "$tmp/main" package/llama/gitRelease.bundle ||
    fail "could not unpack llama/gitRelease.bundle from $main_tgz"

# Build beside DEST and rename into place, so a half-done fetch never looks complete.
rm -rf "$dest.partial" && mkdir -p "$dest.partial/lib" || fail "cannot create $dest.partial"
cp "$tmp"/bin/package/bins/linux-x64/*.so "$dest.partial/lib/" || fail "copying libraries failed"
git clone --quiet "$tmp/main/package/llama/gitRelease.bundle" "$dest.partial/src" 2>"$tmp/git.err" ||
    fail "git clone of the bundle failed: $(tail -n 3 "$tmp/git.err")"
for f in include/llama.h ggml/include/ggml.h ggml/src/ggml-common.h; do
    [ -f "$dest.partial/src/$f" ] || fail "the bundle lacks $f"
done
[ -f "$dest.partial/lib/libggml-base.so" ] || fail "the package lacks libggml-base.so"

rm -rf "$dest" && mv "$dest.partial" "$dest" || fail "could not move $dest.partial to $dest"
touch "$dest/.complete"
echo "fetch.sh: llama.cpp reference ready in $dest"
exit 0
