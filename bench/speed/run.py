"""Speed benchmark: floor vs shell pipeline vs node-side runner vs playbook, on real containerd.

    python bench/speed/run.py [--sizes small,large,memory,disk] [-n 3] [--n-large 1]
        [--small 100,20,30] [--large 1000,200,300] [--memory 4000,400,300] [--disk-images 50]
        [--memory-exited N] [--keep-lab DIR]
        [--crictl PATH] [--budget 2400] [--variants floor,shell,runner,playbook,disk]
        [--doc docs/performance.md] [--json FILE] [--shared]

Run as root with the tools venv's python (scripts/test.sh sets it up). It starts a private
containerd through tests/lab, its root on a tmpfs of its own (so the disk figures are the lab's
alone); every measured run gets a fresh, identical state: ``reset(lab)`` then
``big(lab, containers=N, sandboxes=M, images=K, pods_gone=True)`` for small and large (every
exited container is in a pod that is gone: garbage to the pod-aware runner too);
``big(..., start=False)`` for memory (created containers in live pods, all of which stay, so the
runner inspects every one: the memory case); 50 images with a payload of their own for disk
(the disk target against the plain run over the same images). With ``--keep-lab DIR`` the lab
stays up in DIR and a later run reuses it: a memory state it still holds (every container a run
keeps) only gets again the NotReady sandboxes and unused images a run removed
(``scenario.top_up``), so a 10,000-container state (``--memory-exited``: part of them exited, see
``scenario.big``) builds once. Without it the lab is torn down at the end whatever
happens (also on SIGTERM/SIGINT and when the budget runs out). What each variant is:
bench/speed/variants.py; measuring: bench/speed/measure.py; the report: bench/speed/report.py. Not a test.
"""

import argparse
import datetime
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# bench code imports as packages from the repository root (bench.policy.trace, tests.lab), never from this
# script's folder (python puts it first on sys.path, where policy/trace.py would shadow the standard library's)
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p) != HERE]

import tests.lab as L                                        # noqa: E402  (repo root on sys.path first)
from bench.speed import measure, report                      # noqa: E402
from bench.speed.variants import VARIANTS, SANDBOX_MIN_AGE, Variants  # noqa: E402
from tests.lab_tests import node_package                   # noqa: E402
S = importlib.import_module('tests.lab.scenario')           # the package re-exports a function named scenario


# First key of the --json file: it says why that file is long (one entry per measured run).
ABOUT_JSON = ('Raw results of bench/speed/run.py (generated, not edited): every measured run with its process counts '
              'and runtime state before and after; its length is the data. docs/performance.md is the summary.')


class Budget(Exception):
    pass


# Which variants run on which state (of those asked for with --variants).
ON_SIZE = {'small': ('floor', 'shell', 'runner', 'playbook'), 'large': ('floor', 'shell', 'runner', 'playbook'),
           'memory': ('floor', 'runner'), 'disk': ('runner', 'disk')}
PAYLOAD = 4 * 1024 * 1024     # bytes of random data in each disk-state image (frees about twice that)
LAB_TMPFS = '1g'
LAB_TMPFS_KEPT = '3g'         # a kept lab (--keep-lab) may hold 10,000 containers


class Bench:
    def __init__(self, args):
        self.tmp = tempfile.mkdtemp(prefix='image-gc-bench-')
        self.deadline = time.monotonic() + args.budget
        self.keep = args.keep_lab
        self.memory_exited = args.memory_exited
        if self.keep and os.path.exists(os.path.join(self.keep, 'containerd.pid')) and \
                L.Lab.attach(os.path.abspath(self.keep)).running():
            self.lab = L.Lab.attach(os.path.abspath(self.keep))
            self.attached = True
        else:
            self.lab = L.Lab(os.path.abspath(self.keep) if self.keep else os.path.join(self.tmp, 'lab'),
                             crictl=args.crictl, root_tmpfs=LAB_TMPFS_KEPT if self.keep else LAB_TMPFS,
                             remove_base=False if self.keep else None)
            self.attached = False
        self.log = os.path.join(self.tmp, 'calls.log')
        self.started = False

    def start(self):
        package = node_package.install(os.path.join(self.tmp, 'node'))   # as the timer role installs it
        sys.path.insert(0, package.lib)
        from nodemaint_image_gc import _units  # pylint: disable=import-error,import-outside-toplevel
        self.parse_size = _units.parse_human_size
        if not self.attached:
            self.lab.start()
        self.started = True
        wrap = os.path.join(self.tmp, 'bin')
        measure.make_wrappers(wrap, self.log, self.lab.crictl_bin, self.lab.ctr_bin, timed=True)
        self.variants = Variants(self.tmp, self.lab, wrap, S.SANDBOX_IMAGE, package)

    def stop(self):
        if self.started and self.keep:
            self.started = False
            self.lab._drop_client()
            self.lab.write_json(os.path.join(self.lab.base, 'lab.json'))
            print('the lab stays up in %s (tear it down: python -m tests.lab down --dir %s)' % (
                self.lab.base, self.lab.base), flush=True)
        if self.started:
            self.started = False
            self.lab.stop()
            left = self.lab.leftovers()
            if left and any(left.values() if isinstance(left, dict) else left):
                print('WARNING: lab leftovers: %r' % (left,), file=sys.stderr)

    def check_time(self, need):
        left = self.deadline - time.monotonic()
        if left < need:
            raise Budget('%.0f s left of the budget, %.0f s needed' % (left, need))

    def build(self, size_name, size):
        """A fresh state of SIZE; one retry when the lab fails to build it (a loaded, shared machine)."""
        if size_name == 'memory' and self.keep and self.holds_memory_state(size):
            self.state_how = 'kept (NotReady sandboxes and unused images added again)'
            return S.top_up(self.lab, sandboxes=size[1], images=size[2])
        self.state_how = 'built'
        for attempt in (1, 2):
            try:
                S.reset(self.lab)
                if size_name == 'disk':
                    return self.build_disk(size[2])
                return S.big(self.lab, containers=size[0], sandboxes=size[1], images=size[2],
                             pods_gone=size_name != 'memory', start=size_name != 'memory',
                             exited=self.memory_exited if size_name == 'memory' else 0)['seconds']
            except L.cri.CRIError as exc:
                if attempt == 2:
                    raise
                print('  building the state failed (%s); retrying once' % str(exc)[:200], flush=True)
        raise AssertionError('unreachable')

    def track_ready_pods(self):
        """The lab's kubelet root with every Ready pod tracked (and no other): the runner then plans
        as the floor does (a pod is live when its sandbox is Ready), and never reads the root of a
        kubelet that another user of this shared machine may be running."""
        P = importlib.import_module('tests.lab.pods')
        P.remove_kubelet_root(self.lab)
        root = P.kubelet_root(self.lab)
        for p in self.lab.client.list_pod_sandbox():
            if p.state == L.cri.SANDBOX_READY:
                P.track_pod(self.lab, p.metadata.uid)
        return root

    def holds_memory_state(self, size):
        """True when the kept lab holds the memory state's SIZE[0] containers (``exit-NNNNN``, a
        run keeps every one) in Ready pods: only what runs remove need be added again."""
        c = self.lab.client
        ready = set(p.id for p in c.list_pod_sandbox() if p.state == L.cri.SANDBOX_READY)
        kept = [x for x in c.list_containers() if x.metadata.name.startswith('exit-') and x.pod_sandbox_id in ready]
        return len(kept) == size[0]

    def build_disk(self, n):
        """N images of PAYLOAD random bytes each (and the shared busybox layer), all used an hour
        ago by the last-use record; the disk target's levels: disk_low such that all but about 3
        of the N must go (removing one frees about 2 x PAYLOAD: blob and unpacked snapshot)."""
        start = time.time()
        saved = L.images.marker_layer
        L.images.marker_layer = lambda name, variant='': L.images._tar(
            [('etc', 'dir', None, 0o755), ('etc/feas-image', 'file', os.urandom(PAYLOAD), 0o644)])
        try:
            built = [L.images.build('docker.io/feas/disk-%03d:1' % i) for i in range(n)]
        finally:
            L.images.marker_layer = saved
        for i in range(0, n, 10):
            L.images.import_images(self.lab.ctr_argv, built[i:i + 10], self.lab.work)
        now = int(time.time())
        with open(os.path.join(self.tmp, 'images.json'), 'w') as handle:
            json.dump({'version': 1, 'updated': now, 'images': dict(
                (im.image_id, {'first_seen': now - 30 * 86400, 'last_used': now - 3600 - i, 'refs': []})
                for i, im in enumerate(built))}, handle)
        fs = self.settled(self.lab.root)
        low = int(100.0 * (fs['used_bytes'] - 2 * PAYLOAD * (n - 3)) / fs['size_bytes'])
        self.variants.disk = (max(2, int(fs['used_percent']) - 1), max(1, low))
        return time.time() - start

    def one(self, variant, size_name, size, est):
        """One measured run of VARIANT on a fresh state of SIZE."""
        self.check_time(est)
        build_s = self.build(size_name, size)
        self.variants.created_min_age = '1h' if size_name == 'memory' else '0s'
        self.variants.kubelet_root = self.track_ready_pods() if size_name == 'memory' else None
        time.sleep(SANDBOX_MIN_AGE + 0.5)
        before = measure.snapshot(self.lab, L.cri, self.parse_size)
        for path in (self.log, self.log + '.timeline'):
            if os.path.exists(path):
                os.unlink(path)
        argv, env = self.variants.argv(variant)
        m = measure.measure(argv, env, max(60, self.deadline - time.monotonic()), cwd=self.tmp)
        m['loadavg'] = os.getloadavg()
        calls = measure.count_calls(self.log)
        m['timeline'] = measure.timeline(self.log, m['started_epoch'])
        after = measure.snapshot(self.lab, L.cri, self.parse_size)
        left = self.variants.reclaimable()
        removed = dict((k, before[k] - after[k]) for k in ('exited', 'notready', 'images'))
        if variant == 'disk':
            m['disk_levels'] = list(self.variants.disk)
            m['disk_report'] = self.disk_report()
        m.update(variant=variant, size=list(size), build_s=round(build_s, 1), before=before, after=after,
                 state=self.state_how,
                 calls=calls, removed=removed, removed_total=sum(removed.values()),
                 content_bytes_freed=before['content_bytes'] - after['content_bytes'],
                 image_bytes_removed=before['image_bytes'] - after['image_bytes'], left=left)
        print('  %-8s %s wall=%.2fs rc=%s crictl=%d ctr=%d removed=%s left=%s build=%.0fs peak=%.0fMiB %s '
              '(at the peak: %s)' % (
                  variant, size, m['wall'], m['rc'], calls['crictl'], calls['ctr'], removed, left['objects'], build_s,
                  m['peak_tree_rss'] / 2.0 ** 20,
                  ', '.join('%s %.0f' % (k, v / 2.0 ** 20) for k, v in list(m['peak_by_process'].items())[:3]),
                  report.at_peak(m['peak_sample'])), flush=True)
        if m['rc'] != 0:
            print(m['output'][-1500:], flush=True)
        return m

    def settled(self, path):
        from nodemaint_image_gc import _disk  # pylint: disable=import-error,import-outside-toplevel
        return _disk.settled_figure(path, timeout=10)

    def disk_report(self):
        """The disk target's batches from the wrapped runner's report file."""
        try:
            with open(os.path.join(self.tmp, 'last-run-wrapped-disk.json')) as handle:
                report = json.load(handle)
        except (OSError, ValueError) as exc:
            return {'error': str(exc)}
        for phase in report.get('phases', []):
            if phase.get('phase') == 'images' and phase.get('disk_target'):
                return phase['disk_target'].get('measured')
        return None


def parse_size(text):
    parts = [int(x) for x in text.split(',')]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError('expected CONTAINERS,SANDBOXES,IMAGES')
    return tuple(parts)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    p.add_argument('--sizes', default='small,large', help='comma list of small,large,memory,disk (default small,large)')
    p.add_argument('--small', type=parse_size, default=(100, 20, 30), help='CONTAINERS,SANDBOXES,IMAGES')
    p.add_argument('--large', type=parse_size, default=(1000, 200, 300), help='CONTAINERS,SANDBOXES,IMAGES')
    p.add_argument('--memory', type=parse_size, default=(4000, 400, 300),
                   help='CONTAINERS,SANDBOXES,IMAGES of the memory state (created containers that stay)')
    p.add_argument('--memory-exited', type=int, default=0,
                   help='of the memory state\'s containers, this many are started and exited, the rest only created '
                        '(containerd keeps two fifos open per created container: above about 6,000 the lab hits the '
                        'open-file limit); default 0')
    p.add_argument('--keep-lab', default=None, metavar='DIR',
                   help='run the lab in DIR and leave it up at the end; a later run with the same DIR reuses it and, '
                        'when it holds the memory state, only adds again what a run removed (a 10,000-container '
                        'state builds once)')
    p.add_argument('--disk-images', type=int, default=50, help='images of the disk state (default 50)')
    p.add_argument('-n', type=int, default=3, help='runs per variant (median); default 3')
    p.add_argument('--n-large', type=int, default=None, help='runs per variant for the large size (default -n)')
    p.add_argument('--variants', default=','.join(VARIANTS))
    p.add_argument('--crictl', default=None,
                   help='crictl binary (default: the real crictl as the tests find it: $NODEMAINT_CRICTL, a crictl '
                        '>= 1.36 on PATH, or the set-up\'s go-install build in the cache)')
    p.add_argument('--budget', type=float, default=2400, help='seconds; stop measuring when exceeded (default 2400)')
    p.add_argument('--doc', default=None, help='replace the speed-bench section of this file (docs/performance.md)')
    p.add_argument('--json', default=None, help='write raw results here')
    p.add_argument('--shared', action='store_true', help='note in the doc that the machine was shared')
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error('run as root (it starts containerd)')
    return args


def main(argv=None):
    args = parse_args(argv)
    variants = [v for v in args.variants.split(',') if v]
    by_name = {'small': args.small, 'large': args.large, 'memory': args.memory, 'disk': (0, 0, args.disk_images)}
    sizes = [(s, by_name[s]) for s in args.sizes.split(',') if s]
    bench = Bench(args)
    commit = subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                            check=False).stdout.strip()
    results = {'date': datetime.datetime.now().strftime('%Y-%m-%d %H:%M'), 'commit': commit,
               'argv': sys.argv[1:] if argv is None else argv, 'sizes': sizes, 'by_size': {}, 'incomplete': None}

    def on_signal(signum, frame):
        raise KeyboardInterrupt('signal %d' % signum)
    signal.signal(signal.SIGTERM, on_signal)
    info = None
    try:
        bench.start()
        cost = measure.process_cost(bench.lab, bench.lab.crictl_bin, bench.lab.ctr_bin)
        info = measure.machine(bench.lab, bench.lab.crictl_bin, L.crictl_version(bench.lab.crictl_bin), cost)
        print('machine: %s' % json.dumps(info), flush=True)
        est = {}
        for size_name, size in sizes:
            n = args.n_large if (size_name in ('large', 'memory') and args.n_large) else args.n
            res = results['by_size'].setdefault(size_name, {})
            print('%s %s N=%d' % (size_name, size, n), flush=True)
            for v in (v for v in variants if v in ON_SIZE[size_name]):
                runs = []
                for dummy in range(n):
                    runs.append(bench.one(v, size_name, size, est.get(size_name, 30)))
                    est[size_name] = max(est.get(size_name, 0), runs[-1]['build_s'] + runs[-1]['wall'] + 20)
                res[v] = report.summarize(runs)
                res[v]['runs'] = [dict((k, x.get(k)) for k in (
                    'wall', 'rc', 'calls', 'removed', 'left', 'build_s', 'peak_tree_rss', 'peak_by_process',
                    'peak_sample', 'loadavg', 'disk_levels', 'disk_report', 'state', 'timeline')) for x in runs]
    except (Budget, KeyboardInterrupt, L.cri.CRIError) as exc:   # keep and report what was measured
        results['incomplete'] = '%s: %s' % (type(exc).__name__, exc)
        print('STOPPED: %s' % exc, file=sys.stderr)
    finally:
        bench.stop()
    if args.json:
        with open(args.json, 'w') as handle:
            json.dump({'about': ABOUT_JSON, 'results': results, 'machine': info}, handle, indent=1, default=str)
    if info:
        text = report.render(results, info, args.shared)
        if args.doc:
            report.write_doc(args.doc, text)
        print(text)
    shutil.rmtree(bench.tmp, ignore_errors=True)
    return 0 if not results['incomplete'] else 1


if __name__ == '__main__':
    sys.exit(main())
