# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""Planning: what phases 1 and 2 would remove and keep, and why, and the Plan every phase's plan
is (phase 3's plan is in _plan_images, phase 4's, over the content store's labels, in _content).

Pure functions over parsed listings: no commands run here, so check mode and a real run
compute the very same plan.
"""

from ._listings import CONTAINER_CREATED, CONTAINER_EXITED, SANDBOX_NOTREADY, state_word
from ._refs import matches_any
from ._units import format_duration, seconds, short_id


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
    return max(0, seconds(now_ns - created_ns))


# --------------------------------------------------------------------------------------------
# Phase 1: containers

def namespace_filter(namespace, namespaces=None, exclude_namespaces=None):
    """The reason a pod of ``namespace`` is left alone by phases 1 and 2, or None."""
    if namespaces and not matches_any(namespace, namespaces):
        return 'namespace %r is not in namespaces' % namespace
    pattern = matches_any(namespace, exclude_namespaces)
    if pattern:
        return 'namespace %r excluded by pattern %r' % (namespace, pattern)
    return None


def _namespace_of(c, pods):
    pod = (pods or {}).get(c.pod_id)
    return pod.namespace if pod is not None and pod.namespace else c.pod_namespace


def plan_containers(containers, now_ns, created_min_age=3600, pods=None, namespaces=None, exclude_namespaces=None,
                    pod_aware=True):
    """Exited containers, and created-never-started ones older than ``created_min_age``.

    ``pods`` ({sandbox id: _node.Pod}) applies the kubelet's rules (``pod_aware``; the kubelet's
    evictableContainers): in a live pod the newest instance of each container name that is not
    running stays, exited or only created (init containers included), older ones go; in a pod
    that is not live every exited container goes. Without ``pods``, or with ``pod_aware`` false,
    every exited container goes. A created container younger than ``created_min_age`` always
    stays (the kubelet may be about to start it). ``namespaces``/``exclude_namespaces`` leave
    the containers of other namespaces (the pod's, else the container's kubelet label) alone
    either way.
    """
    plan = Plan('containers')
    blunt = pods is None or not pod_aware
    newest = {}
    for pod in set((pods or {}).values()):
        for name, c in pod.newest_instances((CONTAINER_EXITED, CONTAINER_CREATED)).items():
            newest[(pod.key, name)] = c
    for c in sorted(containers, key=lambda x: (x.created_ns, x.id)):
        if c.state not in (CONTAINER_EXITED, CONTAINER_CREATED):
            continue
        item = c.to_dict()
        item['age'] = _age(now_ns, c.created_ns)
        pod = (pods or {}).get(c.pod_id)
        item['pod'] = pod.label if pod is not None else ''
        created = c.state == CONTAINER_CREATED
        what = ('created but never started, %s old (created_min_age %s)' % (
            format_duration(item['age']), format_duration(created_min_age)) if created else 'exited')
        skip = namespace_filter(_namespace_of(c, pods), namespaces, exclude_namespaces)
        if skip:
            item['reason'] = skip
            plan.keep.append(item)
        elif created and item['age'] < created_min_age:
            item['reason'] = 'created %s ago, younger than created_min_age %s' % (
                format_duration(item['age']), format_duration(created_min_age))
            plan.keep.append(item)
        elif blunt:
            item['reason'] = what
            plan.remove.append(item)
        elif pod is None:
            item['reason'] = '%s, and its sandbox %s is not listed' % (what, short_id(c.pod_id))
            plan.remove.append(item)
        else:
            live, why = pod.liveness()
            kept = newest.get((pod.key, c.name))
            if not live:
                item['reason'] = '%s, and pod %s is not live: %s' % (what, pod.label, why)
                plan.remove.append(item)
            elif kept is None or kept.id == c.id:
                item['reason'] = _newest_reason(c, pod, why)
                plan.keep.append(item)
            else:
                item['reason'] = _older_reason(c, kept, pod)
                plan.remove.append(item)
    return plan


def _newest_reason(c, pod, why):
    if c.state == CONTAINER_EXITED:
        return ('newest exited instance of %s (attempt %d) in live pod %s (%s): the kubelet keeps it for its status, '
                'restart count and logs' % (c.name, c.attempt, pod.label, why))
    return ('newest instance of %s (attempt %d, created, never started) in live pod %s (%s): the kubelet keeps the '
            'newest instance of each container that is not running, started or not' % (c.name, c.attempt, pod.label, why))


def _older_reason(c, kept, pod):
    if c.state == CONTAINER_EXITED and kept.state == CONTAINER_EXITED:
        return 'older exited instance of %s (attempt %d; attempt %d, %s, is kept) in live pod %s' % (
            c.name, c.attempt, kept.attempt, short_id(kept.id), pod.label)
    return 'older instance of %s (attempt %d, %s; attempt %d, %s, %s, is kept) in live pod %s' % (
        c.name, c.attempt, state_word(c.state), kept.attempt, short_id(kept.id), state_word(kept.state), pod.label)


# --------------------------------------------------------------------------------------------
# Phase 2: sandboxes

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
        stays = c.id not in leaving if pods is not None else c.state != CONTAINER_EXITED
        if stays:
            blockers.setdefault(c.pod_id, []).append(c)
    for s in sorted(sandboxes, key=lambda x: (x.created_ns, x.id)):
        if s.state != SANDBOX_NOTREADY:
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
            item['reason'] = 'NotReady but only %s old, younger than sandbox_min_age %s' % (
                format_duration(item['age']), format_duration(min_age))
            plan.keep.append(item)
        elif s.id in blockers:
            c = blockers[s.id][0]
            if pods is None:
                item['reason'] = 'NotReady but container %s is %s' % (c.name, c.state)
            else:
                item['reason'] = 'NotReady but holds container %s (%s, %s), which stays' % (
                    c.name, short_id(c.id), state_word(c.state))
            plan.keep.append(item)
        elif pods is None:
            item['reason'] = 'NotReady, created %s ago (sandbox_min_age %s)' % (
                format_duration(item['age']), format_duration(min_age))
            plan.remove.append(item)
        elif live:
            item['reason'] = 'older sandbox of live pod %s (newest: %s), created %s ago (sandbox_min_age %s)' % (
                pod.label, short_id(pod.newest.id), format_duration(item['age']), format_duration(min_age))
            plan.remove.append(item)
        else:
            item['reason'] = 'NotReady, pod %s is not live (%s), created %s ago (sandbox_min_age %s)' % (
                pod.label, why, format_duration(item['age']), format_duration(min_age))
            plan.remove.append(item)
    return plan
