"""The policies: the collection's run (on the timer's schedule) through the collection's own
planning code, its observation pass, and a model of the kubelet (image GC every 5 minutes,
eviction manager every 10 seconds).

``collection_plan`` is the ONE call into plugins/module_utils for images: it does what
``Engine.images_phase`` and ``Engine.last_use`` do with a listing, with the clock injected;
phase 1 goes through ``_plan.plan_containers`` with the pods as the kubelet tracks them.
"""

import random

from bench.policy.sim import sandbox_id
from plugins.module_utils import _node, _plan, _plan_images, _record, _refs, _retention, _settings

SANDBOX_IMAGE = 'registry.k8s.io/pause:3.10'   # counted in the node's base, never listed
MINUTE, HOUR, DAY = 60, 3600, 86400
# roles/timer/defaults/main.yml: OnCalendar *-*-* 00/6:00:00, RandomizedDelaySec 30m (systemd draws a
# new delay in [0, 30m) for every elapse).
TIMER_PERIOD, TIMER_DELAY = 6 * HOUR, 30 * MINUTE
OBSERVE_PERIOD = 5 * MINUTE


def collection_plan(now, images, containers, removed_containers, record, settings, disk, ages):
    """(plan, record): the image plan of one run at ``now`` (seconds) and the last-use record with
    this run's evidence merged in, as the engine computes them.

    ``images``/``containers``: _listings.Image/_listings.Container as listed; ``removed_containers``: ids
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
    plan = _plan_images.plan_images(images, containers, SANDBOX_IMAGE, settings['image_exclude'], settings['image_min_age'],
                                    ages, removed_containers=removed_containers, retention=retention)
    return plan, record


def container_plan(now, node, settings):
    """Phase 1's plan: ``_plan.plan_containers`` with the pods as the kubelet tracks them (a pod is
    live while the trace keeps it: running, or finished and kept, like a Job's pod by its history)."""
    containers = node.listed_containers()
    tracked = set(sandbox_id(n) for n in node.tracked)
    by_pod = {}
    for c in containers:
        by_pod.setdefault(c.pod_id, []).append(c)
    pods = dict((pod_id, _node.Pod('uid-' + pod_id, 'uid-' + pod_id, mine[0].pod_name, 'default', [], mine,
                                   tracked=pod_id in tracked, pod_dir='/var/lib/kubelet/pods/uid-' + pod_id))
                for pod_id, mine in by_pod.items())
    return _plan.plan_containers(containers, now * 10 ** 9, settings['created_min_age'], pods,
                                 pod_aware=settings['pod_aware'])


class CollectionPolicy(object):
    """A run of the collection on the timer's schedule: phase 1 removes exited containers by
    ``container_plan`` (the pod-aware default keeps the newest exited container of a pod the
    kubelet tracks, and so its image), phase 3 plans with ``collection_plan``; the last-use record
    is kept between runs as the runner does. ``observe`` (seconds, or 0): the observation pass,
    which lists containers that often and raises the record's ``last_used`` (see ObservationPass)."""

    kind = 'collection'

    def __init__(self, period=TIMER_PERIOD, delay=TIMER_DELAY, seed=0, observe=0, **settings):
        self.period, self.delay, self.seed, self.observe = period, delay, seed, observe
        self.settings = _settings.validate(settings, _settings.names('pods', 'containers', 'images'))
        self.record = {}
        self.runs = 0
        self.empty_runs = 0
        self.blind = 0           # images removed as never used though a pod ran with them since the pull

    def times(self, horizon):
        """OnCalendar every ``period`` from midnight, each run delayed by a fresh draw in [0, delay)."""
        rng = random.Random('timer-%s' % self.seed)
        out = []
        for k in range(1, horizon // self.period + 1):
            t = k * self.period + (rng.randrange(self.delay) if self.delay else 0)
            if t < horizon:
                out.append(t)
        return out

    def companions(self):
        return [ObservationPass(self, self.observe)] if self.observe else []

    def run(self, node, now):
        containers = node.listed_containers()
        removed = container_plan(now, node, self.settings).ids
        images = node.listed_images()
        disk = {'used_bytes': node.used, 'size_bytes': node.disk_bytes}
        ages = dict((i.id, now - node.pulled_at[i.id]) for i in images)
        plan, record = collection_plan(now, images, containers, removed, self.record, self.settings, disk, ages)
        node.remove_containers(removed)
        self.blind += sum(1 for i in plan.ids if record[i]['last_used'] is None
                          and node.last_end.get(i, -1) >= node.pulled_at[i])
        for image_id in plan.ids:
            node.remove_image(image_id)
        self.record = _record.merge(record, now, {}, node.listed_images())
        self.runs += 1
        self.empty_runs += 0 if plan.ids else 1
        return plan.ids


class ObservationPass(object):
    """The light pass every ``period`` seconds (issue 26, item 1): lists the containers and the
    images, raises ``last_used`` in the collection's record with what it sees (``_record.uses``:
    now for a running container, its creation for an exited one) and gives new images their
    ``first_seen``; it removes nothing. Updated in place, as ``_record.merge`` would (the replay
    runs it 8,064 times in four weeks)."""

    kind = 'observe'

    def __init__(self, collection, period=OBSERVE_PERIOD):
        self.collection, self.period = collection, period
        self.passes = 0

    def times(self, horizon):
        return list(range(self.period, horizon, self.period))

    def run(self, node, now):
        record = self.collection.record
        for image_id in node.images:
            if image_id not in record:
                record[image_id] = {'first_seen': now, 'last_used': None, 'refs': sorted(node.images[image_id].refs)}
        for image_id, when in _record.uses(node.listed_containers(), now).items():
            entry = record.get(image_id)
            if entry is not None and (entry['last_used'] is None or when > entry['last_used']):
                entry['last_used'] = min(when, now)
        self.passes += 1


class KubeletGC(object):
    """The kubelet's image GC and the image part of its eviction manager.

    Image GC (pkg/kubelet/images/image_gc_manager.go), every 5 minutes (ImageGCPeriod,
    pkg/kubelet/kubelet.go StartGarbageCollection):

    - ``detectImages``: an image first listed gets ``firstDetected`` now; an image any listed
      container uses (running or exited: ``GetPods(true)``) gets ``lastUsed`` now; an image never
      seen in use keeps ``lastUsed`` zero;
    - with ``max_age`` (imageMaximumGCAge), unused images last used longer ago go;
    - usage is ``100 - int(available*100/capacity)``, a whole percentage; at or above ``high`` it
      frees ``capacity*(100-low)/100 - available`` bytes (``freeSpace``): unused images sorted by
      ``lastUsed`` then ``firstDetected`` (``byLastUsedAndDetected``: never-used images, lastUsed
      zero, go first), skipping those detected less than ``min_age`` ago, until enough is freed.

    Eviction manager (pkg/kubelet/eviction/eviction_manager.go, helpers.go): with ``eviction``
    (percent, default 15: the default hard threshold ``imagefs.available<15%``) a check every 10 s
    that finds the signal met reclaims node-level resources first: ``containerGC.DeleteAllUnusedContainers``
    (pkg/kubelet/kuberuntime/kuberuntime_gc.go, ``evictNonDeletedPods`` true: every exited container
    of a pod that is not running, a kept Job pod's too) then ``imageGC.DeleteUnusedImages``
    (``freeSpace`` of everything: every unused image older than ``min_age``). The replay counts
    the episodes below the line (``evictions``) and checks again every 10 s while one lasts; it
    does not model the pod evictions that follow when reclaiming is not enough.

    Its records live in memory (a restart of the kubelet forgets them); the replay never restarts it.
    """

    kind = 'kubelet'

    def __init__(self, period=5 * MINUTE, high=85, low=80, min_age=2 * MINUTE, max_age=None, eviction=15):
        self.period, self.high, self.low, self.min_age, self.max_age = period, high, low, min_age, max_age
        self.eviction = eviction
        self.first = {}
        self.last = {}           # image id -> lastUsed; absent: never seen in use (zero)
        self.new = []            # images pulled since the last detection
        self.passes = 0          # GC passes that removed something
        self.evictions = 0       # episodes below the eviction line (imagefs.available under its threshold)
        self.stuck = False       # the last check left the node below the line

    def attach(self, node):
        node.watchers.append(self._forget)
        pull = node.pull

        def pulled(ref, size, now):
            pull(ref, size, now)
            self.new.append(ref)
        node.pull = pulled

    def _forget(self, image_id):
        self.first.pop(image_id, None)
        self.last.pop(image_id, None)

    def times(self, horizon):
        return list(range(self.period, horizon, self.period))

    def detect(self, node, now):
        if self.new:
            for image_id in node.images:
                self.first.setdefault(image_id, now)
            self.new = []
        for image_id in node.images_in_use():
            self.last[image_id] = now

    def free_space(self, node, now, goal):
        """Removes unused images in the kubelet's order until ``goal`` bytes are freed; the ids."""
        self.detect(node, now)
        in_use = node.images_in_use()
        order = sorted((i for i in node.images if i not in in_use),
                       key=lambda i: (self.last.get(i, 0), self.first[i], i))
        freed, removed = 0, []
        for image_id in order:
            if now - self.first[image_id] < self.min_age:
                continue
            freed += node.images[image_id].size
            removed.append(image_id)
            node.remove_image(image_id)
            if freed >= goal:
                break
        return removed

    def run(self, node, now):
        self.detect(node, now)
        in_use = node.images_in_use()
        removed = []
        if self.max_age:
            for image_id in sorted(node.images):
                if image_id not in in_use and now - self.last.get(image_id, self.first[image_id]) > self.max_age:
                    removed.append(image_id)
                    node.remove_image(image_id)
        capacity, available = node.disk_bytes, node.disk_bytes - node.used
        if 100 - available * 100 // capacity >= self.high:
            removed += self.free_space(node, now, capacity * (100 - self.low) // 100 - available)
        self.passes += 1 if removed else 0
        return removed

    def evict(self, node, now):
        """One check of the eviction manager. While the node stays below the line the replay checks
        again every 10 s (each check reclaims again: a Job pod that ended meanwhile loses its
        containers, then its image); ``evictions`` counts the episodes, not the checks."""
        if not node.below_eviction_line(self.eviction):
            self.stuck = False
            return []
        if not self.stuck:
            self.evictions += 1
        node.remove_containers(node.exited_ids())
        removed = self.free_space(node, now, float('inf'))
        self.stuck = node.below_eviction_line(self.eviction)
        return removed


# name -> (description, settings of the collection's run or None, kubelet settings or None)
# Every collection row runs on the timer's schedule, pod-aware unless it says otherwise.
POLICIES = [
    ('seed', 'every exited container and unused image each run (0.1.0: not pod-aware, image_min_age 0)',
     dict(image_min_age='0s', image_unused_for='0s', pod_aware=False), {}),
    ('kubelet', 'kubelet only: image GC 85/80, imageMinimumGCAge 2m, eviction at imagefs.available < 15%', None, {}),
    ('kubelet+maxage7d', 'kubelet only, imageMaximumGCAge 7d', None, dict(max_age=7 * DAY)),
    ('old defaults', 'the defaults before issue 26: image_unused_for 0s, image_min_age 10m, no disk level',
     dict(image_unused_for='0s'), {}),
    ('warm 7d', 'image_unused_for 7d, no observation pass', dict(image_unused_for='7d'), {}),
]

# The defaults the replay chooses among (issue 26, item 3; report.choose): each is replayed on
# every workload, seed and disk size. "+obs": with the observation pass every 5 minutes.
CANDIDATES = [
    ('warm 7d +obs', 'image_unused_for 7d, observation pass', dict(image_unused_for='7d', observe=OBSERVE_PERIOD), {}),
    ('warm 7d 80/70 +obs', "image_unused_for 7d, disk_high 80, disk_low 70, observation pass (the issue's first "
     'candidate)', dict(image_unused_for='7d', disk_high=80, disk_low=70, observe=OBSERVE_PERIOD), {}),
    ('warm 14d +obs', 'image_unused_for 14d, observation pass', dict(image_unused_for='14d', observe=OBSERVE_PERIOD),
     {}),
    ('warm 21d', 'image_unused_for 21d, no observation pass', dict(image_unused_for='21d'), {}),
    ('warm 21d +obs', 'image_unused_for 21d, observation pass', dict(image_unused_for='21d', observe=OBSERVE_PERIOD),
     {}),
    ('warm 21d 78/70 +obs', 'image_unused_for 21d, disk_high 78, disk_low 70, observation pass',
     dict(image_unused_for='21d', disk_high=78, disk_low=70, observe=OBSERVE_PERIOD), {}),
]


def settings_of(name):
    """The validated image settings of row ``name`` (None: the collection's defaults)."""
    keys = _settings.names('pods', 'containers', 'images')
    if name is None:
        return _settings.validate({}, keys)
    for row, dummy, collection, dummy2 in POLICIES + CANDIDATES:
        if row == name:
            return _settings.validate(dict((k, v) for k, v in (collection or {}).items() if k in keys), keys)
    raise KeyError(name)


def make(name, seed=0, **overrides):
    """The policy objects of a row of POLICIES (or of CANDIDATES): the collection's run (if any)
    and its observation pass, then the kubelet, which runs on every node (behind the collection's
    runs too). ``seed`` draws the timer's delays; ``overrides`` change the collection's keywords."""
    for row, dummy, collection, kubelet in POLICIES + CANDIDATES:
        if row == name:
            return build(collection, kubelet, seed, **overrides)
    raise KeyError(name)


def build(collection, kubelet, seed=0, **overrides):
    out = []
    if collection is not None:
        policy = CollectionPolicy(seed=seed, **dict(collection, **overrides))
        out = [policy] + policy.companions()
    return out + [KubeletGC(**kubelet)]
