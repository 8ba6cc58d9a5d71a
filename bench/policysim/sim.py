"""The discrete-event replay of a trace through a list of policies, and what it cost.

Model (stated in docs/performance.md): a pod start needs each of its images on disk; an image
not there is pulled at once (a pull: its bytes, a start that waited); the first pull of an image
is a cold miss, any later one a re-pull. A pod's containers run for ``duration``, then are listed
as exited for ``linger`` seconds (unless the collection's phase 1 removes them first), then are
gone. Images in use by a listed container are never removed (both policies keep them). The image
filesystem holds ``base_bytes`` plus the size of every image on it: the usage the disk target
reads is exactly that sum, so a target projected from image sizes (today) and one measured by
re-reading the filesystem after each batch (issue 19) remove the same images here.
At one instant: pods end, exited containers go, the collection runs, the kubelet runs, pods start.
"""

import hashlib
import heapq

from plugins.module_utils import _cri

RUNNING = 'CONTAINER_RUNNING'
END, GONE, COLLECTION, KUBELET, START = range(5)


def image_id(ref):
    return 'sha256:' + hashlib.sha256(ref.encode()).hexdigest()


class Node(object):
    """What is on the node: images (id -> _cri.Image), containers (id -> _cri.Container), usage."""

    def __init__(self, disk_bytes, base_bytes, metrics):
        self.disk_bytes, self.used = disk_bytes, base_bytes
        self.images, self.pulled_at, self.containers, self.users = {}, {}, {}, {}
        self.metrics = metrics
        self.now = 0
        self.last_end = {}          # image id -> when a pod last stopped running with it

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

    def remove_image(self, iid):
        if iid in self.users:
            raise AssertionError('a policy removed image %s while a container uses it' % iid)
        image = self.images.pop(iid)
        del self.pulled_at[iid]
        self.metrics.disk(self.used - image.size)
        self.used -= image.size

    def pull(self, ref, size, now):
        iid = image_id(ref)
        self.images[iid] = _cri.Image({'id': iid, 'repoTags': [ref], 'size': size})
        self.pulled_at[iid] = now
        self.metrics.disk(self.used + size)
        self.used += size

    def start(self, number, start, now):
        """Pulls what is missing; returns the (ref, size) pulled. Creates one running container per image."""
        pulled = []
        for k, (ref, size) in enumerate(start.images):
            iid = image_id(ref)
            if iid not in self.images:
                self.pull(ref, size, now)
                pulled.append((ref, size))
            cid = '%060x%04x' % (number, k)
            self.containers[cid] = _cri.Container({
                'id': cid, 'podSandboxId': '%064x' % number, 'state': RUNNING, 'createdAt': now * 10 ** 9,
                'image': {'image': ref}, 'imageRef': iid, 'metadata': {'name': 'c%d' % k},
                'labels': {'io.kubernetes.pod.name': start.pod}})
            self._use(iid, 1)
        return pulled

    def end(self, number, start):
        for k, (ref, dummy) in enumerate(start.images):
            c = self.containers.get('%060x%04x' % (number, k))
            if c is not None:
                c.state = _cri.CONTAINER_EXITED
            self.last_end[image_id(ref)] = self.now


class Metrics(object):
    """Pulls and the disk's usage over time (exact: usage is piecewise constant)."""

    def __init__(self, disk_bytes, base_bytes, start=0):
        self.disk_bytes, self.base = disk_bytes, base_bytes
        self.now, self.level = start, base_bytes
        self.segments = {}           # usage -> seconds at it
        self.cold = self.repulls = self.repull_bytes = self.waited = self.waited_repull = 0
        self.seen = set()

    def advance(self, now):
        if now > self.now:
            self.segments[self.level] = self.segments.get(self.level, 0) + now - self.now
            self.now = now

    def disk(self, level):
        self.level = level

    def pod_start(self, pulled):
        again = [(ref, size) for ref, size in pulled if ref in self.seen]
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
        return {'cold': self.cold, 'repulls': self.repulls, 'repull_bytes': self.repull_bytes,
                'waited': self.waited, 'waited_repull': self.waited_repull,
                'peak': max(pct.values() or [100.0 * self.base / self.disk_bytes]), 'p95': p95 or 0.0,
                'mean': 100.0 * mean / self.disk_bytes,
                'image_byte_seconds': sum((level - self.base) * t for level, t in self.segments.items()),
                'hours_over_85': sum(t for level, t in self.segments.items() if pct[level] >= 85) / 3600.0}


def replay(trace, policies):
    """Replays ``trace`` through ``policies`` (objects with ``period``, ``kind`` and ``run(node,
    now)``, run in the order given at equal times) up to ``trace.horizon``; the figures."""
    metrics = Metrics(trace.disk_bytes, trace.base_bytes)
    node = Node(trace.disk_bytes, trace.base_bytes, metrics)
    events = []
    for n, s in enumerate(trace.starts):
        if s.t < trace.horizon:
            events.append((s.t, START, n))
    for order, policy in enumerate(policies):
        kind = COLLECTION if policy.kind == 'collection' else KUBELET
        events.extend((t, kind, order) for t in range(policy.period, trace.horizon, policy.period))
    heapq.heapify(events)
    while events:
        now, kind, n = heapq.heappop(events)
        if now >= trace.horizon:
            break
        metrics.advance(now)
        node.now = now
        if kind == START:
            s = trace.starts[n]
            metrics.pod_start(node.start(n, s, now))
            heapq.heappush(events, (now + s.duration, END, n))
        elif kind == END:
            s = trace.starts[n]
            node.end(n, s)
            heapq.heappush(events, (now + s.linger, GONE, n))
        elif kind == GONE:
            node.remove_containers(['%060x%04x' % (n, k) for k in range(len(trace.starts[n].images))])
        else:
            policies[n].run(node, now)
    metrics.advance(trace.horizon)
    out = metrics.summary()
    collection = [p for p in policies if p.kind == 'collection']
    out['runs'] = collection[0].runs if collection else None
    out['empty_runs'] = collection[0].empty_runs if collection else None
    out['blind'] = collection[0].blind if collection else None
    out['kubelet_passes'] = sum(p.passes for p in policies if p.kind == 'kubelet')
    return out
