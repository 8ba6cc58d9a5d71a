"""The collection's prune playbook end to end against the real containerd of the lab.

- ``nodemaint.image_gc.prune``: --check changes nothing and reports exactly what the real run then
  removes; the real run leaves only what must stay; a second run changes nothing.
- a failing phase is reported and the other phases still run.
- one module task per node; the fleet report file; an unreachable host; the summary at 120 hosts.

The playbook and the run lock: test_playbook_lock.py; ``scripts/demo.sh``: test_demo.py.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.lab_tests.ansible_play import EXCLUDE, ROOT, ansible_env, run_playbook, runtime_state
from tests.lab_tests import fleet_synthetic
from tests.lab_tests.prune_playbook import BLUNT, PLAYBOOK, fleet, inventory_vars, recap, task_output
import tests.lab as labpkg

COUNTS = ('containers', 'sandboxes', 'images', 'blobs', 'freed')


def state(lab):
    return runtime_state(lab, with_content=True)


GAP = 40          # as scripts/demo.sh: room for a slow (loaded) machine


def sandbox_min_age(scenario, margin=GAP - 4):
    """A min_age (as test_modules._min_age_keeping_young) that the young NotReady sandboxes stay
    under for ``margin`` seconds from now -- phase 2 of the playbook lists them some seconds after
    the start (10-30 s on a busy 2-core machine) -- and that the old ones, created ``GAP`` seconds
    earlier, always exceed."""
    young_age = (time.time_ns() - scenario['young_min_created_ns']) / 1e9
    return '%ds' % (int(young_age) + margin)


def extra_vars(scenario):
    return dict(BLUNT, image_gc_image_exclude=EXCLUDE, image_gc_sandbox_min_age=sandbox_min_age(scenario))


@pytest.fixture
def gapped_scenario(lab):
    labpkg.reset(lab)
    return labpkg.scenario(lab, gap=GAP)


@pytest.mark.matrix  # the prune scenario on every line
@pytest.mark.containerd_only(reason="counts the content store's blobs (phase 4); CRI-O's run end to end: test_crio.py")
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
    assert '(estimate: check mode removes nothing)' in node_check, node_check
    assert planned['hosts'] == 1 and planned['hosts_failed'] == [] and planned['hosts_with_failed_phases'] == {}
    assert planned['containers'] == len(exp['exited_container_ids'])
    assert planned['sandboxes'] == len(exp['notready_old_pod_ids'])
    assert planned['images'] == 5 and planned['blobs'] > 0 and planned['freed'] != '0.00 Bytes', planned
    assert planned['title'].startswith('Fleet dry run (would remove): 1 host, 0 failed, 0 with failed phases;')

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
# one module per node, the report file

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
    # a dry run removes nothing: the filesystem's figure after is the one before; the line projects
    # the after-figure from the plan's sizes, marked as an estimate
    assert host['used_after'] == host['used_before'] and '(estimate: check mode removes nothing)' in host['line']
    markdown = (out / 'report.md').read_text()
    assert markdown.startswith('# Image GC fleet report (dry run')
    assert '| localhost | %s | %s | %s |' % (host['containers'], host['sandboxes'], host['images']) in markdown
    assert '### localhost' in markdown and '| images | ok | %s |' % table['images'] in markdown
    # the report carries the table the playbook printed, line for line
    printed = fleet_synthetic.task_msg(proc.stdout, 'Report the fleet')
    block = markdown.split('```\n')[1]
    assert [line.rstrip() for line in block.strip().splitlines()] == [line.rstrip() for line in printed]


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
            '--check', '-e', json.dumps(dict(BLUNT, image_gc_serial=1, image_gc_image_exclude=EXCLUDE))]
    proc = subprocess.run(argv, capture_output=True, text=True, env=ansible_env(lab), timeout=600, check=False)
    out = proc.stdout
    table = fleet(out)
    assert table['hosts_failed'] == ['gone'], table
    assert table['rows']['gone']['failed'] == 'HOST FAILED (unreachable or its task failed)'
    assert table['rows']['localhost']['containers'] == str(len(scenario['expected']['exited_container_ids']))
    assert table['hosts'] == 1 and table['containers'] == len(scenario['expected']['exited_container_ids'])
    assert table['title'].startswith('Fleet dry run (would remove): 2 hosts, 1 failed,'), table['title']
    assert recap(out, 'gone')['failed'] == 1 and recap(out, 'localhost')['failed'] == 0, out[-2000:]
    assert 'no result from gone: unreachable' in out
    assert proc.returncode == 2, (proc.returncode, out[-3000:])


def _summary_env(tmp_path):
    from tests.lab_tests.ansible_play import collections_path
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path(), ANSIBLE_NOCOLOR='1',
               ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_LOCAL_TEMP=str(tmp_path / 'ansible-tmp'),
               ANSIBLE_RETRY_FILES_ENABLED='False')
    env['PATH'] = os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    return env


def test_fleet_summary_is_right_on_120_synthetic_hosts(tmp_path):
    """The summary play alone (--tags image_gc_summary) on hosts that carry a fake image_gc_report:
    every row, the totals, the hosts without a result and the report files agree with the data
    (bench/fleet/run.py --synthetic runs the same check at 10,000 hosts)."""
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
