#!/usr/bin/env bash
# The workshop's checker: runs the exercises in workshop/ as a learner would, against the local
# cluster, and checks every step's output against what the exercise says the learner sees.
#
#   scripts/workshop.sh check [N...]   every exercise, or exercise N (e.g. `check 1 4`)
#   scripts/workshop.sh list           the exercises and how many checked commands each has
#
# What it runs is the exercise file itself: every fenced block opened with ```console. In it, a
# line starting `$ ` is a command (lines starting `> ` continue it); the lines after it, up to the
# next command, are the output it must print (stdout and stderr together, colours removed):
#   ...          on a line of its own: any number of lines (none included)
#   [..]         within a line: any text
#   no lines     the command prints nothing
# Options after `console` apply to every command of the block:
#   wait=S       run the command again (every second, at most S seconds) until its output matches:
#                for what the pipeline does eventually
#   timeout=S    the longest one run may take (default 120)
#   status=N     the exit status it must end with (default 0; `any` for any)
#   patched      run in a scratch copy of the tree with workshop/solutions/<NN>-*.patch applied
#                (the exercise's reference solution; one crate's tests, the build shared)
# The commands of one exercise run in order in one bash, from the repository's root, so that what
# one step sets (`source workshop/env.sh N`, variables, background programs) the next one sees.
# When the exercise ends, passed or not, every process it started is stopped, and its topics and
# database are deleted. A failing step names the exercise, the step, the command and the first
# line where the output differs; the other exercises still run; the exit status is 1.
#
# Settings: WORKSHOP_BUILD=0 skips `cargo build` of the programs; MARKETFLOW_CLUSTER_DIR as
# scripts/cluster.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SCRATCH=$TARGET/workshop/tree
export MARKETFLOW_CLUSTER_DIR=${MARKETFLOW_CLUSTER_DIR:-$HOME/.cache/marketflow/cluster}
DEFAULT_TIMEOUT=120

say() { printf '\033[1mworkshop:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31mworkshop: %s\033[0m\n' "$*" >&2; exit 1; }

exercises() { ls "$ROOT"/workshop/[0-9][0-9]-*.md 2>/dev/null; }

# number FILE: the exercise's number, without leading zeros.
number() { local base=${1##*/}; echo $((10#${base%%-*})); }

# --- parsing -------------------------------------------------------------------------------------

# plan FILE: prints the file's checked commands, one record each, separated by NUL:
#   line \x1f step \x1f options \x1f command \x1f expected output
plan() {
  awk '
    function flush() {
      if (cmd != "") printf "%s\037%s\037%s\037%s\037%s%c", cmdline, step, opts, cmd, expected, 0
      cmd = ""; expected = ""
    }
    !fence && /^#+ / { heading = $0; sub(/^#+ +/, "", heading); step = heading }
    !fence && /^[0-9]+\. / { n = $0; sub(/\..*/, "", n); step = (heading ~ /^Steps/ ? "step " n : heading ", " n ".") }
    !fence && /^ *```console/ {
      fence = 1; indent = match($0, /[^ ]/) - 1
      opts = $0; sub(/^ *```console */, "", opts); next
    }
    fence && /^ *```[ \t]*$/ { flush(); fence = 0; next }
    fence {
      line = $0
      if (substr(line, 1, indent) ~ /^ *$/) line = substr(line, indent + 1)
      if (line ~ /^\$ /) { flush(); cmd = substr(line, 3); cmdline = NR; continuing = 1; next }
      if (continuing && line ~ /^> /) { cmd = cmd "\n" substr(line, 3); next }
      continuing = 0
      if (cmd != "") expected = expected line "\n"
    }
    END { if (fence) { print "unclosed ```console block" > "/dev/stderr"; exit 1 } }
  ' "$1"
}

# --- matching ------------------------------------------------------------------------------------

# matches EXPECTED_FILE ACTUAL_FILE: exit 0 when the output matches the pattern; otherwise prints
# where it first differs.
matches() {
  awk '
    function pattern(s,    r) {
      gsub(/[\\^$.|?*+(){}\[\]]/, "\\\\&", s)
      gsub(/\\\[\\\.\\\.\\\]/, ".*", s)
      return "^" s "$"
    }
    function trim(s) { sub(/[ \t\r]+$/, "", s); return s }
    # fits(i, j): expected lines i.. match actual lines j.. (memoised backtracking).
    function fits(i, j,    k, key, ok) {
      key = i SUBSEP j
      if (key in memo) return memo[key]
      if (i > ne) ok = (j > na)
      else if (want[i] == "...") {
        ok = 0
        for (k = j; k <= na + 1 && !ok; k++) ok = fits(i + 1, k)
      } else ok = (j <= na && act[j] ~ re[i] && fits(i + 1, j + 1))
      memo[key] = ok
      return ok
    }
    FILENAME == ARGV[1] { want[++ne] = trim($0); re[ne] = pattern(want[ne]); next }
    { act[++na] = trim($0) }
    END {
      if (fits(1, 1)) exit 0
      # Where it differs: the longest prefix of the pattern that some alignment matches.
      j = 1; skip = 0
      for (i = 1; i <= ne; i++) {
        if (want[i] == "...") { skip = 1; continue }
        k = j
        if (skip) { while (k <= na && act[k] !~ re[i]) k++ }
        if (k > na || act[k] !~ re[i]) {
          printf "  expected line %d: %s\n", i, want[i]
          if (skip) printf "  got: no such line after line %d of the output\n", j - 1
          else if (j <= na) printf "  got line %d:      %s\n", j, act[j]
          else printf "  got: the output ended (%d lines)\n", na
          exit 1
        }
        j = k + 1; skip = 0
      }
      if (j <= na) printf "  expected the output to end, got line %d: %s\n", j, act[j]
      exit 1
    }
  ' "$1" "$2"
}

# --- running one exercise ------------------------------------------------------------------------

# The exercise's shell: one bash in a session of its own, so that everything it starts can be
# stopped together.
shell_start() {
  coproc WSH (exec setsid bash --noprofile --norc 2>&1)
  SHELL_PID=$WSH_PID
  # Duplicate the coproc's descriptors: bash closes WSH's when the coprocess exits.
  exec {SH_IN}>&"${WSH[1]}" {SH_OUT}<&"${WSH[0]}"
}

shell_stop() {
  [[ -n ${SHELL_PID:-} ]] || return 0
  kill -TERM -- "-$SHELL_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 -- "-$SHELL_PID" 2>/dev/null || break; sleep 0.2; done
  kill -KILL -- "-$SHELL_PID" 2>/dev/null || true
  { exec {SH_IN}>&- {SH_OUT}<&-; } 2>/dev/null || true
  wait "$SHELL_PID" 2>/dev/null || true
  SHELL_PID=
}

# run_in_shell COMMAND TIMEOUT OUTFILE: runs COMMAND in the exercise's shell; sets STATUS (124 on a
# timeout, after which the shell is gone).
run_in_shell() {
  local command=$1 timeout=$2 out=$3 marker line deadline
  marker="__workshop_done_${RANDOM}${RANDOM}__"
  printf '{\n%s\n} </dev/null 2>&1; printf "\\n%s %%s\\n" "$?"\n' "$command" "$marker" >&"$SH_IN"
  : >"$out"
  deadline=$((SECONDS + timeout))
  while :; do
    if ! IFS= read -r -t $((deadline - SECONDS > 0 ? deadline - SECONDS : 1)) line <&"$SH_OUT"; then
      STATUS=124
      printf '(no answer within %ss)\n' "$timeout" >>"$out"
      shell_stop
      return
    fi
    if [[ $line == "$marker "* ]]; then
      STATUS=${line#"$marker "}
      break
    fi
    printf '%s\n' "$line" >>"$out"
  done
  # The marker's own leading newline, and colours.
  if [[ -s $out && -z $(tail -n 1 "$out") ]]; then sed -i '$d' "$out"; fi
  sed -i 's/\x1b\[[0-9;]*m//g' "$out"
}

# scratch PATCH: a copy of the tree with the reference solution applied, at a stable path so
# that cargo's fingerprints keep the build incremental between checks. It shares the tree's
# target directory, so crates.io dependencies are built once; so that the copy's own crates do
# not take the tree's artifacts' names (cargo names a workspace member's artifacts after its path
# relative to the workspace root), the copy's workspace root is one level up: members at
# `tree/core`, … rather than `core`, ….
scratch() {
  mkdir -p "$SCRATCH"
  rsync -a --delete --exclude /target --exclude /.git "$ROOT/" "$SCRATCH/"
  sed -e 's/^members = \[\(.*\)\]/members = [\1]/' \
    -e '/^members = /s/"\([^"]*\)"/"tree\/\1"/g' \
    -e 's/{ path = "\([^"]*\)" }/{ path = "tree\/\1" }/' "$ROOT/Cargo.toml" >"$SCRATCH/../Cargo.toml"
  cp "$ROOT/Cargo.lock" "$SCRATCH/../Cargo.lock"
  rm "$SCRATCH/Cargo.toml" "$SCRATCH/Cargo.lock"
  patch -p1 -s -d "$SCRATCH" <"$1"
}

# cleanup: deletes the exercise's topics and database (named in the shell's WS_ID and WS_DB).
cleanup() {
  local id=$1 database=$2
  if [[ -n $id ]]; then
    "$ROOT/scripts/cluster.sh" kafka topics --delete --if-exists --topic "$id-.*" >/dev/null 2>&1 || true
  fi
  if [[ -n $database ]]; then
    mysql -h 127.0.0.1 -P 13306 -u marketflow -pmarketflow -e "DROP DATABASE IF EXISTS \`$database\`" 2>/dev/null || true
  fi
}

broker_up() { (exec 3<>"/dev/tcp/127.0.0.1/$((19091 + $1))") 2>/dev/null; }

# An exercise that stops brokers (exercise 3) has the ones it stopped started again, whatever
# happened; brokers that were down before it (another test's doing) are left alone.
BROKERS_UP=()
note_brokers() {
  local n
  BROKERS_UP=()
  for n in 1 2 3; do broker_up "$n" && BROKERS_UP+=("$n"); done
}
restore_brokers() {
  local n
  for n in "${BROKERS_UP[@]}"; do
    broker_up "$n" && continue
    say "starting Kafka node $n again (the exercise stopped it)"
    "$ROOT/scripts/cluster.sh" start-broker "$n" >&2 || true
  done
  BROKERS_UP=()
}

# check_exercise FILE: runs it; returns 1 when a step failed.
check_exercise() {
  local file=$1 name n started=$SECONDS failed=0 record solution=""
  local line step opts command shown expected wait timeout want status_ok patched out exp ids
  name=${file#"$ROOT/"}
  n=$(number "$file")
  out=$(mktemp) exp=$(mktemp)
  say "exercise $n: $name"
  if grep -q '```console.*patched' "$file"; then
    solution=$(ls "$ROOT"/workshop/solutions/"$(printf %02d "$n")"-*.patch 2>/dev/null | head -1)
    [[ -n $solution ]] || { echo "FAIL $name: it has patched steps but workshop/solutions/$(printf %02d "$n")-*.patch is missing" >&2; return 1; }
    if ! scratch "$solution" >"$out" 2>&1; then
      echo "FAIL $name: the reference solution ${solution#"$ROOT/"} does not apply to the tree:" >&2
      sed 's/^/  /' "$out" >&2
      return 1
    fi
  fi
  grep -q 'stop-broker' "$file" && note_brokers
  shell_start
  while IFS=$'\037' read -r -d '' line step opts command expected; do
    wait=0 timeout=$DEFAULT_TIMEOUT want=0 patched=0
    for opt in $opts; do
      case $opt in
        wait=*) wait=${opt#wait=} ;;
        timeout=*) timeout=${opt#timeout=} ;;
        status=*) want=${opt#status=} ;;
        patched) patched=1 ;;
        *) echo "FAIL $name:$line: unknown option $opt" >&2; failed=1; break 2 ;;
      esac
    done
    printf '%s' "$expected" >"$exp"
    shown=$command
    ((patched)) && command="(cd '$SCRATCH' && export CARGO_TARGET_DIR='$TARGET' && $command)"
    local deadline=$((SECONDS + wait)) tries=0 began=$SECONDS
    while :; do
      tries=$((tries + 1))
      run_in_shell "$command" "$timeout" "$out"
      status_ok=0
      [[ $want == any || $STATUS == "$want" ]] && status_ok=1
      if ((status_ok)) && diff_text=$(matches "$exp" "$out"); then
        printf '  ok   %s (line %s, %ss): $ %.90s\n' "$step" "$line" "$((SECONDS - began))" \
          "${shown%%$'\n'*}" >&2
        break
      fi
      if ((STATUS != 124 && SECONDS < deadline)); then sleep 1; continue; fi
      {
        printf '\033[1;31mFAIL\033[0m exercise %s (%s), %s, line %s, after %s run(s):\n  $ %s\n' \
          "$n" "$name" "$step" "$line" "$tries" "$shown"
        if ((!status_ok)); then
          printf '  exit status %s, expected %s\n' "$STATUS" "$want"
        else
          printf '%s\n' "$diff_text"
        fi
        echo "  --- its output (first 40 lines):"
        head -n 40 "$out" | sed 's/^/  | /'
      } >&2
      failed=1
      break 2
    done
  done < <(plan "$file")
  ids=""
  if [[ -n ${SHELL_PID:-} ]]; then
    run_in_shell 'echo "${WS_ID:-} ${WS_DB:-} ${WS_DIR:-}"' 10 "$out"
    ids=$(tail -n 1 "$out")
  fi
  shell_stop
  restore_brokers
  # shellcheck disable=SC2086
  set -- $ids "" "" ""
  cleanup "$1" "$2"
  rm -f "$out" "$exp"
  if ((failed)); then
    say "exercise $n failed after $((SECONDS - started))s${3:+ (logs of its programs: $3)}"
    return 1
  fi
  # The programs' logs are kept only when something failed.
  if [[ $3 == */marketflow-workshop/* ]]; then rm -rf "$3"; fi
  say "exercise $n passed in $((SECONDS - started))s"
}

check() {
  local files=() file n wanted failed=() started=$SECONDS
  if (($#)); then
    for wanted in "$@"; do
      [[ $wanted =~ ^[0-9]+$ ]] || die "usage: scripts/workshop.sh check [N...]"
      for file in $(exercises); do
        [[ $(number "$file") == $((10#$wanted)) ]] && files+=("$file")
      done
      [[ ${#files[@]} -gt 0 && $(number "${files[-1]}") == $((10#$wanted)) ]] || die "no exercise $wanted in workshop/"
    done
  else
    mapfile -t files < <(exercises)
  fi
  "$ROOT/scripts/cluster.sh" up
  # The exercises read JSON with jq, as the workshop's README asks learners to install it.
  if ! command -v jq >/dev/null; then
    say "installing jq (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends jq >/dev/null ||
      die "the exercises need jq: apt-get install jq"
  fi
  if [[ ${WORKSHOP_BUILD:-1} != 0 ]]; then
    say "building the programs (debug)"
    cargo build -q -p marketflow-market -p marketflow-scraper -p marketflow-sink \
      -p marketflow-streams -p marketflow-status
  fi
  trap 'shell_stop; restore_brokers' EXIT
  for file in "${files[@]}"; do
    check_exercise "$file" || failed+=("$(number "$file")")
  done
  if ((${#failed[@]})); then
    die "exercise(s) ${failed[*]} failed (${#files[@]} checked in $((SECONDS - started))s)"
  fi
  say "${#files[@]} exercise(s) passed in $((SECONDS - started))s"
}

list() {
  local file
  for file in $(exercises); do
    printf '%2s  %-40s %3s checked commands\n' "$(number "$file")" "${file#"$ROOT/"}" \
      "$(plan "$file" | tr -cd '\0' | wc -c)"
  done
}

case ${1:-} in
  check) shift; check "$@" ;;
  list) list ;;
  *) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
