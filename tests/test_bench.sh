#!/bin/bash
# End-to-end test of `landmark bench`: a tiny run whose JSON must hold real, consistent
# numbers (Flat recall 1.0, needles found, errors against dense small, timings and memory
# measured), a recorded stream that must give the same figures as the generator it was
# saved from, and bad input refused with one clear line.
# usage: test_bench.sh /path/to/landmark            (the test)
#        test_bench.sh /path/to/landmark --benchmark (the `meson test --benchmark` case)
set -u
LMK=$1
ROOT=${LMK_TEST_TMP:-/tmp}
mkdir -p "$ROOT"
TMP=$(mktemp -d "$ROOT/test_bench-XXXXXX")
fail=0
trap 'rm -rf "$TMP"' EXIT

if [ "${2:-}" = "--benchmark" ]; then
    # the small preset: one machine-readable record per case in the build tree
    out=${LMK_BENCH_JSON:-$ROOT/../bench-small.json}
    "$LMK" bench --preset small --json "$out" || exit 1
    echo "test_bench: benchmark record written to $out"
    exit 0
fi

check() { # check "description" command...
    local what=$1
    shift
    if ! "$@"; then
        echo "FAIL: $what" >&2
        fail=1
    fi
}

# ---- a tiny run ----
"$LMK" bench --preset tiny --index HNSW16 --index 'IVF8,Flat' --sweep efSearch=16,64 \
    --sweep nprobe=1,8 --json "$TMP/tiny.json" >"$TMP/tiny.txt" 2>"$TMP/tiny.err"
rc=$?
check "tiny bench exits 0 (rc $rc: $(head -c 400 "$TMP/tiny.err"))" test $rc -eq 0
check "table on stdout" grep -q '^index *params *recall@k' "$TMP/tiny.txt"
check "quiet stderr when not a terminal" test ! -s "$TMP/tiny.err"

python3 - "$TMP/tiny.json" <<'EOF' || fail=1
import json, math, sys
j = json.load(open(sys.argv[1]))
bad = []
def need(cond, msg):
    if not cond:
        bad.append(msg)
c, d, r = j["config"], j["dense"], j["results"]
need(c["tokens"] == 16384 and c["layers"] == 1 and c["heads"] == 4 and c["kv_heads"] == 2,
     "config shape %r" % c)
need(c["steps"] >= 100, "at least 100 steps")
need(d["step_ms_p50"] > 0 and d["step_ms_p99"] >= d["step_ms_p50"], "dense timings %r" % d)
need(d["memory_mb"] >= 2 * 16384 * 2 * 32 * 4 / 2**20, "dense holds all K/V as f32")
# Flat once, each swept spec once per value, in order
got = [(x["index"], tuple(sorted(x["params"].items()))) for x in r]
want = [("Flat", ()), ("HNSW16", (("efSearch", 16),)), ("HNSW16", (("efSearch", 64),)),
        ("IVF8,Flat", (("nprobe", 1),)), ("IVF8,Flat", (("nprobe", 8),))]
need(got == want, "records %r" % got)
keys = ["index", "params", "recall_at_k", "needle_hit_rate", "attn_rel_err", "step_ms_p50",
        "step_ms_p99", "speedup", "ingest_tokens_per_s", "build_s", "rss_anon_mb",
        "rss_file_mb", "disk_mb"]
kv_mb = 2 * 16384 * 2 * 32 * 2 / 2**20  # f16 K/V of the session
for x in r:
    for k in keys:
        need(k in x and x[k] is not None, "%s: key %s missing or null" % (x["index"], k))
    if any(x.get(k) is None for k in keys):
        continue
    tag = "%s %r" % (x["index"], x["params"])
    need(0 <= x["recall_at_k"] <= 1, tag + " recall in [0,1]")
    need(0 <= x["needle_hit_rate"] <= 1, tag + " needle rate in [0,1]")
    need(x["attn_rel_err"] >= 0, tag + " error")
    need(0 < x["step_ms_p50"] <= x["step_ms_p99"], tag + " step p50 <= p99")
    need(abs(x["speedup"] - d["step_ms_p50"] / x["step_ms_p50"]) <= 0.02 * x["speedup"] + 0.01,
         tag + " speedup = dense p50 / step p50")
    need(x["ingest_tokens_per_s"] > 0 and x["build_s"] > 0, tag + " ingest and build timed")
    need(x["rss_anon_mb"] > 0 and x["rss_file_mb"] > 0, tag + " child memory measured")
    need(x["disk_mb"] >= kv_mb, tag + " disk holds at least the K/V (%.2f MB)" % kv_mb)
flat = r[0]
need(flat["recall_at_k"] == 1.0, "Flat recall is 1.0, got %r" % flat["recall_at_k"])
need(flat["needle_hit_rate"] == 1.0, "Flat finds every needle, got %r" % flat["needle_hit_rate"])
# union softmax with the needle retrieved: the needle block dominates, as in dense
need(flat["attn_rel_err"] < 1e-3, "Flat attention close to dense, got %r" % flat["attn_rel_err"])
# a search parameter that widens the search never loses recall here
ivf = [x for x in r if x["index"] == "IVF8,Flat"]
need(ivf[1]["recall_at_k"] >= ivf[0]["recall_at_k"], "nprobe 8 >= nprobe 1 recall")
need(ivf[1]["recall_at_k"] == 1.0, "IVF8 with every list probed is exact")
for m in bad:
    print("FAIL:", m, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF

# ---- a recorded stream gives the same figures as the generator it came from ----
"$LMK" bench --preset tiny --save-stream "$TMP/tiny.rec" 2>"$TMP/save.err"
check "save-stream exits 0 ($(head -c 300 "$TMP/save.err"))" test $? -eq 0
want_size=$((48 + (2 * 16384 * 2 * 32 + 100 * 4 * 32) * 4))
check "recorded file size" test "$(stat -c %s "$TMP/tiny.rec")" -eq $want_size
"$LMK" bench --preset tiny --recorded "$TMP/tiny.rec" --index Flat --json "$TMP/rec.json" \
    >/dev/null 2>"$TMP/rec.err"
check "bench on the recorded stream exits 0 ($(head -c 300 "$TMP/rec.err"))" test $? -eq 0
python3 - "$TMP/tiny.json" "$TMP/rec.json" <<'EOF' || fail=1
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
fa, fb = a["results"][0], b["results"][0]
bad = []
if b["config"]["workload"]["kind"] != "recorded":
    bad.append("workload kind %r" % b["config"]["workload"])
if fb["needle_hit_rate"] is not None:
    bad.append("a recorded stream has no needles: %r" % fb["needle_hit_rate"])
if fb["recall_at_k"] != 1.0:
    bad.append("Flat recall on the recorded stream %r" % fb["recall_at_k"])
# the same keys, values and queries: the same attention outputs
if fa["attn_rel_err"] != fb["attn_rel_err"]:
    bad.append("attn_rel_err %r (generator) != %r (recorded)" % (fa["attn_rel_err"], fb["attn_rel_err"]))
for m in bad:
    print("FAIL:", m, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF

# ---- bad input: a clear one-line error, exit status 2 (usage) or 1 ----
expect_error() { # expect_error status pattern args...
    local want=$1 pat=$2
    shift 2
    "$LMK" bench "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    check "bench $* exits $want (got $rc)" test $rc -eq "$want"
    check "bench $*: one line on stderr" test "$(wc -l <"$TMP/err")" -eq 1
    check "bench $*: message names '$pat' ($(cat "$TMP/err"))" grep -q -- "$pat" "$TMP/err"
    check "bench $*: nothing on stdout" test ! -s "$TMP/out"
}
expect_error 2 "NotAnIndex" --preset tiny --index NotAnIndex
expect_error 2 "unknown parameter" --preset tiny --sweep foo=1,2
expect_error 2 "bad value list" --preset tiny --sweep nprobe=1,,2
expect_error 2 "steps" --preset tiny --steps 5
expect_error 2 "preset" --preset 2m
expect_error 2 "multiple" --preset tiny --heads 3 --kv-heads 2
expect_error 1 "not a recorded stream" --recorded "$TMP/tiny.txt"
head -c 1000000 "$TMP/tiny.rec" >"$TMP/short.rec"
expect_error 1 "needs" --recorded "$TMP/short.rec"
mkdir -p "$TMP/used/session"
expect_error 1 "exists" --preset tiny --dir "$TMP/used"
if command -v gnuplot >/dev/null 2>&1; then
    "$LMK" bench --preset tiny --index Flat --plot "$TMP/p.png" >/dev/null 2>&1
    check "plot written as PNG" test "$(head -c 4 "$TMP/p.png" | tail -c 3)" = "PNG"
else
    expect_error 2 "gnuplot" --preset tiny --plot "$TMP/p.png"
fi

if [ $fail -ne 0 ]; then
    echo "test_bench: FAILED"
    exit 1
fi
echo "test_bench: ok"
