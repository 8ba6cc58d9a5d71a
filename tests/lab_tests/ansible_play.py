"""Run the collection's modules and playbooks through ansible-playbook on localhost.

The collection is the working tree: when this checkout does not already sit at
``.../ansible_collections/nodemaint/image_gc`` (as in scripts/test.sh's build tree), a temp dir
with that layout, symlinked to the checkout, is put on ANSIBLE_COLLECTIONS_PATH.
"""

import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_COLLECTIONS = []
# The lab's image that the tests exclude by pattern (tests.lab.scenario: docker.io/feas/keep:1).
EXCLUDE = ['docker.io/feas/keep:*']


def settled_content(lab, quiet=2.0, timeout=20.0):
    """The content store's digests once containerd's garbage collector has run and then left it
    unchanged for ``quiet`` seconds. Building a scenario leaves collectable blobs behind, and
    containerd collects them only when something schedules a collection (a deletion, enough
    mutations: a run's own ``ctr`` lease can be that), so quiet alone is no proof: a baseline
    taken before that collection is not one. Deleting a lease with ``--sync`` runs it now."""
    import time
    lease = 'settle-%d-%d' % (os.getpid(), time.monotonic_ns())
    lab.ctr('-n', 'k8s.io', 'leases', 'create', '--id', lease)
    lab.ctr('-n', 'k8s.io', 'leases', 'delete', '--sync', lease)
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while True:
        now = set(lab.ctr('-n', 'k8s.io', 'content', 'ls', '-q').stdout.split())
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet or time.monotonic() >= deadline:
            return now
        time.sleep(0.25)


def runtime_state(lab, with_content=False):
    """What the runtime holds now, listed through CRI (the real crictl) and ctr:
    ``containers`` and ``pods`` (id -> state), ``images`` (ids) and, if asked, ``content`` (digests)."""
    def listing(*args):
        proc = lab.crictl(*args)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)
    state = {
        'containers': dict((c['id'], c['state']) for c in listing('ps', '-a', '-o', 'json')['containers']),
        'pods': dict((p['id'], p['state']) for p in listing('pods', '-o', 'json')['items']),
        'images': set(i['id'] for i in listing('images', '-o', 'json')['images']),
    }
    if with_content:
        state['content'] = settled_content(lab)
    return state


def collections_path():
    if not _COLLECTIONS:
        parts = ROOT.split(os.sep)
        if parts[-3:-2] == ['ansible_collections'] and parts[-2:] == ['nodemaint', 'image_gc']:
            _COLLECTIONS.append(os.sep.join(parts[:-3]))
        else:
            tmp = tempfile.mkdtemp(prefix='image-gc-collections-')
            os.makedirs(os.path.join(tmp, 'ansible_collections', 'nodemaint'))
            os.symlink(ROOT, os.path.join(tmp, 'ansible_collections', 'nodemaint', 'image_gc'))
            _COLLECTIONS.append(tmp)
    return _COLLECTIONS[0]


def lab_kubelet_root(lab):
    """The lab's kubelet root (``<base>/kubelet``, with its ``pods/``, made here), where the tests
    record the pods an emulated kubelet tracks (tests.lab.pods.track_pod): none unless a test says so.
    The lab runs no kubelet, so no root would be found live (every pod would count as live): the
    tests that build pods straight through the CRI name this root, as an operator sets kubelet_root."""
    os.makedirs(os.path.join(lab.kubelet_root, 'pods'), exist_ok=True)
    return lab.kubelet_root


def runtime_args(lab, **extra):
    """Module options that point at the lab (the real crictl, the lab's ctr (none on CRI-O) and socket,
    its kubelet root)."""
    args = {
        'crictl_path': lab.crictl_bin,
        'runtime_endpoint': lab.endpoint,
        'kubelet_root': lab_kubelet_root(lab),
    }
    if lab.ctr_bin:
        args['ctr_path'] = lab.ctr_bin
    args.update(extra)
    return args


def lock_args(lab):
    """The run lock, private to the lab (never the machine's /run)."""
    return {'lock_path': os.path.join(lab.base, 'run.lock'), 'lock_wait': '30s'}


def state_args(lab):
    """The lock and the last-use record (modules that list containers), private to the lab."""
    return dict(lock_args(lab), image_record_path=os.path.join(lab.base, 'images.json'))


# The lab's images were imported seconds ago and no run has seen a pod use them: image_min_age
# (default 10m) and image_unused_for (the default keeps an image used, or first seen, within the last
# 21 days) would keep every one. Tests about which unused images go pass this policy - every unused
# image, however new - to the modules that plan images; tests of the guards and of the default policy do not.
FRESH_IMAGES = {'image_min_age': '0s', 'image_unused_for': '0s'}


def without_record(args):
    """``args`` for a module that keeps no last-use record (ctr_content_prune)."""
    return dict((k, v) for k, v in args.items() if k != 'image_record_path')


def ansible_env(lab, extra=None):
    env = lab.env()
    env.update({
        'ANSIBLE_COLLECTIONS_PATH': collections_path(),
        'ANSIBLE_HOST_KEY_CHECKING': 'False',
        'ANSIBLE_RETRY_FILES_ENABLED': 'False',
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_LOCAL_TEMP': os.path.join(lab.base, 'ansible-tmp'),
        'PATH': os.path.dirname(sys.executable) + os.pathsep + env['PATH'],
    })
    # The modules must find everything through their options, not the lab's environment.
    for key in ('CONTAINER_RUNTIME_ENDPOINT', 'IMAGE_SERVICE_ENDPOINT', 'CONTAINERD_ADDRESS'):
        env.pop(key, None)
    env.update(extra or {})
    return env


class PlayResult(object):
    def __init__(self, proc, results):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.results = results

    def __getitem__(self, name):
        return self.results[name]

    def __repr__(self):
        return 'PlayResult(rc=%s)\n%s\n%s' % (self.rc, self.stdout[-4000:], self.stderr[-2000:])


def run_tasks(lab, tasks, check=False, extra_args=(), env=None, timeout=600):
    """Run ``tasks`` (a list of (name, module, args[, task extras])) in one play on localhost.

    Each task registers its result; all results are written to a JSON file (also in check mode)
    and returned as ``PlayResult.results[name]``. Failing tasks do not stop the play.
    """
    work = tempfile.mkdtemp(prefix='play-', dir=lab.base)
    out = os.path.join(work, 'results.json')
    play_tasks = []
    names = []
    for entry in tasks:
        name, module, args = entry[:3]
        extras = entry[3] if len(entry) > 3 else {}
        reg = 'r_%d' % len(names)
        names.append((name, reg))
        task = {'name': name, module: args, 'register': reg, 'ignore_errors': True}
        task.update(extras)
        play_tasks.append(task)
    play_tasks.append({
        'name': 'Save the results',
        'ansible.builtin.copy': {
            'dest': out,
            'content': '{{ %s | to_json }}' % ('{' + ', '.join('%s: %s' % (json.dumps(n), r) for n, r in names) + '}'),
            'mode': '0600',
        },
        'check_mode': False,
    })
    play = [{'name': 'test', 'hosts': 'localhost', 'gather_facts': False, 'tasks': play_tasks}]
    path = os.path.join(work, 'play.yml')
    with open(path, 'w') as handle:
        json.dump(play, handle, indent=1)      # JSON is YAML
    argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
            '-e', 'ansible_python_interpreter=%s' % sys.executable, path]
    if check:
        argv.append('--check')
    argv += list(extra_args)
    proc = subprocess.run(argv, capture_output=True, text=True, env=ansible_env(lab, env), timeout=timeout, check=False)
    results = {}
    if os.path.exists(out):
        with open(out) as handle:
            results = json.load(handle)
    return PlayResult(proc, results)


def run_playbook(lab, playbook, inventory_vars, check=False, extra_vars=None, timeout=900):
    """Run one of the collection's playbooks (``nodemaint.image_gc.prune``) against localhost."""
    work = tempfile.mkdtemp(prefix='pb-', dir=lab.base)
    inventory = os.path.join(work, 'inventory.json')
    with open(inventory, 'w') as handle:
        json.dump({'all': {'hosts': {'localhost': dict(
            {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable}, **inventory_vars)}}},
            handle)
    argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', inventory, playbook]
    if extra_vars:
        argv += ['-e', json.dumps(extra_vars)]
    if check:
        argv.append('--check')
    return subprocess.run(argv, capture_output=True, text=True, env=ansible_env(lab), timeout=timeout, check=False)
