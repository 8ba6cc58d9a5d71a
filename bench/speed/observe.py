"""The observation pass's cost (issue 26): crictl calls, CPU and memory per pass, record bytes
written per day, on a real containerd with up to 10,000 containers.

Two measurements, both of the collection's real code:

1. **One pass as the timer runs it**: ``node-image-gc observe`` as its own process (the runner's
   ``main``) with the real upstream crictl (the one the lab tests use) against a lab containerd
   (tests/lab) holding N containers (created and exited ones in Ready pods, ``scenario.big``) and
   M unused images. CPU is the pass's process and its children, crictl included (user + sys, from
   wait4); wall; each process's own peak memory (VmHWM sampled every 20 ms, bench/speed/measure.py, as
   the speed bench does). crictl's own share is measured apart: the same two listings run alone.
   A lab of N containers is built for each size, except when ``--lab DIR`` names a kept lab (the
   speed bench's ``--keep-lab``) that holds N: a 10,000-container state is built once.
2. **A simulated day**: 288 passes (every 5 minutes) through ``_observe.observe`` in-process with
   an injected clock and the listings of a churn model (below, synthetic, no crictl), counting the
   record writes and bytes the real code writes, with the 30-minute last-use step and without it.

Usage (root, the tools venv's python, as bench/speed/run.py): ``python bench/speed/observe.py [--sizes
100,1000,10000] [--images 300] [--lab DIR] [--doc docs/performance.md] [--json FILE]``.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DAY = 86400
PASS = 300


def _collections_root():
    """A dir holding ansible_collections/nodemaint/image_gc -> this checkout."""
    base = tempfile.mkdtemp(prefix='observe-bench-')
    os.makedirs(os.path.join(base, 'ansible_collections', 'nodemaint'))
    os.symlink(ROOT, os.path.join(base, 'ansible_collections', 'nodemaint', 'image_gc'))
    return base


def image_id(i):
    return 'sha256:%064x' % (0x1000 + i)


def listing(containers, images, running, now, extra=()):
    """(ps JSON, images JSON): ``containers`` containers over ``images`` images, the first
    ``running`` of them running, the rest exited; ``extra``: (id number, image number, running)
    of short-lived job containers."""
    out = []

    def one(n, img, state, created):
        pod = 'pod-%05d' % (n // 2)
        return {
            'id': '%064x' % (0x10 ** 10 + n), 'podSandboxId': '%064x' % (0x20 ** 10 + n // 2),
            'metadata': {'name': 'c%d' % (n % 2), 'attempt': n % 3},
            'image': {'image': 'registry.example.com/team/app-%03d:1.%d' % (img, img), 'annotations': {},
                      'userSpecifiedImage': '', 'runtimeHandler': '', 'imageRef': ''},
            'imageRef': image_id(img), 'state': state, 'createdAt': str(created * 10 ** 9),
            'labels': {'io.kubernetes.container.name': 'c%d' % (n % 2), 'io.kubernetes.pod.name': pod,
                       'io.kubernetes.pod.namespace': 'ns-%02d' % (n % 40),
                       'io.kubernetes.pod.uid': '%08x-0000-4000-8000-%012x' % (n // 2, n // 2)},
            'annotations': {'io.kubernetes.container.hash': '%08x' % n, 'io.kubernetes.container.restartCount': '0',
                            'io.kubernetes.container.terminationMessagePath': '/dev/termination-log',
                            'io.kubernetes.container.terminationMessagePolicy': 'File',
                            'io.kubernetes.pod.terminationGracePeriod': '30'},
            'imageId': ''}
    for n in range(containers):
        out.append(one(n, n % images, 'CONTAINER_RUNNING' if n < running else 'CONTAINER_EXITED', now - 86400 + n))
    for n, img, is_running in extra:
        out.append(one(n, img, 'CONTAINER_RUNNING' if is_running else 'CONTAINER_EXITED', now))
    imgs = [{'id': image_id(i), 'repoTags': ['registry.example.com/team/app-%03d:1.%d' % (i, i)],
             'repoDigests': ['registry.example.com/team/app-%03d@sha256:%064x' % (i, 0x9000 + i)],
             'size': str(50 * 10 ** 6 + i * 10 ** 5), 'uid': None, 'username': '', 'spec': None, 'pinned': False}
            for i in range(images)]
    return json.dumps({'containers': out}, indent=2), json.dumps({'images': imgs}, indent=2)


def _lab_modules():
    sys.path.insert(0, ROOT)
    import importlib
    return importlib.import_module('tests.lab'), importlib.import_module('tests.lab.scenario'), \
        importlib.import_module('bench.speed.measure')


def lab_for(size, images, kept):
    """(lab, owned): the kept lab at ``kept`` when it holds ``size`` containers (its unused images
    added again if a run removed them), else a fresh lab with ``size`` created containers in Ready
    pods and ``images`` unused images (owned: torn down by the caller)."""
    L, S, dummy = _lab_modules()
    if kept:
        lab = L.Lab.attach(os.path.abspath(kept))
        if lab.running() and len(lab.client.list_containers()) == size:
            S.top_up(lab, sandboxes=0, images=images)
            return lab, False
        lab._drop_client()
    lab = L.Lab(tempfile.mkdtemp(prefix='observe-lab-'), root_tmpfs='1g')
    lab.start()
    try:
        S.big(lab, containers=size, sandboxes=0, images=images, pods_gone=False, start=False)
    except Exception:
        lab.stop()
        raise
    return lab, True


VERBS = ('ps', 'images', 'pods', 'inspect', 'info', 'version', 'imagefsinfo')
RUNNER = ('import sys; sys.path.insert(0, sys.argv[1]); '
          'from ansible_collections.nodemaint.image_gc.plugins.module_utils._runner import main; '
          'sys.exit(main(sys.argv[2:]))')


def real_pass(collections, size, images, kept, repeat=3):
    """Median figures (by CPU) of ``repeat`` passes from no record (written) and of as many with
    nothing new (record unchanged), with the real crictl against a lab of ``size`` containers."""
    L, dummy, M = _lab_modules()
    lab, owned = lab_for(size, images, kept)
    base = tempfile.mkdtemp(prefix='observe-pass-')
    try:
        config = os.path.join(base, 'config.json')
        record = os.path.join(base, 'images.json')
        log = os.path.join(base, 'calls.log')
        M.make_wrappers(os.path.join(base, 'bin'), log, lab.crictl_bin, lab.ctr_bin)
        crictl = os.path.join(base, 'bin', 'crictl')
        with open(config, 'w') as handle:
            json.dump({'crictl_path': crictl, 'runtime_endpoint': lab.endpoint, 'image_record_path': record,
                       'report_path': os.path.join(base, 'last-run.json'),
                       'lock_path': os.path.join(base, 'lock')}, handle)
        env = lab.env()
        alone, alone_rss = [], 0
        for dummy in range(repeat):
            ps = M.measure([lab.crictl_bin, '--runtime-endpoint', lab.endpoint, 'ps', '--all', '--output', 'json'],
                           env, 600)
            im = M.measure([lab.crictl_bin, '--runtime-endpoint', lab.endpoint, 'images', '--output', 'json'],
                           env, 600)
            assert ps['rc'] == 0 and im['rc'] == 0, (ps['output'], im['output'])
            alone.append((ps['cpu'] + im['cpu'], ps['wall'] + im['wall']))
            alone_rss = max([alone_rss] + [max(x['peak_by_process'].values() or [0]) for x in (ps, im)])
        listing_bytes = len(subprocess.run([lab.crictl_bin, '--runtime-endpoint', lab.endpoint, 'ps', '--all',
                                            '--output', 'json'], env=env, capture_output=True, check=True).stdout)
        rows = {}
        for kind in ('written', 'unchanged'):
            results = []
            for dummy in range(repeat):
                if kind == 'written' and os.path.exists(record):
                    os.remove(record)
                open(log, 'w').close()
                m = M.measure([sys.executable, '-c', RUNNER, collections, '--config', config, 'observe'], env, 600)
                event = json.loads(m['output'].strip().splitlines()[-1])
                assert m['rc'] == 0 and event['record'] == kind and event['containers'] == size, m['output']
                with open(log) as handle:
                    calls = [next((w for w in line.split()[1:] if w in VERBS), line.strip()) for line in handle
                             if line.strip()]
                results.append((m, calls, os.path.getsize(record), event))
            # memory: the most any of the passes showed (a 20 ms sample can miss a short crictl);
            # CPU and wall: the median pass by CPU
            by_process = {}
            for r in results:
                for name, hwm in r[0]['peak_by_process'].items():
                    name = 'python3 observe pass' if name.startswith('python') else name
                    if name.strip() and hwm:
                        by_process[name] = max(hwm, by_process.get(name, 0))
            tree = max(r[0]['peak_tree_rss'] for r in results)
            results.sort(key=lambda r: r[0]['cpu'])
            m, calls, size_bytes, event = results[len(results) // 2]
            rows[kind] = {'wall_s': round(m['wall'], 3), 'cpu_ms': round(m['cpu'] * 1000),
                          'peak_tree_mib': round(tree / 2 ** 20, 1),
                          'by_process_mib': dict((k, round(v / 2 ** 20, 1)) for k, v in
                                                 sorted(by_process.items(), key=lambda kv: -kv[1])),
                          'crictl_calls': len(calls), 'verbs': calls, 'record_bytes': size_bytes,
                          'loadavg': os.getloadavg()}
        alone.sort()
        cpu, wall = alone[len(alone) // 2]
        rss = alone_rss
        states = {}
        for c in lab.client.list_containers():
            states[c.state] = states.get(c.state, 0) + 1
        names = {0: 'created', 1: 'running', 2: 'exited', 3: 'unknown'}
        return {'containers': size, 'images': event['images'], 'running': event['running'],
                'states': dict((names.get(k, str(k)), v) for k, v in sorted(states.items())),
                'listing_bytes': listing_bytes, 'lab': 'kept (%s)' % lab.base if not owned else 'built for this size',
                'crictl_alone': {'cpu_ms': round(cpu * 1000), 'wall_s': round(wall, 3),
                                 'max_rss_mib': round(rss / 2 ** 20, 1)},
                'crictl_version': L.crictl_version(lab.crictl_bin), 'containerd': lab.version_string,
                'passes': rows}
    finally:
        shutil.rmtree(base, ignore_errors=True)
        if owned:
            lab.stop()
        else:
            lab._drop_client()


def simulated_day(containers, images, running, step):
    """Record writes and bytes over 288 passes (one day), in-process, with an injected clock.

    Churn model: a CronJob-like job every pass (one short container, new id, on one of 20 job
    images, seen running by the pass in which it starts, exited after, the last 12 kept), one new
    image pulled every 2 hours (never used), the ``running`` long-lived containers running all
    day (every image has one: its last use moves all day)."""
    sys.path.insert(0, _COLLECTIONS[0])
    from ansible_collections.nodemaint.image_gc.plugins.module_utils import _observe, _record, _record_merge
    from ansible_collections.nodemaint.image_gc.plugins.module_utils._common import CommandResult
    from ansible_collections.nodemaint.image_gc.plugins.module_utils._runtime import Runtime
    base = tempfile.mkdtemp(prefix='observe-day-')
    saved_step = _record_merge.LAST_USE_STEP
    _record_merge.LAST_USE_STEP = step
    written = {'writes': 0, 'bytes': 0}
    real_write = _record.write_atomic

    def counting(path, text, mode=0o644):
        written['writes'] += 1
        written['bytes'] += len(text.encode())
        return real_write(path, text, mode)
    _record.write_atomic = counting
    try:
        start = int(time.time()) // DAY * DAY
        state = {'now': start, 'jobs': []}

        base_ps, base_images = listing(containers, images, running, start)
        base_items = base_ps.rstrip()[:-1].rstrip().rstrip(']').rstrip()    # '{"containers": [ ... '
        base_image_list = json.loads(base_images)['images']

        class Runner:
            history = []

            def run(self, argv, timeout=None):
                pulled = (state['now'] - start) // 7200                 # one new image every 2 h
                if 'images' in argv:
                    text = json.dumps({'images': base_image_list + [
                        {'id': image_id(10 ** 4 + k), 'repoTags': ['x/new:%d' % k], 'repoDigests': [], 'size': '1000',
                         'pinned': False} for k in range(pulled)]})
                else:
                    jobs = json.loads(listing(0, images, 0, state['now'], state['jobs'])[0])['containers']
                    text = base_items + ''.join(',' + json.dumps(j) for j in jobs) + ']}'
                result = CommandResult(argv, 0, text, '')
                self.history.append(CommandResult(argv, 0, '', ''))    # counted, not kept (10 MB each)
                return result

        class Discovery:
            def resolve(self, **kwargs):
                runtime = Runtime()
                runtime.crictl, runtime.runtime_endpoint, runtime.timeout = ['crictl'], 'unix:///x', 60
                return runtime
        settings = {'crictl_path': None, 'ctr_path': None, 'runtime_endpoint': None, 'image_endpoint': None,
                    'containerd_address': None, 'timeout': 60, 'batch_size': 100, 'kubelet_root': None,
                    'image_record_path': os.path.join(base, 'images.json')}
        opts = {'textfile_path': None, 'report_path': os.path.join(base, 'last-run.json')}
        runner = Runner()
        for n in range(DAY // PASS):
            state['now'] = start + n * PASS
            # the job of the previous pass has exited; this pass's job runs
            state['jobs'] = [(10 ** 6 + m, images - 1 - (m % 20), m == n) for m in range(max(0, n - 12), n + 1)]
            event = _observe.observe(settings, opts, runner=runner, discovery=Discovery(),
                                     clock=lambda: state['now'] * 10 ** 9)
            assert event['status'] == 'ok', event
        return {'writes': written['writes'], 'bytes': written['bytes'],
                'record_bytes': os.path.getsize(settings['image_record_path'])}
    finally:
        _record_merge.LAST_USE_STEP = saved_step
        _record.write_atomic = real_write
        shutil.rmtree(base, ignore_errors=True)


_COLLECTIONS = []


def report(results, days, sizes, images, source):
    lines = ['<!-- observe-bench: generated by bench/speed/observe.py from here to the end marker -->',
             '## The observation pass (`bench/speed/observe.py`)', '',
             'Generated by `bench/speed/observe.py` (%s, results `%s`). Re-run as root: '
             '`python bench/speed/observe.py --sizes %s --images %d --lab DIR --doc docs/performance.md` '
             '(DIR: a lab kept by the speed bench\'s `--keep-lab`). '
             'The collection\'s real code and the real upstream crictl %s against a lab containerd %s; %d cores, '
             'shared; the load average at each pass\'s end is in its row.' % (
                 time.strftime('%Y-%m-%d %H:%M'), source, ','.join(str(s) for s in sizes), images,
                 results[0]['crictl_version'], results[0]['containerd'], os.cpu_count()), '',
             '### One pass (`node-image-gc observe` as its own process, real crictl; median of 3 by CPU)', '',
             'CPU is the pass\'s process and its children (crictl included). Memory: each process\'s own peak '
             '(VmHWM sampled every 20 ms) and the tree\'s (the sum of the processes alive at one sample), the most '
             'any of the 3 passes showed. "crictl alone": the same two listings (`crictl ps -a -o json`, '
             '`crictl images -o json`) run by themselves: CPU and wall the median of 3, max RSS the most of 3.', '',
             '| containers (states) | images | listing bytes | record | crictl calls | CPU ms (pass, crictl '
             'included) | crictl alone: CPU ms / wall s / max RSS MiB | wall s | peak tree MiB | largest processes '
             '(MiB) | record bytes | load at the end |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in results:
        for kind, p in r['passes'].items():
            row = '| %d (%s) | %d | %d | %s | %d (`%s`) | %d | %d / %.3f / %.1f | %.3f | %.1f | %s | %d | %s |'
            largest = ', '.join('%s %.1f' % kv for kv in list(p['by_process_mib'].items())[:3])
            lines.append(row % (
                r['containers'], ', '.join('%d %s' % (v, k) for k, v in r['states'].items()), r['images'],
                r['listing_bytes'], kind, p['crictl_calls'], ' '.join(p['verbs']), p['cpu_ms'],
                r['crictl_alone']['cpu_ms'], r['crictl_alone']['wall_s'], r['crictl_alone']['max_rss_mib'],
                p['wall_s'], p['peak_tree_mib'], largest,
                p['record_bytes'], '%.1f' % p['loadavg'][0]))
    lines += ['', '### A day: 288 passes, record writes and bytes written (simulated)', '',
              'The real `_observe.observe` and record code, 288 times in one process with a clock moved 5 minutes '
              'a pass, fed the listings of a churn model (synthetic JSON, no crictl): what is counted is what the '
              'code writes. Churn model: %s' % ' '.join(simulated_day.__doc__.split('Churn model:')[1].split()), '',
              '| containers (running) | images | last-use step | writes/day | bytes written/day | record bytes |',
              '|---|---|---|---|---|---|']
    for (containers, running, step), d in sorted(days.items()):
        lines.append('| %d (%d) | %d | %s | %d | %d | %d |' % (
            containers, running, images, '%d min' % (step // 60) if step else 'none (written at every pass)', d['writes'],
            d['bytes'], d['record_bytes']))
    lines += ['<!-- observe-bench: end -->']
    return '\n'.join(lines) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--sizes', default='100,1000,10000')
    parser.add_argument('--images', type=int, default=300)
    parser.add_argument('--lab', default=None, metavar='DIR',
                        help='a lab kept by bench/speed/run.py --keep-lab: used for the size whose containers it holds')
    parser.add_argument('--doc', help='replace the generated section of this markdown file')
    parser.add_argument('--json', help='write the figures here')
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error('run as root (it starts containerd)')
    sizes = [int(s) for s in args.sizes.split(',')]
    _COLLECTIONS.append(_collections_root())
    results = [real_pass(_COLLECTIONS[0], n, args.images, args.lab) for n in sizes]
    days = {}
    for step in (1800, 0):
        n = max(sizes)
        days[(n, n // 10, step)] = simulated_day(n, args.images, n // 10, step)
    text = report(results, days, sizes, args.images, os.path.relpath(args.json, ROOT) if args.json else 'not kept')
    print(text)
    if args.json:
        with open(args.json, 'w') as handle:
            days_list = [dict(d, containers=k[0], running=k[1], step=k[2]) for k, d in days.items()]
            json.dump({'passes': results, 'days': days_list}, handle, indent=1)
    if args.doc:
        with open(args.doc) as handle:
            doc = handle.read()
        begin, end = '<!-- observe-bench: generated', '<!-- observe-bench: end -->'
        if begin in doc:
            doc = doc[:doc.index(begin)] + text + doc[doc.index(end) + len(end) + 1:]
        else:
            doc = doc.rstrip('\n') + '\n\n' + text
        with open(args.doc, 'w') as handle:
            handle.write(doc)


if __name__ == '__main__':
    main()
