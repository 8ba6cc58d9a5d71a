# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Over 300 lines: many cases of one subject, Engine over the recorded node (settings, the sequence, failures, peer mirrors, disk state, the kubelet's rules).
"""_engine: the four phases against the recorded sequence, check mode vs real run, partial failures,
the second run, peer mirror detection, disk state, settings validation."""

import json
from types import SimpleNamespace

import pytest

from ansible_collections.nodemaint.image_gc.plugins.module_utils import _disk, _engine, _mirror, _node, _settings, _text, _units
from ansible_collections.nodemaint.image_gc.plugins.module_utils._common import CommandError, ImageGCError

from tests.unit.image_gc_testlib import (
    CRICTL_PREFIX, CTR_PREFIX, IDS, IMG_BUSYBOX1, IMG_BUSYBOX2, IMG_OLD_BUSYBOX1, IMG_PAUSE, IMG_UNUSED3, V16,
    V21, VERSIONS, Reply, command_key, fixture_json, fixture_text, ids, json_reply, make_engine, NOW_NS,
    node_runner, run_phase, running_kubelet)

PHASES = ('containers', 'sandboxes', 'images', 'content')
PS = CRICTL_PREFIX + ['ps', '--all', '--output', 'json']
PODS = CRICTL_PREFIX + ['pods', '--output', 'json']
IMAGES = CRICTL_PREFIX + ['images', '--output', 'json']
INFO = CRICTL_PREFIX + ['info', '--output', 'json']
CONTENT_LS = CTR_PREFIX + ['content', 'ls']
IMAGEFSINFO = CRICTL_PREFIX + ['imagefsinfo', '--output', 'json']


def images_check(version):
    """``ctr images check`` asked of the names of the images that stay only (the sandbox image and
    the sleeper's): the three that go would go whatever it says."""
    staying = [i for i in fixture_json(version, 'images.json')['images'] if i['id'] in (IMG_PAUSE, IMG_BUSYBOX2)]
    assert len(staying) == 2
    names = sorted({n for i in staying for n in [i['id']] + i.get('repoTags', []) + i.get('repoDigests', [])})
    return CTR_PREFIX + ['images', 'check', '--snapshotter', 'overlayfs'] + ['name=="%s"' % n for n in names]


def phase_3_asks(version):
    """Phase 3's questions before it plans: crictl info for the sandbox image on 1.6 (which pins
    no image that looks like one), the image volumes of the container that stays, then the CRI's
    snapshotters (crictl info, imagefsinfo) and ctr images check for the images that stay."""
    if version == V16:
        return [INFO, inspect('sleeper', version=version), IMAGEFSINFO, images_check(version)]
    return [inspect('sleeper', version=version), INFO, IMAGEFSINFO, images_check(version)]


def inspect(*names, version=V16):
    """``crictl inspect`` of the containers that stay, for their image volumes (one per run)."""
    return CRICTL_PREFIX + ['inspect', '--quiet', '--output', 'json'] + sorted(IDS[version][n] for n in names)


def run_all(engine, check_mode):
    """The four phases through Engine.run (no disk report): {phase: result}."""
    run = engine.run(check_mode=check_mode)
    assert [r['phase'] for r in run['phases']] == list(PHASES)
    return dict((r['phase'], r) for r in run['phases'])


def engine_of_all_phases(runner, **kwargs):
    """An Engine over ``runner`` that runs the four phases (no disk reports)."""
    return make_engine(runner, phases=PHASES, **kwargs)


# -- settings --------------------------------------------------------------------------------

def test_validate_settings_defaults():
    settings = _settings.validate_settings({})
    assert settings['timeout'] == 120
    assert settings['created_min_age'] == 3600
    assert settings['sandbox_min_age'] == 600
    assert settings['image_min_age'] == 600
    assert settings['batch_size'] == 100
    assert settings['content_namespace'] == 'k8s.io'


@pytest.mark.parametrize('key, value, message', [
    ('sandbox_min_age', '10x', 'sandbox_min_age: invalid duration'),
    ('image_min_age', 'soon', 'image_min_age: invalid duration'),
    ('timeout', True, 'timeout: invalid duration'),
    ('batch_size', 0, 'batch_size: expected a whole number of 1 or more'),
    ('batch_size', '5', 'batch_size: expected a whole number of 1 or more'),
    ('batch_size', True, 'batch_size: expected a whole number of 1 or more'),
    ('containers', 'yes', 'containers: expected true or false'),
    ('image_exclude', 'docker.io/*', 'image_exclude: expected a list of non-empty strings'),
    ('namespaces', ['ok', ''], 'namespaces: expected a list of non-empty strings'),
    ('peer_mirror_action', 'ignore', 'peer_mirror_action: expected one of warn, skip'),
    ('crictl_path', '', 'crictl_path: expected a non-empty string'),
    ('bogus', 1, 'unknown setting(s): bogus'),
])
def test_validate_settings_rejects_naming_the_key(key, value, message):
    with pytest.raises(ImageGCError) as exc:
        _settings.validate_settings({key: value})
    assert str(exc.value).startswith(message)


def test_bad_setting_runs_no_command_and_no_discovery():
    runner = node_runner(V16)

    class NoDiscovery(object):
        def resolve(self, **kwargs):
            raise AssertionError('discovery must not run with bad settings')
    with pytest.raises(ImageGCError, match='sandbox_min_age'):
        _engine.Engine({'sandbox_min_age': '10x'}, PHASES, runner=runner, discovery=NoDiscovery())
    assert runner.calls == []


# -- the whole recorded sequence -------------------------------------------------------------

def expected_real_commands(version):
    """Phase 2 plans with phase 1's listing, phase 3 with both and the images (phase_3_asks);
    containers are listed again right before the rmi batch."""
    ids_ = IDS[version]
    return [
        PS, CRICTL_PREFIX + ['rm', ids_['exit0'], ids_['exit1']],
        PODS, CRICTL_PREFIX + ['rmp', ids_['feas-a']],
        IMAGES] + phase_3_asks(version) + [
        PS, CRICTL_PREFIX + ['rmi', IMG_UNUSED3, IMG_OLD_BUSYBOX1, IMG_BUSYBOX1],
        CONTENT_LS, CTR_PREFIX + ['content', 'prune', 'references'], CONTENT_LS,
    ]


@pytest.fixture(params=VERSIONS)
def real_run(request, peer_root):
    """One real run of the four phases over the recorded node: its version, runner and results by phase."""
    runner = node_runner(request.param)
    results = run_all(engine_of_all_phases(runner, peer_root=peer_root), check_mode=False)
    return request.param, runner, results


def test_a_real_run_runs_the_recorded_commands_with_the_timeout(real_run):
    version, runner = real_run[:2]
    assert runner.calls == expected_real_commands(version)
    assert all(t == 150 for t in runner.timeouts)


def test_a_real_run_removes_the_recorded_garbage(real_run):
    version, results = real_run[0], real_run[2]
    ids_ = IDS[version]
    assert ids(results['containers']['removed']) == [ids_['exit0'], ids_['exit1']]
    assert ids(results['sandboxes']['removed']) == [ids_['feas-a']]
    assert ids(results['images']['removed']) == [IMG_UNUSED3, IMG_OLD_BUSYBOX1, IMG_BUSYBOX1]
    assert results['images']['bytes'] == 1028854 + 1028853 + 1028856


def test_a_real_run_keeps_the_sandbox_image_and_images_in_use_saying_why(real_run):
    version, results = real_run[0], real_run[2]
    kept = dict((i['id'], i['reason']) for i in results['images']['kept'])
    assert kept[IMG_PAUSE] == ('sandbox (pause) image of the runtime (docker.io/feas/pause:1)' if version == V16
                               else 'pinned by the runtime')
    assert kept[IMG_BUSYBOX2].startswith('in use by container sleeper')
    assert results['images']['sandbox_image'] == ('docker.io/feas/pause:1' if version == V16 else None)


def test_an_image_used_only_by_removed_containers_goes_too(real_run):
    reasons = dict((i['id'], i['reason']) for i in real_run[2]['images']['removed'])
    assert reasons[IMG_OLD_BUSYBOX1] == 'used only by containers removed in this run'


def test_the_content_phase_reports_the_blobs_that_vanished(real_run):
    version, results = real_run[0], real_run[2]
    # content: the blobs that vanished between the recorded listings
    before = fixture_text(version, 'ctr-content-ls-after-rmi.txt')
    after = fixture_text(version, 'ctr-content-ls-after-prune.txt')
    gone = sorted(line.split('\t')[0] for line in before.splitlines()[1:] if line.split('\t')[0] not in after)
    assert ids(results['content']['removed']) == gone
    assert results['content']['labels_removed'] == (1 if version == V16 else 2)


def test_every_phase_of_a_real_run_changed_and_succeeded(real_run):
    for phase, result in real_run[2].items():
        assert result['changed'] is True, phase
        assert result['failed'] == [] and result['gone'] == [] and result['check_mode'] is False
        assert result['status'] == 'ok', phase


def test_each_phase_reports_exactly_the_commands_it_ran(real_run):
    runner, results = real_run[1:]
    assert sum((r['commands'] for r in results.values()), []) == runner.calls


@pytest.mark.parametrize('version', VERSIONS)
def test_check_mode_runs_no_removal_and_reports_what_the_real_run_removes(version, peer_root):
    check_runner = node_runner(version)
    check = run_all(engine_of_all_phases(check_runner, peer_root=peer_root), check_mode=True)
    assert check_runner.removals() == []
    assert check_runner.calls == [PS, PODS, IMAGES] + phase_3_asks(version) + [
        CONTENT_LS, CTR_PREFIX + ['content', 'prune', 'references', '--dry']]
    real = run_all(engine_of_all_phases(node_runner(version), peer_root=peer_root), check_mode=False)
    for phase in ('containers', 'sandboxes', 'images'):
        assert ids(check[phase]['removed']) == ids(real[phase]['removed']), phase
        assert [i['reason'] for i in check[phase]['removed']] == [i['reason'] for i in real[phase]['removed']]
        assert check[phase]['changed'] is True and check[phase]['check_mode'] is True
    assert check['images']['bytes'] == real['images']['bytes']
    # content: check mode plans over the store as it will be once the planned images are gone.
    # On 2.1.9 that is exactly what the recorded real run freed. On 1.6 the recorded store after
    # upstream `rmi --prune` also lacks the pause image (which we keep), so our check mode
    # additionally names pause's layer blob f51d..., which a real run of ours frees too.
    pause_layer = 'sha256:f51d6ffc6841a4945a2c9f5919c130cc077317b4d1f87750cc78e070b738bb4b'
    extra = [pause_layer] if version == V16 else []
    assert ids(check['content']['removed']) == sorted(ids(real['content']['removed']) + extra)
    assert check['content']['labels_removed'] == 2
    assert check['content']['changed'] is True


@pytest.mark.parametrize('version', VERSIONS)
def test_second_real_run_on_the_after_state_removes_nothing(version, peer_root):
    runner = node_runner(version, state='after')
    results = run_all(engine_of_all_phases(runner, peer_root=peer_root), check_mode=False)
    for phase, result in results.items():
        assert result['removed'] == [] and result['failed'] == [], phase
        assert result['changed'] is False, phase
    assert [argv for argv in runner.removals() if command_key(argv)[0] == 'crictl'] == []
    assert results['content']['labels_removed'] == 0


def test_images_phase_alone_keeps_the_image_of_exited_containers(peer_root):
    runner = node_runner(V21)
    engine = make_engine(runner, settings={'containers': False}, peer_root=peer_root)
    result = run_phase(engine, 'images')
    assert ids(result['removed']) == [IMG_UNUSED3, IMG_BUSYBOX1]
    kept = dict((i['id'], i['reason']) for i in result['kept'])
    assert kept[IMG_OLD_BUSYBOX1].startswith('in use by container exit1')
    assert runner.ran('crictl', 'rm') == []


def test_sandbox_phase_frees_the_images_of_its_containers(peer_root):
    """rmp removes feas-a with its exited exit0; exit1 (feas-c) stays, so the old busybox stays."""
    runner = node_runner(V16)
    engine = make_engine(runner, peer_root=peer_root)
    run_phase(engine, 'sandboxes', check_mode=True)
    assert sorted(engine.node.removed['containers']) == [IDS[V16]['exit0']]
    result = run_phase(engine, 'images', check_mode=True)
    assert IMG_OLD_BUSYBOX1 not in ids(result['removed'])


def _record_file(tmp_path, first_seen):
    path = tmp_path / 'images.json'
    path.write_text(json.dumps({'version': 2, 'updated': NOW_NS // 10 ** 9 - 1, 'images': {
        image_id: {'first_seen': NOW_NS // 10 ** 9 - ago, 'last_used': None, 'refs': []}
        for image_id, ago in first_seen.items()}}))
    return str(path)


def test_image_min_age_is_measured_from_the_record_not_the_content_store(tmp_path, peer_root):
    """Issue 25 item 5: image age is the time since the collection first saw the image (the
    kubelet's firstDetected), so the images phase reads no content store (no ctr)."""
    runner = node_runner(V16)
    path = _record_file(tmp_path, {IMG_BUSYBOX1: 7, IMG_UNUSED3: 86400, IMG_OLD_BUSYBOX1: 86400})
    engine = make_engine(runner, settings={'image_min_age': '8s', 'image_record_path': path}, peer_root=peer_root)
    run_phase(engine, 'containers', check_mode=True)
    result = run_phase(engine, 'images', check_mode=True)
    assert CONTENT_LS not in runner.calls and runner.ran('ctr', 'content') == []    # ages: no content store read
    kept = dict((i['id'], i['reason']) for i in result['kept'])
    assert kept[IMG_BUSYBOX1] == 'younger than image_min_age 8s (first seen 7s ago, per the last-use record)'
    assert ids(result['removed']) == [IMG_UNUSED3, IMG_OLD_BUSYBOX1]


@pytest.mark.parametrize('version', VERSIONS)
def test_default_image_min_age_keeps_every_image_the_record_does_not_know(version, tmp_path, peer_root):
    """No record yet: every image is first seen now (as the kubelet after a restart), so with the
    default image_min_age (10m) an unused image stays unless a container shows it is older (the
    creation of a container that used it: 2 h ago for the old busybox:1)."""
    runner = node_runner(version)
    engine = make_engine(runner, settings={'image_min_age': None, 'image_record_path': str(tmp_path / 'r.json')},
                         peer_root=peer_root)
    assert engine.settings['image_min_age'] == 600
    images = engine.run()['phases'][2]
    kept = dict((i['id'], i['reason']) for i in images['kept'])
    assert kept[IMG_UNUSED3] == 'younger than image_min_age 10m (first seen 0s ago, per the last-use record)'
    assert IMG_UNUSED3 not in ids(images['removed'])


def test_a_missing_ctr_fails_only_what_uses_it(peer_root):
    from image_gc_testlib import fake_discovery, CRICTL, SOCKET
    discovery = fake_discovery(env={'PATH': '/usr/local/bin'}, executables={CRICTL}, sockets={SOCKET})
    runner = node_runner(V16)
    run = make_engine(runner, settings={'image_min_age': '1h'}, discovery=discovery, peer_root=peer_root).run()
    status = dict((r['phase'], r['status']) for r in run['phases'])
    # the images phase, image_min_age included, needs no ctr (issue 25 item 5)
    assert status == {'containers': 'ok', 'sandboxes': 'ok', 'images': 'ok', 'content': 'failed'}
    error = run['phases'][3]['error']
    assert error.startswith('ctr not found. Tried: ') and 'ctr_path' in error


def test_a_missing_crictl_fails_before_anything_runs(peer_root):
    from image_gc_testlib import fake_discovery, CTR, SOCKET
    discovery = fake_discovery(env={'PATH': '/usr/bin'}, executables={CTR}, sockets={SOCKET})
    with pytest.raises(ImageGCError, match='crictl not found'):
        make_engine(node_runner(V16), discovery=discovery)
    # the content prune alone needs no crictl
    assert make_engine(node_runner(V16), phases=('content',), discovery=discovery, peer_root=peer_root).run()[
        'status'] == 'ok'


def test_batch_size_applies_to_the_engine(peer_root):
    runner = node_runner(V21)
    engine = make_engine(runner, settings={'batch_size': 2}, peer_root=peer_root)
    run_phase(engine, 'containers')
    run_phase(engine, 'images')
    rmi = runner.ran('crictl', 'rmi')
    assert rmi == [CRICTL_PREFIX + ['rmi', IMG_UNUSED3, IMG_OLD_BUSYBOX1], CRICTL_PREFIX + ['rmi', IMG_BUSYBOX1]]


# -- failures --------------------------------------------------------------------------------

def test_partial_failure_is_reported_and_the_phase_goes_on(peer_root):
    ids_ = IDS[V16]
    runner = node_runner(V16)
    # DERIVED from rm-running.err: crictl refused exit1 (say it was restarted); exit0 went.
    err = fixture_text(V16, 'rm-running.err').replace(
        '76e0cb7f55ba8cc754ba3588bf74e1f1a4bb78c5b01f25f20c4e339b9060349c', ids_['exit1'])
    runner.on('crictl rm', Reply(1, ids_['exit0'] + '\n', err))
    still = fixture_json(V16, 'ps-a.json')
    still['containers'] = [c for c in still['containers'] if c['metadata']['name'] != 'exit0']
    runner.on('crictl ps --all --output json', json_reply(V16, fixture_json(V16, 'ps-a.json')), json_reply(V16, still))
    engine = make_engine(runner, peer_root=peer_root)
    result = run_phase(engine, 'containers')
    assert ids(result['removed']) == [ids_['exit0']]
    assert [(f['id'], f['msg']) for f in result['failed']] == [
        (ids_['exit1'], 'container "%s" is running, please stop it first' % ids_['exit1'])]
    assert result['failed'][0]['name'] == 'exit1'
    assert result['changed'] is True
    assert result['warnings'] == ['could not remove container %s: container "%s" is running, please stop it first'
                                  % (ids_['exit1'], ids_['exit1'])]
    # the images phase then still protects exit1's image (exit1 was not removed)
    images = run_phase(engine, 'images')
    assert IMG_OLD_BUSYBOX1 not in ids(images['removed'])


def test_already_gone_item_is_gone_not_failed_and_not_a_change(peer_root):
    ids_ = IDS[V21]
    runner = node_runner(V21)
    # DERIVED from rm-missing (crictl rm deadbeef): the sandbox was removed by the kubelet meanwhile.
    missing = fixture_text(V21, 'rm-missing.err').replace('deadbeef', ids_['feas-a'])
    runner.on('crictl rmp', Reply(1, '', missing))
    pods_after = fixture_json(V21, 'pods.json')
    pods_after['items'] = [p for p in pods_after['items'] if p['metadata']['name'] != 'feas-a']
    runner.on('crictl pods --output json', json_reply(V21, fixture_json(V21, 'pods.json')), json_reply(V21, pods_after))
    result = run_phase(make_engine(runner, peer_root=peer_root), 'sandboxes')
    assert ids(result['gone']) == [ids_['feas-a']]
    assert result['failed'] == [] and result['removed'] == []
    assert result['changed'] is False


def test_crictl_disappears_before_removal_all_failed_naming_crictl_path(peer_root):
    runner = node_runner(V16)
    runner.on('crictl rm', Reply(127, '', '/usr/local/bin/crictl: No such file or directory'))
    result = run_phase(make_engine(runner, peer_root=peer_root), 'containers')
    assert result['removed'] == [] and result['changed'] is False
    assert sorted(ids(result['failed'])) == sorted([IDS[V16]['exit0'], IDS[V16]['exit1']])
    assert all('crictl_path' in f['msg'] for f in result['failed'])


def test_listing_failure_raises_a_clear_error(peer_root):
    runner = node_runner(V16)
    runner.on('crictl ps --all --output json', Reply(127, '', '/usr/local/bin/crictl: No such file or directory'))
    engine = make_engine(runner, peer_root=peer_root)
    with pytest.raises(CommandError) as exc:
        run_phase(engine, 'containers')
    assert 'crictl_path' in str(exc.value)
    assert runner.removals() == []


# -- content phase and peer mirrors ----------------------------------------------------------

def test_peer_mirror_none(peer_root):
    assert _mirror.detect_peer_mirror(str(peer_root)) is None


def test_spegel_process_warns_and_still_prunes(peer_root):
    (peer_root / 'proc' / '4242').mkdir()
    (peer_root / 'proc' / '4242' / 'comm').write_text('spegel\n')
    (peer_root / 'proc' / '1').mkdir()
    (peer_root / 'proc' / '1' / 'comm').write_text('systemd\n')
    assert _mirror.detect_peer_mirror(str(peer_root)) == 'Spegel is running (pid 4242)'
    runner = node_runner(V21)
    result = run_phase(make_engine(runner, peer_root=peer_root), 'content', check_mode=True)
    assert result['skipped'] is False
    assert any(w.startswith('Spegel is running (pid 4242)') and 'peer_mirror_action=skip' in w
               for w in result['warnings'])


@pytest.mark.parametrize('relpath, text', [
    ('etc/rancher/k3s/config.yaml', 'write-kubeconfig-mode: "0644"\nembedded-registry: true\n'),
    ('etc/rancher/rke2/config.yaml', 'embedded-registry: "true"  # p2p\n'),
    ('etc/rancher/k3s/config.yaml.d/50-mirror.yaml', "embedded-registry: 'True'\n"),
])
def test_embedded_registry_skips_with_peer_mirror_action_skip(relpath, text, peer_root):
    path = peer_root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    assert 'embedded registry mirror is enabled in /' + relpath in _mirror.detect_peer_mirror(str(peer_root))
    runner = node_runner(V21)
    engine = make_engine(runner, settings={'peer_mirror_action': 'skip'}, peer_root=peer_root)
    result = run_phase(engine, 'content')
    assert result['skipped'] is True
    assert result['skip_reason'].endswith('(peer_mirror_action=skip)')
    assert runner.calls == []
    assert result['changed'] is False


def test_embedded_registry_false_is_no_mirror(peer_root):
    (peer_root / 'etc/rancher/k3s/config.yaml').write_text('embedded-registry: false\n# embedded-registry: true\n')
    assert _mirror.detect_peer_mirror(str(peer_root)) is None


def test_content_check_mode_alone_runs_the_dry_prune_over_the_store_as_it_is(peer_root):
    runner = node_runner(V16)
    result = run_phase(make_engine(runner, peer_root=peer_root), 'content', check_mode=True)
    assert runner.calls == [INFO, IMAGEFSINFO, CONTENT_LS, CTR_PREFIX + ['content', 'prune', 'references', '--dry']]
    assert len(result['removed']) == 5          # every layer blob of the recorded store
    assert result['labels_removed'] == 5        # the dry run names 5 manifests
    assert result['bytes'] == 5 * 1028000
    assert result['changed'] is True


@pytest.mark.parametrize('version', VERSIONS)
def test_content_check_mode_plans_after_the_planned_image_removals(version, peer_root):
    """Check mode of the whole run: the content phase plans over the store as it will be once
    unused:3, the old busybox:1 and busybox:1 (planned by phase 3) are gone."""
    runner = node_runner(version)
    result = run_all(engine_of_all_phases(runner, peer_root=peer_root), check_mode=True)['content']
    assert ids(result['removed']) == ['sha256:5f4de468a2d94fad44b1fe435d8816e6a09e28f9f271edf57ce788021fd9fd55',
                                      'sha256:f51d6ffc6841a4945a2c9f5919c130cc077317b4d1f87750cc78e070b738bb4b']
    assert runner.removals() == []


def test_images_phase_after_a_sandbox_removal_in_check_mode_frees_its_containers_images(peer_root):
    """feas-a goes in phase 2 with exit0; with exit1 removed in phase 1 too, the old busybox:1 is free."""
    runner = node_runner(V21)
    result = run_all(engine_of_all_phases(runner, settings={'sandbox_min_age': '0s'}, peer_root=peer_root), check_mode=True)
    assert ids(result['sandboxes']['removed']) == [IDS[V21]['feas-a']]
    reasons = dict((i['id'], i['reason']) for i in result['images']['removed'])
    assert reasons[IMG_OLD_BUSYBOX1] == 'used only by containers removed in this run'


# -- disk state ------------------------------------------------------------------------------

USED = {V16: 0, V21: 10182656}     # the runtime's image_fs_used_bytes on each recorded node


@pytest.fixture(params=[V16, V21])
def disk_report(request, peer_root):
    """Engine.disk_state(largest=2) over the recorded node of each version: the state, the stub runner
    and the version."""
    runner = node_runner(request.param)
    state = make_engine(runner, phases=('disk',), peer_root=peer_root).disk_state(largest=2)
    return SimpleNamespace(state=state, runner=runner, version=request.param)


def test_disk_state_removes_nothing(disk_report):
    assert disk_report.runner.removals() == []


def test_disk_state_is_json(disk_report):
    json.dumps(disk_report.state)


def test_disk_state_image_fs_used_bytes_is_the_runtimes_figure(disk_report):
    assert disk_report.state['image_fs_used_bytes'] == USED[disk_report.version]


def test_disk_state_lists_each_image_filesystem_as_the_runtime_reports_it(disk_report):
    fs = disk_report.state['image_filesystems'][0]
    assert fs['mountpoint'] == '/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs'
    assert fs['used_bytes'] == USED[disk_report.version]
    assert fs['inodes_used'] == (0 if disk_report.version == V16 else 133)


def test_disk_state_counts_containers_sandboxes_and_images_by_state(disk_report):
    assert disk_report.state['containers'] == {'exited': 2, 'running': 1}
    assert disk_report.state['sandboxes'] == {'ready': 2, 'notready': 1}
    assert disk_report.state['images'] == 5


def test_disk_state_images_bytes_is_the_sum_of_every_image_size(disk_report):
    assert disk_report.state['images_bytes'] == 1028853 + 1028856 + 1028853 + 1028899 + 1028854


def test_disk_state_reclaimable_are_the_unused_images_and_their_sizes(disk_report):
    assert disk_report.state['reclaimable_images'] == 3
    assert disk_report.state['reclaimable_bytes'] == 1028854 + 1028853 + 1028856


def test_disk_state_largest_images_are_as_many_as_asked_largest_first(disk_report):
    assert [i['id'] for i in disk_report.state['largest_images']] == [IMG_PAUSE, IMG_BUSYBOX1]


def test_disk_state_sandbox_image_is_the_one_crictl_info_names(disk_report):
    """containerd 1.6's crictl info names it; 2.1's does not."""
    assert disk_report.state['sandbox_image'] == ('docker.io/feas/pause:1' if disk_report.version == V16 else None)


def test_filesystem_usage_of_nearest_existing_parent(tmp_path):
    usage = _disk.filesystem_usage(str(tmp_path / 'not' / 'there'))
    assert usage['fs_path'] == str(tmp_path)
    assert usage['fs_size_bytes'] >= usage['fs_free_bytes'] >= 0
    assert 0.0 <= usage['fs_used_percent'] <= 100.0


@pytest.mark.parametrize('check_mode', [False, True])
def test_content_phase_runs_no_prune_when_no_layer_label_is_left(check_mode, peer_root):
    # the recorded store after a prune has no containerd.io/gc.ref.content.l.* label left
    runner = node_runner(V21, state='after')
    result = run_phase(make_engine(runner, peer_root=peer_root), 'content', check_mode=check_mode)
    assert runner.calls == [INFO, IMAGEFSINFO, CONTENT_LS]
    assert result['changed'] is False and result['removed'] == [] and result['labels_removed'] == 0


def test_crictl_info_is_asked_once_per_engine(peer_root):
    runner = node_runner(V16)
    engine = make_engine(runner, peer_root=peer_root)
    engine.disk_state()
    run_phase(engine, 'images', check_mode=True)
    engine.disk_state()
    assert sum(1 for argv in runner.calls if 'info' in argv) == 1


def test_a_run_lists_each_kind_once_and_containers_again_before_each_rmi_batch(peer_root):
    runner = node_runner(V16)
    engine = make_engine(runner, settings={'sandbox_min_age': '0s'}, peer_root=peer_root)
    run = engine.run()
    assert run['status'] == 'ok' and run['failed_phases'] == []
    order = [argv[argv.index('--timeout') + 2] for argv in runner.calls if 'crictl' in argv[0]]
    # the disk report before: side by side (two threads), in no fixed order
    assert sorted(order[:5]) == sorted(['imagefsinfo', 'ps', 'pods', 'images', 'info'])
    assert order[5:] == ['rm',                                     # phase 1: the report's ps
                         'rmp',                                    # phase 2: the report's pods, ps less phase 1
                         'inspect',                                # phase 3: image volumes of what stays
                                                                   # (ctr images check: not crictl)
                         'ps', 'rmi',                              # phase 3: containers afresh before the batch
                         'imagefsinfo']                            # the report after: counts from the run


def test_the_disk_report_runs_at_most_two_processes_at_once_the_container_listing_beside_one_other(peer_root):
    """Issue 26: six crictl/ctr processes at once (20-30 MiB each, the container listing 65-78 MiB at
    10,000 containers) summed 155 MiB at the start of a run. The disk report's listings still run
    side by side, two at a time, the container listing first. Fails with a pool of six."""
    import threading
    import time
    runner = node_runner(V16)
    lock, alive, most, with_ps = threading.Lock(), [], [0], []
    play = runner.run

    def run(argv, timeout=None):
        verb = argv[argv.index('--timeout') + 2] if 'crictl' in argv[0] else ' '.join(argv[-4:-2])
        with lock:
            alive.append(verb)
            most[0] = max(most[0], len(alive))
            if 'ps' in alive:
                with_ps.extend(v for v in alive if v != 'ps')
        time.sleep(0.03 if verb == 'ps' else 0.01)
        try:
            return play(argv, timeout)
        finally:
            with lock:
                alive.remove(verb)
    runner.run = run
    engine = make_engine(runner, peer_root=peer_root)
    engine.disk_state()
    assert most[0] == 2
    assert with_ps         # side by side all the same: the container listing beside the others
    assert sorted(['imagefsinfo', 'ps', 'pods', 'images', 'info']) == sorted(
        argv[argv.index('--timeout') + 2] for argv in runner.calls if 'crictl' in argv[0])


@pytest.mark.parametrize('version', VERSIONS)
def test_disk_after_counts_what_the_run_left(version, peer_root):
    run = make_engine(node_runner(version), peer_root=peer_root).run()
    before, after = run['disk_before'], run['disk_after']
    assert (before['when'], after['when']) == ('before', 'after')
    assert before['containers'] == {'exited': 2, 'running': 1} and before['images'] == 5
    assert after['containers'] == {'running': 1}
    assert after['sandboxes'] == {'ready': 2}
    assert after['images'] == 2 and after['reclaimable_images'] == 0
    assert run['removed'] == 2 + 1 + 3 + len(run['phases'][3]['removed'])
    assert run['bytes'] == run['phases'][2]['bytes'] + run['phases'][3]['bytes']
    assert run['changed'] is True


def test_check_mode_disk_after_is_the_disk_before(peer_root):
    runner = node_runner(V16)
    run = make_engine(runner, peer_root=peer_root).run(check_mode=True)
    assert runner.removals() == []
    after = dict(run['disk_after'], when='before')
    assert after.pop('filesystem') == dict(run['disk_before']['filesystem'], note=_disk.CHECK_MODE_NOTE)
    assert after == {k: v for k, v in run['disk_before'].items() if k != 'filesystem'}
    assert sum(1 for argv in runner.calls if 'imagefsinfo' in argv) == 1
    fs = run['disk_before']['filesystem']
    projected = 100.0 * (fs['used_bytes'] - run['bytes']) / fs['size_bytes']
    assert run['summary'].startswith('would free ')
    assert run['summary'].endswith('%.1f%% -> ~%.1f%% (estimate: check mode removes nothing)' % (
        fs['used_percent'], projected))


def _figures(monkeypatch, *used, size=1000):
    """The filesystem's figures, one per reading: before, then after (the engine's own settle
    function is replaced in unit tests by a single reading, see conftest.no_settle_wait)."""
    readings = iter(used)

    def figure(path, usage=None):
        value = next(readings)
        return {'path': '/var/lib/containerd', 'used_bytes': value, 'size_bytes': size, 'free_bytes': size - value,
                'used_percent': round(100.0 * value / size, 1), 'source': 'statvfs of %s' % path}
    monkeypatch.setattr(_disk, 'filesystem_figure', figure)
    monkeypatch.setattr(_disk, 'settled_figure', lambda path, **kw: dict(figure(path), settled=True, waited=0.3))


def test_the_disk_figures_are_read_from_the_filesystem_before_and_after(peer_root, monkeypatch):
    _figures(monkeypatch, 812, 620)
    run = make_engine(node_runner(V16), peer_root=peer_root).run()
    before, after = run['disk_before']['filesystem'], run['disk_after']['filesystem']
    assert (before['used_bytes'], after['used_bytes']) == (812, 620) and after['settled'] is True
    # the runtime's own figure is kept, apart and as what it is
    assert run['disk_after']['image_fs_used_bytes'] == 0 and run['disk_after']['filesystem_unknown'] is None
    images, blobs = len(run['phases'][2]['removed']), len(run['phases'][3]['removed'])
    assert run['summary'] == 'freed %s (2 containers, 1 sandbox, %s, %s); /var/lib/containerd ' \
        '81.2%% -> 62.0%%' % (_units.human_bytes(run['bytes']), _text.count(images, 'image'), _text.count(blobs, 'blob'))


def test_an_unknown_filesystem_figure_says_unknown(peer_root, monkeypatch):
    monkeypatch.setattr(_disk, 'filesystem_figure', lambda path, usage=None: None)
    monkeypatch.setattr(_disk, 'settled_figure', lambda path, **kw: None)
    run = make_engine(node_runner(V16), peer_root=peer_root).run()
    assert run['disk_before']['filesystem'] is None and run['disk_after']['filesystem'] is None
    assert run['disk_before']['filesystem_unknown'].startswith('the image filesystem (/var/lib/containerd/')
    assert run['summary'].endswith('; image filesystem unknown -> unknown'), run['summary']


def test_a_figure_still_changing_when_the_wait_ends_is_said_so():
    run = {'check_mode': False, 'phases': [{'phase': 'images', 'removed': [{}], 'bytes': 2048}],
           'disk_before': {'filesystem': {'path': '/x', 'used_percent': 50.0}},
           'disk_after': {'filesystem': {'path': '/x', 'used_percent': 49.0, 'settled': False, 'waited': 5.0}}}
    assert _text.summary_line(run) == 'freed 2.00 KB (1 image); /x 50.0% -> 49.0% (still changing after 5.0s)'


def test_a_failing_phase_is_recorded_and_the_next_still_runs(peer_root):
    runner = node_runner(V21)
    runner.on('crictl pods --output json', Reply(1, '', 'time="x" level=fatal msg="listing pods: boom"\n'))
    events = []
    run = engine_of_all_phases(runner, peer_root=peer_root).run(on_event=lambda kind, data: events.append((kind, data['phase'])))
    status = dict((r['phase'], r['status']) for r in run['phases'])
    assert status == {'containers': 'ok', 'sandboxes': 'failed', 'images': 'ok', 'content': 'ok'}
    failed = run['phases'][1]
    assert 'crictl pods --output json failed' in failed['error'] and 'boom' in failed['error']
    assert failed['error_details']['rc'] == 1
    assert run['failed_phases'] == ['sandboxes'] and run['status'] == 'failed'
    assert events == [('phase', p) for p in PHASES]
    assert runner.ran('crictl', 'rmi') and runner.ran('ctr', 'content', 'prune', 'references')


def test_an_unexpected_exception_in_a_phase_is_recorded_too(peer_root, monkeypatch):
    engine = engine_of_all_phases(node_runner(V21), peer_root=peer_root)

    def broken(self, check_mode=False):
        raise KeyError('surprise')
    monkeypatch.setattr(_engine, 'PHASE_TABLE', (('containers', broken),) + _engine.PHASE_TABLE[1:])
    run = engine.run()
    assert run['phases'][0]['error'] == "unexpected KeyError: 'surprise'"
    assert [r['status'] for r in run['phases'][1:]] == ['ok', 'ok', 'ok']


def test_disabled_phases_are_skipped_with_the_reason(peer_root):
    runner = node_runner(V21)
    run = engine_of_all_phases(runner, settings={'containers': False, 'content': False}, peer_root=peer_root).run()
    skipped = dict((r['phase'], r['skip_reason']) for r in run['phases'] if r['status'] == 'skipped')
    assert skipped == {'containers': 'disabled (containers: false)', 'content': 'disabled (content: false)'}
    assert runner.ran('crictl', 'rm') == [] and runner.ran('ctr', 'content') == []


def test_below_disk_usage_threshold_every_phase_is_skipped(peer_root, monkeypatch):
    monkeypatch.setattr(_disk, 'filesystem_usage', lambda path: {'fs_used_percent': 40.0})
    runner = node_runner(V16)
    run = make_engine(runner, settings={'disk_usage_threshold': 80}, peer_root=peer_root).run()
    assert run['status'] == 'skipped' and runner.removals() == []
    assert run['skip_reason'] == 'image filesystem 40.0% used, below disk_usage_threshold 80%: report only'
    assert [r['status'] for r in run['phases']] == ['skipped'] * 4


def test_an_image_that_gains_a_user_after_the_plan_is_kept(peer_root):
    """containerd's CRI removes an image even while a container uses it: the image phase lists
    containers again right before each rmi batch and leaves out images that gained a user."""
    runner = node_runner(V16)
    grown = fixture_json(V16, 'ps-a.json')
    newcomer = json.loads(json.dumps(grown['containers'][0]))
    newcomer.update(id='f' * 64, state='CONTAINER_RUNNING', imageRef=IMG_UNUSED3)
    newcomer['metadata'] = {'name': 'newcomer', 'attempt': 0}
    newcomer['image'] = {'image': 'docker.io/feas/unused:3'}
    grown['containers'].append(newcomer)
    runner.on('crictl ps --all --output json', json_reply(V16, fixture_json(V16, 'ps-a.json')),
              json_reply(V16, grown))
    engine = make_engine(runner, settings={'containers': False}, phases=('images',), peer_root=peer_root)
    result = engine.run()['phases'][0]
    assert runner.ran('crictl', 'rmi') == [CRICTL_PREFIX + ['rmi', IMG_BUSYBOX1]]
    kept = dict((i['id'], i['reason']) for i in result['kept'])
    assert kept[IMG_UNUSED3] == 'in use by container newcomer (fffffffffffff), created after the plan was made'
    assert ids(result['removed']) == [IMG_BUSYBOX1]


def test_no_crictl_info_when_the_runtime_pins_images(peer_root):
    runner = node_runner(V21)
    make_engine(runner, phases=('disk',), peer_root=peer_root).disk_state()
    assert not [argv for argv in runner.calls if 'info' in argv]


# -- issue 16: the kubelet's rules are the default -------------------------------------------

def pod_engine(runner, peer_root, dirs=(), proc='/nonexistent/proc', **settings):
    """An engine with the defaults of the kubelet's rules (pod_aware: true)."""
    from image_gc_testlib import node_discovery
    return make_engine(runner, settings=dict({'pod_aware': True}, **settings), peer_root=peer_root,
                       discovery=node_discovery(dirs=dirs, proc=proc))


@pytest.fixture(params=VERSIONS)
def default_rules(request, peer_root, tmp_path):
    """A check-mode run and a real run with the kubelet's rules (the defaults) over the recorded node of each
    version, the running kubelet's root found in /proc. exit1 is the newest exited instance in the Ready pod
    feas-c: it stays, and its image; exit0's pod feas-a is not live (NotReady, and the kubelet's root has no
    directory for it): exit0 and feas-a go."""
    version = request.param
    proc, root = running_kubelet(tmp_path, version)
    check = run_all(pod_engine(node_runner(version), peer_root, proc=proc, sandbox_min_age='0s'), check_mode=True)
    runner = node_runner(version)
    run = pod_engine(runner, peer_root, proc=proc, sandbox_min_age='0s').run()
    return SimpleNamespace(version=version, ids=IDS[version], root=root, check=check, run=run, runner=runner,
                           real=dict((r['phase'], r) for r in run['phases']))


def test_default_rules_remove_the_exited_container_of_a_pod_that_is_not_live(default_rules):
    assert ids(default_rules.real['containers']['removed']) == [default_rules.ids['exit0']]
    assert default_rules.runner.ran('crictl', 'rm') == [CRICTL_PREFIX + ['rm', default_rules.ids['exit0']]]


def test_default_rules_keep_the_newest_exited_instance_in_a_live_pod_and_say_why(default_rules):
    reasons = dict((i['id'], i['reason']) for i in default_rules.real['containers']['kept'])
    assert reasons[default_rules.ids['exit1']].startswith(
        'newest exited instance of exit1 (attempt 0) in live pod feas/feas-c (its newest sandbox ')


def test_default_rules_remove_the_notready_sandbox_of_a_pod_that_is_not_live(default_rules):
    assert ids(default_rules.real['sandboxes']['removed']) == [default_rules.ids['feas-a']]


def test_default_rules_remove_only_the_images_no_container_that_stays_uses(default_rules):
    assert ids(default_rules.real['images']['removed']) == [IMG_UNUSED3, IMG_BUSYBOX1]


@pytest.mark.parametrize('phase', ('containers', 'sandboxes', 'images'))
def test_with_default_rules_check_mode_plans_what_the_real_run_removes_and_keeps(default_rules, phase):
    check, real = default_rules.check, default_rules.real
    assert [(i['id'], i['reason']) for i in check[phase]['removed']] == \
        [(i['id'], i['reason']) for i in real[phase]['removed']], phase
    assert [(i['id'], i['reason']) for i in check[phase]['kept']] == \
        [(i['id'], i['reason']) for i in real[phase]['kept']], phase


def test_a_live_kubelet_root_found_gives_no_warning(default_rules):
    assert not [w for w in default_rules.run['warnings'] if 'kubelet root' in w], default_rules.run['warnings']


def test_one_crictl_inspect_per_run_of_the_containers_that_stay(default_rules):
    assert default_rules.runner.ran('crictl', 'inspect') == [
        inspect('sleeper', 'exit1', version=default_rules.version)]


def test_the_run_names_the_kubelet_root_it_found_and_why_it_is_live(default_rules):
    assert default_rules.run['runtime']['kubelet_root'] == default_rules.root
    assert default_rules.run['runtime']['sources']['kubelet_root'] == (
        'the running kubelet (pid 4242, --root-dir); live: 2 of the node\'s pods have a directory there, every '
        'Ready sandbox\'s among them')


@pytest.mark.parametrize('version', VERSIONS)
def test_without_a_live_kubelet_root_every_pod_counts_as_live_and_the_run_says_so_once(version, peer_root, tmp_path):
    """The same node with no kubelet running and no root at the distribution defaults (a node whose
    kubelet uses another --root-dir, or is not up yet): exit0, the newest exited instance in feas-a,
    stays, and feas-a's sandbox, and their images; one warning names kubelet_root."""
    ids_ = IDS[version]
    runner = node_runner(version)
    run = pod_engine(runner, peer_root, sandbox_min_age='0s').run()
    real = dict((r['phase'], r) for r in run['phases'])
    assert ids(real['containers']['removed']) == []
    assert dict((i['id'], i['reason']) for i in real['containers']['kept'])[ids_['exit0']] == (
        'newest exited instance of exit0 (attempt 0) in live pod feas/feas-a (%s): the kubelet keeps it for its '
        'status, restart count and logs' % _node.NO_LIVE_ROOT)
    assert ids(real['sandboxes']['removed']) == []
    kept = dict((i['id'], i) for i in real['containers']['kept'])[ids_['exit0']]
    assert kept['image_ref'] not in ids(real['images']['removed'])             # the image of a container that stays
    assert ids(real['images']['removed']) == [IMG_UNUSED3, IMG_BUSYBOX1]     # used by no container at all
    assert runner.ran('crictl', 'rm') == [] and runner.ran('crictl', 'rmp') == []
    warned = [w for w in run['warnings'] if 'kubelet root' in w]
    assert warned == [
        'no live kubelet root found (/var/lib/kubelet (well-known kubelet root): no pods directory; '
        '/var/snap/microk8s/common/var/lib/kubelet (well-known kubelet root): no pods directory): every pod counts '
        'as live in phases 1 and 2, so its newest containers and newest sandbox stay, and the images they use; the '
        'leftovers of deleted pods are left to the kubelet\'s own garbage collection. Set kubelet_root to the '
        'kubelet\'s --root-dir to remove them'], run['warnings']
    assert run['runtime']['kubelet_root'] is None
    assert run['runtime']['sources']['kubelet_root'] == 'none live: every pod counts as live'


def test_the_kubelet_root_is_found_and_a_tracked_pod_keeps_its_notready_sandbox(peer_root, tmp_path):
    uid = fixture_json(V16, 'pods.json')['items']
    feas_a = [p for p in uid if p['metadata']['name'] == 'feas-a'][0]['metadata']['uid']
    (tmp_path / 'pods' / feas_a).mkdir(parents=True)
    runner = node_runner(V16)
    engine = pod_engine(runner, peer_root, dirs={str(tmp_path)}, kubelet_root=str(tmp_path), sandbox_min_age='0s')
    run = engine.run(check_mode=True)
    assert run['runtime']['kubelet_root'] == str(tmp_path)
    assert run['runtime']['sources']['kubelet_root'] == 'option kubelet_root'
    assert run['warnings'] == []
    results = dict((r['phase'], r) for r in run['phases'])
    assert results['containers']['removed'] == [] and results['sandboxes']['removed'] == []
    assert dict((i['id'], i['reason']) for i in results['sandboxes']['kept'])[IDS[V16]['feas-a']] == (
        'NotReady, but the newest sandbox of live pod feas/feas-a (the kubelet still tracks it (%s/pods/%s exists))'
        % (tmp_path, feas_a))


def test_a_missing_explicit_kubelet_root_fails_before_anything_runs(peer_root):
    runner = node_runner(V16)
    with pytest.raises(ImageGCError, match=r"kubelet_root='/nope': no such directory"):
        pod_engine(runner, peer_root, kubelet_root='/nope')
    assert runner.calls == []


def test_an_empty_container_listing_with_ready_sandboxes_removes_no_image(peer_root):
    runner = node_runner(V21)
    empty = fixture_json(V21, 'ps-a.json')
    empty['containers'] = []
    runner.on('crictl ps --all --output json', json_reply(V21, empty))
    run = pod_engine(runner, peer_root).run()
    images = run['phases'][2]
    assert images['status'] == 'failed' and images['removed'] == []
    assert images['error'] == (
        'crictl ps --all listed no container while 2 sandboxes are Ready (feas-b, feas-c): the container listing is '
        'not trusted and no image is removed. Endpoints used: runtime unix:///run/containerd/containerd.sock, image '
        'unix:///run/containerd/containerd.sock; set runtime_endpoint and image_endpoint to the runtime the kubelet uses')
    assert runner.ran('crictl', 'rmi') == [] and runner.ran('crictl', 'inspect') == []


def test_check_mode_makes_no_estimate_when_the_plan_reaches_the_bytes_used():
    """Images sharing a layer count it once each: their sizes can pass what the filesystem holds."""
    run = {'check_mode': True, 'phases': [{'phase': 'images', 'removed': [{}, {}], 'bytes': 900}],
           'disk_before': {'filesystem': {'path': '/x', 'used_bytes': 800, 'size_bytes': 10000, 'used_percent': 8.0}}}
    assert _text.summary_line(run) == (
        "would free 900.00 Bytes (2 images); /x 8.0% -> unknown (no estimate: the plan's sizes reach the 800.00 Bytes "
        "used, layers shared by images counted once per image; check mode removes nothing)")
    run['phases'][0]['bytes'] = 300
    assert _text.summary_line(run).endswith('/x 8.0% -> ~5.0% (estimate: check mode removes nothing)')


def test_the_counts_are_in_the_right_number():
    assert [_text.count(n, 'sandbox') for n in (0, 1, 2)] == ['0 sandboxes', '1 sandbox', '2 sandboxes']
    assert [_text.count(n, 'image') for n in (0, 1, 2)] == ['0 images', '1 image', '2 images']


@pytest.mark.parametrize('version', [V21])
def test_default_image_unused_for_keeps_the_recorded_images(version, peer_root, tmp_path):
    """With the default image_unused_for (21d, chosen by the policy replay) a first run removes no
    image for being unused: the record first sees each now. The same run with image_unused_for 0s
    removes them (the recorded sequence)."""
    runner = node_runner(version)
    record = str(tmp_path / 'images.json')
    engine = make_engine(runner, settings={'image_unused_for': None, 'image_record_path': record}, peer_root=peer_root)
    assert engine.settings['image_unused_for'] == 21 * 86400
    images = engine.run()['phases'][2]
    assert images['removed'] == [] and runner.ran('crictl', 'rmi') == []
    kept = dict((i['id'], i['reason']) for i in images['kept'])
    warm = 'unused, never used, first seen 0s ago (image_unused_for 21d)'
    assert kept[IMG_UNUSED3] == warm and kept[IMG_BUSYBOX1] == warm, kept
    cold = make_engine(node_runner(version), settings={'image_record_path': str(tmp_path / 'cold.json')},
                       peer_root=peer_root).run()['phases'][2]
    assert {IMG_UNUSED3, IMG_BUSYBOX1} <= set(i['id'] for i in cold['removed'])
