# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""crictl_prune: main() with the recorded crictl outputs behind a stub runner."""

from types import SimpleNamespace

import pytest

from ansible_collections.nodemaint.image_gc.plugins.modules import crictl_prune

from tests.unit.image_gc_testlib import (
    CRICTL_PREFIX, IDS, IMG_BUSYBOX1, IMG_BUSYBOX2, IMG_OLD_BUSYBOX1, IMG_PAUSE, IMG_UNUSED3, V16, V21, VERSIONS,
    documented_returns, failure_before_any_command, ids, lock_held_elsewhere, node_discovery, node_runner, run_module,
    running_kubelet)


@pytest.fixture
def args(tmp_path):
    # the recorded images are seconds old and never seen in use: image_min_age's default (10m) and
    # image_unused_for's (21d) would keep them all; the recorded sequence removes every unused image.
    # pod_aware: false - the recorded sequence is upstream's blunt removal (crictl rm of every exited
    # container, exit1 of the Ready pod feas-c included); the default rules have their own tests below.
    return {'lock_path': str(tmp_path / 'gc.lock'), 'lock_wait': '1s', 'image_min_age': '0s', 'image_unused_for': '0s',
            'pod_aware': False}


def check_against_return_doc(result, images_enabled=True):
    doc = documented_returns(crictl_prune)
    keys = set(result) - {'changed', 'diff'}
    assert keys <= set(doc), 'undocumented return keys: %s' % (keys - set(doc))
    always = set(k for k, v in doc.items() if v['returned'] == 'always')
    assert always <= keys, 'missing return keys: %s' % (always - keys)
    assert ('sandbox_image' in result) == images_enabled
    for key in ('containers', 'images'):
        contains = set(doc[key]['contains'])
        for item in result[key]:
            assert set(item) == contains, (key, set(item) ^ contains)
    for key, spec in doc.items():
        if key in result and spec['type'] == 'list':
            assert isinstance(result[key], list)
        if key in result and spec['type'] == 'int':
            assert isinstance(result[key], int)


@pytest.fixture(params=VERSIONS)
def check_mode_run(request, args, monkeypatch):
    """crictl_prune in check mode (return_commands: true) with ``args`` (pod_aware: false, every unused image)
    over the recorded node of each version: the module's exit, its result, its runner and the recorded ids."""
    runner = node_runner(request.param)
    out = run_module(monkeypatch, crictl_prune, dict(args, return_commands=True), runner, check_mode=True)
    return SimpleNamespace(out=out, result=out.result, runner=runner, ids=IDS[request.param])


def test_check_mode_does_not_fail(check_mode_run):
    assert not check_mode_run.out.failed, check_mode_run.result


def test_check_mode_plans_the_exited_containers_and_the_unused_images_as_a_change(check_mode_run):
    result = check_mode_run.result
    assert result['changed'] is True
    assert ids(result['containers']) == [check_mode_run.ids['exit0'], check_mode_run.ids['exit1']]
    assert ids(result['images']) == [IMG_UNUSED3, IMG_OLD_BUSYBOX1, IMG_BUSYBOX1]


def test_check_mode_reports_the_space_the_planned_images_take(check_mode_run):
    assert check_mode_run.result['images_space_reclaimed'] == 1028854 + 1028853 + 1028856


def test_check_mode_keeps_the_pause_image_and_the_image_in_use(check_mode_run):
    kept = dict((i['id'], i['reason']) for i in check_mode_run.result['images_kept'])
    assert set(kept) == {IMG_PAUSE, IMG_BUSYBOX2}


def test_check_mode_removes_nothing_and_fails_nothing(check_mode_run):
    assert check_mode_run.runner.removals() == []
    assert check_mode_run.result['failures'] == []


def test_check_mode_commands_are_every_command_it_ran(check_mode_run):
    assert check_mode_run.result['commands'] == check_mode_run.runner.calls


def test_check_mode_result_matches_the_return_doc(check_mode_run):
    check_against_return_doc(check_mode_run.result)


@pytest.mark.parametrize('version', VERSIONS)
def test_real_run_removes_what_check_mode_reported(version, args, monkeypatch, tmp_path):
    check = run_module(monkeypatch, crictl_prune, args, node_runner(version), check_mode=True).result
    runner = node_runner(version)
    real = run_module(monkeypatch, crictl_prune, dict(args, return_commands=True), runner).result
    assert real['changed'] is True
    assert ids(real['containers']) == ids(check['containers'])
    assert ids(real['images']) == ids(check['images'])
    assert runner.removals() == [CRICTL_PREFIX + ['rm', IDS[version]['exit0'], IDS[version]['exit1']],
                                 CRICTL_PREFIX + ['rmi', IMG_UNUSED3, IMG_OLD_BUSYBOX1, IMG_BUSYBOX1]]
    assert real['commands'] == runner.calls
    assert real['sandbox_image'] == ('docker.io/feas/pause:1' if version == V16 else None)
    check_against_return_doc(real)
    assert (tmp_path / 'gc.lock').exists()          # the run lock was taken


@pytest.mark.parametrize('version', VERSIONS)
def test_second_run_on_the_after_state_is_not_changed(version, args, monkeypatch):
    runner = node_runner(version, state='after')
    result = run_module(monkeypatch, crictl_prune, args, runner).result
    assert result['changed'] is False
    assert result['containers'] == [] and result['images'] == []
    assert runner.removals() == []
    check_against_return_doc(result)


def test_containers_false_keeps_the_image_of_exited_containers(args, monkeypatch):
    runner = node_runner(V21)
    result = run_module(monkeypatch, crictl_prune, dict(args, containers=False), runner).result
    assert ids(result['images']) == [IMG_UNUSED3, IMG_BUSYBOX1]
    assert result['containers'] == [] and result['containers_kept'] == []
    assert runner.ran('crictl', 'rm') == []


def test_images_false_has_no_sandbox_image_key(args, monkeypatch):
    runner = node_runner(V16)
    result = run_module(monkeypatch, crictl_prune, dict(args, images=False), runner).result
    assert runner.ran('crictl', 'images') == [] and runner.ran('crictl', 'rmi') == []
    check_against_return_doc(result, images_enabled=False)


def test_image_exclude_and_batch_size(args, monkeypatch):
    runner = node_runner(V16)
    result = run_module(monkeypatch, crictl_prune,
                        dict(args, image_exclude=['docker.io/feas/unused:*'], batch_size=1), runner).result
    assert ids(result['images']) == [IMG_OLD_BUSYBOX1, IMG_BUSYBOX1]
    assert runner.ran('crictl', 'rmi') == [CRICTL_PREFIX + ['rmi', IMG_OLD_BUSYBOX1], CRICTL_PREFIX + ['rmi', IMG_BUSYBOX1]]
    assert dict((i['id'], i['reason']) for i in result['images_kept'])[IMG_UNUSED3] == \
        "excluded by pattern 'docker.io/feas/unused:*'"


@pytest.mark.parametrize('option', ['assume_removed_containers', 'assume_removed_sandboxes'])
def test_ids_relayed_by_a_caller_are_no_option_any_more(option, args, monkeypatch):
    """A caller's ids must never make images count as unused: the prune module plans a whole run."""
    assert option in failure_before_any_command(monkeypatch, crictl_prune, dict(args, **{option: [IDS[V21]['feas-c']]}))


def test_diff_lists_ids_before_and_after(args, monkeypatch):
    result = run_module(monkeypatch, crictl_prune, args, node_runner(V21), check_mode=True, diff=True).result
    diff = result['diff']
    assert IMG_UNUSED3 in diff['before']['images'] and IMG_UNUSED3 not in diff['after']['images']
    assert IMG_BUSYBOX2 in diff['after']['images']
    assert IDS[V21]['exit0'] in diff['before']['containers'] and diff['after']['containers'] == []


@pytest.mark.parametrize('option, value, name', [
    ('created_min_age', '10x', 'created_min_age'),
    ('image_min_age', 'soon', 'image_min_age'),
    ('timeout', '1.5h', 'timeout'),
    ('batch_size', 0, 'batch_size'),
    ('lock_wait', 'soon', 'lock_wait'),
    ('image_exclude', [''], 'image_exclude'),
])
def test_bad_option_fails_naming_it_and_runs_nothing(option, value, name, args, monkeypatch):
    msg = failure_before_any_command(monkeypatch, crictl_prune, dict(args, **{option: value}), version=V16)
    assert msg.startswith(name + ':'), msg


def test_missing_crictl_fails_with_the_places_tried(args, monkeypatch):
    from image_gc_testlib import fake_discovery, SOCKET
    runner = node_runner(V16)
    out = run_module(monkeypatch, crictl_prune, args, runner,
                     discovery=fake_discovery(env={'PATH': '/opt/x'}, sockets={SOCKET}))
    assert out.failed
    assert out.result['msg'].startswith('crictl not found. Tried: /opt/x/crictl')
    assert 'crictl_path' in out.result['msg']
    assert runner.calls == []


def test_no_socket_fails_with_command_output(args, monkeypatch):
    from image_gc_testlib import recorded_reply
    runner = node_runner(V21)
    runner.on('crictl ps --all --output json', recorded_reply(V21, 'crictl-nosocket'))
    out = run_module(monkeypatch, crictl_prune, args, runner)
    assert out.failed
    assert 'runtime socket does not answer' in out.result['msg']
    assert out.result['rc'] == 1
    assert 'level=fatal' in out.result['stderr']
    assert out.result['cmd'] == CRICTL_PREFIX + ['ps', '--all', '--output', 'json']
    assert runner.removals() == []


def test_lock_held_elsewhere_fails_naming_lock_wait(args, monkeypatch, tmp_path):
    with lock_held_elsewhere(args['lock_path']):
        runner = node_runner(V16)
        out = run_module(monkeypatch, crictl_prune, args, runner)
        # check mode waits for the lock too, and fails the same way
        check_runner = node_runner(V16)
        check = run_module(monkeypatch, crictl_prune, args, check_runner, check_mode=True)
    assert out.failed
    assert 'lock_wait' in out.result['msg'] and args['lock_path'] in out.result['msg']
    assert runner.removals() == []
    assert check.failed and 'lock_wait' in check.result['msg']
    assert not check_runner.ran('crictl')                # no plan of a node changing under it


@pytest.mark.parametrize('version', VERSIONS)
def test_default_rules_keep_the_newest_exited_instance_of_a_ready_pod_and_its_image(
        version, args, monkeypatch, tmp_path):
    """pod_aware (the default): exit1 is the newest (only) exited instance of its name in feas-c, whose
    sandbox is Ready: it stays, and the old busybox:1 it uses with it; exit0's pod feas-a is not live (the
    running kubelet's live root has no directory for it)."""
    args = dict(args)
    del args['pod_aware']
    found = node_discovery(proc=running_kubelet(tmp_path, version)[0])
    runner = node_runner(version)
    check = run_module(monkeypatch, crictl_prune, args, runner, discovery=found, check_mode=True).result
    assert ids(check['containers']) == [IDS[version]['exit0']]
    assert check['containers'][0]['reason'].startswith('exited, and pod feas/feas-a is not live')
    kept = dict((i['id'], i['reason']) for i in check['containers_kept'])
    assert kept[IDS[version]['exit1']].startswith('newest exited instance of exit1 (attempt 0) in live pod feas/feas-c '
                                                  '(its newest sandbox ')
    assert ids(check['images']) == [IMG_UNUSED3, IMG_BUSYBOX1]
    images_kept = dict((i['id'], i['reason']) for i in check['images_kept'])
    assert images_kept[IMG_OLD_BUSYBOX1].startswith('in use by container exit1')
    check_against_return_doc(check)
    real_runner = node_runner(version)
    real = run_module(monkeypatch, crictl_prune, args, real_runner, discovery=found).result
    assert real_runner.ran('crictl', 'rm') == [CRICTL_PREFIX + ['rm', IDS[version]['exit0']]]
    assert [(i['id'], i['reason']) for i in real['containers']] == [(i['id'], i['reason']) for i in check['containers']]
