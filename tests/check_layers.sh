#!/usr/bin/env bash
# The layering check: layers depend one way, and the folders show it.
#
#   check_layers.sh ROOT
#
# Layers, lowest first: base storage index engine model bench cli. Every `#include "..."`
# in a .c, .h or .cpp file of those folders must name a header of its own layer or of a
# lower one. The header is resolved as the compiler does: next to the including file first
# (so "../x/y.h" works), then in each layer folder in order. Fails on an include of
# - a header in a higher layer,
# - a header in a folder that is no layer (tests/, say, or outside ROOT),
# - a header that exists in no layer folder (system and library headers belong in <>).
# Also fails on calls of system() or popen() in those folders: a command runs no shell
# (tests/ may). Comments, string literals and `#if 0` blocks are not read.
#
# Prints one line per problem, "file:line: what", and exits 1 when there is any; exits 0
# when clean, 2 on a usage error. Needs bash, find, awk and coreutils' realpath.
set -u
LAYERS=(base storage index engine model bench cli)

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
  echo "usage: check_layers.sh ROOT   (ROOT: the source tree holding base/ storage/ ...)" >&2
  exit 2
fi
cd "$1" || exit 2

rank() { # rank LAYER: its position, lowest 0; -1 for a folder that is no layer
  local i
  for i in "${!LAYERS[@]}"; do
    [ "${LAYERS[$i]}" = "$1" ] && { echo "$i"; return; }
  done
  echo -1
}

present=()
for l in "${LAYERS[@]}"; do
  [ -d "$l" ] && present+=("$l")
done
if [ ${#present[@]} -eq 0 ]; then
  echo "check_layers: no layer folder (${LAYERS[*]}) in $1" >&2
  exit 2
fi

# One record per quoted include ("I<TAB>file<TAB>line<TAB>header") and per shell call
# ("S<TAB>file<TAB>line<TAB>name"), from the code with comments and strings removed.
scan() {
  awk '
    FNR == 1 { in_comment = 0; skip = 0 }
    {
      line = $0
      # #if 0 ... #endif (nesting counted), outside comments only
      if (!in_comment && line ~ /^[ \t]*#[ \t]*if/) {
        if (skip) { skip++; next }
        if (line ~ /^[ \t]*#[ \t]*if[ \t]+0([ \t]|$)/) { skip = 1; next }
      }
      if (skip) {
        if (line ~ /^[ \t]*#[ \t]*endif/) skip--
        else if (skip == 1 && line ~ /^[ \t]*#[ \t]*(else|elif)/) skip = 0
        next
      }
      if (!in_comment && line ~ /^[ \t]*#[ \t]*include[ \t]*"/) {
        h = line
        sub(/^[ \t]*#[ \t]*include[ \t]*"/, "", h)
        sub(/".*/, "", h)
        printf "I\t%s\t%d\t%s\n", FILENAME, FNR, h
        sub(/^[^"]*"[^"]*"/, "", line) # a comment may follow, and go on
      }
      # strip comments, string and character literals, keeping the code between them
      out = ""
      while (length(line) > 0) {
        if (in_comment) {
          e = index(line, "*/")
          if (!e) { line = ""; break }
          line = substr(line, e + 2); in_comment = 0; continue
        }
        c = substr(line, 1, 1); c2 = substr(line, 1, 2)
        if (c2 == "/*") { in_comment = 1; line = substr(line, 3); out = out " "; continue }
        if (c2 == "//") break
        if (c == "\"" || c == "\047") {
          q = c; i = 2
          while (i <= length(line)) {
            d = substr(line, i, 1)
            if (d == "\\") { i += 2; continue }
            if (d == q) break
            i++
          }
          line = substr(line, i + 1); out = out " "; continue
        }
        out = out c; line = substr(line, 2)
      }
      rest = " " out
      while (match(rest, /[^A-Za-z0-9_.>](system|popen)[ \t]*\(/)) {
        name = substr(rest, RSTART + 1, RLENGTH - 1)
        sub(/[ \t]*\($/, "", name)
        printf "S\t%s\t%d\t%s\n", FILENAME, FNR, name
        rest = substr(rest, RSTART + RLENGTH)
      }
    }' "$@"
}

files=()
while IFS= read -r -d '' f; do
  files+=("$f")
done < <(find "${present[@]}" -type f \( -name '*.c' -o -name '*.h' -o -name '*.cpp' \) -print0 | sort -z)

problems=0
report() { # report FILE LINE TEXT
  echo "$1:$2: $3"
  problems=$((problems + 1))
}

includes=0
while IFS=$'\t' read -r kind file line what; do
  if [ "$kind" = S ]; then
    report "$file" "$line" "$what() runs a shell; outside tests/ nothing may (use the C library)"
    continue
  fi
  includes=$((includes + 1))
  own=${file%%/*}
  target=
  if [ -f "$(dirname "$file")/$what" ]; then
    target=$(realpath -m --relative-to=. "$(dirname "$file")/$what")
  else
    for l in "${present[@]}"; do
      if [ -f "$l/$what" ]; then
        target=$(realpath -m --relative-to=. "$l/$what")
        break
      fi
    done
  fi
  if [ -z "$target" ]; then
    report "$file" "$line" "#include \"$what\": no such header in any layer folder (${present[*]}); a system or library header belongs in <>"
    continue
  fi
  tl=${target%%/*}
  [ "$target" = "$tl" ] && tl=.
  tr=$(rank "$tl")
  if [ "$tr" -lt 0 ]; then
    report "$file" "$line" "#include \"$what\": $target is in no layer folder (${LAYERS[*]})"
  elif [ "$tr" -gt "$(rank "$own")" ]; then
    report "$file" "$line" "#include \"$what\": $target is in $tl/, a layer above $own/ (layers, lowest first: ${LAYERS[*]})"
  fi
done < <(scan "${files[@]}")

if [ $problems -gt 0 ]; then
  echo "check_layers: $problems problem(s) in ${#files[@]} files" >&2
  exit 1
fi
echo "check_layers: ok, ${#files[@]} files, $includes includes, layers ${present[*]}"
exit 0
