# Over 300 lines: many cases of one subject, faults injected around the modules on the real containerd.
"""Faults around the modules, through ansible-playbook against the real containerd of the lab.

Every case ends in a clear error (naming the cause and the fix) or in items reported as failed
with a warning -- never in a removed in-use, pinned, excluded or sandbox image. Assertions are on
the runtime's state afterwards. Faults during a run are injected by tests/lab_tests/faulty_crictl.py,
given to the modules as ``crictl_path`` and controlled by a JSON file named in the task's
``environment:``.
"""

import json
import os
import tempfile

import pytest

from tests.lab_tests.ansible_play import (
    EXCLUDE, FRESH_IMAGES, lock_args, run_tasks, runtime_args, runtime_state, state_args, without_record)
from tests.lab_tests.faulty_crictl import CONTROL_ENV
import tests.lab as labpkg
from tests.lab import images as labimages

HERE = os.path.dirname(os.path.abspath(__file__))
WRAPPER = os.path.join(HERE, 'bin', 'faulty-crictl')
CRICTL_PRUNE = 'nodemaint.image_gc.crictl_prune'
STALE_SANDBOX = 'nodemaint.image_gc.stale_sandbox'
CONTENT_PRUNE = 'nodemaint.image_gc.ctr_content_prune'
IMAGEFS_INFO = 'nodemaint.image_gc.imagefs_info'
# what must survive every run: the running container's image, the excluded one, the sandbox image
PROTECTED = ('busybox2', 'keep', 'pause')
# where discovery looks for binaries besides PATH (plugins/module_utils/_discovery.py)
BINARY_DIRS = ('/usr/local/bin', '/usr/bin', '/usr/local/sbin', '/usr/sbin', '/var/lib/rancher/rke2/bin', '/snap/bin')


def state(lab):
    return runtime_state(lab, with_content=False)


def assert_protected(lab, scenario, after=None):
    after = after or state(lab)
    for key in PROTECTED:
        assert scenario['images'][key]['id'] in after['images'], '%s image was removed' % key
    for cid in scenario['expected']['running_container_ids']:
        assert after['containers'].get(cid) == 'CONTAINER_RUNNING', 'the running container is gone'
    for pod in scenario['expected']['ready_pod_ids']:
        assert after['pods'].get(pod) == 'SANDBOX_READY'
    return after


def fault(lab, kind, **extra):
    """A control file for faulty_crictl.py; returns (task extras with its environment, log path)."""
    work = tempfile.mkdtemp(prefix='fault-', dir=lab.base)
    log = os.path.join(work, 'faults.log')
    control = dict(fault=kind, log=log, **extra)
    path = os.path.join(work, 'control.json')
    with open(path, 'w') as handle:
        json.dump(control, handle)
    return {'environment': {CONTROL_ENV: path}}, log


def injected(log):
    if not os.path.exists(log):
        return []
    with open(log) as handle:
        return [line.split() for line in handle.read().splitlines()]


def failed_items(result):
    """The per-item failures a module reports (``failures``; a list under ``failed`` would be read
    by Ansible as the task status)."""
    for key in ('failed_items', 'failures', 'failed'):
        if isinstance(result.get(key), list):
            return result[key]
    raise AssertionError('no list of failed items in %s' % sorted(result))


def faulty_args(lab, **extra):
    args = dict(runtime_args(lab, crictl_path=WRAPPER), **state_args(lab))
    args.update(extra)
    return args


# --------------------------------------------------------------------------------------------
# containerd down

def test_containerd_stopped_before_the_run_fails_naming_the_socket(lab, scenario):
    before = state(lab)
    args = dict(runtime_args(lab), **state_args(lab))
    lab.kill()
    try:
        res = run_tasks(lab, [
            ('prune', CRICTL_PRUNE, dict(args, image_exclude=EXCLUDE, **FRESH_IMAGES)),
            ('sandboxes', STALE_SANDBOX, args),
            ('content', CONTENT_PRUNE, without_record(args)),
            ('info', IMAGEFS_INFO, runtime_args(lab)),
        ])
    finally:
        lab.restart()
    for name in ('prune', 'sandboxes', 'content', 'info'):
        result = res[name]
        assert result.get('failed') is True, (name, result)
        assert lab.socket in result['msg'], (name, result['msg'])
        assert 'is containerd running' in result['msg'], (name, result['msg'])
        assert 'runtime_endpoint' in result['msg'], (name, result['msg'])
    assert res['prune'].get('partial') == []
    assert state(lab) == before


def test_containerd_killed_before_container_removal(lab, scenario):
    """The wrapper SIGKILLs containerd on the first ``crictl rm``: the containers are reported
    failed with a message naming the socket, the images phase cannot list and fails the module
    naming the socket; after a restart nothing is gone."""
    before = state(lab)
    extras, log = fault(lab, 'kill-on-remove', containerd_pid=lab.pid)
    try:
        # pod_aware: false - every exited container of the scenario is removed (the blunt mode)
        res = run_tasks(lab, [('prune', CRICTL_PRUNE, faulty_args(lab, image_exclude=EXCLUDE, pod_aware=False,
                                                                  **FRESH_IMAGES), extras)])
    finally:
        lab.restart()
    assert [entry[:2] for entry in injected(log)] == [['kill-on-remove', 'rm']], injected(log)
    result = res['prune']
    assert result.get('failed') is True, result
    assert lab.socket in result['msg'] and 'is containerd running' in result['msg'], result['msg']
    # phase 3 plans with phase 1's container listing: its first command, the image listing, fails
    assert result['cmd'][-3:] == ['images', '--output', 'json'], result['cmd']
    phase = result['partial'][0]
    assert phase['phase'] == 'containers' and phase['removed'] == []
    assert sorted(i['id'] for i in phase['failed']) == sorted(scenario['expected']['exited_container_ids'])
    for item in phase['failed']:
        assert 'could not be re-read' in item['msg'], item
        assert lab.socket in item['msg'] and 'is containerd running' in item['msg'], item
    after = assert_protected(lab, scenario)
    assert after['images'] == before['images']
    assert set(after['containers']) == set(before['containers'])


@pytest.fixture(scope='module')
def killed_before_image_removal(lab):
    """One run of the images phase alone whose first ``crictl rmi`` SIGKILLs containerd."""
    labpkg.reset(lab)
    sc = labpkg.scenario(lab)
    before = state(lab)
    extras, log = fault(lab, 'kill-on-remove', containerd_pid=lab.pid)
    try:
        res = run_tasks(lab, [('prune', CRICTL_PRUNE, faulty_args(lab, image_exclude=EXCLUDE, containers=False,
                                                                  return_commands=True, **FRESH_IMAGES),
                               extras)])
    finally:
        lab.restart()
    return {'scenario': sc, 'before': before, 'result': res['prune'], 'injected': injected(log),
            'after': state(lab)}


def test_containerd_killed_before_image_removal_removes_nothing(lab, killed_before_image_removal):
    run = killed_before_image_removal
    assert [entry[:2] for entry in run['injected']] == [['kill-on-remove', 'rmi']], run['injected']
    result = run['result']
    assert result['images'] == [] and result['images_space_reclaimed'] == 0, result
    rmi = [argv for argv in result['commands'] if 'rmi' in argv]
    assert len(rmi) == 1
    ids_tried = rmi[0][rmi[0].index('rmi') + 1:]
    assert ids_tried
    # each item is named in a warning with the cause and the fix
    warnings = result.get('warnings', [])
    for image_id in ids_tried:
        match = [w for w in warnings if 'could not remove image %s' % image_id in w]
        assert match, (image_id, warnings)
        assert 'could not be re-read' in match[0] and lab.socket in match[0], match[0]
        assert 'is containerd running' in match[0], match[0]
    assert_protected(lab, run['scenario'], run['after'])
    assert run['after']['images'] == run['before']['images']


def test_containerd_killed_before_image_removal_reports_failed_items(lab, killed_before_image_removal):
    result = killed_before_image_removal['result']
    assert result.get('failed') is not True, result.get('msg')
    items = failed_items(result)
    assert items and all('could not be re-read' in item['msg'] for item in items)


# --------------------------------------------------------------------------------------------
# wrong places

def test_wrong_socket_names_it_and_the_option(lab, scenario):
    before = state(lab)
    missing = 'unix://' + os.path.join(lab.base, 'no-such', 'containerd.sock')
    args = dict(runtime_args(lab, runtime_endpoint=missing), **state_args(lab))
    # ctr talks to containerd_address: a wrong one fails the content phase the same way
    ctr_args = dict(runtime_args(lab, containerd_address=missing[len('unix://'):]), **lock_args(lab))
    res = run_tasks(lab, [
        ('prune', CRICTL_PRUNE, dict(args, image_exclude=EXCLUDE, **FRESH_IMAGES)),
        ('sandboxes', STALE_SANDBOX, args),
        ('content', CONTENT_PRUNE, without_record(args)),
        ('info', IMAGEFS_INFO, runtime_args(lab, runtime_endpoint=missing)),
        ('ctr', CONTENT_PRUNE, ctr_args),
    ])
    for name in ('prune', 'sandboxes', 'content', 'info'):
        result = res[name]
        assert result.get('failed') is True, (name, result)
        assert missing in result['msg'], (name, result['msg'])
        assert 'option runtime_endpoint' in result['msg'], (name, result['msg'])
        assert 'not a socket' in result['msg'], (name, result['msg'])
        assert 'cmd' not in result, 'nothing may run with a wrong socket'
    ctr = res['ctr']
    assert ctr.get('failed') is True, ctr
    assert missing[len('unix://'):] in ctr['msg'] + ctr.get('stderr', ''), ctr
    assert 'containerd_address' in ctr['msg'], ctr['msg']
    assert state(lab) == before


def test_crictl_or_ctr_missing_names_what_was_tried(lab, scenario):
    before = state(lab)
    missing = os.path.join(lab.base, 'no-such-dir', 'crictl')
    args = dict(runtime_args(lab, crictl_path=missing), **state_args(lab))
    auto = dict(runtime_args(lab), **state_args(lab))
    del auto['crictl_path']
    # a PATH without the real crictl's dir (and without the venv): auto-discovery must come up empty
    path = os.pathsep.join([os.path.join(lab.base, 'empty-bin'), '/usr/sbin', '/usr/bin', '/sbin', '/bin'])
    os.makedirs(os.path.join(lab.base, 'empty-bin'), exist_ok=True)
    for directory in BINARY_DIRS:
        for name in ('crictl', 'k3s'):
            if os.access(os.path.join(directory, name), os.X_OK):
                pytest.skip('this machine has %s/%s: auto-discovery would find it' % (directory, name))
    no_path = {'environment': {'PATH': path}}
    res = run_tasks(lab, [
        ('prune', CRICTL_PRUNE, dict(args, image_exclude=EXCLUDE)),
        ('sandboxes', STALE_SANDBOX, args),
        ('info', IMAGEFS_INFO, runtime_args(lab, crictl_path=missing)),
        ('ctr', CONTENT_PRUNE, dict(runtime_args(lab, ctr_path=os.path.join(lab.base, 'no-such-dir', 'ctr')),
                                    **lock_args(lab))),
        ('auto_prune', CRICTL_PRUNE, dict(auto, image_exclude=EXCLUDE, **FRESH_IMAGES), no_path),
        ('auto_sandboxes', STALE_SANDBOX, auto, no_path),
        ('auto_info', IMAGEFS_INFO, dict((k, v) for k, v in runtime_args(lab).items() if k != 'crictl_path'),
         no_path),
    ])
    for name in ('prune', 'sandboxes', 'info'):
        result = res[name]
        assert result.get('failed') is True, (name, result)
        assert missing in result['msg'] and 'crictl_path' in result['msg'], (name, result['msg'])
        assert 'no such executable' in result['msg'], (name, result['msg'])
    ctr = res['ctr']
    assert ctr.get('failed') is True, ctr
    assert 'no-such-dir/ctr' in ctr['msg'] and 'ctr_path' in ctr['msg'], ctr['msg']
    for name in ('auto_prune', 'auto_sandboxes', 'auto_info'):
        result = res[name]
        assert result.get('failed') is True, (name, result)
        msg = result['msg']
        assert msg.startswith('crictl not found'), (name, msg)
        assert 'crictl_path' in msg, (name, msg)
        # every place tried: each PATH entry, each well-known binary dir, the k3s wrapper
        for directory in path.split(os.pathsep) + list(BINARY_DIRS):
            assert os.path.join(directory, 'crictl') in msg, (name, directory, msg)
        assert '/usr/local/bin/k3s' in msg, (name, msg)
        assert lab.bin_dir not in msg, "the real crictl's dir was on the PATH after all"
    assert state(lab) == before


# --------------------------------------------------------------------------------------------
# faults during removal

@pytest.fixture(scope='module')
def one_item_fails(lab):
    """One crictl_prune run whose every removal command fails for its first id."""
    labpkg.reset(lab)
    sc = labpkg.scenario(lab)
    extras, log = fault(lab, 'drop-first-id')
    # pod_aware: false - every exited container of the scenario is removed (the blunt mode)
    res = run_tasks(lab, [('prune', CRICTL_PRUNE, faulty_args(lab, image_exclude=EXCLUDE, pod_aware=False,
                                                              **FRESH_IMAGES), extras)])
    return {'scenario': sc, 'result': res['prune'], 'rc': res.rc,
            'dropped': dict((entry[1], entry[2]) for entry in injected(log)), 'after': state(lab)}


def test_removal_failing_for_one_item_removes_the_others(lab, one_item_fails):
    run = one_item_fails
    sc, result, dropped, after = run['scenario'], run['result'], run['dropped'], run['after']
    assert sorted(dropped) == ['rm', 'rmi'], dropped
    assert dropped['rm'] in sc['expected']['exited_container_ids']
    # each failed item is named in a warning with crictl's message
    warnings = result.get('warnings', [])
    for kind, verb in (('container', 'rm'), ('image', 'rmi')):
        match = [w for w in warnings if 'could not remove %s %s' % (kind, dropped[verb]) in w]
        assert match and 'injected failure' in match[0], (kind, warnings)
    assert len([w for w in warnings if w.startswith('could not remove')]) == 2, warnings
    # the others were removed
    removed_c = [c['id'] for c in result['containers']]
    removed_i = [i['id'] for i in result['images']]
    assert removed_c == [c for c in sc['expected']['exited_container_ids'] if c != dropped['rm']]
    assert removed_i and dropped['rmi'] not in removed_i
    assert_protected(lab, sc, after)
    assert dropped['rm'] in after['containers'] and dropped['rmi'] in after['images']
    assert not set(removed_c) & set(after['containers'])
    assert not set(removed_i) & after['images']
    # the container that stayed still protects its image
    stayed = [c for c in sc['containers'].values() if c['id'] == dropped['rm']][0]
    assert stayed['image_ref'] in after['images']
    kept = dict((i['id'], i['reason']) for i in result['images_kept'])
    assert kept[stayed['image_ref']].startswith('in use by container %s' % stayed['name']), kept


def test_removal_failing_for_one_item_is_reported_and_not_a_module_failure(lab, one_item_fails):
    run = one_item_fails
    assert run['rc'] == 0
    assert run['result'].get('failed') is not True, run['result'].get('msg')
    items = dict((i['id'], i['msg']) for i in failed_items(run['result']))
    assert sorted(items) == sorted(run['dropped'].values())
    assert all('injected failure' in m for m in items.values())


def test_image_imported_during_the_run_is_kept(lab, scenario):
    late = labimages.build('docker.io/feas/late:1')
    extras, log = fault(lab, 'import-on-rmi', image=late.name, ctr_argv=lab.ctr_argv,
                        work=os.path.join(lab.base, 'work'))
    args = faulty_args(lab, image_exclude=EXCLUDE, **FRESH_IMAGES)
    plain = dict(runtime_args(lab), **state_args(lab))
    res = run_tasks(lab, [
        ('prune', CRICTL_PRUNE, args, extras),
        # the late image is unused: image_min_age keeps it only because it is young ...
        ('young', CRICTL_PRUNE, dict(plain, containers=False, image_exclude=EXCLUDE, image_min_age='1h')),
        # ... without image_min_age it would go (check mode: planned, not removed)
        ('plan', CRICTL_PRUNE, dict(plain, containers=False, image_exclude=EXCLUDE, **FRESH_IMAGES), {'check_mode': True}),
    ])
    assert res.rc == 0, res
    assert injected(log) == [['import-on-rmi', late.name, late.image_id]]
    prune = res['prune']
    assert prune['failures'] == [] and prune['images'], prune
    assert late.image_id not in [i['id'] for i in prune['images']]
    young = res['young']
    assert young['images'] == [] and young['changed'] is False, young
    kept = dict((i['id'], i['reason']) for i in young['images_kept'])
    assert 'younger than image_min_age' in kept[late.image_id], kept
    assert [i['id'] for i in res['plan']['images']] == [late.image_id], res['plan']
    after = assert_protected(lab, scenario)
    assert late.image_id in after['images']
    assert scenario['images']['unused3']['id'] not in after['images']


def test_malformed_crictl_output_fails_and_removes_nothing(lab, scenario):
    before = state(lab)
    extras, log = fault(lab, 'garbage-ps')
    args = faulty_args(lab)
    res = run_tasks(lab, [
        ('prune', CRICTL_PRUNE, dict(args, image_exclude=EXCLUDE, **FRESH_IMAGES), extras),
        ('sandboxes', STALE_SANDBOX, args, extras),
        ('info', IMAGEFS_INFO, runtime_args(lab, crictl_path=WRAPPER), extras),
    ])
    assert injected(log), 'the fault was not injected'
    for name in ('prune', 'sandboxes', 'info'):
        result = res[name]
        assert result.get('failed') is True, (name, result)
        assert 'printed malformed JSON' in result['msg'], (name, result['msg'])
        assert 'crictl ps' in result['msg'] and WRAPPER in result['msg'], (name, result['msg'])
    assert state(lab) == before
