#!/usr/bin/env bash
# A bounded load run of `landmark serve` on loopback (127.0.0.1 only): a fixed number of
# requests per endpoint, each phase cut off after a time limit; prints requests/s and p50/p99
# latency per endpoint. Not part of the suite (timings depend on the machine).
# Usage: tests/load_serve.sh path/to/landmark [requests-per-endpoint (100)] [seconds-per-phase (120)]
set -u
LMK=${1:?usage: load_serve.sh path/to/landmark [N] [SECONDS]}
N=${2:-100}
LIMIT=${3:-120}
SHARED=${LMK_SHARED:-$(dirname "$0")/../../shared}
M=$SHARED/models/landmark-tiny-kjv-f32.gguf
KJV=$SHARED/data/kjv.txt
TMP=$(mktemp -d "${TMPDIR:-/tmp}/load-serve.XXXXXX")
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
"$LMK" serve --model "$M" --sessions "$TMP/s" --port 0 -t 1 --parallel 2 --queue 64 \
    2>"$TMP/log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$TMP"' EXIT
for _ in $(seq 100); do
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$TMP/log")
    [ -n "$port" ] && break
    sleep 0.1
done
URL=http://127.0.0.1:$port
# two sessions holding a 4,000-byte document each
head -c 4000 "$KJV" | jq -Rs '{id:"a", prompt:.}' | curl -s -o /dev/null "$URL/v1/sessions" -d @-
curl -s -o /dev/null "$URL/v1/sessions/a/fork" -d '{"id":"b"}'

# phase NAME CONCURRENCY METHOD PATH BODY: N requests, CONCURRENCY at a time
k=0
phase() {
    local name=$1 conc=$2 method=$3 path=$4 body=$5 t0 t1 f
    k=$((k + 1))
    f=$TMP/phase$k
    t0=$(date +%s.%N)
    if [ -n "$body" ]; then
        seq "$N" | timeout "$LIMIT" xargs -P "$conc" -n 1 sh -c \
            'curl -s -o /dev/null -w "%{http_code} %{time_total}\n" -X "$1" "$2" -d "$3"' _ \
            "$method" "$URL$path" "$body" >"$f"
    else
        seq "$N" | timeout "$LIMIT" xargs -P "$conc" -n 1 sh -c \
            'curl -s -o /dev/null -w "%{http_code} %{time_total}\n" -X "$1" "$2"' _ \
            "$method" "$URL$path" >"$f"
    fi
    t1=$(date +%s.%N)
    local n bad
    n=$(wc -l <"$f")
    bad=$(awk '$1 != 200' "$f" | wc -l)
    sort -n -k2 "$f" | awk -v name="$name" -v t0="$t0" -v t1="$t1" -v conc="$conc" -v n="$n" \
        -v bad="$bad" '
        { t[NR] = $2 }
        END {
            if (!n) { printf "| %s | 0 | %d | | | |\n", name, conc; exit }
            p50 = t[int((n - 1) * 0.50) + 1]; p99 = t[int((n - 1) * 0.99) + 1]
            printf "| %s | %d (%d not 200) | %d | %.1f | %.1f | %.1f |\n", name, n, bad, conc,
                   n / (t1 - t0), p50 * 1000, p99 * 1000
        }'
}
echo "| endpoint | requests | concurrency | requests/s | p50 ms | p99 ms |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
phase "GET /v1/models" 4 GET /v1/models ""
phase "GET /v1/sessions/ID" 4 GET /v1/sessions/a ""
phase "GET /v1/sessions (2)" 4 GET /v1/sessions ""
phase "POST /v1/completions (no session, 8 tokens)" 2 POST /v1/completions \
    '{"prompt":"In the beginning","max_tokens":8,"temperature":0}'
# all on session a: they run one at a time (one writer per session); the stream on b
phase "POST /v1/completions (session, persist false, 8 tokens)" 2 POST /v1/completions \
    '{"session":"a","prompt":" And God said","max_tokens":8,"temperature":0,"persist":false}'
phase "POST /v1/completions (stream, session, persist false, 8 tokens)" 2 POST /v1/completions \
    '{"session":"b","prompt":" And God said","max_tokens":8,"temperature":0,"persist":false,"stream":true}'
