"""The policies: the collection's run (every 6 hours, as the timer) through the collection's
own planning code, and a model of the kubelet's image garbage collector (every 5 minutes).

``collection_plan`` is the ONE call into plugins/module_utils: it does what
``Engine.images_phase`` and ``Engine.last_use`` do with a listing, with the clock injected.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from plugins.module_utils import _cri, _plan, _record, _refs, _retention, _settings  # noqa: E402  (repo root on sys.path first)

SANDBOX_IMAGE = 'registry.k8s.io/pause:3.10'   # counted in the node's base, never listed
MINUTE, HOUR, DAY = 60, 3600, 86400


def collection_plan(now, images, containers, removed_containers, record, settings, disk, ages):
    """(plan, record): the image plan of one run at ``now`` (seconds) and the last-use record with
    this run's evidence merged in, as the engine computes them.

    ``images``/``containers``: _cri.Image/_cri.Container as listed; ``removed_containers``: ids
    phase 1 removed in this run; ``record``: the last-use record as read; ``settings``: validated
    (``_settings.validate``); ``disk``: ``{'used_bytes', 'size_bytes'}`` of the image filesystem;
    ``ages``: ``{image id: seconds since it was pulled}`` (the manifest ages of the content store).
    """
    ids = dict((c.id, image_id) for image_id, users in _refs.image_users(images, containers).items()
               for c in users)
    record = _record.merge(record, now, _record.uses(containers, now, ids), images)
    target = None
    if settings['disk_high']:
        target = dict(disk, high=settings['disk_high'], low=settings['disk_low'])
    retention = _retention.Retention(now, settings['image_unused_for'], record, target)
    plan = _plan.plan_images(images, containers, SANDBOX_IMAGE, settings['image_exclude'], settings['image_min_age'],
                             ages, removed_containers=removed_containers, retention=retention)
    return plan, record


class CollectionPolicy(object):
    """A run of the collection every ``period`` seconds: phase 1 removes exited containers, phase 3
    plans with ``collection_plan``; the last-use record is kept between runs as the runner does."""

    kind = 'collection'

    def __init__(self, period=6 * HOUR, **settings):
        self.period = period
        self.settings = _settings.validate(settings, _settings.names('images'))
        self.record = {}
        self.runs = 0
        self.empty_runs = 0
        self.blind = 0           # images removed as never used though a pod ran with them since the pull

    def run(self, node, now):
        containers = node.listed_containers()
        exited = [c.id for c in containers if c.state == _cri.CONTAINER_EXITED]
        images = node.listed_images()
        disk = {'used_bytes': node.used, 'size_bytes': node.disk_bytes}
        ages = dict((i.id, now - node.pulled_at[i.id]) for i in images)
        plan, record = collection_plan(now, images, containers, exited, self.record, self.settings, disk, ages)
        node.remove_containers(exited)
        self.blind += sum(1 for i in plan.ids if record[i]['last_used'] is None
                          and node.last_end.get(i, -1) >= node.pulled_at[i])
        for image_id in plan.ids:
            node.remove_image(image_id)
        self.record = _record.merge(record, now, {}, node.listed_images())
        self.runs += 1
        self.empty_runs += 0 if plan.ids else 1
        return plan.ids


class KubeletGC(object):
    """The kubelet's image GC (pkg/kubelet/images/image_gc_manager.go), every 5 minutes:

    - each pass detects the images: an image first seen gets ``firstDetected`` now, an image a
      listed container (running or exited) uses gets ``lastUsed`` now (an image never seen in use
      counts as last used when first detected);
    - with ``max_age`` (imageMaximumGCAge), unused images last used longer ago go;
    - when usage is at or above ``high`` percent, unused images detected at least ``min_age`` ago
      go, least recently used first (then first detected first), until usage is at or below ``low``.

    Its records live in memory (a restart of the kubelet forgets them); the replay never restarts it.
    """

    kind = 'kubelet'

    def __init__(self, period=5 * MINUTE, high=85, low=80, min_age=2 * MINUTE, max_age=None):
        self.period, self.high, self.low, self.min_age, self.max_age = period, high, low, min_age, max_age
        self.first = {}
        self.last = {}
        self.passes = 0          # passes that removed something

    def run(self, node, now):
        in_use = node.images_in_use()
        for image_id in list(self.first):
            if image_id not in node.images:
                del self.first[image_id]
                self.last.pop(image_id, None)
        for image_id in node.images:
            self.first.setdefault(image_id, now)
            if image_id in in_use:
                self.last[image_id] = now
        removed = []
        if self.max_age:
            for image_id in sorted(node.images):
                if image_id not in in_use and now - self.last.get(image_id, self.first[image_id]) > self.max_age:
                    removed.append(image_id)
                    node.remove_image(image_id)
        if 100.0 * node.used / node.disk_bytes >= self.high:
            goal = node.used - node.disk_bytes * self.low // 100
            order = sorted((i for i in node.images if i not in in_use and now - self.first[i] >= self.min_age),
                           key=lambda i: (self.last.get(i, self.first[i]), self.first[i], i))
            freed = 0
            for image_id in order:
                if freed >= goal:
                    break
                freed += node.images[image_id].size
                removed.append(image_id)
                node.remove_image(image_id)
        self.passes += 1 if removed else 0
        return removed


# name -> (description, settings of the collection's run or None, kubelet settings or None)
POLICIES = [
    ('seed', 'every unused image each run (0.1.0: image_min_age 0)',
     dict(image_min_age='0s'), {}),
    ('kubelet', 'kubelet only: 85/80, imageMinimumGCAge 2m', None, {}),
    ('kubelet+maxage7d', 'kubelet only, imageMaximumGCAge 7d', None, dict(max_age=7 * DAY)),
    ('defaults', "this collection's defaults (image_min_age 10m, no warm cache)", {}, {}),
    ('warm 1d', 'image_unused_for 1d', dict(image_unused_for='1d'), {}),
    ('warm 7d', 'image_unused_for 7d', dict(image_unused_for='7d'), {}),
    ('warm 7d 75/65', 'image_unused_for 7d, disk_high 75, disk_low 65',
     dict(image_unused_for='7d', disk_high=75, disk_low=65), {}),
    ('warm 30d 75/65', 'image_unused_for 30d, disk_high 75, disk_low 65',
     dict(image_unused_for='30d', disk_high=75, disk_low=65), {}),
]


def make(name):
    """The policy objects of a row of POLICIES: the collection's run (if any), then the kubelet's
    GC, which runs on every node (behind the collection's runs too)."""
    for row, dummy, collection, kubelet in POLICIES:
        if row == name:
            out = [] if collection is None else [CollectionPolicy(**collection)]
            return out + [KubeletGC(**kubelet)]
    raise KeyError(name)
