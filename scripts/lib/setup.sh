# shellcheck shell=bash
# Environment setup for scripts/test.sh and scripts/demo.sh: system packages, the real crictl,
# containerd 2.x (unpacked, not installed), the tools venv, offline collections and the
# ansible_collections/ build tree. Sourced, not executed.
# Every function is idempotent and quick when its result already exists.
# Expects: REPO_ROOT, CACHE_DIR, log().

# gcc and libc6-dev: CRI-O's build is cgo (containers/storage's unshare code, no other C library:
# its build tags leave out gpgme (containers_image_openpgp), btrfs and devicemapper, and seccomp
# is only built with the `seccomp` tag); conmon, CRI-O's container monitor, comes with podman.
APT_PACKAGES=(containerd runc busybox-static podman debootstrap python3-venv uidmap shellcheck
              git ca-certificates tar gzip util-linux iproute2 gcc libc6-dev conmon)

# Version of the PyPI `ansible` bundle that containers.podman is taken from
# (Galaxy is unreachable here; 12.x goes with ansible-core 2.19).
ANSIBLE_BUNDLE_VERSION=12.3.0

# shellcheck source=scripts/lib/debian-mirror.sh
source "$REPO_ROOT/scripts/lib/debian-mirror.sh"

as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo -n "$@"
  else log "need root for: $*"; return 1
  fi
}

setup_apt() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "apt: all packages present"
    return 0
  fi
  log "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # A third-party source that is unreachable must not stop us: the Debian ones suffice.
  as_root apt-get -o DPkg::Lock::Timeout=600 -q update >/dev/null 2>&1 \
    || log "apt-get update reported errors (continuing)"
  as_root apt-get -o DPkg::Lock::Timeout=600 -q -y install --no-install-recommends "${missing[@]}" >/dev/null \
    || { log "apt-get install failed"; return 1; }
}

# promtool (checks the metrics file, runs the alert-rule unit tests) from Debian's `prometheus`
# package, unpacked into the cache rather than installed: installing the package would also
# enable and start a Prometheus server (and pull in its web UI's JavaScript), and the test
# command must leave nothing running. The tests find it as $PROMTOOL (exported here).
setup_promtool() {
  local dir="$CACHE_DIR/promtool" deb
  if [[ -x "$dir/usr/bin/promtool" ]]; then
    log "promtool: reusing $dir/usr/bin/promtool"
  else
    log "promtool: unpacking Debian's prometheus package into $dir"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp" || return 1
    if ! (cd "$dir.tmp" && apt-get -q download prometheus >/dev/null 2>&1); then
      as_root apt-get -o DPkg::Lock::Timeout=600 -q update >/dev/null 2>&1 \
        || log "apt-get update reported errors (continuing)"
      (cd "$dir.tmp" && apt-get -q download prometheus >/dev/null) \
        || { log "promtool: apt-get download prometheus failed"; return 1; }
    fi
    deb="$(find "$dir.tmp" -maxdepth 1 -name 'prometheus_*.deb' -print -quit)"
    mkdir -p "$dir.tmp/root" && dpkg-deb -x "$deb" "$dir.tmp/root" || return 1
    rm -rf "$dir" && mkdir -p "$dir/usr/bin" \
      && mv "$dir.tmp/root/usr/bin/promtool" "$dir/usr/bin/promtool" && rm -rf "$dir.tmp" || return 1
  fi
  "$dir/usr/bin/promtool" --version >/dev/null 2>&1 || { log "promtool: $dir/usr/bin/promtool does not run"; return 1; }
  export PROMTOOL="$dir/usr/bin/promtool"
}

# The pinned versions (crictl, containerd 1.7 / 2.1 / 2.4): scripts/lib/versions.env, the one
# place they are written (tests/lab/versions.py reads the same file).
# shellcheck source=scripts/lib/versions.env
source "$REPO_ROOT/scripts/lib/versions.env"

# The module version of a crictl binary (a go-install build has no release string: ask
# `go version -m`; a release binary answers `crictl --version`). Prints e.g. 1.37.0.
crictl_version_of() {
  local bin="$1" v=""
  if command -v go >/dev/null; then
    v="$(go version -m "$bin" 2>/dev/null | awk '$1 == "mod" && $2 == "sigs.k8s.io/cri-tools" {print $3}')"
  fi
  if [[ -z "$v" || "$v" == "(devel)" ]]; then
    v="$("$bin" --version 2>/dev/null | awk '{print $3}')"
  fi
  v="${v#v}"
  [[ "$v" =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || return 1
  echo "$v"
}

version_at_least() {  # version_at_least HAVE WANT
  [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]
}

# Exports NODEMAINT_CRICTL (absolute path) and NODEMAINT_CRICTL_VERSION.
setup_crictl() {
  local found v dir
  found="$(command -v crictl 2>/dev/null || true)"
  if [[ -n "$found" ]] && v="$(crictl_version_of "$found")" && version_at_least "$v" "$CRICTL_MIN_VERSION"; then
    NODEMAINT_CRICTL="$(readlink -f "$found")"
    log "crictl: using $NODEMAINT_CRICTL from PATH (cri-tools $v)"
  else
    [[ -n "$found" ]] && log "crictl: $found is older than $CRICTL_MIN_VERSION or of unknown version; not used"
    dir="$CACHE_DIR/crictl-$CRICTL_VERSION"
    if [[ ! -x "$dir/crictl" ]] || ! v="$(crictl_version_of "$dir/crictl")" || [[ "v$v" != "$CRICTL_VERSION" ]]; then
      if ! command -v go >/dev/null; then
        log "crictl: no crictl >= $CRICTL_MIN_VERSION on PATH and no 'go' to build it."
        log "  Install cri-tools (https://github.com/kubernetes-sigs/cri-tools/releases) so that crictl is on PATH,"
        log "  or install Go and rerun (it runs: go install sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION)"
        return 1
      fi
      log "crictl: building sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION with $(go version | awk '{print $3}') into $dir (first run: about 3 min)"
      mkdir -p "$dir" "$CACHE_DIR/go"
      if ! GOBIN="$dir" GOPATH="$CACHE_DIR/go/path" GOMODCACHE="$CACHE_DIR/go/mod" \
           GOCACHE="$CACHE_DIR/go/build" GOFLAGS="${GOFLAGS:-} -modcacherw" CGO_ENABLED=0 \
           go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" >"$CACHE_DIR/go/crictl-build.log" 2>&1; then
        log "crictl: go install failed (log: $CACHE_DIR/go/crictl-build.log):"
        tail -n 20 "$CACHE_DIR/go/crictl-build.log" >&2
        log "  Install cri-tools (https://github.com/kubernetes-sigs/cri-tools/releases) so that crictl is on PATH, and rerun"
        return 1
      fi
      v="$(crictl_version_of "$dir/crictl")" || { log "crictl: cannot tell the version of $dir/crictl"; return 1; }
    fi
    NODEMAINT_CRICTL="$dir/crictl"
    log "crictl: using $NODEMAINT_CRICTL (cri-tools $v, go install, cached)"
  fi
  NODEMAINT_CRICTL_VERSION="$v"
  export NODEMAINT_CRICTL NODEMAINT_CRICTL_VERSION
}

# containerd_tree_into_place LINE TMP TOP BINDIR FROM: TMP, a finished tree of containerd LINE with
# its binaries in TMP/BINDIR (made from FROM), checked, marked .complete and renamed to TOP; a
# concurrent set-up that was first wins (TMP is dropped). TMP is removed on every failure.
containerd_tree_into_place() {
  local line="$1" tmp="$2" top="$3" bindir="$4" from="$5" b
  for b in containerd containerd-shim-runc-v2 ctr; do
    [[ -x "$tmp/$bindir/$b" ]] || { log "containerd $line: $bindir/$b missing from $from"; rm -rf "$tmp"; return 1; }
  done
  touch "$tmp/.complete"
  if [[ -f "$top/.complete" ]]; then
    rm -rf "$tmp"  # a concurrent set-up was first
  elif ! { rm -rf "$top" && mv -T "$tmp" "$top"; }; then
    rm -rf "$tmp"; return 1
  fi
}

# containerd from a Debian package of another release, for the lab: downloaded with apt through a
# private sources list / state / cache (the machine's apt sources stay untouched) and unpacked
# with dpkg-deb -x under $CACHE_DIR (never installed). Debian 12's /usr/bin/runc is used with it.
# setup_containerd_deb LINE SUITE VERSION: sets CONTAINERD_DIR (containerd, containerd-shim-runc-v2, ctr).
setup_containerd_deb() {
  local line="$1" suite="$2" version="$3" top deb v
  top="$CACHE_DIR/containerd-$version"
  CONTAINERD_DIR="$top/root/usr/bin"
  if [[ ! -f "$top/.complete" ]]; then
    log "containerd $line: downloading Debian $suite's containerd $version (private apt dirs, not installed)"
    # Built in a private temporary directory and renamed into place: a concurrent set-up (another
    # worktree's run that gave up waiting for the set-up lock) never sees a half-unpacked tree.
    local tmp apt
    tmp="$(mktemp -d "$CACHE_DIR/.containerd-$line.XXXXXX")" && chmod 755 "$tmp" || return 1
    apt="$tmp/apt"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/sources.list.d" "$tmp/deb"
    # the machine's own Debian mirror, the other release's suite
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(debian_mirror) $suite main" \
      >"$apt/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/sources.list.d"
                -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -q)
    apt-get "${opts[@]}" update >"$tmp/apt-update.log" 2>&1 \
      || { log "containerd $line: apt-get update ($suite, private lists) failed:"; tail -n 20 "$tmp/apt-update.log" >&2; rm -rf "$tmp"; return 1; }
    (cd "$tmp/deb" && apt-get "${opts[@]}" download "containerd=$version") >"$tmp/apt-download.log" 2>&1 \
      || { log "containerd $line: apt-get download containerd=$version ($suite) failed:"; tail -n 20 "$tmp/apt-download.log" >&2; rm -rf "$tmp"; return 1; }
    deb="$(find "$tmp/deb" -maxdepth 1 -name 'containerd_*.deb' -print -quit)"
    [[ -n "$deb" ]] || { log "containerd $line: no .deb downloaded"; rm -rf "$tmp"; return 1; }
    dpkg-deb -x "$deb" "$tmp/root" || { log "containerd $line: dpkg-deb -x $deb failed"; rm -rf "$tmp"; return 1; }
    rm -rf "$apt"  # the package lists are big and not needed again
    containerd_tree_into_place "$line" "$tmp" "$top" root/usr/bin "$deb" || return 1
  fi
  v="$("$CONTAINERD_DIR/containerd" --version 2>/dev/null | awk '{print $3}')"
  [[ "$v" == "$line".* || "$v" == "v$line".* ]] \
    || { log "containerd $line: $CONTAINERD_DIR/containerd does not run or is not $line ('$v')"; return 1; }
  log "containerd $line: using $CONTAINERD_DIR (containerd $v)"
}

# containerd built from the Go module proxy with `go install` (like crictl), into the cache:
# containerd, containerd-shim-runc-v2 and ctr of one module version, built once (.complete),
# with Go's module and build caches under $CACHE_DIR/go (the build log: $CACHE_DIR/go/containerd-LINE-build.log).
# setup_containerd_go LINE VERSION: sets CONTAINERD_DIR.
setup_containerd_go() {
  local line="$1" version="$2" top tmp v
  local mod=github.com/containerd/containerd/v2
  top="$CACHE_DIR/containerd-go-$version"
  CONTAINERD_DIR="$top/bin"
  if [[ ! -f "$top/.complete" ]]; then
    command -v go >/dev/null || { log "containerd $line: no 'go' to build $mod@$version (install Go and rerun)"; return 1; }
    log "containerd $line: building $mod/cmd/{containerd,containerd-shim-runc-v2,ctr}@$version with $(go version | awk '{print $3}') into $top (first run: about 3-5 min)"
    tmp="$(mktemp -d "$CACHE_DIR/.containerd-$line.XXXXXX")" && chmod 755 "$tmp" || return 1
    mkdir -p "$tmp/bin" "$CACHE_DIR/go"
    if ! GOBIN="$tmp/bin" GOPATH="$CACHE_DIR/go/path" GOMODCACHE="$CACHE_DIR/go/mod" \
         GOCACHE="$CACHE_DIR/go/build" GOFLAGS="${GOFLAGS:-} -modcacherw" \
         go install -tags 'no_btrfs no_devmapper no_zfs' \
           "$mod/cmd/containerd@$version" "$mod/cmd/containerd-shim-runc-v2@$version" "$mod/cmd/ctr@$version" \
           >"$CACHE_DIR/go/containerd-$line-build.log" 2>&1; then
      log "containerd $line: go install failed (log: $CACHE_DIR/go/containerd-$line-build.log):"
      tail -n 20 "$CACHE_DIR/go/containerd-$line-build.log" >&2
      rm -rf "$tmp"
      return 1
    fi
    containerd_tree_into_place "$line" "$tmp" "$top" bin "go install" || return 1
  fi
  v="$("$CONTAINERD_DIR/containerd" --version 2>/dev/null | awk '{print $3}')"
  [[ "$v" == "${version#v}" || "$v" == "${version#v}+"* ]] \
    || { log "containerd $line: $CONTAINERD_DIR/containerd does not run or is not $version ('$v')"; return 1; }
  log "containerd $line: using $CONTAINERD_DIR (containerd $v, go install, cached)"
}

# Every containerd line of the lab but Debian 12's own 1.6 (on PATH). Exports one directory per
# line: NODEMAINT_CONTAINERD17_DIR, NODEMAINT_CONTAINERD21_DIR (also as NODEMAINT_CONTAINERD2_DIR,
# its older name), NODEMAINT_CONTAINERD24_DIR. tests/lab/lab.py reads them (CONTAINERD_DIR_ENV).
# setup_containerds [LINE...]: only these lines (default: all three).
setup_containerds() {
  local line lines=("$@")
  [[ ${#lines[@]} -gt 0 ]] || lines=(1.7 2.1 2.4)
  for line in "${lines[@]}"; do
    case "$line" in
      1.6) ;;
      1.7) setup_containerd_deb 1.7 "$CONTAINERD_1_7_SUITE" "$CONTAINERD_1_7_DEB" || return 1
           export NODEMAINT_CONTAINERD17_DIR="$CONTAINERD_DIR" ;;
      2.1) setup_containerd_deb 2.1 "$CONTAINERD_2_1_SUITE" "$CONTAINERD_2_1_DEB" || return 1
           export NODEMAINT_CONTAINERD21_DIR="$CONTAINERD_DIR" NODEMAINT_CONTAINERD2_DIR="$CONTAINERD_DIR" ;;
      2.4) setup_containerd_go 2.4 "$CONTAINERD_2_4_GO" || return 1
           export NODEMAINT_CONTAINERD24_DIR="$CONTAINERD_DIR" ;;
      *) log "containerd: no line '$line' (lines: 1.6 1.7 2.1 2.4)"; return 1 ;;
    esac
  done
}

# The Go build of containerd 2.4 (about 3 min on a fresh machine, CPU) in the background while
# the caller does other set-up (downloads, venv): start with setup_containerd_go_start, then
# setup_containerd_go_wait (prints its log; exports like setup_containerds 2.4). Quick when built.
# in_background NAME CMD...: CMD in a subshell in the background (a CPU-bound Go build on a fresh
# machine) while the caller does other set-up; background_wait NAME CMD...: wait for it, print its
# output, then run CMD again in this shell (quick once built) for the exports it makes.
declare -gA SETUP_BG_PID SETUP_BG_LOG
in_background() {
  local name="$1"; shift
  SETUP_BG_LOG[$name]="$(mktemp)"
  ( "$@" ) >"${SETUP_BG_LOG[$name]}" 2>&1 &
  SETUP_BG_PID[$name]=$!
}

background_wait() {
  local name="$1" rc=0; shift
  [[ -n "${SETUP_BG_PID[$name]:-}" ]] || return 1   # never started (an earlier set-up step failed)
  wait "${SETUP_BG_PID[$name]}" || rc=1
  cat "${SETUP_BG_LOG[$name]}" >&2; rm -f "${SETUP_BG_LOG[$name]}"
  [[ $rc == 0 ]] && "$@" >/dev/null 2>&1
}

setup_containerd_go_start() { in_background containerd-2.4 setup_containerds 2.4; }
setup_containerd_go_wait() { background_wait containerd-2.4 setup_containerds 2.4; }

# The upstream kubelet (KUBELET_VERSION, versions.env) for the lab's kubelet tests, built from
# the Go module proxy into $CACHE_DIR/kubelet-VERSION/kubelet (.complete when done; about 5 min
# on 2 cores the first time, then cached). k8s.io/kubernetes cannot be `go install`ed: its go.mod
# points its staging modules (k8s.io/api, ...) at ./staging/...; so a wrapper module requires it
# and replaces each of those with the published module of the same release (v1.X.Y -> v0.X.Y),
# the list read from kubernetes' own go.mod so that it follows the version.
# Exports NODEMAINT_KUBELET (absolute path). The build log: $CACHE_DIR/go/kubelet-build.log.
setup_kubelet() {
  local version="$KUBELET_VERSION" top tmp v staging gomod log
  top="$CACHE_DIR/kubelet-$version"
  log="$CACHE_DIR/go/kubelet-build.log"
  if [[ ! -f "$top/.complete" ]]; then
    command -v go >/dev/null || { log "kubelet: no 'go' to build k8s.io/kubernetes/cmd/kubelet@$version (install Go and rerun)"; return 1; }
    log "kubelet: building k8s.io/kubernetes/cmd/kubelet@$version with $(go version | awk '{print $3}') into $top (first run: about 5 min, 85 MB)"
    mkdir -p "$CACHE_DIR/go"
    tmp="$(mktemp -d "$CACHE_DIR/.kubelet.XXXXXX")" && chmod 755 "$tmp" || return 1
    staging="v0.${version#v1.}"
    local goenv=(GOPATH="$CACHE_DIR/go/path" GOMODCACHE="$CACHE_DIR/go/mod" GOCACHE="$CACHE_DIR/go/build"
                 GOFLAGS="${GOFLAGS:-} -modcacherw")
    if ! (cd "$tmp" && env "${goenv[@]}" go mod download k8s.io/kubernetes@"$version") >"$log" 2>&1; then
      log "kubelet: cannot download k8s.io/kubernetes@$version from the Go module proxy ($(cd "$tmp" && go env GOPROXY)) (log: $log):"
      tail -n 10 "$log" >&2
      log "  check that the Go module proxy is reachable (GOPROXY, https_proxy) and rerun"
      rm -rf "$tmp"; return 1
    fi
    gomod="$CACHE_DIR/go/mod/cache/download/k8s.io/kubernetes/@v/$version.mod"
    {
      printf 'module kubeletwrap\n\ngo 1.26\n\nrequire k8s.io/kubernetes %s\n\n' "$version"
      # kubernetes' own `replace ( k8s.io/X => ./staging/src/k8s.io/X ... )` lines
      awk -v v="$staging" '$2 == "=>" && $3 ~ /^\.\/staging\// {print "replace " $1 " => " $1 " " v}' "$gomod"
    } >"$tmp/go.mod"
    grep -q '^replace ' "$tmp/go.mod" || { log "kubelet: no staging modules found in $gomod (its go.mod changed shape?)"; rm -rf "$tmp"; return 1; }
    printf 'package main\n\nimport _ "k8s.io/kubernetes/cmd/kubelet/app"\n\nfunc main() {}\n' >"$tmp/main.go"
    local pkg=k8s.io/component-base/version minor="${version#v1.}"
    local ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor%%.*}"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$version"
    if ! (cd "$tmp" && env "${goenv[@]}" GOFLAGS="${GOFLAGS:-} -modcacherw -mod=mod" go mod tidy \
          && env "${goenv[@]}" nice -n 19 go build -ldflags "$ldflags" -o "$tmp/kubelet" k8s.io/kubernetes/cmd/kubelet) \
          >>"$log" 2>&1; then
      log "kubelet: the build failed (log: $log):"
      tail -n 20 "$log" >&2
      if grep -qiE 'proxy|dial tcp|no such host|i/o timeout|connection refused' "$log"; then
        log "  the Go module proxy ($(go env GOPROXY)) could not be reached: check GOPROXY / https_proxy and rerun"
      fi
      rm -rf "$tmp"; return 1
    fi
    touch "$tmp/.complete"
    if [[ -f "$top/.complete" ]]; then rm -rf "$tmp"      # a concurrent set-up was first
    elif ! { rm -rf "$top" && mv -T "$tmp" "$top"; }; then rm -rf "$tmp"; return 1
    fi
  fi
  v="$("$top/kubelet" --version 2>/dev/null | awk '{print $2}')"
  [[ "$v" == "$version" ]] || { log "kubelet: $top/kubelet does not run or is not $version ('$v')"; return 1; }
  export NODEMAINT_KUBELET="$top/kubelet"
  log "kubelet: using $NODEMAINT_KUBELET (kubelet $v, built from the Go module proxy, cached)"
}

# The kubelet's Go build (CPU-bound, about 5 min on a fresh machine) in the background while the
# rest of the set-up runs, like setup_containerd_go_start / _wait. Quick when built.
setup_kubelet_start() { in_background kubelet setup_kubelet; }
setup_kubelet_wait() { background_wait kubelet setup_kubelet; }

# CRI-O for the lab's CRI-O lane, built from the Go module proxy into the cache (.complete).
# `go install github.com/cri-o/cri-o/cmd/crio@V` does not work (the proxy serves the module but
# not its version list), so a wrapper module requires it, tidies, and builds its cmd/crio with
# the tags that leave out gpgme, btrfs and devicemapper (lab-facts). pinns, CRI-O's namespace
# pinner, is C and not built here: the lab brings a stand-in (tests/lab/crio.py). About 95 s of
# CPU on 2 cores, at the lowest priority; the log: $CACHE_DIR/go/crio-build.log.
# setup_crio: exports NODEMAINT_CRIO (the crio binary).
setup_crio() {
  local version="$CRIO_GO" top tmp v
  local mod=github.com/cri-o/cri-o
  top="$CACHE_DIR/crio-$version"
  if [[ ! -f "$top/.complete" ]]; then
    command -v go >/dev/null || { log "crio: no 'go' to build $mod@$version (install Go and rerun)"; return 1; }
    log "crio: building $mod/cmd/crio@$version with $(go version | awk '{print $3}') into $top (first run: about 2-4 min)"
    tmp="$(mktemp -d "$CACHE_DIR/.crio.XXXXXX")" && chmod 755 "$tmp" || return 1
    mkdir -p "$tmp/mod" "$tmp/bin" "$CACHE_DIR/go"
    printf 'module nodemaint.invalid/crio-build\n\ngo 1.24\n\nrequire %s %s\n' "$mod" "$version" >"$tmp/mod/go.mod"
    printf 'package main\n\nimport _ "%s/pkg/config"\n\nfunc main() {}\n' "$mod" >"$tmp/mod/main.go"
    local log_file="$CACHE_DIR/go/crio-build.log"
    if ! (cd "$tmp/mod" && export GOPATH="$CACHE_DIR/go/path" GOMODCACHE="$CACHE_DIR/go/mod" \
            GOCACHE="$CACHE_DIR/go/build" GOFLAGS="${GOFLAGS:-} -modcacherw -mod=mod" CGO_ENABLED=1 \
          && nice -n 19 go mod tidy \
          && nice -n 19 go build -o "$tmp/bin/crio" \
               -tags "containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper" \
               "$mod/cmd/crio") >"$log_file" 2>&1; then
      log "crio: the build failed (log: $log_file):"
      tail -n 20 "$log_file" >&2
      if grep -qiE 'dial tcp|no such host|i/o timeout|connection refused|proxyconnect|TLS handshake' "$log_file"; then
        log "  the Go module proxy ($(go env GOPROXY)) could not be reached: CRI-O's lane needs it once, to build"
        log "  $mod@$version into $top; rerun where it is reachable (or set GOPROXY to a reachable mirror)"
      fi
      rm -rf "$tmp"
      return 1
    fi
    rm -rf "$tmp/mod"
    touch "$tmp/.complete"
    if [[ -f "$top/.complete" ]]; then
      rm -rf "$tmp"  # a concurrent set-up was first
    elif ! { rm -rf "$top" && mv -T "$tmp" "$top"; }; then
      rm -rf "$tmp"; return 1
    fi
  fi
  v="$("$top/bin/crio" --version 2>/dev/null | awk '$1 == "crio" && $2 == "version" {print $3}')"
  [[ "$v" == "${version#v}" ]] \
    || { log "crio: $top/bin/crio does not run or is not $version ('$v')"; return 1; }
  export NODEMAINT_CRIO="$top/bin/crio"
  log "crio: using $NODEMAINT_CRIO (CRI-O $v, go build, cached)"
}

# CRI-O's Go build (about 2-4 min on a fresh machine, CPU) in the background while the caller does
# other set-up, like containerd 2.4's: setup_crio_start, then setup_crio_wait (prints its log,
# exports NODEMAINT_CRIO). Quick when built.
setup_crio_start() { in_background crio setup_crio; }
setup_crio_wait() { background_wait crio setup_crio; }

# The older name: containerd 2.1 only (exports NODEMAINT_CONTAINERD2_DIR).
setup_containerd2() { setup_containerds 2.1; }

# A Python >= 3.11 that can create venvs with pip.
find_python() {
  local c
  for c in "${NODEMAINT_PYTHON:-}" python3.11 python3 /usr/bin/python3; do
    [[ -n "$c" ]] || continue
    command -v "$c" >/dev/null || continue
    if "$c" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$c"
      return 0
    fi
  done
  return 1
}

setup_venv() {
  local py key
  py="$(find_python)" || { log "no Python >= 3.11 with venv/ensurepip found"; return 1; }
  key="$( { cat "$REPO_ROOT/tests/requirements.txt"; "$py" -c 'import sys; print(sys.version)'; echo "$py"; } \
          | sha256sum | cut -c1-12)"
  VENV="$CACHE_DIR/venv/$key"
  if [[ ! -f "$VENV/.complete" ]]; then
    log "venv: creating $VENV with $py (first run: about 1-2 min)"
    rm -rf "$VENV"
    mkdir -p "$CACHE_DIR/venv"
    "$py" -m venv "$VENV" || return 1
    "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
    "$VENV/bin/python" -m pip install -q -r "$REPO_ROOT/tests/requirements.txt" 2>&1 \
      | grep -v "^WARNING: Location" || true
    "$VENV/bin/python" -m pip check >/dev/null 2>&1 || log "venv: pip check reports conflicts (continuing)"
    "$VENV/bin/python" -c 'import ansible, ansiblelint, molecule, molecule_plugins.podman, pytest, grpc, grpc_tools, google.protobuf, testinfra' \
      || { log "venv: install incomplete"; return 1; }
    touch "$VENV/.complete"
  else
    log "venv: reusing $VENV"
  fi
  export VIRTUAL_ENV="$VENV"
  export PATH="$VENV/bin:$PATH"
  hash -r
}

# containers.podman (for the Molecule podman driver) unpacked from the PyPI `ansible` wheel.
setup_collections() {
  COLLECTIONS_DEPS="$CACHE_DIR/collections/ansible-$ANSIBLE_BUNDLE_VERSION"
  if [[ -f "$COLLECTIONS_DEPS/.complete" ]]; then
    log "collections: reusing $COLLECTIONS_DEPS"
    return 0
  fi
  log "collections: extracting containers.podman from ansible==$ANSIBLE_BUNDLE_VERSION"
  local tmp
  tmp="$(mktemp -d)"
  python -m pip download -q --no-deps "ansible==$ANSIBLE_BUNDLE_VERSION" -d "$tmp" 2>&1 \
    | grep -v "^WARNING: Location" || true
  rm -rf "$COLLECTIONS_DEPS"
  mkdir -p "$COLLECTIONS_DEPS"
  python - "$tmp" "$COLLECTIONS_DEPS" <<'PY' || { rm -rf "$tmp"; return 1; }
import glob, sys, zipfile
src, dest = sys.argv[1:3]
wheels = glob.glob(src + "/ansible-*.whl")
if not wheels:
    sys.exit("ansible wheel not downloaded")
prefix = "ansible_collections/containers/podman/"
with zipfile.ZipFile(wheels[0]) as zf:
    names = [n for n in zf.namelist() if n.startswith(prefix)]
    if not names:
        sys.exit("containers.podman not in " + wheels[0])
    zf.extractall(dest, names)
PY
  rm -rf "$tmp"
  touch "$COLLECTIONS_DEPS/.complete"
}

# A copy of the working tree (tracked + untracked-not-ignored files) at
# $BUILD_ROOT/ansible_collections/nodemaint/image_gc. A copy, not a symlink:
# ansible-test resolves the real path of its working directory. One build tree per run
# (runs from the same checkout may overlap); removed at exit unless KEEP_BUILD=1.
setup_build_tree() {
  mkdir -p "$CACHE_DIR/build"
  # Trees of earlier runs that were killed before their exit trap ran (older than a day).
  find "$CACHE_DIR/build" -mindepth 1 -maxdepth 1 -type d -mtime +0 -exec rm -rf {} + 2>/dev/null || true
  BUILD_ROOT="$(mktemp -d "$CACHE_DIR/build/run.XXXXXX")"
  COLLECTION_DIR="$BUILD_ROOT/ansible_collections/nodemaint/image_gc"
  mkdir -p "$COLLECTION_DIR"
  if git -C "$REPO_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO_ROOT" && git ls-files -z --cached --others --exclude-standard \
      | while IFS= read -r -d '' f; do
          case "$f" in .ansible/*|tests/output/*|.cache/*) continue ;; esac  # tool caches, not sources
          [[ -e "$f" || -L "$f" ]] && printf '%s\0' "$f"
        done \
      | tar --null -T - -cf -) | tar -C "$COLLECTION_DIR" -xf - || return 1
  else
    (cd "$REPO_ROOT" && tar --exclude=./tests/output --exclude=./.ansible --exclude=.git --exclude=__pycache__ \
      --exclude=.pytest_cache -cf - .) | tar -C "$COLLECTION_DIR" -xf - || return 1
  fi
  export ANSIBLE_COLLECTIONS_PATH="$BUILD_ROOT:$COLLECTIONS_DEPS"
  log "build tree: $COLLECTION_DIR"
}

cleanup_build_tree() {
  [[ -n "${BUILD_ROOT:-}" && -d "$BUILD_ROOT" && "${KEEP_BUILD:-0}" != 1 ]] && rm -rf "$BUILD_ROOT"
  return 0
}

# ansible-test downloads a pip bootstrap script from a host that is not a package
# registry. Pre-seed its cache with a script that bootstraps pip from ensurepip and
# then installs what ansible-test asked for (pip==<version>) from the package index.
setup_ansible_test_pip() {
  local ver cache
  ver="$(python - <<'PY'
from types import SimpleNamespace
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(SimpleNamespace(version="3.11"))["pip"])
PY
)" || { log "cannot determine ansible-test's pip version"; return 1; }
  cache="$HOME/.ansible/test/cache/get_pip_${ver//./_}.py"
  if [[ -f "$cache" ]]; then
    grep -q 'nodemaint-image-gc v2' "$cache" && return 0         # ours, current
    grep -q 'nodemaint-image-gc' "$cache" || return 0             # a real get-pip script: keep it
  fi
  mkdir -p "$(dirname "$cache")"
  cat >"$cache" <<'PY'
# get-pip replacement written by nodemaint-image-gc v2 (scripts/lib/setup.sh).
# ansible-test runs it as: python get_pip.py [pip install options] pip==X --no-setuptools --no-wheel
import ensurepip

# pip from the Python's own bundle: enough for ansible-test to install the sanity
# requirements from the package index. (The exact pip==X it also asks for is not
# needed, and installing it here would bypass the pip settings ansible-test passes.)
ensurepip.bootstrap(upgrade=True)
PY
  log "ansible-test: seeded $cache"
}
