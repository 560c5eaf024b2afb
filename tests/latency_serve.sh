#!/usr/bin/env bash
# The latency of one small request to `landmark serve`, two builds side by side: both servers
# run (the shared tiny model, -t 1, --parallel 2, loopback only) and the requests go to them
# in turn (A, B, A, B, ...), one at a time, so both see the same load from the rest of the
# machine. Each request generates 1 token after a 3-token prompt: without a session (a
# temporary one is made and removed) and on a session with persist false. Prints p50, mean
# and min of curl's time_total per build. Not part of the suite (timings depend on the
# machine).
# Usage: tests/latency_serve.sh path/to/landmark-A path/to/landmark-B [requests (40)]
set -u
A=${1:?usage: latency_serve.sh LANDMARK-A LANDMARK-B [N]}
B=${2:?usage: latency_serve.sh LANDMARK-A LANDMARK-B [N]}
N=${3:-40}
SHARED=${LMK_SHARED:-$(dirname "$0")/../../shared}
M=$SHARED/models/landmark-tiny-kjv-f32.gguf
TMP=$(mktemp -d "${TMPDIR:-/tmp}/latency-serve.XXXXXX")
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
PIDS=
trap 'kill $PIDS 2>/dev/null; wait $PIDS 2>/dev/null; rm -rf "$TMP"' EXIT
# start NAME BINARY: a server on a free port; its URL in $TMP/NAME/url
start() {
    mkdir -p "$TMP/$1/s"
    "$2" serve --model "$M" --sessions "$TMP/$1/s" --port 0 -t 1 --parallel 2 \
        >/dev/null 2>"$TMP/$1/log" &
    PIDS="$PIDS $!"
    for _ in $(seq 100); do
        port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$TMP/$1/log")
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { echo "$2 did not start: $(cat "$TMP/$1/log")" >&2; exit 1; }
    echo "http://127.0.0.1:$port" >"$TMP/$1/url"
}
start a "$A"
start b "$B"
UA=$(cat "$TMP/a/url")
UB=$(cat "$TMP/b/url")
for U in $UA $UB; do
    curl -s -o /dev/null "$U/v1/sessions" \
        -d '{"id":"s","prompt":"In the beginning God created the heaven and the earth."}'
done
summary() {
    sort -n | awk '{ a[NR] = $1; s += $1 }
        END { printf "p50 %6.1f ms  mean %6.1f ms  min %5.1f ms  (n=%d)", a[int((NR + 1) / 2)], s / NR, a[1], NR }'
}
echo "# $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
for kind in no-session session; do
    if [ $kind = no-session ]; then
        body='{"prompt":" And God said","max_tokens":1,"temperature":0}'
    else
        body='{"session":"s","prompt":" And God said","max_tokens":1,"temperature":0,"persist":false}'
    fi
    for U in $UA $UB; do # warm-up
        for _ in 1 2 3; do curl -s -o /dev/null "$U/v1/completions" -d "$body"; done
    done
    : >"$TMP/a/$kind"
    : >"$TMP/b/$kind"
    for _ in $(seq "$N"); do
        for x in a b; do
            U=$UA
            [ $x = b ] && U=$UB
            curl -s -o /dev/null -w '%{time_total}\n' "$U/v1/completions" -d "$body" |
                awk '{ print $1 * 1000 }' >>"$TMP/$x/$kind"
        done
    done
    printf '%-10s A: %s\n' $kind "$(summary <"$TMP/a/$kind")"
    printf '%-10s B: %s\n' $kind "$(summary <"$TMP/b/$kind")"
done
