# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bench/policysim (issue 17) pinned on a tiny trace checked by hand.

The node: image filesystem 100 bytes, nothing else on it (base 0). Horizon 2 days (172800 s).
Images A (50 bytes), B (30), C (10). Pods (start, end):

    a1 A 0-3600      b1 B 100-700     c1 C 7200-7800
    b2 B 30000-30600 c2 C 50000-50600 a2 A 86400-90000

Kubelet alone (a pass every 300 s at t = 300, 600, ...; at an instant pods end, then the
collection runs, then the kubelet, then pods start; high 85, low 80, min age 120 s):
- 7200: C pulled, usage 90. Pass 7500: C in use; >= 85, free 90 - 80 = 10. lastUsed: A 3300
  (last pass while a1 ran), B 600. LRU: B goes (30 >= 10). Usage 60.
- 30000: b2 re-pulls B (1), usage 90. Pass 30300: B in use; lastUsed A 3300, C 7500: A goes. Usage 40.
- 50000: c2 finds C (hit). 86400: a2 re-pulls A (2).                         -> 2 re-pulls.
Seed (the collection every 6 h, image_min_age 0, the kubelet behind it):
- pass 7500 removes B as above; run 21600 removes A and C (unused).
- 30000: B re-pulled (1); run 43200 removes B. 50000: C re-pulled (2); run 64800 removes C.
- run 86400 (before a2 starts) removes nothing; a2 re-pulls A (3).           -> 3 re-pulls.
Bound (PFOO-L): time in use is spent by any policy: A 50 x 7200 + B 30 x 1200 + C 10 x 1200 =
408000 byte-seconds. Gaps, cost = size x length: C 10 x (50000 - 7800) = 422000,
B 30 x (30000 - 700) = 879000, A 50 x (86400 - 3600) = 4140000. Cheapest first, the prefix sums
are 422000, 1301000, 5441000: a budget of 408000 + 1300999 keeps 1 gap (bound 2), 408000 +
1301000 keeps 2 (bound 1), 408000 + 5441000 keeps all (bound 0), 408000 alone none (bound 3).
"""

import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from bench.policysim import bound, policies, report, sim, trace, workloads  # noqa: E402

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
    assert figures['kubelet_passes'] == 3      # 7500 (B), 30300 (A), 86700 (B: A pulled, usage 90)
    assert figures['peak'] == 90.0


def test_seed_re_pulls():
    figures = sim.replay(six_pods_three_images(), policies.make('seed'))
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


@pytest.mark.parametrize('name', [row[0] for row in policies.POLICIES])
def test_no_policy_beats_the_bound_at_its_own_disk_use(name):
    t = workloads.rollback(days=7)
    figures = sim.replay(t, policies.make(name))
    assert figures['repulls'] >= bound.Bound(t).repulls(figures['image_byte_seconds'])


def test_trace_round_trip(tmp_path):
    path = str(tmp_path / 'tiny.jsonl')
    six_pods_three_images().write(path)
    again = trace.read(path)
    assert [s.to_dict() for s in again.starts] == [s.to_dict() for s in six_pods_three_images().starts]
    assert (again.disk_bytes, again.base_bytes, again.horizon) == (100, 0, 2 * 86400)
    rows, b = report.measure(again, ['seed', 'kubelet'])
    assert [(name, f['repulls']) for name, dummy, f in rows] == [('seed', 3), ('kubelet', 2)]


def test_trace_errors_name_the_line(tmp_path):
    path = tmp_path / 'bad.jsonl'
    path.write_text('{"node": "n", "disk_bytes": 100}\n{"t": 1, "pod": "p", "images": []}\n')
    with pytest.raises(ValueError, match='line 2.*duration'):
        trace.read(str(path))
