#!/usr/bin/env bash
# The whole suite: release build tests, the same under ASan+UBSan, and a short fuzz run.
# Prints one closing line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
passed=0
failed=0
step() { # name, command...
  local name=$1; shift
  echo "=== $name"
  local t0=$SECONDS
  if "$@"; then passed=$((passed + 1)); echo "=== $name: ok ($((SECONDS - t0)) s)"
  else failed=$((failed + 1)); echo "=== $name: FAILED ($((SECONDS - t0)) s)"; fi
}

step "tests (release)" meson test -C build --print-errorlogs --num-processes "$jobs"

# The Python package, installed by the README's command (into the build tree instead of
# ~/.local), then its tests with Debian's python3 and pytest against that installation.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
python_tests() {
  rm -rf build-py/site && mkdir -p build-py &&
    "$py" -m pip install -q --root-user-action=ignore --no-build-isolation --no-deps --no-cache-dir \
      --target build-py/site \
      --config-settings builddir=build-py/meson --config-settings compile-args=-j"$jobs" . &&
    LANDMARK_CLI="$PWD/build/cli/landmark" PYTHONPATH="$PWD/build-py/site" \
      "$py" -m pytest -q -p no:cacheprovider python/tests
}
step "python (pip install, pytest)" python_tests

[ -d build-asan ] || meson setup build-asan -Db_sanitize=address,undefined \
  -Dbuildtype=debugoptimized -Db_lundef=false >/dev/null
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export LMK_ITERS=20  # fewer randomized iterations under the sanitizers
step "build (asan+ubsan)" ninja -C build-asan -j "$jobs"
step "tests (asan+ubsan)" meson test -C build-asan --print-errorlogs --num-processes "$jobs" \
  --suite unit --suite persist --suite model --suite e2e --timeout-multiplier 3
unset LMK_ITERS

if command -v clang >/dev/null; then
  [ -d build-fuzz ] || CC=clang CXX=clang++ meson setup build-fuzz -Dfuzzers=true \
    -Dbuildtype=debugoptimized -Db_sanitize=address -Db_lundef=false >/dev/null
  step "build (fuzzers)" ninja -C build-fuzz -j "$jobs"
  # Each target starts from a copy of its committed seeds (tests/fuzz/corpus/<target>, the
  # minimized corpus of a long run; never written here) plus what earlier runs kept in the
  # build tree.
  for f in build-fuzz/tests/fuzz_*; do
    [ -f "$f" ] && [ -x "$f" ] || continue
    t=$(basename "$f")
    mkdir -p "build-fuzz/corpus-$t"
    if [ -d "tests/fuzz/corpus/$t" ]; then
      cp -rn "tests/fuzz/corpus/$t/." "build-fuzz/corpus-$t/"
    fi
    step "fuzz $t 30 s" "$f" -max_total_time=30 -rss_limit_mb=2048 "build-fuzz/corpus-$t"
  done
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
