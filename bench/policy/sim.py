"""The discrete-event replay of a trace through a list of policies, and what it cost.

Model (stated in docs/performance.md): a pod start needs each of its images on disk; an image
not there is pulled at once (a pull: its bytes, a start that waited); the first pull of an image
is a cold miss, any later one a re-pull. A pod's containers run for ``duration``, then are listed
as exited for ``linger`` seconds while the kubelet still tracks the pod (a Job pod kept by its
history limit), unless something removes them first, then the pod and its containers are gone.
No policy removes an image a listed container uses (running or exited). The image filesystem
holds ``base_bytes`` plus the size of every image on it: the usage every policy reads is exactly
that sum, so a disk target projected from image sizes and one measured by re-reading the
filesystem after each batch remove the same images here.

At one instant: pods end, pods go, the collection runs, its observation pass runs, the kubelet's
image GC runs, the kubelet's eviction manager checks, pods start. The eviction manager checks
every 10 s (pkg/kubelet/eviction/eviction_manager.go, monitoringInterval); only a pull raises the
usage, so a check is scheduled at the first 10-second tick after each pull that leaves the
filesystem below ``imagefs.available`` 15%, which is what a check every 10 s would find.
"""

import hashlib
import heapq

from plugins.module_utils import _listings

RUNNING = 'CONTAINER_RUNNING'
END, GONE, COLLECTION, OBSERVE, KUBELET, EVICTION, START = range(7)
KINDS = {'collection': COLLECTION, 'observe': OBSERVE, 'kubelet': KUBELET}
EVICTION_TICK = 10


def image_id(ref):
    return 'sha256:' + hashlib.sha256(ref.encode()).hexdigest()


def container_id(number, k):
    return '%060x%04x' % (number, k)


def sandbox_id(number):
    return '%064x' % number


def usage_percent(used, disk):
    """The kubelet's image filesystem usage, a whole percentage: ``100 - int(available*100/capacity)``
    (pkg/kubelet/images/image_gc_manager.go, GarbageCollect). 84.5% used is 85."""
    return 100 - (disk - used) * 100 // disk


class Node(object):
    """What is on the node: images (id -> _listings.Image), containers (id -> _listings.Container), usage,
    and the pods the kubelet still tracks (trace index -> pod name)."""

    def __init__(self, disk_bytes, base_bytes, metrics):
        self.disk_bytes, self.used = disk_bytes, base_bytes
        self.images, self.pulled_at, self.containers, self.users = {}, {}, {}, {}
        self.tracked = {}           # trace index -> pod name, from its start until it is gone
        self.metrics = metrics
        self.now = 0
        self.last_end = {}          # image id -> when a pod last stopped running with it
        self.watchers = []          # called with the image id when an image is removed

    def listed_containers(self):
        return list(self.containers.values())

    def listed_images(self):
        return list(self.images.values())

    def images_in_use(self):
        return self.users

    def _use(self, image, delta):
        n = self.users.get(image, 0) + delta
        if n:
            self.users[image] = n
        else:
            del self.users[image]

    def remove_containers(self, ids):
        for cid in ids:
            c = self.containers.pop(cid, None)
            if c is not None:
                self._use(c.image_ref, -1)

    def exited_ids(self):
        return [c.id for c in self.containers.values() if c.state == _listings.CONTAINER_EXITED]

    def remove_image(self, iid):
        if iid in self.users:
            raise AssertionError('a policy removed image %s while a container uses it' % iid)
        image = self.images.pop(iid)
        del self.pulled_at[iid]
        self.metrics.disk(self.used - image.size)
        self.used -= image.size
        for watcher in self.watchers:
            watcher(iid)

    def pull(self, ref, size, now):
        iid = image_id(ref)
        self.images[iid] = _listings.Image({'id': iid, 'repoTags': [ref], 'size': size})
        self.pulled_at[iid] = now
        self.metrics.disk(self.used + size)
        self.used += size

    def start(self, number, start, now):
        """Pulls what is missing; returns the (ref, size) pulled. Creates one running container per image."""
        pulled = []
        self.tracked[number] = start.pod
        for k, (ref, size) in enumerate(start.images):
            iid = image_id(ref)
            if iid not in self.images:
                self.pull(ref, size, now)
                pulled.append((ref, size))
            cid = container_id(number, k)
            self.containers[cid] = _listings.Container({
                'id': cid, 'podSandboxId': sandbox_id(number), 'state': RUNNING, 'createdAt': now * 10 ** 9,
                'image': {'image': ref}, 'imageRef': iid, 'metadata': {'name': 'c%d' % k},
                'labels': {'io.kubernetes.pod.name': start.pod, 'io.kubernetes.pod.namespace': 'default'}})
            self._use(iid, 1)
        return pulled

    def end(self, number, start):
        for k, (ref, dummy) in enumerate(start.images):
            c = self.containers.get(container_id(number, k))
            if c is not None:
                c.state = _listings.CONTAINER_EXITED
            self.last_end[image_id(ref)] = self.now

    def gone(self, number, start):
        self.tracked.pop(number, None)
        self.remove_containers([container_id(number, k) for k in range(len(start.images))])

    def below_eviction_line(self, percent):
        """``imagefs.available`` < ``percent``% of the capacity (the eviction manager's signal)."""
        return (self.disk_bytes - self.used) * 100 < percent * self.disk_bytes


class Metrics(object):
    """Pulls and the disk's usage over time (exact: usage is piecewise constant)."""

    def __init__(self, disk_bytes, base_bytes, start=0, high=85, eviction=15):
        self.disk_bytes, self.base = disk_bytes, base_bytes
        self.high, self.eviction = high, eviction
        self.now, self.level = start, base_bytes
        self.segments = {}           # usage -> seconds at it
        self.cold = self.repulls = self.repull_bytes = self.waited = self.waited_repull = 0
        self.seen = set()
        self.repulled = []           # (when, ref) of every re-pull
        self.hourly = {}             # hour -> image byte-seconds in it (the interval bound's budgets)

    def advance(self, now):
        if now > self.now:
            self.segments[self.level] = self.segments.get(self.level, 0) + now - self.now
            images = self.level - self.base
            t = self.now
            while t < now:
                hour = t // 3600
                step = min(now, (hour + 1) * 3600) - t
                self.hourly[hour] = self.hourly.get(hour, 0) + images * step
                t += step
            self.now = now

    def disk(self, level):
        self.level = level

    def pod_start(self, pulled):
        again = [(ref, size) for ref, size in pulled if ref in self.seen]
        self.repulled.extend((self.now, ref) for ref, dummy in again)
        self.cold += len(pulled) - len(again)
        self.repulls += len(again)
        self.repull_bytes += sum(size for dummy, size in again)
        self.waited += 1 if pulled else 0
        self.waited_repull += 1 if again else 0
        self.seen.update(ref for ref, dummy in pulled)

    def summary(self):
        total = float(sum(self.segments.values())) or 1.0
        pct = dict((level, 100.0 * level / self.disk_bytes) for level in self.segments)
        acc, p95 = 0, None
        for level in sorted(self.segments):
            acc += self.segments[level]
            if p95 is None and acc >= 0.95 * total:
                p95 = pct[level]
        mean = sum(level * t for level, t in self.segments.items()) / total
        over = [level for level in self.segments if usage_percent(level, self.disk_bytes) >= self.high]
        evicting = [level for level in self.segments
                    if (self.disk_bytes - level) * 100 < self.eviction * self.disk_bytes]
        return {'cold': self.cold, 'repulls': self.repulls, 'repull_bytes': self.repull_bytes,
                'repulled': list(self.repulled),
                'waited': self.waited, 'waited_repull': self.waited_repull,
                'peak': max(pct.values() or [100.0 * self.base / self.disk_bytes]), 'p95': p95 or 0.0,
                'mean': 100.0 * mean / self.disk_bytes,
                'image_byte_seconds': sum((level - self.base) * t for level, t in self.segments.items()),
                'hourly': dict(self.hourly),
                'hours_over_85': sum(self.segments[level] for level in over) / 3600.0,
                'seconds_evicting': sum(self.segments[level] for level in evicting)}


def replay(trace, policies):
    """Replays ``trace`` through ``policies`` (objects with ``kind``, ``times(horizon)`` and
    ``run(node, now)``; a kubelet policy also ``evict(node, now)``) up to ``trace.horizon``; the figures."""
    kubelets = [p for p in policies if p.kind == 'kubelet']
    metrics = Metrics(trace.disk_bytes, trace.base_bytes,
                      high=kubelets[0].high if kubelets else 85,
                      eviction=kubelets[0].eviction if kubelets and kubelets[0].eviction else 15)
    node = Node(trace.disk_bytes, trace.base_bytes, metrics)
    for policy in policies:
        if hasattr(policy, 'attach'):
            policy.attach(node)
    events = []
    for n, s in enumerate(trace.starts):
        if s.t < trace.horizon:
            events.append((s.t, START, n))
    for order, policy in enumerate(policies):
        events.extend((t, KINDS[policy.kind], order) for t in policy.times(trace.horizon))
    heapq.heapify(events)
    checks = set()                  # eviction-manager ticks already scheduled

    def check(kubelet, tick):
        if tick not in checks:
            checks.add(tick)
            heapq.heappush(events, (tick, EVICTION, policies.index(kubelet)))
    while events:
        now, kind, n = heapq.heappop(events)
        if now >= trace.horizon:
            break
        metrics.advance(now)
        node.now = now
        if kind == START:
            s = trace.starts[n]
            pulled = node.start(n, s, now)
            metrics.pod_start(pulled)
            heapq.heappush(events, (now + s.duration, END, n))
            for kubelet in kubelets:
                if pulled and kubelet.eviction and node.below_eviction_line(kubelet.eviction):
                    check(kubelet, (now // EVICTION_TICK + 1) * EVICTION_TICK)
        elif kind == END:
            s = trace.starts[n]
            node.end(n, s)
            heapq.heappush(events, (now + s.linger, GONE, n))
        elif kind == GONE:
            node.gone(n, trace.starts[n])
        elif kind == EVICTION:
            checks.discard(now)
            policies[n].evict(node, now)
            if node.below_eviction_line(policies[n].eviction):      # not resolved: checked again in 10 s
                check(policies[n], now + EVICTION_TICK)
        else:
            policies[n].run(node, now)
    metrics.advance(trace.horizon)
    out = metrics.summary()
    collection = [p for p in policies if p.kind == 'collection']
    out['runs'] = collection[0].runs if collection else None
    out['empty_runs'] = collection[0].empty_runs if collection else None
    out['blind'] = collection[0].blind if collection else None
    out['kubelet_passes'] = sum(p.passes for p in kubelets)
    out['evictions'] = sum(p.evictions for p in kubelets)
    return out
