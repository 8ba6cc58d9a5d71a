#!/usr/bin/env bash
# The test command of the nodemaint.image_gc collection:   ./scripts/test.sh
#
# Installs what it needs (Debian packages, the real crictl -- from PATH if new enough, else built
# once with `go install` into the cache --, containerd 1.7.24 (Debian 13) and 2.1.9 (Debian sid)
# unpacked into the cache, containerd 2.4.2 built once with `go install` into the cache, the upstream
# kubelet (for the lab's kubelet tests) and CRI-O 1.34.0 built once from the Go module proxy into the cache, a tools
# venv, containers.podman, promtool; versions pinned in scripts/lib/versions.env), copies the
# working tree to <cache>/build/run.XXXXXX/ansible_collections/nodemaint/image_gc (one per
# run, removed at exit), points ANSIBLE_COLLECTIONS_PATH at it, then runs, in this order:
#   doc       ansible-doc renders every module in plugins/modules
#   sanity    ansible-test sanity --python 3.11 (all tests, nothing excluded)
#   lint      ansible-lint --profile production; ruff (tests/ruff.toml: Python 3.8+ idiom) on plugins/
#   galaxy    ansible-galaxy collection build, then galaxy-importer on the artifact, antsibull-changelog
#             lint, antsibull-docs lint-collection-docs --plugin-docs, ansible-builder introspect and
#             create (tools in their own venv: tests/requirements-galaxy.txt; scripts/lib/galaxy.sh)
#   molecule  molecule test for every molecule/<scenario>/molecule.yml (podman + systemd image)
#   matrix    the lab tests (pytest -m lab tests/lab_tests) on the lines of NODEMAINT_LAB_LANE
#             (default 2.1,2.4,crio: crio is the CRI-O lane, CRI-O 1.34.0 instead of containerd, where
#             the matrix-marked tests and test_crio.py run), in the background lane: a second pytest process beside the first,
#             so the two cores share the lab lines; `pytest` then runs the other lines.
#   pytest    one pytest run over tests/unit, tests/lab_tests and other tests/ dirs with tests.
#             The lab tests (tests/lab_tests) run against four containerd lines as a version matrix:
#             the WHOLE suite on 1.7.24 (the line most nodes run), and on 1.6.20 (Debian 12),
#             2.1.9 (sid) and 2.4.2 (newest) only the tests marked `pytest.mark.matrix` (where
#             the lines differ: crictl contract, prune scenario, sandbox image and pinning,
#             content phase, pod safety); the rest shows as "deselected" there. The CRI-O lane runs
#             them too, skipping with a reason those about ctr, the content store or containerd's config.
#             Switches: NODEMAINT_LAB_VERSIONS=1.6,2.4 (only these lines), NODEMAINT_LAB_FULL=all
#             (the whole suite on every line; or =2.1: on that line), see tests/lab_tests/conftest.py.
# Every step runs even if an earlier one failed; a step whose inputs do not exist yet is
# SKIPped with a reason. Exit status is non-zero if any step FAILed (or setup failed).
# Two lanes on the two cores: pytest (the longest step) runs in the foreground while doc, sanity,
# lint, galaxy and molecule run one after the other in the background, in a build tree of their own (their
# output is printed when pytest is done); TEST_JOBS=1 runs all steps one after the other instead.
#
# Environment switches:
#   TEST_ONLY=doc,sanity   run only these steps (names as above)
#   SKIP=molecule,sanity   skip these steps (skipped steps show as SKIP in the summary)
#   PYTEST_ARGS="-k foo"   extra pytest arguments (e.g. "-x -q")
#   SANITY_ARGS="--test pep8"  extra ansible-test sanity arguments
#   MOLECULE_SCENARIO=name run only this Molecule scenario (default: all)
#   NODEMAINT_CACHE_DIR    cache for venv, collections, build tree, image rootfs, crictl build,
#                          containerd 1.7/2.1/2.4 (default /var/cache/nodemaint-image-gc)
#   NO_SETUP_APT=1         do not check/install Debian packages
#   STEP_TIMEOUT=1800      time limit in seconds for each step's main command
#   KEEP_BUILD=1           keep the per-run build tree (path printed at setup) for debugging
#   TEST_JOBS=1            no second lane: every step in the foreground, in the order above
#   NODEMAINT_LAB_VERSIONS=1.6,2.4  lab lines the lab tests run on (default: all four, and crio)
#   NODEMAINT_LAB_LANE=2.1,2.4,crio  the lab lines the `matrix` step runs (in the lane; crio: CRI-O); `pytest` runs the
#                          rest. Deselecting `matrix` (TEST_ONLY=pytest, SKIP=matrix) gives every line to pytest
#   NODEMAINT_LAB_FULL=2.1 the line that runs the whole lab suite (default 1.7; "all": every
#                          line runs the whole suite, the full matrix)
# Needs root (apt, podman, containerd) -- CI runs it as root.
set -uo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${NODEMAINT_CACHE_DIR:-/var/cache/nodemaint-image-gc}"
export NODEMAINT_CACHE_DIR="$CACHE_DIR"
STEPS=(doc sanity lint galaxy molecule matrix pytest)

# Plain output when not on a terminal (CI logs).
if [[ ! -t 1 || -n "${CI:-}" ]]; then
  export NO_COLOR=1 PY_COLORS=0 ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 TERM="${TERM:-dumb}"
fi

log() { printf '[test.sh] %s\n' "$*" >&2; }
# shellcheck source=scripts/lib/setup.sh
source "$REPO_ROOT/scripts/lib/setup.sh"
# shellcheck source=scripts/lib/galaxy.sh
source "$REPO_ROOT/scripts/lib/galaxy.sh"

wanted() {
  local s="$1" only="${TEST_ONLY:-}" skip="${SKIP:-}"
  only="${only// /}" skip="${skip// /}"
  if [[ -n "$only" && ",$only," != *",$s,"* ]]; then return 1; fi
  [[ ",$skip," != *",$s,"* ]]
}

check_switches() {
  local name
  local only="${TEST_ONLY:-}" skip="${SKIP:-}"
  for name in ${only//,/ } ${skip//,/ }; do
    [[ " ${STEPS[*]} " == *" $name "* ]] || { log "unknown step '$name' in TEST_ONLY/SKIP (steps: ${STEPS[*]})"; exit 2; }
  done
}

declare -A RESULT DURATION REASON

# run_step NAME FUNCTION: PASS if the function returns 0, FAIL otherwise, SKIP if it called skip.
run_step() {
  local name="$1" fn="$2" start rc
  if ! wanted "$name"; then
    RESULT[$name]=SKIP; DURATION[$name]=0; REASON[$name]="deselected by TEST_ONLY/SKIP"
    printf '%s\t%s\t%s\n' "${RESULT[$name]}" "${DURATION[$name]}" "${REASON[$name]}" >"$STATE/result-$name"
    return 0
  fi
  printf '\n===== [%s] %s =====\n' "$name" "$(date +%H:%M:%S)"
  start=$SECONDS
  ( set -o pipefail; "$fn" )
  rc=$?
  DURATION[$name]=$((SECONDS - start))
  if [[ -f "$STATE/skip-$name" ]]; then
    RESULT[$name]=SKIP; REASON[$name]="$(cat "$STATE/skip-$name")"
  elif [[ $rc -eq 0 ]]; then
    RESULT[$name]=PASS
  else
    RESULT[$name]=FAIL; REASON[$name]="exit status $rc"
  fi
  printf '===== [%s] %s in %ss %s\n' "$name" "${RESULT[$name]}" "${DURATION[$name]}" "${REASON[$name]:-}"
  # for main(), which may have run this step in the background lane (another shell)
  printf '%s\t%s\t%s\n' "${RESULT[$name]}" "${DURATION[$name]}" "${REASON[$name]:-}" >"$STATE/result-$name"
}

load_result() {
  local name="$1"
  if [[ -f "$STATE/result-$name" ]]; then
    IFS=$'\t' read -r "RESULT[$name]" "DURATION[$name]" "REASON[$name]" <"$STATE/result-$name"
  else
    RESULT[$name]=FAIL; DURATION[$name]=0; REASON[$name]="did not finish"
  fi
}

# The background lane: the lab's matrix lines, then doc, sanity, lint, galaxy, molecule, in build trees
# of their own (ansible-test writes tests/output/ into its tree, pytest writes caches into its own),
# output to a file.
LANE_STEPS=(matrix doc sanity lint galaxy molecule)
# The lab tests get a tree of their own: what they write into it (inventories, playbook output)
# must not reach ansible-lint's or galaxy-importer's view of the collection.
lane_build_tree() {
  setup_build_tree >/dev/null 2>&1 || { echo "background lane: cannot make its build tree"; return 1; }
  echo "$BUILD_ROOT" >>"$STATE/lane-build-roots"
}

run_lane() {
  lane_build_tree || return 1
  run_step matrix step_matrix
  lane_build_tree || return 1
  run_step doc step_doc
  run_step sanity step_sanity
  run_step lint step_lint
  run_step galaxy step_galaxy
  run_step molecule step_molecule
}

stop_lane() {
  if [[ -n "${LANE_PID:-}" ]] && kill -0 "$LANE_PID" 2>/dev/null; then
    kill -TERM -- "-$LANE_PID" 2>/dev/null
    wait "$LANE_PID" 2>/dev/null
  fi
  if [[ -s "$STATE/lane-build-roots" && "${KEEP_BUILD:-0}" != 1 ]]; then
    local dir
    while IFS= read -r dir; do rm -rf "$dir"; done <"$STATE/lane-build-roots"
  fi
  return 0
}

# limit CMD...: run a step's main command with a time limit (STEP_TIMEOUT seconds, default
# 1800) so that a hang cannot eat CI's 90 minutes; its whole process group is killed.
limit() {
  local rc
  timeout -k 60 "${STEP_TIMEOUT:-1800}" "$@"
  rc=$?
  [[ $rc -eq 124 ]] && echo "TIMEOUT: '$1' ran longer than ${STEP_TIMEOUT:-1800}s and was stopped"
  return $rc
}

# skip STEP REASON: mark the step as skipped (its inputs do not exist yet); then return.
skip() { echo "$2" >"$STATE/skip-$1"; echo "SKIP: $2"; }

module_names() {
  local f
  for f in "$COLLECTION_DIR"/plugins/modules/*.py; do
    [[ -e "$f" ]] || continue
    f="$(basename "$f" .py)"
    [[ "$f" == __init__ ]] && continue
    echo "$f"
  done
}

step_doc() {
  cd "$COLLECTION_DIR" || return 1
  local mods m out fail=0
  mods="$(module_names)"
  [[ -n "$mods" ]] || { skip doc "no modules in plugins/modules yet"; return 2; }
  for m in $mods; do
    if out="$(ansible-doc -t module "nodemaint.image_gc.$m" 2>"$STATE/doc.err")" && [[ -n "$out" ]] \
       && ! grep -qiE 'error|not found|unable|could not' "$STATE/doc.err"; then
      echo "ok   nodemaint.image_gc.$m ($(wc -l <<<"$out") lines)"
    else
      echo "FAIL nodemaint.image_gc.$m"; cat "$STATE/doc.err"; fail=1
    fi
  done
  return $fail
}

step_sanity() {
  cd "$COLLECTION_DIR" || return 1
  setup_ansible_test_pip || return 1
  # shellcheck disable=SC2086
  limit ansible-test sanity --python 3.11 --color no ${SANITY_ARGS:-}
}

step_lint() {
  cd "$COLLECTION_DIR" || return 1
  local rc=0
  limit ansible-lint --offline --profile production --nocolor || rc=1
  # plugins/ in the idiom of Python 3.8+ (pyupgrade's rules and comprehensions: tests/ruff.toml)
  echo "ruff check --config tests/ruff.toml plugins/"
  limit ruff check --config tests/ruff.toml --no-cache plugins/ || rc=1
  return $rc
}

molecule_scenarios() {
  local f
  for f in "$COLLECTION_DIR"/molecule/*/molecule.yml; do
    [[ -e "$f" ]] && basename "$(dirname "$f")"
  done
}

step_molecule() {
  cd "$COLLECTION_DIR" || return 1
  local scenarios
  scenarios="$(molecule_scenarios)"
  [[ -n "$scenarios" ]] || { skip molecule "no molecule/*/molecule.yml yet"; return 2; }
  # Instance names are fixed per scenario: concurrent runs on one machine would destroy
  # each other's instances (and two image builds would race). The step's subshell exit
  # releases the lock.
  exec 8>/tmp/nodemaint-image-gc-molecule.lock  # machine-wide, like podman container names
  if ! flock -n 8; then
    echo "another test.sh run is using Molecule; waiting (up to 30 min)"
    flock -w 1800 8 || { echo "gave up waiting for the Molecule lock"; return 1; }
  fi
  CONTAINERS_CONF="$("$COLLECTION_DIR/molecule/resources/containers-conf.sh")" || return 1
  export CONTAINERS_CONF
  "$COLLECTION_DIR/molecule/resources/build-image.sh" 8>&- || return 1
  local base=(-c "$COLLECTION_DIR/molecule/resources/molecule-base.yml") s start rc=0 failed=()
  [[ -n "${MOLECULE_SCENARIO:-}" ]] && scenarios="$MOLECULE_SCENARIO"
  for s in $scenarios; do
    echo "----- molecule scenario $s"
    start=$SECONDS
    # Private ephemeral dir: Molecule's default (<cache>/tmp/molecule.<hash of the project
    # dir *name*>.<scenario>) is shared with any other run from a dir called image_gc.
    if MOLECULE_EPHEMERAL_DIRECTORY="$BUILD_ROOT/molecule-state/$s" \
         limit molecule "${base[@]}" test -s "$s" 8>&-; then  # 8>&-: daemons must not hold the lock
      echo "----- molecule scenario $s: PASS in $((SECONDS - start))s"
    else
      echo "----- molecule scenario $s: FAIL in $((SECONDS - start))s"
      rc=1; failed+=("$s")
    fi
  done
  [[ $rc -eq 0 ]] || echo "failed Molecule scenarios: ${failed[*]}"
  return $rc
}

# Directories under tests/ that contain pytest files: tests/unit, tests/lab_tests, then others.
pytest_dirs() {
  local d name
  for name in unit lab_tests; do
    [[ -d "$COLLECTION_DIR/tests/$name" ]] && has_pytest_files "$COLLECTION_DIR/tests/$name" && echo "tests/$name"
  done
  for d in "$COLLECTION_DIR"/tests/*/; do
    name="$(basename "$d")"
    case "$name" in unit|lab_tests|output|sanity|fixtures) continue ;; esac
    has_pytest_files "$d" && echo "tests/$name"
  done
  return 0
}

has_pytest_files() {
  [[ -n "$(find "$1" -type f \( -name "test_*.py" -o -name "*_test.py" \) -print -quit)" ]]
}

# lab_lines WHICH: the containerd lines (comma-separated) the `pytest` (WHICH=rest) or `matrix`
# (WHICH=lane) step runs: those of NODEMAINT_LAB_VERSIONS (default all) that are (lane) or are not
# (rest) in NODEMAINT_LAB_LANE; when `matrix` is deselected, `pytest` runs them all.
lab_lines() {
  local which="$1" line out=() all lane=",${NODEMAINT_LAB_LANE:-2.1,2.4,crio},"
  all="$(cd "$COLLECTION_DIR" && python -c 'from tests.lab import versions; print(" ".join(versions.LAB_LINES))')" \
    || return 1
  [[ -n "${NODEMAINT_LAB_VERSIONS:-}" && "${NODEMAINT_LAB_VERSIONS}" != all ]] && all="${NODEMAINT_LAB_VERSIONS//,/ }"
  for line in $all; do
    if [[ "$which" == rest ]] && ! wanted matrix; then out+=("$line")
    elif [[ "$which" == lane && "$lane" == *",$line,"* ]]; then out+=("$line")
    elif [[ "$which" == rest && "$lane" != *",$line,"* ]]; then out+=("$line")
    fi
  done
  local IFS=,
  echo "${out[*]}"
}

# run_pytest NAME LINES ARGS...: pytest with the lab lines LINES, output to $STATE/NAME.out, its
# closing line to $STATE/NAME.summary (for the summary at the end).
run_pytest() {
  local name="$1" lab="$2" rc
  shift 2
  echo "pytest $* (containerd lines: ${lab:-none})"
  # shellcheck disable=SC2086
  NODEMAINT_LAB_VERSIONS="$lab" PYTHONPATH="$BUILD_ROOT${PYTHONPATH:+:$PYTHONPATH}" \
    limit python -m pytest -p no:cacheprovider ${PYTEST_ARGS:-} "$@" 2>&1 | tee "$STATE/$name.out"
  rc=${PIPESTATUS[0]}
  grep -E '^(=+ )?([0-9]+ [a-z]+(, )?)+.* in [0-9.]+s|no tests ran in' "$STATE/$name.out" | tail -n1 \
    >"$STATE/$name.summary" || true
  # Exit 5 = no tests collected although test files exist: a failure.
  return "$rc"
}

step_pytest() {
  cd "$COLLECTION_DIR" || return 1
  local dirs lab
  mapfile -t dirs < <(pytest_dirs)
  [[ ${#dirs[@]} -gt 0 ]] || { skip pytest "no test_*.py under tests/ yet"; return 2; }
  lab="$(lab_lines rest)" || return 1
  # No line left for this step (all in the lane): its lab tests are deselected, the rest runs.
  run_pytest pytest "${lab:-none}" "${dirs[@]}"
}

step_matrix() {
  cd "$COLLECTION_DIR" || return 1
  local lab
  [[ -d tests/lab_tests ]] || { skip matrix "no tests/lab_tests yet"; return 2; }
  lab="$(lab_lines lane)" || return 1
  [[ -n "$lab" ]] || { skip matrix "no lab line selected for the lane (NODEMAINT_LAB_LANE, NODEMAINT_LAB_VERSIONS)"; return 2; }
  run_pytest matrix "$lab" -m lab tests/lab_tests
}

# The closing lines of both pytest runs added up: a line with every count, then the plain closing
# line "pytest: N passed, N failed, N skipped" (errors count as failed: each is a test that did not pass).
pytest_total() {
  local f
  for f in "$STATE"/pytest.summary "$STATE"/matrix.summary; do [[ -s "$f" ]] && cat "$f"; done | python -c '
import re, sys
total = {}
for line in sys.stdin:
    for n, word in re.findall(r"(\d+) ([a-z]+)", line):
        word = "errors" if word == "error" else word
        total[word] = total.get(word, 0) + int(n)
print("both pytest runs: " + ", ".join("%d %s" % (n, w) for w, n in sorted(total.items())))
print("pytest: %d passed, %d failed, %d skipped" % (
    total.get("passed", 0), total.get("failed", 0) + total.get("errors", 0), total.get("skipped", 0)))
'
}

main() {
  local total_start=$SECONDS s
  check_switches
  STATE="$(mktemp -d)"
  trap 'stop_lane; rm -rf "$STATE"; cleanup_build_tree' EXIT
  trap 'exit 130' INT TERM

  printf '===== [setup] %s =====\n' "$(date +%H:%M:%S)"
  local setup_ok=1
  if [[ "${NO_SETUP_APT:-0}" != 1 ]]; then setup_apt || setup_ok=0; fi
  if [[ $setup_ok == 1 ]]; then
    # Serialise venv/collection creation between concurrent runs.
    mkdir -p "$CACHE_DIR"
    exec 9>"$CACHE_DIR/setup.lock"
    flock -w 900 9 || log "setup lock not acquired after 15 min (continuing)"
    # containerd 2.4's, the kubelet's and CRI-O's Go builds run while the downloads and the venv are made
    # (fresh machine); exports NODEMAINT_CONTAINERD24_DIR, NODEMAINT_KUBELET, NODEMAINT_CRIO
    setup_crictl && setup_containerd_go_start && setup_kubelet_start && setup_crio_start && setup_containerds 1.7 2.1 \
      && setup_venv && setup_collections && setup_promtool || setup_ok=0
    setup_containerd_go_wait || setup_ok=0
    setup_kubelet_wait || setup_ok=0
    setup_crio_wait || setup_ok=0
    flock -u 9; exec 9>&-
    [[ $setup_ok == 1 ]] && { setup_build_tree || setup_ok=0; }
  fi
  [[ $setup_ok == 1 ]] && log "crictl $NODEMAINT_CRICTL_VERSION ($NODEMAINT_CRICTL); containerd 1.6: $(command -v containerd), 1.7: $NODEMAINT_CONTAINERD17_DIR, 2.1: $NODEMAINT_CONTAINERD21_DIR, 2.4: $NODEMAINT_CONTAINERD24_DIR; kubelet: $NODEMAINT_KUBELET; CRI-O: $NODEMAINT_CRIO"
  printf '===== [setup] %s in %ss\n' "$([[ $setup_ok == 1 ]] && echo 'done' || echo 'FAILED')" "$((SECONDS - total_start))"
  if [[ $setup_ok != 1 ]]; then
    log "setup failed; no step can run"
    exit 1
  fi

  local lane_wanted=0
  for s in "${LANE_STEPS[@]}"; do wanted "$s" && lane_wanted=1; done
  # the lab lines of each pytest process (NODEMAINT_LAB_LANE: the lane's)
  log "lab lines: pytest $(lab_lines rest || echo '?'), matrix $(lab_lines lane || echo '?')$(wanted matrix || echo ' (deselected: pytest runs every line)')"
  if [[ "${TEST_JOBS:-2}" -ge 2 && $lane_wanted == 1 ]] && wanted pytest; then
    log "background lane: ${LANE_STEPS[*]} (output shown when pytest is done; TEST_JOBS=1: one after the other)"
    set -m   # the lane in a process group of its own, so that stop_lane ends all of it
    run_lane >"$STATE/lane.log" 2>&1 &
    LANE_PID=$!
    set +m
    run_step pytest step_pytest
    if kill -0 "$LANE_PID" 2>/dev/null; then
      log "pytest done; waiting for the background lane (${LANE_STEPS[*]})"
    fi
    wait "$LANE_PID"
    LANE_PID=
    printf '\n===== background lane output (%s) =====\n' "${LANE_STEPS[*]}"
    cat "$STATE/lane.log"
  else
    run_step doc step_doc
    run_step sanity step_sanity
    run_step lint step_lint
    run_step galaxy step_galaxy
    run_step molecule step_molecule
    run_step matrix step_matrix
    run_step pytest step_pytest
  fi

  local any_fail=0
  for s in "${STEPS[@]}"; do
    load_result "$s"
    [[ "${RESULT[$s]}" == FAIL ]] && any_fail=1
  done

  printf '\n===== summary (total %ss) =====\n' "$((SECONDS - total_start))"
  for s in "${STEPS[@]}"; do
    printf '%-9s %-4s %5ss  %s\n' "$s" "${RESULT[$s]}" "${DURATION[$s]}" "${REASON[$s]:-}"
  done
  local verdict=PASS
  [[ $any_fail != 0 ]] && verdict=FAIL
  echo "RESULT: $verdict"
  # pytest's own closing lines, verbatim (the lab lines in the lane, then the rest), then their sum
  # as one plain line that closes the output.
  local f
  for f in matrix pytest; do
    [[ -s "$STATE/$f.summary" ]] && printf '%s: %s\n' "$f" "$(cat "$STATE/$f.summary")"
  done
  pytest_total
  [[ $verdict == PASS ]]
}

main "$@"
