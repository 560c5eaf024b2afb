#!/usr/bin/env bash
# A fuzz run bounded by CPU time rather than wall time (on a shared machine the wall clock
# says little): runs one libFuzzer target until the process has used CPU_SECONDS of user+sys
# CPU (read from /proc/PID/stat), then stops it with SIGINT so it prints its final stats.
#
#   tests/fuzz/long_run.sh TARGET CPU_SECONDS [BUILD_DIR]
#
# BUILD_DIR (default build-fuzz) is a fuzzer build (README "Fuzzing"). The working corpus is
# BUILD_DIR/corpus-TARGET, seeded from the committed tests/fuzz/corpus/TARGET (never written
# here); crashes go to BUILD_DIR/crash-TARGET-*, the log to BUILD_DIR/long-TARGET.log. Prints
# one line: target, CPU seconds, executions, cov, ft, corpus files, crashes.
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: $0 TARGET CPU_SECONDS [BUILD_DIR]" >&2; exit 2; }
target=$1 budget=$2 build=${3:-build-fuzz}
src=$(cd "$(dirname "$0")" && pwd)
exe=$build/tests/$target
[ -x "$exe" ] || { echo "$0: $exe: no such fuzzer (build with -Dfuzzers=true)" >&2; exit 2; }
corpus=$build/corpus-$target
log=$build/long-$target.log
mkdir -p "$corpus"
if [ -d "$src/corpus/$target" ]; then
  cp -rn "$src/corpus/$target/." "$corpus/"
fi
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
"$exe" -print_final_stats=1 -rss_limit_mb=2048 -use_value_profile=1 \
  -artifact_prefix="$build/crash-$target-" "$corpus" >"$log" 2>&1 &
pid=$!
tck=$(getconf CLK_TCK)
cpu=0
while kill -0 "$pid" 2>/dev/null; do
  # fields 14 and 15 (utime, stime) counted after the ")" that closes the command name
  st=$(cat "/proc/$pid/stat" 2>/dev/null) || break
  set -- ${st##*) }
  cpu=$(( (${12} + ${13}) / tck ))
  if [ "$cpu" -ge "$budget" ]; then
    kill -INT "$pid"
    break
  fi
  sleep 2
done
wait "$pid"
rc=$?
execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
last=$(grep -E '^#[0-9]+' "$log" | grep 'cov:' | tail -1)
cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*')
ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*')
files=$(find "$corpus" -type f | wc -l)
crashes=$(find "$build" -maxdepth 1 -name "crash-$target-*" -type f | wc -l)
echo "$target cpu_s=$cpu execs=${execs:-?} cov=${cov:-?} ft=${ft:-?} corpus=$files crashes=$crashes rc=$rc"
