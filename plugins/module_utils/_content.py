# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""The content store as its labels describe it: what ``ctr content prune references`` frees
(phase 4's plan), and the store as it is once images went (image age is the last-use record's).
Pure functions over ``ctr content ls`` listings (_listings.Blob)."""

from ._plan import Plan

LAYER_LABEL_PREFIX = 'containerd.io/gc.ref.content.l.'
CONTENT_REF_PREFIX = 'containerd.io/gc.ref.content.'
CONFIG_LABEL = 'containerd.io/gc.ref.content.config'


def without_images(blobs, image_ids):
    """The content store as it is after the images ``image_ids`` (config digests) were removed.

    containerd's garbage collector deletes what only those images referred to; simulating it
    lets a check-mode run report what the content prune frees after the image phase.
    """
    image_ids = set(image_ids or ())
    if not image_ids:
        return list(blobs)
    referrers = {}
    for blob in blobs:
        for key, value in blob.labels.items():
            if key.startswith(CONTENT_REF_PREFIX):
                referrers.setdefault(value, set()).add(blob.digest)
    dropped = {b.digest for b in blobs if b.labels.get(CONFIG_LABEL) in image_ids}
    changed = True
    while changed:
        changed = False
        for blob in blobs:
            if blob.digest in dropped:
                continue
            refs = referrers.get(blob.digest)
            if refs and refs <= dropped:
                dropped.add(blob.digest)
                changed = True
    return [b for b in blobs if b.digest not in dropped]


def plan_content(blobs):
    """Blobs that ``ctr content prune references`` frees: those referenced only by layer labels.

    The prune drops every ``containerd.io/gc.ref.content.l.*`` label; containerd's garbage
    collector then deletes the compressed layer blobs nothing else refers to. Unpacked snapshots
    stay, so running containers are unaffected; the image can no longer be exported or served to
    peers until it is pulled again.
    """
    plan = Plan('content')
    layer_targets, other_targets = set(), set()
    for blob in blobs:
        for key, value in blob.labels.items():
            if key.startswith(LAYER_LABEL_PREFIX):
                layer_targets.add(value)
            elif key.startswith(CONTENT_REF_PREFIX):
                other_targets.add(value)
    for blob in sorted(blobs, key=lambda b: b.digest):
        if blob.digest in layer_targets and blob.digest not in other_targets:
            item = blob.to_dict()
            item['id'] = blob.digest
            item['reason'] = 'layer blob referenced only by layer labels'
            plan.remove.append(item)
    return plan
