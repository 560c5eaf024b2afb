#!/usr/bin/env bash
# Fault campaign: the landmark command run as a user would, under the faults a user's
# machine produces, within a time budget.
#
#   fault_campaign.sh LANDMARK
#
# 1. index families (Flat, HNSW, IVF<n>,Flat/SQ8/PQ, SQ4/SQ8/SQfp16, PQ, PCA, IVF_HNSW, +l2;
#    refused forms such as NSG) at 0, 1, k landmarks, each training threshold and a few
#    thousand: created by `demo --index`, rebuilt by `reindex`, searched, truncated across
#    the threshold and grown back (the data digest of the uninterrupted ingest), the
#    reindex killed at a random moment, every index file damaged (truncated, zeroed,
#    foreign bytes: rebuilt, verify ok) and data.mdb damaged (truncated, a zeroed B-tree
#    page, foreign bytes: every command exits 0 or 1 with one line on stderr);
# 2. lock files deleted while a writer runs: a second writer is refused, nothing is lost;
# 3. a full disk and read-only media (a tmpfs in a private mount namespace, `unshare -m`;
#    counted as skipped, with the reason, where mounting is not permitted);
# 4. until the budget is spent, kill -9 at random moments of a randomly chosen writing
#    command: demo (with `verify` and `info` running beside it: never a false damage
#    report), run (prefill and generation; the shared model, else a tiny random one),
#    truncate, fork, reindex. After each kill `verify` is ok and the re-run reaches the
#    data digest (and text) of the uninterrupted run; a killed fork's retry succeeds.
#
# A crash is any command ending by a signal we did not send (exit status > 128) or
# hanging; the last line counts everything, and the test fails on any crash or failure.
#
# Environment: LMK_FAULT_SECONDS (budget, default 150; the fixed parts run even past it),
# LMK_FAULT_FULL=1 (every spec at every size, not a seeded sample), LMK_SEED (printed;
# replays the same cases and kill delays), LMK_TEST_TMP, LMK_SHARED (models/, data/),
# LMK_TINY_MODEL_WRITER (tests/serve_tiny_model, used without the shared model).
set -u
L=${1:?usage: fault_campaign.sh LANDMARK}
BUDGET=${LMK_FAULT_SECONDS:-150}
FULL=${LMK_FAULT_FULL:-0}
SEED=${LMK_SEED:-4242}
ROOT=${LMK_TEST_TMP:-/tmp}/fault-$$
SHARED=${LMK_SHARED:-$(dirname "$0")/../../shared}
RANDOM=$SEED
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
ulimit -c 0
t_start=$SECONDS
. "$(dirname "$0")/fault_lib.sh"

kills=0 resumes=0 damaged=0 refused=0 crashes=0 fails=0 skipped=0 reads=0 early=0
# cpu: user + system seconds of every command so far (the wall time on a loaded machine says
# little)
# (cpu_mark in the main shell: `times` in a command substitution sees the subshell only)
cpu_mark() { times >"$ROOT/times"; }
cpu() { awk 'NR == 2 { gsub(/[ms]/, " "); printf "%.0f", $1 * 60 + $2 + $3 * 60 + $4 }' "$ROOT/times"; }
fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}
echo "fault campaign: seed $SEED (LMK_SEED=$SEED replays it), budget $BUDGET s, full=$FULL"
rm -rf "$ROOT"
mkdir -p "$ROOT" || exit 1

# lm WHAT ARGS...: runs landmark ARGS (stdout in $ROOT/o, stderr in $ROOT/e, status in LM_ST),
# counts a crash when it ends by a signal or hangs; returns its status
lm() {
  local what=$1
  shift
  timeout -s KILL 300 "$L" "$@" >"$ROOT/o" 2>"$ROOT/e"
  LM_ST=$?
  if [ $LM_ST -gt 128 ]; then
    crashes=$((crashes + 1))
    fail "CRASH: $what: 'landmark $*' ended with status $LM_ST ($([ $LM_ST = 137 ] && echo 'killed: hung for 300 s' || echo "signal $((LM_ST - 128))")): $(head -c 300 "$ROOT/e")"
  fi
  return $LM_ST
}
# one_line WHAT: the last lm failed cleanly: status 1 and one line on stderr
one_line() {
  local n
  n=$(wc -l <"$ROOT/e")
  if [ "$LM_ST" -ne 1 ] || [ "$n" -ne 1 ]; then
    [ "$LM_ST" -le 128 ] && fail "$1: status $LM_ST with $n lines on stderr, want 1 and one line: $(head -c 300 "$ROOT/e")"
    return 1
  fi
}
# must WHAT ARGS...: landmark ARGS succeeds
must() {
  local what=$1
  shift
  lm "$what" "$@" || { [ $LM_ST -le 128 ] && fail "$what: 'landmark $*' exited $LM_ST: $(head -c 300 "$ROOT/e")"; return 1; }
}
# killed WHAT: accounts the status of the last kill_after (a crash when a signal other than
# ours ended it, a failure when it exited non-zero)
killed() {
  case $KILL_ST in
  137) kills=$((kills + 1)) ;;
  0) early=$((early + 1)) ;;
  *)
    if [ "$KILL_ST" -gt 128 ]; then crashes=$((crashes + 1)); fail "CRASH: $1 ended with status $KILL_ST before the kill"
    else fail "$1 exited $KILL_ST before the kill"; fi
    return 1
    ;;
  esac
}
fork_dir() { rm -rf "$2" && must "fork $1" fork "$1" "$2"; }

# ---- references ----
N=40000
DEMO=(demo --index Flat --probes 1 --json)
must "reference demo" "${DEMO[@]}" --tokens $N --dir "$ROOT/ref" || exit 1
REF_DIGEST=$(data_digest "$ROOT/ref")
rate=$(json ingest_tokens_per_s <"$ROOT/o")
span=$(awk -v n=$N -v r="$rate" 'BEGIN { printf "%.3f", 0.05 + 1.3 * n / r }')
echo "reference: demo of $N tokens at $rate tokens/s, data digest $REF_DIGEST; kills in [0, $span) s"

# ---- 1. index families ----
# spec and the landmark count at which it trains (0: no training)
SPECS=("Flat 0" "Flat+l2 0" "HNSW16 0" "HNSW8,SQ8 1024" "SQfp16 0" "SQ8 1024" "SQ4 1024"
  "PQ8x4 624" "PCA32,Flat 1024" "IVF4,Flat 156" "IVF4,SQ8 1024" "IVF16,PQ8x4 624"
  "IVF8_HNSW4,Flat 312")
REFUSED=("NSG32" "HNSW0" "IVF0,Flat" "IVF4,Nope" "HNSW99999999")
BIG=2600
SIZES=(0 1 8 156 312 624 1024 $BIG)
# tokens holding exactly n sealed blocks (a block seals when the next token arrives)
tok_for() { echo $(($1 * 64 + 1 + $1 % 37)); }
declare -A SDIG # data digest at each size
# a Flat session grown through every size (each stage a resumed demo); forks keep the stages
B=$ROOT/base
t0=$SECONDS
for n in "${SIZES[@]}"; do
  must "grow to $n landmarks" "${DEMO[@]}" --tokens "$(tok_for "$n")" --dir "$B" || exit 1
  got=$(blocks_of "$B")
  [ "$got" = "$n" ] || fail "a session of $(tok_for "$n") tokens holds $got blocks, want $n"
  SDIG[$n]=$(data_digest "$B")
  [ "$n" != $BIG ] && fork_dir "$B" "$ROOT/size-$n"
done
mv "$B" "$ROOT/size-$BIG"
cpu_mark
echo "sessions at ${SIZES[*]} landmarks: $((SECONDS - t0)) s (cpu so far $(cpu) s)"

# damage_data DIR WHAT: damaged copies of data.mdb; every command exits 0 or 1 with one line
damage_data() {
  local src=$1 what=$2 kind c C=$ROOT/dmg st pages pg
  for kind in truncated zeroed foreign; do
    rm -rf "$C.src" && cp -r "$src" "$C.src"
    case $kind in
    truncated) truncate -s $(( $(stat -c %s "$C.src/data.mdb") * (RANDOM % 100) / 100 )) "$C.src/data.mdb" ;;
    zeroed)
      # a B-tree page (its header's page number is its own, flags branch or leaf)
      pages=$(head -c 4194304 "$C.src/data.mdb" | od -An -v -t u2 -w4096 |
        awk '{ pg = NR - 1; if ($1 + $2 * 65536 == pg && ($6 == 1 || $6 == 2)) print pg }')
      pg=$(awk -v r=$RANDOM '{ a[NR] = $1 } END { if (NR) print a[1 + r % NR] }' <<<"$pages")
      dd if=/dev/zero of="$C.src/data.mdb" bs=4096 seek="${pg:-2}" count=1 conv=notrunc 2>/dev/null ;;
    foreign) head -c "$(stat -c %s "$C.src/data.mdb")" /dev/urandom >"$C.src/data.mdb" ;;
    esac
    for c in info verify fork truncate reindex demo; do
      rm -rf "$C" "$C-fork" && cp -r "$C.src" "$C"
      case $c in
      info) lm "$what, $kind data.mdb" info "$C" ;;
      verify) lm "$what, $kind data.mdb" verify "$C" ;;
      fork) lm "$what, $kind data.mdb" fork "$C" "$C-fork" ;;
      truncate) lm "$what, $kind data.mdb" truncate "$C" --tokens 100 ;;
      reindex) lm "$what, $kind data.mdb" reindex "$C" --index Flat ;;
      demo) lm "$what, $kind data.mdb" "${DEMO[@]}" --tokens 5000 --dir "$C" ;;
      esac
      st=$LM_ST
      [ $st -gt 128 ] && continue
      if [ $st -eq 0 ]; then
        # a zeroed page LMDB never reads (a free page), a cut behind the last used page:
        # nothing to refuse; foreign bytes never pass
        [ $kind = foreign ] && fail "$what, $kind data.mdb: 'landmark $c' succeeded"
        continue
      elif [ $c = verify ]; then
        [ $st -eq 1 ] && grep -q DAMAGED "$ROOT/o" ||
          { fail "$what, $kind data.mdb: verify exited $st: $(head -c 300 "$ROOT/o")"; continue; }
      else
        one_line "$what, $kind data.mdb: landmark $c" || continue
      fi
      damaged=$((damaged + 1))
    done
  done
  rm -rf "$C" "$C.src" "$C-fork"
}

# damage_index DIR SPEC WHAT: a damaged index file is rebuilt from LMDB: commands succeed,
# verify ok (one damage kind per call, seeded; all three with LMK_FAULT_FULL=1)
damage_index() {
  local dir=$1 spec=$2 what=$3 kind f C=$ROOT/dmgi sz kinds=(truncated zeroed foreign)
  [ "$FULL" = 1 ] || kinds=("${kinds[RANDOM % 3]}")
  for kind in "${kinds[@]}"; do
    fork_dir "$dir" "$C" || return
    f=$C/index-L$((RANDOM % 2))-H$((RANDOM % 2)).lmki
    sz=$(stat -c %s "$f" 2>/dev/null) || { rm -f "$f"; sz=1; }
    case $kind in
    truncated) truncate -s $((sz * (RANDOM % 100) / 100)) "$f" ;;
    zeroed) dd if=/dev/zero of="$f" bs=1 seek=$((RANDOM % sz)) count=$((1 + RANDOM % 4096)) conv=notrunc 2>/dev/null ;;
    foreign) head -c "$sz" /dev/urandom >"$f" ;;
    esac
    lm "$what, $kind index file" info "$C" || { fail "$what, $kind index file: info exited $LM_ST: $(head -c 300 "$ROOT/e")"; continue; }
    if [ "$FULL" = 1 ]; then
      must "$what, $kind index file: search" "${DEMO[@]/Flat/$spec}" --tokens "$(tokens_of "$C")" --dir "$C" || continue
    fi
    verify_ok "$C" "$what, $kind index file" && damaged=$((damaged + 1))
  done
  rm -rf "$C"
}

# family SPEC THRESHOLD SIZE: create (or reindex), kill a reindex, reindex, search,
# truncate (below the training threshold) and grow back, damage an index file
family() {
  local spec=$1 thr=$2 n=$3 S=$ROOT/fam tok dig what="$1 at $3 landmarks" sd=("${DEMO[@]/Flat/$1}")
  tok=$(tok_for "$n")
  echo "  $what"
  rm -rf "$S"
  # created by an ingest with the spec (up to 8 landmarks; LMK_FAULT_FULL=1: up to 1024),
  # else a Flat session reindexed
  if [ "$n" -le 8 ] || { [ "$FULL" = 1 ] && [ "$n" -le 1024 ]; }; then
    must "$what: create" "${sd[@]}" --tokens "$tok" --dir "$S" || return
    dig=$(data_digest "$S")
    [ "$dig" = "${SDIG[$n]}" ] || fail "$what: created with data digest $dig, want ${SDIG[$n]}"
  else
    fork_dir "$ROOT/size-$n" "$S" && must "$what: reindex" reindex "$S" --index "$spec" || return
  fi
  # a reindex killed at a random moment leaves the data and a working session
  local to=Flat
  [ "$spec" = Flat ] && to=HNSW16
  local t1
  t1=$(now)
  kill_after "$(rand_delay "$REIDX_SPAN")" "$S.o" "$S.e" "$L" reindex "$S" --index $to
  killed "$what: reindex to $to" || true
  # the next kill lands within the time a whole reindex took
  [ "$KILL_ST" = 0 ] && REIDX_SPAN=$(elapsed "$t1")
  verify_ok "$S" "$what: reindex to $to killed"
  [ "$(data_digest "$S")" = "${SDIG[$n]}" ] || fail "$what: a killed reindex changed the data"
  must "$what: reindex after a killed one" reindex "$S" --index "$spec" || return
  grep -q "\"index_spec\": \"$spec\"" <("$L" info "$S" --json) || fail "$what: info shows another spec"
  # (growing back below searches with the spec; an empty session is searched here)
  [ "$n" = 0 ] && must "$what: search" "${sd[@]}" --tokens "$tok" --dir "$S"
  # truncate below the threshold (or by half), grow back to the same data
  local cut=$((n / 2))
  [ "$thr" -gt 0 ] && [ "$n" -ge "$thr" ] && cut=$((thr - 1))
  if [ "$n" -gt 0 ]; then
    must "$what: truncate to $cut" truncate "$S" --tokens "$(tok_for $cut)"
    verify_ok "$S" "$what: truncated to $cut"
    must "$what: grown back" "${sd[@]}" --tokens "$tok" --dir "$S" &&
      { [ "$(data_digest "$S")" = "${SDIG[$n]}" ] && resumes=$((resumes + 1)) ||
        fail "$what: truncated and grown back to digest $(data_digest "$S"), want ${SDIG[$n]}"; }
  fi
  damage_index "$S" "$spec" "$what"
  rm -rf "$S" "$S.o" "$S.e"
}

t0=$SECONDS
nfam=0
REIDX_SPAN=0.3
for sp in "${SPECS[@]}"; do
  spec=${sp% *} thr=${sp##* }
  if [ "$FULL" = 1 ]; then
    sizes=("${SIZES[@]}")
  else
    # a seeded sample: one small size, the training threshold, sometimes the largest
    sizes=($((RANDOM % 3 == 0 ? 0 : (RANDOM % 2 ? 1 : 8))))
    [ "$thr" -gt 0 ] && sizes+=("$thr")
    [ $((RANDOM % 4)) = 0 ] && sizes+=($BIG)
  fi
  for n in "${sizes[@]}"; do
    family "$spec" "$thr" "$n"
    nfam=$((nfam + 1))
  done
done
for spec in "${REFUSED[@]}"; do
  lm "refused spec '$spec'" "${DEMO[@]}" --index "$spec" --tokens 1000 --dir "$ROOT/refused"
  one_line "demo --index '$spec'"
  fork_dir "$ROOT/size-8" "$ROOT/refused" && lm "refused spec '$spec'" reindex "$ROOT/refused" --index "$spec"
  one_line "reindex --index '$spec'"
  verify_ok "$ROOT/refused" "after a refused reindex to '$spec'"
  rm -rf "$ROOT/refused"
done
damage_data "$ROOT/size-8" "8 landmarks, Flat"
fork_dir "$ROOT/size-156" "$ROOT/d156" && must "" reindex "$ROOT/d156" --index IVF4,Flat &&
  damage_data "$ROOT/d156" "156 landmarks, IVF4,Flat (trained)"
rm -rf "$ROOT/d156"
cpu_mark
echo "index families: $nfam spec and size cases, ${#REFUSED[@]} refused specs: $((SECONDS - t0)) s (cpu so far $(cpu) s)"

# ---- 2. lock files deleted while a writer runs ----
t0=$SECONDS
W=$ROOT/lockdel
fork_dir "$ROOT/size-8" "$W"
WT=150000
"$L" "${DEMO[@]}" --tokens $WT --dir "$W" >"$W.o" 2>"$W.e" &
wpid=$!
for ((i = 0; i < 100; i++)); do [ "$(blocks_of "$W")" -gt 100 ] 2>/dev/null && break; sleep 0.05; done
rm -f "$W/landmark.lock" "$W/lock.mdb"
# The writer is stopped (it keeps its locks) while the others try, so on a fast machine it
# cannot finish between a liveness check and a try and let a later writer in legitimately.
kill -STOP $wpid 2>/dev/null
for c in "truncate $W --tokens 100" "reindex $W --index HNSW16" "demo --dir $W --tokens 300000 --probes 1"; do
  if ! kill -0 $wpid 2>/dev/null; then
    echo "NOTICE: the writer ended before 'landmark ${c%% *}' could be tried beside it"
    break
  fi
  # shellcheck disable=SC2086
  lm "lock files deleted, writer running" $c
  one_line "second writer ($c) beside a writer whose lock files were deleted" &&
    { grep -q 'in use' "$ROOT/e" && refused=$((refused + 1)) || fail "second writer ($c): $(cat "$ROOT/e")"; }
done
lm "lock files deleted, reader" info "$W"
kill -CONT $wpid 2>/dev/null
wait $wpid
st=$?
[ $st = 0 ] || fail "the writer whose lock files were deleted exited $st: $(head -c 300 "$W.e")"
verify_ok "$W" "after the writer whose lock files were deleted"
[ "$(tokens_of "$W")" = $WT ] || fail "writer with deleted lock files: $(tokens_of "$W") tokens, want $WT"
rm -rf "$W" "$W.o" "$W.e"
cpu_mark
echo "lock files deleted under a writer: $((SECONDS - t0)) s (cpu so far $(cpu) s)"

# ---- 3. full disk, read-only media (private mount namespace) ----
t0=$SECONDS
MNT=$ROOT/mnt
mkdir -p "$MNT"
# the mount case runs in a child shell inside the namespace; it reports counts in a file
cat >"$ROOT/ns.sh" <<'EOS'
set -u
L=$1 ROOT=$2 MNT=$3
. "$4"
fails=0 crashes=0 damaged=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
out() { echo "fails=$fails crashes=$crashes damaged=$damaged" >"$ROOT/ns.res"; }
trap out EXIT
why=$( { mount --make-rprivate / && mount -t tmpfs -o size=16m tmpfs "$MNT"; } 2>&1) ||
  { echo "skipped=1" >"$ROOT/ns.skip"; echo "$why" >>"$ROOT/ns.skip"; trap - EXIT; exit 0; }
run() { # WHAT ARGS: status in ST, a crash counted
  local what=$1; shift
  timeout -s KILL 300 "$L" "$@" >"$ROOT/o" 2>"$ROOT/e"; ST=$?
  [ $ST -gt 128 ] && { crashes=$((crashes + 1)); fail "CRASH: $what: landmark $* status $ST: $(head -c 300 "$ROOT/e")"; }
  return 0
}
clean() { # WHAT: status 1 with one line on stderr
  [ $ST -gt 128 ] && return 1
  [ $ST = 1 ] && [ "$(wc -l <"$ROOT/e")" = 1 ] || { fail "$1: status $ST: $(head -c 300 "$ROOT/e")"; return 1; }
}
# full disk: a new session, a growing one, truncate, reindex, fork into it
run "full disk" demo --index Flat --probes 1 --json --tokens 40000 --dir "$MNT/s"
clean "demo on a full disk" && { grep -q 'No space left on device' "$ROOT/e" || fail "demo on a full disk: $(cat "$ROOT/e")"; }
[ -e "$MNT/s/data.mdb" ] && { run "full disk verify" verify "$MNT/s"
  [ $ST = 0 ] || [ $ST = 1 ] && ! grep -q DAMAGED "$ROOT/o" || fail "verify after a full disk: $(cat "$ROOT/o" "$ROOT/e")"; }
cp -r "$MNT/s" "$ROOT/fullcopy" 2>/dev/null
rm -rf "$MNT"/*
cp -r "$ROOT/size-8" "$MNT/s8" && rm -f "$MNT/s8/lock.mdb" "$MNT/s8/landmark.lock"
head -c 20000000 /dev/zero >"$MNT/fill" 2>/dev/null
run "full disk" info "$MNT/s8"; [ $ST = 0 ] || fail "info on a full disk: $(cat "$ROOT/e")"
run "full disk" verify "$MNT/s8"; [ $ST = 0 ] || fail "verify on a full disk: $(cat "$ROOT/o" "$ROOT/e")"
run "full disk" fork "$MNT/s8" "$ROOT/forked"; [ $ST = 0 ] || fail "fork from a full disk: $(cat "$ROOT/e")"
run "full disk" reindex "$MNT/s8" --index HNSW16; [ $ST = 0 ] || clean "reindex on a full disk"
run "full disk" truncate "$MNT/s8" --tokens 100; [ $ST = 0 ] || clean "truncate on a full disk"
run "full disk" demo --index Flat --probes 1 --json --tokens 40000 --dir "$MNT/s8"; clean "demo growing a session on a full disk"
run "full disk" fork "$ROOT/forked" "$MNT/f2"; clean "fork onto a full disk"
ls -d "$MNT"/f2* >/dev/null 2>&1 && fail "a failed fork onto a full disk left $(ls -d "$MNT"/f2*)"
rm -f "$MNT/fill"
run "after a full disk" verify "$MNT/s8"; [ $ST = 0 ] || fail "verify after the disk was full: $(cat "$ROOT/o" "$ROOT/e")"
# read-only media
rm -rf "$MNT"/*
cp -r "$ROOT/size-8" "$MNT/ro"
if mount -o remount,ro "$MNT" 2>"$ROOT/e"; then
  run "read-only" info "$MNT/ro"; [ $ST = 0 ] || fail "info on read-only media: $(cat "$ROOT/e")"
  run "read-only" verify "$MNT/ro"; [ $ST = 0 ] || fail "verify on read-only media: $(cat "$ROOT/o" "$ROOT/e")"
  rm -rf "$ROOT/roforked"
  run "read-only" fork "$MNT/ro" "$ROOT/roforked"; [ $ST = 0 ] || fail "fork from read-only media: $(cat "$ROOT/e")"
  for c in "truncate $MNT/ro --tokens 100" "reindex $MNT/ro --index HNSW16" "demo --dir $MNT/ro --tokens 20000 --probes 1" \
    "fork $ROOT/size-8 $MNT/f3" "demo --dir $MNT/new --tokens 1000 --probes 1"; do
    run "read-only" $c; clean "landmark $c on read-only media"
  done
else
  echo "read-only media: SKIPPED (cannot remount read-only: $(cat "$ROOT/e"))"
  echo "skipped=1" >"$ROOT/ns.skip"
fi
EOS
rm -f "$ROOT/ns.res" "$ROOT/ns.skip"
if ! command -v unshare >/dev/null; then
  echo "full disk, read-only media: SKIPPED (no unshare command)"
  skipped=$((skipped + 1))
else
  why=$(unshare -m bash "$ROOT/ns.sh" "$L" "$ROOT" "$MNT" "$(dirname "$0")/fault_lib.sh" 2>&1)
  st=$?
  [ -n "$why" ] && echo "$why"
  if [ -e "$ROOT/ns.skip" ] && [ ! -e "$ROOT/ns.res" ]; then
    echo "full disk, read-only media: SKIPPED (cannot mount a tmpfs: $(tail -n +2 "$ROOT/ns.skip"))"
    skipped=$((skipped + 1))
  elif [ ! -e "$ROOT/ns.res" ]; then
    echo "full disk, read-only media: SKIPPED (unshare -m failed with status $st: $why)"
    skipped=$((skipped + 1))
  else
    [ -e "$ROOT/ns.skip" ] && skipped=$((skipped + 1))
    eval "$(sed 's/\([a-z]*\)=\([0-9]*\)/ns_\1=\2/g' "$ROOT/ns.res")"
    fails=$((fails + ns_fails)) crashes=$((crashes + ns_crashes)) damaged=$((damaged + ns_damaged))
    # what a full disk left behind resumes to the reference outside it
    if [ -e "$ROOT/fullcopy/data.mdb" ]; then
      verify_ok "$ROOT/fullcopy" "a session left by a full disk"
      must "resume after a full disk" "${DEMO[@]}" --tokens $N --dir "$ROOT/fullcopy" &&
        { [ "$(data_digest "$ROOT/fullcopy")" = "$REF_DIGEST" ] && resumes=$((resumes + 1)) ||
          fail "resumed after a full disk to digest $(data_digest "$ROOT/fullcopy"), want $REF_DIGEST"; }
    fi
    [ -d "$ROOT/forked" ] && verify_ok "$ROOT/forked" "a fork from a full disk"
    [ -d "$ROOT/roforked" ] && verify_ok "$ROOT/roforked" "a fork from read-only media"
  fi
fi
rm -rf "$ROOT/fullcopy" "$ROOT/forked" "$ROOT/roforked"
cpu_mark
echo "full disk, read-only media: $((SECONDS - t0)) s (cpu so far $(cpu) s)"

# ---- 4. kill -9 at random moments of every writing command, until the budget is spent ----
# the model runs: the shared model, else a tiny random one
M=$SHARED/models/landmark-tiny-kjv-f32.gguf
DOC=$ROOT/doc.txt
if [ -r "$SHARED/data/kjv.txt" ]; then
  head -c 3000 "$SHARED/data/kjv.txt" >"$DOC"
  PROMPT=$(head -c 20000 "$SHARED/data/kjv.txt" | tail -c 400)
else
  seq 1 900 | tr '\n' ' ' >"$DOC"
  PROMPT=$(seq 900 1000 | tr '\n' ' ')
fi
if [ ! -r "$M" ]; then
  M=$ROOT/tiny.gguf
  if [ -n "${LMK_TINY_MODEL_WRITER:-}" ] && "$LMK_TINY_MODEL_WRITER" "$M" 7 >/dev/null 2>&1; then
    echo "NOTICE: shared model not found at $SHARED/models: a tiny random model is used"
  else
    echo "NOTICE: no shared model and no tiny model writer: run kills skipped"
    M=
    skipped=$((skipped + 1))
  fi
fi
RUN=(run --file "$DOC" --prompt "$PROMPT" --generate 48 --piece 256 --chunk 64 -t 2)
if [ -n "$M" ]; then
  t0=$(now)
  if must "reference run" "${RUN[@]}" --model "$M" --session "$ROOT/run-ref"; then
    RUN_SPAN=$(elapsed "$t0")
    RUN_DIGEST=$(data_digest "$ROOT/run-ref")
    RUN_TOKENS=$(tokens_of "$ROOT/run-ref")
    cp "$ROOT/o" "$ROOT/run-ref.out"
    must "document alone" run --model "$M" --session "$ROOT/run-doc" --file "$DOC" -t 2
    DOC_POS=$(tokens_of "$ROOT/run-doc")
    rm -rf "$ROOT/run-doc"
    echo "reference run: $RUN_SPAN s, data digest $RUN_DIGEST, document $DOC_POS positions"
  else
    M=
  fi
fi
# a larger session for fork and truncate kills
fork_dir "$ROOT/size-1024" "$ROOT/src"
SRC_DIGEST=$(data_digest "$ROOT/src")
t0=$(now); must "fork reference" fork "$ROOT/src" "$ROOT/fork-ref"; FORK_SPAN=$(elapsed "$t0")
TRUNC_TO=$(tok_for 156)
t0=$(now); must "truncate reference" truncate "$ROOT/fork-ref" --tokens "$TRUNC_TO"; TRUNC_SPAN=$(elapsed "$t0")
rm -rf "$ROOT/fork-ref"

# readers DIR STOP LOG: verify and info in a loop beside a writer until STOP exists
readers() {
  local dir=$1 stop=$2 log=$3 out st
  while [ ! -e "$stop" ]; do
    out=$(timeout -s KILL 120 "$L" verify "$dir" --json 2>&1)
    st=$?
    echo "verify $st $out" | tr '\n' ' ' >>"$log"
    echo >>"$log"
    out=$(timeout -s KILL 120 "$L" info "$dir" --json 2>&1)
    st=$?
    echo "info $st $out" | tr '\n' ' ' >>"$log"
    echo >>"$log"
  done
}
# read_log LOG WHAT: no reader crashed or reported damage that was not there
read_log() {
  local what=$1 line
  while read -r line; do
    [ -n "$line" ] || continue
    reads=$((reads + 1))
    set -- $line
    if [ "$2" -gt 128 ]; then
      crashes=$((crashes + 1)); fail "CRASH: $what: '$1' beside the writer ended with status $2: ${line:0:300}"
    elif [ "$2" != 0 ] && ! grep -q 'no such store directory\|data.mdb missing\|holds no landmark session\|in use\|was deleted' <<<"$line"; then
      fail "$what: '$1' beside the writer: ${line:0:400}"
    fi
  done <"$2"
}

demo_kill() {
  local D=$ROOT/kd st
  rm -rf "$D" "$D.stop" "$D.log"
  local spec=${SPECS[RANDOM % ${#SPECS[@]}]% *}
  local delay
  delay=$(rand_delay "$span")
  echo "  [$iter] demo --index $spec killed after $delay s, readers beside it"
  readers "$D" "$D.stop" "$D.log" &
  local rpid=$!
  kill_after "$delay" "$D.o" "$D.e" "$L" "${DEMO[@]/Flat/$spec}" --tokens $N --dir "$D"
  touch "$D.stop"
  wait $rpid
  read_log "demo --index $spec" "$D.log"
  killed "demo --index $spec" || return
  if [ -e "$D/data.mdb" ] && ! "$L" verify "$D" --json 2>&1 | grep -q 'holds no landmark session\|data.mdb missing'; then
    verify_ok "$D" "demo --index $spec killed after $delay s" ingest
  fi
  must "resume demo --index $spec" "${DEMO[@]/Flat/$spec}" --tokens $N --dir "$D" || return
  [ "$(data_digest "$D")" = "$REF_DIGEST" ] && resumes=$((resumes + 1)) ||
    fail "demo --index $spec killed after $delay s resumed to digest $(data_digest "$D"), want $REF_DIGEST"
  verify_ok "$D" "demo --index $spec resumed"
  rm -rf "$D" "$D".*
}

# run_kill [any|text]: a kill at a random moment of the run, or once text is streaming
# (random when not given)
run_kill() {
  local D=$ROOT/kr delay phase t aim=${1:-} pid n=0
  rm -rf "$D" "$D".*
  [ -n "$aim" ] || { [ $((RANDOM % 2)) = 0 ] && aim=any || aim=text; }
  if [ $aim = any ]; then delay=$(rand_delay "$RUN_SPAN"); else delay=$(rand_delay 0.4); fi
  "$L" "${RUN[@]}" --model "$M" --session "$D" >"$D.o" 2>"$D.e" &
  pid=$!
  local rpid=
  if [ $aim = text ]; then
    while kill -0 $pid 2>/dev/null && [ ! -s "$D.o" ] && [ $n -lt 3000 ]; do sleep 0.01; n=$((n + 1)); done
  else
    readers "$D" "$D.stop" "$D.log" &
    rpid=$!
  fi
  # one kill in four is a SIGINT: the run stops at the next piece, saying so, exit 1
  local sig=KILL
  [ $((RANDOM % 4)) = 0 ] && sig=INT
  sleep "$delay"
  kill -s $sig $pid 2>/dev/null
  { wait $pid; } 2>/dev/null
  KILL_ST=$?
  if [ -n "$rpid" ]; then
    touch "$D.stop"
    wait $rpid
    read_log "run" "$D.log"
  fi
  [ $sig = INT ] && [ "$KILL_ST" = 1 ] && KILL_ST=137 # stopped at the next piece
  killed "run" || return
  # a SIGINT during the answer ends the turn there, keeping what was said (no rewind
  # mark left): the next run is a new turn, so the session only has to verify
  if [ $sig = INT ] && [ -e "$D/model-run.txt" ] && ! grep -q '^rewind=\|^pending_file=' "$D/model-run.txt" &&
    [ -s "$D.o" ]; then
    echo "  [$iter] run stopped by SIGINT after $delay s kept its partial answer ($(tokens_of "$D") positions)"
    verify_ok "$D" "run stopped by SIGINT in its answer"
    rm -rf "$D" "$D".*
    return
  fi
  t=$(tokens_of "$D")
  # it finished first, or was killed after saving its state (no rewind mark left, every
  # position in): a re-run would be another turn
  if [ "$KILL_ST" = 0 ] || { [ "${t:-0}" = "$RUN_TOKENS" ] && [ -e "$D/model-run.txt" ] &&
    ! grep -q '^rewind=' "$D/model-run.txt"; }; then
    [ "$(data_digest "$D")" = "$RUN_DIGEST" ] || fail "run (finished, status $KILL_ST): digest $(data_digest "$D"), want $RUN_DIGEST"
    echo "  [$iter] run finished before SIG$sig after $delay s (status $KILL_ST)"
    rm -rf "$D" "$D".*
    return
  fi
  if [ -s "$D.o" ]; then phase=generation; elif [ "${t:-0}" -lt "$DOC_POS" ]; then phase=prefill; else phase=prompt; fi
  echo "  [$iter] run stopped by SIG$sig after $delay s$([ $aim = text ] && echo " of text") in the $phase (${t:-0} positions kept)"
  [ -e "$D/data.mdb" ] && [ -n "$t" ] && verify_ok "$D" "run killed in the $phase"
  cp "$D/model-run.txt" "$D.state" 2>/dev/null
  must "rerun after a kill in the $phase" "${RUN[@]}" --model "$M" --session "$D" || return
  cmp -s "$ROOT/o" "$ROOT/run-ref.out" || fail "rerun after a kill in the $phase: text differs: '$(head -c 200 "$ROOT/o")' vs '$(head -c 200 "$ROOT/run-ref.out")' (run state: $(grep -v '^#' "$D.state" 2>/dev/null | tr '\n' ' '); rerun: $(head -c 300 "$ROOT/e"))"
  [ "$(data_digest "$D")" = "$RUN_DIGEST" ] && resumes=$((resumes + 1)) ||
    fail "rerun after a kill in the $phase: digest $(data_digest "$D"), want $RUN_DIGEST"
  rm -rf "$D" "$D".*
}

truncate_kill() {
  local D=$ROOT/kt delay
  fork_dir "$ROOT/src" "$D" || return
  delay=$(rand_delay "$TRUNC_SPAN")
  echo "  [$iter] truncate killed after $delay s, readers beside it"
  rm -f "$D.stop"
  readers "$D" "$D.stop" "$D.log" &
  local rpid=$!
  kill_after "$delay" "$D.o" "$D.e" "$L" truncate "$D" --tokens "$TRUNC_TO"
  touch "$D.stop"
  wait $rpid
  read_log "truncate" "$D.log"
  killed "truncate" || return
  verify_ok "$D" "truncate killed after $delay s"
  must "truncate after a killed one" truncate "$D" --tokens "$TRUNC_TO" &&
    { [ "$(data_digest "$D")" = "${SDIG[156]}" ] && resumes=$((resumes + 1)) ||
      fail "truncate killed after $delay s then completed: digest $(data_digest "$D"), want ${SDIG[156]}"; }
  rm -rf "$D" "$D".*
}

fork_kill() {
  local D=$ROOT/kf delay
  rm -rf "$D"
  delay=$(rand_delay "$FORK_SPAN")
  echo "  [$iter] fork killed after $delay s"
  kill_after "$delay" "$D.o" "$D.e" "$L" fork "$ROOT/src" "$D"
  killed "fork" || return
  verify_ok "$ROOT/src" "the source of a fork killed after $delay s"
  if [ -e "$D" ]; then # killed after its rename: a complete fork
    [ "$(data_digest "$D")" = "$SRC_DIGEST" ] || fail "fork killed after $delay s left $D with digest $(data_digest "$D")"
    verify_ok "$D" "fork killed after its rename"
    rm -rf "$D"
  fi
  must "fork after a killed one" fork "$ROOT/src" "$D" &&
    { [ "$(data_digest "$D")" = "$SRC_DIGEST" ] && resumes=$((resumes + 1)) ||
      fail "fork after a killed one: digest $(data_digest "$D"), want $SRC_DIGEST"; }
  verify_ok "$D" "fork after a killed one"
  rm -rf "$D" "$D".* "$ROOT"/kf.fork-*
}

reindex_kill() {
  local D=$ROOT/ki delay spec=${SPECS[RANDOM % ${#SPECS[@]}]% *}
  fork_dir "$ROOT/src" "$D" || return
  delay=$(rand_delay 1)
  echo "  [$iter] reindex --index $spec killed after $delay s, readers beside it"
  rm -f "$D.stop"
  readers "$D" "$D.stop" "$D.log" &
  local rpid=$!
  kill_after "$delay" "$D.o" "$D.e" "$L" reindex "$D" --index "$spec"
  touch "$D.stop"
  wait $rpid
  read_log "reindex --index $spec" "$D.log"
  killed "reindex --index $spec" || return
  verify_ok "$D" "reindex --index $spec killed after $delay s"
  must "reindex after a killed one" reindex "$D" --index "$spec" &&
    { [ "$(data_digest "$D")" = "$SRC_DIGEST" ] && resumes=$((resumes + 1)) ||
      fail "reindex --index $spec after a killed one: digest $(data_digest "$D"), want $SRC_DIGEST"; }
  verify_ok "$D" "reindex --index $spec after a killed one"
  rm -rf "$D" "$D".*
}

t0=$SECONDS
KINDS=(demo truncate fork reindex)
run_any_kill() { run_kill any; }
run_text_kill() { run_kill text; }
[ -n "$M" ] && KINDS+=(run_any run_text run)
iter=0
# every kind once, then random kinds until the budget is spent
while :; do
  if [ $iter -lt ${#KINDS[@]} ]; then kind=${KINDS[iter]}
  else
    [ $((SECONDS - t_start)) -lt "$BUDGET" ] || break
    kind=${KINDS[RANDOM % ${#KINDS[@]}]}
  fi
  iter=$((iter + 1))
  "${kind}_kill"
done
cpu_mark
echo "random kills: $iter runs in $((SECONDS - t0)) s (cpu so far $(cpu) s)"

cpu_mark
total_cpu=$(cpu)
rm -rf "$ROOT"
echo "fault campaign: $((SECONDS - t_start)) s wall, $total_cpu s cpu, seed $SEED"
echo "fault campaign: $kills kills, $resumes resumes with equal digests, $damaged damaged files refused or rebuilt cleanly, $refused second writers refused, $reads concurrent reads, $early runs ended before the kill, $skipped skipped, $crashes crashes, $fails failures"
[ $crashes -eq 0 ] && [ $fails -eq 0 ]
