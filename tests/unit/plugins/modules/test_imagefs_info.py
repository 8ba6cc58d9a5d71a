# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""imagefs_info: main() with the recorded crictl outputs behind a stub runner."""

import pytest

from ansible_collections.nodemaint.image_gc.plugins.modules import imagefs_info

from tests.unit.image_gc_testlib import (
    IMG_PAUSE, IMG_UNUSED3, V16, V21, VERSIONS, documented_returns, failure_before_any_command, node_runner,
    run_module)


@pytest.mark.parametrize('version, used', [(V16, 0), (V21, 10182656)])
@pytest.mark.parametrize('check_mode', [False, True])
def test_facts(version, used, check_mode, monkeypatch):
    runner = node_runner(version)
    out = run_module(monkeypatch, imagefs_info, {'largest': 1}, runner, check_mode=check_mode)
    assert not out.failed, out.result
    result = out.result
    assert result['changed'] is False
    assert runner.removals() == []
    facts = result['imagefs']
    doc = documented_returns(imagefs_info)
    assert set(result) == {'changed', 'imagefs'} and set(doc) == {'imagefs'}
    assert set(facts) == set(doc['imagefs']['contains'])
    assert facts['image_fs_used_bytes'] == used                 # the runtime's own figure (CRI)
    fs = facts['filesystem']                                     # the filesystem's, read with statvfs
    assert fs['size_bytes'] > 0 and fs['used_bytes'] >= 0 and fs['source'].startswith('statvfs of /')
    assert facts['filesystem_unknown'] is None
    assert facts['containers'] == {'exited': 2, 'running': 1}
    assert facts['sandboxes'] == {'ready': 2, 'notready': 1}
    assert facts['images'] == 5
    # pod_aware (the default): exit1, the newest exited instance in the Ready pod feas-c, stays, and
    # with it the old busybox:1 image it uses (the seed counted 3)
    assert facts['reclaimable_images'] == 2
    assert [i['id'] for i in facts['largest_images']] == [IMG_PAUSE]
    assert facts['sandbox_image'] == ('docker.io/feas/pause:1' if version == V16 else None)


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
