"""Smoke test of tests/lab/pods.py: every pod shape is what it claims, as the REAL crictl
sees it (attempts, states, exit codes, sandbox uid, image volumes, pinning, kubelet root)."""

import json
import os

import pytest

from tests import lab as L
from tests.lab import pods as P

pytestmark = pytest.mark.matrix


def _json(lab, *args):
    r = lab.crictl(*args)
    assert r.returncode == 0, "crictl %s: %s" % (" ".join(args), r.stderr)
    return json.loads(r.stdout)


def _pods(lab):
    return {p["id"]: p for p in _json(lab, "pods", "-o", "json")["items"]}


def _ctrs(lab):
    return {c["id"]: c for c in _json(lab, "ps", "-a", "-o", "json")["containers"]}


def _image_of(c):
    """A listed container's image id: ``imageId`` where the runtime fills it (CRI-O, whose imageRef
    is a repo digest reference), else ``imageRef`` (containerd's is the id)."""
    return c.get("imageId") or c["imageRef"]


def _inspect(lab, cid):
    return _json(lab, "inspect", cid)["status"]


def _check(lab, d, expect):
    """expect: {role: (name, attempt, state, exit_code or None)}; all in the shape's pod."""
    ctrs = _ctrs(lab)
    pod_id = d["pod"]["id"]
    assert _pods(lab)[pod_id]["state"] == "SANDBOX_READY"
    assert sorted(c["id"] for c in ctrs.values() if c["podSandboxId"] == pod_id) == \
        sorted(i["id"] for i in d["containers"].values())
    for role, (name, attempt, state, code) in expect.items():
        cid = d["containers"][role]["id"]
        c = ctrs[cid]
        assert (c["metadata"]["name"], c["metadata"]["attempt"], c["state"]) == (name, attempt, state), role
        assert c["labels"]["io.kubernetes.container.name"] == name
        assert c["labels"]["io.kubernetes.pod.uid"] == d["pod"]["uid"]
        if code is not None:
            assert _inspect(lab, cid)["exitCode"] == code, role


@pytest.fixture
def clean(lab):
    L.reset(lab)
    return lab


def test_pod_uid_namespace_and_states(clean):
    lab = clean
    ready = P.pod(lab, "web", uid="uid-web-1", namespace="team-a")
    gone = P.pod(lab, "old", uid="uid-old-1", ready=False)
    # two sandboxes of one pod: attempt 0 NotReady, attempt 1 Ready
    s0 = P.pod(lab, "twice", uid="uid-twice", ready=False, attempt=0)
    s1 = P.pod(lab, "twice", uid="uid-twice", attempt=1)
    pods = _pods(lab)
    assert set(pods) == {ready["id"], gone["id"], s0["id"], s1["id"]}
    seen = {(p["metadata"]["name"], p["metadata"]["uid"], p["metadata"]["namespace"],
             p["metadata"]["attempt"], p["state"]) for p in pods.values()}
    assert seen == {("web", "uid-web-1", "team-a", 0, "SANDBOX_READY"),
                    ("old", "uid-old-1", "feas", 0, "SANDBOX_NOTREADY"),
                    ("twice", "uid-twice", "feas", 0, "SANDBOX_NOTREADY"),
                    ("twice", "uid-twice", "feas", 1, "SANDBOX_READY")}
    assert pods[ready["id"]]["labels"]["io.kubernetes.pod.uid"] == "uid-web-1"
    assert ready["state"] == "SANDBOX_READY" and gone["state"] == "SANDBOX_NOTREADY"


@pytest.mark.parametrize("last", [P.RUNNING, P.EXITED])
def test_crashloop(clean, last):
    lab = clean
    d = P.crashloop(lab, last=last)
    final = "CONTAINER_RUNNING" if last == P.RUNNING else "CONTAINER_EXITED"
    _check(lab, d, {"attempt-0": ("app", 0, "CONTAINER_EXITED", 1),
                    "attempt-1": ("app", 1, "CONTAINER_EXITED", 1),
                    "attempt-2": ("app", 2, final, 1 if last == P.EXITED else None)})
    a = [d["containers"]["attempt-%d" % i]["id"] for i in range(3)]
    if last == P.RUNNING:
        assert (d["newest_exited"], d["older_exited"], d["running"]) == (a[1], [a[0]], [a[2]])
    else:
        assert (d["newest_exited"], d["older_exited"], d["running"]) == (a[2], a[:2], [])
    ctrs = _ctrs(lab)
    assert int(ctrs[a[0]]["createdAt"]) < int(ctrs[a[1]]["createdAt"]) < int(ctrs[a[2]]["createdAt"])
    imgs = {i["id"] for i in _json(lab, "images", "-o", "json")["images"]}
    assert d["images"]["crash"]["id"] in imgs
    assert {_image_of(c) for c in ctrs.values()} == {d["images"]["crash"]["id"]}


def test_init_done(clean):
    lab = clean
    d = P.init_done(lab)
    _check(lab, d, {"init": ("init", 0, "CONTAINER_EXITED", 0),
                    "main": ("app", 0, "CONTAINER_RUNNING", None)})
    ctrs = _ctrs(lab)
    assert _image_of(ctrs[d["containers"]["init"]["id"]]) == d["images"]["init"]["id"]
    assert _image_of(ctrs[d["containers"]["main"]["id"]]) == d["images"]["main"]["id"]
    assert d["images"]["init"]["id"] != d["images"]["main"]["id"]


def test_init_running(clean):
    lab = clean
    d = P.init_running(lab)
    _check(lab, d, {"init-exited": ("init-1", 0, "CONTAINER_EXITED", 0),
                    "init-running": ("init-2", 0, "CONTAINER_RUNNING", None)})


def test_never_pod(clean):
    lab = clean
    d = P.never_pod(lab, exit_code=3)
    _check(lab, d, {"exited": ("a", 0, "CONTAINER_EXITED", 3),
                    "running": ("b", 0, "CONTAINER_RUNNING", None)})


def test_image_volume(clean):
    lab = clean
    if not P.supports(lab, P.IMAGE_VOLUME_MIN):
        with pytest.raises(L.Unsupported, match="containerd >= 2.1" if lab.runtime == "containerd" else "vfs"):
            P.image_volume(lab)
        # and the runtime really cannot: Mount.image is ignored, CreateContainer fails
        p = P.pod(lab, "raw")
        with pytest.raises(L.CRIError):
            P.container(lab, p["id"], "app", mounts=[P.image_mount(P.IMAGES["volume"])])
        return
    d = P.image_volume(lab)
    _check(lab, d, {"container": ("app", 0, "CONTAINER_RUNNING", None)})
    mounts = _inspect(lab, d["containers"]["container"]["id"])["mounts"]
    vols = [m for m in mounts if (m.get("image") or {}).get("image")]
    assert [(m["image"]["image"], m["containerPath"], m["readonly"]) for m in vols] == \
        [(P.IMAGES["volume"], "/vol", True)]
    # not the container's own image: only inspect tells that the volume image is in use
    ps = _ctrs(lab)[d["containers"]["container"]["id"]]
    assert _image_of(ps) == d["images"]["own"]["id"] != d["images"]["volume"]["id"]
    # an exited container keeps its image mount in its status
    e = P.image_volume(lab, name="image-volume-exited", state=P.EXITED)
    mounts = _inspect(lab, e["containers"]["container"]["id"])["mounts"]
    assert [m["image"]["image"] for m in mounts if (m.get("image") or {}).get("image")] == \
        [P.IMAGES["volume"]]


@pytest.mark.containerd_only(reason="pinning by the io.cri-containerd.pinned label (CRI-O pins by its "
                                    "pinned_images configuration)")
def test_pin_image(clean):
    lab = clean
    ref = P.IMAGES["extra"]
    if lab.version[:2] < P.PIN_MIN:
        with pytest.raises(L.Unsupported, match="containerd >= 1.7"):
            P.pin_image(lab, ref)
        # and the label really does nothing here
        P.ensure_images(lab, ref, P.IMAGES["app"])
        lab.ctr("-n", "k8s.io", "images", "label", ref, P.PINNED_LABEL + "=pinned")
        assert not any(i["pinned"] for i in _json(lab, "images", "-o", "json")["images"])
        return
    P.ensure_images(lab, P.IMAGES["app"])
    image_id = P.pin_image(lab, ref)
    pinned = {i["id"]: i["pinned"] for i in _json(lab, "images", "-o", "json")["images"]}
    assert pinned[image_id] is True
    ids = P.ensure_images(lab, P.IMAGES["app"])
    assert pinned[ids[P.IMAGES["app"]]] is False


def test_kubelet_root(clean):
    lab = clean
    assert not os.path.exists(lab.kubelet_root)  # reset removed it
    d = P.init_done(lab)
    path = P.track_pod(lab, d["pod"]["uid"])
    assert path == os.path.join(lab.base, "kubelet", "pods", d["pod"]["uid"]) and os.path.isdir(path)
    assert P.kubelet_root(lab) == lab.kubelet_root
    assert P.tracked_pods(lab) == [d["pod"]["uid"]]
    P.untrack_pod(lab, d["pod"]["uid"])
    assert P.tracked_pods(lab) == [] and os.path.isdir(os.path.join(lab.kubelet_root, "pods"))
    P.track_pod(lab, "other")
    P.remove_kubelet_root(lab)
    assert not os.path.exists(lab.kubelet_root)
    with pytest.raises(ValueError):
        P.track_pod(lab, "../x")
    P.track_pod(lab, "left-over")
    L.reset(lab)
    assert not os.path.exists(lab.kubelet_root)


@pytest.mark.containerd_only(reason="the switch rewrites containerd's config")
def test_sandbox_image_switched(clean):
    lab = clean
    before = P.pod(lab, "before")
    P.ensure_images(lab, P.IMAGES["extra"])
    with P.sandbox_image_switched(lab) as d:
        assert d["old"]["ref"] == P.SANDBOX_IMAGE and d["new"]["ref"] == "docker.io/feas/pause:2"
        after = P.pod(lab, "after")
        pods = _pods(lab)
        assert pods[before["id"]]["state"] == pods[after["id"]]["state"] == "SANDBOX_READY"
        pinned = {i["id"]: i["pinned"] for i in _json(lab, "images", "-o", "json")["images"]}
        # the old sandbox image, still in use, is pinned by nobody; the new one as the runtime does
        assert pinned[d["old"]["id"]] is False
        assert pinned[d["new"]["id"]] is (lab.version[:2] >= (2, 0))
        if lab.version[:2] >= P.PIN_MIN:
            extra = P.pin_image(lab, P.IMAGES["extra"])
            pinned = {i["id"]: i["pinned"] for i in _json(lab, "images", "-o", "json")["images"]}
            assert (pinned[extra], pinned[d["old"]["id"]]) == (True, False)
    assert lab.sandbox_image == P.SANDBOX_IMAGE
    again = P.pod(lab, "again")
    assert _pods(lab)[again["id"]]["state"] == "SANDBOX_READY"
    assert lab.client.image_status(P.SANDBOX_IMAGE).image.pinned is (lab.version[:2] >= (2, 0))
