"""The upstream kubelet, standalone (static pods, no API server), against a running lab containerd.

The binary is scripts/lib/setup.sh's ``setup_kubelet`` build (KUBELET_VERSION in
scripts/lib/versions.env, exported as $NODEMAINT_KUBELET; else its cached build). Configuration as
in lab-facts ("The upstream kubelet, standalone"): a KubeletConfiguration file with
``staticPodPath``, ``containerRuntimeEndpoint`` (the lab's socket), ``cgroupDriver: cgroupfs``,
``cgroupsPerQOS: false``, ``enforceNodeAllocatable: []``, ``failSwapOn: false``,
``failCgroupV1: false``, ``podLogsDir`` inside the lab, every port on 127.0.0.1 and free (several
labs may run on one machine), anonymous read-only access; flags ``--root-dir`` (deliberately not
/var/lib/kubelet: the collection must find it), ``--cert-dir``, ``--hostname-override``.

Everything it writes lies below the lab's base, so the lab's teardown (shims, mounts, the base)
covers it; ``stop()`` must come before the lab's: stop the kubelet first, then containerd.
Static pods run with ``hostNetwork: true`` (no CNI) and ``imagePullPolicy: Never`` (images the lab
imports, tests/lab/images.py).
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

from .lab import CACHE_DIR, _pid_alive, _wait_dead, pids_matching, signal_until_dead
from .versions import PINNED

KUBELET_VERSION = PINNED["KUBELET_VERSION"]
# the kubelet's device-plugin socket directory, hard-coded (k8s.io/kubelet deviceplugin DevicePluginPath):
# made on the machine whatever --root-dir says; removed by stop() when it made them
HOST_DIRS = ("/var/lib/kubelet", "/var/lib/kubelet/device-plugins")
KUBELET_ENV = "NODEMAINT_KUBELET"
KUBELET_CACHED = os.path.join(CACHE_DIR, "kubelet-" + KUBELET_VERSION, "kubelet")
KUBELET_HOWTO = ("run ./scripts/test.sh once (its set-up builds k8s.io/kubernetes/cmd/kubelet@%s from the Go "
                 "module proxy into %s), or by hand: source scripts/lib/setup.sh and run setup_kubelet; or set %s"
                 % (KUBELET_VERSION, os.path.dirname(KUBELET_CACHED), KUBELET_ENV))


def find_kubelet():
    """$NODEMAINT_KUBELET, else the set-up's cached build. FileNotFoundError naming the fix."""
    env = os.environ.get(KUBELET_ENV)
    if env:
        if not os.access(env, os.X_OK):
            raise FileNotFoundError("%s=%s is not an executable" % (KUBELET_ENV, env))
        return os.path.realpath(env)
    if os.access(KUBELET_CACHED, os.X_OK):
        return KUBELET_CACHED
    raise FileNotFoundError("the kubelet %s was not found: %s" % (KUBELET_VERSION, KUBELET_HOWTO))


def free_port():
    """A free TCP port on 127.0.0.1 (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ static pods

def container(name, image, command, **extra):
    c = {"name": name, "image": image, "imagePullPolicy": "Never", "command": list(command)}
    c.update(extra)
    return c


def static_pod(name, containers, init_containers=(), restart_policy="Always", volumes=(), namespace="default"):
    """A static pod manifest (a dict): host network, no service account, no pull."""
    spec = {"hostNetwork": True, "restartPolicy": restart_policy, "containers": list(containers),
            "terminationGracePeriodSeconds": 1, "automountServiceAccountToken": False}
    if init_containers:
        spec["initContainers"] = list(init_containers)
    if volumes:
        spec["volumes"] = list(volumes)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


class Kubelet:
    """``Kubelet(lab).start()`` ... ``stop()`` (before ``lab.stop()``).

    Attributes: ``root`` (--root-dir), ``manifests`` (staticPodPath), ``logs`` (podLogsDir),
    ``node`` (--hostname-override), ``read_only_port``, ``log_path``, ``pid``.
    ``image_gc``: (high, low) percent thresholds of the kubelet's own image GC (default (100, 99):
    off: the kubelet's image GC would otherwise race the tests' runs); set them to make it run.
    Its periodic pass runs every 5 minutes (hard-coded ``ImageGCPeriod``; the first, at start,
    fails: "invalid capacity 0 on image filesystem"). ``eviction_hard``: signals of the
    KubeletConfiguration's ``evictionHard`` to set over the lab's defaults (which never cross);
    a crossed ``imagefs.available`` makes the eviction manager run the same image GC
    (``DeleteUnusedImages``, after ``DeleteAllUnusedContainers``) at every pass, every 10 s.
    Both read ``image_min_age`` (``imageMinimumGCAge``). Attributes: read at each ``start()``.
    """

    def __init__(self, lab, root=None, node="lab-node", image_gc=(100, 99), image_min_age="2m",
                 binary=None, verbosity=4, eviction_hard=None):
        self.lab = lab
        self.binary = binary or find_kubelet()
        self.base = os.path.join(lab.base, "kubelet-lab")
        self.root = root or os.path.join(self.base, "root")
        self.manifests = os.path.join(self.base, "manifests")
        self.logs = os.path.join(self.base, "pod-logs")
        self.certs = os.path.join(self.base, "certs")
        self.config_path = os.path.join(self.base, "config.json")
        self.log_path = os.path.join(self.base, "kubelet.log")
        self.node = node
        self.image_gc = image_gc
        self.image_min_age = image_min_age
        self.eviction_hard = dict(eviction_hard or {})
        self.verbosity = verbosity
        self.pid = None
        self.started_at = None
        self._proc = None
        self.read_only_port = self.port = self.healthz_port = None

    # ------------------------------------------------------------------ configuration
    def config(self):
        high, low = self.image_gc
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "staticPodPath": self.manifests,
            "fileCheckFrequency": "2s",
            "syncFrequency": "10s",
            "containerRuntimeEndpoint": self.lab.endpoint,
            "imageServiceEndpoint": self.lab.endpoint,
            "cgroupDriver": "cgroupfs",
            "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [],
            "failSwapOn": False,
            "failCgroupV1": False,                # this machine is cgroup v1; the 1.36 kubelet refuses it otherwise
            "podLogsDir": self.logs,
            "volumePluginDir": os.path.join(self.base, "volume-plugins"),
            # every port on loopback, free (other labs may run a kubelet at the same time)
            "address": "127.0.0.1", "port": self.port,
            "readOnlyPort": self.read_only_port,
            "healthzBindAddress": "127.0.0.1", "healthzPort": self.healthz_port,
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "makeIPTablesUtilChains": False,      # the machine's iptables are not the lab's
            "imageGCHighThresholdPercent": high, "imageGCLowThresholdPercent": low,
            "imageMinimumGCAge": self.image_min_age,
            # the machine's disk and memory are shared: the lab's pods are never evicted for them
            "evictionHard": dict({"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
                                 **self.eviction_hard),
            "registerNode": False,
            "serializeImagePulls": False,
        }

    def argv(self):
        return [self.binary, "--config", self.config_path, "--root-dir", self.root, "--cert-dir", self.certs,
                "--hostname-override", self.node, "-v=%d" % self.verbosity]

    # ------------------------------------------------------------------ static pods
    def add_pod(self, manifest):
        os.makedirs(self.manifests, exist_ok=True)
        name = manifest["metadata"]["name"]
        tmp = os.path.join(self.manifests, ".%s.tmp" % name)   # dot files are not read
        with open(tmp, "w") as f:
            json.dump(manifest, f)
        os.rename(tmp, os.path.join(self.manifests, name + ".json"))

    def remove_pod(self, name):
        try:
            os.unlink(os.path.join(self.manifests, name + ".json"))
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout=60):
        for d in (self.base, self.root, self.manifests, self.logs, self.certs):
            os.makedirs(d, exist_ok=True)
        # the one path the kubelet writes outside its root: its device-plugin socket (hard-coded)
        self._host_dirs = [d for d in HOST_DIRS if not os.path.exists(d)]
        if self.read_only_port is None:
            self.port, self.read_only_port, self.healthz_port = free_port(), free_port(), free_port()
        with open(self.config_path, "w") as f:
            json.dump(self.config(), f, indent=1)
        log = open(self.log_path, "ab")
        # its working directory an empty one of its own: when its GC removes a container whose CRI log
        # path is empty (every container the lab makes straight through the CRI: no log_directory), the
        # kubelet removes the files matching "<log path>*" (logs.containerLogManager.Clean), i.e. "*"
        # relative to its working directory: seen trying to remove the checkout's ".ci"
        cwd = os.path.join(self.base, "cwd")
        os.makedirs(cwd, exist_ok=True)
        self._proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=cwd,
                                      start_new_session=True, close_fds=True)
        log.close()
        self.pid = self._proc.pid
        self.started_at = time.monotonic()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=60):
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            if self._proc.poll() is not None:
                raise RuntimeError("the kubelet exited with %s; log tail:\n%s" % (self._proc.returncode, self.log_tail()))
            try:
                self.pods()
                return
            except (OSError, ValueError) as e:
                last = e
            time.sleep(0.2)
        raise RuntimeError("the kubelet's /pods did not answer in %ss (%s); log tail:\n%s"
                           % (timeout, last, self.log_tail()))

    def running(self):
        return bool(self.pid) and _pid_alive(self.pid)

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL; the pods' containers keep running (as on a node), the lab's
        teardown removes them. Safe to call twice."""
        signal_until_dead(self.pid, self._proc, ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)))
        self.pid = None
        self._clean_host_dirs()

    def _clean_host_dirs(self):
        """Remove what the kubelet made outside the lab (HOST_DIRS), when it made it and no other
        kubelet runs on the machine (they would share the socket)."""
        made = getattr(self, "_host_dirs", [])
        if not made or running_pids():
            return
        try:
            os.unlink(os.path.join(HOST_DIRS[-1], "kubelet.sock"))
        except OSError:
            pass
        for d in reversed(made):
            try:
                os.rmdir(d)
            except OSError:
                pass
        self._host_dirs = []

    @contextlib.contextmanager
    def paused(self):
        """The kubelet frozen (SIGSTOP ... SIGCONT) for the block: to build, straight through the CRI,
        a pod it does not know without its housekeeping killing that pod half-built."""
        os.kill(self.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.pid, signal.SIGCONT)

    def restart(self, timeout=60):
        self.stop()
        return self.start(timeout)

    def leftovers(self):
        """kubelet processes of this lab still alive (empty after stop())."""
        return [p for p in pids_matching(self.config_path) if p != os.getpid()]

    def log_tail(self, n=40):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def log_since(self, offset):
        with open(self.log_path, errors="replace") as f:
            f.seek(offset)
            return f.read()

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    # ------------------------------------------------------------------ its view
    def pods(self):
        """The kubelet's own view: ``/pods`` of its read-only port, {name: pod dict}."""
        url = "http://127.0.0.1:%d/pods" % self.read_only_port
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                body = json.load(r)
        except urllib.error.URLError as e:
            raise OSError(str(e)) from None
        return {p["metadata"]["name"].rsplit("-" + self.node, 1)[0]: p for p in body.get("items") or []}

    def wait_for(self, predicate, what, timeout=60, interval=0.5):
        """Poll ``/pods`` until ``predicate(pods)`` is true; returns the pods. AssertionError
        naming ``what`` and the last view otherwise."""
        end = time.monotonic() + timeout
        pods = {}
        while True:
            try:
                pods = self.pods()
                if predicate(pods):
                    return pods
            except OSError:
                pass
            if time.monotonic() > end:
                raise AssertionError("the kubelet did not reach '%s' in %ss; its view: %s\nlog tail:\n%s"
                                     % (what, timeout, json.dumps(summary(pods), indent=1), self.log_tail(20)))
            time.sleep(interval)


# ------------------------------------------------------------------------------ reading the view

def statuses(pod, init=False):
    """{container name: status dict} of the kubelet's view of one pod."""
    key = "initContainerStatuses" if init else "containerStatuses"
    return dict((s["name"], s) for s in (pod.get("status") or {}).get(key) or [])


def summary(pods):
    """A short, comparable digest of the kubelet's view: per pod its phase, uid and per container
    (init ones prefixed ``init:``) the restart count, the state and its reason, the container id."""
    out = {}
    for name, p in pods.items():
        st = p.get("status") or {}
        cs = {}
        for init in (True, False):
            for cname, s in statuses(p, init).items():
                state = s.get("state") or {}
                kind = next(iter(state), "none")
                cs[("init:" if init else "") + cname] = {
                    "restartCount": s.get("restartCount", 0), "state": kind,
                    "reason": (state.get(kind) or {}).get("reason", ""),
                    "exitCode": (state.get(kind) or {}).get("exitCode"),
                    "containerID": s.get("containerID", "")}
        out[name] = {"phase": st.get("phase"), "uid": p["metadata"].get("uid"), "containers": cs}
    return out


def running_pids():
    """Every kubelet process on the machine (pid, argv): to check none of ours is left."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == "kubelet":
            out.append((int(d), argv))
    return out


# ------------------------------------------------------------------------------ the kubelet's container GC

GC_DONE = "Container garbage collection succeeded"   # logged at -v=4 after each pass (every minute)
GC_PERIOD = 60.0                                      # kubelet.go ContainerGCPeriod


def _klog_time(line, now):
    """Wall-clock seconds of a klog line (``I1204 16:47:01.123456 ...``, local time), or None."""
    import datetime
    try:
        head = line.split()[0:2]
        month, day = int(head[0][1:3]), int(head[0][3:5])
        t = datetime.datetime.strptime(head[1], "%H:%M:%S.%f")
    except (IndexError, ValueError):
        return None
    year = datetime.datetime.fromtimestamp(now).year
    return datetime.datetime(year, month, day, t.hour, t.minute, t.second, t.microsecond).timestamp()


def last_gc(kubelet):
    """Wall-clock time of the kubelet's last container GC pass (from its log), or None."""
    try:
        with open(kubelet.log_path, errors="replace") as f:
            lines = [line for line in f if GC_DONE in line]
    except OSError:
        return None
    return _klog_time(lines[-1], time.time()) if lines else None


def gc_window(kubelet, need=20.0, timeout=GC_PERIOD + 30):
    """Return when the kubelet's next container GC pass is at least ``need`` seconds away.

    The kubelet removes every exited container and NotReady sandbox of a pod it does not know
    within a minute by itself; a test that makes such garbage and checks that a run removed it
    makes it in this window, so that the run, not the kubelet, is what removes it."""
    end = time.monotonic() + timeout
    while True:
        last = last_gc(kubelet)
        if last is not None and last + GC_PERIOD - time.time() >= need:
            return last
        if time.monotonic() > end:
            raise AssertionError("no container GC pass of the kubelet seen in its log (%s) within %ss"
                                 % (kubelet.log_path, timeout))
        time.sleep(0.5)


# ------------------------------------------------------------------------------ a node reboot

def reboot(lab):
    """The lab's node as after a reboot: containerd, its shims and every container process
    killed, the mounts below the lab unmounted and containerd's state directory (a tmpfs on a
    node) emptied, then containerd started again: every sandbox is NotReady, every container
    exited, and the root (snapshots, images, metadata) is as it was. Stop the kubelet first."""
    from .lab import mounts_under, shim_pids, pids_rooted_under
    import shutil
    lab._signal_containerd((signal.SIGKILL, 10))
    for pids in (shim_pids(lab.socket), pids_rooted_under(lab.base)):
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _wait_dead(pids, 10)
    for mp in sorted(mounts_under(lab.base), key=len, reverse=True):
        if subprocess.run(["umount", mp], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", mp], capture_output=True, check=False)
    state = os.path.join(lab.base, "state")
    shutil.rmtree(state, ignore_errors=True)
    os.makedirs(state, exist_ok=True)
    lab._spawn()
    lab.wait_ready()
