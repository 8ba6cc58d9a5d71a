"""Benchmark: floor vs shell pipeline vs node-side runner vs playbook, on real containerd.

    /work/venv/bin/python bench/run.py [--sizes small,large] [-n 3] [--n-large 1]
        [--small 100,20,30] [--large 1000,200,300] [--crictl PATH] [--budget 2400]
        [--variants floor,shell,runner,playbook] [--doc docs/performance.md] [--json FILE]

Root only (it starts a private containerd through tests/lab). Every measured run gets a fresh,
identical state: ``reset(lab)`` then ``big(lab, containers=N, sandboxes=M, images=K)``. The lab
is torn down at the end whatever happens (also on SIGTERM/SIGINT and when the budget runs out).
Not a test: nothing here is collected by pytest.
"""

import argparse
import importlib
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import tests.lab as L                                    # noqa: E402  (repo root on sys.path first)
S = importlib.import_module("tests.lab.scenario")       # the package re-exports a function named scenario
from tests.integration import ansible_play as AP         # noqa: E402

NODE_PYTHON = '/usr/bin/python3' if os.path.exists('/usr/bin/python3') else sys.executable
SANDBOX_MIN_AGE = 1           # s; the big() sandboxes are older than this when a run starts
CRICTL_TIMEOUT = '2m'         # the library's default timeout; floor and shell get the same
VARIANTS = ('floor', 'shell', 'runner', 'playbook')


class Budget(Exception):
    pass


# ------------------------------------------------------------------------------------ helpers

def sh(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kw)


def write(path, text, mode=0o644):
    with open(path, 'w') as handle:
        handle.write(text)
    os.chmod(path, mode)


def make_wrappers(bindir, log, crictl, ctr):
    """crictl and ctr wrappers that log one line per process started, then exec the real binary."""
    os.makedirs(bindir, exist_ok=True)
    for name, real in (('crictl', crictl), ('ctr', ctr)):
        write(os.path.join(bindir, name), textwrap.dedent('''\
            #!/bin/sh
            printf '%%s %%s\\n' %s "$*" >> %s
            exec %s "$@"
            ''') % (name, log, real), 0o755)


def descendants_rss(root):
    """Sum of RSS (bytes) of ``root`` and all its descendants, from /proc."""
    children, rss = {}, {}
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % pid) as handle:
                fields = handle.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(pid))
        rss[int(pid)] = int(fields[21]) * os.sysconf('SC_PAGE_SIZE')
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def measure(argv, env, timeout, cwd=None):
    """Wall time, max RSS of one process of the tree (wait4 rusage) and peak tree RSS (polled)."""
    out = tempfile.TemporaryFile(mode='w+')
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                            start_new_session=True)
    peak = [0]
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            peak[0] = max(peak[0], descendants_rss(proc.pid))
            stop.wait(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    try:
        status, usage = os.wait4(proc.pid, 0)[1:]
    finally:
        timer.cancel()
        stop.set()
        poller.join()
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    return {'wall': wall, 'rc': proc.returncode, 'maxrss_proc': usage.ru_maxrss * 1024,
            'cpu': usage.ru_utime + usage.ru_stime,
            'peak_tree_rss': peak[0], 'output': out.read()[-3000:]}


def count_calls(log):
    calls = []
    if os.path.exists(log):
        with open(log) as handle:
            calls = [line.split() for line in handle if line.strip()]
    by = {}
    for argv in calls:
        words = [w for w in argv[1:] if not w.startswith('-') and not w.startswith('unix://')
                 and not w.startswith('/') and w not in ('k8s.io', 'json', '2m', '120s', '120')]
        key = argv[0] + ' ' + ' '.join(words[:3] if argv[0] == 'ctr' else words[:1])
        by[key] = by.get(key, 0) + 1
    return {'crictl': sum(1 for c in calls if c[0] == 'crictl'), 'ctr': sum(1 for c in calls if c[0] == 'ctr'),
            'by_argv': by}


def content_bytes(lab):
    r = lab.ctr('-n', 'k8s.io', 'content', 'ls', check=False)
    total = 0
    for line in r.stdout.splitlines()[1:]:
        fields = [f for f in line.split('\t') if f]
        if len(fields) >= 2:
            total += human_bytes(fields[1])
    return total, max(0, len(r.stdout.splitlines()) - 1)


def human_bytes(text):
    units = {'B': 1, 'kB': 1000, 'KB': 1000, 'KiB': 1024, 'MB': 1000 ** 2, 'MiB': 1024 ** 2,
             'GB': 1000 ** 3, 'GiB': 1024 ** 3}
    text = text.strip()
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return int(float(text[:-len(unit)].strip()) * units[unit])
    return int(float(text))


def snapshot(lab):
    c = lab.client
    containers = c.list_containers()
    pods = c.list_pod_sandbox()
    images = c.list_images()
    cbytes, blobs = content_bytes(lab)
    return {'containers': len(containers),
            'exited': sum(1 for x in containers if x.state == L.cri.CONTAINER_EXITED),
            'sandboxes': len(pods), 'notready': sum(1 for p in pods if p.state == L.cri.SANDBOX_NOTREADY),
            'images': len(images), 'image_bytes': sum(int(i.size) for i in images),
            'blobs': blobs, 'content_bytes': cbytes}


# ------------------------------------------------------------------------------------ variants

FLOOR = r'''
import json, subprocess, sys, time
cut_ns = (time.time() - %(min_age)d) * 1e9
sandbox_image = %(sandbox_image)r
def crictl(*a):
    r = subprocess.run(['crictl', '--timeout', %(timeout)r] + list(a), capture_output=True, text=True)
    if r.returncode:
        sys.stderr.write(r.stderr)
    return r
ps = json.loads(crictl('ps', '--all', '--output', 'json').stdout)['containers']
pods = json.loads(crictl('pods', '--output', 'json').stdout)['items']
imgs = json.loads(crictl('images', '--output', 'json').stdout)['images']
dead_pods = set(p['id'] for p in pods if p['state'] == 'SANDBOX_NOTREADY' and int(p['createdAt']) < cut_ns)
exited = [c['id'] for c in ps if c['state'] == 'CONTAINER_EXITED' and int(c['createdAt']) < cut_ns]
left = [c for c in ps if c['state'] != 'CONTAINER_EXITED' and c['podSandboxId'] not in dead_pods]
used = set(c['imageRef'] for c in left) | set(c['image']['image'] for c in left)
rmi = [i['id'] for i in imgs if not i.get('pinned') and i['id'] not in used
       and not (set(i.get('repoTags') or []) & (used | {sandbox_image}))]
rc = 0
if exited: rc |= crictl('rm', *exited).returncode
if dead_pods: rc |= crictl('rmp', *sorted(dead_pods)).returncode
if rmi: rc |= crictl('rmi', *rmi).returncode
rc |= subprocess.run(['ctr', '-n', 'k8s.io', 'content', 'prune', 'references']).returncode
sys.exit(rc)
'''

SHELL = r'''
set -u
cut=$(( $(date +%%s) - %(min_age)d ))000000000
rc=0
crictl --timeout %(timeout)s rm $(crictl ps -a -q --state exited) || rc=1
for id in $(crictl pods --state NotReady -o json |
            jq -r --argjson cut "$cut" '.items[] | select((.createdAt | tonumber) < $cut) | .id'); do
    crictl --timeout %(timeout)s rmp "$id" || rc=1
done
crictl --timeout %(timeout)s rmi --prune || rc=1
ctr -n k8s.io content prune references || rc=1
exit $rc
'''

RUNNER = r'''
import sys
sys.path.insert(0, %(pkgroot)r)
from nodemaint_image_gc import _runner
sys.exit(_runner.main(['--config', %(config)r, 'run'] + %(extra)r))
'''


class Bench(object):
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix='image-gc-bench-')
        self.lab = None
        self.deadline = time.monotonic() + args.budget
        self.crictl = os.path.realpath(args.crictl) if args.crictl else L.find_crictl()
        self.ctr = shutil.which('ctr') or '/usr/bin/ctr'
        self.log = os.path.join(self.tmp, 'calls.log')
        self.wrap = os.path.join(self.tmp, 'bin')
        make_wrappers(self.wrap, self.log, self.crictl, self.ctr)
        # the library, installed the way the timer role installs it
        self.pkgroot = os.path.join(self.tmp, 'lib')
        shutil.copytree(os.path.join(ROOT, 'plugins', 'module_utils'),
                        os.path.join(self.pkgroot, 'nodemaint_image_gc'))
        open(os.path.join(self.pkgroot, 'nodemaint_image_gc', '__init__.py'), 'a').close()

    # -- lab --------------------------------------------------------------------------------
    def start(self):
        self.lab = L.Lab(os.path.join(self.tmp, 'lab'), crictl=self.crictl)
        self.lab.start()

    def stop(self):
        if self.lab is not None:
            lab, self.lab = self.lab, None
            lab.stop()
            left = lab.leftovers()
            if left and any(left.values() if isinstance(left, dict) else left):
                print('WARNING: lab leftovers: %r' % (left,), file=sys.stderr)

    def env(self):
        env = self.lab.env()
        env['PATH'] = self.wrap + os.pathsep + env['PATH']
        env['CONTAINERD_ADDRESS'] = self.lab.socket
        return env

    def check_time(self, need):
        left = self.deadline - time.monotonic()
        if left < need:
            raise Budget('%.0f s left of the budget, %.0f s needed' % (left, need))
        return left

    def build(self, size):
        S.reset(self.lab)
        info = S.big(self.lab, containers=size[0], sandboxes=size[1], images=size[2])
        time.sleep(SANDBOX_MIN_AGE + 0.5)
        return info['seconds']

    # -- per-process cost ------------------------------------------------------------------
    def process_cost(self, n=5):
        env = self.lab.env()
        out = {}
        for name, argv in (('crictl', [self.crictl, '-r', self.lab.endpoint, 'version']),
                           ('ctr', [self.ctr, '--address', self.lab.socket, 'version'])):
            times = []
            for dummy in range(n):
                t0 = time.monotonic()
                sh(argv, env=env)
                times.append(time.monotonic() - t0)
            out[name] = statistics.median(times)
        return out

    # -- variants -----------------------------------------------------------------------------
    def argv_for(self, variant):
        subst = {'min_age': SANDBOX_MIN_AGE, 'timeout': CRICTL_TIMEOUT, 'sandbox_image': S.SANDBOX_IMAGE,
                 'pkgroot': self.pkgroot, 'extra': []}
        if variant == 'floor':
            return [NODE_PYTHON, '-c', FLOOR % subst], None
        if variant == 'shell':
            return ['sh', '-c', SHELL % subst], None
        if variant == 'runner':
            subst['config'] = self.runner_config(wrapped=True)
            return [NODE_PYTHON, '-c', RUNNER % subst], None
        if variant == 'playbook':
            inv = os.path.join(self.tmp, 'inventory.json')
            hostvars = {'ansible_connection': 'local', 'ansible_python_interpreter': NODE_PYTHON,
                        'image_gc_crictl_path': os.path.join(self.wrap, 'crictl'),
                        'image_gc_ctr_path': os.path.join(self.wrap, 'ctr'),
                        'image_gc_runtime_endpoint': self.lab.endpoint,
                        'image_gc_lock_path': os.path.join(self.tmp, 'run.lock'),
                        'image_gc_image_record_path': os.path.join(self.tmp, 'images.json'),
                        'image_gc_image_min_age': '0s',
                        'image_gc_sandbox_min_age': '%ds' % SANDBOX_MIN_AGE,
                        'image_gc_created_min_age': '0s'}
            if not shutil.which('sudo'):
                hostvars['ansible_become'] = False     # root already; no sudo on these machines
            with open(inv, 'w') as handle:
                json.dump({'all': {'hosts': {'localhost': hostvars}}}, handle)
            env = AP.ansible_env(self.lab)
            env['PATH'] = self.wrap + os.pathsep + env['PATH']
            os.makedirs(env['ANSIBLE_LOCAL_TEMP'], exist_ok=True)
            return [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', inv,
                    'nodemaint.image_gc.prune'], env
        raise ValueError(variant)

    def runner_config(self, wrapped):
        path = os.path.join(self.tmp, 'config-%s.json' % ('wrapped' if wrapped else 'plain'))
        bindir = self.wrap if wrapped else None
        cfg = {'crictl_path': os.path.join(bindir, 'crictl') if bindir else self.crictl,
               'ctr_path': os.path.join(bindir, 'ctr') if bindir else self.ctr,
               'runtime_endpoint': self.lab.endpoint, 'created_min_age': '0s',
               'sandbox_min_age': '%ds' % SANDBOX_MIN_AGE,
               'report_path': os.path.join(self.tmp, 'last-run-%s.json' % ('wrapped' if wrapped else 'plain')),
               'lock_path': os.path.join(self.tmp, 'run.lock'), 'lock_wait': '30s',
               'image_record_path': os.path.join(self.tmp, 'images.json'), 'image_min_age': '0s'}
        with open(path, 'w') as handle:
            json.dump(cfg, handle)
        return path

    def reclaimable(self):
        """What the library's planner would still remove: a dry run of the runner (not counted)."""
        subst = {'pkgroot': self.pkgroot, 'config': self.runner_config(wrapped=False), 'extra': ['--dry-run']}
        r = sh([NODE_PYTHON, '-c', RUNNER % subst], env=self.lab.env(), timeout=600)
        objects, nbytes, phases = 0, 0, {}
        for line in r.stdout.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get('event') == 'phase':
                objects += ev['removed']
                nbytes += ev['bytes']
                phases[ev['phase']] = ev['removed']
        return {'objects': objects, 'bytes': nbytes, 'by_phase': phases, 'rc': r.returncode}

    def one(self, variant, size, est):
        self.check_time(est)
        build_s = self.build(size)
        before = snapshot(self.lab)
        if os.path.exists(self.log):
            os.unlink(self.log)
        argv, env = self.argv_for(variant)
        timeout = max(60, self.deadline - time.monotonic())
        m = measure(argv, env or self.env(), timeout, cwd=self.tmp)
        calls = count_calls(self.log)
        after = snapshot(self.lab)
        left = self.reclaimable()
        removed = {k: before[k] - after[k] for k in ('exited', 'notready', 'images')}
        m.update(variant=variant, size=list(size), build_s=round(build_s, 1), before=before, after=after,
                 calls=calls, removed=removed, removed_total=sum(removed.values()),
                 content_bytes_freed=before['content_bytes'] - after['content_bytes'],
                 image_bytes_removed=before['image_bytes'] - after['image_bytes'],
                 images_removed=before['images'] - after['images'],
                 left=left)
        print('  %-8s %s wall=%.2fs rc=%s crictl=%d ctr=%d removed=%s left=%s build=%.0fs' % (
            variant, size, m['wall'], m['rc'], calls['crictl'], calls['ctr'], removed, left['objects'], build_s),
            flush=True)
        if m['rc'] != 0:
            print(m['output'][-1500:], flush=True)
        return m


# ------------------------------------------------------------------------------------ report

def machine(lab, crictl, cost):
    cpu = ''
    with open('/proc/cpuinfo') as handle:
        for line in handle:
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    with open('/proc/meminfo') as handle:
        mem_kb = int(handle.readline().split()[1])
    return {'nproc': os.cpu_count(), 'memory_gib': round(mem_kb / 1024 ** 2, 1), 'cpu': cpu,
            'kernel': platform.release(), 'containerd': lab.version_string, 'crictl': crictl,
            'crictl_version': L.crictl_version(crictl),
            'crictl_process_s': round(cost['crictl'], 3), 'ctr_process_s': round(cost['ctr'], 3),
            'loadavg_start': os.getloadavg()}


def summarize(runs):
    walls = [r['wall'] for r in runs]
    r0 = runs[len(runs) // 2] if len(runs) > 1 else runs[0]
    return {'n': len(runs), 'wall': statistics.median(walls), 'walls': [round(w, 2) for w in walls],
            'cpu': statistics.median([r.get('cpu', 0.0) for r in runs]),
            'maxrss_proc': max(r['maxrss_proc'] for r in runs), 'peak_tree_rss': max(r['peak_tree_rss'] for r in runs),
            'crictl': r0['calls']['crictl'], 'ctr': r0['calls']['ctr'], 'by_argv': r0['calls']['by_argv'],
            'removed': r0['removed'], 'removed_total': r0['removed_total'],
            'content_bytes_freed': r0['content_bytes_freed'], 'image_bytes_removed': r0['image_bytes_removed'],
            'left_objects': max(r['left']['objects'] for r in runs), 'left_bytes': max(r['left']['bytes'] for r in runs),
            'left_by_phase': r0['left']['by_phase'], 'rc': [r['rc'] for r in runs],
            'after': r0['after'], 'before': r0['before']}


def mib(n):
    return '%.1f' % (n / 1024.0 ** 2)


def render(results, info, args):
    cost = info['crictl_process_s']
    lines = ['# Performance', '',
             'Generated by `bench/run.py` (%s, %s). Re-run: `/work/venv/bin/python bench/run.py %s` as root.'
             % (results['date'], results['commit'], ' '.join(results['argv'])), '',
             '## Machine', '',
             '- %s cores (nproc), %s GiB memory, CPU: %s, kernel %s' % (
                 info['nproc'], info['memory_gib'], info['cpu'], info['kernel']),
             '- containerd %s (Debian package), ctr from the same package' % info['containerd'],
             '- crictl used: `%s` (upstream cri-tools %s) -- measured cost of one process (`crictl version`: '
             'start + connect + one RPC, median of 5): **%.3f s**; ctr: %.3f s' % (
                 info['crictl'], info.get('crictl_version') or '?', cost, info['ctr_process_s']),
             '- load average at start: %s. %s' % (
                 ', '.join('%.2f' % x for x in info['loadavg_start']),
                 'SHARED machine: other engineers ran tests concurrently, so wall times carry noise; '
                 'process counts and objects/bytes are exact.' if args.shared else ''),
             '']
    for size_name, size in results['sizes']:
        res = results['by_size'].get(size_name)
        if not res:
            continue
        n_note = ', '.join('%s N=%d' % (v, res[v]['n']) for v in VARIANTS if v in res)
        lines += ['## %s: %d exited containers, %d NotReady sandboxes, %d unused images' % (
            size_name, size[0], size[1], size[2]), '',
            'Median wall time of N runs, each on a freshly rebuilt identical state (%s).' % n_note, '',
            '| variant | wall s (median) | runs | client CPU s | crictl procs | ctr procs '
            '| peak tree RSS MiB | max proc RSS MiB | removed (ctr/sbx/img) | content bytes freed '
            '| image bytes removed | reclaimable left (objects / bytes) | exit |',
            '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
        for v in VARIANTS:
            if v not in res:
                continue
            r = res[v]
            rem = r['removed']
            lines.append('| %s | %.2f | %s | %s | %d | %d | %s | %s | %d/%d/%d | %d | %d | %d / %d | %s |' % (
                v, r['wall'], ' '.join('%.1f' % w for w in r['walls']),
                '%.1f' % r['cpu'] if r.get('cpu') else 'n/a', r['crictl'], r['ctr'],
                mib(r['peak_tree_rss']), mib(r['maxrss_proc']), rem['exited'], rem['notready'], rem['images'],
                r['content_bytes_freed'], r['image_bytes_removed'], r['left_objects'], r['left_bytes'],
                ','.join(str(x) for x in r['rc'])))
        lines += ['', 'crictl/ctr processes by verb:', '']
        for v in VARIANTS:
            if v in res:
                lines.append('- %s: %s' % (v, ', '.join('`%s` x%d' % kv for kv in sorted(res[v]['by_argv'].items()))))
        lines += ['', '| ratio | measured | difference s |', '|---|---|---|']
        for a, b in (('runner', 'floor'), ('runner', 'shell'), ('playbook', 'runner')):
            if a in res and b in res:
                ratio, diff = res[a]['wall'] / res[b]['wall'], res[a]['wall'] - res[b]['wall']
                lines.append('| %s/%s | %.2f | %+.2f |' % (a, b, ratio, diff))
        lines.append('')
    if len([s for s in results['by_size'] if results['by_size'][s]]) >= 2:
        small, large = results['sizes'][0], results['sizes'][-1]
        objs = float(sum(large[1])) / sum(small[1])
        lines += ['## Growth %s -> %s (objects x%.1f)' % (small[0], large[0], objs), '',
                  '| variant | wall growth | crictl process growth |', '|---|---|---|']
        rs, rl = results['by_size'][small[0]], results['by_size'][large[0]]
        for v in VARIANTS:
            if v in rs and v in rl:
                lines.append('| %s | x%.1f | x%.1f |' % (
                    v, rl[v]['wall'] / rs[v]['wall'], float(rl[v]['crictl']) / max(1, rs[v]['crictl'])))
        lines.append('')
    return '\n'.join(lines)


# ------------------------------------------------------------------------------------ main

def parse_size(text):
    parts = [int(x) for x in text.split(',')]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError('expected CONTAINERS,SANDBOXES,IMAGES')
    return tuple(parts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    p.add_argument('--sizes', default='small,large', help='comma list of small,large (default both)')
    p.add_argument('--small', type=parse_size, default=(100, 20, 30), help='CONTAINERS,SANDBOXES,IMAGES')
    p.add_argument('--large', type=parse_size, default=(1000, 200, 300), help='CONTAINERS,SANDBOXES,IMAGES')
    p.add_argument('-n', type=int, default=3, help='runs per variant (median); default 3')
    p.add_argument('--n-large', type=int, default=None, help='runs per variant for the large size (default -n)')
    p.add_argument('--variants', default=','.join(VARIANTS))
    p.add_argument('--crictl', default=None,
                   help='crictl binary (default: the real crictl as the tests find it: $NODEMAINT_CRICTL, a crictl '
                        '>= 1.36 on PATH, or the set-up\'s go-install build in the cache)')
    p.add_argument('--budget', type=float, default=2400, help='seconds; stop measuring when exceeded (default 2400)')
    p.add_argument('--doc', default=None, help='write the Markdown table here (e.g. docs/performance.md)')
    p.add_argument('--json', default=None, help='write raw results here')
    p.add_argument('--shared', action='store_true', help='note in the doc that the machine was shared')
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error('run as root (it starts containerd)')
    variants = [v for v in args.variants.split(',') if v]
    sizes = [(s, args.small if s == 'small' else args.large) for s in args.sizes.split(',') if s]
    bench = Bench(args)
    results = {'date': datetime.datetime.now().strftime('%Y-%m-%d %H:%M'), 'argv': sys.argv[1:] if argv is None else argv,
               'commit': sh(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD']).stdout.strip(),
               'sizes': sizes, 'by_size': {}, 'incomplete': None}

    def on_signal(signum, frame):
        raise KeyboardInterrupt('signal %d' % signum)
    signal.signal(signal.SIGTERM, on_signal)
    info = None
    try:
        bench.start()
        cost = bench.process_cost()
        info = machine(bench.lab, bench.crictl, cost)
        print('machine: %s' % json.dumps(info), flush=True)
        est = {}
        for size_name, size in sizes:
            n = args.n_large if (size_name == 'large' and args.n_large) else args.n
            res = results['by_size'].setdefault(size_name, {})
            print('%s %s N=%d' % (size_name, size, n), flush=True)
            for v in variants:
                runs = []
                for dummy in range(n):
                    runs.append(bench.one(v, size, est.get(size_name, 30)))
                    est[size_name] = max(est.get(size_name, 0), runs[-1]['build_s'] + runs[-1]['wall'] + 20)
                res[v] = summarize(runs)
                res[v]['runs'] = [dict((k, x[k]) for k in ('wall', 'rc', 'calls', 'removed', 'left', 'build_s'))
                                  for x in runs]
    except (Budget, KeyboardInterrupt) as exc:
        results['incomplete'] = str(exc)
        print('STOPPED: %s' % exc, file=sys.stderr)
    finally:
        bench.stop()
    if args.json:
        with open(args.json, 'w') as handle:
            json.dump({'results': results, 'machine': info}, handle, indent=1, default=str)
    if info:
        text = render(results, info, args)
        if results['incomplete']:
            text += '\n**Incomplete run**: %s\n' % results['incomplete']
        if args.doc:
            # keep the hand-written analysis below the marker of an existing doc
            marker = '<!-- analysis: kept by bench/run.py -->'
            if os.path.exists(args.doc):
                with open(args.doc) as handle:
                    old = handle.read()
                if marker in old:
                    text += '\n' + old[old.index(marker):].rstrip('\n')
            write(args.doc, text + '\n')
        print(text)
    shutil.rmtree(bench.tmp, ignore_errors=True)
    return 0 if not results['incomplete'] else 1


if __name__ == '__main__':
    sys.exit(main())
