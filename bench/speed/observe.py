"""The observation pass's cost (issue 26): crictl calls, CPU and memory per pass, record bytes
written per day, on synthetic nodes of up to 10,000 containers.

Two measurements, both of the collection's real code:

1. **One pass as the timer runs it**: ``node-image-gc observe`` as its own process (the runner's
   ``main``), against a stand-in crictl that prints a kubelet-shaped listing of N containers and M
   images (what ``crictl ps -a -o json`` / ``crictl images -o json`` print, labels and annotations
   as the kubelet sets them) and logs each call. CPU is the pass's process and its children (user +
   sys, from wait4), max RSS from the same; the stand-in's own cost (a ``cat`` of a file) is
   measured alone and shown apart. The real crictl's cost to fetch and print the listing is NOT in
   these figures: it is containerd's and crictl's, the same for any client (one process either way).
2. **A simulated day**: 288 passes (every 5 minutes) through ``_observe.observe`` in-process with
   an injected clock and a churn model (below), counting record writes and bytes written, with the
   30-minute last-use step and without it (every change written).

Usage: ``python bench/speed/observe.py [--sizes 100,1000,10000] [--images 300] [--doc docs/performance.md]``
(any python3 with this checkout; no root, no containerd).
"""

import argparse
import json
import os
import resource
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


def stand_in(base, ps_text, images_text):
    """A crictl stand-in: prints the prepared listing for ps/images, logs every call."""
    for name, text in (('listing-ps.json', ps_text), ('listing-images.json', images_text)):
        with open(os.path.join(base, name), 'w') as handle:
            handle.write(text)
    path = os.path.join(base, 'crictl')
    with open(path, 'w') as handle:
        handle.write('#!/bin/sh\necho "$*" >> %s/calls.log\nfor a; do case "$a" in ps) exec cat %s/listing-ps.json;; '
                     'images) exec cat %s/listing-images.json;; esac; done\necho "unexpected: $*" >&2; exit 1\n'
                     % (base, base, base))
    os.chmod(path, 0o755)
    return path


def timed(argv, env=None):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc, wall, cpu, after.ru_maxrss * 1024


RUNNER = ('import sys; sys.path.insert(0, sys.argv[1]); '
          'from ansible_collections.nodemaint.image_gc.plugins.module_utils._runner import main; '
          'sys.exit(main(sys.argv[2:]))')


def one_pass(collections, containers, images, running, repeat=3):
    """Median figures of ``repeat`` passes from no record (written) and of as many with nothing
    new (record unchanged)."""
    base = tempfile.mkdtemp(prefix='observe-pass-')
    try:
        ps_text, images_text = listing(containers, images, running, int(time.time()))
        crictl = stand_in(base, ps_text, images_text)
        sock = os.path.join(base, 'containerd.sock')
        import socket
        server = socket.socket(socket.AF_UNIX)
        server.bind(sock)
        config = os.path.join(base, 'config.json')
        record = os.path.join(base, 'images.json')
        with open(config, 'w') as handle:
            json.dump({'crictl_path': crictl, 'runtime_endpoint': 'unix://' + sock, 'image_record_path': record,
                       'report_path': os.path.join(base, 'last-run.json'),
                       'lock_path': os.path.join(base, 'lock')}, handle)
        stub = [timed([crictl, 'ps'])[2] + timed([crictl, 'images'])[2] for dummy in range(repeat)]
        rows = {}
        for kind in ('written', 'unchanged'):
            results = []
            for dummy in range(repeat):
                if kind == 'written' and os.path.exists(record):
                    os.remove(record)
                open(os.path.join(base, 'calls.log'), 'w').close()
                proc, wall, cpu, rss = timed([sys.executable, '-c', RUNNER, collections, '--config', config, 'observe'])
                event = json.loads(proc.stdout)
                assert proc.returncode == 0 and event['record'] == kind, (proc.stdout, proc.stderr)
                with open(os.path.join(base, 'calls.log')) as handle:
                    calls = [('ps' if ' ps ' in ' %s ' % line else 'images' if ' images ' in ' %s ' % line else line.strip())
                             for line in handle if line.strip()]
                results.append((wall, cpu, rss, calls, os.path.getsize(record)))
            results.sort(key=lambda r: r[1])
            wall, cpu, rss, calls, size = results[len(results) // 2]
            rows[kind] = {'wall_s': round(wall, 3), 'cpu_ms': round(cpu * 1000), 'max_rss_mib': round(rss / 2 ** 20, 1),
                          'crictl_calls': len(calls), 'verbs': calls, 'record_bytes': size}
        server.close()
        stub.sort()
        return {'containers': containers, 'images': images, 'running': running, 'listing_bytes': len(ps_text),
                'stand_in_cpu_ms': round(stub[len(stub) // 2] * 1000), 'passes': rows}
    finally:
        shutil.rmtree(base, ignore_errors=True)


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


def report(results, days, sizes, images):
    lines = ['<!-- observe-bench: generated by bench/speed/observe.py from here to the end marker -->',
             '## The observation pass (`bench/speed/observe.py`)', '',
             'Generated by `bench/speed/observe.py` (%s). Re-run: `python bench/speed/observe.py --sizes %s --images %d '
             '--doc docs/performance.md`. Synthetic listings, the collection\'s real code (see the script\'s '
             'docstring); %d cores, load average at start %s.' % (
                 time.strftime('%Y-%m-%d %H:%M'), ','.join(str(s) for s in sizes), images, os.cpu_count(),
                 ', '.join('%.2f' % v for v in os.getloadavg())), '',
             '### One pass (`node-image-gc observe` as its own process; median of 3)', '',
             '| containers (running) | images | listing bytes | record | crictl calls | CPU ms (pass) | '
             'of which the stand-in crictl | wall s | max RSS MiB | record bytes |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for r in results:
        for kind, p in r['passes'].items():
            lines.append('| %d (%d) | %d | %d | %s | %d (`%s`) | %d | %d | %.3f | %.1f | %d |' % (
                r['containers'], r['running'], r['images'], r['listing_bytes'], kind, p['crictl_calls'],
                ' '.join(p['verbs']), p['cpu_ms'], r['stand_in_cpu_ms'], p['wall_s'], p['max_rss_mib'],
                p['record_bytes']))
    lines += ['', '### A day: 288 passes, record writes and bytes written', '',
              'Churn model: %s' % ' '.join(simulated_day.__doc__.split('Churn model:')[1].split()), '',
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
    parser.add_argument('--doc', help='replace the generated section of this markdown file')
    parser.add_argument('--json', help='write the figures here')
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(',')]
    _COLLECTIONS.append(_collections_root())
    results = [one_pass(_COLLECTIONS[0], n, args.images, n // 10) for n in sizes]
    days = {}
    for step in (1800, 0):
        n = max(sizes)
        days[(n, n // 10, step)] = simulated_day(n, args.images, n // 10, step)
    text = report(results, days, sizes, args.images)
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
