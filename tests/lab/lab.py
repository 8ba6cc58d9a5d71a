# Over 300 lines: one job, a private CRI runtime for tests: what every runtime's lab shares, and containerd's (config, start, stop, teardown).
"""A private containerd with the CRI plugin, for tests, driven by the real crictl.

containerd is Debian 12's package (1.6.20, on PATH) or, with ``containerd_dir``, the
binaries of another build (scripts/lib/setup.sh unpacks Debian 13's 1.7.24 and sid's 2.1.9,
builds 2.4.2 with go install, and exports each directory: tests/lab/versions.py
CONTAINERD_DIR_ENV). crictl is the upstream one (see ``find_crictl``); its pinned version
comes from scripts/lib/versions.env (tests/lab/versions.py).

Everything containerd writes goes below one base directory: root, state, the gRPC
socket and the opt path. Teardown order (lab-facts): sandboxes first, containerd by
PID, then the shims bound to its socket by PID, then any mount left below the base.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from . import cri
from . import images
from .versions import CRICTL_MIN, CRICTL_VERSION

HERE = os.path.dirname(os.path.abspath(__file__))
SANDBOX_IMAGE = "docker.io/feas/pause:1"
CRICTL_ENV = "NODEMAINT_CRICTL"
CONTAINERD2_ENV = "NODEMAINT_CONTAINERD2_DIR"
CACHE_DIR = os.environ.get("NODEMAINT_CACHE_DIR", "/var/cache/nodemaint-image-gc")
# scripts/lib/setup.sh's go-install build of the pinned crictl (versions.env CRICTL_VERSION)
CRICTL_CACHED = os.path.join(CACHE_DIR, "crictl-" + CRICTL_VERSION, "crictl")
CRICTL_HOWTO = ("run ./scripts/test.sh (or ./scripts/demo.sh) once: its set-up builds it with "
                "`go install sigs.k8s.io/cri-tools/cmd/crictl@%s` into %s, or install "
                "cri-tools >= %d.%d so that crictl is on PATH, or set %s" % (
                    CRICTL_VERSION, os.path.dirname(CRICTL_CACHED), CRICTL_MIN[0], CRICTL_MIN[1], CRICTL_ENV))


def find_crictl():
    """The real crictl, found like scripts/lib/setup.sh finds it: $NODEMAINT_CRICTL (set by the
    set-up), else a ``crictl`` on PATH of cri-tools >= CRICTL_MIN (versions.env), else the set-up's cached go-install
    build. Absolute path; FileNotFoundError otherwise."""
    env = os.environ.get(CRICTL_ENV)
    if env:
        if not os.access(env, os.X_OK):
            raise FileNotFoundError("%s=%s is not an executable" % (CRICTL_ENV, env))
        return os.path.realpath(env)
    on_path = shutil.which("crictl")
    if on_path:
        v = crictl_version(on_path)
        if v and tuple(int(x) for x in v.split(".")[:2]) >= CRICTL_MIN:
            return os.path.realpath(on_path)
    if os.access(CRICTL_CACHED, os.X_OK):
        return os.path.realpath(CRICTL_CACHED)
    raise FileNotFoundError("the real crictl was not found: " + CRICTL_HOWTO)


def crictl_version(binary):
    """cri-tools module version of a crictl binary ('1.37.0'), from ``go version -m`` (a
    go-install build has no release string) or else ``crictl --version``; '' if unknown."""
    go = shutil.which("go")
    if go:
        out = subprocess.run([go, "version", "-m", binary], capture_output=True, text=True,
                             check=False).stdout
        m = re.search(r"^\s*mod\s+sigs\.k8s\.io/cri-tools\s+v(\S+)", out, re.M)
        if m:
            return m.group(1)
    out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                         check=False).stdout
    m = re.search(r"version v?(\d+\.\d+\.\d+)", out)
    return m.group(1) if m else ""


def containerd_version(binary="containerd"):
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"\s(v?(\d+)\.(\d+)\.(\d+)\S*)", out)
    if not m:
        return (0, 0, 0), out.strip()
    return (int(m.group(2)), int(m.group(3)), int(m.group(4))), m.group(1)


def config_toml(base, sandbox_image=SANDBOX_IMAGE, major=1, grpc_max_send_message_size=None):
    """``grpc_max_send_message_size``: containerd's ``[grpc] max_send_message_size`` (bytes; None:
    containerd's default, 16 MiB), to make a listing exceed it with a few hundred objects."""
    grpc_extra = ("\n  max_send_message_size = %d" % grpc_max_send_message_size
                  if grpc_max_send_message_size else "")
    root = os.path.join(base, "root")
    state = os.path.join(base, "state")
    sock = os.path.join(base, "containerd.sock")
    opt = os.path.join(base, "opt")
    cni = os.path.join(base, "cni", "net.d")
    if major >= 2:
        return f'''version = 3
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.nri.v1.nri"]
[grpc]
  address = "{sock}"{grpc_extra}
[plugins.'io.containerd.internal.v1.opt']
  path = "{opt}"
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "{sandbox_image}"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{cni}"
'''
    return f'''version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{sock}"{grpc_extra}
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # no CAP_SYS_RESOURCE on these VMs: runc cannot set oom_score_adj=-998 otherwise
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
'''


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombies count as dead
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def pids_matching(needle):
    """PIDs whose command line mentions ``needle`` (bytes or str)."""
    if isinstance(needle, str):
        needle = needle.encode()
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        if any(needle in a for a in _cmdline(int(d))):
            out.append(int(d))
    return out


def pids_rooted_under(base):
    """PIDs whose root directory (chroot/pivot_root) lies below ``base``."""
    base = os.path.realpath(base) + "/"
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            root = os.readlink("/proc/%s/root" % d)
        except OSError:
            continue
        if root.startswith(base):
            out.append(int(d))
    return out


def shim_pids(sock):
    return [p for p in pids_matching(sock)
            if any(b"containerd-shim" in a for a in _cmdline(p)[:1])]


def mounts_under(base):
    base = os.path.realpath(base)
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == base or mp.startswith(base + "/"):
                out.append(mp)
    return out


def _wait_dead(pids, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if not any(_pid_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return not any(_pid_alive(p) for p in pids)


def signal_until_dead(pid, proc, steps):
    """Each (signal, seconds to wait for the exit) of ``steps`` in turn until ``pid`` is gone; then
    reap ``proc`` (its Popen, or None) so it leaves no zombie."""
    for sig, wait in steps:
        if not (pid and _pid_alive(pid)):
            break
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        if _wait_dead([pid], wait):
            break
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class CRILab:
    """What a lab of any CRI runtime shares: the real crictl, the CRI client, the environment for
    subprocesses, the kubelet root, readiness, the daemon's stop by PID, the teardown of what is
    left below the base. Runtimes: ``Lab`` (containerd, below) and ``tests.lab.crio.CrioLab``.

    A subclass sets ``runtime`` ('containerd', 'cri-o'), ``socket``, ``endpoint``, ``log_path``,
    ``pid_path``, ``version``/``version_string``, ``pins_sandbox_image``/``reports_sandbox_image``,
    and implements start/stop/restart/leftovers/to_dict and the image operations
    ``import_images(blobs)``, ``add_repo_digest(blob)``, ``forget_images()``. ``ctr_bin`` is
    None where the runtime has no ctr (CRI-O)."""

    runtime = "cri"
    ctr_bin = None

    def _init_common(self, base, remove_base, crictl, sandbox_image, prefix):
        if base is None:
            base = tempfile.mkdtemp(prefix=prefix)
            remove_base = True if remove_base is None else remove_base
        self.base = os.path.realpath(base)
        self.remove_base = bool(remove_base)
        self.sandbox_image = sandbox_image
        self.crictl_bin = os.path.realpath(crictl) if crictl else find_crictl()
        self.bin_dir = os.path.dirname(self.crictl_bin)
        self.work = os.path.join(self.base, "work")
        self.pid = None
        self._proc = None
        self._client = None
        self.version, self.version_string = (0, 0, 0), ""

    @property
    def kubelet_root(self):
        """``<base>/kubelet``: the lab's kubelet root (not created here; see
        ``tests.lab.pods.track_pod``)."""
        return os.path.join(self.base, "kubelet")

    @property
    def client(self):
        if self._client is None:
            self._client = cri.CRIClient(self.endpoint, timeout=60)
        return self._client

    def _drop_client(self):
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass
            self._client = None

    def env(self, base_env=None):
        """Environment for subprocesses: the real crictl's directory first on PATH (then the
        runtime's ``extra_path()``, e.g. the lab's containerd/ctr directory), the CRI endpoints
        set, and what the runtime adds (``_env_extra()``: CONTAINERD_ADDRESS for ctr)."""
        e = dict(os.environ if base_env is None else base_env)
        path = [self.bin_dir] + self.extra_path()
        e["PATH"] = os.pathsep.join(path + [e.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")])
        e["CONTAINER_RUNTIME_ENDPOINT"] = self.endpoint
        e["IMAGE_SERVICE_ENDPOINT"] = self.endpoint
        e[CRICTL_ENV] = self.crictl_bin  # for wrappers (tests/lab_tests/faulty_crictl.py)
        e.update(self._env_extra())
        return e

    def extra_path(self):
        return []

    def _env_extra(self):
        return {}

    def running(self):
        return bool(self.pid) and _pid_alive(self.pid)

    def wait_ready(self, timeout=30):
        end = time.time() + timeout
        last = None
        while time.time() < end:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError("%s exited with %s; log tail:\n%s"
                                   % (self.runtime, self._proc.returncode, self.log_tail()))
            if os.path.exists(self.socket):
                try:
                    c = cri.CRIClient(self.endpoint, timeout=2)
                    try:
                        c.version()
                        st = c.status()
                        conds = {x.type: x.status for x in st.status.conditions}
                        if conds.get("RuntimeReady"):
                            return
                        last = "RuntimeReady false: %s" % st
                    finally:
                        c.close()
                except Exception as e:  # not ready yet
                    last = e
            time.sleep(0.1)
        raise RuntimeError("%s not ready after %ss (%s); log tail:\n%s"
                           % (self.runtime, timeout, last, self.log_tail()))

    def log_tail(self, n=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def _signal_daemon(self, *steps):
        """Each (signal, seconds to wait for the exit) in turn until the daemon is gone; then reap it."""
        self._drop_client()
        signal_until_dead(self.pid, self._proc, steps)

    def kill_containers(self, ids):
        """Make the containers ``ids`` stop at once, before a StopContainer: nothing to do where
        StopContainer's timeout 0 kills at once (containerd); CRI-O waits 30 s at least."""

    def remove_all_sandboxes(self):
        c = cri.CRIClient(self.endpoint, timeout=30)
        try:
            self.kill_containers([ct.id for ct in c.list_containers() if ct.state == cri.CONTAINER_RUNNING])
            for ct in c.list_containers():    # at once: see scenario.reset
                try:
                    c.stop_container(ct.id, 0)
                except Exception:
                    pass
            for p in c.list_pod_sandbox():
                try:
                    c.stop_pod_sandbox(p.id)
                except Exception:
                    pass
                try:
                    c.remove_pod_sandbox(p.id)
                except Exception:
                    pass
        finally:
            c.close()

    def _kill_and_unmount(self, helpers, errors, remove_base=None):
        """The rest of a teardown once the daemon is stopped: its ``helpers`` (PIDs of shims,
        conmons) TERM, then KILL; container processes whose root lies below the base KILLed;
        every mount below the base unmounted, deepest first; the base removed if it is ours.
        Returns ``errors`` with the problems appended."""
        for p in helpers:
            try:
                os.kill(p, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if helpers and not _wait_dead(helpers, 5):
            for p in helpers:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _wait_dead(helpers, 5)
        # container processes orphaned by killed helpers: their root is below our base
        for p in pids_rooted_under(self.base):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for mp in sorted(mounts_under(self.base), key=len, reverse=True):
            r = subprocess.run(["umount", mp], capture_output=True, text=True, check=False)
            if r.returncode != 0:
                r = subprocess.run(["umount", "-l", mp], capture_output=True, text=True, check=False)
                if r.returncode != 0:
                    errors.append("umount %s: %s" % (mp, r.stderr.strip()))
        rb = self.remove_base if remove_base is None else remove_base
        if rb and not mounts_under(self.base):
            shutil.rmtree(self.base, ignore_errors=True)
        elif os.path.exists(self.pid_path):
            os.unlink(self.pid_path)
        self.pid = None
        return errors

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    def crictl(self, *args, env=None, timeout=120):
        """Run the real crictl against this lab (endpoints from ``env``, default
        ``self.env()``); returns CompletedProcess (text)."""
        return subprocess.run([self.crictl_bin] + list(args),
                              capture_output=True, text=True,
                              env=env if env is not None else self.env(), timeout=timeout, check=False)

    def write_json(self, path, extra=None):
        d = self.to_dict()
        if extra:
            d.update(extra)
        with open(path, "w") as f:
            json.dump(d, f, indent=2, sort_keys=True)


class Lab(CRILab):
    """A private containerd. ``Lab(base).start()`` ... ``stop()``.

    Attributes: ``base``, ``socket``, ``endpoint`` (unix://...), ``ctr_argv``,
    ``pid`` (containerd), ``crictl_bin`` (the real crictl), ``bin_dir`` (its directory),
    ``containerd_dir`` (None: containerd, shim and ctr from PATH), ``containerd_bin``,
    ``ctr_bin``, ``config_path``, ``log_path``, ``version`` (tuple), ``version_string``.
    """

    runtime = "containerd"

    def __init__(self, base=None, sandbox_image=SANDBOX_IMAGE, containerd_dir=None,
                 remove_base=None, crictl=None, root_tmpfs=None):
        """``root_tmpfs``: a size (``"64m"``, mount's ``size=``) to put containerd's root on a
        tmpfs of its own, mounted at ``<base>/root`` by start() and unmounted by stop(): its
        statvfs figures are then the lab's alone (the machine's root filesystem is written by
        other processes all the time). None: containerd's root lies on the base's filesystem."""
        self._init_common(base, remove_base, crictl, sandbox_image, "feas-lab-")
        self.containerd_dir = os.path.realpath(containerd_dir) if containerd_dir else None
        if self.containerd_dir:
            self.containerd_bin = os.path.join(self.containerd_dir, "containerd")
            self.ctr_bin = os.path.join(self.containerd_dir, "ctr")
        else:
            self.containerd_bin = shutil.which("containerd") or "containerd"
            self.ctr_bin = shutil.which("ctr") or "ctr"
        self.socket = os.path.join(self.base, "containerd.sock")
        self.endpoint = "unix://" + self.socket
        self.ctr_argv = [self.ctr_bin, "--address", self.socket]
        self.config_path = os.path.join(self.base, "config.toml")
        self.log_path = os.path.join(self.base, "containerd.log")
        self.pid_path = os.path.join(self.base, "containerd.pid")
        self.root_tmpfs = root_tmpfs
        self.root = os.path.join(self.base, "root")

    # ------------------------------------------------------------------ state
    @classmethod
    def attach(cls, base):
        """A Lab object for an already running lab (from ``python -m tests.lab up``):
        the same containerd binaries and crictl as recorded in DIR/lab.json."""
        kw = {}
        try:
            with open(os.path.join(base, "lab.json")) as f:
                d = json.load(f)
            kw = {"containerd_dir": d.get("containerd_dir"), "crictl": d.get("crictl")}
        except (OSError, ValueError):
            pass
        lab = cls(base, remove_base=False, **kw)
        if os.path.exists(lab.pid_path):
            with open(lab.pid_path) as f:
                lab.pid = int(f.read().strip() or 0) or None
        lab.version, lab.version_string = containerd_version(lab.containerd_bin)
        return lab

    def to_dict(self):
        return {"base": self.base, "pid": self.pid, "socket": self.socket,
                "endpoint": self.endpoint, "ctr_argv": self.ctr_argv,
                "bin_dir": self.bin_dir, "crictl": self.crictl_bin,
                "containerd_dir": self.containerd_dir, "containerd": self.containerd_bin,
                "ctr": self.ctr_bin, "config": self.config_path, "log": self.log_path,
                "containerd_version": self.version_string,
                "sandbox_image": self.sandbox_image}

    def extra_path(self):
        return [self.containerd_dir] if self.containerd_dir else []

    def _env_extra(self):
        return {"CONTAINERD_ADDRESS": self.socket}

    # What the containerd lines do differently with the sandbox (pause) image (measured here,
    # see the fixture READMEs and lab-facts): 1.6 neither pins it nor keeps it from
    # `crictl rmi --prune`, and names it in `crictl info` config.sandboxImage; 1.7.24 pins it
    # (label io.cri-containerd.pinned=pinned, set as soon as it is imported, not only when the
    # CRI pulled it) AND names it there; 2.x pins it and does not name it there.
    @property
    def pins_sandbox_image(self):
        return self.version[:2] >= (1, 7)

    @property
    def reports_sandbox_image(self):
        return self.version[0] < 2

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout=30):
        if not os.path.exists(self.containerd_bin) and not shutil.which(self.containerd_bin):
            if self.containerd_dir:
                raise FileNotFoundError("containerd not found in %s" % self.containerd_dir)
            raise FileNotFoundError(
                "containerd not found: apt-get install containerd runc busybox-static")
        for d in ("root", "state", "opt", "cni/net.d", "work"):
            os.makedirs(os.path.join(self.base, d), exist_ok=True)
        os.chmod(self.base, 0o711)
        if self.root_tmpfs and self.root not in mounts_under(self.root):
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0711" % self.root_tmpfs,
                            "lab-root", self.root], check=True, capture_output=True)
        self.version, self.version_string = containerd_version(self.containerd_bin)
        with open(self.config_path, "w") as f:
            f.write(config_toml(self.base, self.sandbox_image, self.version[0]))
        self._spawn()
        self.wait_ready(timeout)
        return self

    def _spawn(self):
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        log = open(self.log_path, "ab")
        env = dict(os.environ)
        if self.containerd_dir:
            # containerd finds containerd-shim-runc-v2 on its PATH: this build's shim first
            env["PATH"] = self.containerd_dir + os.pathsep + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        self._proc = subprocess.Popen(
            [self.containerd_bin, "--config", self.config_path],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
            start_new_session=True, close_fds=True)
        log.close()
        self.pid = self._proc.pid
        with open(self.pid_path, "w") as f:
            f.write(str(self.pid))

    def kill(self):
        """SIGKILL containerd (fault injection). Shims and containers survive."""
        self._signal_containerd((signal.SIGKILL, 10))

    def _stop_containerd(self, timeout=10):
        self._signal_containerd((signal.SIGTERM, timeout), (signal.SIGKILL, 5))

    def _signal_containerd(self, *steps):
        self._signal_daemon(*steps)

    def restart(self, timeout=30):
        """Stop (or after kill(): just start) containerd and start it again, same state."""
        self._stop_containerd()
        self._spawn()
        self.wait_ready(timeout)
        return self

    def stop(self, remove_base=None):
        """Full teardown. Safe to call more than once and after failures."""
        errors = []
        if self.running():
            try:
                self.remove_all_sandboxes()
            except Exception as e:
                errors.append("remove sandboxes: %s" % e)
        self._stop_containerd()
        return self._kill_and_unmount(shim_pids(self.socket), errors, remove_base)

    def leftovers(self):
        """What teardown should have removed: {'containerd': [...], 'shims': [...],
        'mounts': [...]}, all empty after a clean stop()."""
        cd = [p for p in pids_matching(self.config_path)
              if os.path.basename(_cmdline(p)[0].decode(errors="replace")) == "containerd"]
        return {"containerd": cd, "shims": shim_pids(self.socket),
                "mounts": mounts_under(self.base) if os.path.exists(self.base) else []}

    # ------------------------------------------------------------------ helpers
    def ctr(self, *args, check=True):
        r = subprocess.run(self.ctr_argv + list(args), capture_output=True, text=True, check=False)
        if check and r.returncode != 0:
            raise RuntimeError("ctr %s failed: %s" % (" ".join(args), r.stderr))
        return r

    # the image operations every lab offers (CRI-O's: tests/lab/crio.py)
    def import_images(self, blobs):
        """Import ``images.ImageBlobs`` into the runtime (``ctr -n k8s.io images import``)."""
        return images.import_images(self.ctr_argv, blobs, self.work)

    def add_repo_digest(self, blob):
        """Give an imported image a repo digest, like a pulled image's (NAME@sha256:<manifest digest>)."""
        return images.add_repo_digest(self.ctr_argv, blob)

    def digest_only(self, ref):
        """Leave image ``ref`` with its repo digest only (as a pull by digest does): tag it
        NAME@sha256:<manifest digest>, then remove the tag name. Returns the digest reference."""
        lines = self.ctr("-n", "k8s.io", "images", "ls").stdout.splitlines()
        digest = [line.split()[2] for line in lines[1:] if line.split() and line.split()[0] == ref][0]
        digest_ref = ref.rsplit(":", 1)[0] + "@" + digest
        self.ctr("-n", "k8s.io", "images", "tag", ref, digest_ref)
        self.ctr("-n", "k8s.io", "images", "rm", ref)
        return digest_ref

    def cri_image_id(self, blob):
        """The image's id as the CRI reports it: containerd's is the config digest, ``sha256:<hex>``."""
        return blob.image_id

    def forget_images(self):
        """Remove the image names the CRI does not list (e.g. made with ctr) in k8s.io."""
        r = self.ctr("-n", "k8s.io", "images", "ls", "-q", check=False)
        names = [l for l in r.stdout.split() if l]
        if names:
            self.ctr("-n", "k8s.io", "images", "rm", *names, check=False)
