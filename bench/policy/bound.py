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

HOUR = 3600


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


def _merged_spans(trace):
    """{ref: [[begin, end], ...]}: the union of the running intervals of each image's pods."""
    runs = {}
    for s in trace.starts:
        if s.t >= trace.horizon:
            continue
        for ref, dummy in s.images:
            runs.setdefault(ref, []).append((s.t, min(s.t + s.duration, trace.horizon)))
    out = {}
    for ref, spans in runs.items():
        merged = []
        for begin, end in sorted(spans):
            if merged and begin < merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([begin, end])
        out[ref] = merged
    return out


def _per_hour(begin, end, size, step=HOUR):
    """[(hour, byte-seconds)] of ``size`` bytes held from ``begin`` to ``end``."""
    out = []
    t = begin
    while t < end:
        hour = t // step
        upto = min(end, (hour + 1) * step)
        out.append((hour, size * (upto - t)))
        t = upto
    return out


class IntervalBound(object):
    """A lower bound on re-pulls for any policy that holds, in every hour of the replay, at most
    ``percent``% of the image filesystem on average (so any policy that never goes above it).

    PFOO-L spends one capacity x time budget over the whole replay, so the idle nights pay for the
    busy days. Here each hour has its own budget: with x_g in [0, 1] for each gap g kept, c_gh the
    byte-seconds g spends in hour h and R_h the hour's budget less what the images in use spend in
    it, every policy under the cap keeps a set with sum_g x_g c_gh <= R_h for every h. For ANY
    multipliers l_h >= 0 (Lagrangian relaxation),

        gaps kept <= sum_h l_h R_h + sum_g max(0, 1 - sum_h l_h c_gh)

    so re-pulls >= gaps - floor(that). The multipliers are found by a subgradient descent from the
    PFOO-L price (one l for every hour); whatever they end at, the bound is valid, only less tight.
    ``repulls`` is the larger of this and PFOO-L at the same mean (``percent`` on average); None
    when the images in use alone exceed the cap in some hour (no policy can stay under it).
    """

    def __init__(self, trace, percent=85, iterations=120, pfoo=None):
        self.percent = percent
        cap = trace.disk_bytes * percent // 100 - trace.base_bytes
        hours = (trace.horizon + HOUR - 1) // HOUR
        self.budget = [cap * (min(trace.horizon, (h + 1) * HOUR) - h * HOUR) for h in range(hours)]
        in_use = [0] * hours
        gaps = []
        for ref, merged in _merged_spans(trace).items():
            size = trace.sizes[ref]
            for begin, end in merged:
                for h, cost in _per_hour(begin, end, size):
                    in_use[h] += cost
            for i in range(len(merged) - 1):
                gaps.append(_per_hour(merged[i][1], merged[i + 1][0], size))
        self.gaps = len(gaps)
        rest = [b - u for b, u in zip(self.budget, in_use)]
        if cap <= 0 or min(rest or [0]) < 0:
            self.repulls = None
            return
        unit = float(cap * HOUR)
        rest = [r / unit for r in rest]
        gaps = [[(h, c / unit) for h, c in g] for g in gaps]
        pfoo = pfoo or Bound(trace)
        mean_budget = cap * trace.horizon
        self.pfoo = pfoo.repulls(mean_budget)
        # the PFOO-L price: 1 / the cost of the first gap that does not fit, for every hour
        kept = self.gaps - self.pfoo
        totals = sorted(sum(c for dummy, c in g) for g in gaps)
        price = 1.0 / totals[kept] if kept < len(totals) and totals[kept] > 0 else 0.0
        lam = [price] * hours
        best = None
        for k in range(iterations):
            value = sum(price_h * r for price_h, r in zip(lam, rest))
            grad = list(rest)
            for g in gaps:
                reduced = 1.0 - sum(lam[h] * c for h, c in g)
                if reduced > 0:
                    value += reduced
                    for h, c in g:
                        grad[h] -= c
            best = value if best is None else min(best, value)
            norm = sum(x * x for x in grad)
            if norm == 0:
                break
            step = (0.5 / (k + 1) ** 0.5) * max(price, 1e-3) * hours ** 0.5 / norm ** 0.5
            lam = [max(0.0, price_h - step * d) for price_h, d in zip(lam, grad)]
        self.interval = self.gaps - min(self.gaps, int(best + 1e-9))
        self.repulls = max(self.interval, self.pfoo)
        self.cap = cap

    def applies(self, hourly):
        """Whether a policy whose image byte-seconds per hour were ``hourly`` stayed under the cap
        in every hour (then the bound holds for it)."""
        return self.repulls is not None and all(v <= self.budget[h] for h, v in hourly.items() if h < len(self.budget))
