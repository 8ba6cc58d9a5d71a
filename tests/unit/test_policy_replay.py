# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bench/policy (issues 17 and 26) pinned on tiny traces checked by hand.

The node: image filesystem 100 bytes, nothing else on it (base 0). Horizon 2 days (172800 s).
Images A (50 bytes), B (30), C (10). Pods (start, end):

    a1 A 0-3600      b1 B 100-700     c1 C 7200-7800
    b2 B 30000-30600 c2 C 50000-50600 a2 A 86400-90000

Kubelet alone (image GC every 300 s at t = 300, 600, ...; at an instant pods end, then the
collection runs, then the kubelet's GC, then its eviction manager, then pods start; GC 85/80 on
whole percentages, min age 120 s; eviction manager at available < 15 bytes, checked on the
10-second ticks):
- 7200: C pulled, used 90, available 10 < 15: the check at 7210 fires (eviction 1): no exited
  container is listed; every unused image detected 120 s ago or more goes: A (first detected 300,
  last used 3300) and B (300, 600). Used 10. Pass 7500: usage 10, nothing.
- 30000: b2 re-pulls B (1), used 40. 50000: c2 finds C (hit). 86400: a2 re-pulls A (2), used 90:
  the check at 86410 fires (eviction 2) and removes B and C. No GC pass ever reaches 85.
                                                                            -> 2 re-pulls, 80 bytes.
Seed (the collection every 6 h with no timer delay, image_min_age 0, the kubelet behind it):
- the eviction at 7210 removes A and B as above; run 21600 removes C (unused).
- 30000: B re-pulled (1); run 43200 removes B. 50000: C re-pulled (2); run 64800 removes C.
- run 86400 (before a2 starts) removes nothing; a2 re-pulls A (3), used 50: no eviction.
                                                                            -> 3 re-pulls.
Bound (PFOO-L): time in use is spent by any policy: A 50 x 7200 + B 30 x 1200 + C 10 x 1200 =
408000 byte-seconds. Gaps, cost = size x length: C 10 x (50000 - 7800) = 422000,
B 30 x (30000 - 700) = 879000, A 50 x (86400 - 3600) = 4140000. Cheapest first, the prefix sums
are 422000, 1301000, 5441000: a budget of 408000 + 1300999 keeps 1 gap (bound 2), 408000 +
1301000 keeps 2 (bound 1), 408000 + 5441000 keeps all (bound 0), 408000 alone none (bound 3).

The other hand-checked traces (integer usage, never-used-first, the eviction manager and a kept
Job pod, the pod-aware collection, the observation pass, the interval bound) say their own
arithmetic where they are built.
"""

import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from bench.policy import bound, policies, report, sim, trace, workloads  # noqa: E402

IN_USE = 408000


def six_pods_three_images():
    """Six pods over two days, starting and ending at set times, of three images (a, b, c) on a 100-byte disk."""
    def start(t, pod, end, ref, size):
        return trace.Start(t, pod, end - t, [(ref, size)])
    return trace.Trace('tiny', [
        start(0, 'a1', 3600, 'x/a:1', 50), start(100, 'b1', 700, 'x/b:1', 30), start(7200, 'c1', 7800, 'x/c:1', 10),
        start(30000, 'b2', 30600, 'x/b:1', 30), start(50000, 'c2', 50600, 'x/c:1', 10),
        start(86400, 'a2', 90000, 'x/a:1', 50)], disk_bytes=100, base_bytes=0, horizon=2 * 86400)


def test_kubelet_re_pulls():
    figures = sim.replay(six_pods_three_images(), policies.make('kubelet'))
    assert (figures['cold'], figures['repulls'], figures['repull_bytes']) == (3, 2, 30 + 50)
    assert figures['repulled'] == [(30000, 'x/b:1'), (86400, 'x/a:1')]
    assert figures['evictions'] == 2           # 7210 (A, B), 86410 (B, C)
    assert figures['kubelet_passes'] == 0      # no GC pass finds 85% or more
    assert figures['seconds_evicting'] == 20   # 7200-7210 and 86400-86410 below 15% available
    assert figures['peak'] == 90.0


def test_seed_re_pulls():
    figures = sim.replay(six_pods_three_images(), policies.make('seed', delay=0))
    assert (figures['cold'], figures['repulls'], figures['repull_bytes']) == (3, 3, 30 + 10 + 50)
    # runs at 21600 (A, C), 43200 (B), 64800 (C), 86400 (nothing), 108000 (A), 129600, 151200 (nothing)
    assert (figures['runs'], figures['empty_runs']) == (7, 3)


@pytest.mark.parametrize('budget, expected', [
    (IN_USE, 3), (IN_USE + 421999, 3), (IN_USE + 422000, 2), (IN_USE + 1300999, 2), (IN_USE + 1301000, 1),
    (IN_USE + 5441000, 0)])
def test_bound(budget, expected):
    b = bound.Bound(six_pods_three_images())
    assert (b.in_use, b.gaps) == (IN_USE, 3)
    assert b.repulls(budget) == expected


@pytest.mark.parametrize('name', [row[0] for row in policies.POLICIES + policies.CANDIDATES])
def test_no_policy_beats_the_bounds(name):
    t = workloads.rollback(days=7, disk=35)
    figures = sim.replay(t, policies.make(name, seed=17))
    assert figures['repulls'] >= bound.Bound(t).repulls(figures['image_byte_seconds'])
    interval = bound.IntervalBound(t, 85)
    if interval.applies(figures['hourly']):
        assert figures['repulls'] >= interval.repulls


def test_trace_round_trip(tmp_path):
    path = str(tmp_path / 'tiny.jsonl')
    six_pods_three_images().write(path)
    again = trace.read(path)
    assert [s.to_dict() for s in again.starts] == [s.to_dict() for s in six_pods_three_images().starts]
    assert (again.disk_bytes, again.base_bytes, again.horizon) == (100, 0, 2 * 86400)
    config = report.Config('tiny', 0, 100e-9, again)
    assert report.run(config, 'kubelet')['repulls'] == 2


def test_trace_errors_name_the_line(tmp_path):
    path = tmp_path / 'bad.jsonl'
    path.write_text('{"node": "n", "disk_bytes": 100}\n{"t": 1, "pod": "p", "images": []}\n')
    with pytest.raises(ValueError, match='line 2.*duration'):
        trace.read(str(path))


def _trace(disk, pods, horizon=86400):
    """A Trace of ``pods``: (start, name, end, ref, size[, linger])."""
    return trace.Trace('hand', [trace.Start(t, pod, end - t, [(ref, size)], *rest)
                                for t, pod, end, ref, size, *rest in pods], disk_bytes=disk, base_bytes=0,
                       horizon=horizon)


def test_usage_is_a_whole_percentage():
    # Disk 1000. X (500) runs 0-100; Y (345) from 1000 on: used 845 = 84.5%, available 155 (15.5%, so no
    # eviction). The kubelet's usage is 100 - int(15.5) = 85 >= 85: the pass at 1200 frees
    # 1000 * 20 / 100 - 155 = 45 bytes: X goes (unused, detected at 300). X back at 5000: 1 re-pull.
    # The pass at 5100 (x2 has just ended, used 845 again) removes X again: 2 passes that removed.
    # With the usage as a real number (84.5 < 85) nothing would go and X would be a hit.
    t = _trace(1000, [(0, 'x1', 100, 'x/x:1', 500), (1000, 'y1', 86000, 'x/y:1', 345),
                      (5000, 'x2', 5100, 'x/x:1', 500)])
    figures = sim.replay(t, policies.make('kubelet'))
    assert sim.usage_percent(845, 1000) == 85 and sim.usage_percent(840, 1000) == 84
    assert (figures['repulls'], figures['kubelet_passes'], figures['evictions']) == (1, 2, 0)
    assert figures['repulled'] == [(5000, 'x/x:1')]


def test_never_used_images_go_first():
    # Disk 1000. P (300) runs 0-1000: seen in use by the passes up to 900. Q (300) runs 1010-1100,
    # between two passes: never seen in use (lastUsed zero), first detected 1200. R (245) from 2000
    # on: used 845, usage 85 (see above), available 155: no eviction. The pass at 2100 frees 45
    # bytes: the kubelet sorts by lastUsed, zero first, so Q goes, not P (last used 900, the least
    # recently used if a never-used image counted as used when first detected, 1200).
    # P comes back at 5000: a hit. Q comes back at 6000: the re-pull (used 845 again: the pass at
    # 6300 removes Q, never seen in use again, ahead of P: 2 passes that removed).
    t = _trace(1000, [(0, 'p1', 1000, 'x/p:1', 300), (1010, 'q1', 1100, 'x/q:1', 300),
                      (2000, 'r1', 86000, 'x/r:1', 245), (5000, 'p2', 5100, 'x/p:1', 300),
                      (6000, 'q2', 6100, 'x/q:1', 300)])
    figures = sim.replay(t, policies.make('kubelet'))
    assert figures['repulled'] == [(6000, 'x/q:1')]
    assert (figures['kubelet_passes'], figures['evictions']) == (2, 0)


def test_eviction_manager_removes_a_kept_job_pods_container_and_its_image():
    # Disk 100. J (40), a Job pod 0-100 kept by its history (linger 100000): its exited container
    # stays listed, so the image GC counts J in use. D (46) from 1000 on: used 86, available 14 < 15.
    # The eviction manager's check at 1010 removes the exited containers of pods that are not
    # running (J's), then every unused image: J. Used 46 (episode 1, 1000-1010). J back at 2000: 1
    # re-pull, used 86 again (episode 2): the checks from 2010 find J and D in use and nothing to
    # remove, and check again every 10 s; at 2100 job-2 has ended (its pod no longer runs): its
    # container goes, but J was first detected (again) by the check at 2010, less than the 2m
    # minimum age ago: it goes at the check of 2130. Below the line 10 + 130 s. Without the eviction manager the GC
    # pass at 1200 (usage 86) finds nothing it may remove (J in use): 86% until 100000 s.
    t = _trace(100, [(0, 'job-1', 100, 'x/j:1', 40, 100000), (1000, 'd1', 86000, 'x/d:1', 46),
                     (2000, 'job-2', 2100, 'x/j:1', 40, 100000)])
    figures = sim.replay(t, policies.make('kubelet'))
    assert (figures['evictions'], figures['seconds_evicting']) == (2, 140)
    assert figures['repulled'] == [(2000, 'x/j:1')]
    assert figures['hours_over_85'] == pytest.approx(140 / 3600.0)


def test_pod_aware_collection_keeps_a_kept_job_pods_image():
    # Disk 1000 (no pressure). A daily Job (B, 100 bytes, 03:00-03:10, kept 3 days) and nothing else.
    # The collection every 6 h, image_unused_for 0s, image_min_age 0. Pod-aware (the default): the
    # newest exited container of a pod the kubelet tracks stays, so B stays in use: 0 re-pulls in 3
    # days. Not pod-aware: the run at 06:00 removes the container, then B; each next day re-pulls it.
    day = 86400
    t = _trace(1000, [(d * day + 10800, 'backup-%d' % d, d * day + 11400, 'x/b:1', 100, 3 * day)
                      for d in range(3)], horizon=3 * day)
    aware = sim.replay(t, policies.make('old defaults', delay=0, image_min_age='0s'))
    blunt = sim.replay(t, policies.make('old defaults', delay=0, image_min_age='0s', pod_aware=False))
    assert aware['repulls'] == 0
    assert blunt['repulled'] == [(day + 10800, 'x/b:1'), (2 * day + 10800, 'x/b:1')]


def test_observation_pass_sees_a_pod_between_two_runs():
    # Disk 1000. A 20-minute pod at 02:00 every day (image S, 100 bytes), deleted when it ends; the
    # collection every 6 h (no delay) with image_unused_for 2d. Without the observation pass no run
    # ever lists the pod: S stays "never used, first seen" at the run of day 0 06:00, and the first
    # run 2 days later (day 2 06:00) removes it: day 3's pod re-pulls it. With the pass every 5 min,
    # its pod is seen running each day: last used at most a day ago, never removed.
    day = 86400
    t = _trace(1000, [(d * day + 7200, 'job-%d' % d, d * day + 8400, 'x/s:1', 100) for d in range(5)],
               horizon=5 * day)
    blind = sim.replay(t, policies.make('warm 7d', delay=0, image_unused_for='2d'))
    seen = sim.replay(t, policies.make('warm 7d', delay=0, image_unused_for='2d', observe=300))
    assert blind['repulled'] == [(3 * day + 7200, 'x/s:1')]
    assert blind['blind'] == 1
    assert seen['repulls'] == 0


def test_the_timer_delays_each_run_within_randomized_delay_sec():
    collection = policies.make('warm 7d', seed=3)[0]
    times = collection.times(4 * 86400)
    assert len(times) == 15                                # 06:00, 12:00, ... up to day 3 18:00
    offsets = [t - (k + 1) * 21600 for k, t in enumerate(times)]
    assert all(0 <= o < 1800 for o in offsets) and len(set(offsets)) > 1
    assert times == policies.make('warm 7d', seed=3)[0].times(4 * 86400)    # reproducible by seed


def test_interval_bound_counts_each_hour_on_its_own():
    # Disk 100, cap 85 bytes. X (60) runs 0-100 and 3600-3700, Y (60) 100-200 and 3700-3800.
    # Keeping X's gap (100-3600) and Y's (200-3700) at once needs 120 bytes during 200-3600: no
    # policy under 85 at every instant keeps both, so at least 1 re-pull. In hour 0, what is left
    # after the images in use (85 x 3600 - 60 x 200 = 294000 byte-seconds) is less than both gaps
    # need there (60 x 3500 + 60 x 3400 = 414000): the interval bound says 1. PFOO-L over the two
    # hours (85 x 7200 - 60 x 400 = 588000 for 420000 of gaps) says 0.
    t = _trace(100, [(0, 'x1', 100, 'x/x:1', 60), (100, 'y1', 200, 'x/y:1', 60),
                     (3600, 'x2', 3700, 'x/x:1', 60), (3700, 'y2', 3800, 'x/y:1', 60)], horizon=7200)
    b = bound.IntervalBound(t, 85)
    assert (b.gaps, b.pfoo, b.interval, b.repulls) == (2, 0, 1, 1)


def test_the_collections_defaults_are_the_replays_choice():
    # bench/policy/run.py chose `warm 21d +obs` (docs/performance.md, its verdict line); the settings table
    # holds the same image policy. Changing one without the other fails here.
    line, same = report.defaults_line('warm 21d +obs')
    assert same, line
    assert not report.defaults_line('old defaults')[1]
