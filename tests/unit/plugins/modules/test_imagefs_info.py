# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""imagefs_info: main() with the recorded crictl outputs behind a stub runner."""

from types import SimpleNamespace

import pytest

from ansible_collections.nodemaint.image_gc.plugins.modules import imagefs_info

from tests.unit.image_gc_testlib import (
    IMG_PAUSE, IMG_UNUSED3, V16, V21, VERSIONS, documented_returns, failure_before_any_command, node_runner,
    run_module)


USED = {V16: 0, V21: 10182656}     # the runtime's image_fs_used_bytes on each recorded node


@pytest.fixture(params=[(version, check_mode) for check_mode in (False, True) for version in (V16, V21)],
                ids=lambda p: '%s%s' % (p[0], '-check' if p[1] else ''))
def facts_run(request, monkeypatch):
    """imagefs_info (largest: 1) over the recorded node of each version, in check mode and not: the module's
    exit, its stub runner and the version."""
    version, check_mode = request.param
    runner = node_runner(version)
    out = run_module(monkeypatch, imagefs_info, {'largest': 1}, runner, check_mode=check_mode)
    return SimpleNamespace(out=out, result=out.result, facts=out.result.get('imagefs'), runner=runner,
                           version=version)


def test_facts_do_not_fail(facts_run):
    assert not facts_run.out.failed, facts_run.result


def test_facts_change_and_remove_nothing(facts_run):
    assert facts_run.result['changed'] is False
    assert facts_run.runner.removals() == []


def test_facts_return_imagefs_only_with_every_documented_key(facts_run):
    doc = documented_returns(imagefs_info)
    assert set(facts_run.result) == {'changed', 'imagefs'}
    assert set(doc) == {'imagefs'}
    assert set(facts_run.facts) == set(doc['imagefs']['contains'])


def test_image_fs_used_bytes_is_the_runtimes_own_figure(facts_run):
    assert facts_run.facts['image_fs_used_bytes'] == USED[facts_run.version]


def test_filesystem_is_read_with_statvfs(facts_run):
    fs = facts_run.facts['filesystem']
    assert fs['size_bytes'] > 0
    assert fs['used_bytes'] >= 0
    assert fs['source'].startswith('statvfs of /')
    assert facts_run.facts['filesystem_unknown'] is None


def test_containers_sandboxes_and_images_are_counted_by_state(facts_run):
    assert facts_run.facts['containers'] == {'exited': 2, 'running': 1}
    assert facts_run.facts['sandboxes'] == {'ready': 2, 'notready': 1}
    assert facts_run.facts['images'] == 5


def test_reclaimable_images_leave_out_the_image_of_the_newest_exited_instance_of_a_ready_pod(facts_run):
    """pod_aware (the default): exit1, the newest exited instance in the Ready pod feas-c, stays, and with it
    the old busybox:1 image it uses (the seed counted 3)."""
    assert facts_run.facts['reclaimable_images'] == 2


def test_largest_1_is_the_largest_image(facts_run):
    assert [i['id'] for i in facts_run.facts['largest_images']] == [IMG_PAUSE]


def test_sandbox_image_is_the_one_crictl_info_names(facts_run):
    """containerd 1.6's crictl info names it; 2.1's does not."""
    assert facts_run.facts['sandbox_image'] == ('docker.io/feas/pause:1' if facts_run.version == V16 else None)


def test_image_exclude_lowers_the_estimate(monkeypatch):
    result = run_module(monkeypatch, imagefs_info, {'image_exclude': ['docker.io/feas/unused:*']},
                        node_runner(V21)).result
    assert result['imagefs']['reclaimable_images'] == 1      # busybox:1 (exit1's old busybox:1 stays)


@pytest.mark.parametrize('args, name', [({'largest': -1}, 'largest'), ({'timeout': '10x'}, 'timeout'),
                                        ({'batch_size': 0}, 'batch_size')])
def test_bad_option_fails_and_runs_nothing(args, name, monkeypatch):
    assert failure_before_any_command(monkeypatch, imagefs_info, args).startswith(name + ':')


@pytest.mark.parametrize('version', VERSIONS)
def test_after_state(version, monkeypatch):
    facts = run_module(monkeypatch, imagefs_info, {}, node_runner(version, state='after')).result['imagefs']
    assert facts['containers'] == {'running': 1}
    assert facts['sandboxes'] == {'ready': 2}
    assert facts['reclaimable_images'] == 0
    assert IMG_UNUSED3 not in [i['id'] for i in facts['largest_images']]
