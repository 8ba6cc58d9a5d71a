# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ctr_content_prune: main() with the recorded ctr outputs behind a stub runner."""

import json
import re

import pytest

from ansible_collections.nodemaint.image_gc.plugins.modules import ctr_content_prune

from tests.unit.image_gc_testlib import (
    CRICTL_PREFIX, CTR, CTR_PREFIX, IMG_UNUSED3, SOCKET, V16, V21, VERSIONS, documented_returns, failure_before_any_command,
    Reply, fake_discovery, fixture_text, ids, node_runner, recorded_reply, run_module)

LAYER_5F4D = 'sha256:5f4de468a2d94fad44b1fe435d8816e6a09e28f9f271edf57ce788021fd9fd55'
LAYER_F51D = 'sha256:f51d6ffc6841a4945a2c9f5919c130cc077317b4d1f87750cc78e070b738bb4b'
# the CRI's snapshotters, read before the prune (it runs only with exactly one)
SNAPSHOTTERS = [CRICTL_PREFIX + ['info', '--output', 'json'], CRICTL_PREFIX + ['imagefsinfo', '--output', 'json']]


@pytest.fixture
def args(tmp_path):
    return {'lock_path': str(tmp_path / 'gc.lock'), 'lock_wait': '1s'}


def after_rmi_runner(version):
    """The recorded store after `crictl rmi --prune`, then after the prune."""
    runner = node_runner(version)
    runner.on('ctr content ls', recorded_reply(version, 'ctr-content-ls-after-rmi.txt'),
              recorded_reply(version, 'ctr-content-ls-after-prune.txt'))
    return runner


def check_against_return_doc(result):
    doc = documented_returns(ctr_content_prune)
    keys = set(result) - {'changed', 'diff'}
    assert keys <= set(doc)
    assert set(k for k, v in doc.items() if v['returned'] == 'always') <= keys
    assert ('skip_reason' in result) == result['skipped']
    for item in result['blobs']:
        assert set(item) == set(doc['blobs']['contains'])


@pytest.mark.parametrize('version, expected', [(V16, [LAYER_5F4D]), (V21, [LAYER_5F4D, LAYER_F51D])])
def test_check_mode_and_real_run_on_the_recorded_store(version, expected, args, monkeypatch):
    check_runner = after_rmi_runner(version)
    check = run_module(monkeypatch, ctr_content_prune, args, check_runner, check_mode=True).result
    assert check_runner.calls == SNAPSHOTTERS + [CTR_PREFIX + ['content', 'ls'],
                                                 CTR_PREFIX + ['content', 'prune', 'references', '--dry']]
    assert ids(check['blobs']) == expected
    assert check['changed'] is True
    check_against_return_doc(check)
    runner = after_rmi_runner(version)
    real = run_module(monkeypatch, ctr_content_prune, args, runner).result
    assert runner.calls == SNAPSHOTTERS + [CTR_PREFIX + ['content', 'ls'], CTR_PREFIX + ['content', 'prune', 'references'],
                                           CTR_PREFIX + ['content', 'ls']]
    assert ids(real['blobs']) == expected
    assert real['content_space_reclaimed'] == 1028000 * len(expected)
    assert real['labels_removed'] == len(expected)
    assert real['changed'] is True and real['skipped'] is False
    check_against_return_doc(real)


@pytest.mark.parametrize('version', VERSIONS)
def test_second_run_is_not_changed(version, args, monkeypatch):
    runner = node_runner(version, state='after')
    result = run_module(monkeypatch, ctr_content_prune, args, runner).result
    assert result['changed'] is False
    assert result['blobs'] == [] and result['labels_removed'] == 0


def test_assume_removed_images_is_no_option_any_more(args, monkeypatch):
    msg = failure_before_any_command(monkeypatch, ctr_content_prune, dict(args, assume_removed_images=[IMG_UNUSED3]),
                                     check_mode=True)
    assert 'assume_removed_images' in msg


def test_peer_mirror_skip(args, monkeypatch, peer_root):
    (peer_root / 'etc/rancher/k3s/config.yaml').write_text('embedded-registry: true\n')
    runner = node_runner(V21)
    result = run_module(monkeypatch, ctr_content_prune, dict(args, peer_mirror_action='skip'), runner,
                        peer_root=peer_root).result
    assert result['skipped'] is True and result['changed'] is False
    assert 'embedded registry mirror is enabled' in result['skip_reason']
    assert runner.calls == []
    check_against_return_doc(result)


def test_a_runtime_handler_with_its_own_snapshotter_skips_the_prune(args, monkeypatch):
    """DERIVED: the recorded crictl info with a RuntimeClass handler whose snapshotter is devmapper."""
    info = json.loads(fixture_text(V16, 'info.json'))
    info['config']['containerd']['runtimes']['kata'] = {'runtimeType': 'io.containerd.kata.v2', 'snapshotter': 'devmapper'}
    runner = after_rmi_runner(V16)
    runner.on('crictl info --output json', Reply(0, json.dumps(info), ''))
    for check_mode in (True, False):
        result = run_module(monkeypatch, ctr_content_prune, args, runner, check_mode=check_mode).result
        assert result['skipped'] is True and result['changed'] is False and result['blobs'] == []
        assert result['skip_reason'].startswith('the CRI uses more than one snapshotter (overlayfs; devmapper for '
                                                'runtime handler kata)')
        check_against_return_doc(result)
    assert runner.ran('ctr') == []


def test_without_crictl_the_snapshotters_are_unknown_and_the_prune_is_skipped(args, monkeypatch):
    runner = after_rmi_runner(V21)
    no_crictl = fake_discovery(env={'PATH': '/usr/bin'}, executables={CTR}, sockets={SOCKET})
    result = run_module(monkeypatch, ctr_content_prune, args, runner, discovery=no_crictl).result
    assert result['skipped'] is True and result['changed'] is False
    assert result['skip_reason'].startswith("the CRI's snapshotters could not be read (crictl not found"), \
        result['skip_reason']
    assert runner.calls == []


def test_crictl_that_cannot_reach_containerd_fails_the_prune_naming_the_socket(args, monkeypatch):
    runner = after_rmi_runner(V21)
    runner.on('crictl info --output json', recorded_reply(V21, 'crictl-nosocket'))
    out = run_module(monkeypatch, ctr_content_prune, args, runner)
    assert out.failed
    assert 'is containerd running' in out.result['msg'] and 'runtime_endpoint' in out.result['msg']
    assert runner.ran('ctr') == []


def test_ctr_no_socket_fails(args, monkeypatch):
    runner = node_runner(V21)
    runner.on('ctr content ls', recorded_reply(V21, 'ctr-nosocket'))
    out = run_module(monkeypatch, ctr_content_prune, args, runner)
    assert out.failed
    assert out.result['msg'].startswith('ctr content ls failed: ctr: cannot access socket')
    assert out.result['stderr'] == fixture_text(V21, 'ctr-nosocket.err')
    assert runner.removals() == []


@pytest.mark.parametrize('option, value', [('peer_mirror_action', 'ignore'), ('timeout', '10x'), ('lock_wait', '-1')])
def test_bad_option_fails_and_runs_nothing(option, value, args, monkeypatch):
    assert option in failure_before_any_command(monkeypatch, ctr_content_prune, dict(args, **{option: value}))


def test_empty_namespace_message_names_the_module_option(args, monkeypatch):
    msg = failure_before_any_command(monkeypatch, ctr_content_prune, dict(args, content_namespace=''))
    assert re.match(r'content_namespace: ', msg), msg
