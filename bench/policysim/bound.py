"""A lower bound on re-pulls for a disk budget, computed offline from the whole trace.

Belady's rule is optimal only when every object has the same size; with sizes, the optimal
offline policy is NP-hard. Berger, Beckmann and Harchol-Balter ("Practical Bounds on Optimal
Caching with Variable Object Sizes", SIGMETRICS 2018) bound it: PFOO-L treats every reuse
interval (from one request of an object to its next) as a candidate costing size x length, and
admits candidates cheapest first until the cache's capacity x time is spent; a request whose
interval was not admitted is a miss of ANY policy with that capacity.

Here, as in the replay: an image must be on disk while a pod runs with it, so the time it is in
use (the union of its pods' running intervals) is spent whatever the policy, and the candidates
are the gaps between two such intervals (a pod start inside another pod's run of the same image
is a hit for every policy). A policy hits at the start after a gap only if it kept the image
the whole gap. So any policy whose disk use, integrated over the replay, is at most ``budget``
byte-seconds (images only) keeps at most ``k`` gaps, where ``k`` is how many of the cheapest
fit in ``budget`` less the time in use; with unit value per gap, cheapest first is the most
gaps any choice can keep. Hence re-pulls >= gaps - k. The bound holds for a mean disk use, so it
holds a fortiori for a policy that never exceeds that use. Cold misses (first pulls) are the same
for every policy and are not counted. Pulls are instantaneous; images share no layers.
"""

import bisect


class Bound(object):
    def __init__(self, trace):
        runs = {}
        for s in trace.starts:
            if s.t >= trace.horizon:
                continue
            for ref, size in s.images:
                runs.setdefault(ref, []).append((s.t, min(s.t + s.duration, trace.horizon)))
        self.in_use = 0            # byte-seconds every policy spends on images in use
        costs = []
        for ref, spans in runs.items():
            size = trace.sizes[ref]
            merged = []
            for begin, end in sorted(spans):
                if merged and begin < merged[-1][1]:          # overlaps: the image is in use, a hit
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([begin, end])
            self.in_use += size * sum(end - begin for begin, end in merged)
            costs.extend(size * (merged[i + 1][0] - merged[i][1]) for i in range(len(merged) - 1))
        costs.sort()
        self.gaps = len(costs)
        self.prefix = []
        total = 0
        for cost in costs:
            total += cost
            self.prefix.append(total)

    def repulls(self, budget):
        """The fewest re-pulls of any policy spending at most ``budget`` image byte-seconds."""
        kept = bisect.bisect_right(self.prefix, budget - self.in_use)
        return self.gaps - kept
