"""The tables: one per workload, one row per policy, each figure the median and the worst over
every seed and disk size replayed; then the defaults the replay chose against the kubelet alone,
per workload, seed and disk size, with a verdict."""

import statistics

from bench.policy.bound import Bound, IntervalBound
from bench.policy.policies import CANDIDATES, POLICIES, make, settings_of
from bench.policy.sim import replay
from bench.policy.trace import GB
from plugins.module_utils._units import format_duration

EVICTION_LINE = 85          # imagefs.available < 15%: the bound's cap and the hours column

HEADER = ('| policy | re-pulls | re-pulled GB | hours at >= 85% | eviction-manager firings | disk mean % '
          '| images removed as never used that a pod had used | re-pulls / interval bound '
          '| re-pulls / PFOO-L at its own mean |\n'
          '|---|--:|--:|--:|--:|--:|--:|--:|--:|')


class Config(object):
    """One replay setting: a workload's trace for one seed and one disk size, and its bounds."""

    def __init__(self, workload, seed, disk, trace):
        self.workload, self.seed, self.disk, self.trace = workload, seed, disk, trace
        self.pfoo = Bound(trace)
        self.interval = IntervalBound(trace, EVICTION_LINE, pfoo=self.pfoo)

    @property
    def label(self):
        return 'seed %d, %g GB' % (self.seed, self.disk)


def run(config, name):
    """The figures of policy ``name`` on ``config``, checked against both bounds."""
    figures = replay(config.trace, make(name, seed=config.seed))
    figures['pfoo'] = config.pfoo.repulls(figures['image_byte_seconds'])
    figures['interval'] = config.interval.repulls if config.interval.applies(figures['hourly']) else None
    for which in ('pfoo', 'interval'):
        if figures[which] is not None and figures['repulls'] < figures[which]:
            raise AssertionError('%s on %s %s: %d re-pulls, below the %s lower bound %d: the replay or the bound '
                                 'is wrong' % (name, config.workload, config.label, figures['repulls'], which,
                                               figures[which]))
    return figures


def _ratio_text(pairs):
    """'median / worst (k of n)' of re-pulls / bound over the replays where the bound applies and is
    above 0 (a ratio to 0 means nothing: those replays are counted out)."""
    applies = [(r, b) for r, b in pairs if b is not None]
    if not applies:
        return 'n/a (above the cap)'
    ratios = [float(r) / b for r, b in applies if b > 0]
    if not ratios:
        return '- (bound 0 in all %d)' % len(applies)
    return '%.1f / %.1f (%d of %d)' % (statistics.median(ratios), max(ratios), len(ratios), len(pairs))


def _mw(values, fmt='%d', worst=max):
    """'median / worst' of ``values`` (None left out)."""
    values = [v for v in values if v is not None]
    if not values:
        return '-'
    return '%s / %s' % (fmt % statistics.median(values), fmt % worst(values))


def table(workload, configs, results):
    """The Markdown table of one workload: ``results[name][i]`` the figures on ``configs[i]``."""
    first = configs[0].trace
    disks = sorted(set(c.disk for c in configs))
    seeds = sorted(set(c.seed for c in configs))
    bounds = [c.interval.repulls for c in configs]
    title = '### %s: %d seeds (%s) x %d disk sizes (%s GB), %d days' % (
        workload, len(seeds), ', '.join('%d' % s for s in seeds), len(disks),
        ', '.join('%g' % d for d in disks), first.horizon // 86400)
    about = ('%s. Per seed (median / most): %s pod starts, %s later uses after a gap (re-pulls a node with '
             'unlimited disk would avoid). Each cell: median / worst over the %d replays; the ratios to a bound '
             'over the replays where it is above 0 (k of n).' % (
                 first.params.split(',', 1)[1].strip() if ',' in first.params else first.params,
                 _mw([len(c.trace.starts) for c in configs]), _mw([c.pfoo.gaps for c in configs]), len(configs)))
    lines = [title, '', about, '', HEADER]
    for name in results:
        rows = results[name]
        lines.append('| %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (
            name, _mw([f['repulls'] for f in rows]), _mw([f['repull_bytes'] / float(GB) for f in rows], '%.1f'),
            _mw([f['hours_over_85'] for f in rows], '%.1f'), _mw([f['evictions'] for f in rows]),
            _mw([f['mean'] for f in rows], '%.0f'),
            '-' if rows[0]['blind'] is None else _mw([f['blind'] for f in rows]),
            _ratio_text([(f['repulls'], f['interval']) for f in rows]),
            _ratio_text([(f['repulls'], f['pfoo']) for f in rows])))
    lines.append('| interval bound (every hour at most %d%%) | %s | | | | | | | |' % (
        EVICTION_LINE, _mw(bounds) if None not in bounds else 'none (the images in use alone exceed it)'))
    return '\n'.join(lines)


def worse(f, k):
    """What ``f`` does worse than the kubelet alone ``k``: a list of words (empty: never worse)."""
    out = []
    if f['repulls'] > k['repulls']:
        out.append('re-pulls')
    if f['repull_bytes'] > k['repull_bytes']:
        out.append('re-pulled bytes')
    if f['hours_over_85'] > k['hours_over_85'] + 1e-9:
        out.append('hours at >= 85%')
    return out


def choose(results, names):
    """The candidate the replay picks: of those never worse than the kubelet alone on every
    replay (re-pulls, re-pulled bytes, hours at >= 85%), the one with the fewest eviction-manager
    firings, then the fewest re-pulls, then the lowest mean disk use; if none is, the one worse on
    the fewest replays (and the verdict says so). ``results[workload][name]`` lists figures."""
    def score(name):
        bad = sum(1 for w in results for f, k in zip(results[w][name], results[w]['kubelet']) if worse(f, k))
        every = [f for w in results for f in results[w][name]]
        return (bad, sum(f['evictions'] for f in every), sum(f['repulls'] for f in every),
                sum(f['mean'] for f in every))
    return min(names, key=score)


def candidates(results, names):
    """How each candidate default fares against the kubelet alone over every replay."""
    lines = ['### The candidate defaults against the kubelet alone', '',
             '| candidate | replays where it is worse than the kubelet alone | re-pulls (all replays) '
             '| re-pulled GB | hours at >= 85% | eviction-manager firings |', '|---|--:|--:|--:|--:|--:|']
    kubelet = [f for w in results for f in results[w]['kubelet']]
    for name in names + ['kubelet']:
        every = [f for w in results for f in results[w][name]]
        bad = sum(1 for f, k in zip(every, kubelet) if worse(f, k))
        lines.append('| %s | %s | %d | %.1f | %.1f | %d |' % (
            name if name != 'kubelet' else 'kubelet (alone)',
            '-' if name == 'kubelet' else '%d of %d' % (bad, len(every)),
            sum(f['repulls'] for f in every), sum(f['repull_bytes'] for f in every) / float(GB),
            sum(f['hours_over_85'] for f in every), sum(f['evictions'] for f in every)))
    return '\n'.join(lines)


def defaults_line(name):
    """Whether the collection's defaults (plugins/module_utils/_settings.py) are candidate ``name``'s
    image policy: (line, same)."""
    chosen, defaults = settings_of(name), settings_of(None)
    keys = ('image_unused_for', 'disk_high', 'disk_low')
    same = all(chosen[k] == defaults[k] for k in keys)
    shown = dict(defaults, image_unused_for=format_duration(defaults['image_unused_for']))
    text = ', '.join('%s %s' % (k, 'unset' if shown[k] is None else shown[k]) for k in keys)
    return ('The collection\'s defaults (plugins/module_utils/_settings.py: %s) %s the image policy of `%s`%s.'
            % (text, 'are' if same else 'are NOT', name,
               '' if same else ': change them, or say why not'), same)


def verdict(name, configs, results):
    """Per workload, seed and disk size: the chosen defaults against the kubelet alone; the
    verdict line last."""
    lines = ['### The chosen defaults against the kubelet alone, replay by replay', '',
             '`%s` (%s) beside `kubelet` (the kubelet alone). Each cell: the defaults / the kubelet.' % (
                 name, dict((r[0], r[1]) for r in CANDIDATES + POLICIES)[name]), '',
             '| workload | seed, disk | re-pulls | re-pulled GB | hours at >= 85% | eviction-manager firings '
             '| disk mean % | worse on |', '|---|---|--:|--:|--:|--:|--:|---|']
    bad = []
    for workload in results:
        for c, f, k in zip(configs[workload], results[workload][name], results[workload]['kubelet']):
            what = worse(f, k)
            if what:
                bad.append('%s %s (%s)' % (workload, c.label, ', '.join(what)))
            lines.append('| %s | %s | %d / %d | %.1f / %.1f | %.2f / %.2f | %d / %d | %.0f / %.0f | %s |' % (
                workload, c.label, f['repulls'], k['repulls'],
                f['repull_bytes'] / float(GB), k['repull_bytes'] / float(GB),
                f['hours_over_85'], k['hours_over_85'], f['evictions'], k['evictions'], f['mean'], k['mean'],
                ', '.join(what) or 'never'))
    total = sum(len(v) for v in configs.values())
    fired = sum(f['evictions'] for w in results for f in results[w][name])
    if bad:
        line = ('**Verdict: `%s` is worse than the kubelet alone on %d of %d replays: %s.**'
                % (name, len(bad), total, '; '.join(bad)))
    else:
        line = ('**Verdict: `%s` is never worse than the kubelet alone on re-pulls, re-pulled bytes or hours at '
                '>= 85%% in any of the %d replays.**' % (name, total))
    line += ' The eviction manager fired %d times under it (the kubelet alone: %d).' % (
        fired, sum(f['evictions'] for w in results for f in results[w]['kubelet']))
    lines += ['', line]
    return '\n'.join(lines), not bad


def legend():
    rows = ['- **%s**: %s' % (name, description) for name, description, dummy, dummy2 in POLICIES + CANDIDATES]
    rows += ['', "Every row but the kubelet-only ones is the collection on the timer's schedule (every 6 hours "
             'from midnight, each run delayed by a fresh draw in [0, 30 min), as `RandomizedDelaySec`), pod-aware '
             'unless it says otherwise, with the kubelet behind it as on a real node: image GC every 5 minutes '
             '(85/80 on whole percentages, never-used images first, 2m minimum age) and the eviction manager every '
             '10 s (at `imagefs.available` < 15%% it removes every exited container of a pod that is not running, '
             'then every unused image). *Eviction-manager firings*: episodes below the eviction line (a check '
             'finds it crossed, the next finds it resolved). *Interval bound*: the fewest re-pulls of any policy '
             'that holds at most %d%% of the disk in every hour (bench/policy/bound.py, IntervalBound); a row '
             'that went above it in some hour is n/a. *PFOO-L at its own mean*: the fewest re-pulls of any policy with that row\'s mean disk '
             'use (Berger et al., SIGMETRICS 2018), kept for comparison: it lets idle hours pay for busy ones.'
             % EVICTION_LINE]
    return '\n'.join(rows)
