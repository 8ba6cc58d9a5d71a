"""Fleet benchmark: ansible-playbook nodemaint.image_gc.prune over real SSH to N loopback aliases.

    python bench/fleet/run.py [--sizes 1,8,32,64] [--modes check,real] [--labs 8] [--repeat 1]
        [--budget 570] [--json FILE] [--md FILE] [--doc docs/performance.md]
    python bench/fleet/run.py --synthetic 1000,10000 [--json FILE] [--md FILE]

Root only. Starts (and always stops) its own sshd on 127.0.0.1 (bench/fleet/sshd.py), a lab
containerd with the standard garbage scenario (tests/lab), an inventory of N aliases of
127.0.0.1 (one ssh control socket per alias, so one SSH connection per host as in a real fleet),
and runs the playbook with forks = N, pipelining off (``image_gc_pipelining=false``), as the
playbook defaults it, and forced on (``-e ansible_pipelining=true``, at N=32), side by side.

- ``--check`` runs: every alias plans against the one lab (per-host lock and record paths).
- real runs: one unmeasured run first removes the lab's garbage, so every measured real run does a
  whole real run (lock, listings, record written) and finds nothing: the controller's cost does
  not depend on what a node removes. ``--labs 8`` adds real runs at N=8 with one lab per host, each
  with garbage (rebuilt before every run): removal over SSH on eight containerds at once.
- measured: wall time, controller CPU (user+sys of the ansible-playbook process tree, from
  getrusage(RUSAGE_CHILDREN) around it, plus the ssh ControlPersist masters, which detach and are
  read from /proc before they are closed), peak RSS and PSS of the process tree (sampled every 100 ms).
- ``--synthetic``: the summary play alone (``--tags image_gc_summary``) on N synthetic hosts
  carrying a fake ``image_gc_report`` (tests/lab_tests/fleet_synthetic.py), with the report
  files; checked for correctness, minus a baseline run (``--tags none``: inventory and plays only).
Not a test: nothing here is collected by pytest.
"""

import argparse
import datetime
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# bench code imports as packages from the repository root (bench.policy.trace, tests.lab), never from this
# script's folder (python puts it first on sys.path, where policy/trace.py would shadow the standard library's)
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p) != HERE]

import tests.lab as L                                     # noqa: E402  (repo root on sys.path first)
from tests.lab_tests import ansible_play as AP          # noqa: E402
from tests.lab_tests import fleet_synthetic as FS       # noqa: E402
from bench.fleet import sshd                             # noqa: E402
from bench.fleet.report import render, write_doc         # noqa: E402
from bench.fleet.measure import measure, task_times      # noqa: E402

PLAYBOOK = 'nodemaint.image_gc.prune'
# the node's Python, named as a fleet inventory should (interpreter discovery costs one more SSH
# command per host, and here it would find root's pyenv shims)
NODE_PYTHON = '/usr/bin/python3'
PLAYBOOK_BIN = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')


class Fleet(object):
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix='igf.')       # short: ssh control sockets live under it
        self.sshd = sshd.Sshd(os.path.join(self.tmp, 'ssh'))
        self.labs = []
        self.runs = 0
        self.deadline = time.monotonic() + args.budget

    def start_lab(self, name):
        lab = L.Lab(os.path.join(self.tmp, name))
        self.labs.append(lab)
        lab.start()
        return lab

    def stop(self):
        sshd.close_masters(os.path.join(self.tmp, 'c'))
        problems = []
        for lab in self.labs:
            problems += lab.stop() or []
        left = self.sshd.stop()
        if left:
            problems.append('sshd processes still alive: %s' % left)
        left = sshd.pids_with(self.tmp)
        if left:
            sshd.kill_pids(left)
            problems.append('ended leftover processes %s' % left)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return problems

    def env(self, lab):
        env = AP.ansible_env(lab, {'ANSIBLE_HOST_KEY_CHECKING': 'False', 'ANSIBLE_LOCALHOST_WARNING': 'False'})
        os.makedirs(env['ANSIBLE_LOCAL_TEMP'], exist_ok=True)
        return env

    def inventory(self, n, labs, variant):
        hosts = {}
        for i in range(1, n + 1):
            lab = labs[(i - 1) % len(labs)]
            alias = 'h%03d' % i
            hosts[alias] = dict(host_vars(lab, os.path.join(self.tmp, 'state', alias)), ansible_host='127.0.0.1',
                                ansible_control_path=os.path.join(self.tmp, 'c', alias))
        allvars = {'ansible_port': self.sshd.port, 'ansible_user': 'root', 'ansible_python_interpreter': NODE_PYTHON,
                   'ansible_ssh_private_key_file': self.sshd.key,
                   'ansible_ssh_common_args': '-o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes'}
        if variant == 'off':
            allvars['image_gc_pipelining'] = False
        path = os.path.join(self.tmp, 'inventory-%d-%s.json' % (n, variant))
        with open(path, 'w') as handle:
            json.dump({'all': {'hosts': hosts, 'vars': allvars}}, handle)
        return path

    def run(self, n, labs, variant, check, extra=()):
        control = os.path.join(self.tmp, 'c')
        shutil.rmtree(control, ignore_errors=True)
        os.makedirs(control)
        argv = [PLAYBOOK_BIN, '-i', self.inventory(n, labs, variant), '-f', str(n), PLAYBOOK] + list(extra)
        if variant == 'on':
            argv += ['-e', 'ansible_pipelining=true']
        if check:
            argv.append('--check')
        res = measure(argv, self.env(labs[0]), timeout=self.args.timeout)
        res['ssh_master_cpu'] = sshd.close_masters(control)
        res['table'] = table_of(res, n)
        self.runs += 1
        return res

    def fits(self, need):
        return time.monotonic() + need < self.deadline


def host_vars(lab, state):
    os.makedirs(state, exist_ok=True)
    return {'image_gc_crictl_path': lab.crictl_bin, 'image_gc_ctr_path': lab.ctr_bin,
            'image_gc_runtime_endpoint': lab.endpoint, 'image_gc_lock_path': os.path.join(state, 'run.lock'),
            'image_gc_image_record_path': os.path.join(state, 'images.json'), 'image_gc_image_min_age': '0s',
            'image_gc_sandbox_min_age': '0s', 'image_gc_image_exclude': AP.EXCLUDE, 'image_gc_lock_wait': '2m'}


def table_of(res, n):
    """Per-host rows of the printed fleet table, or the reason it is not right."""
    try:
        title, rows, total = FS.parse_table(res['output'])
    except (AssertionError, ValueError, KeyError) as exc:
        return {'error': 'no fleet table: %s' % exc}
    bad = [h for h, r in rows.items() if r['failed'] != '-']
    return {'hosts': len(rows), 'failed': bad, 'containers': int(total['containers']), 'images': int(total['images']),
            'ok': res['rc'] == 0 and len(rows) == n and not bad}


def ssh_matrix(fleet, args, results):
    lab = fleet.start_lab('lab')
    L.scenario(lab, gap=0.5)
    results['containerd'] = lab.version_string
    for mode in args.modes:
        check = mode == 'check'
        if not check:          # clean the lab once: every measured real run then finds nothing
            first = fleet.run(1, [lab], 'default', False)
            results['cleanup'] = {'rc': first['rc'], 'table': first['table']}
        for n in args.sizes:
            # at 32 the default and forced-on runs twice each, in ABBA order (the machine's load drifts)
            variants = ['off', 'default', 'on', 'on', 'default'] if n == 32 else ['off', 'default']
            for rep in range(args.repeat):
                for variant in (variants if rep % 2 == 0 else list(reversed(variants))):
                    if not fleet.fits(estimate(results['runs'], n)):
                        results['skipped'].append('%s n=%d %s' % (mode, n, variant))
                        continue
                    res = fleet.run(n, [lab], variant, check)
                    results['runs'].append(row(res, n, mode, variant, 'one lab'))
                    print(json.dumps(results['runs'][-1]), flush=True)
    if args.labs and 'real' in args.modes:
        labs = [lab] + [fleet.start_lab('lab%d' % i) for i in range(1, args.labs)]
        for variant in ('off', 'default'):
            if not fleet.fits(120):
                results['skipped'].append('real n=%d %s, a lab per host' % (args.labs, variant))
                continue
            threads = [threading.Thread(target=rebuild, args=(x,)) for x in labs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            res = fleet.run(args.labs, labs, variant, False)
            results['runs'].append(row(res, args.labs, 'real', variant, 'a lab per host, with garbage'))
            print(json.dumps(results['runs'][-1]), flush=True)


def estimate(runs, n):
    """Seconds the next run at ``n`` hosts may take: the slowest so far at ``n``, else the slowest
    at the largest smaller size scaled linearly, else 4 s per host."""
    same = [r['wall'] for r in runs if r['n'] == n]
    if same:
        return 1.2 * max(same)
    below = [r for r in runs if r['n'] < n]
    if below:
        m = max(r['n'] for r in below)
        return max(r['wall'] for r in below if r['n'] == m) * n / m
    return 4.0 * n


def rebuild(lab):
    L.reset(lab)
    L.scenario(lab, gap=0.5)


def row(res, n, mode, variant, labs):
    keys = ('wall', 'rc', 'cpu', 'main_cpu', 'ssh_master_cpu', 'peak_rss', 'peak_pss', 'load', 'table')
    out = dict((k, res[k]) for k in keys)
    out.update(n=n, mode=mode, pipelining=variant, labs=labs)
    if res['rc'] != 0 or not res['table'].get('ok'):
        out['tail'] = res['output'][-1500:]
    return out


def synthetic(fleet, args, results):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=AP.collections_path(), ANSIBLE_NOCOLOR='1',
               ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_RETRY_FILES_ENABLED='False',
               ANSIBLE_LOCAL_TEMP=os.path.join(fleet.tmp, 'ansible-tmp'))
    for n in args.synthetic:
        inv = os.path.join(fleet.tmp, 'synthetic-%d.json' % n)
        data = FS.write_inventory(inv, n)
        base = measure([PLAYBOOK_BIN, '-i', inv, PLAYBOOK, '--tags', 'none'], env, args.timeout)
        report_dir = os.path.join(fleet.tmp, 'report-%d' % n)
        log = os.path.join(fleet.tmp, 'ansible-%d.log' % n)
        res = measure([PLAYBOOK_BIN, '-i', inv, PLAYBOOK, '--tags', 'image_gc_summary',
                       '-e', 'image_gc_report_dir=%s' % report_dir], dict(env, ANSIBLE_LOG_PATH=log), args.timeout)
        entry = {'n': n, 'baseline_wall': base['wall'], 'baseline_cpu': base['cpu'], 'baseline_rss': base['peak_rss'],
                 'wall': res['wall'], 'cpu': res['cpu'], 'peak_rss': res['peak_rss'], 'peak_pss': res['peak_pss'],
                 'rc': res['rc'], 'baseline_pss': base['peak_pss'], 'main_cpu': res['main_cpu'],
                 'load': res['load'], 'tasks': task_times(log)}
        try:
            entry['checked'] = FS.check(res['output'], data, report_dir)
            entry['report_bytes'] = dict((f, os.path.getsize(os.path.join(report_dir, f)))
                                         for f in ('report.json', 'report.md'))
        except (AssertionError, ValueError, KeyError, OSError) as exc:
            entry['error'] = repr(exc)[:500]
            entry['tail'] = res['output'][-1500:]
        results['synthetic'].append(entry)
        print(json.dumps(entry), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    p.add_argument('--sizes', default='1,8,32,64')
    p.add_argument('--modes', default='check,real')
    p.add_argument('--labs', type=int, default=8, help='real runs at this N with a lab per host (0: none)')
    p.add_argument('--repeat', type=int, default=1, help='runs per (N, mode, pipelining); alternating order')
    p.add_argument('--synthetic', default='', help='comma list of host counts: measure the summary play only')
    p.add_argument('--budget', type=float, default=570, help='seconds; runs that would not fit are skipped')
    p.add_argument('--timeout', type=float, default=1200, help='seconds per ansible-playbook run')
    p.add_argument('--json', default=None)
    p.add_argument('--md', default=None, help='write the Markdown tables here')
    p.add_argument('--doc', default=None, help='replace the generated part of the fleet section of this doc')
    args = p.parse_args(argv)
    args.sizes = [int(x) for x in args.sizes.split(',') if x]
    args.modes = [x for x in args.modes.split(',') if x]
    args.synthetic = [int(x) for x in args.synthetic.split(',') if x]
    if os.geteuid() != 0:
        p.error('run as root (it starts containerd and sshd)')
    started = time.monotonic()
    results = {'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
               'commit': sshd.sh(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD']).stdout.strip(),
               'argv': sys.argv[1:] if argv is None else argv, 'nproc': os.cpu_count(),
               'load_start': os.getloadavg(), 'runs': [], 'synthetic': [], 'skipped': [], 'problems': []}
    fleet = Fleet(args)

    def on_signal(signum, frame):
        raise KeyboardInterrupt('signal %d' % signum)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if args.synthetic:
            synthetic(fleet, args, results)
        else:
            missing = sshd.prerequisites()
            if missing:
                print('cannot run: %s' % missing, file=sys.stderr)
                return 2
            fleet.sshd.start()
            ssh_matrix(fleet, args, results)
    except (KeyboardInterrupt, RuntimeError) as exc:
        results['problems'].append('stopped: %s' % exc)
    finally:
        results['problems'] += fleet.stop()
        results['seconds'] = time.monotonic() - started
        results['load_end'] = os.getloadavg()
    text = render(results)
    print(text)
    if args.json:
        with open(args.json, 'w') as handle:
            json.dump(results, handle, indent=1, default=str)
    if args.md:
        with open(args.md, 'w') as handle:
            handle.write(text)
    if args.doc:
        write_doc(args.doc, text, synthetic=bool(args.synthetic))
    bad = results['problems'] or any(r['rc'] != 0 or not r['table'].get('ok') for r in results['runs']) \
        or any('error' in s for s in results['synthetic'])
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
