# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""The four phases in the order the engine runs them (PHASE_TABLE): phase 1 (ContainersPhase),
phase 2 (SandboxesPhase) and phase 4 (ContentPhase) here; phase 3 in _images_phase; the shared
``Phase.run`` in _phase.
"""

import time

from ._common import CommandError
from ._images_phase import ImagesPhase
from ._mirror import detect_peer_mirror
from ._phase import Phase, plan_containers
from ._text import describe
from . import _content, _plan, _snapshotters


class ContainersPhase(Phase):
    """Phase 1: exited containers (crictl rm), by the kubelet's rules per pod."""

    name = 'containers'

    def plan(self):
        s = self.settings
        containers = self.node.current('containers')
        # the pods' namespaces and states; without the kubelet's rules and namespace filters
        # (pod_aware: false) phase 1 needs no sandbox listing
        needed = s['pod_aware'] or s['namespaces'] or s['exclude_namespaces']
        sandboxes = self.node.current('sandboxes') if needed else []
        return plan_containers(self.engine, containers, sandboxes)

    def act(self, plan):
        return self.engine.crictl.remove_containers(plan.ids)


class SandboxesPhase(Phase):
    """Phase 2: NotReady sandboxes (crictl rmp), never one that holds a container that stays."""

    name = 'sandboxes'

    def plan(self):
        s = self.settings
        containers = self.node.current('containers')
        sandboxes = self.node.current('sandboxes')
        leaving = plan_containers(self.engine, containers, sandboxes).ids if s['pod_aware'] else ()
        return _plan.plan_sandboxes(sandboxes, containers, self.engine.clock(), s['sandbox_min_age'],
                                    s['namespaces'], s['exclude_namespaces'], pods=self.pods(), leaving=leaving)

    def act(self, plan):
        return self.engine.crictl.remove_sandboxes(plan.ids)


def snapshotter_skip(run):
    """Why phase 4 must not run on this node, or None: it runs only when the CRI uses exactly one
    snapshotter (_snapshotters.content_prune_skip). Kept apart from ContentPhase.skip_reason so
    that other skip rules stay separate. crictl that is there but fails (containerd down) fails
    the phase; crictl not found skips it."""
    snapshotters, exc = run.snapshotters()
    if isinstance(exc, CommandError):
        raise exc
    if exc is not None:
        return ('the CRI\'s snapshotters could not be read (%s): a RuntimeClass with a snapshotter of its own would '
                'need the layer blobs the prune removes; content prune skipped' % describe(exc))
    return _snapshotters.content_prune_skip(snapshotters)


class ContentPhase(Phase):
    """Phase 4: ctr content prune references, over the store as phase 3 left it."""

    name = 'content'
    counts_bytes = True
    SETTLE = 5.0                     # seconds to wait for containerd's garbage collection after the prune

    def skip_reason(self):
        if self.engine.is_crio():
            return ('not applicable: CRI-O has no content store (its images live in containers/storage, with no '
                    'compressed layer blobs for ctr to prune)')
        mirror = detect_peer_mirror(self.engine.peer_mirror_root)
        message = mirror and ('%s: pruning content references removes the compressed layers this node serves to '
                              'its peers, and images can no longer be exported' % mirror)
        if mirror and self.settings['peer_mirror_action'] == 'skip':
            return message + ' (peer_mirror_action=skip)'
        unsafe = snapshotter_skip(self.engine)
        snapshotters = self.engine.snapshotters()[0]
        self.result['snapshotters'] = snapshotters.names() if snapshotters is not None else None
        if unsafe:
            return unsafe
        if mirror:
            self.result['warnings'].append(message + '; set peer_mirror_action=skip to leave the content store alone')
        return None

    def plan(self):
        before = self.engine.ctr.content()
        if self.check_mode:
            # As the store will be once the images planned for removal are gone.
            before = _content.without_images(before, list(self.node.removed['images']))
        self.before = before
        self.labels = sum(1 for b in before for k in b.labels if k.startswith(_content.LAYER_LABEL_PREFIX))
        self.result['labels_removed'] = self.labels
        return _content.plan_content(before)   # no layer label left: nothing to remove, the prune changes nothing

    def preview(self, plan):
        if self.labels:
            self.engine.ctr.prune_references(dry_run=True)

    def act(self, plan):
        """The prune (none without a layer label: it would change nothing), then the store listed until what the plan frees is gone (containerd
        collects garbage asynchronously) or SETTLE seconds passed; the blobs that went."""
        if not self.labels:
            return []
        self.engine.ctr.prune_references()
        planned = set(plan.ids)
        deadline = time.monotonic() + self.SETTLE
        while True:
            after = self.engine.ctr.content()
            left = planned & {b.digest for b in after}
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        after_digests = {b.digest for b in after}
        reasons = {item['id']: item['reason'] for item in plan.remove}
        return [dict(b.to_dict(), id=b.digest, reason=reasons.get(b.digest, 'collected after the prune'))
                for b in sorted(self.before, key=lambda x: x.digest) if b.digest not in after_digests]

    def apply(self, plan, outcome):
        self.result['removed'] = outcome

    def changed(self):
        return bool(self.result['removed']) or self.labels > 0


# The phases in the order they run: each frees what the next one plans with (exited containers
# pin images; a removed sandbox takes its containers; removed images leave layer blobs). Each
# entry is called as ``entry(engine, check_mode)`` and returns the phase's result.
PHASE_TABLE = (
    ('containers', ContainersPhase.entry),
    ('sandboxes', SandboxesPhase.entry),
    ('images', ImagesPhase.entry),
    ('content', ContentPhase.entry),
)
