#!/usr/bin/env bash
# End-to-end: landmark run / passkey / perplexity. Usage: test_run.sh path/to/landmark
# Error paths always run; the model runs need the shared model (LMK_SHARED, ../shared) and
# are skipped with a notice when it is absent.
set -u
LMK=${1:?usage: test_run.sh path/to/landmark}
TMP=${LMK_TEST_TMP:-/tmp}/run-$$
rm -rf "$TMP"
mkdir -p "$TMP"
fails=0
fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}
# expect CODE NEEDLE -- command...: exit status and a message on stderr
expect() {
    local code=$1 needle=$2
    shift 3
    "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    if [ "$rc" != "$code" ]; then
        fail "'$*' exited $rc, want $code: $(head -c 400 "$TMP/err")"
    elif [ -n "$needle" ] && ! grep -q -- "$needle" "$TMP/err"; then
        fail "'$*': stderr lacks '$needle': $(head -c 400 "$TMP/err")"
    fi
}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

# ---- usage and input errors: one clear line, no crash ----
expect 2 "--session" -- "$LMK" run --model x.gguf --prompt hi
expect 2 "--model" -- "$LMK" passkey --tokens 100
expect 2 "invalid value" -- "$LMK" passkey --model x.gguf --tokens 100 --pos sideways
expect 2 "unknown option" -- "$LMK" perplexity --model x.gguf --file x --frobnicate 1
expect 1 "No such file" -- "$LMK" run --model "$TMP/none.gguf" --session "$TMP/s0" --prompt hi
printf 'this is not a model\n%.0s' {1..10} >"$TMP/bad.gguf"
expect 1 "not a GGUF file" -- "$LMK" run --model "$TMP/bad.gguf" --session "$TMP/s0" --prompt hi
[ -e "$TMP/s0/data.mdb" ] && fail "a failed run left a session behind"
expect 1 "not a GGUF file" -- "$LMK" passkey --model "$TMP/bad.gguf" --tokens 100
expect 2 "--model M.gguf is required" -- "$LMK" run --session "$TMP/s0" --prompt hi

# Memory caps (ulimit -v) keep a regression from eating the machine; AddressSanitizer reserves
# terabytes of address space and cannot run under one, so its build runs these uncapped.
cap() { ldd "$LMK" 2>/dev/null | grep -q libasan && echo : || echo "ulimit -v $1"; }

# a recorded stream whose shape's size wraps 64 bits to the file's size: refused
printf 'LMKREC1\000\001\000\000\000\000\010\000\000\000\010\000\000\000\004\000\000' >"$TMP/wrap.rec"
printf '\000\000\000\000\000\001\000\000\001\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' >>"$TMP/wrap.rec"
truncate -s 8388656 "$TMP/wrap.rec"
expect 1 "over 2^64 bytes" -- bash -c "$(cap 4000000)"'; exec "$@"' _ "$LMK" bench --preset tiny \
    --recorded "$TMP/wrap.rec" --index Flat
rm -f "$TMP/wrap.rec"

SHARED=${LMK_SHARED:-$(dirname "$0")/../../shared}
F32=$SHARED/models/landmark-tiny-kjv-f32.gguf
Q8=$SHARED/models/landmark-tiny-kjv-q8_0.gguf
KJV=$SHARED/data/kjv.txt
if [ ! -r "$F32" ] || [ ! -r "$KJV" ]; then
    echo "NOTICE: shared model not found at $SHARED/models: model runs skipped"
    rm -rf "$TMP"
    [ $fails = 0 ] && echo "test_run: ok (error paths only)" || echo "test_run: FAILED ($fails)"
    exit $((fails > 0))
fi

# a truncated copy of a real model: a clear error
head -c 3000000 "$F32" >"$TMP/trunc.gguf"
expect 1 "truncated" -- "$LMK" run --model "$TMP/trunc.gguf" --session "$TMP/s0" --prompt hi

# a device is not a document: refused at once, not read until memory runs out (memory is
# capped so that a regression fails instead of eating the machine)
for cmd in "run --model $F32 --session $TMP/z0 --file /dev/zero" \
    "passkey --model $F32 --tokens 300 --trials 1 --haystack /dev/zero" \
    "perplexity --model $F32 --file /dev/zero"; do
    # shellcheck disable=SC2086
    expect 1 "not a regular file or a pipe" -- bash -c "$(cap 1500000)"'; exec "$@"' _ "$LMK" $cmd
done
[ -e "$TMP/z0/data.mdb" ] && fail "a refused document left a session behind"
# nor is a directory or a socket
python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$TMP/sock" 2>/dev/null
for f in "$TMP" "$TMP/sock"; do
    [ -e "$f" ] || continue
    expect 1 "not a regular file or a pipe" -- "$LMK" run --model "$F32" --session "$TMP/z1" --file "$f"
    expect 1 "not a regular file or a pipe" -- "$LMK" passkey --model "$F32" --tokens 300 \
        --trials 1 --haystack "$f"
    expect 1 "not a regular file or a pipe" -- "$LMK" perplexity --model "$F32" --file "$f"
done
[ -e "$TMP/z1/data.mdb" ] && fail "a refused document left a session behind"
rm -f "$TMP/sock"

# a document is streamed: a 200 MB pipe is prefilled in the memory a 2 MB one takes (peak
# resident memory when some thousands of tokens are in, then SIGINT), under a data-segment
# cap (ulimit -d: the session's map is a shared file mapping, outside it) far below what
# reading it whole needs; where AddressSanitizer is linked, uncapped and not compared
capd() { ldd "$LMK" 2>/dev/null | grep -q libasan && echo : || echo "ulimit -d $1"; }
asan=0
ldd "$LMK" 2>/dev/null | grep -q libasan && asan=1
# stream_peak SIZE: PEAK = the peak resident KiB of a run fed SIZE bytes of KJV text
# through a pipe
stream_peak() {
    local d=$TMP/pipe-$1 n=0 hwm=0 pid
    (for _ in $(seq 60); do cat "$KJV"; done) | head -c "$1" |
        bash -c "$(capd 600000)"'; exec "$@"' _ "$LMK" run --model "$F32" --session "$d" \
            --file /dev/stdin --piece 512 -t 2 >/dev/null 2>"$d.err" &
    pid=$!
    while kill -0 $pid 2>/dev/null && [ $n -lt 600 ]; do
        n=$((n + 1))
        [ "$("$LMK" info "$d" --json 2>/dev/null | sed -n 's/.*"tokens": \([0-9]*\).*/\1/p')" \
            -ge 2000 ] 2>/dev/null && break
        sleep 0.1
    done
    hwm=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' /proc/$pid/status 2>/dev/null)
    kill -INT $pid 2>/dev/null
    wait $pid
    local rc=$?
    [ $rc = 1 ] && grep -q "interrupted" "$d.err" ||
        fail "a $1-byte pipe: exit $rc, want 1 (interrupted): $(head -c 300 "$d.err")"
    rm -rf "$d" "$d.err"
    PEAK=${hwm:-0}
}
stream_peak 2000000
small=$PEAK
stream_peak 200000000
large=$PEAK
echo "peak resident memory prefilling a pipe: $small KiB (2 MB of text), $large KiB (200 MB)"
if [ $asan = 0 ]; then
    [ "$large" -gt 0 ] && [ "$large" -lt $((small + 32768)) ] && [ "$large" -lt 195312 ] ||
        fail "streaming a 200 MB pipe took $large KiB at peak, a 2 MB one $small KiB"
fi

# ---- run: document, then questions in later runs ----
head -c 6000 "$KJV" >"$TMP/doc.txt"
Q=" And God said unto Noah,"
"$LMK" run --model "$F32" --session "$TMP/s1" --file "$TMP/doc.txt" --prompt "$Q" \
    --generate 24 -t 2 >"$TMP/a.out" 2>"$TMP/a.err" || fail "run: $(cat "$TMP/a.err")"
grep -q "prefill: .* tokens/s" "$TMP/a.err" || fail "run: no prefill speed reported"
grep -q "decode: 24 tokens" "$TMP/a.err" || fail "run: no decode speed reported"
[ "$(head -c 24 "$TMP/a.out" | wc -c)" -ge 20 ] || fail "run: generated too little: $(cat "$TMP/a.out")"
# the same in two runs (document, then the question without the model path) is identical
"$LMK" run --model "$F32" --session "$TMP/s2" --file "$TMP/doc.txt" -t 2 >"$TMP/b0.out" \
    2>"$TMP/b0.err" || fail "run (document only): $(cat "$TMP/b0.err")"
[ -s "$TMP/b0.out" ] && fail "run with a document alone generated text"
"$LMK" run --session "$TMP/s2" --prompt "$Q" --generate 24 -t 1 >"$TMP/b.out" 2>"$TMP/b.err" ||
    fail "run (continue): $(cat "$TMP/b.err")"
cmp -s "$TMP/a.out" "$TMP/b.out" ||
    fail "continued session answered differently: '$(cat "$TMP/a.out")' vs '$(cat "$TMP/b.out")'"
# continuing the generation with no new text picks up after the answer
"$LMK" run --session "$TMP/s2" --generate 8 >"$TMP/c.out" 2>"$TMP/c.err" ||
    fail "run (generate more): $(cat "$TMP/c.err")"
[ -s "$TMP/c.out" ] || fail "run (generate more) printed nothing"
tok1=$("$LMK" info "$TMP/s1" --json 2>/dev/null | sed -n 's/.*"tokens": \([0-9]*\).*/\1/p')
tok2=$("$LMK" info "$TMP/s2" --json 2>/dev/null | sed -n 's/.*"tokens": \([0-9]*\).*/\1/p')
[ -n "$tok1" ] && [ -n "$tok2" ] && [ "$tok2" -gt "$tok1" ] ||
    fail "session lengths: s1 $tok1, s2 $tok2 (s2 holds 8 more tokens)"
# another model (Q8_0 file): refused with the fingerprint, the session untouched
expect 1 "not written by this model" -- "$LMK" run --model "$Q8" --session "$TMP/s2" --prompt x
tok3=$("$LMK" info "$TMP/s2" --json 2>/dev/null | sed -n 's/.*"tokens": \([0-9]*\).*/\1/p')
[ "$tok3" = "$tok2" ] || fail "a refused run changed the session ($tok2 -> $tok3)"
# the key frame is part of the fingerprint too
expect 1 "not written by this model" -- "$LMK" run --session "$TMP/s2" --pos original --prompt x

# ---- --chat: a document opening the conversation, two questions continuing it ----
expect 2 "unknown --template" -- "$LMK" run --model "$F32" --session "$TMP/c0" --template nope \
    --prompt hi
expect 1 "no chat template" -- "$LMK" run --model "$F32" --session "$TMP/c0" --chat --prompt hi
"$LMK" run --model "$F32" --session "$TMP/c1" --template chatml --system "Answer briefly." \
    --file "$TMP/doc.txt" --prompt "$Q" --generate 8 -t 2 >"$TMP/ch1.out" 2>"$TMP/ch1.err" ||
    fail "run --chat: $(cat "$TMP/ch1.err")"
"$LMK" run --session "$TMP/c1" --prompt "And then?" --generate 8 -t 2 \
    >"$TMP/ch2.out" 2>"$TMP/ch2.err" || fail "run --chat (second question): $(cat "$TMP/ch2.err")"
grep -q "turns 2" "$TMP/c1/model-chat.txt" || fail "chat state: $(cat "$TMP/c1/model-chat.txt")"
expect 1 "started with --chat" -- "$LMK" run --session "$TMP/s2" --chat --template chatml \
    --prompt x

# an interrupted prefill (SIGINT, then SIGKILL) resumes where the session stops
head -c 6000 "$KJV" >"$TMP/big.txt"
"$LMK" run --model "$F32" --session "$TMP/s4" --file "$TMP/big.txt" -t 2 >/dev/null 2>&1 ||
    fail "run (whole document)"
want=$("$LMK" info "$TMP/s4" --json 2>/dev/null | sed -n 's/.*"tokens": \([0-9]*\).*/\1/p')
for sig in INT KILL; do
    rm -rf "$TMP/s3"
    "$LMK" run --model "$F32" --session "$TMP/s3" --file "$TMP/big.txt" --piece 128 -t 2 \
        >/dev/null 2>"$TMP/i.err" &
    pid=$!
    sleep 1
    kill -s $sig $pid 2>/dev/null
    wait $pid 2>/dev/null
    rc=$?
    "$LMK" run --session "$TMP/s3" --file "$TMP/big.txt" --piece 128 -t 2 >/dev/null \
        2>"$TMP/r.err" || fail "resume after SIG$sig: $(cat "$TMP/r.err")"
    if [ $rc = 0 ]; then
        echo "NOTICE: the prefill finished before SIG$sig; resume not exercised"
    else
        grep -q "resuming" "$TMP/r.err" || fail "no resume after SIG$sig: $(cat "$TMP/r.err")"
    fi
    got=$("$LMK" info "$TMP/s3" --json 2>/dev/null | sed -n 's/.*"tokens": \([0-9]*\).*/\1/p')
    [ "$got" = "$want" ] || fail "after SIG$sig and resume: $got tokens, want $want"
done

# the same document through a pipe, and read 100 bytes at a time: the same session data;
# an interrupted pipe resumes when the same text is piped again
digest0() { "$LMK" info "$1" --json 2>/dev/null | sed -n 's/.*"data_digest": "\([0-9a-f]*\)".*/\1/p'; }
want_s4=$(digest0 "$TMP/s4")
"$LMK" run --model "$F32" --session "$TMP/s5" --file "$TMP/big.txt" --text-window 100 -t 2 \
    >/dev/null 2>&1 || fail "run --text-window 100"
[ "$(digest0 "$TMP/s5")" = "$want_s4" ] ||
    fail "--text-window 100: data digest $(digest0 "$TMP/s5"), want $want_s4"
rm -rf "$TMP/s6"
"$LMK" run --model "$F32" --session "$TMP/s6" --file /dev/stdin --piece 128 -t 2 \
    <"$TMP/big.txt" >/dev/null 2>&1 || fail "run --file /dev/stdin (a file)"
cat "$TMP/big.txt" | "$LMK" run --model "$F32" --session "$TMP/s7" --file /dev/stdin \
    --piece 128 -t 2 >/dev/null 2>"$TMP/p.err" &
pid=$!
sleep 1
kill -INT $pid 2>/dev/null
wait $pid
rc=$?
cat "$TMP/big.txt" | "$LMK" run --session "$TMP/s7" --file /dev/stdin --piece 128 -t 2 \
    >/dev/null 2>"$TMP/p2.err" || fail "resuming a pipe: $(cat "$TMP/p2.err")"
if [ $rc = 0 ]; then
    echo "NOTICE: the piped prefill finished before SIGINT; resume not exercised"
else
    grep -q "resuming" "$TMP/p2.err" || fail "no resume of a pipe: $(cat "$TMP/p2.err")"
fi
[ "$(digest0 "$TMP/s7")" = "$(digest0 "$TMP/s6")" ] ||
    fail "a resumed pipe: data digest $(digest0 "$TMP/s7"), want $(digest0 "$TMP/s6")"

# kill -9 during the prefill, the prompt and the generation: rerunning the same command
# ends with the uninterrupted run's session data and text, whatever the kill point
digest() { "$LMK" info "$1" --json 2>/dev/null | sed -n 's/.*"data_digest": "\([0-9a-f]*\)".*/\1/p'; }
ntok() { "$LMK" info "$1" --json 2>/dev/null | sed -n 's/.*"tokens": \([0-9]*\).*/\1/p'; }
head -c 3000 "$KJV" >"$TMP/small.txt"
PQ=$(head -c 20000 "$KJV" | tail -c 440) # per-token retrieval: the prompt takes a while
KR=(--file "$TMP/small.txt" --prompt "$PQ" --generate 64 --piece 1000 --chunk 64 -t 2)
"$LMK" run --model "$F32" --session "$TMP/k0" "${KR[@]}" >"$TMP/k0.out" 2>"$TMP/k0.err" ||
    fail "run (uninterrupted): $(cat "$TMP/k0.err")"
"$LMK" run --model "$F32" --session "$TMP/kd" --file "$TMP/small.txt" -t 2 >/dev/null 2>&1 ||
    fail "run (document alone)"
want_d=$(digest "$TMP/k0")
doc_pos=$(ntok "$TMP/kd")
# kill_at DIR WHEN: start the run, wait until WHEN holds ('prefill': half of the
# document in the session; 'prompt': part of the prompt in, no text out yet; 'generate':
# text out), then kill -9. Prints the phase the kill hit and the positions left.
kill_at() {
    local dir=$1 when=$2 n=0 t
    "$LMK" run --model "$F32" --session "$dir" "${KR[@]}" >"$dir.out" 2>/dev/null &
    local pid=$!
    while kill -0 $pid 2>/dev/null && [ $n -lt 600 ]; do
        n=$((n + 1))
        if [ "$when" = generate ]; then
            [ "$(wc -c <"$dir.out")" -ge 8 ] && break
        elif [ "$when" = prompt ]; then
            # the document is in and the prompt begun (the prompt is quick: poll cheaply)
            grep -qs '^rewind=' "$dir/model-run.txt" && sleep 0.05 && break
        else
            t=$(ntok "$dir")
            t=${t:-0}
            [ "$when" = prefill ] && [ "$t" -ge $((doc_pos / 2)) ] && break
        fi
        sleep 0.02
    done
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    t=$(ntok "$dir")
    if [ -s "$dir.out" ]; then echo -n generate; elif [ "${t:-0}" -lt "$doc_pos" ]; then
        echo -n prefill; else echo -n prompt; fi
    echo " ${t:-0}"
}
for when in prefill prompt generate prefill; do
    d=$TMP/k-$when-$RANDOM
    read -r hit at < <(kill_at "$d" $when)
    echo "kill -9 in the $hit at $at positions (document: $doc_pos)"
    [ "$hit" = "$when" ] || echo "NOTICE: the kill meant for the $when hit the $hit"
    "$LMK" run --model "$F32" --session "$d" "${KR[@]}" >"$d.out2" 2>"$d.err" ||
        fail "rerun after kill -9 in the $hit: $(cat "$d.err")"
    [ "$(digest "$d")" = "$want_d" ] ||
        fail "rerun after kill -9 in the $hit: data digest $(digest "$d"), want $want_d"
    cmp -s "$d.out2" "$TMP/k0.out" ||
        fail "rerun after kill -9 in the $hit: text '$(cat "$d.out2")', want '$(cat "$TMP/k0.out")'"
    rm -rf "$d" "$d".*
done

# ---- passkey: the JSON keys, and a short run that should pass ----
"$LMK" passkey --model "$F32" --tokens 600 --trials 3 --haystack "$KJV" --json -t 2 \
    >"$TMP/pk.json" 2>"$TMP/pk.err" || fail "passkey: $(cat "$TMP/pk.err")"
for k in tokens trials accuracy prefill_tokens_per_s decode_tokens_per_s; do
    grep -q "\"$k\": " "$TMP/pk.json" || fail "passkey --json lacks $k: $(cat "$TMP/pk.json")"
done
acc=$(sed -n 's/.*"accuracy": \([0-9.]*\).*/\1/p' "$TMP/pk.json")
awk -v a="$acc" 'BEGIN { exit !(a >= 0.66) }' || fail "passkey accuracy $acc at 600 tokens"
"$LMK" passkey --model "$F32" --tokens 500 --trials 2 --depth 0.1,0.9 -t 1 >"$TMP/pk.txt" \
    2>"$TMP/pk2.err" || fail "passkey (filler, depths): $(cat "$TMP/pk2.err")"
grep -q "depth 0.10: " "$TMP/pk.txt" && grep -q "depth 0.90: " "$TMP/pk.txt" ||
    fail "passkey: no per-depth report: $(cat "$TMP/pk.txt")"

# ---- perplexity: with every block retrieved it equals full attention ----
head -c 2000 "$KJV" >"$TMP/p.txt"
"$LMK" perplexity --model "$F32" --file "$TMP/p.txt" --top-k all --recent 0 --json -t 2 \
    >"$TMP/pp.json" 2>"$TMP/pp.err" || fail "perplexity: $(cat "$TMP/pp.err")"
p_r=$(sed -n 's/.*"perplexity": \([0-9.e+-]*\),.*/\1/p' "$TMP/pp.json")
p_f=$(sed -n 's/.*"perplexity_full": \([0-9.e+-]*\),.*/\1/p' "$TMP/pp.json")
awk -v a="$p_r" -v b="$p_f" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 1 && a < 20 && d < 1e-3 * b) }' ||
    fail "perplexity retrieval $p_r vs full $p_f: $(cat "$TMP/pp.json")"
"$LMK" perplexity --model "$F32" --file "$TMP/p.txt" -t 2 >"$TMP/pp.txt" 2>"$TMP/pp2.err" ||
    fail "perplexity (top-k 4): $(cat "$TMP/pp2.err")"
grep -q "full attention: " "$TMP/pp.txt" || fail "perplexity: no comparison: $(cat "$TMP/pp.txt")"

rm -rf "$TMP"
if [ $fails = 0 ]; then
    echo "test_run: ok"
else
    echo "test_run: FAILED ($fails)"
fi
exit $((fails > 0))
