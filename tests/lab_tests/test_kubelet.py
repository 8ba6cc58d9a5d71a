"""Ask the real kubelet (issue 25): the upstream kubelet (tests/lab/kubelet.py, standalone, static
pods) on the lab's containerd, its --root-dir NOT /var/lib/kubelet, and a default run of the
collection (the runtime's endpoints and tools set, nothing about the kubelet: no kubelet_root).
The judge is the kubelet's own ``/pods`` view, before and after a kubelet restart.

The pods (one kubelet per lab line, started once for this module):
- ``initapp``: an init container that completed, then a running app;
- ``crash``: a container that exits 1 (crash loop, restartPolicy Always);
- ``job``: restartPolicy Never, Succeeded (its container exited 0, its sandbox NotReady);
- ``imgvol`` (containerd >= 2.1): a running container with an image volume (``volumes[].image``).

On the CRI-O line (tests/lab/crio.py) the same kubelet runs beside CRI-O (its socket as
containerRuntimeEndpoint), and the run is a CRI-O node's default one: CRI-O found on its
well-known socket as test_crio.py finds it (no endpoint, no crictl or ctr path given); phase 4 is
not applicable there. The node-reboot test is containerd's (K.reboot), and the run racing the
kubelet's pods runs on the containerd lines only (its cost; the race is the plan's, not the runtime's).

Ages: the lab's objects are seconds old, so the runs set the three minimum ages to 0s, which is
more than a default run would dare, never less. Everything else is the default.
"""

import json
import os
import sys
import threading
import time

import pytest

from tests import lab as L
from tests.lab_tests.faulty_crictl import CONTROL_ENV
from tests.lab_tests.ansible_play import collections_path, runtime_state, state_args
from tests.lab_tests.test_crio import NOT_APPLICABLE, crio_node_discovery
from tests.lab import kubelet as K
from tests.lab import pods as P
from tests.lab import versions as V

if collections_path() not in sys.path:            # the collection as ansible_collections.nodemaint.image_gc
    sys.path.insert(0, collections_path())

from ansible_collections.nodemaint.image_gc.plugins.module_utils._engine import Engine  # noqa: E402
from ansible_collections.nodemaint.image_gc.plugins.module_utils._settings import PHASES  # noqa: E402

pytestmark = pytest.mark.matrix

IMAGES = {"init": "docker.io/feas/k-init:1", "app": "docker.io/feas/k-app:1", "crash": "docker.io/feas/k-crash:1",
          "job": "docker.io/feas/k-job:1", "vol": "docker.io/feas/k-vol:1",
          "volapp": "docker.io/feas/k-volapp:1"}
UNUSED = "docker.io/feas/k-unused:1"      # an image no pod ever used: real garbage
ORPHAN = "docker.io/feas/k-orphan:1"      # the image of a pod made straight through the CRI (the kubelet does not know it)
LEAVING = "docker.io/feas/k-leaving:1"    # a pod deleted while a run is in progress
LATE = "docker.io/feas/k-late:1"          # a pod created while a run is in progress
SLEEP = ["/bin/busybox", "sleep", "2147483647"]
FAULTY_CRICTL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", "faulty-crictl")


def _manifests(lab):
    c = K.container
    out = [
        K.static_pod("initapp", [c("app", IMAGES["app"], SLEEP)],
                     init_containers=[c("init", IMAGES["init"], ["/bin/sh", "-c", "echo init done"])]),
        K.static_pod("crash", [c("crash", IMAGES["crash"], ["/bin/sh", "-c", "echo crashing; exit 1"])]),
        K.static_pod("job", [c("job", IMAGES["job"], ["/bin/sh", "-c", "echo job done"])], restart_policy="Never"),
    ]
    if P.supports(lab, P.IMAGE_VOLUME_MIN):
        out.append(K.static_pod(
            "imgvol", [c("app", IMAGES["volapp"], SLEEP, volumeMounts=[{"name": "v", "mountPath": "/vol"}])],
            volumes=[{"name": "v", "image": {"reference": IMAGES["vol"], "pullPolicy": "Never"}}]))
    return out


def _used_images(lab):
    """The images the pods of this line use (containers and image volumes)."""
    out = set()
    for m in _manifests(lab):
        spec = m["spec"]
        out.update(c["image"] for c in spec["containers"] + spec.get("initContainers", []))
        out.update(v["image"]["reference"] for v in spec.get("volumes", []) if "image" in v)
    return sorted(out)


def _settled(pods, names):
    """Every pod where the tests want it: the init container done and the app running, the crash
    loop restarted at least once, the job Succeeded, the image-volume pod running."""
    if set(names) - set(pods):
        return False
    s = K.summary(pods)
    ok = (s["initapp"]["phase"] == "Running"
          and s["initapp"]["containers"].get("init:init", {}).get("reason") == "Completed"
          and s["initapp"]["containers"].get("app", {}).get("state") == "running"
          and s["crash"]["containers"].get("crash", {}).get("restartCount", 0) >= 1)
    if "job" in names:
        ok = ok and s["job"]["phase"] == "Succeeded"
    if "imgvol" in names:
        ok = ok and s["imgvol"]["containers"].get("app", {}).get("state") == "running"
    return ok


@pytest.fixture(scope="module")
def kubelet(lab):
    """One kubelet for the module on this lab line, with the pods settled; stopped (and the lab
    reset) at the end, and nothing of it left running."""
    try:
        binary = K.find_kubelet()
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)
    L.reset(lab)
    P.ensure_images(lab, *IMAGES.values())
    kl = K.Kubelet(lab, binary=binary)
    manifests = _manifests(lab)
    for m in manifests:
        kl.add_pod(m)
    names = [m["metadata"]["name"] for m in manifests]
    kl.names = names
    try:
        kl.start()
        kl.wait_for(lambda p: _settled(p, names), "pods settled", timeout=60)
        _wait_job_sandbox_notready(lab)
        yield kl
    finally:
        kl.stop()
        L.reset(lab)
        assert kl.leftovers() == [], "kubelet processes left: %s" % kl.leftovers()


def _wait_job_sandbox_notready(lab, timeout=60):
    """The kubelet stops the sandbox of a finished pod some seconds after the pod Succeeded (on
    2.1 later than on 1.6): the case that matters is the NotReady one, so wait for it."""
    end = time.monotonic() + timeout
    while True:
        sandboxes = [p for p in lab.client.list_pod_sandbox() if p.metadata.name == "job-lab-node"]
        if sandboxes and all(p.state != L.cri.SANDBOX_READY for p in sandboxes):
            return
        if time.monotonic() > end:
            raise AssertionError("the kubelet did not stop the Succeeded pod's sandbox in %ss: %s" % (timeout, sandboxes))
        time.sleep(0.5)


def _run(lab, **extra):
    """A run of all four phases as the prune module runs them: the runtime's tools and endpoint
    (on CRI-O nothing: found as on a CRI-O node, test_crio.crio_node_discovery), the record's path,
    minimum ages 0s and image_unused_for 0s (the lab's objects are seconds old: the default 21d
    would keep every image first seen now); nothing about the kubelet."""
    settings = dict(image_record_path=state_args(lab)["image_record_path"],
                    created_min_age="0s", sandbox_min_age="0s", image_min_age="0s", image_unused_for="0s")
    discovery = None
    if lab.runtime == "cri-o":
        discovery, sock = crio_node_discovery(lab)
    else:
        settings.update(crictl_path=lab.crictl_bin, ctr_path=lab.ctr_bin, runtime_endpoint=lab.endpoint)
    settings.update(extra)
    assert "kubelet_root" not in settings
    run = Engine(settings, PHASES, discovery=discovery).run()
    failed = [(r["phase"], r.get("error")) for r in run["phases"] if r["status"] == "failed"]
    assert not failed, failed
    if lab.runtime == "cri-o":
        assert run["runtime"]["name"] == "cri-o" and run["runtime"]["runtime_endpoint"] == "unix://" + sock, run["runtime"]
        content = [r for r in run["phases"] if r["phase"] == "content"]
        assert content and content[0]["status"] == "skipped" and content[0]["skip_reason"] == NOT_APPLICABLE, content
    return run


def _removed(run, phase):
    return dict((i["id"], i["reason"]) for r in run["phases"] if r["phase"] == phase for i in r["removed"])


def _gone(run, phase):
    """What the run found gone when it came to remove it (someone else, the kubelet, removed it)."""
    return dict((i["id"], i["reason"]) for r in run["phases"] if r["phase"] == phase for i in r["gone"])


def _kept(run, phase):
    return dict((i["id"], i["reason"]) for r in run["phases"] if r["phase"] == phase for i in r["kept"])


def _container_ids(view):
    """{(pod, container): runtime id} of every container the kubelet reports (init ones 'init:')."""
    return dict(((pod, c), st["containerID"].split("://", 1)[-1])
                for pod, p in view.items() for c, st in p["containers"].items() if st["containerID"])


def _log_files_missing(lab, view):
    """The containers the kubelet reports whose log file (CRI log path) does not exist."""
    missing = []
    for key, cid in _container_ids(view).items():
        try:
            path = lab.client.container_status(cid).status.log_path
        except L.CRIError as e:
            missing.append((key, cid, "container gone: %s" % e))
            continue
        if not os.path.exists(path):
            missing.append((key, cid, path))
    return missing


def _orphans(lab):
    """Garbage of a pod made straight through the CRI (the kubelet does not know it): a NotReady
    sandbox holding an exited container, plus an older NotReady sandbox of the same pod."""
    uid = "cri-only-%d" % time.monotonic_ns()
    old = P.pod(lab, "cri-only", uid=uid, ready=False, attempt=0)
    new = P.pod(lab, "cri-only", uid=uid, ready=True, attempt=1)
    cid = P.container(lab, new["id"], "worker", state=P.EXITED, image=ORPHAN)
    lab.client.stop_pod_sandbox(new["id"])
    return {"sandboxes": {old["id"], new["id"]}, "containers": {cid}}


def _assert_kubelet_undisturbed(before, after):
    """The kubelet's rules, read off its own view: no init container re-run, no restart count
    that went down, no finished pod started again, no start failed for a missing image."""
    problems = []
    for pod, b in before.items():
        a = after[pod]
        for c, bs in b["containers"].items():
            as_ = a["containers"].get(c)
            if as_ is None:
                problems.append("%s/%s: no longer reported" % (pod, c))
                continue
            if as_["restartCount"] < bs["restartCount"]:
                problems.append("%s/%s: restart count went down %d -> %d" % (pod, c, bs["restartCount"], as_["restartCount"]))
            if as_["reason"] in ("ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff", "CreateContainerError"):
                problems.append("%s/%s: %s" % (pod, c, as_["reason"]))
            if c.startswith("init:") and as_["containerID"] != bs["containerID"]:
                problems.append("%s/%s: init container run again (%s -> %s)" % (pod, c, bs["containerID"], as_["containerID"]))
        if b["phase"] == "Succeeded":
            if a["phase"] != "Succeeded" or a["containers"] != b["containers"]:
                problems.append("%s: a finished pod started again: %s -> %s" % (pod, json.dumps(b), json.dumps(a)))
    assert not problems, problems


def _restart_and_view(kl, before):
    """Restart the kubelet; its view once it has synced every pod again (each pod reports a phase
    and every container it reported before), then again after a few seconds, to let a pod the
    kubelet would start again get that far."""
    kl.restart()
    want = dict((pod, set(b["containers"])) for pod, b in before.items())

    def synced(pods):
        s = K.summary(pods)
        return all(pod in s and s[pod]["phase"] and want[pod] <= set(s[pod]["containers"]) for pod in want)
    kl.wait_for(synced, "every pod synced after the restart", timeout=60)
    time.sleep(4)
    return K.summary(kl.pods())


def test_default_run_then_kubelet_restart(lab, kubelet):
    """A default run with the kubelet's root not given and not at /var/lib/kubelet leaves every
    pod the kubelet reports as the kubelet needs it, before and after a kubelet restart, and still
    removes the real garbage (an unused image; an unknown pod's exited container and sandboxes)."""
    before = K.summary(kubelet.wait_for(lambda p: _settled(p, kubelet.names), "pods settled"))
    P.ensure_images(lab, UNUSED, ORPHAN)
    unused_id = lab.client.image_status(UNUSED).image.id
    K.gc_window(kubelet)                      # the kubelet's own container GC would remove the orphans otherwise
    # ... and its housekeeping would kill the orphan pod half-built; the run too is made while it is
    # frozen, so that its own clean-up cannot take an orphan between the run's listing and its removal
    # (the item would then count as gone, not removed: seen on CRI-O under load)
    with kubelet.paused():
        orphans = _orphans(lab)
        listed = runtime_state(lab)
        assert orphans["containers"] <= set(listed["containers"]), ("an orphan is gone before the run", orphans, listed)
        run = _run(lab)
    state = runtime_state(lab)
    # the garbage went, and the run is what removed it
    assert orphans["containers"] <= set(_removed(run, "containers")), (
        _kept(run, "containers"), [r.get("gone") for r in run["phases"] if r["phase"] == "containers"], run["warnings"])
    assert orphans["sandboxes"] <= set(_removed(run, "sandboxes")), _kept(run, "sandboxes")
    assert unused_id in _removed(run, "images")
    assert not (orphans["containers"] & set(state["containers"])) and not (orphans["sandboxes"] & set(state["pods"]))
    assert unused_id not in state["images"]
    # everything the kubelet reports is still there, with its log file
    for key, cid in _container_ids(before).items():
        assert cid in state["containers"], "%s (%s) was removed: %s" % (key, cid, _removed(run, "containers").get(cid))
    assert _log_files_missing(lab, before) == []
    for ref in _used_images(lab):
        assert lab.client.image_status(ref).image.id, "%s was removed" % ref
    # and the kubelet, restarted, agrees
    after = _restart_and_view(kubelet, before)
    _assert_kubelet_undisturbed(before, after)
    assert _log_files_missing(lab, after) == []


@pytest.mark.matrix(lines=V.CONTAINERD_LINES)
def test_pods_come_and_go_while_a_run_is_in_progress(lab, kubelet, tmp_path, monkeypatch):
    """A pod created and a pod deleted while a run is in progress (between its first listing and
    its first removal, held there by tests/lab_tests/faulty_crictl.py's pause-on-remove): the
    new pod starts (no start fails for a missing image: its image, unused when the run began, is
    kept), the standing pods are undisturbed, and the real garbage goes (the orphans, made and listed
    by the run while the kubelet is frozen: removed by the run, or gone when the kubelet, thawed, came
    first)."""
    kubelet.add_pod(K.static_pod("leaving", [K.container("app", LEAVING, SLEEP)]))
    P.ensure_images(lab, LEAVING, LATE, ORPHAN)
    before = K.summary(kubelet.wait_for(
        lambda p: _settled(p, kubelet.names) and K.summary(p).get("leaving", {}).get("phase") == "Running",
        "pods settled, 'leaving' running"))
    standing = dict((n, b) for n, b in before.items() if n != "leaving")
    late_id = lab.client.image_status(LATE).image.id
    control = {"fault": "pause-on-remove", "fired": str(tmp_path / "fired"), "go": str(tmp_path / "go"), "timeout": 60}
    (tmp_path / "control.json").write_text(json.dumps(control))
    monkeypatch.setenv(CONTROL_ENV, str(tmp_path / "control.json"))
    monkeypatch.setenv("NODEMAINT_CRICTL", lab.crictl_bin)
    K.gc_window(kubelet, need=40)
    out = {}

    def run():
        try:
            out["run"] = _run(lab, crictl_path=FAULTY_CRICTL)
        except BaseException as e:          # reported by the main thread
            out["error"] = e
    worker = threading.Thread(target=run)
    # the orphans made and listed by the run while the kubelet is frozen: thawed, the kubelet removes
    # them by itself (its container deletor, on the exit it then sees), and may come first (gone)
    with kubelet.paused():
        orphans = _orphans(lab)
        worker.start()
        end = time.monotonic() + 30
        while not os.path.exists(control["fired"]) and worker.is_alive() and time.monotonic() < end:
            time.sleep(0.1)
    try:
        assert os.path.exists(control["fired"]), ("the run never reached its first removal", out)
        kubelet.add_pod(K.static_pod("late", [K.container("app", LATE, SLEEP)]))
        kubelet.remove_pod("leaving")
        kubelet.wait_for(lambda p: "leaving" not in p and K.summary(p).get("late", {}).get("containers", {})
                         .get("app", {}).get("state") == "running", "'late' running and 'leaving' gone", timeout=30)
    finally:
        open(control["go"], "w").close()
        worker.join(90)
    assert "error" not in out, out.get("error")
    run_ = out["run"]
    assert late_id not in _removed(run_, "images"), _removed(run_, "images")[late_id]
    assert lab.client.image_status(LATE).image.id == late_id
    assert orphans["containers"] <= set(_removed(run_, "containers")) | set(_gone(run_, "containers")), \
        _kept(run_, "containers")
    assert not orphans["containers"] & set(runtime_state(lab)["containers"])
    after = K.summary(kubelet.wait_for(lambda p: "late" in p, "'late' reported"))
    _assert_kubelet_undisturbed(standing, after)
    assert after["late"]["containers"]["app"]["state"] == "running", after["late"]
    kubelet.remove_pod("late")
    kubelet.wait_for(lambda p: "late" not in p, "'late' gone", timeout=30)


@pytest.mark.containerd_only(reason="the lab's node reboot (K.reboot) kills containerd and its shims")
def test_node_reboot_run_before_the_kubelet(lab, kubelet):
    """A node reboot as the timer sees it (Persistent=true runs a missed run at boot): containerd
    back with every sandbox NotReady and every container exited, a run BEFORE the kubelet is up,
    then the kubelet starts: no finished pod runs again, no restart count goes down, no start
    fails for a missing image, every container it reports keeps its log file."""
    before = K.summary(kubelet.wait_for(lambda p: _settled(p, kubelet.names), "pods settled"))
    kubelet.stop()
    K.reboot(lab)
    state = runtime_state(lab)
    assert state["pods"] and set(state["pods"].values()) == {"SANDBOX_NOTREADY"}, state["pods"]
    run = _run(lab)
    after_run = runtime_state(lab)
    for key, cid in _container_ids(before).items():
        assert cid in after_run["containers"], "%s (%s) was removed: %s" % (key, cid, _removed(run, "containers").get(cid))
    assert set(after_run["pods"]) == set(state["pods"]), _removed(run, "sandboxes")
    for ref in _used_images(lab):
        assert lab.client.image_status(ref).image.id, "%s was removed" % ref
    after = _restart_and_view(kubelet, before)
    # after a reboot the kubelet starts a new sandbox for every pod that is to run (and runs its
    # init containers again: that is the kubelet's rule for a new sandbox); the finished pod stays finished
    for pod in before:
        before[pod]["containers"] = dict((c, st) for c, st in before[pod]["containers"].items()
                                         if not c.startswith("init:") or before[pod]["phase"] == "Succeeded")
    _assert_kubelet_undisturbed(before, after)
    assert _log_files_missing(lab, dict((p, a) for p, a in after.items() if p == "job")) == []
    kubelet.wait_for(lambda p: _settled(p, kubelet.names), "pods settled after the reboot", timeout=60)


def test_kubelet_listens_on_loopback_only(kubelet):
    """The lab's kubelet opens no port outside 127.0.0.1 (several labs share the machine)."""
    if not kubelet.running():
        kubelet.start()
    listening = _listening_sockets(kubelet.pid)
    assert listening, "the kubelet listens on nothing? (%s)" % kubelet.pid
    assert all(addr.startswith("127.0.0.1:") for addr in listening), listening


def _listening_sockets(pid):
    """'addr:port' of the TCP sockets process ``pid`` listens on (from /proc, IPv4 and IPv6)."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table, v6 in (("/proc/%d/net/tcp" % pid, False), ("/proc/%d/net/tcp6" % pid, True)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] != "0A" or f[9] not in inodes:           # 0A: LISTEN
                continue
            hexaddr, hexport = f[1].split(":")
            if v6:
                addr = "[v6:%s]" % hexaddr
            else:
                addr = ".".join(str(int(hexaddr[i:i + 2], 16)) for i in (6, 4, 2, 0))
            out.append("%s:%d" % (addr, int(hexport, 16)))
    return out
