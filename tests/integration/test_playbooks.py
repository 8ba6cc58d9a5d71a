"""The collection's playbooks and the demo, end to end against the real containerd of the lab.

- ``nodemaint.image_gc.prune``: --check changes nothing and reports exactly what the real run then
  removes; the real run leaves only what must stay; a second run changes nothing.
- a failing phase is reported and the other phases still run.
- ``scripts/demo.sh``: runs from scratch to a clean exit and shows less garbage after than before.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.integration.ansible_play import EXCLUDE, ROOT, ansible_env, run_playbook, runtime_state
from tests.integration import fleet_synthetic
import tests.lab as labpkg
from tests.lab.lab import pids_matching

PLAYBOOK = 'nodemaint.image_gc.prune'
COUNTS = ('containers', 'sandboxes', 'images', 'blobs', 'freed')


def state(lab):
    return runtime_state(lab, with_content=True)


def task_output(stdout, task):
    """The JSON a debug task printed (``ok: [host] => {...}``) after ``TASK [task]``."""
    start = stdout.index('TASK [%s]' % task)
    brace = stdout.index('=> {', start) + 3
    value = json.JSONDecoder().raw_decode(stdout[brace:])[0]
    return value


def fleet(stdout):
    """The printed fleet table ('Report the fleet') read back: the TOTAL row's counts and freed,
    the hosts with a result, the hosts without one, the hosts with failed phases, and the rows."""
    title, rows, total = fleet_synthetic.parse_table(stdout)
    out = dict((k, int(total[k])) for k in ('containers', 'sandboxes', 'images', 'blobs'))
    failed = sorted(h for h, r in rows.items() if 'HOST FAILED' in r['failed'])
    out.update(freed=total['freed'], title=title, rows=rows, hosts=len(rows) - len(failed), hosts_failed=failed,
               hosts_with_failed_phases=dict((h, r['failed'].split(',')) for h, r in rows.items()
                                             if r['failed'] != '-' and h not in failed))
    return out


def recap(stdout, host='localhost'):
    match = re.search(r'^%s\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)' % re.escape(host),
                      stdout, re.M)
    assert match, stdout[-2000:]
    return dict(zip(('ok', 'changed', 'unreachable', 'failed'), (int(g) for g in match.groups())))


def inventory_vars(lab, **extra):
    values = {
        'image_gc_crictl_path': lab.crictl_bin,
        'image_gc_ctr_path': lab.ctr_bin,
        'image_gc_runtime_endpoint': lab.endpoint,
        'image_gc_lock_path': os.path.join(lab.base, 'run.lock'),
        'image_gc_image_record_path': os.path.join(lab.base, 'images.json'),
        'image_gc_image_min_age': '0s',          # the lab's images are seconds old
        'image_gc_lock_wait': '30s',
    }
    values.update(extra)
    return values


GAP = 40          # as scripts/demo.sh: room for a slow (loaded) machine


def sandbox_min_age(scenario, margin=GAP - 4):
    """A min_age (as test_modules._min_age_keeping_young) that the young NotReady sandboxes stay
    under for ``margin`` seconds from now -- phase 2 of the playbook lists them some seconds after
    the start (10-30 s on a busy 2-core machine) -- and that the old ones, created ``GAP`` seconds
    earlier, always exceed."""
    young_age = (time.time_ns() - scenario['young_min_created_ns']) / 1e9
    return '%ds' % (int(young_age) + margin)


# image_gc_pod_aware: false - the standard scenario's exit1 (exited in the Ready pod feas-exit) is garbage only
# in the blunt mode; the kubelet's rules (the default) keep it: tests/integration/test_pod_safety.py
BLUNT = {'image_gc_pod_aware': False}


def extra_vars(scenario):
    return dict(BLUNT, image_gc_image_exclude=EXCLUDE, image_gc_sandbox_min_age=sandbox_min_age(scenario))


@pytest.fixture
def gapped_scenario(lab):
    labpkg.reset(lab)
    return labpkg.scenario(lab, gap=GAP)


def test_prune_check_then_real_then_idempotent(lab, gapped_scenario):
    sc = gapped_scenario
    exp, imgs = sc['expected'], sc['images']
    before = state(lab)

    check = run_playbook(lab, PLAYBOOK, inventory_vars(lab), check=True, extra_vars=extra_vars(sc))
    assert check.returncode == 0, check.stdout[-4000:] + check.stderr[-2000:]
    assert state(lab) == before, '--check changed the runtime'
    planned = fleet(check.stdout)
    node_check = task_output(check.stdout, 'Report this node')['msg']
    assert node_check.startswith('would free '), node_check
    assert '(check mode: nothing removed)' in node_check, node_check
    assert planned['hosts'] == 1 and planned['hosts_failed'] == [] and planned['hosts_with_failed_phases'] == {}
    assert planned['containers'] == len(exp['exited_container_ids'])
    assert planned['sandboxes'] == len(exp['notready_old_pod_ids'])
    assert planned['images'] == 5 and planned['blobs'] > 0 and planned['freed'] != '0.00 Bytes', planned
    assert planned['title'].startswith('Fleet dry run (would remove): 1 host(s), 0 failed, 0 with failed phases;')

    real = run_playbook(lab, PLAYBOOK, inventory_vars(lab), extra_vars=extra_vars(sc))
    assert real.returncode == 0, real.stdout[-4000:] + real.stderr[-2000:]
    done = fleet(real.stdout)
    node_real = task_output(real.stdout, 'Report this node')['msg']
    assert node_real.startswith('freed '), node_real
    # --check reported exactly what the real run removed, per phase
    assert dict((k, planned[k]) for k in COUNTS) == dict((k, done[k]) for k in COUNTS), (planned, done)
    assert node_check.split(';')[0].replace('would free', 'freed') == node_real.split(';')[0]
    assert done['hosts_with_failed_phases'] == {} and recap(real.stdout)['failed'] == 0

    after = state(lab)
    # the garbage is gone ...
    assert not set(exp['exited_container_ids']) & set(after['containers'])
    assert not set(exp['notready_old_pod_ids']) & set(after['pods'])
    for key in ('unused3', 'busybox1_old', 'busybox1', 'exitonly', 'notready'):
        assert imgs[key]['id'] not in after['images'], key
    assert len(before['images']) - len(after['images']) == done['images']
    assert len(after['content']) < len(before['content'])
    # ... what must stay stays
    assert after['containers'] == dict((i, 'CONTAINER_RUNNING') for i in exp['running_container_ids'])
    for pod in exp['ready_pod_ids']:
        assert after['pods'][pod] == 'SANDBOX_READY'
    for pod in exp['notready_young_pod_ids']:
        assert after['pods'][pod] == 'SANDBOX_NOTREADY', 'a young NotReady sandbox was removed'
    for key in ('busybox2', 'keep', 'pause'):
        assert imgs[key]['id'] in after['images'], key

    again = run_playbook(lab, PLAYBOOK, inventory_vars(lab), extra_vars=extra_vars(sc))
    assert again.returncode == 0, again.stdout[-4000:]
    assert recap(again.stdout)['changed'] == 0, again.stdout[-3000:]
    second = fleet(again.stdout)
    assert all(second[k] == 0 for k in COUNTS[:4]) and second['freed'] == '0.00 Bytes', second
    assert state(lab) == after


def test_prune_failing_phase_is_reported_and_the_others_run(lab, scenario):
    """ctr talks to a socket that is not there: the content phase fails, phases 1-3 still remove
    their garbage, and the fleet summary names the host and the phase."""
    exp, imgs = scenario['expected'], scenario['images']
    before = state(lab)
    missing = os.path.join(lab.base, 'no-such', 'containerd.sock')
    proc = run_playbook(lab, PLAYBOOK, inventory_vars(lab, image_gc_containerd_address=missing),
                        extra_vars=dict(BLUNT, image_gc_image_exclude=EXCLUDE, image_gc_sandbox_min_age='0s'))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    out = proc.stdout
    summary = fleet(out)
    assert summary['hosts_with_failed_phases'] == {'localhost': ['content']}, summary
    assert summary['hosts_failed'] == []
    assert summary['containers'] == 2 and summary['sandboxes'] == 4 and summary['images'] == 5, summary
    assert summary['blobs'] == 0
    node = task_output(out, 'Report this node')['msg']
    assert 'FAILED phases: content' in node
    assert missing in node and 'containerd_address' in node, node
    assert recap(out)['failed'] == 0
    after = state(lab)
    assert not set(exp['exited_container_ids']) & set(after['containers'])
    assert not set(exp['notready_pod_ids']) & set(after['pods'])
    for key in ('busybox2', 'keep', 'pause'):
        assert imgs[key]['id'] in after['images'], key
    assert imgs['unused3']['id'] not in after['images']
    # the content store was left alone: only what containerd collected with the images went
    assert after['content'] <= before['content']


def test_prune_missing_ctr_fails_only_the_content_phase(lab, scenario):
    exp = scenario['expected']
    missing = os.path.join(lab.base, 'no-such-dir', 'ctr')
    proc = run_playbook(lab, PLAYBOOK, inventory_vars(lab, image_gc_ctr_path=missing),
                        extra_vars=dict(BLUNT, image_gc_image_exclude=EXCLUDE, image_gc_sandbox_min_age='0s'))
    assert recap(proc.stdout)['failed'] == 0, proc.stdout[-2500:]
    summary = fleet(proc.stdout)
    assert summary['hosts_failed'] == [], summary
    assert summary['hosts_with_failed_phases'] == {'localhost': ['content']}, summary
    assert summary['containers'] == 2 and summary['images'] == 5, summary
    after = state(lab)
    assert not set(exp['exited_container_ids']) & set(after['containers'])


# --------------------------------------------------------------------------------------------
# the demo

def _demo_pids():
    return set(p for p in pids_matching('/tmp/nodemaint-demo.'))


def _demo_dirs():
    return set(n for n in os.listdir('/tmp') if n.startswith('nodemaint-demo.'))


def _section(out, title):
    start = out.index('=== %s ===' % title)
    end = out.find('\n=== ', start + 1)
    return out[start:end if end >= 0 else len(out)]


def _images(section):
    """(repository, tag) rows of the ``crictl images`` table in a section."""
    lines = section.splitlines()
    head = [i for i, line in enumerate(lines) if line.startswith('IMAGE ') and 'IMAGE ID' in line][0]
    rows = []
    for line in lines[head + 1:]:
        if not line.strip():
            break
        rows.append(tuple(line.split()[:2]))
    return rows


def _blobs(section):
    return int(re.search(r'content store: (\d+) blobs', section).group(1))


_UNITS = {'Bytes': 1, 'B': 1, 'KB': 1024, 'MB': 1024 ** 2, 'GB': 1024 ** 3, 'TB': 1024 ** 4}


def _bytes(text):
    number, unit = text.split()
    return float(number) * _UNITS[unit]


def test_demo_runs_clean_and_shows_less_after(lab):
    """scripts/demo.sh end to end (its own lab; the session lab only guarantees the prerequisites)."""
    env = dict(os.environ, NO_SETUP_APT='1')   # NODEMAINT_CACHE_DIR passes through: the venv is reused
    for key in ('CONTAINER_RUNTIME_ENDPOINT', 'IMAGE_SERVICE_ENDPOINT', 'CONTAINERD_ADDRESS',
                'ANSIBLE_COLLECTIONS_PATH', 'DEMO_KEEP_LAB', 'VIRTUAL_ENV'):
        env.pop(key, None)
    # as from a fresh shell: no virtualenv's bin on PATH (the demo picks its Python from PATH, and
    # that choice is part of the key of the tools venv it reuses)
    env['PATH'] = os.pathsep.join(d for d in env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin').split(os.pathsep)
                                  if d and not os.path.exists(os.path.join(d, 'activate')))
    pids_before, dirs_before = _demo_pids(), _demo_dirs()
    choice = '%d.%d' % lab.version[:2]  # the session lab's containerd: the demo runs on the same one
    proc = subprocess.run(['bash', os.path.join(ROOT, 'scripts', 'demo.sh'), '--containerd', choice], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200, check=False)
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-3000:]
    assert 'Starting a lab node: containerd %s' % lab.version_string in out, out[:2000]

    before, after = _section(out, 'Before'), _section(out, 'After')
    assert len(_images(before)) > len(_images(after)) > 0, (before, after)
    assert ('docker.io/feas/busybox', '2') in _images(after), after
    assert ('docker.io/feas/keep', '1') in _images(after) and ('docker.io/feas/pause', '1') in _images(after)
    assert _blobs(before) > _blobs(after)
    real = _section(out, 'Real run: ansible-playbook nodemaint.image_gc.prune')
    report = task_output(real, 'Report this node')['msg']
    # freed bytes, and the image filesystem's figure (the demo's lab has containerd's root on a tmpfs
    # of its own) changing with them
    match = re.search(r'^freed ([\d.]+ \w+) \(\d+ containers, \d+ sandboxes, (\d+) images, (\d+) blobs\); '
                      r'(\S+) ([\d.]+)% -> ([\d.]+)%; images (\d+) -> (\d+)', report)
    assert match, report
    assert _bytes(match.group(1)) > 0 and int(match.group(2)) > 0 and int(match.group(3)) > 0, report
    assert match.group(4).endswith('/root'), report
    assert float(match.group(5)) > float(match.group(6)), report
    assert int(match.group(7)) > int(match.group(8)) == len(_images(after))
    table = fleet(real)
    assert table['freed'] != '0.00 Bytes' and table['hosts_with_failed_phases'] == {}
    # the young NotReady sandboxes stay, the old ones go
    assert table['sandboxes'] == 2 and after.count('NotReady') == 2
    assert re.search(r'changed=0\s', _section(out, 'Second run (nothing left to remove: changed=0)'))

    # nothing left behind: no containerd or shim of the demo's lab, its directory removed
    left = [p for p in _demo_pids() - pids_before if os.path.exists('/proc/%d' % p)]
    assert left == [], ['%d: %s' % (p, open('/proc/%d/cmdline' % p).read().replace('\0', ' ')) for p in left]
    assert _demo_dirs() - dirs_before == set()


# --------------------------------------------------------------------------------------------
# one module per node, the lock held for the whole run, the report file

def test_prune_playbook_runs_one_module_task_per_node():
    """Statically: the only task of the collection's modules in the playbook is one prune task,
    and it relays nothing between tasks."""
    import yaml
    with open(os.path.join(ROOT, 'playbooks', 'prune.yml')) as handle:
        plays = yaml.safe_load(handle)

    def tasks(items):
        for task in items:
            yield task
            yield from tasks(task.get('block', []))
    modules = [key for play in plays for task in tasks(play.get('tasks', [])) for key in task
               if key.startswith('nodemaint.image_gc.')]
    assert modules == ['nodemaint.image_gc.prune']
    with open(os.path.join(ROOT, 'playbooks', 'prune.yml')) as handle:
        assert 'assume_removed' not in handle.read()


HOLDER = r'''
import json, os, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.nodemaint.image_gc.plugins.module_utils._common import RunLock
lock = RunLock(sys.argv[2], 5)
assert lock.acquire()
print('held', flush=True)
time.sleep(float(sys.argv[3]))
# as a timer run would: remove containers (HOLDER_REMOVE, comma-separated ids) before the release
for cid in filter(None, os.environ.get('HOLDER_REMOVE', '').split(',')):
    subprocess.run(sys.argv[4:] + ['rm', cid], capture_output=True, text=True, check=True)
# what the runtime holds at the very end of the hold, right before the release
ps = subprocess.run(sys.argv[4:] + ['ps', '-a', '-q'], capture_output=True, text=True, check=True).stdout.split()
with open(sys.argv[2] + '.seen', 'w') as handle:
    json.dump({'containers': ps, 'released': time.time()}, handle)
lock.release()
'''


def _hold_lock(lab, seconds, remove=()):
    from tests.integration.ansible_play import collections_path
    lock = os.path.join(lab.base, 'run.lock')
    crictl = [lab.crictl_bin, '--runtime-endpoint', lab.endpoint]
    holder = subprocess.Popen([sys.executable, '-c', HOLDER, collections_path(), lock, str(seconds)] + crictl,
                              stdout=subprocess.PIPE, text=True, env=dict(lab.env(), HOLDER_REMOVE=','.join(remove)))
    assert holder.stdout.readline().strip() == 'held'
    return holder, lock


def test_prune_waits_for_a_run_that_holds_the_lock_and_never_interleaves(lab, scenario):
    """A run holding the lock (as the timer's runner does, with the same RunLock) for 8 s: the
    playbook's prune task waits; at the moment the holder lets go every exited container is still
    there, so nothing was removed while it held the lock; then the prune removes them."""
    exited = scenario['expected']['exited_container_ids']
    holder, lock = _hold_lock(lab, 8)
    started = time.time()
    try:
        proc = run_playbook(lab, PLAYBOOK, inventory_vars(lab, image_gc_lock_wait='2m'),
                            extra_vars=dict(BLUNT, image_gc_image_exclude=EXCLUDE))
    finally:
        holder.wait(timeout=60)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    with open(lock + '.seen') as handle:
        seen = json.load(handle)
    assert set(exited) <= set(seen['containers']), 'the prune removed containers while the lock was held'
    assert seen['released'] - started >= 7
    assert fleet(proc.stdout)['containers'] == len(exited)
    assert not set(exited) & set(state(lab)['containers'])


def test_check_mode_waits_for_a_run_that_holds_the_lock_and_plans_the_node_it_leaves(lab, scenario):
    """The check-mode counterpart: a run holds the lock for 8 s and removes the exited containers
    right before it lets go (as the timer's run would). The check-mode prune waits for it, so its
    plan is of the node as that run left it: no exited container is planned for removal. (Without
    the lock the plan lists them: it was made while the other run was still going.)"""
    from tests.integration.ansible_play import lock_args, run_tasks, runtime_args, state_args
    exited = scenario['expected']['exited_container_ids']
    holder, lock = _hold_lock(lab, 8, remove=exited)
    started = time.time()
    try:
        args = dict(runtime_args(lab), **state_args(lab))
        args.update(image_exclude=EXCLUDE, sandbox_min_age='0s', lock_wait='2m')
        res = run_tasks(lab, [('plan', 'nodemaint.image_gc.prune', args)], check=True)
    finally:
        holder.wait(timeout=60)
    plan = res['plan']
    assert not plan.get('failed'), plan
    with open(lock + '.seen') as handle:
        seen = json.load(handle)
    assert seen['released'] - started >= 7 and not set(exited) & set(seen['containers'])
    assert not set(exited) & set(c['id'] for c in plan['containers']), 'check mode planned while the lock was held'
    assert lock_args(lab)['lock_path'] == lock


def test_prune_fails_naming_the_holder_when_the_lock_stays_held(lab, scenario):
    before = state(lab)
    holder, lock = _hold_lock(lab, 20)
    try:
        proc = run_playbook(lab, PLAYBOOK, inventory_vars(lab, image_gc_lock_wait='2s'),
                            extra_vars=dict(BLUNT, image_gc_image_exclude=EXCLUDE))
        during = state(lab)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0 and recap(proc.stdout)['failed'] == 1, proc.stdout[-3000:]
    assert 'another image GC run holds %s (pid %d)' % (lock, holder.pid) in proc.stdout
    assert during == before


def test_prune_writes_the_fleet_report_when_asked(lab, scenario, tmp_path):
    out = tmp_path / 'report'
    proc = run_playbook(lab, PLAYBOOK, inventory_vars(lab), check=True,
                        extra_vars=dict(BLUNT, image_gc_image_exclude=EXCLUDE, image_gc_report_dir=str(out)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    table = fleet(proc.stdout)
    report = json.loads((out / 'report.json').read_text())
    assert report['dry_run'] is True
    assert report['fleet']['containers'] == table['containers'] == len(scenario['expected']['exited_container_ids'])
    host = report['hosts']['localhost']
    assert [p['phase'] for p in host['phases']] == ['containers', 'sandboxes', 'images', 'content']
    assert int(host['images']) == table['images'] and host['failed_phases'] == []
    # the printed table's row is the host's figures, as the report file has them (real lab data)
    row = table['rows']['localhost']
    human = fleet_synthetic.human
    assert row == {'containers': str(host['containers']), 'sandboxes': str(host['sandboxes']),
                   'images': str(host['images']), 'blobs': str(host['blobs']),
                   'freed': human(int(host['bytes_reclaimed'])),
                   'disk_before': fleet_synthetic.percent(float(host['percent_before'])),
                   'disk_after': fleet_synthetic.percent(float(host['percent_after'])), 'failed': '-'}, (row, host)
    assert int(host['bytes_reclaimed']) > 0 and int(host['used_before']) > 0
    # a dry run removes nothing: the filesystem's figure after is the one before, stated as such
    assert host['used_after'] == host['used_before'] and '(check mode: nothing removed)' in host['line']
    markdown = (out / 'report.md').read_text()
    assert markdown.startswith('# Image GC fleet report (dry run')
    assert '| localhost | %s | %s | %s |' % (host['containers'], host['sandboxes'], host['images']) in markdown
    assert '### localhost' in markdown and '| images | ok | %s |' % table['images'] in markdown


# --------------------------------------------------------------------------------------------
# the fleet: an unreachable host, the summary at many hosts

def test_prune_lists_an_unreachable_host_as_failed_and_goes_on(lab, scenario, tmp_path):
    """Rolling batches of one host, the unreachable alias first (alone in its batch, which without
    ignore_unreachable ends the whole playbook): the reachable host is still pruned (--check: planned),
    the fleet table lists the alias as failed, and the run ends failing that host."""
    import socket
    with socket.socket() as sock:          # a loopback port nobody listens on: connection refused
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    hosts = {'gone': {'ansible_host': '127.0.0.1', 'ansible_port': port, 'ansible_user': 'root',
                      'ansible_ssh_common_args': '-o UserKnownHostsFile=/dev/null -o ConnectTimeout=5'},
             'localhost': dict({'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable},
                               **inventory_vars(lab))}
    inventory = tmp_path / 'inventory.json'
    inventory.write_text(json.dumps({'all': {'hosts': hosts}}))
    argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', str(inventory), PLAYBOOK,
            '--check', '-e', json.dumps({'image_gc_serial': 1, 'image_gc_image_exclude': EXCLUDE})]
    proc = subprocess.run(argv, capture_output=True, text=True, env=ansible_env(lab), timeout=600, check=False)
    out = proc.stdout
    table = fleet(out)
    assert table['hosts_failed'] == ['gone'], table
    assert table['rows']['gone']['failed'] == 'HOST FAILED (unreachable or its task failed)'
    assert table['rows']['localhost']['containers'] == str(len(scenario['expected']['exited_container_ids']))
    assert table['hosts'] == 1 and table['containers'] == len(scenario['expected']['exited_container_ids'])
    assert table['title'].startswith('Fleet dry run (would remove): 2 host(s), 1 failed,'), table['title']
    assert recap(out, 'gone')['failed'] == 1 and recap(out, 'localhost')['failed'] == 0, out[-2000:]
    assert 'no result from gone: unreachable' in out
    assert proc.returncode == 2, (proc.returncode, out[-3000:])


def _summary_env(tmp_path):
    from tests.integration.ansible_play import collections_path
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path(), ANSIBLE_NOCOLOR='1',
               ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_LOCAL_TEMP=str(tmp_path / 'ansible-tmp'),
               ANSIBLE_RETRY_FILES_ENABLED='False')
    env['PATH'] = os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    return env


def test_fleet_summary_is_right_on_120_synthetic_hosts(tmp_path):
    """The summary play alone (--tags image_gc_summary) on hosts that carry a fake image_gc_report:
    every row, the totals, the hosts without a result and the report files agree with the data
    (bench/fleet.py --synthetic runs the same check at 10,000 hosts)."""
    inventory = tmp_path / 'inventory.json'
    data = fleet_synthetic.write_inventory(str(inventory), 120)
    argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', str(inventory), PLAYBOOK,
            '--tags', 'image_gc_summary', '-e', 'image_gc_report_dir=%s' % (tmp_path / 'report')]
    proc = subprocess.run(argv, capture_output=True, text=True, env=_summary_env(tmp_path), timeout=600, check=False)
    checked = fleet_synthetic.check(proc.stdout, data, str(tmp_path / 'report'))
    assert checked['failed'] == 1 and checked['with_failed_phases'] > 0 and checked['sums']['containers'] > 0
    # the hosts without a result fail at the end (the run's exit code says so), the others do not
    assert proc.returncode == 2 and recap(proc.stdout, 'node00097.example')['failed'] == 1
    assert recap(proc.stdout, 'node00001.example')['failed'] == 0
