#!/usr/bin/env bash
# landmark quick start: installs what is missing (Debian 12), builds, then
#   ./quickstart.sh demo [demo options]  runs `landmark demo` on the embedded default
#   ./quickstart.sh test                 runs the whole test suite: unit, end-to-end and model
#                                        tests, the suite again under AddressSanitizer and
#                                        UndefinedBehaviorSanitizer, and a short fuzz run
set -euo pipefail
cd "$(dirname "$0")"

what=${1:-demo}
[ $# -gt 0 ] && shift

packages=(meson ninja-build pkg-config gcc g++ clang libclang-rt-dev libfaiss-dev liblmdb-dev
          libopenblas-dev gnuplot-nox python3 python3-numpy python3-cffi python3-pytest
          python3-mesonpy python3-pip libmicrohttpd-dev libjansson-dev curl jq git)
# The test command fetches llama.cpp, the reference of the GGUF tests, with `npm pack` (no
# install, nothing run). Any npm does; Debian's only when the machine has none of its own.
if [ "$what" = test ] && ! command -v npm >/dev/null 2>&1; then
  packages+=(npm)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "quickstart: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

jobs=$(nproc 2>/dev/null || echo 2)
[ -d build ] || meson setup build --buildtype=release >/dev/null
ninja -C build -j "$jobs"

case "$what" in
  demo)
    exec build/cli/landmark demo "$@"
    ;;
  test)
    exec bash .ci/tests.sh "$@"
    ;;
  *)
    echo "usage: ./quickstart.sh demo [demo options] | test" >&2
    exit 2
    ;;
esac
