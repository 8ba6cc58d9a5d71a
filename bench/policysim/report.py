"""The table: one per workload, one row per policy, figures from sim.replay and bound.Bound."""

from .bound import Bound
from .policies import POLICIES, make
from .sim import replay
from .trace import GB

BOUND_MEAN_PERCENT = 80     # the bound's own row: any policy whose mean use is at most this

HEADER = ('| policy | re-pulls | re-pulled GB | starts that waited for a re-pull | disk mean / p95 / peak % '
          '| hours at >= 85% | images removed as never used that a pod had used | collection runs that removed nothing | kubelet GC passes that removed '
          '| bound at the same mean disk | re-pulls / bound |\n'
          '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|')


def _ratio(repulls, bound):
    if bound == 0:
        return 'n/a (bound 0)' if repulls else '1.0'
    return '%.1f' % (float(repulls) / bound)


def measure(trace, names=None):
    """[(policy name, description, figures)] with ``bound`` (re-pulls) and the Bound object."""
    bound = Bound(trace)
    rows = []
    for name, description, dummy, dummy2 in POLICIES:
        if names and name not in names:
            continue
        figures = replay(trace, make(name))
        figures['bound'] = bound.repulls(figures['image_byte_seconds'])
        if figures['repulls'] < figures['bound']:
            raise AssertionError('%s on %s: %d re-pulls, below the lower bound %d: the replay or the bound '
                                 'is wrong' % (name, trace.name, figures['repulls'], figures['bound']))
        rows.append((name, description, figures))
    return rows, bound


def table(trace, rows, bound):
    budget = (trace.disk_bytes * BOUND_MEAN_PERCENT // 100 - trace.base_bytes) * trace.horizon
    cold = rows[0][2]['cold'] if rows else 0
    lines = ['### %s: %s, %d days' % (trace.name, trace.params, trace.horizon // 86400), '',
             '%d pod starts, %d distinct images (%d cold pulls, the same under every policy), %d later uses '
             'after a gap (the re-pulls a node with unlimited disk would avoid).' % (
                 len(trace.starts), len(trace.sizes), cold, bound.gaps), '', HEADER]
    for name, dummy, f in rows:
        lines.append('| %s | %d | %.1f | %d | %.0f / %.0f / %.0f | %.1f | %s | %s | %d | %d | %s |' % (
            name, f['repulls'], f['repull_bytes'] / float(GB), f['waited_repull'], f['mean'], f['p95'], f['peak'],
            f['hours_over_85'], '-' if f['blind'] is None else '%d' % f['blind'], '-' if f['runs'] is None else '%d of %d' % (f['empty_runs'], f['runs']),
            f['kubelet_passes'], f['bound'], _ratio(f['repulls'], f['bound'])))
    fewest = bound.repulls(budget) if budget >= bound.in_use else 'none (the images in use alone need more)'
    lines.append('| lower bound, mean disk %d%% | %s | | | %d (mean) | | | | | | |' % (
        BOUND_MEAN_PERCENT, fewest, BOUND_MEAN_PERCENT))
    return '\n'.join(lines)


def legend():
    rows = ['- **%s**: %s' % (name, description) for name, description, dummy, dummy2 in POLICIES]
    rows += ['', "Every row but the kubelet-only ones is the collection every 6 hours with the kubelet's GC "
             '(85/80, 2m, every 5 minutes) behind it, as on a real node.']
    return '\n'.join(rows)
