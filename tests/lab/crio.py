"""A private CRI-O for tests, beside the containerd lab (``tests.lab.lab.Lab``), driven by the same
real crictl and CRI client (``CRILab``): CRI-O speaks the same CRI, so scenarios, pods and the
collection's runs work on it unchanged; what differs is here.

- ``crio`` is v1.34.x built from the Go module proxy by scripts/lib/setup.sh (``setup_crio``, exported
  as $NODEMAINT_CRIO; the version is pinned in scripts/lib/versions.env CRIO_GO).
- It runs without a config file, every path given on its command line inside one private base
  directory: storage (``vfs``) root and runroot, socket, state, logs, exits, namespaces, version and
  clean-shutdown files. ``conmon`` is Debian's (installed with podman), ``runc`` Debian 12's behind a
  wrapper (``RUNC_WRAPPER``, why: there), ``pinns`` a stand-in script (``PINNS``, why: there).
- Images go into its storage with podman (``podman --root R --runroot RR --storage-driver vfs load``)
  from the OCI image-layout tars ``tests.lab.images`` builds (the same images as containerd's lab).
- Teardown: sandboxes, crio by PID, the conmons of its containers by PID, container processes whose
  root lies in the base, every mount below the base (pinned namespaces, shm): nothing is left.

What CRI-O does that containerd does not (measured here, see tests/fixtures/crictl-1.37.0_crio-1.34.0/):
it pins its pause image and every image of ``--pinned-images`` (the CRI's ``pinned``), it reports
its pause image in ``crictl info`` (``config.pause_image``... see ``reports_sandbox_image``), and it
has no containerd content store (``ctr`` against its socket fails).
"""

import concurrent.futures as cf
import os
import re
import shutil
import signal
import subprocess
import sys

from . import images
from .lab import CACHE_DIR, SANDBOX_IMAGE, CRILab, _cmdline, mounts_under, pids_matching
from .versions import PINNED

CRIO_ENV = "NODEMAINT_CRIO"
CRIO_VERSION = PINNED["CRIO_GO"]                       # 'v1.34.0'
CRIO_CACHED = os.path.join(CACHE_DIR, "crio-" + CRIO_VERSION, "bin", "crio")
CRIO_HOWTO = ("run ./scripts/test.sh once: its set-up builds CRI-O %s from the Go module proxy into %s "
              "(scripts/lib/setup.sh setup_crio), or set %s to a crio binary"
              % (CRIO_VERSION, os.path.dirname(CRIO_CACHED), CRIO_ENV))

# CRI-O runs `pinns` for every pod (host-network ones too: --uts) to create and pin the pod's
# namespaces, and checks at start that the path exists. The real pinns is a small C program of
# the cri-o repository, not of its Go module; its job is small enough for util-linux: `unshare
# --NS=FILE` makes a namespace persistent by bind-mounting it onto FILE, and a namespace shared
# with the host (`--NS=host`) is the caller's own, bind-mounted from /proc. Sysctls (-s) are not
# applied: the lab's pods ask for none. No output: CRI-O reads pinns' combined output.
PINNS = r'''#!/bin/bash
# pinns stand-in for the CRI-O lab (tests/lab/crio.py says why): pinns -d DIR -f FILE [--uts|--ipc|--net[=host]]... [-s k=v]...
set -euo pipefail
dir= file= new=() host=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -d|--dir) dir="$2"; shift 2 ;;
    -f|--filename) file="$2"; shift 2 ;;
    -s|--sysctl) shift 2 ;;
    --uts|--ipc|--net|--cgroup) new+=("${1#--}"); shift ;;
    --uts=host|--ipc=host|--net=host|--cgroup=host) n="${1#--}"; host+=("${n%=host}"); shift ;;
    *) echo "pinns stand-in: unsupported argument '$1' (the lab's pinns pins uts, ipc, net, cgroup only)" >&2; exit 1 ;;
  esac
done
[[ -n "$dir" && -n "$file" ]] || { echo "pinns stand-in: -d DIR and -f FILE are required" >&2; exit 1; }
args=()
for ns in "${new[@]}"; do
  mkdir -p "$dir/${ns}ns"; : >"$dir/${ns}ns/$file"
  args+=("--$ns=$dir/${ns}ns/$file")
done
[[ ${#args[@]} -eq 0 ]] || unshare "${args[@]}" true </dev/null >/dev/null 2>&1
for ns in "${host[@]}"; do
  mkdir -p "$dir/${ns}ns"; : >"$dir/${ns}ns/$file"
  mount --bind "/proc/$$/ns/$ns" "$dir/${ns}ns/$file"
done
'''

# The OCI runtime CRI-O calls: Debian 12's runc behind this wrapper. On these machines (cgroup v1
# without the hugetlb controller, no CAP_SYS_RESOURCE) runc fails for CRI-O where it works for
# containerd: CRI-O writes `linux.resources.hugepageLimits` into every container's config.json
# (containerd leaves them out when the controller is missing) and gives the sandbox a negative
# `process.oomScoreAdj` (containerd's `restrict_oom_score_adj` clamps it; CRI-O has no such
# setting), which runc cannot set without CAP_SYS_RESOURCE ("failed to update
# /proc/self/oom_score_adj: Permission denied"). So, for `create`/`run`, the wrapper drops the
# hugepage limits and clamps a negative oomScoreAdj to 0 in the bundle's config.json, then runs
# runc with the same arguments. It changes nothing a prune run can see.
RUNC_WRAPPER = r'''#!%(python)s
"""runc wrapper of the CRI-O lab (tests/lab/crio.py says why it exists)."""
import json, os, sys

RUNC = %(runc)r
args = sys.argv[1:]
if "create" in args or "run" in args:
    bundle = None
    for i, a in enumerate(args):
        if a in ("--bundle", "-b") and i + 1 < len(args):
            bundle = args[i + 1]
        elif a.startswith("--bundle="):
            bundle = a.split("=", 1)[1]
    path = os.path.join(bundle or os.getcwd(), "config.json")
    with open(path) as f:
        spec = json.load(f)
    spec.get("linux", {}).get("resources", {}).pop("hugepageLimits", None)
    proc = spec.get("process") or {}
    if proc.get("oomScoreAdj", 0) < 0:
        proc["oomScoreAdj"] = 0
    with open(path + ".tmp", "w") as f:
        json.dump(spec, f)
    os.replace(path + ".tmp", path)
os.execv(RUNC, [RUNC] + args)
'''


def find_crio():
    """The crio binary: $NODEMAINT_CRIO (set by the set-up), else the set-up's cached build, else
    ``crio`` on PATH. Absolute path; FileNotFoundError naming how to get it otherwise."""
    env = os.environ.get(CRIO_ENV)
    if env:
        if not os.access(env, os.X_OK):
            raise FileNotFoundError("%s=%s is not an executable" % (CRIO_ENV, env))
        return os.path.realpath(env)
    if os.access(CRIO_CACHED, os.X_OK):
        return CRIO_CACHED
    on_path = shutil.which("crio")
    if on_path:
        return os.path.realpath(on_path)
    raise FileNotFoundError("CRI-O (crio) was not found: " + CRIO_HOWTO)


def crio_version(binary):
    """((1, 34, 0), '1.34.0') from ``crio --version``; ((0, 0, 0), text) if it does not say."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"^crio version v?((\d+)\.(\d+)\.(\d+)\S*)", out, re.M)
    if not m:
        return (0, 0, 0), out.strip()
    return (int(m.group(2)), int(m.group(3)), int(m.group(4))), m.group(1)


def missing_tools():
    """What the CRI-O lab needs from the machine and lacks (Debian packages named)."""
    miss = []
    for tool, pkg in (("conmon", "conmon"), ("runc", "runc"), ("podman", "podman"),
                      ("unshare", "util-linux"), ("mount", "mount")):
        if shutil.which(tool) is None:
            miss.append("%s (%s)" % (tool, pkg))
    return miss


class CrioLab(CRILab):
    """A private CRI-O. ``CrioLab(base).start()`` ... ``stop()``; the attributes and methods of
    ``CRILab`` (``endpoint``, ``client``, ``env()``, ``crictl()``, ``kubelet_root``, ...), plus
    ``crio_bin``, ``storage_root``, ``storage_runroot``, ``pinned_images`` (``--pinned-images``)."""

    runtime = "cri-o"
    ctr_argv = None

    def __init__(self, base=None, sandbox_image=SANDBOX_IMAGE, crio=None, remove_base=None, crictl=None,
                 pinned_images=()):
        self._init_common(base, remove_base, crictl, sandbox_image, "feas-crio-")
        self.crio_bin = os.path.realpath(crio) if crio else find_crio()
        self.socket = os.path.join(self.base, "crio.sock")
        self.endpoint = "unix://" + self.socket
        self.storage_root = os.path.join(self.base, "storage")
        self.storage_runroot = os.path.join(self.base, "run", "storage")
        self.log_path = os.path.join(self.base, "crio.log")
        self.pid_path = os.path.join(self.base, "crio.pid")
        self.pinned_images = list(pinned_images)
        self.runc_wrapper = os.path.join(self.base, "bin", "runc-wrapper")
        self.pinns = os.path.join(self.base, "bin", "pinns")

    def to_dict(self):
        return {"runtime": self.runtime, "base": self.base, "pid": self.pid, "socket": self.socket,
                "endpoint": self.endpoint, "crictl": self.crictl_bin, "crio": self.crio_bin,
                "crio_version": self.version_string, "log": self.log_path,
                "storage_root": self.storage_root, "sandbox_image": self.sandbox_image}

    # How CRI-O treats its pause image (measured, tests/fixtures/crictl-1.37.0_crio-1.34.0/):
    # pinned (the CRI's `pinned: true`), and named in `crictl info` (config.pause_image... the
    # status' `config` key): like containerd 1.7, unlike 2.x.
    pins_sandbox_image = True
    reports_sandbox_image = True

    # ------------------------------------------------------------------ lifecycle
    def _path(self, *parts):
        return os.path.join(self.base, *parts)

    def _write_helpers(self):
        os.makedirs(self._path("bin"), exist_ok=True)
        runc = shutil.which("runc") or "/usr/sbin/runc"
        with open(self.runc_wrapper, "w") as f:
            f.write(RUNC_WRAPPER % {"python": sys.executable, "runc": runc})
        with open(self.pinns, "w") as f:
            f.write(PINNS)
        for p in (self.runc_wrapper, self.pinns):
            os.chmod(p, 0o755)

    def argv(self):
        p = self._path
        argv = [self.crio_bin, "--config", "", "--config-dir", "",
                "--root", self.storage_root, "--runroot", self.storage_runroot, "--storage-driver", "vfs",
                "--listen", self.socket, "--stream-address", "127.0.0.1", "--stream-port", "0",
                "--conmon", shutil.which("conmon") or "/usr/bin/conmon", "--conmon-cgroup", "pod",
                "--cgroup-manager", "cgroupfs",
                "--default-runtime", "runc", "--runtimes", "runc:%s:%s" % (self.runc_wrapper, p("run", "runc")),
                "--pinns-path", self.pinns, "--namespaces-dir", p("run", "ns"),
                "--log-dir", p("pods-logs"), "--container-exits-dir", p("run", "exits"),
                "--container-attach-socket-dir", p("run", "attach"),
                "--clean-shutdown-file", p("lib", "clean.shutdown"),
                "--version-file", p("run", "version"), "--version-file-persist", p("lib", "version"),
                "--cni-config-dir", p("cni", "net.d"), "--cni-plugin-dir", "/usr/lib/cni",
                "--hooks-dir", p("hooks.d"), "--cdi-spec-dirs", p("cdi"),
                "--big-files-temporary-dir", p("tmp"), "--enable-nri=false", "--nri-listen", p("run", "nri.sock"),
                "--irqbalance-config-file", "", "--irqbalance-config-restore-file", "disable",
                "--pause-image", self.sandbox_image, "--log-level", "info"]
        for ref in self.pinned_images:
            argv += ["--pinned-images", ref]
        return argv

    def start(self, timeout=60):
        if not os.access(self.crio_bin, os.X_OK):
            raise FileNotFoundError("crio not found at %s: %s" % (self.crio_bin, CRIO_HOWTO))
        miss = missing_tools()
        if miss:
            raise FileNotFoundError("the CRI-O lab needs %s: apt-get install conmon runc podman util-linux"
                                    % ", ".join(miss))
        for d in ("storage", "run", "lib", "pods-logs", "cni/net.d", "hooks.d", "cdi", "tmp", "work"):
            os.makedirs(self._path(d), exist_ok=True)
        os.chmod(self.base, 0o711)
        self._write_helpers()
        self.version, self.version_string = crio_version(self.crio_bin)
        self._spawn()
        self.wait_ready(timeout)
        return self

    def _spawn(self):
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          start_new_session=True, close_fds=True)
        self.pid = self._proc.pid
        with open(self.pid_path, "w") as f:
            f.write(str(self.pid))

    def kill(self):
        """SIGKILL crio (fault injection). conmons and containers survive."""
        self._signal_daemon((signal.SIGKILL, 10))

    def restart(self, timeout=60):
        """Stop (or after kill(): just start) crio and start it again (same storage and state)."""
        self._signal_daemon((signal.SIGTERM, 15), (signal.SIGKILL, 5))
        self._spawn()
        self.wait_ready(timeout)
        return self

    def kill_containers(self, ids):
        """SIGKILL the processes of the containers ``ids`` through runc (CRI-O's runtime root):
        CRI-O's StopContainer waits 30 s at least (ctr_stop_timeout's floor) for a process that
        ignores SIGTERM, as the lab's sleepers (busybox sleep as PID 1) do."""
        for cid in ids:
            subprocess.run([shutil.which("runc") or "/usr/sbin/runc", "--root", self._path("run", "runc"),
                            "kill", cid, "KILL"], capture_output=True, check=False)

    def conmon_pids(self):
        """conmon processes of this lab's containers (their command lines name paths in the base)."""
        return [p for p in pids_matching(self.base)
                if os.path.basename(_cmdline(p)[0].decode(errors="replace")) == "conmon"]

    def stop(self, remove_base=None):
        """Full teardown. Safe to call more than once and after failures."""
        errors = []
        if self.running():
            try:
                self.remove_all_sandboxes()
            except Exception as e:
                errors.append("remove sandboxes: %s" % e)
        self._signal_daemon((signal.SIGTERM, 15), (signal.SIGKILL, 5))
        return self._kill_and_unmount(self.conmon_pids(), errors, remove_base)

    def leftovers(self):
        """What teardown should have removed: {'crio': [...], 'conmons': [...], 'mounts': [...],
        'socket': [...]}, all empty after a clean stop()."""
        crio = [p for p in pids_matching(self.socket)
                if os.path.basename(_cmdline(p)[0].decode(errors="replace")) == "crio"]
        return {"crio": crio, "conmons": self.conmon_pids(),
                "mounts": mounts_under(self.base) if os.path.exists(self.base) else [],
                "socket": [self.socket] if os.path.exists(self.socket) else []}

    def set_sandbox_image(self, ref):
        """CRI-O restarted with ``ref`` as its pause image (``--pause-image``)."""
        self.sandbox_image = ref
        self.restart()

    def set_pinned_images(self, refs):
        """CRI-O restarted with ``refs`` as its ``--pinned-images`` (it pins by configuration only)."""
        self.pinned_images = list(refs)
        self.restart()

    # ------------------------------------------------------------------ images
    def podman(self, *args, check=True):
        """podman on CRI-O's own storage (root, runroot, vfs); its own state stays in the base too."""
        argv = ["podman", "--root", self.storage_root, "--runroot", self.storage_runroot,
                "--storage-driver", "vfs", "--tmpdir", self._path("run", "podman"),
                "--cgroup-manager", "cgroupfs", "--events-backend", "none"] + list(args)
        r = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError("podman %s failed (rc=%d): %s" % (" ".join(args), r.returncode, r.stderr.strip()))
        return r

    def import_images(self, blobs):
        """Load ``images.ImageBlobs`` into CRI-O's storage with podman, one OCI archive per image
        (podman names an OCI archive's image from its one manifest's annotation)."""
        blobs = list(blobs)
        os.makedirs(self.work, exist_ok=True)

        def load(b):
            path = os.path.join(self.work, "load-%s.tar" % b.manifest_digest.split(":", 1)[1][:16])
            with open(path, "wb") as f:
                f.write(images.layout_tar([b]))
            try:
                self.podman("load", "-q", "-i", path)
            finally:
                os.unlink(path)
        # one podman process per image (about 0.6 s each, most of it start-up): a few at once
        # (containers/storage locks what they share)
        with cf.ThreadPoolExecutor(4) as pool:
            list(pool.map(load, blobs))
        return blobs

    def add_repo_digest(self, blob):
        """CRI-O reports a repo digest for every named image it holds (NAME@<manifest digest>, from
        its storage), so there is nothing to add: returns that reference."""
        return blob.digest_ref

    def digest_only(self, ref):
        """Leave image ``ref`` with its repo digest only: ``podman untag`` removes its name, and CRI-O
        still reports NAME@<manifest digest> for it. Returns that reference."""
        status = self.client.image_status(ref).image
        digests = list(status.repo_digests)
        self.podman("untag", ref)
        return digests[0]

    def cri_image_id(self, blob):
        """The image's id as the CRI reports it: CRI-O's is the config digest's hex alone, without
        ``sha256:`` (containerd's has it); CRI-O takes no ``sha256:<hex>`` for an image either."""
        return blob.image_id.split(":", 1)[1]

    def forget_images(self):
        """Images the CRI does not list cannot exist in CRI-O's storage: nothing to do."""
        return None
