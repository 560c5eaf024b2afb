#!/usr/bin/env bash
# End-to-end crash and damage test of the landmark command.
#
#   test_crash.sh LANDMARK
#
# 1. kill -9 `landmark demo --dir D` at random moments (and sometimes its resume too): after
#    each kill `landmark verify D` reports ok (committed data intact, no partial block,
#    indices covering exactly the stored blocks) and resuming the demo reaches the data
#    digest and Flat probe digest of an uninterrupted run;
# 2. the same for kills during `landmark truncate` and `landmark reindex`;
# 3. damaged data files (zeroed B-tree pages, truncated, empty, foreign bytes, lock files
#    only): no command dies by a signal; verify reports the damage;
# 4. the command line: usage errors exit 2, failures 1, each with one line on stderr; the
#    demo removes its temporary directory.
#
# Environment: LMK_CRASH_ITERS (kill iterations, default 3), LMK_CRASH_TOKENS (default 20k),
# LMK_SEED (seed of the kill delays, printed), LMK_TEST_TMP (temporary space).
# Needs only bash, coreutils, od and awk.
set -u
L=${1:?usage: test_crash.sh LANDMARK}
ITERS=${LMK_CRASH_ITERS:-3}
N=${LMK_CRASH_TOKENS:-20k}
SEED=${LMK_SEED:-4242}
ROOT=${LMK_TEST_TMP:-/tmp}/crash-$$
RANDOM=$SEED
fails=0
t_start=$SECONDS
echo "test_crash: seed $SEED (LMK_SEED=$SEED to replay), $ITERS iterations, $N tokens"
rm -rf "$ROOT"
mkdir -p "$ROOT" || exit 1

fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}

. "$(dirname "$0")/fault_lib.sh"

DEMO=(demo --tokens "$N" --index Flat --probes 2 --json)

# resume DIR WHAT: continue the demo to N; data digest and probe digest as the reference
resume_check() {
  local out dig pd
  out=$("$L" "${DEMO[@]}" --dir "$1" 2>"$1.err")
  pd=$(json probe_digest <<<"$out")
  dig=$("$L" info "$1" --json 2>>"$1.err" | json data_digest)
  if [ "$pd" != "$REF_PROBE" ] || [ "$dig" != "$REF_DIGEST" ]; then
    fail "$2: resumed to probe digest '$pd' data digest '$dig', want '$REF_PROBE' '$REF_DIGEST' ($(head -c 400 "$1.err"))"
    return 1
  fi
  verify_ok "$1" "$2 (after resuming)"
}

# no_session_yet DIR: the kill came before the session's configuration was committed
no_session_yet() {
  "$L" verify "$1" --json 2>&1 | grep -q 'holds no landmark session\|no such store directory\|data.mdb missing'
}

# ---- reference: an uninterrupted run ----
t0=$(now)
out=$("$L" "${DEMO[@]}" --dir "$ROOT/ref" 2>"$ROOT/ref.err") || { echo "reference run failed: $(cat "$ROOT/ref.err")"; exit 1; }
t_ref=$(elapsed "$t0")
REF_PROBE=$(json probe_digest <<<"$out")
rate=$(json ingest_tokens_per_s <<<"$out")
info=$("$L" info "$ROOT/ref" --json)
REF_DIGEST=$(json data_digest <<<"$info")
REF_TOKENS=$(json tokens <<<"$info")
[ -n "$REF_PROBE" ] && [ -n "$REF_DIGEST" ] && [ -n "$rate" ] || { echo "cannot parse: $out $info"; exit 1; }
# kills land anywhere from startup to a bit past the end of the ingest
span=$(awk -v n="$REF_TOKENS" -v r="$rate" 'BEGIN { printf "%.3f", 0.05 + 1.3 * n / r }')
echo "reference: $REF_TOKENS tokens in $t_ref s (ingest $rate tokens/s), data digest $REF_DIGEST, probe digest $REF_PROBE; kill delays in [0, $span) s"
verify_ok "$ROOT/ref" "reference"

# ---- 1. kill -9 during demo ingest ----
kills=0 mid=0 before=0
for ((i = 0; i < ITERS; i++)); do
  D=$ROOT/kill-$i
  rm -rf "$D"
  nk=$((1 + RANDOM % 2)) # one kill, or a kill of the resume as well
  for ((k = 0; k < nk; k++)); do
    delay=$(rand_delay "$span")
    "$L" "${DEMO[@]}" --dir "$D" >/dev/null 2>"$D.err" &
    pid=$!
    sleep "$delay"
    kill -9 $pid 2>/dev/null
    { wait $pid; } 2>/dev/null
    st=$?
    kills=$((kills + 1))
    if [ $st -ne 137 ] && [ $st -ne 0 ]; then
      fail "kill $i.$k: demo ended with status $st before the kill: $(head -c 300 "$D.err")"
      continue
    fi
    if [ $st -eq 137 ] && no_session_yet "$D"; then
      before=$((before + 1))
      continue
    fi
    tok=$("$L" info "$D" --json 2>/dev/null | json tokens)
    [ "$st" -eq 137 ] && [ "${tok:-0}" -lt "$REF_TOKENS" ] && mid=$((mid + 1))
    verify_ok "$D" "kill $i.$k after ${delay}s (status $st, $tok tokens kept)" ingest
  done
  resume_check "$D" "kill $i"
  rm -rf "$D" "$D.err"
done
echo "demo: $((SECONDS - t_start)) s so far"
echo "demo: $kills kills ($mid during ingest, $before before the session existed): verify ok and resumed to the reference digests"

# ---- 2. kill -9 during truncate and reindex ----
M=$((REF_TOKENS / 2 + 37)) # mid-block
"$L" demo --tokens "$M" --index Flat --probes 1 --json --dir "$ROOT/refm" >/dev/null 2>&1
REFM_DIGEST=$("$L" info "$ROOT/refm" --json | json data_digest)
rm -rf "$ROOT/refm"
copy_ref() { rm -rf "$1"; mkdir -p "$1" && cp "$ROOT"/ref/data.mdb "$ROOT"/ref/*.lmki "$1"/; }
T=$ROOT/trunc
copy_ref "$T"
t0=$(now)
"$L" truncate "$T" --tokens "$M" || fail "truncate failed"
t_trunc=$(elapsed "$t0")
[ "$("$L" info "$T" --json | json data_digest)" = "$REFM_DIGEST" ] || fail "truncate to $M differs from a session ingested to $M"
t_kill=0
for ((i = 0; i < (ITERS < 3 ? 3 : ITERS); i++)); do
  copy_ref "$T"
  delay=$(rand_delay "$t_trunc")
  "$L" truncate "$T" --tokens "$M" 2>"$T.err" &
  pid=$!
  sleep "$delay"
  kill -9 $pid 2>/dev/null
  { wait $pid; } 2>/dev/null
  st=$?
  [ $st -eq 137 ] && t_kill=$((t_kill + 1))
  verify_ok "$T" "truncate killed after ${delay}s (status $st)"
  "$L" truncate "$T" --tokens "$M" 2>"$T.err" || fail "truncate after a killed truncate: $(cat "$T.err")"
  dig=$("$L" info "$T" --json | json data_digest)
  [ "$dig" = "$REFM_DIGEST" ] || fail "truncate killed after ${delay}s, then completed: digest $dig, want $REFM_DIGEST"
done
resume_check "$T" "truncated then resumed"
echo "truncate: $t_kill of $i runs killed (a run takes $t_trunc s): verify ok, completing it gives the digest of a $M-token ingest"

R=$ROOT/reindex
copy_ref "$R"
t0=$(now)
"$L" reindex "$R" --index HNSW32 || fail "reindex failed"
t_reidx=$(elapsed "$t0")
r_kill=0
for ((i = 0; i < (ITERS < 2 ? 2 : ITERS); i++)); do
  copy_ref "$R"
  delay=$(rand_delay "$t_reidx")
  "$L" reindex "$R" --index HNSW32 2>"$R.err" &
  pid=$!
  sleep "$delay"
  kill -9 $pid 2>/dev/null
  { wait $pid; } 2>/dev/null
  st=$?
  [ $st -eq 137 ] && r_kill=$((r_kill + 1))
  verify_ok "$R" "reindex killed after ${delay}s (status $st)"
  dig=$("$L" info "$R" --json | json data_digest)
  [ "$dig" = "$REF_DIGEST" ] || fail "reindex killed after ${delay}s changed the data: $dig"
  "$L" reindex "$R" --index Flat 2>"$R.err" || fail "reindex after a killed reindex: $(cat "$R.err")"
done
resume_check "$R" "reindexed back to Flat"
echo "reindex: $r_kill of $i runs killed (a run takes $t_reidx s): verify ok, data unchanged, back to Flat answers as before"
rm -rf "$T" "$R" "$T.err" "$R.err"
echo "truncate, reindex: $((SECONDS - t_start)) s so far"

# ---- 3. damaged data files: no command dies by a signal ----
S=$ROOT/small
"$L" demo --tokens 4k --index Flat --probes 1 --json --dir "$S" >/dev/null 2>&1 || fail "small session"
psz=4096
# B-tree pages (header pgno = its own number, flags branch or leaf): zeroing one of them is
# what crashes LMDB; overflow pages (block values) only fail checksums
pages=$(od -An -v -t u2 -w$psz "$S/data.mdb" |
  awk '{ pg = NR - 1; if ($1 + $2 * 65536 == pg && ($6 == 1 || $6 == 2)) print pg }')
npages=$(($(stat -c %s "$S/data.mdb") / psz))
pick=$(awk -v seed="$SEED" '{ a[NR] = $1 } END { srand(seed); n = NR < 4 ? NR : 4;
  for (i = 1; i <= n; i++) { j = int(1 + rand() * NR); print a[j] } }' <<<"$pages" | sort -un)
C=$ROOT/dmg
signals=0 cases=0 reported=0
run_all() { # WHAT: every command on a fresh damaged copy (made by the caller into $C.src)
  local what=$1 c out st
  for c in "verify $C --json" "info $C --json" "fork $C $C-fork" "truncate $C --tokens 100" \
    "reindex $C --index Flat" "demo --dir $C --tokens 4k --index Flat --probes 1 --json"; do
    rm -rf "$C" "$C-fork"
    cp -r "$C.src" "$C"
    out=$(timeout 120 "$L" $c 2>&1)
    st=$?
    cases=$((cases + 1))
    if [ $st -ge 124 ]; then
      signals=$((signals + 1))
      fail "$what: 'landmark ${c%% *}' ended with status $st: $(head -c 300 <<<"$out")"
    fi
    if [ "${c%% *}" = verify ]; then
      if grep -q '"ok": false' <<<"$out"; then
        reported=$((reported + 1))
      elif [ "$2" = damaged ]; then
        fail "$what: verify did not report the damage: $(head -c 300 <<<"$out")"
      fi
    fi
  done
}
for pg in $pick; do
  rm -rf "$C.src"
  cp -r "$S" "$C.src"
  dd if=/dev/zero of="$C.src/data.mdb" bs=$psz seek="$pg" count=1 conv=notrunc 2>/dev/null
  run_all "B-tree page $pg of $npages zeroed" maybe
done
for cut in 0 $((psz * 2 + 1)) $((npages * psz / 2)); do
  rm -rf "$C.src"
  cp -r "$S" "$C.src"
  truncate -s "$cut" "$C.src/data.mdb"
  run_all "data.mdb cut to $cut bytes" damaged
done
rm -rf "$C.src"
cp -r "$S" "$C.src"
head -c $((npages * psz)) /dev/urandom >"$C.src/data.mdb"
run_all "random bytes in place of data.mdb" damaged
rm -rf "$C.src"
mkdir -p "$C.src"
touch "$C.src/landmark.lock" "$C.src/lock.mdb"
run_all "lock files only" damaged
rm -rf "$C" "$C.src" "$C-fork" "$S"
echo "damaged data files: $cases command runs, $signals ended by a signal or a timeout; verify reported $reported damaged copies"

# ---- 4. the command line: exit statuses, one-line errors, no temporary directory left ----
# status WANT ARGS...: landmark ARGS exits WANT; a failure (1, 2) prints one line on stderr
status() {
  local want=$1 out st
  shift
  out=$("$L" "$@" 2>&1 >/dev/null)
  st=$?
  if [ $st -ne "$want" ]; then
    fail "'landmark $*' exited $st, want $want: $(head -c 300 <<<"$out")"
  elif [ "$want" -ne 0 ] && [ "$(wc -l <<<"$out")" -ne 1 ]; then
    fail "'landmark $*' printed $(wc -l <<<"$out") lines on stderr, want one: $(head -c 300 <<<"$out")"
  fi
}
for c in demo info verify truncate fork reindex; do
  status 0 "$c" --help
  status 2 "$c" --no-such-option
done
status 2 demo --tokens x
status 2 demo --tokens 0
status 2 demo --top-k -1
status 2 demo --mode sideways
status 2 demo --json=1
status 2 demo --threads
status 2 demo --nprobe 0
status 2 demo --ef-search 99999999
status 2 info
status 2 info a b
status 2 truncate "$ROOT/none"
status 2 truncate "$ROOT/none" --tokens x
status 2 reindex "$ROOT/none"
status 2 fork "$ROOT/none"
status 1 info "$ROOT/none"
status 1 truncate "$ROOT/none" --tokens 1
status 1 fork "$ROOT/none" "$ROOT/none2"
status 1 reindex "$ROOT/none" --index Flat
mkdir -p "$ROOT/tmpdir"
TMPDIR=$ROOT/tmpdir "$L" demo --tokens 1k --probes 1 --json >/dev/null 2>"$ROOT/tmpdir.err" ||
  fail "demo in a temporary directory: $(head -c 300 "$ROOT/tmpdir.err")"
left=$(ls -A "$ROOT/tmpdir")
[ -z "$left" ] || fail "demo left its temporary directory behind: $left"
echo "command line: exit statuses and one-line errors as documented"

rm -rf "$ROOT"
echo "test_crash: $((SECONDS - t_start)) s"
if [ $fails -gt 0 ]; then
  echo "test_crash: FAILED ($fails failures)"
  exit 1
fi
echo "test_crash: ok"
