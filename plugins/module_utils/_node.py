# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""The node as one run sees it: containers, sandboxes and images, grouped into pods.

``Node`` lists each kind once per run and forgets what the run removes (in check mode: what it
plans to remove), so every phase plans over the node as the earlier phases left it. ``pods()``
groups sandboxes and containers by the pod's uid (the sandbox's ``metadata.uid``) and says
whether each pod is *live*: its newest sandbox is Ready, or the kubelet still tracks it (a
directory ``<kubelet root>/pods/<uid>`` exists). ``image_volumes()`` asks one batched
``crictl inspect`` which images the containers mount as image volumes.
"""

import os

from ._listings import CONTAINER_EXITED, SANDBOX_READY
from ._units import seconds, short_id

KINDS = ('containers', 'sandboxes', 'images')
# Pod.tracked when no live kubelet root was found: every pod (with a uid) counts as live
ASSUMED = 'assumed'
NO_LIVE_ROOT = ('no live kubelet root was found, so every pod counts as live (set kubelet_root to the '
                'kubelet\'s --root-dir)')


class Pod:
    """A pod of the node: its sandboxes newest first, its containers, and whether the kubelet
    tracks it (True, False, ASSUMED when no live kubelet root was found, or None when the pod has
    no uid or no root is asked)."""

    def __init__(self, key, uid, name, namespace, sandboxes, containers, tracked=None, pod_dir=None):
        self.key = key
        self.uid = uid
        self.name = name
        self.namespace = namespace
        self.sandboxes = sorted(sandboxes, key=lambda s: (s.created_ns, s.attempt, s.id), reverse=True)
        self.containers = list(containers)
        self.tracked = tracked
        self.pod_dir = pod_dir

    @property
    def label(self):
        return '%s/%s' % (self.namespace or '?', self.name or '?')

    @property
    def newest(self):
        return self.sandboxes[0] if self.sandboxes else None

    @property
    def live(self):
        return self.liveness()[0]

    def liveness(self):
        """(live, why): live when the newest sandbox is Ready or the kubelet still tracks the pod."""
        newest = self.newest
        if newest is not None and newest.state == SANDBOX_READY:
            return True, 'its newest sandbox %s is Ready' % short_id(newest.id)
        if self.tracked == ASSUMED:
            return True, NO_LIVE_ROOT
        if self.tracked:
            return True, 'the kubelet still tracks it (%s exists)' % self.pod_dir
        why = ['its newest sandbox %s is NotReady' % short_id(newest.id) if newest else 'its sandbox is gone']
        if self.tracked is False:
            why.append('the kubelet does not track it (no %s)' % self.pod_dir)
        elif not self.uid:
            why.append('it has no uid to ask the kubelet root about')
        else:
            why.append('no kubelet root is known to ask')
        return False, ', '.join(why)

    def newest_exited(self):
        """{container name: the newest exited instance of it in this pod}, init containers included."""
        return self.newest_instances((CONTAINER_EXITED,))

    def newest_instances(self, states):
        """{container name: the newest of its instances in ``states``}: the kubelet's evict unit
        (pod uid, container name) and the one instance of it the kubelet keeps."""
        newest = {}
        for c in self.containers:
            if c.state in states:
                if c.name not in newest or (c.created_ns, c.attempt, c.id) > (
                        newest[c.name].created_ns, newest[c.name].attempt, newest[c.name].id):
                    newest[c.name] = c
        return newest


def build_pods(sandboxes, containers, tracked=None):
    """{sandbox id: Pod} for every sandbox, and for every container whose sandbox is not listed.
    Sandboxes with the same ``metadata.uid`` are one pod; a sandbox without a uid is a pod of its
    own. A container whose sandbox is not listed joins the pod of its ``io.kubernetes.pod.uid``
    label (as the kubelet groups containers), or, without that label, is a pod of its own, with
    no sandbox. ``tracked(uid)`` -> (True/False/None, pod dir)."""
    groups = {}
    for s in sandboxes:
        key = s.uid or 'sandbox:' + s.id
        groups.setdefault(key, ([], []))[0].append(s)
    by_sandbox = {s.id: s.uid or 'sandbox:' + s.id for s in sandboxes}
    for c in containers:
        key = by_sandbox.get(c.pod_id)
        if key is None:
            key = c.pod_uid or 'sandbox:' + c.pod_id
            groups.setdefault(key, ([], []))
        groups[key][1].append(c)
    out = {}
    for key, (pod_sandboxes, pod_containers) in groups.items():
        first = max(pod_sandboxes, key=lambda s: (s.created_ns, s.id)) if pod_sandboxes else None
        uid = first.uid if first else (pod_containers[0].pod_uid if pod_containers else '')
        name = first.name if first else (pod_containers[0].pod_name if pod_containers else '')
        namespace = first.namespace if first else (pod_containers[0].pod_namespace if pod_containers else '')
        state, pod_dir = (tracked(uid) if tracked and uid else (None, None))
        pod = Pod(key, uid, name, namespace, pod_sandboxes, pod_containers, state, pod_dir)
        for s in pod_sandboxes:
            out[s.id] = pod
        for c in pod_containers:
            out.setdefault(c.pod_id, pod)
    return out


class Node:
    """What this run knows is on the node: each kind listed once, less what the run removed.

    ``crictl``: a _cri.Crictl; ``clock()``: nanoseconds; ``kubelet_root``: the kubelet's root
    directory as set (used as it is); else ``kubelet_candidates``, [(root, source)] from discovery,
    of which the first live one is taken (``live_root``) once the sandboxes are known. With no
    live root every pod with a uid counts as live (ASSUMED), and ``no_live_root`` says why."""

    def __init__(self, crictl, clock, kubelet_root=None, kubelet_candidates=()):
        self.crictl = crictl
        self.clock = clock
        self.kubelet_root = kubelet_root
        self.kubelet_root_source = 'option kubelet_root' if kubelet_root else None
        self.kubelet_candidates = list(kubelet_candidates)
        self.no_live_root = None         # why no candidate is the live root, once checked
        self.root_checked = bool(kubelet_root)
        self._items = {}
        self.first_listing = {}          # kind -> how many items the first listing of the run had
        self.listed_at = {}              # kind -> when (seconds) its latest listing was taken
        self.removed = {kind: {} for kind in KINDS}   # what the run removed (check mode: planned)
        # Every container any listing of this run showed, with when (seconds): evidence of use
        # for the last-use record, removed ones included.
        self.seen = {}
        self._volumes = None

    # -- listings -----------------------------------------------------------------------------
    def list(self, kind):
        """A fresh listing of ``kind``, remembered as what is known. A container listed again
        unchanged is the object already known (the re-listing before each image batch holds the
        node's containers once, not twice)."""
        if kind == 'containers':
            items = self.crictl.containers(reuse=self._items.get('containers'))
        else:
            items = getattr(self.crictl, kind)()
        self.listed_at[kind] = seconds(self.clock())
        self._items[kind] = {i.id: i for i in items}
        self.first_listing.setdefault(kind, len(items))
        if kind == 'containers':
            now = seconds(self.clock())
            for c in items:
                self.seen[c.id] = (c, now)
        return items

    def listed(self, kind):
        return kind in self._items

    def current(self, kind):
        """The latest listing of ``kind`` less what was removed since, or a fresh listing when
        there is none yet. Safe for phases 1 and 2 (an exited container or a NotReady sandbox
        does not come back, and containerd creates no container in a sandbox that is not ready)
        and for the images of phase 3 (an image that appears later is simply not planned)."""
        if kind in self._items:
            return list(self._items[kind].values())
        return self.list(kind)

    def forget(self, kind, ids):
        """``ids`` of ``kind`` were removed (in check mode: are planned to be). A removed sandbox
        takes its containers with it."""
        known = self._items.get(kind, {})
        for i in ids:
            item = known.pop(i, None)
            if item is not None:
                self.removed[kind][i] = item
        if kind == 'sandboxes' and ids:
            gone = set(ids)
            self.forget('containers', [c.id for c in self.current('containers') if c.pod_id in gone])

    # -- pods ---------------------------------------------------------------------------------
    def tracked(self, uid):
        """(True/False, pod dir) under the live kubelet root; (ASSUMED, None) when none is live."""
        root = self.live_root()
        if not root:
            return ASSUMED, None
        path = os.path.join(root, 'pods', uid)
        return os.path.isdir(path), path

    def live_root(self):
        """The kubelet root the run asks, chosen once: the one set, else the first candidate that is
        live: some sandbox's pod has a directory ``pods/<uid>`` there (a root the kubelet does not
        use has none; /var/lib/kubelet exists on every node where a kubelet ran, for its device
        plugins), and so does every Ready sandbox's (the kubelet makes it before the sandbox).
        None when no candidate is, with the reasons in ``no_live_root``."""
        if self.root_checked:
            return self.kubelet_root
        self.root_checked = True
        sandboxes = self.current('sandboxes') if self.kubelet_candidates else []
        uids = sorted({s.uid for s in sandboxes if s.uid})
        ready = sorted((s for s in sandboxes if s.uid and s.state == SANDBOX_READY), key=lambda s: s.id)
        why = []
        for root, source in self.kubelet_candidates:
            pods = os.path.join(root, 'pods')
            if not os.path.isdir(pods):
                why.append('%s (%s): no pods directory' % (root, source))
                continue
            if not any(os.path.isdir(os.path.join(pods, uid)) for uid in uids):
                why.append('%s (%s): no sandbox\'s pod has a directory there' % (root, source))
                continue
            missing = [s for s in ready if not os.path.isdir(os.path.join(pods, s.uid))]
            if missing:
                why.append('%s (%s): the Ready sandbox %s has no pods/%s there' % (
                    root, source, short_id(missing[0].id), missing[0].uid))
                continue
            self.kubelet_root = root
            self.kubelet_root_source = '%s; live: %d of the node\'s pods have a directory there, every Ready ' \
                'sandbox\'s among them' % (source, sum(1 for uid in uids if os.path.isdir(os.path.join(pods, uid))))
            return root
        self.no_live_root = '; '.join(why) or 'no kubelet root to try'
        return None

    def pods(self):
        """{sandbox id: Pod} over the current sandboxes and containers."""
        return build_pods(self.current('sandboxes'), self.current('containers'), self.tracked)

    def ready_sandboxes(self):
        return [s for s in self.current('sandboxes') if s.state == SANDBOX_READY]

    # -- image volumes ------------------------------------------------------------------------
    def image_volumes(self, containers):
        """{container id: [image reference...]} of the image volumes ``containers`` mount: one
        batched ``crictl inspect`` per run, none when there is no container."""
        if self._volumes is None:
            ids = sorted(c.id for c in containers)
            self._volumes = self.crictl.image_volumes(ids) if ids else {}
        return self._volumes

    def known_image_volumes(self):
        """What ``image_volumes`` found, if it was asked in this run (else {})."""
        return self._volumes or {}
