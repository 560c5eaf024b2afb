#!/usr/bin/env bash
# End-to-end: landmark serve, driven with curl on a free loopback port (127.0.0.1 only).
# Usage: test_serve.sh path/to/landmark
# Needs the shared model (LMK_SHARED, ../shared); skipped with a notice when it is absent.
set -u
LMK=${1:?usage: test_serve.sh path/to/landmark}
TMP=${LMK_TEST_TMP:-/tmp}/serve-$$
rm -rf "$TMP"
mkdir -p "$TMP"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
fails=0
fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}
ok() { echo "ok: $*"; }
PID=
cleanup() {
    [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

SHARED=${LMK_SHARED:-$(dirname "$0")/../../shared}
M=$SHARED/models/landmark-tiny-kjv-f32.gguf
OTHER=$SHARED/models/plain-tiny-kjv-f32.gguf
KJV=$SHARED/data/kjv.txt
for tool in curl jq; do
    command -v $tool >/dev/null || { echo "NOTICE: $tool not installed: test_serve skipped"; exit 0; }
done
ASCII=1 # the model writes text (the random model writes any bytes: text checks then relaxed)
if [ ! -r "$M" ] || [ ! -r "$KJV" ]; then
    W=${LMK_TINY_MODEL_WRITER:-}
    if [ -z "$W" ] || ! "$W" "$TMP/tiny.gguf" 7 || ! "$W" "$TMP/tiny2.gguf" 8; then
        echo "NOTICE: no shared model and no tiny model writer: test_serve skipped"
        exit 0
    fi
    echo "NOTICE: shared model not found at $SHARED/models: a tiny random model is used"
    M=$TMP/tiny.gguf
    OTHER=$TMP/tiny2.gguf
    KJV=$TMP/text.txt
    for i in $(seq 8000); do echo "And on day $i the word was $((i * 7919 % 1000)) and good."; done >"$KJV"
    ASCII=0
fi
MODEL_NAME=$(basename "$M" .gguf)

# usage errors
"$LMK" serve --sessions "$TMP/x" >/dev/null 2>"$TMP/err" && fail "serve without --model"
grep -q -- "--model" "$TMP/err" || fail "usage error lacks --model: $(cat "$TMP/err")"
"$LMK" serve --model "$M" --sessions "$TMP/x" --host example.org 2>"$TMP/err" && fail "bad --host"

KEY=test-key-123
SD=$TMP/sessions
# start_server [extra options]: starts on a free port (--port 0), sets PID and URL
# sanitizer reports of the server (an ASan+UBSan build) are failures
check_log() {
    if grep -q -E "runtime error|ERROR: (Address|Leak)Sanitizer" "$TMP/server.log" 2>/dev/null; then
        fail "sanitizer report from the server: $(grep -m 3 -E "runtime error|Sanitizer" "$TMP/server.log")"
    fi
}
start_server() {
    check_log
    # emptied here, not by the redirection below: that happens in the child, which may run
    # after the loop has read the previous server's port from the old log
    : >"$TMP/server.log"
    port=
    "$LMK" serve --model "$M" --sessions "$SD" --port 0 -t 1 --api-key "$KEY" \
        --parallel 2 --queue "${QUEUE:-1}" --max-body 8k --max-document 256k \
        --max-prompt-tokens 2000 "$@" 2>"$TMP/server.log" &
    PID=$!
    for _ in $(seq 100); do
        port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$TMP/server.log")
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { fail "server did not start: $(cat "$TMP/server.log")"; exit 1; }
    URL=http://127.0.0.1:$port
}
# api METHOD PATH [curl args...]: the body on stdout, the status in $TMP/status
api() {
    local m=$1 p=$2
    shift 2
    curl -s -o "$TMP/body" -w '%{http_code}' -X "$m" -H "Authorization: Bearer $KEY" \
        -H 'Content-Type: application/json' "$@" "$URL$p" >"$TMP/status"
    cat "$TMP/body"
}
status() { cat "$TMP/status"; }
# expect_status CODE what: the last call's status, and an OpenAI-style error body for 4xx/5xx
expect_status() {
    local s
    s=$(status)
    if [ "$s" != "$1" ]; then
        fail "$2: status $s, want $1: $(head -c 300 "$TMP/body")"
    elif [ "$1" -ge 400 ] && ! jq -e '.error.message and .error.type' "$TMP/body" >/dev/null; then
        fail "$2: no OpenAI-style error body: $(head -c 300 "$TMP/body")"
    fi
}
tokens_of() { api GET "/v1/sessions/$1" | jq -r .tokens; }
# wait_queued ID N: until N requests wait for session ID (at most 10 s)
wait_queued() {
    for _ in $(seq 200); do
        [ "$(api GET "/v1/sessions/$1" | jq -r .queued)" = "$2" ] && return 0
        sleep 0.05
    done
    fail "$2 requests did not come to wait for session $1"
}
digest_of() { "$LMK" info "$SD/$1" --json | jq -r .data_digest; }
# timed OUT curl-args...: a request's absolute start, first byte and end in OUT ("t0 t1 t2")
timed() {
    local out=$1 t0
    shift
    t0=$(date +%s.%N)
    curl -s -N -o "$out.body" -w '%{time_starttransfer} %{time_total}\n' \
        -H "Authorization: Bearer $KEY" "$@" >"$out.w"
    awk -v t0="$t0" '{ printf "%.6f %.6f %.6f\n", t0, t0 + $1, t0 + $2 }' "$out.w" >"$out"
}
start_t() { cut -d' ' -f1 "$1"; }
first_t() { cut -d' ' -f2 "$1"; }
last_t() { cut -d' ' -f3 "$1"; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

start_server

# ---- models, completions, streaming ----
api GET /v1/models | jq -e --arg m "$MODEL_NAME" '.data[0].id == $m' >/dev/null ||
    fail "/v1/models: $(cat "$TMP/body")"
expect_status 200 "/v1/models"
api POST /v1/completions -d '{"prompt":"In the beginning God","max_tokens":16,"temperature":0}' >"$TMP/c1"
expect_status 200 "completion"
jq -e '.object == "text_completion" and (.choices[0].text | length) > 0 and
       .usage.completion_tokens == 16 and .usage.prompt_tokens > 0 and
       .choices[0].finish_reason == "length"' "$TMP/c1" >/dev/null || fail "completion: $(cat "$TMP/c1")"
curl -s -N -H "Authorization: Bearer $KEY" "$URL/v1/completions" \
    -d '{"prompt":"In the beginning God","max_tokens":16,"temperature":0,"stream":true}' >"$TMP/s1"
tail -n 2 "$TMP/s1" | grep -q '^data: \[DONE\]$' || fail "stream does not end with [DONE]"
streamed=$(grep '^data: {' "$TMP/s1" | sed 's/^data: //' | jq -j '.choices[0].text')
[ "$streamed" = "$(jq -j '.choices[0].text' "$TMP/c1")" ] || fail "stream text '$streamed' differs"
grep '^data: {' "$TMP/s1" | tail -n 1 | sed 's/^data: //' |
    jq -e '.usage.completion_tokens == 16 and .choices[0].finish_reason == "length"' >/dev/null ||
    fail "stream's last chunk lacks usage"
# stop sequences: the text ends before the first one
full=$(jq -j '.choices[0].text' "$TMP/c1")
stopseq=${full:3:2}
api POST /v1/completions -d "$(jq -n --arg s "$stopseq" \
    '{prompt:"In the beginning God",max_tokens:16,temperature:0,stop:[$s]}')" >"$TMP/c2"
want=${full%%"$stopseq"*}
if [ $ASCII = 1 ]; then
    [ "$(jq -j '.choices[0].text' "$TMP/c2")" = "$want" ] &&
        jq -e '.choices[0].finish_reason == "stop"' "$TMP/c2" >/dev/null ||
        fail "stop '$stopseq': $(cat "$TMP/c2"), want text '$want'"
fi
# sampling: the same seed gives the same text
a=$(api POST /v1/completions -d '{"prompt":"And","max_tokens":12,"temperature":0.9,"seed":7}' | jq -j '.choices[0].text')
b=$(api POST /v1/completions -d '{"prompt":"And","max_tokens":12,"temperature":0.9,"seed":7}' | jq -j '.choices[0].text')
[ "$a" = "$b" ] || fail "seeded sampling differs: '$a' vs '$b'"
api POST /v1/chat/completions -d '{"messages":[{"role":"user","content":"Who made the heaven?"}],"max_tokens":8,"temperature":0}' >"$TMP/chat"
expect_status 200 "chat completion"
jq -e '.object == "chat.completion" and .choices[0].message.role == "assistant"' "$TMP/chat" >/dev/null ||
    fail "chat: $(cat "$TMP/chat")"
# a model without a chat template: the documented fallback, a plain transcript
grep -q "chat messages as a plain transcript (the model has no chat template)" "$TMP/server.log" ||
    fail "no transcript fallback notice: $(head -n 3 "$TMP/server.log")"
ok "models, completions, streaming, stop, seed, chat"

# ---- sessions: create from a document (progress), get, list, append, fork, delete ----
head -c 6000 "$KJV" >"$TMP/doc.txt"
jq -n --rawfile d "$TMP/doc.txt" '{id:"book",document:$d}' >"$TMP/create.json"
api POST /v1/sessions -d @"$TMP/create.json" >/dev/null
expect_status 202 "create from a document"
seen_progress=0
for _ in $(seq 600); do
    api GET /v1/sessions/book >"$TMP/g"
    st=$(jq -r '.prefill.state' "$TMP/g")
    [ "$(jq -r '.prefill.total' "$TMP/g")" -gt 0 ] 2>/dev/null && seen_progress=1
    [ "$st" = running ] || break
    sleep 0.2
done
[ "$st" = done ] || fail "prefill did not finish: $(cat "$TMP/g")"
[ $seen_progress = 1 ] || echo "note: the prefill finished before a progress report was seen"
book_tokens=$(jq -r .tokens "$TMP/g")
[ "$book_tokens" -gt 6000 ] || fail "book has $book_tokens tokens"
api GET /v1/sessions | jq -e '[.data[].id] | index("book") != null' >/dev/null || fail "list lacks book"
api POST /v1/sessions -d '{"id":"empty"}' | jq -e '.id == "empty"' >/dev/null || fail "create empty"
expect_status 201 "create without a document"
api POST /v1/sessions -d '{"id":"empty"}' >/dev/null
expect_status 409 "create an existing id"
api POST /v1/sessions/empty/append -d '{"text":"In the beginning"}' >"$TMP/a"
expect_status 200 "append"
[ "$(jq -r .tokens "$TMP/a")" -gt 0 ] || fail "append: $(cat "$TMP/a")"
api POST /v1/completions -d '{"session":"empty","max_tokens":4,"temperature":0}' >/dev/null
expect_status 200 "continue a session with no prompt"
api POST /v1/sessions/book/fork -d '{"id":"book-copy"}' >/dev/null
expect_status 201 "fork"
[ "$(digest_of book-copy)" = "$(digest_of book)" ] || fail "fork's data digest differs"
api DELETE /v1/sessions/book-copy >/dev/null
expect_status 200 "delete"
[ -e "$SD/book-copy" ] && fail "delete left the directory"
api GET /v1/sessions/book-copy >/dev/null
expect_status 404 "get a deleted session"
ok "sessions: create (progress), get, list, append, fork, delete"

# ---- two questions from one point = two separate runs ----
d0=$(digest_of book)
"$LMK" fork "$SD/book" "$TMP/run1" >/dev/null 2>&1 && "$LMK" fork "$SD/book" "$TMP/run2" >/dev/null 2>&1 &&
    cp "$SD/book"/model-run.* "$TMP/run1/" && cp "$SD/book"/model-run.* "$TMP/run2/" ||
    fail "landmark fork of a served session"
Q1=" And God said unto Noah,"
Q2=" And the LORD said,"
for i in 1 2; do
    q=Q$i
    api POST /v1/completions -d "$(jq -n --arg p "${!q}" \
        '{session:"book",prompt:$p,max_tokens:24,temperature:0,persist:false}')" |
        jq -j '.choices[0].text' >"$TMP/srv$i"
    expect_status 200 "question $i with persist false"
    "$LMK" run --session "$TMP/run$i" --prompt "${!q}" --generate 24 -t 1 >"$TMP/cli$i" 2>"$TMP/cli$i.err" ||
        fail "landmark run on a served session: $(cat "$TMP/cli$i.err")"
    # (the server replaces invalid UTF-8 by U+FFFD: the random model's bytes compared as such)
    [ $ASCII = 0 ] && tr -d '\000' <"$TMP/cli$i" | LC_ALL=C.UTF-8 iconv -c -f UTF-8 -t UTF-8 2>/dev/null |
        cmp -s - <(LC_ALL=C.UTF-8 sed 's/\xef\xbf\xbd//g' "$TMP/srv$i"; echo) && continue
    printf '%s\n' "$(cat "$TMP/srv$i")" | cmp -s - "$TMP/cli$i" ||
        fail "question $i: server '$(cat "$TMP/srv$i")' vs run '$(cat "$TMP/cli$i")'"
done
[ "$(digest_of book)" = "$d0" ] || fail "persist:false changed the session's data"
[ "$(tokens_of book)" = "$book_tokens" ] || fail "persist:false changed the token count"
ok "two questions from one point equal two separate runs; the session unchanged"

# ---- concurrent clients on different sessions overlap; one session queues ----
api POST /v1/sessions/book/fork -d '{"id":"book2"}' >/dev/null
NLONG=300
[ $ASCII = 1 ] || NLONG=3000 # (the random model is much faster)
long='{"prompt":" And","max_tokens":'$NLONG',"temperature":0,"stream":true,"persist":false'
timed "$TMP/p1" "$URL/v1/completions" -d "$long,\"session\":\"book\"}" &
c1=$!
timed "$TMP/p2" "$URL/v1/completions" -d "$long,\"session\":\"book2\"}" &
c2=$!
wait $c1 $c2
grep -q '\[DONE\]' "$TMP/p1.body" && grep -q '\[DONE\]' "$TMP/p2.body" || fail "concurrent requests did not complete"
if lt "$(first_t "$TMP/p1")" "$(last_t "$TMP/p2")" && lt "$(first_t "$TMP/p2")" "$(last_t "$TMP/p1")"; then
    ok "two sessions served at once (their streams overlap in time)"
else
    fail "requests on two sessions did not overlap: $(cat "$TMP/p1") vs $(cat "$TMP/p2")"
fi
# the two ran at once over the one loaded model: each answer equals the answer the same
# request gets alone (book2 is a copy of book), and landmark run's on a copy
for i in 1 2; do grep '^data: {' "$TMP/p$i.body" | sed 's/^data: //' | jq -j '.choices[0].text' >"$TMP/p$i.text"; done
fails0=$fails
api POST /v1/completions -d '{"prompt":" And","max_tokens":'$NLONG',"temperature":0,"persist":false,"session":"book"}' |
    jq -j '.choices[0].text' >"$TMP/p0.text"
cmp -s "$TMP/p1.text" "$TMP/p0.text" && cmp -s "$TMP/p2.text" "$TMP/p0.text" ||
    fail "concurrent answers differ from the answer alone"
"$LMK" fork "$SD/book" "$TMP/run3" >/dev/null 2>&1 && cp "$SD/book"/model-run.* "$TMP/run3/" &&
    "$LMK" run --session "$TMP/run3" --prompt " And" --generate $NLONG -t 1 >"$TMP/cli3" 2>/dev/null ||
    fail "landmark run on a copy of book"
if [ $ASCII = 1 ]; then
    printf '%s\n' "$(cat "$TMP/p0.text")" | cmp -s - "$TMP/cli3" || fail "the answer differs from landmark run's"
fi
[ $fails = $fails0 ] && ok "answers given at once equal the answers given alone and landmark run's"
# the queue needs the first answer to outlast two request starts: the random model writes
# thousands of tokens a second on an idle machine, so it gets the most the server allows
qlong=$long
[ $ASCII = 1 ] || qlong='{"prompt":" And","max_tokens":4096,"temperature":0,"stream":true,"persist":false'
timed "$TMP/q1" "$URL/v1/completions" -d "$qlong,\"session\":\"book\"}" &
c1=$!
sleep 0.05
timed "$TMP/q2" "$URL/v1/completions" -d "$qlong,\"session\":\"book\"}" &
c2=$!
# (curl starts slowly on a loaded machine: the third is sent once the second waits)
wait_queued book 1
# a third request on the same session: the queue (--queue 1) is full
api POST /v1/completions -d '{"session":"book","prompt":" And","max_tokens":2}' >/dev/null
expect_status 503 "a full queue"
wait $c1 $c2
grep -q '\[DONE\]' "$TMP/q1.body" && grep -q '\[DONE\]' "$TMP/q2.body" || fail "queued requests did not complete"
# the second was sent while the first ran, and answered only after the first ended. The
# first's closing bytes ([DONE]) are written after its session is released, so on a loaded
# machine they can reach curl a little after the second's first bytes: allow 0.3 s of that.
# (Not queued, the second would answer while the first still had most of its tokens to go.)
q1_end_slack=$(awk -v t="$(last_t "$TMP/q1")" 'BEGIN { printf "%.6f", t - 0.3 }')
if lt "$(start_t "$TMP/q2")" "$(last_t "$TMP/q1")" && ! lt "$(first_t "$TMP/q2")" "$q1_end_slack"; then
    ok "a request on a busy session waits for the one running"
else
    fail "queueing on one session: $(cat "$TMP/q1") then $(cat "$TMP/q2")"
fi

# ---- a client that disconnects stops its generation ----
t0=$(tokens_of book2)
curl -s -N --max-time 1.5 -H "Authorization: Bearer $KEY" "$URL/v1/completions" \
    -d '{"session":"book2","prompt":" And","max_tokens":4000,"temperature":0,"stream":true}' >/dev/null
sleep 1
t1=$(tokens_of book2)
sleep 1.5
t2=$(tokens_of book2)
if [ "$t1" = null ] || [ "$t1" != "$t2" ] || [ "$t1" -ge $((t0 + 4000)) ]; then
    fail "after a disconnect the session went on: $t0 -> $t1 -> $t2"
else
    ok "a disconnect stopped the generation ($t0 -> $t1 tokens, then unchanged)"
fi

# ---- every bad input: a 4xx with an OpenAI-style body ----
bad() { # status what curl-args...
    local want=$1 what=$2
    shift 2
    api "$@" >/dev/null
    expect_status "$want" "$what"
}
bad 400 "malformed JSON" POST /v1/completions -d '{"prompt": "x",'
bad 400 "not an object" POST /v1/completions -d '[1,2]'
bad 400 "prompt of the wrong type" POST /v1/completions -d '{"prompt": 5}'
bad 400 "max_tokens of the wrong type" POST /v1/completions -d '{"prompt":"x","max_tokens":"9"}'
bad 400 "negative max_tokens" POST /v1/completions -d '{"prompt":"x","max_tokens":-1}'
bad 400 "temperature out of range" POST /v1/completions -d '{"prompt":"x","temperature":9}'
bad 400 "stream not a boolean" POST /v1/completions -d '{"prompt":"x","stream":"yes"}'
bad 400 "stop of the wrong type" POST /v1/completions -d '{"prompt":"x","stop":[1]}'
bad 400 "too many stops" POST /v1/completions -d '{"prompt":"x","stop":["a","b","c","d","e"]}'
bad 400 "no prompt" POST /v1/completions -d '{"max_tokens":3}'
bad 400 "session id with a path" POST /v1/completions -d '{"prompt":"x","session":"../etc"}'
bad 400 "messages missing" POST /v1/chat/completions -d '{"prompt":"x"}'
bad 400 "a message without content" POST /v1/chat/completions -d '{"messages":[{"role":"user"}]}'
bad 400 "an unknown role" POST /v1/chat/completions -d '{"messages":[{"role":"god","content":"x"}]}'
bad 400 "duplicate keys" POST /v1/completions -d '{"prompt":"x","prompt":"y"}'
bad 400 "invalid id in the path" GET "/v1/sessions/..%2F..%2Fetc"
bad 400 "invalid id to create" POST /v1/sessions -d '{"id":".hidden"}'
bad 400 "append without text" POST /v1/sessions/book/append -d '{}'
bad 404 "unknown session" POST /v1/completions -d '{"prompt":"x","session":"nosuch"}'
bad 404 "unknown session (get)" GET /v1/sessions/nosuch
bad 404 "unknown session (append)" POST /v1/sessions/nosuch/append -d '{"text":"x"}'
bad 404 "unknown endpoint" GET /v1/nothing
bad 405 "wrong method" DELETE /v1/completions
head -c 9000 /dev/zero | tr '\0' 'a' | jq -Rs '{prompt:.}' >"$TMP/big.json"
bad 413 "body over --max-body" POST /v1/completions -d @"$TMP/big.json"
head -c 300000 "$KJV" | jq -Rs '{document:.}' >"$TMP/bigdoc.json"
bad 413 "document over --max-document" POST /v1/sessions -d @"$TMP/bigdoc.json"
head -c 2500 "$KJV" | jq -Rs '{prompt:., max_tokens:1}' >"$TMP/longprompt.json"
bad 400 "prompt over --max-prompt-tokens" POST /v1/completions -d @"$TMP/longprompt.json"
curl -s -o "$TMP/body" -w '%{http_code}' "$URL/v1/models" >"$TMP/status"
expect_status 401 "missing API key"
curl -s -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer nope" "$URL/v1/models" >"$TMP/status"
expect_status 401 "wrong API key"
# a session written by another model
if [ -r "$OTHER" ]; then
    "$LMK" run --model "$OTHER" --session "$SD/other" --prompt "In the beginning" --generate 1 -t 1 \
        >/dev/null 2>&1 || fail "landmark run with the other model"
    bad 409 "a session of another model" POST /v1/completions -d '{"prompt":"x","session":"other"}'
fi
# garbage bytes never crash the server
head -c 3000 /dev/urandom >"$TMP/noise"
bad 400 "random bytes" POST /v1/completions --data-binary @"$TMP/noise"
kill -0 "$PID" || fail "the server died on bad input"
[ "$(digest_of book)" = "$d0" ] || fail "bad input changed a session"
ok "bad inputs answered 4xx with error bodies"

# ---- a session made by landmark run is served ----
"$LMK" run --model "$M" --session "$SD/byrun" --prompt "In the beginning" --generate 2 -t 1 \
    >/dev/null 2>&1 || fail "landmark run"
api POST /v1/completions -d '{"session":"byrun","prompt":" God","max_tokens":4,"temperature":0}' >/dev/null
expect_status 200 "a session made by landmark run"

# ---- kill -9 and restart: every committed session served again ----
declare -A dig
for s in book book2 empty byrun; do dig[$s]=$(digest_of $s); done
# killed in the middle of answers: one kept (book2), one not (book, persist false)
curl -s -N -H "Authorization: Bearer $KEY" "$URL/v1/completions" \
    -d '{"session":"book","prompt":" And","max_tokens":100000,"stream":true,"persist":false}' >/dev/null &
k1=$!
curl -s -N -H "Authorization: Bearer $KEY" "$URL/v1/completions" \
    -d '{"session":"book2","prompt":" And","max_tokens":100000,"stream":true}' >/dev/null &
k2=$!
sleep 1.5
kill -9 "$PID"
wait "$PID" 2>/dev/null
start_server
wait $k1 $k2
for s in book empty byrun; do
    [ "$(digest_of $s)" = "${dig[$s]}" ] || fail "session $s changed across kill -9"
done
"$LMK" verify "$SD/book2" >/dev/null 2>&1 || fail "book2 does not verify after kill -9"
for s in book book2 empty byrun; do
    api GET "/v1/sessions/$s" >/dev/null
    expect_status 200 "session $s after restart"
done
api POST /v1/completions -d "$(jq -n --arg p "$Q1" \
    '{session:"book",prompt:$p,max_tokens:24,temperature:0,persist:false}')" |
    jq -j '.choices[0].text' >"$TMP/srv3"
cmp -s "$TMP/srv1" "$TMP/srv3" || fail "after restart: '$(cat "$TMP/srv3")' vs '$(cat "$TMP/srv1")'"
ok "kill -9 and restart: sessions intact"

# ---- SIGTERM stops a running generation, syncs, exits 0 ----
curl -s -N -H "Authorization: Bearer $KEY" "$URL/v1/completions" \
    -d '{"session":"book2","prompt":" And","max_tokens":4000,"stream":true}' >/dev/null &
sleep 1
kill -TERM "$PID"
for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$PID" 2>/dev/null; then
    fail "the server did not exit within 10 s of SIGTERM"
else
    wait "$PID"
    rc=$?
    [ $rc = 0 ] || fail "SIGTERM: exit status $rc"
fi
PID=
check_log
"$LMK" verify "$SD/book2" >/dev/null 2>&1 || fail "book2 does not verify after SIGTERM"
ok "SIGTERM"

# ---- requests on one session run in arrival order ----
# (the model of the tests above: it never ends an answer by itself, so a long one holds the
# session until its client goes)
fails0=$fails
QUEUE=16 start_server --max-tokens 1000000
api POST /v1/sessions -d '{"id":"f1","prompt":"Start."}' >/dev/null
expect_status 201 "create f1"
for s in f1ref f1swap; do api POST /v1/sessions/f1/fork -d "{\"id\":\"$s\"}" >/dev/null; done
# a long answer holds f1 (persist false: the session is unchanged by it) ...
curl -s -N -H "Authorization: Bearer $KEY" "$URL/v1/completions" -d \
    '{"session":"f1","prompt":" And","max_tokens":1000000,"temperature":0,"stream":true,"persist":false}' \
    >"$TMP/blocker" &
blocker=$!
for _ in $(seq 50); do
    [ "$(api GET /v1/sessions/f1 | jq -r .busy)" = true ] && break
    sleep 0.1
done
# ... while N appends are sent one after another, each naming its place (each sent once
# the one before waits: curl's start-up on a loaded machine would otherwise blur the order)
N=6
for k in $(seq $N); do
    timed "$TMP/fifo$k" "$URL/v1/sessions/f1/append" -d "{\"text\":\" [$k]\"}" &
    eval "fifo_pid$k=$!"
    wait_queued f1 $k
    sleep 0.05
done
# all N waited behind the long answer, still running
held=0
kill -0 $blocker 2>/dev/null && api GET /v1/sessions/f1 | jq -e ".busy and .queued == $N" >/dev/null && held=1
kill $blocker 2>/dev/null # the disconnect ends the long answer: the queue drains
wait $blocker 2>/dev/null
for k in $(seq $N); do eval "wait \$fifo_pid$k"; done
[ $held = 1 ] || fail "FIFO: the long answer did not hold the session while the appends were sent"
# each answer names the session's length after its append: they grow in the order sent
prev=0
for k in $(seq $N); do
    n=$(jq -r 'if .appended_tokens > 0 then .tokens else "bad" end' "$TMP/fifo$k.body" 2>/dev/null)
    [ "$n" -gt "$prev" ] 2>/dev/null || fail "FIFO: append $k: $(cat "$TMP/fifo$k.body") after $prev tokens"
    prev=${n:-0}
done
# the session holds them in the order sent: equal to the same appends made one by one;
# (the check tells orders apart: two swapped give another session)
for k in $(seq $N); do
    api POST /v1/sessions/f1ref/append -d "{\"text\":\" [$k]\"}" >/dev/null
    expect_status 200 "append $k to f1ref"
done
for k in 2 1 $(seq 3 $N); do api POST /v1/sessions/f1swap/append -d "{\"text\":\" [$k]\"}" >/dev/null; done
[ "$(digest_of f1)" = "$(digest_of f1ref)" ] || fail "FIFO: the queued appends were applied out of order"
[ "$(digest_of f1swap)" != "$(digest_of f1ref)" ] || fail "FIFO: the digest does not tell orders apart"
[ "$(tokens_of f1)" = "$(tokens_of f1ref)" ] || fail "FIFO: $(tokens_of f1) vs $(tokens_of f1ref) tokens"
[ $fails = $fails0 ] && ok "$N requests queued on one session ran in the order they were sent"
kill -TERM "$PID"
wait "$PID"
PID=
check_log

# ---- chat in the model's own format: a tiny model whose GGUF carries a ChatML template ----
W=${LMK_TINY_MODEL_WRITER:-}
if [ -z "$W" ] || ! "$W" "$TMP/chat.gguf" 11 chat; then
    echo "NOTICE: no tiny model writer: the chat format checks skipped"
else
    fails0=$fails
    M=$TMP/chat.gguf
    SD=$TMP/chat-sessions
    QUEUE=16 start_server --max-tokens 1000000
    grep -q "chat format chatml (the model's chat template)" "$TMP/server.log" ||
        fail "the chat template was not detected: $(head -n 3 "$TMP/server.log")"
    SYS="Be brief."
    QA="Who begat Enos? <|im_end|> (a marker in content is text)"
    QB="  And then?"
    # chat_req SESSION-JSON MESSAGES-JSON [extra]: a greedy 8-token chat answer
    chat_req() {
        api POST /v1/chat/completions -d "$(jq -n --argjson s "$1" --argjson m "$2" \
            '{messages:$m,max_tokens:8,temperature:0} + $s')"
    }
    msgs1=$(jq -n --arg s "$SYS" --arg q "$QA" '[{role:"system",content:$s},{role:"user",content:$q}]')
    msgs2=$(jq -n --arg q "$QB" '[{role:"user",content:$q}]')
    api POST /v1/sessions -d '{"id":"c1"}' >/dev/null
    expect_status 201 "create an empty session for a conversation"
    # turn 1 and turn 2 against `landmark run --chat` (lmk_chat's frames) on its own session:
    # the same tokens fed (prompt_tokens, and the session's data digest, which also holds
    # the greedy answers)
    for t in 1 2; do
        if [ $t = 1 ]; then
            chat_req '{"session":"c1"}' "$msgs1" >"$TMP/ct$t"
            "$LMK" run --model "$M" --session "$TMP/runchat" --chat --system "$SYS" --prompt "$QA" \
                --generate 8 -t 1 >/dev/null 2>"$TMP/rt$t" || fail "landmark run --chat: $(cat "$TMP/rt$t")"
        else
            chat_req '{"session":"c1"}' "$msgs2" >"$TMP/ct$t"
            "$LMK" run --session "$TMP/runchat" --chat --prompt "$QB" --generate 8 -t 1 \
                >/dev/null 2>"$TMP/rt$t" || fail "landmark run --chat: $(cat "$TMP/rt$t")"
        fi
        expect_status 200 "chat turn $t"
        want=$(sed -n 's/^prefill: \([0-9]*\) tokens.*/\1/p' "$TMP/rt$t")
        got=$(jq -r .usage.prompt_tokens "$TMP/ct$t")
        [ -n "$want" ] && [ "$got" = "$want" ] ||
            fail "chat turn $t: prompt_tokens $got, landmark run --chat fed $want"
        [ "$("$LMK" info "$SD/c1" --json | jq -r .data_digest)" = \
          "$("$LMK" info "$TMP/runchat" --json | jq -r .data_digest)" ] ||
            fail "chat turn $t: the session differs from landmark run --chat's"
    done
    grep -q "^turns 2$" "$SD/c1/model-chat.txt" || fail "model-chat.txt: $(cat "$SD/c1/model-chat.txt")"
    cmp -s "$SD/c1/model-chat.txt" "$TMP/runchat/model-chat.txt" ||
        fail "model-chat.txt differs from landmark run --chat's"
    # persist false: neither the session nor its conversation state change
    dc=$(digest_of c1)
    cp "$SD/c1/model-chat.txt" "$TMP/chatstate"
    chat_req '{"session":"c1","persist":false}' "$msgs2" >"$TMP/ct3"
    expect_status 200 "chat with persist false"
    [ "$(digest_of c1)" = "$dc" ] && cmp -s "$SD/c1/model-chat.txt" "$TMP/chatstate" ||
        fail "a chat with persist false changed the session"
    # a fork carries the conversation on as the original would
    api POST /v1/sessions/c1/fork -d '{"id":"c1f"}' >/dev/null
    expect_status 201 "fork a conversation"
    chat_req '{"session":"c1f"}' "$msgs2" >"$TMP/ct4"
    jq -e --slurpfile a "$TMP/ct3" '.usage == $a[0].usage and .choices == $a[0].choices' "$TMP/ct4" >/dev/null ||
        fail "the fork's answer: $(cat "$TMP/ct4") vs the original's: $(cat "$TMP/ct3")"
    grep -q "^turns 3$" "$SD/c1f/model-chat.txt" || fail "the fork's model-chat.txt: $(cat "$SD/c1f/model-chat.txt")"
    # without a session: the whole rendering, BOS first, as turn 1
    chat_req '{}' "$msgs1" >"$TMP/ct0"
    [ "$(jq -r .usage.prompt_tokens "$TMP/ct0")" = "$(jq -r .usage.prompt_tokens "$TMP/ct1")" ] &&
        [ "$(jq -r '.choices[0].message.content' "$TMP/ct0")" = "$(jq -r '.choices[0].message.content' "$TMP/ct1")" ] ||
        fail "chat without a session: $(cat "$TMP/ct0") vs $(cat "$TMP/ct1")"
    # a session whose conversation is in another format
    "$LMK" fork "$SD/c1" "$SD/c2" >/dev/null 2>&1 && cp "$SD/c1"/model-run.* "$SD/c2/" &&
        printf 'format llama3\ndoc 0\nturns 1\n' >"$SD/c2/model-chat.txt" || fail "making c2"
    chat_req '{"session":"c2"}' "$msgs2" >/dev/null
    expect_status 409 "a conversation in another chat format"
    [ $fails = $fails0 ] && ok "chat in the model's format: turns equal landmark run --chat's, persist false, fork, no session"

    kill -TERM "$PID"
    wait "$PID"
    PID=
    check_log
fi

[ $fails = 0 ] && echo "test_serve: ok" || echo "test_serve: FAILED ($fails)"
exit $((fails > 0))
