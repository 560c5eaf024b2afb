# Helpers of the end-to-end crash tests (sourced by test_crash.sh and fault_campaign.sh).
# The caller sets L (the landmark command) and defines fail MESSAGE.

# json FIELD < text: the value of a string or number field of a one-line JSON object
json() {
  sed -n "s/.*\"$1\": \"\{0,1\}\([^\",}]*\)\"\{0,1\}[,}].*/\1/p" | head -n 1
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
# random delay in [0, max) seconds, millisecond steps (from bash's seeded RANDOM)
rand_delay() { awk -v m="$1" -v r="$(( (RANDOM << 15 | RANDOM) % 1000 ))" 'BEGIN { printf "%.3f", m * r / 1000 }'; }

# kill_after DELAY OUT ERR CMD...: runs CMD in the background with stdout in OUT and
# stderr in ERR, sends SIGKILL after DELAY seconds; its exit status is left in KILL_ST
# (137: killed; anything else: it ended before the kill)
kill_after() {
  local delay=$1 out=$2 err=$3 pid
  shift 3
  "$@" >"$out" 2>"$err" &
  pid=$!
  sleep "$delay"
  kill -9 $pid 2>/dev/null
  { wait $pid; } 2>/dev/null
  KILL_ST=$?
}

# verify_ok DIR WHAT [ingest]: verify must report ok; prints nothing on success
verify_ok() {
  local out rc
  out=$("$L" verify "$1" --json 2>&1)
  rc=$?
  if [ $rc -ne 0 ] || ! grep -q '"ok": true' <<<"$out"; then
    fail "$2: verify exit $rc: $out"
    return 1
  fi
  # after a kill during an ingest an index file may lag behind the store (caught up on
  # open), never lead it: that would mean committed blocks went missing (after a killed
  # truncate it does lead, by the blocks the truncation removed)
  if [ "${3:-}" = ingest ] && grep -q 'session has [0-9]*: truncated' <<<"$out"; then
    fail "$2: an index file covers more blocks than the store holds: $out"
    return 1
  fi
  return 0
}

# data_digest DIR, tokens DIR, blocks DIR: fields of `landmark info`
data_digest() { "$L" info "$1" --json 2>/dev/null | json data_digest; }
tokens_of() { "$L" info "$1" --json 2>/dev/null | json tokens; }
blocks_of() { "$L" info "$1" --json 2>/dev/null | json blocks; }
