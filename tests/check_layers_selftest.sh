#!/usr/bin/env bash
# Self-test of the layering check on two fixture trees (tests/layers_fixture/):
#   bad/   must fail, naming exactly the lines listed below;
#   clean/ must pass.
#
#   check_layers_selftest.sh CHECK_LAYERS_SH FIXTURE_DIR
set -u
CHECK=${1:?usage: check_layers_selftest.sh CHECK_LAYERS_SH FIXTURE_DIR}
FIX=${2:?usage: check_layers_selftest.sh CHECK_LAYERS_SH FIXTURE_DIR}
fails=0
fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}

out=$(bash "$CHECK" "$FIX/bad" 2>&1)
rc=$?
[ $rc -eq 1 ] || fail "bad fixture: exit $rc, want 1"
# file:line of every problem, in the order the check lists them
want='base/lmk_a.h:2
engine/run.c:5
engine/run.c:7
storage/x.c:3'
got=$(grep -o '^[a-z]*/[A-Za-z_.]*:[0-9]*' <<<"$out")
[ "$got" = "$want" ] || fail "bad fixture: problems at
$got
want
$want"
grep -q '^storage/x.c:3: #include "lmk_session.h": engine/lmk_session.h is in engine/, a layer above storage/' <<<"$out" ||
  fail "bad fixture: the storage -> engine include is not named as such"
grep -q '^engine/run.c:7: system()' <<<"$out" || fail "bad fixture: the system() call is not named"
echo "$out" | sed 's/^/  bad: /'

out=$(bash "$CHECK" "$FIX/clean" 2>&1)
rc=$?
[ $rc -eq 0 ] || fail "clean fixture: exit $rc, want 0: $out"
echo "  clean: $out"

out=$(bash "$CHECK" "$FIX/no-such-dir" 2>&1)
rc=$?
[ $rc -eq 2 ] || fail "missing root: exit $rc, want 2"

if [ $fails -gt 0 ]; then
  echo "check_layers_selftest: $fails failure(s)"
  exit 1
fi
echo "check_layers_selftest: ok"
