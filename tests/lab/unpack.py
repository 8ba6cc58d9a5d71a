"""Images the runtime still lists but can no longer run (issue 25, item 4).

After ``ctr -n k8s.io content prune references`` an image keeps its manifest and config but
loses its compressed layer blobs; while its unpacked snapshot exists nothing shows. Once that
snapshot is gone (lost, removed by hand, or needed in another snapshotter), the CRI cannot
unpack the image again: CreateContainer fails (``CreateContainerError``) and the kubelet never
pulls it again, since ImageStatus still finds it. These helpers build that state on the lab:

- ``chain_ids(ref)``: the snapshot keys (chain ids) of one of the lab's images, base first.
- ``prune_content(lab)``: ``ctr content prune references`` (every image of the namespace).
- ``remove_snapshot(lab, ref)``: the image's top committed snapshot in the default snapshotter.
- ``drop_container_snapshot(lab, cid)``: the container's own (active) snapshot, so that the
  image's chain under it can go too while the container is still listed.
- ``break_image(lab, ref)``: prune, then remove the snapshot: ``ctr images check`` reports the
  image ``incomplete`` and not unpacked.
- ``check(lab)``: ``{ref: (status, unpacked)}`` from ``ctr images check``.
- ``create_fails(lab, ref)``: the CRI's answer to a CreateContainer from ``ref`` (None: it worked).
- ``second_snapshotter(lab)`` (context manager, containerd >= 1.7): a runtime handler whose
  ``snapshotter`` is ``native`` added to the CRI config, containerd restarted; the config is put
  back (and containerd restarted) on exit.
"""

import contextlib
import hashlib

from . import cri
from . import images as img
from . import pods as P

SNAPSHOTTER = "overlayfs"        # the lab's default snapshotter on every line


def chain_ids(ref):
    """The chain ids of the lab's image ``ref`` (tests.lab.images.build), base layer first."""
    diff_ids = [img._sha(layer) for layer in img.build(ref).layers]
    out = [diff_ids[0]]
    for diff in diff_ids[1:]:
        out.append("sha256:" + hashlib.sha256(("%s %s" % (out[-1], diff)).encode()).hexdigest())
    return out


def _ctr(lab, *args, check=True):
    return lab.ctr("-n", "k8s.io", *args, check=check)


def prune_content(lab):
    """``ctr -n k8s.io content prune references``: every image loses its layer blobs."""
    _ctr(lab, "content", "prune", "references")


def snapshots(lab, snapshotter=SNAPSHOTTER):
    """The snapshot keys of ``snapshotter``."""
    out = _ctr(lab, "snapshots", "--snapshotter", snapshotter, "ls").stdout.splitlines()[1:]
    return {line.split()[0] for line in out if line.strip()}


def remove_snapshot(lab, ref, snapshotter=SNAPSHOTTER):
    """Remove the top committed snapshot of image ``ref`` (its chain id). Fails while a
    container's snapshot still has it as parent (see ``drop_container_snapshot``)."""
    top = chain_ids(ref)[-1]
    _ctr(lab, "snapshots", "--snapshotter", snapshotter, "rm", top)
    if top in snapshots(lab, snapshotter):
        raise RuntimeError("snapshot %s of %s is still listed after its removal" % (top, ref))
    return top


def drop_container_snapshot(lab, cid, snapshotter=SNAPSHOTTER):
    """Remove the (active) snapshot of container ``cid`` (the CRI names it after the container):
    the state of a node whose snapshots were lost while the containers are still recorded."""
    _ctr(lab, "snapshots", "--snapshotter", snapshotter, "rm", cid)


def break_image(lab, ref, prune=True):
    """Make image ``ref`` one the CRI lists but cannot run: its layer blobs pruned (``prune``;
    every image loses them, the others stay unpacked) and its snapshot removed."""
    P.ensure_images(lab, ref)
    if prune:
        prune_content(lab)
    remove_snapshot(lab, ref)
    state = check(lab).get(ref)
    if not state or not state[0].startswith("incomplete") or state[1]:
        raise RuntimeError("%s is not broken as intended: ctr images check says %r" % (ref, state))
    return state


def check(lab, snapshotter=SNAPSHOTTER):
    """{ref: (status, unpacked)} from ``ctr images check`` (status such as ``complete (3/3)``)."""
    out = _ctr(lab, "images", "check", "--snapshotter", snapshotter).stdout.splitlines()
    header = out[0]
    cols = {name: header.index(name) for name in ("REF", "STATUS", "SIZE", "UNPACKED")}
    found = {}
    for line in out[1:]:
        if not line.strip():
            continue
        status = line[cols["STATUS"]:cols["SIZE"]].strip()
        found[line.split()[0]] = (status, line[cols["UNPACKED"]:].strip() == "true")
    return found


def create_fails(lab, ref, name="probe"):
    """Create (not start) a container from ``ref`` in a fresh pod: None when the CRI accepts it,
    else the CRI error's text (what the kubelet reports as CreateContainerError)."""
    pod = P.pod(lab, name)
    try:
        P.container(lab, pod["id"], "app", state=P.CREATED, image=ref)
    except cri.CRIError as exc:
        return str(exc)
    finally:
        lab.client.stop_pod_sandbox(pod["id"])
        lab.client.remove_pod_sandbox(pod["id"])
    return None


RUNTIME_SNAPSHOTTER_MIN = (1, 7)   # the CRI's per-runtime ``snapshotter``: containerd 1.7


def _runtime_tables(lab, handler, snapshotter):
    """The TOML of runc (a runtimes table replaces 1.7's default map, runc included) and ``handler``."""
    prefix = ("[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%s]" if lab.version[0] >= 2 else
              '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.%s]')
    return ('\n%s\n  runtime_type = "io.containerd.runc.v2"\n' % (prefix % "runc")
            + '%s\n  runtime_type = "io.containerd.runc.v2"\n  snapshotter = "%s"\n' % (prefix % handler, snapshotter))


@contextlib.contextmanager
def second_snapshotter(lab, handler="native-rt", snapshotter="native"):
    """A RuntimeClass handler ``handler`` whose containers use ``snapshotter``: the CRI then uses two
    snapshotters. containerd 1.6 has no per-runtime snapshotter: ``Unsupported``."""
    P._need(lab, RUNTIME_SNAPSHOTTER_MIN, "a runtime handler with its own snapshotter")
    with open(lab.config_path) as f:
        original = f.read()
    try:
        with open(lab.config_path, "a") as f:
            f.write(_runtime_tables(lab, handler, snapshotter))
        lab.restart()
        yield handler
    finally:
        with open(lab.config_path, "w") as f:
            f.write(original)
        lab.restart()
