"""The kubelet's own image GC at its threshold, running at the same time as runs of the
collection (issue 25): no error on either side, and every pod the kubelet reports stays as it
needs it.

Which path of the kubelet: its periodic image GC (``GarbageCollect``, every 5 minutes: the
hard-coded ``ImageGCPeriod``; the first pass, at start, fails "invalid capacity 0 on image
filesystem") would cost 5 minutes a line. Its eviction manager runs the same image GC manager
every 10 s (``evictionMonitoringPeriod``): when a hard ``imagefs.available`` threshold is crossed it
first reclaims node-level resources, ``DeleteAllUnusedContainers`` then the image GC manager's
``DeleteUnusedImages`` (pkg/kubelet/eviction/helpers.go ``buildSignalToNodeReclaimFuncs``), which
takes the same ``imagesInEvictionOrder`` (in-use images from every container in any state, image
volumes included; pinned ones skipped), the same ``freeSpace`` (``imageMinimumGCAge``) and the
same ``freeImage`` -> CRI ``RemoveImage`` as the periodic pass, with no byte target (every
eligible image). Here the threshold is ``imagefs.available: 1Pi``, more than any filesystem has,
so it is crossed at every pass, and ``imageMinimumGCAge: 1s`` (0 reads as unset: the default 2m):
an unused image is first seen by one pass (its ``firstDetected``) and removed by the next. The
pods are static, so critical: the eviction manager that finds the threshold still crossed after the
reclaim logs "cannot evict a critical pod" and evicts none, and it admits them (DiskPressure).

The kubelet of this module (its own: under disk pressure ``DeleteAllUnusedContainers`` removes a
*finished* pod's container and sandbox, the kubelet's own choice, so the module runs no
``restartPolicy: Never`` pod): ``initapp``, ``crash`` and, on containerd >= 2.1, ``imgvol``, as
in test_kubelet.py. It starts with the lab's quiet configuration until the pods settled (every
pod's image then belongs to a container: the kubelet with ``imageMinimumGCAge: 1s`` could remove
an image between its import and its first container), then restarts with the threshold.

The proof that the two overlapped comes from the kubelet's own log (klog, -v=4): the lines of
``pkg/kubelet/eviction`` and ``pkg/kubelet/images`` named below, their timestamps against the
runs' start and end.
"""

import json
import os
import sys
import threading
import time

import pytest

from tests import lab as L
from tests.lab import kubelet as K
from tests.lab import pods as P
from tests.lab_tests import test_kubelet as TK
from tests.lab_tests.faulty_crictl import CONTROL_ENV

if TK.collections_path() not in sys.path:        # the collection as ansible_collections.nodemaint.image_gc
    sys.path.insert(0, TK.collections_path())

from ansible_collections.nodemaint.image_gc.plugins.module_utils._settings import default  # noqa: E402

# CI: on the whole-suite line (1.7, foreground) and on 2.1 (the background lane); about 50 s a line
pytestmark = pytest.mark.matrix(lines=("2.1",))

THRESHOLD = {"imagefs.available": "1Pi"}      # crossed at every pass of the eviction manager
MIN_AGE = "1s"                                # imageMinimumGCAge: the smallest that is not "unset"
RUN_MIN_AGE = "15s"                           # the runs' image_min_age in the part without a hold:
# the kubelet removes an image 10-20 s after it appeared (the pass after the one that saw it), a run
# 15-17 s after: each wins some
# the kubelet's log lines (klog structured, the message quoted): pkg/kubelet/eviction/eviction_manager.go,
# pkg/kubelet/container/container_gc.go, pkg/kubelet/images/image_gc_manager.go, kuberuntime_image.go
RECLAIM = '"Eviction manager: attempting to reclaim"'
DELETE_UNUSED = '"Attempting to delete unused images"'
REMOVING = '"Removing image to free bytes"'
KUBELET_ERRORS = ('"Failed to remove image"', '"Failed to remove container"',
                  '"Eviction manager: unexpected error when attempting to reduce resource pressure"',
                  '"Eviction manager: pod is evicted successfully"', '"Eviction manager: pod failed to evict"',
                  '"Image garbage collection failed')
FRESH = "docker.io/feas/k-gc-%d:1"         # unused images made while the kubelet's GC is active


def _pod_manifests(lab):
    return [m for m in TK._manifests(lab) if m["metadata"]["name"] != "job"]


def _used_images(lab):
    """The images this module's pods use (containers and image volumes)."""
    out = set()
    for m in _pod_manifests(lab):
        spec = m["spec"]
        out.update(c["image"] for c in spec["containers"] + spec.get("initContainers", []))
        out.update(v["image"]["reference"] for v in spec.get("volumes", []) if "image" in v)
    return sorted(out)


@pytest.fixture(scope="module")
def kubelet(lab):
    """This module's kubelet: the pods settled under the quiet configuration, then restarted with
    the image filesystem threshold crossed and ``imageMinimumGCAge: 1s``, its first reclaim pass seen."""
    try:
        binary = K.find_kubelet()
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)
    L.reset(lab)
    P.ensure_images(lab, *_used_images(lab))
    kl = K.Kubelet(lab, binary=binary)
    if os.path.isdir(kl.manifests):           # another module's kubelet left its pods' manifests (same lab)
        for name in os.listdir(kl.manifests):
            os.unlink(os.path.join(kl.manifests, name))
    manifests = _pod_manifests(lab)
    for m in manifests:
        kl.add_pod(m)
    kl.names = [m["metadata"]["name"] for m in manifests]
    try:
        kl.start()
        kl.wait_for(lambda p: TK._settled(p, kl.names), "pods settled", timeout=60)
        kl.eviction_hard, kl.image_min_age = dict(THRESHOLD), MIN_AGE
        offset = kl.log_size()
        kl.restart()
        _wait_log(kl, offset, DELETE_UNUSED, "a reclaim pass of the eviction manager running the image GC", 40)
        kl.counter = [0]
        yield kl
    finally:
        kl.stop()
        L.reset(lab)
        assert kl.leftovers() == [], "kubelet processes left: %s" % kl.leftovers()


def _lines(kl, offset, needle):
    return [line for line in kl.log_since(offset).splitlines() if needle in line]


def _wait(kl, predicate, what, timeout):
    """Poll ``predicate()`` (every 0.5 s: the kubelet's log at -v=4 grows by megabytes) until true."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("no %s in %ss; the kubelet's log tail:\n%s" % (what, timeout, kl.log_tail(30)))
        time.sleep(0.5)


def _wait_log(kl, offset, needle, what, timeout):
    _wait(kl, lambda: _lines(kl, offset, needle), "%s (%s in the kubelet's log)" % (what, needle), timeout)


def _fresh(lab, kl, n):
    """{image id: ref} of ``n`` new images no container uses."""
    refs = []
    for dummy in range(n):
        kl.counter[0] += 1
        refs.append(FRESH % kl.counter[0])
    ids = P.ensure_images(lab, *refs)
    return dict((ids[r], r) for r in refs)


def _removed_by_kubelet(kl, offset):
    """{image id: wall-clock time} of the images the kubelet's image GC removed since ``offset``."""
    out = {}
    now = time.time()
    for line in _lines(kl, offset, REMOVING):
        image_id = line.split('imageID="', 1)[-1].split('"', 1)[0]
        out[image_id] = K._klog_time(line, now)
    return out


def _timed_run(lab, **extra):
    start = time.time()
    run = TK._run(lab, **extra)      # asserts that no phase failed
    return run, (start, time.time())


def _images(run, key):
    return set(i["id"] for r in run["phases"] if r["phase"] == "images" for i in r[key])


def test_kubelet_image_gc_at_its_threshold_during_runs(lab, kubelet, tmp_path, monkeypatch):
    """The kubelet's image GC, driven at its image filesystem threshold every 10 s, and runs of the
    collection (default options, ages 0s) on the same unused images at the same time:
    1. a run (its created_min_age the default: a created container stays) held at its first
       ``crictl inspect`` (phase 3: the image volumes of the containers that stay) until the kubelet's
       GC removed one of these containers (created, never started, of a pod made straight through the
       CRI, which the kubelet does not know) and the images the run listed: the inspect is asked again
       without the container, and the images count as gone (someone else removed them), not as a
       failure;
    2. runs back to back (their image_min_age RUN_MIN_AGE, so that the images live long enough for
       the kubelet's GC to compete for them) while a feeder makes a fresh unused image every second,
       over two more passes of the kubelet's GC: both remove some of these images, and the kubelet
       removes images while a run is in progress (its log's time inside a run's start and end);
    no run reports a failed phase or an error, the kubelet logs no failed removal and evicts no pod,
    and every pod it reports is undisturbed, with its images and log files."""
    kl = kubelet
    before = K.summary(kl.wait_for(lambda p: TK._settled(p, kl.names), "pods settled"))
    offset = kl.log_size()
    runs = []

    # 1. the race made certain. Fresh unused images, first seen by a pass of the kubelet's GC (it
    # removes them at its next pass); then, the kubelet frozen, a pod it does not know made straight
    # through the CRI with a container created and never started (a default run keeps it: younger than
    # created_min_age) and a run started and held at its first crictl inspect (phase 3, for the image
    # volumes of the containers that stay, that one included, the images listed); the kubelet thawed
    # removes that container (the pod is not its own) and the images; then the run goes on.
    planned = _fresh(lab, kl, 3)
    seen = kl.log_size()
    _wait_log(kl, seen, DELETE_UNUSED, "pass of the image GC after the images were made", 30)
    control = {"fault": "pause-on-remove", "verbs": ["inspect"], "fired": str(tmp_path / "fired"),
               "go": str(tmp_path / "go"), "timeout": 60}
    (tmp_path / "control.json").write_text(json.dumps(control))
    monkeypatch.setenv(CONTROL_ENV, str(tmp_path / "control.json"))
    monkeypatch.setenv("NODEMAINT_CRICTL", lab.crictl_bin)
    out = {}

    def held():
        try:
            out["run"] = _timed_run(lab, crictl_path=TK.FAULTY_CRICTL, created_min_age=default("created_min_age"))
        except BaseException as e:          # reported by the main thread
            out["error"] = e
    worker = threading.Thread(target=held)
    with kl.paused():
        P.ensure_images(lab, TK.ORPHAN)
        sandbox = P.pod(lab, "cri-only", uid="cri-only-%d" % time.monotonic_ns())
        created = P.container(lab, sandbox["id"], "worker", state=P.CREATED, image=TK.ORPHAN)
        worker.start()
        try:
            end = time.monotonic() + 30
            while not os.path.exists(control["fired"]) and worker.is_alive() and time.monotonic() < end:
                time.sleep(0.1)
        except BaseException:
            open(control["go"], "w").close()
            raise
    try:
        assert os.path.exists(control["fired"]), ("the run never reached its crictl inspect", out)
        _wait(kl, lambda: created not in TK.runtime_state(lab)["containers"],
              "removal by the kubelet of the created container of the pod it does not know", 40)
        _wait(kl, lambda: set(planned) <= set(_removed_by_kubelet(kl, offset)),
              "removal by the kubelet's GC of the images the held run listed", 40)
    finally:
        open(control["go"], "w").close()
        worker.join(90)
    # before rule 10 the images phase failed here ('crictl inspect ... not found')
    assert "error" not in out, out.get("error")
    run, span = out["run"]
    runs.append(span)
    assert created not in TK._removed(run, "containers"), "the run, not the kubelet, removed %s" % created
    assert created in TK._kept(run, "containers"), TK._kept(run, "containers")
    assert set(planned) <= _images(run, "gone"), (
        "the images the kubelet removed while the run was held are not reported as gone",
        {"removed": _images(run, "removed"), "gone": _images(run, "gone"), "planned": planned})
    for image_id, at in _removed_by_kubelet(kl, offset).items():
        if image_id in planned:
            assert span[0] <= at <= span[1], ("the kubelet removed %s outside the held run" % image_id, at, span)
    monkeypatch.delenv(CONTROL_ENV)

    # 2. no hold: runs back to back while a feeder makes a fresh unused image every second; the
    # runs keep an image for RUN_MIN_AGE after they first saw it, so that the kubelet's GC (which
    # removes an image at its pass after the one that first saw it) competes for the same images
    second = kl.log_size()
    made, stop = {}, threading.Event()

    def feeder():
        failures = []
        while not stop.is_set():
            try:
                made.update(_fresh(lab, kl, 1))
            except RuntimeError as e:
                # the lab's image import (ctr images import, standing in for a pull) failed while
                # unpacking on containerd 1.6 only ("content digest ... not found"): a removal at that
                # moment (a run's, the kubelet's) and containerd's GC took content it needed (the ctr
                # of 1.7 and 2.x holds a lease through the unpack; a pull through the CRI holds one too)
                failures.append(e)
                if len(failures) > 3:
                    out["feeder"] = failures
                    return
            except BaseException as e:      # reported by the main thread
                out["feeder"] = e
                return
            stop.wait(1.0)
    feeding = threading.Thread(target=feeder)
    feeding.start()
    by_runs, part2 = set(), []
    try:
        end = time.monotonic() + 50
        while time.monotonic() < end:
            run, span = _timed_run(lab, image_min_age=RUN_MIN_AGE)
            part2.append(span)
            by_runs |= _images(run, "removed") | _images(run, "gone")
            by_kubelet = set(_removed_by_kubelet(kl, second))
            both = set(made) & by_kubelet and set(made) & by_runs - by_kubelet
            if both and len(_lines(kl, second, DELETE_UNUSED)) >= 2:
                break
    finally:
        stop.set()
        feeding.join(30)
    assert "feeder" not in out, out["feeder"]
    runs.extend(part2)
    run, span = _timed_run(lab)               # the last fresh images go (ages 0s)
    runs.append(span)
    by_runs |= _images(run, "removed") | _images(run, "gone")
    by_kubelet = _removed_by_kubelet(kl, second)
    assert set(made) & set(by_kubelet), ("the kubelet's GC removed none of the images made during the runs",
                                         made, by_kubelet, kl.log_tail(30))
    assert set(made) & by_runs - set(by_kubelet), "the runs removed none of the images made during them"
    inside = [(i, at) for i, at in by_kubelet.items() if any(s <= at <= e for s, e in part2)]
    assert inside, ("no image removed by the kubelet while a run was in progress", by_kubelet, part2)
    state = TK.runtime_state(lab)
    assert not set(made) & set(state["images"]), set(made) & set(state["images"])

    # no error on the kubelet's side, no pod evicted, every pod as it needs it
    log = kl.log_since(offset)
    errors = [line for line in log.splitlines() if any(e in line for e in KUBELET_ERRORS)]
    assert not errors, errors
    assert RECLAIM in log
    after = K.summary(kl.pods())
    TK._assert_kubelet_undisturbed(before, after)
    assert TK._log_files_missing(lab, after) == []
    for ref in _used_images(lab):
        assert lab.client.image_status(ref).image.id, "%s was removed" % ref
