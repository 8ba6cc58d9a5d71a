"""The generated workloads: every parameter is here, every draw comes from ``random.Random(seed)``.

homelab   50 GB image filesystem, 20 GB of it the OS, logs and the sandbox image. 14 apps
          (Deployments, one pod each, image 0.15-1.5 GB log-uniform). A Helm upgrade every
          3 days on average (exponential gaps) bumps 1-4 apps to a new tag (size x0.9-1.15); the
          old pod ends when the new one starts. CronJobs: hourly health check (curl, 30 MB, 30 s),
          daily backup at 03:00 (restic, 65 MB, 15 min), weekly report on day 7 at 04:00 (1.2 GB,
          30 min); a finished Job pod stays listed for 3 periods (successfulJobsHistoryLimit 3).
ci        200 GB, 30 GB base. 40 build images (0.8-8 GB log-uniform, Zipf(1) popularity), each
          rebuilt under a new tag with probability 0.6 a week. Jobs arrive as a Poisson process:
          30 an hour 08:00-20:00 on weekdays, 3 an hour otherwise; each runs 3-20 min with a build
          image and the runner's helper image (90 MB); pods are deleted when they end.
rollback  50 GB, 15 GB base. 10 services (0.3-2.5 GB). A rollout of one service every day on
          average; half of them are rolled back to the previous tag 24 h later. A daily CronJob
          (500 MB, 10 min, history 3).

Sizes are bytes on the image filesystem (compressed content plus the unpacked snapshot), the
figure the kubelet's usage and the disk target see. They are plausible estimates, not
measurements: curlimages/curl 8.11 about 10 MB compressed and 20 MB unpacked (30 MB), restic
0.17 about 20 MB and 45 MB (65 MB; the example trace in trace.py uses the same figure), the
GitLab runner helper 90 MB; the applications' and build images' ranges are assumptions.

Every workload takes ``disk`` (GB) to replay the same pods on another image filesystem size;
DISKS lists the sizes bench/policy/run.py replays by default (the first is the nominal one).
"""

import math
import random

from bench.policy.trace import GB, Start, Trace

HOUR, DAY = 3600, 86400


def _loguniform(rng, low, high):
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _deployments(changes, horizon):
    """One pod per service version: from its change to the service's next change (or the end)."""
    starts = []
    for service, timeline in sorted(changes.items()):
        for i, (t, ref, size) in enumerate(timeline):
            end = timeline[i + 1][0] if i + 1 < len(timeline) else horizon
            if end > t:
                starts.append(Start(t, '%s-%d' % (service, i), end - t, [(ref, size)]))
    return starts


def _cronjob(name, ref, size, first, period, duration, horizon, history=3):
    return [Start(t, '%s-%d' % (name, t // period), duration, [(ref, size)], linger=history * period)
            for t in range(first, horizon, period)]


def homelab(seed=17, days=28, disk=50):
    rng = random.Random(seed)
    horizon = days * DAY
    changes, version = {}, {}
    for k in range(14):
        size = int(_loguniform(rng, 0.15, 1.5) * GB)
        version['app%02d' % k] = [1, size]
        changes['app%02d' % k] = [(rng.randrange(0, HOUR), 'ghcr.io/homelab/app%02d:1' % k, size)]
    t = 0
    while True:
        t += int(rng.expovariate(1.0 / (3 * DAY)))
        if t >= horizon:
            break
        for app in rng.sample(sorted(version), rng.randint(1, 4)):
            version[app][0] += 1
            version[app][1] = int(version[app][1] * rng.uniform(0.9, 1.15))
            changes[app].append((t, 'ghcr.io/homelab/%s:%d' % (app, version[app][0]), version[app][1]))
    starts = _deployments(changes, horizon)
    starts += _cronjob('health', 'docker.io/curlimages/curl:8.11', 30 * 10 ** 6, 1800, HOUR, 30, horizon)
    starts += _cronjob('backup', 'docker.io/restic/restic:0.17', 65 * 10 ** 6, 3 * HOUR, DAY, 900, horizon)
    starts += _cronjob('report', 'ghcr.io/homelab/report:2', int(1.2 * GB), 6 * DAY + 4 * HOUR, 7 * DAY, 1800,
                       horizon)
    return Trace('homelab', starts, int(disk * GB), 20 * GB, horizon,
                 '%g GB disk, 20 GB base, 14 apps, Helm upgrade every ~3 d, 3 CronJobs' % disk)


def ci(seed=17, days=28, disk=200):
    rng = random.Random(seed)
    horizon = days * DAY
    images = [[1, int(_loguniform(rng, 0.8, 8) * GB)] for dummy in range(40)]
    weights = [1.0 / (k + 1) for k in range(40)]
    rebuilds = sorted((rng.uniform(w * 7 * DAY, (w + 1) * 7 * DAY), k)
                      for w in range(days // 7 + 1) for k in range(40) if rng.random() < 0.6)
    starts, t, n = [], 0.0, 0
    while True:
        day, hour = int(t // DAY), (t % DAY) / HOUR
        rate = 30.0 if day % 7 < 5 and 8 <= hour < 20 else 3.0
        t += rng.expovariate(rate / HOUR)
        if t >= horizon:
            break
        while rebuilds and rebuilds[0][0] <= t:
            k = rebuilds.pop(0)[1]
            images[k] = [images[k][0] + 1, int(images[k][1] * rng.uniform(0.95, 1.1))]
        k = rng.choices(range(40), weights)[0]
        n += 1
        starts.append(Start(t, 'job-%d' % n, rng.randint(3 * 60, 20 * 60),
                            [('registry.example/ci/build%02d:%d' % (k, images[k][0]), images[k][1]),
                             ('registry.gitlab.com/gitlab-runner-helper:x86_64-v17.6', 90 * 10 ** 6)]))
    return Trace('ci', starts, int(disk * GB), 30 * GB, horizon,
                 '%g GB disk, 30 GB base, 40 build images 0.8-8 GB, ~300 jobs a weekday' % disk)


def rollback(seed=17, days=28, disk=50):
    rng = random.Random(seed)
    horizon = days * DAY
    changes, current, previous, version, pending = {}, {}, {}, {}, []
    for k in range(10):
        name = 'svc%d' % k
        version[name] = 1
        current[name] = ('registry.example/shop/%s:1' % name, int(_loguniform(rng, 0.3, 2.5) * GB))
        changes[name] = [(rng.randrange(0, HOUR),) + current[name]]
    t = 0
    while True:
        t += int(rng.expovariate(1.0 / DAY))
        while pending and pending[0][0] <= t:
            when, name, bad = pending.pop(0)
            if current[name] == bad:                       # still on the bad release: roll back
                current[name], previous[name] = previous[name], bad
                changes[name].append((when,) + current[name])
        if t >= horizon:
            break
        name = 'svc%d' % rng.randrange(10)
        version[name] += 1
        previous[name] = current[name]
        current[name] = ('registry.example/shop/%s:%d' % (name, version[name]),
                         int(current[name][1] * rng.uniform(0.9, 1.15)))
        changes[name].append((t,) + current[name])
        if rng.random() < 0.5:
            pending.append((t + DAY, name, current[name]))
    starts = _deployments(changes, horizon)
    starts += _cronjob('nightly', 'registry.example/shop/nightly:1', 500 * 10 ** 6, 2 * HOUR, DAY, 600, horizon)
    return Trace('rollback', starts, int(disk * GB), 15 * GB, horizon,
                 '%g GB disk, 15 GB base, 10 services, rollout every ~1 d, half rolled back after 24 h' % disk)


WORKLOADS = (('homelab', homelab), ('ci', ci), ('rollback', rollback))
# GB of image filesystem replayed per workload: the nominal size, a tighter and a roomier one.
DISKS = {'homelab': (50, 40, 80), 'ci': (200, 150, 300), 'rollback': (50, 35, 80)}
SEEDS = (17, 18, 19, 20, 21)
