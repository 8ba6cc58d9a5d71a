#!/usr/bin/env bash
# The demo of nodemaint.image_gc:   ./scripts/demo.sh [--containerd 1.6|1.7|2.1|2.4]
#
# On a Debian 12 machine, as root: installs what it needs (Debian's containerd and runc, the real
# crictl -- from PATH if new enough, else built once with `go install` into the cache --, the
# chosen containerd line if not Debian 12's own, a tools venv), starts a local lab node -- a real
# containerd in a private directory, with real garbage:
# exited containers, NotReady pod sandboxes old and young, unused, dangling and excluded images,
# a running container, the sandbox image -- then runs the on-demand playbook against it, first
# with --check, then for real, and shows the state before and after. It leaves nothing running.
#
# --containerd 1.6 (default): Debian 12's containerd 1.6.20; 1.7: Debian 13's 1.7.24 and 2.1: Debian
# sid's 2.1.9 (each downloaded and unpacked into the cache, never installed); 2.4: 2.4.2 built once
# with `go install` into the cache (about 3 min the first time). Each with its own ctr and shim, and
# Debian 12's runc. Versions: scripts/lib/versions.env.
#
# Environment: NODEMAINT_CACHE_DIR (default /var/cache/nodemaint-image-gc), NO_SETUP_APT=1,
# DEMO_KEEP_LAB=1 (leave the lab running for a look; stop it with `python -m tests.lab down --dir DIR`).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${NODEMAINT_CACHE_DIR:-/var/cache/nodemaint-image-gc}"
export NODEMAINT_CACHE_DIR="$CACHE_DIR"
log() { printf '[demo] %s\n' "$*" >&2; }
# shellcheck source=scripts/lib/setup.sh
source "$REPO_ROOT/scripts/lib/setup.sh"

banner() { printf '\n=== %s ===\n' "$*"; }

CONTAINERD_CHOICE=1.6
while [[ $# -gt 0 ]]; do
  case "$1" in
    --containerd) CONTAINERD_CHOICE="${2:-}"; shift 2 || { log "--containerd needs 1.6, 1.7, 2.1 or 2.4"; exit 2; } ;;
    --containerd=*) CONTAINERD_CHOICE="${1#*=}"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) log "unknown argument: $1 (usage: $0 [--containerd 1.6|1.7|2.1|2.4])"; exit 2 ;;
  esac
done
case "$CONTAINERD_CHOICE" in
  1.6|1.7|2.1|2.4) ;;
  *) log "--containerd: '$CONTAINERD_CHOICE' is not one of 1.6, 1.7, 2.1, 2.4"; exit 2 ;;
esac

if [[ "${NO_SETUP_APT:-0}" != 1 ]]; then setup_apt; fi
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/setup.lock"     # the same set-up lock as scripts/test.sh (builds, downloads)
flock -w 900 9 || log "setup lock not acquired after 15 min (continuing)"
setup_crictl
LAB_ARGS=()
CTR=(ctr)
CONTAINERD_BIN=containerd
if [[ "$CONTAINERD_CHOICE" != 1.6 ]]; then
  setup_containerds "$CONTAINERD_CHOICE"     # sets CONTAINERD_DIR
  LAB_ARGS=(--containerd-dir "$CONTAINERD_DIR")
  CTR=("$CONTAINERD_DIR/ctr")
  CONTAINERD_BIN="$CONTAINERD_DIR/containerd"
fi
setup_venv
flock -u 9; exec 9>&-
COLLECTIONS_DEPS="${COLLECTIONS_DEPS:-}"
setup_build_tree
export ANSIBLE_COLLECTIONS_PATH="$BUILD_ROOT"

LAB_DIR="$(mktemp -d /tmp/nodemaint-demo.XXXXXX)"
log "lab directory: $LAB_DIR (removed at exit unless DEMO_KEEP_LAB=1)"
cleanup() {
  if [[ "${DEMO_KEEP_LAB:-0}" == 1 ]]; then
    log "lab left running in $LAB_DIR"
    return
  fi
  (cd "$REPO_ROOT" && python -m tests.lab down --dir "$LAB_DIR" --remove >/dev/null) || log "lab teardown reported problems"
}
trap cleanup EXIT

banner "Starting a lab node: containerd $("$CONTAINERD_BIN" --version | awk '{print $3}') with garbage, crictl $NODEMAINT_CRICTL_VERSION"
# containerd's root on a 128 MiB tmpfs of its own: the image filesystem's figures (statvfs) are the
# lab's alone, so the per-host line shows what the run freed (on the machine's big root filesystem a
# few MB are lost in the rounding, and other processes write there all the time)
(cd "$REPO_ROOT" && python -m tests.lab up --dir "$LAB_DIR" --scenario standard --gap 40 --root-tmpfs 128m "${LAB_ARGS[@]}" >/dev/null)
SOCKET="$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["socket"])' "$LAB_DIR/lab.json")"
CRICTL=("$NODEMAINT_CRICTL" --runtime-endpoint "unix://$SOCKET")

show_state() {
  "${CRICTL[@]}" pods 2>/dev/null
  echo
  "${CRICTL[@]}" ps -a 2>/dev/null
  echo
  "${CRICTL[@]}" images 2>/dev/null
  echo
  echo "content store: $("${CTR[@]}" --address "$SOCKET" -n k8s.io content ls -q | wc -l) blobs"
}

banner "Before"
show_state

# The lab's old NotReady sandboxes were created 40 s before the young ones: a min_age between
# the two keeps the young ones, as 10m (the default) would on a real node. The young ones' age
# plus 35 s stays above their age when phase 2 runs (even on a slow machine) and below the old ones'.
min_age() {
  python - "$LAB_DIR/lab.json" <<'PY'
import json, sys, time
s = json.load(open(sys.argv[1]))["scenario"]
young_age = (time.time_ns() - s["young_min_created_ns"]) // 10**9
print("%ds" % (young_age + 35))
PY
}

cat >"$LAB_DIR/inventory.ini" <<EOF
[lab]
lab-node ansible_connection=local ansible_python_interpreter=$(command -v python)

[lab:vars]
image_gc_crictl_path=$NODEMAINT_CRICTL
image_gc_ctr_path=$(command -v "${CTR[0]}")
image_gc_runtime_endpoint=unix://$SOCKET
image_gc_lock_path=$LAB_DIR/run.lock
image_gc_image_record_path=$LAB_DIR/images.json
# the lab's images were imported moments ago; image_min_age (default 10m) would keep them all
image_gc_image_min_age=0s
# the lab runs no kubelet, so no kubelet root is found live and every pod would count as live: its
# kubelet root is an empty one (the kubelet tracks none of the lab's pods), set as an operator would
image_gc_kubelet_root=$LAB_DIR/kubelet
# The demo's own image policy: every unused image goes. The collection's default
# (image_unused_for 21d) keeps an image used, or first seen, within 21 days, so on this
# fresh lab it would keep them all; a node keeps its default.
image_gc_image_unused_for=0s
EOF
mkdir -p "$LAB_DIR/kubelet/pods"

run_prune() {
  ansible-playbook -i "$LAB_DIR/inventory.ini" nodemaint.image_gc.prune \
    -e image_gc_sandbox_min_age="$(min_age)" \
    -e '{"image_gc_image_exclude": ["docker.io/feas/keep:*"]}' "$@"
}

log "the demo's inventory sets image_gc_image_unused_for=0s: every unused image goes (the default keeps 21 days of use)"
banner "Dry run: ansible-playbook nodemaint.image_gc.prune --check"
run_prune --check

banner "Real run: ansible-playbook nodemaint.image_gc.prune"
run_prune

banner "After"
show_state

banner "Second run (nothing left to remove: changed=0)"
run_prune | tail -n 3
