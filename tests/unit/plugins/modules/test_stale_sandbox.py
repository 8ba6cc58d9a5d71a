# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""stale_sandbox: main() with the recorded crictl outputs behind a stub runner."""

import re
from types import SimpleNamespace

import pytest

from ansible_collections.nodemaint.image_gc.plugins.modules import stale_sandbox

from tests.unit.image_gc_testlib import (
    CRICTL_PREFIX, IDS, V21, VERSIONS, documented_returns, failure_before_any_command, ids, node_discovery,
    node_runner, run_module, running_kubelet)


@pytest.fixture
def args(tmp_path):
    return {'lock_path': str(tmp_path / 'gc.lock'), 'lock_wait': '1s'}


def kubelet(tmp_path, version=V21):
    """The recorded node with a kubelet running whose live root tracks the Ready pods feas-b and
    feas-c (not feas-a): the discovery to pass to run_module."""
    return node_discovery(proc=running_kubelet(tmp_path, version)[0])


def check_against_return_doc(result):
    doc = documented_returns(stale_sandbox)
    keys = set(result) - {'changed', 'diff'}
    always = set(k for k, v in doc.items() if v['returned'] == 'always')
    assert keys - {'commands'} == always
    assert set(doc) == always | {'commands'}            # commands: only when asked for
    for item in result['sandboxes']:
        assert set(item) == set(doc['sandboxes']['contains'])


@pytest.fixture(params=VERSIONS)
def check_then_real(request, args, monkeypatch, tmp_path):
    """stale_sandbox in check mode, then for real (return_commands: true), over the recorded node of each
    version with a running kubelet whose live root tracks feas-b and feas-c: both results and runners."""
    version = request.param
    found = kubelet(tmp_path, version)
    check_runner, runner = node_runner(version), node_runner(version)
    check = run_module(monkeypatch, stale_sandbox, args, check_runner, discovery=found, check_mode=True).result
    real = run_module(monkeypatch, stale_sandbox, dict(args, return_commands=True), runner, discovery=found).result
    return SimpleNamespace(check=check, check_runner=check_runner, real=real, runner=runner, ids=IDS[version],
                           tmp_path=tmp_path)


def test_check_mode_reports_the_notready_sandbox_of_a_pod_that_is_not_live_as_changed(check_then_real):
    assert check_then_real.check['changed'] is True
    assert ids(check_then_real.check['sandboxes']) == [check_then_real.ids['feas-a']]


def test_check_mode_says_why_the_pod_is_not_live(check_then_real):
    """pod_aware (the default): feas-a's pod is not live - its only sandbox is NotReady, and the running
    kubelet's root (found in /proc, live) has no directory for it."""
    reason = check_then_real.check['sandboxes'][0]['reason']
    assert reason.startswith('NotReady, pod feas/feas-a is not live (its newest sandbox ')
    assert 'the kubelet does not track it (no %s/kubelet/pods/' % check_then_real.tmp_path in reason


def test_check_mode_removes_nothing(check_then_real):
    assert check_then_real.check_runner.removals() == []


def test_the_real_run_removes_what_check_mode_reported(check_then_real):
    assert check_then_real.real['changed'] is True
    assert ids(check_then_real.real['sandboxes']) == ids(check_then_real.check['sandboxes'])
    assert check_then_real.runner.removals() == [CRICTL_PREFIX + ['rmp', check_then_real.ids['feas-a']]]


def test_commands_are_every_command_the_run_ran(check_then_real):
    assert check_then_real.real['commands'] == check_then_real.runner.calls


def test_both_results_match_the_return_doc(check_then_real):
    check_against_return_doc(check_then_real.check)
    check_against_return_doc(check_then_real.real)


def test_without_a_live_kubelet_root_feas_a_stays(args, monkeypatch):
    """No kubelet running, no root at the distribution defaults: feas-a counts as live, its newest
    (only) sandbox stays, and the module says why."""
    runner = node_runner(V21)
    result = run_module(monkeypatch, stale_sandbox, args, runner).result
    assert result['changed'] is False and result['sandboxes'] == []
    assert dict((i['id'], i['reason']) for i in result['sandboxes_kept'])[IDS[V21]['feas-a']].startswith(
        'NotReady, but the newest sandbox of live pod feas/feas-a (no live kubelet root was found')
    assert runner.removals() == []


@pytest.mark.parametrize('version', VERSIONS)
def test_second_run_is_not_changed(version, args, monkeypatch):
    runner = node_runner(version, state='after')
    result = run_module(monkeypatch, stale_sandbox, args, runner).result
    assert result['changed'] is False and result['sandboxes'] == []
    assert runner.removals() == []


def test_sandbox_min_age_keeps_a_younger_sandbox(args, monkeypatch, tmp_path):
    runner = node_runner(V21)
    result = run_module(monkeypatch, stale_sandbox, dict(args, sandbox_min_age='3h'), runner,
                        discovery=kubelet(tmp_path)).result
    assert result['changed'] is False
    assert ids(result['sandboxes_kept']) == [IDS[V21]['feas-a']]
    assert 'younger than sandbox_min_age 3h' in result['sandboxes_kept'][0]['reason']
    assert runner.removals() == []


@pytest.mark.parametrize('extra', [{'namespaces': ['kube-system']}, {'exclude_namespaces': ['fe*']}])
def test_namespace_filters(extra, args, monkeypatch):
    runner = node_runner(V21)
    result = run_module(monkeypatch, stale_sandbox, dict(args, **extra), runner).result
    assert result['sandboxes'] == [] and ids(result['sandboxes_kept']) == [IDS[V21]['feas-a']]
    assert runner.removals() == []


def test_diff(args, monkeypatch, tmp_path):
    result = run_module(monkeypatch, stale_sandbox, args, node_runner(V21), discovery=kubelet(tmp_path),
                        check_mode=True, diff=True).result
    assert result['diff'] == {'before': {'sandboxes': [IDS[V21]['feas-a']]}, 'after': {'sandboxes': []}}


@pytest.mark.parametrize('option, value', [('sandbox_min_age', '10x'), ('sandbox_min_age', '-1'),
                                           ('sandbox_min_age', '1.5h'),
                                           ('batch_size', 0), ('timeout', 'soon')])
def test_bad_option_fails_and_runs_nothing(option, value, args, monkeypatch):
    assert repr(value) in failure_before_any_command(monkeypatch, stale_sandbox, dict(args, **{option: value}))


def test_bad_sandbox_min_age_message_names_the_module_option(args, monkeypatch):
    msg = failure_before_any_command(monkeypatch, stale_sandbox, dict(args, sandbox_min_age='10x'))
    assert re.match(r"sandbox_min_age: invalid duration '10x'", msg), msg
