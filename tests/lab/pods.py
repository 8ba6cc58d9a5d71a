# Over 300 lines: one job, building the pod shapes of a kubelet-run node on the lab (with the images, kubelet root, sandboxes and containers they need).
"""Pod shapes of a kubelet-run node, built through the CRI API (issue 16).

The kubelet's garbage collector keeps what a live pod still needs; these builders make such
pods on the lab's real containerd so that tests can assert what a prune run leaves:

- ``pod(lab, name, uid=None, namespace=NAMESPACE, ready=True, attempt=0)``: one sandbox
  (metadata uid = the pod's UID; ``ready=False`` = a stopped, NotReady sandbox). Two sandboxes
  of one pod: call it twice with the same ``uid`` and ``attempt`` 0, then 1.
- ``container(lab, pod, name, attempt=0, state=RUNNING, exit_code=0, image=..., mounts=None)``:
  one container; ``attempt`` is ContainerMetadata.attempt (the kubelet's restart count).
- Shapes, each a fresh pod: ``crashloop``, ``init_done``, ``init_running``, ``never_pod``,
  ``image_volume`` (containerd >= 2.1 only, else ``Unsupported``).
- ``pin_image(lab, ref)``: make the CRI report ``pinned: true`` (containerd >= 1.7 only);
  ``unpin_image``; ``sandbox_image_switched(lab, new_ref)`` (context manager): a pause-image
  upgrade, leaving the old sandbox image in use and unpinned.
- The lab kubelet root: ``kubelet_root(lab)`` = ``<lab.base>/kubelet`` (also
  ``lab.kubelet_root``); ``track_pod(lab, uid)`` creates ``<root>/pods/<uid>/`` (the kubelet
  still tracks that pod), ``untrack_pod``, ``remove_kubelet_root`` (no kubelet root at all).

Labels follow the kubelet's (``io.kubernetes.pod.{name,namespace,uid}`` on sandboxes and
containers, ``io.kubernetes.container.name`` on containers, annotation
``io.kubernetes.container.restartCount`` = attempt), plus the lab's ``feas=1``.

Every shape returns a plain dict (JSON-serialisable)::

    {"kind": str, "pod": POD, "containers": {role: CTR}, "images": {role: IMG},
     "by_role": {role: [ids]}, ...shape-specific lists of ids...}
    POD = {id, name, namespace, uid, attempt, state, created_at}
    CTR = {id, name, attempt, state, exit_code, image, image_id, pod_id}
    IMG = {id, ref}
"""

import contextlib
import os
import shutil
import time
import uuid

from . import cri
from . import images as img
from . import lab as labmod

NAMESPACE = "feas"
SANDBOX_IMAGE = "docker.io/feas/pause:1"
LAB_LABEL = {"feas": "1"}
# one image per container role, so that a test can tell which image a rule kept
IMAGES = {
    "app": "docker.io/feas/app:1",        # running main containers
    "crash": "docker.io/feas/crash:1",    # the crash-looping container (all attempts)
    "init": "docker.io/feas/init:1",      # first init container
    "init2": "docker.io/feas/init2:1",    # second init container
    "done": "docker.io/feas/done:1",      # finished container of a restartPolicy Never pod
    "volume": "docker.io/feas/vol:1",     # mounted as an image volume
    "extra": "docker.io/feas/extra:1",    # free for tests (e.g. to pin)
}
RUNNING = "running"
EXITED = "exited"
CREATED = "created"
PINNED_LABEL = "io.cri-containerd.pinned"
SLEEP = ["/bin/busybox", "sleep", "3600"]

# containerd versions (major, minor) from which a feature works here
IMAGE_VOLUME_MIN = (2, 1)  # KEP-4639 in the CRI plugin: containerd 2.1
PIN_MIN = (1, 7)           # the io.cri-containerd.pinned image label: containerd 1.7


class Unsupported(Exception):
    """The lab's containerd cannot build this shape; ``str()`` is a skip reason naming
    the version and what is missing."""


# CRI-O in the lab: pinning works (by configuration); image volumes do not, although CRI-O 1.34 has
# them: it mounts the image read-only, which its storage driver must support, and the lab's, vfs, does
# not (CreateContainer: "ImageVolumeMountFailed: mount storage: vfs driver does not support mount options").
CRIO_LACKS = {IMAGE_VOLUME_MIN: "the lab's CRI-O storage driver, vfs, cannot mount an image volume (CRI-O 1.34 "
                                "has them with a driver that mounts, such as overlay)"}


def supports(lab, minimum):
    """Whether the lab's runtime has a feature containerd has from ``minimum`` on."""
    if lab.runtime == "cri-o":
        return minimum not in CRIO_LACKS
    return tuple(lab.version[:2]) >= minimum


def _need(lab, minimum, what):
    if lab.runtime == "cri-o" and not supports(lab, minimum):
        raise Unsupported("%s: %s" % (what, CRIO_LACKS[minimum]))
    if not supports(lab, minimum):
        raise Unsupported("%s needs containerd >= %s; this lab runs %s"
                          % (what, ".".join(str(x) for x in minimum), lab.version_string))


# ------------------------------------------------------------------------------ images

def ensure_images(lab, *refs, timeout=10.0):
    """Import the lab's deterministic images ``refs`` (and the sandbox image) unless present.
    Returns {ref: image id}."""
    sandbox = getattr(lab, "sandbox_image", SANDBOX_IMAGE)
    refs = (sandbox,) + tuple(r for r in refs if r != sandbox)
    c = lab.client
    blobs = {r: img.build(r) for r in refs}
    missing = [b for r, b in blobs.items() if not c.image_status(r).image.id]
    if missing:
        lab.import_images(missing)
        # the CRI plugin learns of imported images from containerd's events, asynchronously:
        # a CreateContainer right after the import failed now and then on 2.1.9 with
        # `failed to resolve image "REF": not found`
        end = time.time() + timeout
        for b in missing:
            while not c.image_status(b.name).image.id:
                if time.time() > end:
                    raise RuntimeError("the CRI does not list %s %.0fs after its import"
                                       % (b.name, timeout))
                time.sleep(0.02)
    return {r: lab.cri_image_id(b) for r, b in blobs.items()}


def pin_image(lab, ref, timeout=10.0):
    """Make the CRI report ``pinned: true`` for ``ref`` (imported first if it is one of the
    lab's images): the image label ``io.cri-containerd.pinned=pinned``, set with
    ``ctr -n k8s.io images label REF io.cri-containerd.pinned=pinned``, which containerd >= 1.7
    reads (2.1.9 reports it at once). containerd 1.6 has no image pinning at all (its binary
    does not know the label; the CRI reports ``pinned: false`` for every image, the sandbox
    image included): ``Unsupported``. Returns the image id."""
    if lab.runtime == "cri-o":      # CRI-O pins by configuration: restarted with it
        ensure_images(lab, ref)
        lab.set_pinned_images(lab.pinned_images + [ref])
        return lab.client.image_status(ref).image.id
    _need(lab, PIN_MIN, "pinning an image (label %s)" % PINNED_LABEL)
    ensure_images(lab, ref)
    lab.ctr("-n", "k8s.io", "images", "label", ref, PINNED_LABEL + "=pinned")
    end = time.time() + timeout
    while True:
        st = lab.client.image_status(ref).image
        if st.pinned:
            return st.id
        if time.time() > end:
            raise RuntimeError("containerd %s does not report %s as pinned %.0fs after labelling it"
                               % (lab.version_string, ref, timeout))
        time.sleep(0.05)


def unpin_image(lab, ref):
    """Remove the ``io.cri-containerd.pinned`` label from ``ref`` and from its ``sha256:``
    name (containerd >= 1.7, else ``Unsupported``). The image the runtime is configured to use
    as sandbox image stays pinned on 2.1.9 whatever its labels say. Returns the image id."""
    if lab.runtime == "cri-o":      # CRI-O pins its pause image whatever its configuration says
        image_id = lab.client.image_status(ref).image.id
        lab.set_pinned_images([r for r in lab.pinned_images if r != ref])
        return image_id
    _need(lab, PIN_MIN, "unpinning an image (label %s)" % PINNED_LABEL)
    image_id = lab.client.image_status(ref).image.id
    for name in (ref, image_id):
        lab.ctr("-n", "k8s.io", "images", "label", name, PINNED_LABEL + "=", check=False)
    return image_id


@contextlib.contextmanager
def sandbox_image_switched(lab, new_ref="docker.io/feas/pause:2"):
    """A pause-image upgrade: containerd restarted with ``new_ref`` as its sandbox image (the
    sandboxes and containers made before keep running on the old one), and on >= 1.7 the old
    image unpinned, so that a sandbox image in use is NOT pinned by the runtime (2.1.9 pins the
    configured one, 1.6 pins nothing). Yields {"old": IMG, "new": IMG} (IMG = {id, ref, pinned});
    on exit the lab's own sandbox image is configured again (containerd restarted), whatever
    state the test left."""
    old_ref = lab.sandbox_image
    ensure_images(lab, new_ref)
    _configure_sandbox_image(lab, new_ref)
    try:
        if lab.runtime == "cri-o" or tuple(lab.version[:2]) >= PIN_MIN:
            unpin_image(lab, old_ref)
        c = lab.client
        yield {k: {"id": st.id, "ref": r, "pinned": bool(st.pinned)}
               for k, r in (("old", old_ref), ("new", new_ref))
               for st in (c.image_status(r).image,)}
    finally:
        _configure_sandbox_image(lab, old_ref)


def _configure_sandbox_image(lab, ref):
    if lab.runtime == "cri-o":
        lab.set_sandbox_image(ref)
        return
    lab.sandbox_image = ref
    with open(lab.config_path, "w") as f:
        f.write(labmod.config_toml(lab.base, ref, lab.version[0]))
    lab.restart()


# ------------------------------------------------------------------------------ kubelet root

def kubelet_root(lab, create=True):
    """The lab's kubelet root, ``<lab.base>/kubelet`` (``pods/`` created with it unless
    ``create=False``). Point the engine's kubelet-root setting at it."""
    root = lab.kubelet_root
    if create:
        os.makedirs(os.path.join(root, "pods"), exist_ok=True)
    return root


def track_pod(lab, uid):
    """``<kubelet root>/pods/<uid>/``: the kubelet still tracks the pod. Returns the path."""
    if not uid or "/" in uid or uid in (".", ".."):
        raise ValueError("not a pod UID: %r" % (uid,))
    p = os.path.join(kubelet_root(lab), "pods", uid)
    os.makedirs(p, exist_ok=True)
    return p


def untrack_pod(lab, uid):
    """Remove ``<kubelet root>/pods/<uid>/`` (the kubelet forgot the pod)."""
    shutil.rmtree(os.path.join(kubelet_root(lab, create=False), "pods", uid), ignore_errors=True)


def tracked_pods(lab):
    d = os.path.join(kubelet_root(lab, create=False), "pods")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def remove_kubelet_root(lab):
    """No kubelet root at all (pods are then judged by sandbox state alone)."""
    shutil.rmtree(kubelet_root(lab, create=False), ignore_errors=True)


# ------------------------------------------------------------------------------ pods

def _sandbox_config(c, name, namespace, uid, attempt, labels):
    lbl = dict(LAB_LABEL)
    lbl.update({"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace,
                "io.kubernetes.pod.uid": uid})
    lbl.update(labels or {})
    return c.sandbox_config(name, namespace=namespace, uid=uid, labels=lbl, attempt=attempt)


def _pod_info(lab, pod_id):
    st = lab.client.pod_sandbox_status(pod_id).status
    return {"id": pod_id, "name": st.metadata.name, "namespace": st.metadata.namespace,
            "uid": st.metadata.uid, "attempt": int(st.metadata.attempt),
            "state": cri.enum_name("PodSandboxState", st.state), "created_at": int(st.created_at)}


def pod(lab, name, uid=None, namespace=NAMESPACE, ready=True, attempt=0, labels=None):
    """Run one sandbox of pod ``name`` (metadata uid ``uid``, a new UUID if None; ``attempt``
    is PodSandboxMetadata.attempt); ``ready=False`` stops it (NotReady). Returns POD."""
    ensure_images(lab)
    c = lab.client
    cfg = _sandbox_config(c, name, namespace, uid or str(uuid.uuid4()), attempt, labels)
    pid = c.run_pod_sandbox(cfg)
    if not ready:
        c.stop_pod_sandbox(pid)
    return _pod_info(lab, pid)


def _config_of(lab, pod_id):
    """The sandbox config ``pod()`` used, rebuilt from the sandbox's status."""
    st = lab.client.pod_sandbox_status(pod_id).status
    return lab.client.sandbox_config(st.metadata.name, namespace=st.metadata.namespace,
                                     uid=st.metadata.uid, attempt=st.metadata.attempt,
                                     labels=dict(st.labels), annotations=dict(st.annotations))


def image_mount(ref, container_path="/vol", readonly=True):
    """A CRI Mount of image ``ref`` (KEP-4639 image volume)."""
    return cri.pb.Mount(container_path=container_path, readonly=readonly,
                        image=cri.pb.ImageSpec(image=ref))


def container(lab, pod_id, name, attempt=0, state=RUNNING, exit_code=0, image=None,
              mounts=None, wait=True):
    """Create container ``name`` (ContainerMetadata.attempt ``attempt``) in sandbox ``pod_id``
    from ``image`` (default IMAGES['app']). ``state``: RUNNING (sleeps), EXITED (exits with
    ``exit_code``; with ``wait`` polled until the runtime reports it exited) or CREATED (never
    started). ``mounts``: CRI Mount messages (see ``image_mount``). Returns the container id."""
    image = image or IMAGES["app"]
    ensure_images(lab, image)
    c = lab.client
    cfg = _config_of(lab, pod_id)
    labels = {"io.kubernetes.container.name": name}
    for k in ("io.kubernetes.pod.name", "io.kubernetes.pod.namespace", "io.kubernetes.pod.uid"):
        labels[k] = cfg.labels.get(k, "")
    labels.update(LAB_LABEL)
    cmd = SLEEP if state != EXITED else ["/bin/sh", "-c", "exit %d" % int(exit_code)]
    cc = c.container_config(name, image, cmd, labels=labels,
                            annotations={"io.kubernetes.container.restartCount": str(attempt)})
    cc.metadata.attempt = attempt
    for m in mounts or ():
        cc.mounts.append(m)
    cid = c.create_container(pod_id, cc, cfg)
    if state != CREATED:
        c.start_container(cid)
    if state == EXITED and wait:
        wait_exited(lab, [cid])
    return cid


def wait_exited(lab, cids, timeout=30.0):
    c = lab.client
    pending = set(cids)
    end = time.time() + timeout
    while pending:
        for cid in list(pending):
            if c.container_status(cid).status.state == cri.CONTAINER_EXITED:
                pending.discard(cid)
        if not pending:
            return
        if time.time() > end:
            raise RuntimeError("containers did not exit within %ss: %s" % (timeout, sorted(pending)))
        time.sleep(0.05)


def _ctr_info(lab, cid):
    st = lab.client.container_status(cid).status
    listed = lab.client.list_containers(id=cid)
    return {"id": cid, "name": st.metadata.name, "attempt": int(st.metadata.attempt),
            "state": cri.enum_name("ContainerState", st.state), "exit_code": int(st.exit_code),
            "image": st.image.image, "image_id": (listed[0].image_id or listed[0].image_ref) if listed else "",
            "pod_id": listed[0].pod_sandbox_id if listed else ""}


def _shape(lab, kind, pod_id, ctrs, images, **extra):
    """Assemble the returned dict; ``ctrs`` {role: cid}, ``images`` {role: ref}."""
    ids = ensure_images(lab, *images.values())
    d = {"kind": kind, "pod": _pod_info(lab, pod_id),
         "containers": {role: _ctr_info(lab, cid) for role, cid in ctrs.items()},
         "images": {role: {"id": ids[ref], "ref": ref} for role, ref in images.items()}}
    by_role = {"pod": [pod_id]}
    for role, info in d["containers"].items():
        by_role.setdefault(role, []).append(info["id"])
    for role, info in d["images"].items():
        by_role.setdefault("image-" + role, []).append(info["id"])
    d["by_role"] = by_role
    d.update(extra)
    return d


# ------------------------------------------------------------------------------ shapes

def crashloop(lab, name="crashloop", last=RUNNING, namespace=NAMESPACE, uid=None, attempts=3):
    """A Ready pod whose container ``app`` crash-loops: attempts 0 .. attempts-2 exited 1, the
    last attempt ``last`` (RUNNING or EXITED). Roles ``attempt-N``. Extra keys:
    ``newest_exited`` (id: the kubelet keeps it, for ``kubectl logs --previous``),
    ``older_exited`` ([ids] the kubelet removes), ``running`` ([id] or [])."""
    if attempts < 2:
        raise ValueError("a crash loop needs at least 2 attempts")
    p = pod(lab, name, uid=uid, namespace=namespace)
    image = IMAGES["crash"]
    ctrs = {}
    for a in range(attempts - 1):
        ctrs["attempt-%d" % a] = container(lab, p["id"], "app", attempt=a, state=EXITED,
                                           exit_code=1, image=image, wait=False)
    ctrs["attempt-%d" % (attempts - 1)] = container(
        lab, p["id"], "app", attempt=attempts - 1, state=last, exit_code=1, image=image, wait=False)
    wait_exited(lab, [cid for role, cid in ctrs.items()
                      if last == EXITED or role != "attempt-%d" % (attempts - 1)])
    exited = [ctrs["attempt-%d" % a] for a in range(attempts if last == EXITED else attempts - 1)]
    return _shape(lab, "crashloop", p["id"], ctrs, {"crash": image},
                  newest_exited=exited[-1], older_exited=exited[:-1],
                  running=[] if last == EXITED else [ctrs["attempt-%d" % (attempts - 1)]])


def init_done(lab, name="init-done", namespace=NAMESPACE, uid=None):
    """A Ready pod: init container ``init`` exited 0, main container ``app`` running.
    Roles ``init``, ``main``."""
    p = pod(lab, name, uid=uid, namespace=namespace)
    init = container(lab, p["id"], "init", state=EXITED, image=IMAGES["init"])
    main = container(lab, p["id"], "app", state=RUNNING, image=IMAGES["app"])
    return _shape(lab, "init_done", p["id"], {"init": init, "main": main},
                  {"init": IMAGES["init"], "main": IMAGES["app"]})


def init_running(lab, name="init-running", namespace=NAMESPACE, uid=None):
    """A Ready pod still initialising: ``init-1`` exited 0, ``init-2`` running, no main
    container yet. Roles ``init-exited``, ``init-running``."""
    p = pod(lab, name, uid=uid, namespace=namespace)
    first = container(lab, p["id"], "init-1", state=EXITED, image=IMAGES["init"])
    second = container(lab, p["id"], "init-2", state=RUNNING, image=IMAGES["init2"])
    return _shape(lab, "init_running", p["id"], {"init-exited": first, "init-running": second},
                  {"init-exited": IMAGES["init"], "init-running": IMAGES["init2"]})


def never_pod(lab, name="never", namespace=NAMESPACE, uid=None, exit_code=0):
    """A Ready ``restartPolicy: Never`` pod: container ``a`` finished (``exit_code``), its
    sibling ``b`` still runs. Roles ``exited``, ``running``."""
    p = pod(lab, name, uid=uid, namespace=namespace)
    a = container(lab, p["id"], "a", state=EXITED, exit_code=exit_code, image=IMAGES["done"])
    b = container(lab, p["id"], "b", state=RUNNING, image=IMAGES["app"])
    return _shape(lab, "never_pod", p["id"], {"exited": a, "running": b},
                  {"exited": IMAGES["done"], "running": IMAGES["app"]})


def image_volume(lab, name="image-volume", namespace=NAMESPACE, uid=None, state=RUNNING,
                 volume_image=None, container_path="/vol"):
    """A Ready pod whose container ``app`` (``state``: RUNNING or EXITED) mounts
    ``volume_image`` (default IMAGES['volume']) read-only at ``container_path`` as an image
    volume (CRI Mount.image, KEP-4639); ``crictl inspect`` shows it under
    ``status.mounts[].image.image``. Roles: container ``container``; images ``own`` (the
    container's image) and ``volume``. containerd < 2.1: ``Unsupported`` (1.6 ignores
    Mount.image and fails CreateContainer with ``failed to mkdir ""``)."""
    _need(lab, IMAGE_VOLUME_MIN, "an image volume (KEP-4639, CRI Mount.image)")
    vol = volume_image or IMAGES["volume"]
    ensure_images(lab, vol)
    p = pod(lab, name, uid=uid, namespace=namespace)
    cid = container(lab, p["id"], "app", state=state, exit_code=0, image=IMAGES["app"],
                    mounts=[image_mount(vol, container_path)])
    return _shape(lab, "image_volume", p["id"], {"container": cid},
                  {"own": IMAGES["app"], "volume": vol})
