# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""prune: one whole run in one module invocation, with the recorded crictl outputs behind a stub runner."""

import fcntl
import os

import pytest

from ansible_collections.nodemaint.image_gc.plugins.modules import prune

from tests.unit.image_gc_testlib import (
    IDS, IMG_BUSYBOX1, IMG_OLD_BUSYBOX1, IMG_UNUSED3, V16, V21, VERSIONS, Reply, documented_returns,
    failure_before_any_command, ids, node_runner, run_module)

PHASES = ['containers', 'sandboxes', 'images', 'content']


@pytest.fixture
def args(tmp_path):
    # the recorded images are seconds old and never seen in use: image_min_age's default (10m) and
    # image_unused_for's (21d) would keep them all; the recorded sequence removes every unused image.
    # pod_aware: false - the recorded sequence is upstream's blunt removal (crictl rm of every exited
    # container, exit1 of the Ready pod feas-c included); the default rules have their own tests below.
    return {'lock_path': str(tmp_path / 'gc.lock'), 'lock_wait': '1s', 'sandbox_min_age': '0s', 'image_min_age': '0s',
            'image_unused_for': '0s', 'pod_aware': False}


def check_against_return_doc(result):
    doc = documented_returns(prune)
    keys = set(result) - {'changed', 'diff', 'warnings'}
    assert keys <= set(doc), 'undocumented return keys: %s' % (keys - set(doc))
    always = set(k for k, v in doc.items() if v['returned'] == 'always')
    assert always <= keys, 'missing return keys: %s' % (always - keys)
    contains = set(doc['phases']['contains'])
    for phase in result['phases']:
        assert set(phase) <= contains, set(phase) - contains
    for key, spec in doc.items():
        if key in result and spec['type'] in ('list', 'dict', 'int'):
            assert isinstance(result[key], {'list': list, 'dict': dict, 'int': int}[spec['type']]), key


@pytest.fixture(params=VERSIONS)
def check_and_real(request, args, monkeypatch):
    """One check-mode run and one real run of prune over the recorded node, with their runners."""
    version = request.param
    check_runner, real_runner = node_runner(version), node_runner(version)
    check = run_module(monkeypatch, prune, args, check_runner, check_mode=True).result
    real = run_module(monkeypatch, prune, dict(args, return_commands=True), real_runner).result
    return {'version': version, 'check': check, 'real': real, 'check_runner': check_runner,
            'real_runner': real_runner}


def test_check_mode_removes_nothing(check_and_real):
    assert check_and_real['check_runner'].removals() == []


def test_check_mode_reports_what_the_real_run_removes_with_the_same_reasons(check_and_real):
    check, real = check_and_real['check'], check_and_real['real']
    for key in ('containers', 'sandboxes', 'images'):
        assert ids(check[key]) == ids(real[key]), key
        assert [i['reason'] for i in check[key]] == [i['reason'] for i in real[key]], key
    assert check['images_space_reclaimed'] == real['images_space_reclaimed'] > 0
    assert check['changed'] is real['changed'] is True


def test_the_real_run_removes_the_recorded_garbage(check_and_real):
    version, real = check_and_real['version'], check_and_real['real']
    assert ids(real['containers']) == [IDS[version]['exit0'], IDS[version]['exit1']]
    assert ids(real['sandboxes']) == [IDS[version]['feas-a']]
    assert ids(real['images']) == [IMG_UNUSED3, IMG_OLD_BUSYBOX1, IMG_BUSYBOX1]


def test_every_phase_runs_in_order_and_succeeds(check_and_real):
    real = check_and_real['real']
    assert [p['phase'] for p in real['phases']] == PHASES
    assert all(p['status'] == 'ok' for p in real['phases']) and real['failed_phases'] == []


def test_disk_after_counts_what_is_left_and_check_mode_states_after_as_before(check_and_real):
    check, real = check_and_real['check'], check_and_real['real']
    assert real['disk_before']['images'] == 5 and real['disk_after']['images'] == 2
    assert check['disk_after']['images'] == 5                    # check mode: nothing was removed
    assert check['disk_after']['filesystem']['used_bytes'] == check['disk_before']['filesystem']['used_bytes']


def test_the_summary_says_what_was_freed_and_check_mode_projects_an_estimate(check_and_real):
    check, real = check_and_real['check'], check_and_real['real']
    # the one line: what was removed and the filesystem's figures (check mode: a projection, said so)
    assert real['summary'].startswith('freed ') and ' -> ' in real['summary']
    assert check['summary'].startswith('would free ')
    assert check['summary'].endswith('(estimate: check mode removes nothing)')
    assert ' -> ~' in check['summary']


def test_no_disk_target_without_disk_high(check_and_real):
    assert 'disk_target' not in check_and_real['real']


def test_commands_are_every_command_run_when_asked_for(check_and_real):
    assert check_and_real['real']['commands'] == check_and_real['real_runner'].calls
    assert 'commands' not in check_and_real['check']          # not asked for


def test_both_results_match_the_return_doc(check_and_real):
    check_against_return_doc(check_and_real['check'])
    check_against_return_doc(check_and_real['real'])


def test_second_run_changes_nothing(args, monkeypatch):
    result = run_module(monkeypatch, prune, args, node_runner(V21, state='after')).result
    assert result['changed'] is False
    assert all(result[k] == [] for k in ('containers', 'sandboxes', 'images', 'blobs', 'failures'))
    assert result['images_space_reclaimed'] == result['content_space_reclaimed'] == 0


def test_a_failed_phase_is_reported_and_fails_the_task_only_when_asked(args, monkeypatch):
    def failing_pods():
        runner = node_runner(V16)
        runner.on('crictl pods --output json', Reply(1, '', 'time="x" level=fatal msg="boom"\n'))
        return runner
    out = run_module(monkeypatch, prune, args, failing_pods())
    assert not out.failed
    assert out.result['failed_phases'] == ['sandboxes']
    phases = dict((p['phase'], p) for p in out.result['phases'])
    assert phases['sandboxes']['error'] == 'crictl pods --output json failed (rc=1): boom'
    assert phases['images']['status'] == 'ok' and out.result['images']
    assert out.result['changed'] is True
    strict = run_module(monkeypatch, prune, dict(args, fail_on_phase_error=True), failing_pods())
    assert strict.failed and strict.result['msg'] == 'crictl pods --output json failed (rc=1): boom'
    assert strict.result['rc'] == 1
    assert [p['phase'] for p in strict.result['partial']] == ['containers', 'images', 'content']


def test_the_lock_is_held_for_the_whole_run_and_a_held_lock_fails_before_anything_runs(args, monkeypatch):
    seen = []
    runner = node_runner(V21)
    original = runner.run

    def run(argv, timeout=None):
        fd = os.open(args['lock_path'], os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seen.append('free')
        except OSError:
            seen.append('held')
        finally:
            os.close(fd)
        return original(argv, timeout)
    runner.run = run
    assert not run_module(monkeypatch, prune, args, runner).failed
    assert seen and set(seen) == {'held'}                        # every command ran under the lock
    fd = os.open(args['lock_path'], os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        idle = node_runner(V21)
        out = run_module(monkeypatch, prune, args, idle)
    finally:
        os.close(fd)
    assert out.failed and 'another image GC run holds %s' % args['lock_path'] in out.result['msg']
    assert idle.calls == []


def test_bad_option_fails_naming_it_before_any_command(args, monkeypatch):
    assert failure_before_any_command(monkeypatch, prune, dict(args, disk_high=85)).startswith(
        'disk_high and disk_low go together')


def test_diff_lists_every_kind_before_and_after(args, monkeypatch):
    result = run_module(monkeypatch, prune, args, node_runner(V21), check_mode=True, diff=True).result
    diff = result['diff']
    assert set(diff['before']) == set(diff['after']) == {'containers', 'sandboxes', 'images', 'blobs'}
    assert IMG_UNUSED3 in diff['before']['images'] and IMG_UNUSED3 not in diff['after']['images']
    assert diff['after']['containers'] == [] and IDS[V21]['feas-a'] not in diff['after']['sandboxes']


def test_below_the_disk_usage_threshold_nothing_runs(args, monkeypatch):
    from ansible_collections.nodemaint.image_gc.plugins.module_utils import _disk
    monkeypatch.setattr(_disk, 'filesystem_usage', lambda path: {'fs_used_percent': 10.0})
    runner = node_runner(V21)
    result = run_module(monkeypatch, prune, dict(args, disk_usage_threshold=80), runner).result
    assert result['changed'] is False and runner.removals() == []
    assert result['skip_reason'].startswith('image filesystem 10.0% used, below disk_usage_threshold 80%')
    assert [p['status'] for p in result['phases']] == ['skipped'] * 4
