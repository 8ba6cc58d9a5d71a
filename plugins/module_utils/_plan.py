# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""Planning: what each phase would remove, and why; for images also what is kept, and why.

Pure functions over parsed listings: no commands run here, so check mode and a real run
compute the very same plan.
"""

import fnmatch

from ._common import format_duration

EXITED = 'CONTAINER_EXITED'
CREATED = 'CONTAINER_CREATED'
NOTREADY = 'SANDBOX_NOTREADY'
LAYER_LABEL_PREFIX = 'containerd.io/gc.ref.content.l.'
CONTENT_REF_PREFIX = 'containerd.io/gc.ref.content.'
CONFIG_LABEL = 'containerd.io/gc.ref.content.config'
# What a sandbox (pause) image is called by kubeadm (registry.k8s.io/pause), k3s and RKE2
# (rancher/mirrored-pause) and most mirrors of them, matched on fully qualified references.
SANDBOX_IMAGE_LOOKALIKES = ('*/pause:*', '*/pause@*', '*/mirrored-pause:*', '*/mirrored-pause@*',
                            '*/*-pause:*', '*/*-pause@*')


class Plan:
    """``remove``: items with a ``reason``; ``keep``: items deliberately kept, with a ``reason``."""

    def __init__(self, phase):
        self.phase = phase
        self.remove = []
        self.keep = []
        self.warnings = []
        self.disk = None           # images: the disk target's figures, when one applies
        self.last_use = {}         # images: {id: last use in words} of the disk target's candidates

    @property
    def ids(self):
        return [item['id'] for item in self.remove]


def _age(now_ns, created_ns):
    return max(0, (now_ns - created_ns) // 10 ** 9)


def _short(identifier):
    return identifier.split(':', 1)[-1][:13]


# --------------------------------------------------------------------------------------------
# Phase 1: containers

def namespace_filter(namespace, namespaces=None, exclude_namespaces=None):
    """The reason a pod of ``namespace`` is left alone by phases 1 and 2, or None."""
    if namespaces and not _matches_any(namespace, namespaces):
        return 'namespace %r is not in namespaces' % namespace
    pattern = _matches_any(namespace, exclude_namespaces)
    if pattern:
        return 'namespace %r excluded by pattern %r' % (namespace, pattern)
    return None


def _namespace_of(c, pods):
    pod = (pods or {}).get(c.pod_id)
    return pod.namespace if pod is not None and pod.namespace else c.pod_namespace


def plan_containers(containers, now_ns, created_min_age=3600, pods=None, namespaces=None, exclude_namespaces=None,
                    pod_aware=True):
    """Exited containers, and created-never-started ones older than ``created_min_age``.

    ``pods`` ({sandbox id: _node.Pod}) applies the kubelet's rules (``pod_aware``): in a live pod
    the newest exited instance of each container name (init containers included) stays, older
    ones go; in a pod that is not live every exited container goes. Without ``pods``, or with
    ``pod_aware`` false, every exited container goes. ``namespaces``/``exclude_namespaces`` leave
    the containers of other namespaces (the pod's, else the container's kubelet label) alone
    either way.
    """
    plan = Plan('containers')
    blunt = pods is None or not pod_aware
    newest = {}
    for pod in set((pods or {}).values()):
        for name, c in pod.newest_exited(EXITED).items():
            newest[(pod.key, name)] = c
    for c in sorted(containers, key=lambda x: (x.created_ns, x.id)):
        if c.state not in (EXITED, CREATED):
            continue
        item = c.to_dict()
        item['age'] = _age(now_ns, c.created_ns)
        pod = (pods or {}).get(c.pod_id)
        item['pod'] = pod.label if pod is not None else ''
        skip = namespace_filter(_namespace_of(c, pods), namespaces, exclude_namespaces)
        if skip:
            item['reason'] = skip
            plan.keep.append(item)
        elif c.state == CREATED:
            if item['age'] >= created_min_age:
                item['reason'] = 'created but never started, %s old (created_min_age %s)' % (
                    format_duration(item['age']), format_duration(created_min_age))
                plan.remove.append(item)
            else:
                item['reason'] = 'created %s ago, younger than created_min_age %s' % (
                    format_duration(item['age']), format_duration(created_min_age))
                plan.keep.append(item)
        elif blunt:
            item['reason'] = 'exited'
            plan.remove.append(item)
        elif pod is None:
            item['reason'] = 'exited, and its sandbox %s is not listed' % _short(c.pod_id)
            plan.remove.append(item)
        else:
            live, why = pod.liveness()
            kept = newest.get((pod.key, c.name))
            if not live:
                item['reason'] = 'exited, and pod %s is not live: %s' % (pod.label, why)
                plan.remove.append(item)
            elif kept is None or kept.id == c.id:
                item['reason'] = ('newest exited instance of %s (attempt %d) in live pod %s (%s): the kubelet '
                                  'keeps it for its status, restart count and logs' % (c.name, c.attempt, pod.label, why))
                plan.keep.append(item)
            else:
                item['reason'] = 'older exited instance of %s (attempt %d; attempt %d, %s, is kept) in live pod %s' % (
                    c.name, c.attempt, kept.attempt, _short(kept.id), pod.label)
                plan.remove.append(item)
    return plan


# --------------------------------------------------------------------------------------------
# Phase 2: sandboxes

def _matches_any(value, patterns):
    for pattern in patterns or ():
        if fnmatch.fnmatchcase(value, pattern):
            return pattern
    return None


def plan_sandboxes(sandboxes, containers, now_ns, min_age=600, namespaces=None, exclude_namespaces=None,
                   pods=None, leaving=()):
    """NotReady sandboxes older than ``min_age`` (from ``createdAt``) that hold no container that stays.

    With ``pods`` ({sandbox id: _node.Pod}, ``pod_aware``): the newest sandbox of a live pod stays
    even when NotReady; older sandboxes of a live pod and the NotReady sandboxes of pods that are
    not live go; a container stays unless its id is in ``leaving`` (those phase 1's rules remove,
    which ``crictl rmp`` takes along). Without ``pods`` (``pod_aware: false``): every NotReady
    sandbox goes unless a container in it is not exited.
    """
    plan = Plan('sandboxes')
    leaving = set(leaving or ())
    blockers = {}
    for c in containers:
        stays = c.id not in leaving if pods is not None else c.state != EXITED
        if stays:
            blockers.setdefault(c.pod_id, []).append(c)
    for s in sorted(sandboxes, key=lambda x: (x.created_ns, x.id)):
        if s.state != NOTREADY:
            continue
        item = s.to_dict()
        item['age'] = _age(now_ns, s.created_ns)
        pod = (pods or {}).get(s.id)
        live, why = pod.liveness() if pod is not None else (False, '')
        skip = namespace_filter(s.namespace, namespaces, exclude_namespaces)
        if skip:
            item['reason'] = skip
            plan.keep.append(item)
        elif pod is not None and live and pod.newest.id == s.id:
            item['reason'] = 'NotReady, but the newest sandbox of live pod %s (%s)' % (pod.label, why)
            plan.keep.append(item)
        elif item['age'] < min_age:
            item['reason'] = 'NotReady but only %s old, younger than min_age %s' % (
                format_duration(item['age']), format_duration(min_age))
            plan.keep.append(item)
        elif s.id in blockers:
            c = blockers[s.id][0]
            if pods is None:
                item['reason'] = 'NotReady but container %s is %s' % (c.name, c.state)
            else:
                item['reason'] = 'NotReady but holds container %s (%s, %s), which stays' % (
                    c.name, _short(c.id), c.state.replace('CONTAINER_', '').lower())
            plan.keep.append(item)
        elif pods is None:
            item['reason'] = 'NotReady, created %s ago (min_age %s)' % (
                format_duration(item['age']), format_duration(min_age))
            plan.remove.append(item)
        elif live:
            item['reason'] = 'older sandbox of live pod %s (newest: %s), created %s ago (min_age %s)' % (
                pod.label, _short(pod.newest.id), format_duration(item['age']), format_duration(min_age))
            plan.remove.append(item)
        else:
            item['reason'] = 'NotReady, pod %s is not live (%s), created %s ago (min_age %s)' % (
                pod.label, why, format_duration(item['age']), format_duration(min_age))
            plan.remove.append(item)
    return plan


# --------------------------------------------------------------------------------------------
# Phase 3: images

def normalize_ref(ref):
    """Fully qualified image reference, as containerd stores it (``busybox`` -> ``docker.io/library/busybox:latest``)."""
    if not ref or ref.startswith('sha256:'):
        return ref
    name, at, digest = ref.partition('@')
    first, slash, rest = name.partition('/')
    if not slash:
        name = 'docker.io/library/' + name
    elif '.' not in first and ':' not in first and first != 'localhost':
        name = 'docker.io/' + name
    if not at and ':' not in name.rsplit('/', 1)[-1]:
        name += ':latest'
    return name + at + digest


def _qualified(pattern):
    """The fully qualified form of a pattern whose repository part has no wildcard, else None."""
    first, slash, dummy = pattern.partition('/')
    if any(ch in (first if slash else first.split(':')[0].split('@')[0]) for ch in '*?['):
        return None
    if not slash:
        return 'docker.io/library/' + pattern
    if '.' not in first and ':' not in first and first != 'localhost':
        return 'docker.io/' + pattern
    return None


def exclude_patterns(patterns):
    """{pattern to match: the user's pattern}. A pattern without tag or digest (``busybox``) matches
    every tag and digest of that repository (``busybox:*``, ``busybox@*``); ``repo:*`` also matches
    the digest form ``repo@...``; each form is matched as written and, when its repository part has
    no wildcard, fully qualified (``busybox:*`` also matches ``docker.io/library/busybox:1.36``)."""
    out = {}
    for pattern in patterns or ():
        forms = [pattern]
        if not pattern.startswith('sha256:'):
            last = pattern.rsplit('/', 1)[-1]
            if '@' not in pattern and ':' not in last:
                forms += [pattern + ':*', pattern + '@*']
            elif pattern.endswith(':*') and '@' not in pattern:
                forms.append(pattern[:-2] + '@*')
            forms += [q for q in (_qualified(f) for f in list(forms)) if q]
        for form in forms:
            out.setdefault(form, pattern)
    return out


def _refs_index(images):
    by_ref = {}
    for image in images:
        for ref in [image.id] + image.refs:
            by_ref[ref] = image.id
            by_ref[normalize_ref(ref)] = image.id
    return by_ref


def image_users(images, containers):
    """Image id -> containers using it, by image id, repo digest or tag (as ``crictl rmi --prune``)."""
    by_ref = _refs_index(images)
    users = {}
    for c in containers:
        for ref in (c.image_ref, c.image, normalize_ref(c.image)):
            if ref and ref in by_ref:
                users.setdefault(by_ref[ref], []).append(c)
                break
    return users


def _sandbox_images(sandbox_image):
    if not sandbox_image:
        return []
    return [sandbox_image] if isinstance(sandbox_image, str) else [i for i in sandbox_image if i]


def looks_like_sandbox_image(image):
    return any(_matches_any(normalize_ref(r), SANDBOX_IMAGE_LOOKALIKES) for r in image.refs)


def pins_a_sandbox_image(images):
    """Whether the runtime pins an image that looks like a sandbox image (containerd 1.7 and 2.x pin
    their own, and 2.x does not report it). Another pinned image says nothing about the sandbox image."""
    return any(i.pinned and looks_like_sandbox_image(i) for i in images)


def _describe_user(c, more):
    return '%s (%s, %s)%s' % (c.name, _short(c.id), c.state.replace('CONTAINER_', '').lower(),
                              ' and %d more' % more if more else '')


def plan_images(images, containers, sandbox_image=None, exclude=(), min_age=0, ages=None,
                removed_containers=(), retention=None, image_volumes=None):
    """Unused images with the semantics of ``crictl rmi --prune``, plus the collection's guards.

    ``images``, ``containers``: lists of _cri.Image / _cri.Container. An image is in use when any
    container (exited ones included) refers to it, or mounts it as an image volume
    (``image_volumes``: {container id: [image reference...]}), unless that container is in
    ``removed_containers`` (removed earlier in the same run). Pinned images, the sandbox images
    (``sandbox_image``: a reference or a list of them - the setting and what the runtime reports),
    images matching an ``exclude`` pattern (on tags, digests or id) and images younger than
    ``min_age`` (``ages``: {image id: seconds since the last-use record first saw it}) are kept. When no sandbox image
    is named, images that look like one are kept (a runtime that pins one may have used others
    before: a changed sandbox image). ``retention`` (a Retention) then keeps a warm
    cache of recently used images.
    """
    plan = Plan('images')
    removed = set(removed_containers or ())
    staying = [c for c in containers if c.id not in removed]
    users = image_users(images, staying)
    freed_by = image_users(images, [c for c in containers if c.id in removed])
    mounted = volume_users(images, staying, image_volumes)
    sandbox_refs = _sandbox_images(sandbox_image)
    sandbox_norm = {normalize_ref(r): r for r in sandbox_refs}
    # Fail safe: when no sandbox image is named, every image that looks like one stays (removing
    # it breaks the next pod start on a node that cannot pull). Some pinned image does not stand
    # for the sandbox image; a pinned look-alike only makes the warning unnecessary.
    unknown_sandbox = not sandbox_refs
    patterns = exclude_patterns(exclude)
    matched = set()
    for image in sorted(images, key=lambda i: i.id):
        item = image.to_dict()
        norm_refs = [normalize_ref(r) for r in image.refs]
        pattern = None
        for candidate in [image.id] + image.refs + norm_refs:
            pattern = _matches_any(candidate, patterns)
            if pattern:
                pattern = patterns[pattern]
                matched.add(pattern)
                break
        sandbox = [sandbox_norm[r] for r in norm_refs if r in sandbox_norm] + [r for r in sandbox_refs if r == image.id]
        age = (ages or {}).get(image.id)
        if image.id in users:
            item['reason'] = 'in use by container %s' % _describe_user(users[image.id][0], len(users[image.id]) - 1)
            item['used_by'] = [c.id for c in users[image.id]]
            plan.keep.append(item)
        elif image.id in mounted:
            item['reason'] = 'mounted as an image volume by container %s' % _describe_user(
                mounted[image.id][0], len(mounted[image.id]) - 1)
            item['used_by'] = [c.id for c in mounted[image.id]]
            plan.keep.append(item)
        elif image.pinned:
            item['reason'] = 'pinned by the runtime'
            plan.keep.append(item)
        elif sandbox:
            item['reason'] = 'sandbox (pause) image of the runtime (%s)' % sandbox[0]
            plan.keep.append(item)
        elif unknown_sandbox and looks_like_sandbox_image(image):
            item['reason'] = ('looks like a sandbox (pause) image, and the runtime does not report its own; set '
                              'sandbox_image to name it')
            plan.keep.append(item)
        elif pattern:
            item['reason'] = 'excluded by pattern %r' % pattern
            plan.keep.append(item)
        elif min_age and age is None:
            item['reason'] = ('age unknown (not in the last-use record); kept because image_min_age is set')
            plan.keep.append(item)
        elif min_age and age < min_age:
            item['reason'] = 'younger than image_min_age %s (first seen %s ago, per the last-use record)' % (
                format_duration(min_age), format_duration(age))
            plan.keep.append(item)
        else:
            if image.id in freed_by:
                reason = 'used only by containers removed in this run'
            elif not image.tags:
                reason = 'unused and untagged (dangling)'
            else:
                reason = 'unused'
            item['reason'] = reason
            plan.remove.append(item)
    if retention is not None:
        retention.apply(plan)
    if unknown_sandbox and not pins_a_sandbox_image(images):
        plan.warnings.append('the runtime did not report its sandbox (pause) image and pins none that looks like '
                             'one: images that look like one (%s) are kept; set sandbox_image to name it'
                             % ', '.join(SANDBOX_IMAGE_LOOKALIKES))
    for pattern in exclude or ():
        if pattern not in matched:
            plan.warnings.append('image_exclude pattern %r matches no image on this node (a pattern is matched '
                                 'against tags, digests and ids; one without tag or digest, such as busybox, '
                                 'matches every tag and digest of its repository)' % pattern)
    return plan


def volume_users(images, containers, image_volumes):
    """Image id -> containers of ``containers`` that mount it as an image volume."""
    if not image_volumes:
        return {}
    by_ref = _refs_index(images)
    out = {}
    for c in containers:
        for ref in image_volumes.get(c.id, ()):
            image_id = by_ref.get(ref) or by_ref.get(normalize_ref(ref))
            if image_id and c not in out.get(image_id, []):
                out.setdefault(image_id, []).append(c)
    return out


class Retention:
    """The warm cache: of the unused images a plan would remove, keep those used (or, never used,
    first seen) less than ``unused_for`` seconds ago; but while the image filesystem is above
    ``disk['high']`` percent, remove kept ones too, least recently used first, until the projected
    usage is at or below ``disk['low']``.

    ``last_use``: ``{image id: {'first_seen': s, 'last_used': s or None}}`` (the last-use record);
    an image it does not know counts as used ``now``. ``disk``: None, or ``{'high', 'low',
    'used_bytes', 'size_bytes'}`` of the image filesystem.
    """

    def __init__(self, now, unused_for=0, last_use=None, disk=None, trust_ages=True):
        """``trust_ages`` False (the record was saved after now: the clock went back): no image
        goes for its age; every one ``unused_for`` would remove is kept warm."""
        self.now = now
        self.unused_for = unused_for
        self.last_use = last_use or {}
        self.disk = disk
        self.trust_ages = trust_ages

    def last(self, image_id):
        """(seconds ago, what): the image's last use, or its first sighting, or now if unknown.
        A time in the future (clock skew) counts as now."""
        entry = self.last_use.get(image_id)
        if not entry:
            return 0, 'last use unknown, counted as now'
        if entry.get('last_used') is not None:
            stamp, what = entry['last_used'], 'last used'
        else:
            stamp, what = entry['first_seen'], 'never used, first seen'
        return max(0, self.now - stamp), what

    def _said(self, image_id):
        ago, what = self.last(image_id)
        return what if what.endswith('now') else '%s %s ago' % (what, format_duration(ago))

    def apply(self, plan):
        warm = []
        if self.unused_for:
            removable = []
            for item in plan.remove:
                if not self.trust_ages or self.last(item['id'])[0] < self.unused_for:
                    warm.append(item)
                else:
                    item['reason'] += '; %s (image_unused_for %s)' % (
                        self._said(item['id']), format_duration(self.unused_for))
                    removable.append(item)
            plan.remove[:] = removable
        if self.disk and self.disk.get('size_bytes'):
            warm = self._free_to_target(plan, warm)
        for item in warm:
            item['reason'] = 'unused, %s (image_unused_for %s)%s' % (
                self._said(item['id']), format_duration(self.unused_for),
                '' if self.trust_ages else '; kept: the last-use record was saved after now (the clock went back)')
        plan.keep.extend(warm)

    @staticmethod
    def target_reason(before, low, said):
        return ('removed to bring the image filesystem from %d%% to %d%% (disk_low), least recently used first; %s'
                % (before, low, said))

    def _percent(self, used):
        return 100.0 * used / self.disk['size_bytes']

    ESTIMATE = ('an estimate: projected from the image sizes the runtime reports (compressed content, layers '
                'shared with kept images counted in full), not from what removing them frees on disk; a real '
                'run removes the candidates one at a time, least recently used first, and re-reads the '
                'filesystem after each until it is at or below disk_low')

    def _free_to_target(self, plan, warm):
        """Moves warm images into ``plan.remove``, least recently used first (ties: the larger
        first, then by id), while the projected usage is above ``low``; returns the rest.

        The projection is an estimate (``plan.disk['estimate']`` says from what); a check run
        reports it. ``plan.disk['candidates']`` lists every warm image the target may take, in
        the order it takes them (those the estimate moved are marked ``disk_target``): a real
        run (the images phase) removes them one at a time and measures the filesystem after each."""
        high, low = self.disk['high'], self.disk['low']
        used = self.disk['used_bytes']
        before = self._percent(used)
        plan.disk = {'used_percent': round(before, 1), 'high': high, 'low': low}
        if before <= high:
            plan.disk['projected_percent'] = round(self._percent(used - sum(i['size'] for i in plan.remove)), 1)
            return warm
        projected = used - sum(i['size'] for i in plan.remove)
        order = sorted(warm, key=lambda i: (-self.last(i['id'])[0], -i['size'], i['id']))
        plan.disk.update(estimate=self.ESTIMATE, candidates=[i['id'] for i in order],
                         used_bytes=used, size_bytes=self.disk['size_bytes'])
        plan.last_use = {i['id']: self._said(i['id']) for i in order}
        while order and self._percent(projected) > low:
            item = order.pop(0)
            item['reason'] = self.target_reason(round(before), low, self._said(item['id']))
            item['disk_target'] = True
            plan.remove.append(item)
            projected -= item['size']
        plan.disk['projected_percent'] = round(self._percent(projected), 1)
        if self._percent(projected) > low:
            plan.warnings.append('the image filesystem stays at %.0f%% after every unused image that may go is '
                                 'removed: disk_low %d%% is not reached' % (self._percent(projected), low))
        return order


# --------------------------------------------------------------------------------------------
# Phase 4: content store

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
