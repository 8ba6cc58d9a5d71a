# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module does the Ansible way: old option names still work and warn, an unexpected
error reaches the user with its traceback, ``commands`` only when asked for."""

import re

import pytest

from ansible.module_utils.common import arg_spec

from ansible_collections.nodemaint.image_gc.plugins.module_utils import _adapter, _plan
from ansible_collections.nodemaint.image_gc.plugins.modules import crictl_prune, ctr_content_prune, stale_sandbox

from tests.unit.image_gc_testlib import (
    IDS, V21, failure_before_any_command, ids, node_discovery, node_runner, run_module, running_kubelet)


@pytest.fixture
def args(tmp_path):
    return {'lock_path': str(tmp_path / 'gc.lock'), 'lock_wait': '1s'}


@pytest.fixture
def deprecations(monkeypatch):
    """The deprecation warnings the module's argument validation gives Ansible, as dicts."""
    seen = []

    def deprecate(msg, version=None, date=None, deprecator=None, **kw):
        seen.append({'msg': msg, 'version': version, 'collection': getattr(deprecator, 'resolved_name', None)})
    monkeypatch.setattr(arg_spec, 'deprecate', deprecate)
    return seen


def of_alias(deprecations, alias):
    return [d for d in deprecations if "Alias '%s' is deprecated" % alias in d['msg']]


def test_stale_sandbox_old_min_age_still_sets_sandbox_min_age_and_warns(args, monkeypatch, deprecations, tmp_path):
    runner = node_runner(V21)
    # a kubelet whose live root does not track feas-a: its sandbox is garbage but for its age
    found_root = node_discovery(proc=running_kubelet(tmp_path, V21)[0])
    result = run_module(monkeypatch, stale_sandbox, dict(args, min_age='3h'), runner, discovery=found_root).result
    assert ids(result['sandboxes_kept']) == [IDS[V21]['feas-a']]
    assert 'younger than sandbox_min_age 3h' in result['sandboxes_kept'][0]['reason']
    found = of_alias(deprecations, 'min_age')
    assert found == [{'msg': found[0]['msg'], 'version': '1.0.0', 'collection': 'nodemaint.image_gc'}], deprecations


@pytest.mark.parametrize('module', [crictl_prune, ctr_content_prune], ids=['crictl_prune', 'ctr_content_prune'])
def test_old_namespace_still_sets_content_namespace_and_warns(module, args, monkeypatch, deprecations):
    # the value goes to content_namespace: an empty one is refused under that name
    msg = failure_before_any_command(monkeypatch, module, dict(args, namespace=''))
    assert re.match(r'content_namespace: ', msg), msg
    found = of_alias(deprecations, 'namespace')
    assert [(d['version'], d['collection']) for d in found] == [('1.0.0', 'nodemaint.image_gc')], deprecations


def test_commands_are_left_out_by_default(args, monkeypatch):
    result = run_module(monkeypatch, stale_sandbox, args, node_runner(V21), check_mode=True).result
    assert 'commands' not in result


def test_commands_are_returned_at_verbosity_two(args, monkeypatch):
    runner = node_runner(V21)
    result = run_module(monkeypatch, stale_sandbox, args, runner, check_mode=True, verbosity=2).result
    assert result['commands'] == runner.calls


def test_a_phase_that_raises_unexpectedly_fails_with_its_traceback(args, monkeypatch):
    def broken(*a, **kw):
        raise KeyError('createdAt')
    monkeypatch.setattr(_plan, 'plan_sandboxes', broken)
    out = run_module(monkeypatch, stale_sandbox, args, node_runner(V21))
    assert out.failed
    assert out.result['msg'] == "unexpected KeyError: 'createdAt'"
    assert out.result['exception'].startswith('Traceback') and 'in broken' in out.result['exception']


def test_an_unexpected_error_outside_the_phases_fails_with_its_traceback(args, monkeypatch):
    def broken(self):
        raise KeyError('lock')
    monkeypatch.setattr(_adapter.ModuleLock, '__enter__', broken)
    out = run_module(monkeypatch, stale_sandbox, args, node_runner(V21))
    assert out.failed
    assert out.result['msg'].startswith("unexpected KeyError: 'lock' (a bug of nodemaint.image_gc")
    assert 'Traceback' in out.result['exception'] and 'in broken' in out.result['exception']
