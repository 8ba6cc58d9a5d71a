# Over 300 lines: one job, the standard garbage scenarios of the lab (reset, the recorded fixture scenario, the gapped one, the benchmark's big state).
"""Garbage states built through the CRI API.

- ``feas(lab)``: exactly the scenario of tests/fixtures/crictl-1.36.0_*/README.md
  (pods feas-a/b/c, images pause:1, busybox:1 re-tagged, busybox:2, unused:3).
- ``scenario(lab)``: the standard garbage state for collection tests (old/young
  NotReady sandboxes, exited containers in Ready and NotReady pods, unused, digest-only,
  excluded and sandbox images).
- ``reset(lab)``: remove every pod, container and image.
- ``big(lab, containers=N, sandboxes=M, images=K)``: a large state for benchmarks.

All return plain JSON-serialisable dicts (see ``describe()``)."""

import concurrent.futures as cf
import shutil
import time
import uuid

from . import cri
from . import images as img

NAMESPACE = "feas"
LABEL = {"feas": "1"}
SANDBOX_IMAGE = "docker.io/feas/pause:1"
EXCLUDED_IMAGE = "docker.io/feas/keep:1"
MAX_PARALLEL = 4  # lab-facts: more parallel starts upset containerd 1.6


# ---------------------------------------------------------------------------- helpers

def _client(lab):
    return lab.client


def import_images(lab, images):
    return lab.import_images(images)


def run_pod(lab, name, labels=None, namespace=NAMESPACE):
    c = _client(lab)
    lbl = dict(LABEL)
    lbl.update(labels or {})
    cfg = c.sandbox_config(name, namespace=namespace, uid=str(uuid.uuid4()), labels=lbl)
    pid = c.run_pod_sandbox(cfg)
    return pid, cfg


def run_container(lab, pod_id, pod_cfg, name, image, command, labels=None, start=True):
    c = _client(lab)
    cid = c.create_container(pod_id, c.container_config(name, image, command, labels=labels),
                             pod_cfg)
    if start:
        c.start_container(cid)
    return cid


def wait_exited(lab, cids, timeout=30):
    c = _client(lab)
    pending = set(cids)
    end = time.time() + timeout
    while pending and time.time() < end:
        for cid in list(pending):
            if c.container_status(cid).status.state == cri.CONTAINER_EXITED:
                pending.discard(cid)
        if pending:
            time.sleep(0.05)
    if pending:
        raise RuntimeError("containers did not exit: %s" % sorted(pending))


def _pod_info(lab, pod_id, role):
    st = _client(lab).pod_sandbox_status(pod_id).status
    return {"id": pod_id, "name": st.metadata.name, "namespace": st.metadata.namespace,
            "uid": st.metadata.uid, "role": role,
            "state": cri.enum_name("PodSandboxState", st.state),
            "created_at": int(st.created_at)}


def _ctr_info(lab, cid, role, pod_name):
    st = _client(lab).container_status(cid).status
    # ListContainers' image_id is the image ID (its image_ref too on containerd; CRI-O's is a repo
    # digest); ContainerStatus' may be a repo digest
    listed = _client(lab).list_containers(id=cid)
    image_id = (listed[0].image_id or listed[0].image_ref) if listed else ""
    return {"id": cid, "name": st.metadata.name, "pod": pod_name,
            "pod_id": None, "role": role, "image": st.image.image,
            "image_ref": image_id, "status_image_ref": st.image_ref,
            "state": cri.enum_name("ContainerState", st.state),
            "exit_code": int(st.exit_code), "created_at": int(st.created_at)}


def _image_info(lab, blob, role, ref=None):
    r = _client(lab).image_status(lab.cri_image_id(blob)).image
    return {"id": lab.cri_image_id(blob), "name": blob.name, "ref": ref or blob.name, "role": role,
            "manifest_digest": blob.manifest_digest, "digest_ref": blob.digest_ref,
            "repo_tags": list(r.repo_tags), "repo_digests": list(r.repo_digests),
            "pinned": bool(r.pinned), "size": int(r.size)}


def _refresh_images(lab, d):
    c = _client(lab)
    for info in d["images"].values():
        r = c.image_status(info["id"]).image
        info["repo_tags"] = list(r.repo_tags)
        info["repo_digests"] = list(r.repo_digests)
        info["pinned"] = bool(r.pinned)
        info["present"] = bool(r.id)


def _by_role(d):
    out = {}
    for kind in ("pods", "containers", "images"):
        for info in d[kind].values():
            out.setdefault(info["role"], []).append(info["id"])
    return out


# ---------------------------------------------------------------------------- reset

def reset(lab):
    """Remove all pods (and so their containers), leftover containers, all images and the
    lab's kubelet root (``lab.kubelet_root``, see tests.lab.pods)."""
    shutil.rmtree(lab.kubelet_root, ignore_errors=True)
    c = _client(lab)

    def attempt(call, *args):
        try:
            call(*args)
        except cri.CRIError:
            pass                         # already gone, or never started: reset goes on
    # containers stopped at once first: a pod's stop waits out its containers' stop timeout
    # otherwise (CRI-O: 30 s at least per container whose process ignores SIGTERM, as sleep does)
    lab.kill_containers([ct.id for ct in c.list_containers() if ct.state == cri.CONTAINER_RUNNING])
    for ct in c.list_containers():
        attempt(c.stop_container, ct.id, 0)
    for p in c.list_pod_sandbox():
        attempt(c.stop_pod_sandbox, p.id)
        attempt(c.remove_pod_sandbox, p.id)
    for ct in c.list_containers():
        attempt(c.remove_container, ct.id)
    for im in c.list_images():
        attempt(c.remove_image, im.id)
    lab.forget_images()  # names the CRI does not list (e.g. made with ctr)


# ---------------------------------------------------------------------------- feas

def feas(lab):
    """The recorded fixture scenario (see tests/fixtures/crictl-1.36.0_*/README.md)."""
    pause = img.build(SANDBOX_IMAGE)
    bb1 = img.build("docker.io/feas/busybox:1")
    bb2 = img.build("docker.io/feas/busybox:2")
    unused = img.build("docker.io/feas/unused:3")
    import_images(lab, [pause, bb1, bb2, unused])
    lab.add_repo_digest(bb1)

    a, a_cfg = run_pod(lab, "feas-a")
    exit0 = run_container(lab, a, a_cfg, "exit0", bb1.name, ["/bin/busybox", "true"])
    wait_exited(lab, [exit0])
    _client(lab).stop_pod_sandbox(a)
    b, b_cfg = run_pod(lab, "feas-b")
    sleeper = run_container(lab, b, b_cfg, "sleeper", bb2.name,
                            ["/bin/busybox", "sleep", "3600"])
    c, c_cfg = run_pod(lab, "feas-c")
    exit1 = run_container(lab, c, c_cfg, "exit1", bb1.name, ["/bin/sh", "-c", "exit 1"])
    wait_exited(lab, [exit1])

    bb1_new = img.build("docker.io/feas/busybox:1", variant="retagged")
    import_images(lab, [bb1_new])

    d = {"kind": "feas", "namespace": NAMESPACE, "sandbox_image": SANDBOX_IMAGE,
         "pods": {"feas-a": _pod_info(lab, a, "notready"),
                  "feas-b": _pod_info(lab, b, "ready-running"),
                  "feas-c": _pod_info(lab, c, "ready-exited")},
         "containers": {"exit0": _ctr_info(lab, exit0, "exited-0", "feas-a"),
                        "sleeper": _ctr_info(lab, sleeper, "running", "feas-b"),
                        "exit1": _ctr_info(lab, exit1, "exited-1", "feas-c")},
         "images": {"pause": _image_info(lab, pause, "sandbox"),
                    "busybox1_old": _image_info(lab, bb1, "digest-only", bb1.digest_ref),
                    "busybox1": _image_info(lab, bb1_new, "retagged"),
                    "busybox2": _image_info(lab, bb2, "running"),
                    "unused3": _image_info(lab, unused, "unused")}}
    for ct in d["containers"].values():
        ct["pod_id"] = d["pods"][ct["pod"]]["id"]
    d["by_role"] = _by_role(d)
    return d


# ---------------------------------------------------------------------------- standard

def scenario(lab, gap=3.0):
    """The standard garbage state. ``gap`` seconds separate the OLD NotReady sandboxes
    from the YOUNG ones; ``cutoff_ns`` lies in the middle of that gap, so a ``min_age``
    of ``(now_ns - cutoff_ns) / 1e9`` seconds selects exactly the old ones.

    Returned dict keys:
      namespace, sandbox_image, excluded_image, gap, cutoff_ns,
      pods:       {name: {id, name, namespace, uid, role, state, created_at}}
      containers: {name: {id, name, pod, pod_id, role, image, image_ref, state,
                          exit_code, created_at}}
      images:     {key: {id, name, ref, role, manifest_digest, digest_ref, repo_tags,
                         repo_digests, pinned, size, present}}
      by_role:    {role: [ids]}
      expected:   {exited_container_ids, running_container_ids, ready_pod_ids,
                   notready_pod_ids, notready_old_pod_ids, notready_young_pod_ids,
                   prune_image_ids, pinned_image_ids, unused_after_gc_image_ids}
    Roles: pods ready-running, ready-exited, notready-old, notready-young;
    containers running, exited-1-ready-pod, exited-0-notready-pod; images sandbox,
    running, exited-only, notready-only, unused, digest-only, retagged, excluded.
    """
    pause = img.build(SANDBOX_IMAGE)
    bb1 = img.build("docker.io/feas/busybox:1")
    bb2 = img.build("docker.io/feas/busybox:2")
    exitonly = img.build("docker.io/feas/exitonly:1")
    notready = img.build("docker.io/feas/notready:1")
    unused = img.build("docker.io/feas/unused:3")
    keep = img.build(EXCLUDED_IMAGE)
    import_images(lab, [pause, bb1, bb2, exitonly, notready, unused, keep])
    lab.add_repo_digest(bb1)

    c = _client(lab)
    pods, ctrs = {}, {}
    # OLD NotReady sandboxes
    oa, oa_cfg = run_pod(lab, "feas-old-a", {"feas-role": "notready-old"})
    exit0 = run_container(lab, oa, oa_cfg, "exit0", notready.name, ["/bin/busybox", "true"])
    ob = run_pod(lab, "feas-old-b", {"feas-role": "notready-old"})[0]
    wait_exited(lab, [exit0])
    c.stop_pod_sandbox(oa)
    c.stop_pod_sandbox(ob)
    # Ready pods
    rr, rr_cfg = run_pod(lab, "feas-run", {"feas-role": "ready-running"})
    sleeper = run_container(lab, rr, rr_cfg, "sleeper", bb2.name,
                            ["/bin/busybox", "sleep", "3600"])
    re_, re_cfg = run_pod(lab, "feas-exit", {"feas-role": "ready-exited"})
    exit1 = run_container(lab, re_, re_cfg, "exit1", exitonly.name,
                          ["/bin/sh", "-c", "exit 1"])
    wait_exited(lab, [exit1])
    old_max = max(int(c.pod_sandbox_status(p).status.created_at) for p in (oa, ob))
    # let the gap pass, then the YOUNG NotReady sandboxes
    remaining = gap - (time.time_ns() - old_max) / 1e9
    if remaining > 0:
        time.sleep(remaining)
    ya = run_pod(lab, "feas-young-a", {"feas-role": "notready-young"})[0]
    yb = run_pod(lab, "feas-young-b", {"feas-role": "notready-young"})[0]
    c.stop_pod_sandbox(ya)
    c.stop_pod_sandbox(yb)
    # move busybox:1: the old image keeps only its digest reference
    bb1_new = img.build("docker.io/feas/busybox:1", variant="retagged")
    import_images(lab, [bb1_new])

    for name, pid, role in (("feas-old-a", oa, "notready-old"), ("feas-old-b", ob, "notready-old"),
                            ("feas-run", rr, "ready-running"), ("feas-exit", re_, "ready-exited"),
                            ("feas-young-a", ya, "notready-young"),
                            ("feas-young-b", yb, "notready-young")):
        pods[name] = _pod_info(lab, pid, role)
    for name, cid, role, pod in (("exit0", exit0, "exited-0-notready-pod", "feas-old-a"),
                                 ("sleeper", sleeper, "running", "feas-run"),
                                 ("exit1", exit1, "exited-1-ready-pod", "feas-exit")):
        ctrs[name] = _ctr_info(lab, cid, role, pod)
        ctrs[name]["pod_id"] = pods[pod]["id"]
    images = {"pause": _image_info(lab, pause, "sandbox"),
              "busybox1_old": _image_info(lab, bb1, "digest-only", bb1.digest_ref),
              "busybox1": _image_info(lab, bb1_new, "retagged"),
              "busybox2": _image_info(lab, bb2, "running"),
              "exitonly": _image_info(lab, exitonly, "exited-only"),
              "notready": _image_info(lab, notready, "notready-only"),
              "unused3": _image_info(lab, unused, "unused"),
              "keep": _image_info(lab, keep, "excluded")}
    young_min = min(pods[n]["created_at"] for n in ("feas-young-a", "feas-young-b"))
    old_max = max(pods[n]["created_at"] for n in ("feas-old-a", "feas-old-b"))
    d = {"kind": "standard", "namespace": NAMESPACE, "sandbox_image": SANDBOX_IMAGE,
         "excluded_image": EXCLUDED_IMAGE, "gap": gap,
         "old_max_created_ns": old_max, "young_min_created_ns": young_min,
         "cutoff_ns": (old_max + young_min) // 2,
         "pods": pods, "containers": ctrs, "images": images}
    _refresh_images(lab, d)
    d["by_role"] = _by_role(d)
    pinned = [i["id"] for i in images.values() if i["pinned"]]
    used = {ctrs[n]["image_ref"] for n in ctrs}
    d["expected"] = {
        "exited_container_ids": [ctrs["exit1"]["id"], ctrs["exit0"]["id"]],
        "running_container_ids": [ctrs["sleeper"]["id"]],
        "ready_pod_ids": [pods["feas-run"]["id"], pods["feas-exit"]["id"]],
        "notready_pod_ids": [pods[n]["id"] for n in
                             ("feas-old-a", "feas-old-b", "feas-young-a", "feas-young-b")],
        "notready_old_pod_ids": [pods["feas-old-a"]["id"], pods["feas-old-b"]["id"]],
        "notready_young_pod_ids": [pods["feas-young-a"]["id"], pods["feas-young-b"]["id"]],
        "pinned_image_ids": pinned,
        # what `crictl rmi --prune` removes now (used by any container => kept)
        "prune_image_ids": sorted(i["id"] for i in images.values()
                                  if i["id"] not in used and not i["pinned"]),
        # after exited containers and NotReady pods are gone
        "unused_after_gc_image_ids": sorted(
            i["id"] for i in images.values()
            if i["id"] != images["busybox2"]["id"] and not i["pinned"]),
    }
    return d


def min_age_between(d, now_ns=None):
    """A min_age (seconds, float) that selects the OLD NotReady sandboxes but not the
    YOUNG ones of a scenario() dict, evaluated at ``now_ns``."""
    now_ns = now_ns or time.time_ns()
    return (now_ns - d["cutoff_ns"]) / 1e9


# ---------------------------------------------------------------------------- big

def big(lab, containers=100, sandboxes=20, images=30, per_pod=100, parallel=MAX_PARALLEL, pods_gone=False,
        start=True, exited=0):
    """Many exited containers (in Ready host pods), NotReady sandboxes and unused images.

    ``pods_gone``: the host pods are stopped once their containers exited (NotReady, and no
    kubelet root tracks them), so their containers and sandboxes are garbage to the pod-aware
    rules too; otherwise each exited container is the newest instance of its name in a live pod
    and stays. ``start=False``: the containers are created, never started (cheaper to build);
    then ``exited`` of them (the first ones) are started all the same and exit: containerd's CRI
    keeps two stdio fifos open per created container (measured: 1.6, with or without a TTY) and
    none once it exited, so a state of more than about 6,000 containers fits under the open-file
    limit of these machines (20,000) only with part of them exited (about 10 starts per second).
    Returns {container_ids, host_pod_ids, notready_pod_ids, image_ids, seconds}."""
    t0 = time.time()
    pause = img.build(SANDBOX_IMAGE)
    runner = img.build("docker.io/feas/bigrun:1")
    import_images(lab, [pause, runner])
    unused = [img.build("docker.io/feas/big-%04d:1" % i) for i in range(images)]
    for i in range(0, len(unused), 100):
        import_images(lab, unused[i:i + 100])
    parallel = max(1, min(parallel, MAX_PARALLEL))
    c = _client(lab)

    def notready(i):
        pid = run_pod(lab, "feas-big-nr-%04d" % i, {"feas-role": "big-notready"})[0]
        c.stop_pod_sandbox(pid)
        return pid

    with cf.ThreadPoolExecutor(parallel) as ex:
        nr_ids = list(ex.map(notready, range(sandboxes)))

    hosts = []
    for h in range((containers + per_pod - 1) // per_pod):
        hosts.append(run_pod(lab, "feas-big-host-%03d" % h, {"feas-role": "big-host"}))

    def started(i):
        return start or i < exited

    def one(i):
        pid, cfg = hosts[i // per_pod]
        return run_container(lab, pid, cfg, "exit-%05d" % i, runner.name,
                             ["/bin/busybox", "true"], start=started(i))

    with cf.ThreadPoolExecutor(parallel) as ex:
        cids = list(ex.map(one, range(containers)))
    end = time.time() + 120 + containers * 0.05
    waited = set(cid for i, cid in enumerate(cids) if started(i))
    while waited and time.time() < end:
        running = [x for x in c.list_containers() if x.state != cri.CONTAINER_EXITED
                   and x.id in waited]
        if not running:
            break
        time.sleep(0.2)
    if pods_gone:
        for h in hosts:
            c.stop_pod_sandbox(h[0])
    return {"kind": "big", "container_ids": cids, "host_pod_ids": [h[0] for h in hosts],
            "notready_pod_ids": nr_ids, "image_ids": [lab.cri_image_id(u) for u in unused],
            "image_refs": [u.name for u in unused], "seconds": time.time() - t0}


def top_up(lab, sandboxes=20, images=30, parallel=MAX_PARALLEL):
    """The NotReady sandboxes and unused images of ``big`` (same names) again, after a run removed
    them, for a state whose containers stay (``big(..., pods_gone=False)``): a large state is
    built once and measured several times. Returns the seconds it took."""
    t0 = time.time()
    unused = [img.build("docker.io/feas/big-%04d:1" % i) for i in range(images)]
    for i in range(0, len(unused), 100):
        import_images(lab, unused[i:i + 100])
    have = set(p.metadata.name for p in _client(lab).list_pod_sandbox())
    c = _client(lab)

    def notready(i):
        name = "feas-big-nr-%04d" % i
        if name in have:
            return None
        c.stop_pod_sandbox(run_pod(lab, name, {"feas-role": "big-notready"})[0])
        return name

    with cf.ThreadPoolExecutor(max(1, min(parallel, MAX_PARALLEL))) as ex:
        list(ex.map(notready, range(sandboxes)))
    return time.time() - t0
