# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The images phase over the recorded node (issue 25): images the CRI lists but cannot unpack
again go whatever their age, never one a container uses; image volumes of containers created
after the plan are re-checked before each removal batch."""

import json

from tests.unit.image_gc_testlib import (
    CRICTL_PREFIX, IDS, IMG_BUSYBOX1, IMG_BUSYBOX2, IMG_UNUSED3, V16, V21, Reply, fixture_json, fixture_text, ids,
    images_check_reply, inspect_reply, json_reply, make_engine, node_runner, recorded_reply)


def _broken(runner, version, *unusable):
    images = fixture_text(version, 'images.json')
    runner.on('ctr images check', images_check_reply(images, unusable))
    return runner


def _images(runner, peer_root, **settings):
    # image_min_age 10m: the recorded manifests are seconds old, so no image goes for being unused
    engine = make_engine(runner, settings=dict({'containers': False, 'image_min_age': '10m'}, **settings),
                         phases=('images',), peer_root=peer_root)
    return engine.run()['phases'][0]


def test_an_unusable_image_goes_whatever_its_age_and_last_use(peer_root):
    for version in (V16, V21):
        runner = _broken(node_runner(version), version, IMG_BUSYBOX1)
        result = _images(runner, peer_root, image_unused_for='30d')
        assert ids(result['removed']) == [IMG_BUSYBOX1], version
        reason = result['removed'][0]['reason']
        assert reason.startswith('unusable: its content is incomplete (ctr images check: incomplete (2/3); the layer '
                                 'blobs were pruned) and it is not unpacked in overlayfs: the CRI cannot create')
        assert runner.ran('crictl', 'rmi') == [CRICTL_PREFIX + ['rmi', IMG_BUSYBOX1]]
        assert result['unusable'] == {'checked': True, 'snapshotter': 'overlayfs', 'found': [IMG_BUSYBOX1]}


def test_without_the_rule_the_same_state_removes_nothing(peer_root):
    result = _images(node_runner(V16), peer_root)
    assert result['removed'] == [] and result['unusable']['found'] == []


def test_an_unusable_image_a_container_uses_is_kept_and_says_so(peer_root):
    runner = _broken(node_runner(V16), V16, IMG_BUSYBOX2)       # the running sleeper's image
    result = _images(runner, peer_root)
    kept = {i['id']: i['reason'] for i in result['kept']}
    assert kept[IMG_BUSYBOX2].startswith('in use by container sleeper')
    assert '; unusable (content incomplete (2/3), not unpacked in overlayfs), but kept for that reason' in kept[
        IMG_BUSYBOX2]
    assert runner.ran('crictl', 'rmi') == []


def test_a_failing_ctr_images_check_removes_nothing_by_the_rule_and_warns(peer_root):
    runner = node_runner(V16)
    runner.on('ctr images check', recorded_reply(V21, 'ctr-nosocket'))
    result = _images(runner, peer_root)
    assert result['status'] == 'ok' and result['removed'] == []
    assert result['unusable']['checked'] is False
    assert result['warnings'] == ['images the runtime cannot unpack again were not looked for: ctr images check '
                                  'failed: ' + result['unusable']['why'].split('failed: ', 1)[1]]


def test_unknown_snapshotter_is_no_check(peer_root):
    runner = node_runner(V21)
    runner.on('crictl imagefsinfo --output json', json_reply(V21, {'status': {'imageFilesystems': []}}))
    result = _images(runner, peer_root)
    assert result['unusable'] == {'checked': False, 'why': "the CRI's snapshotter is unknown (neither crictl info nor "
                                                           'crictl imagefsinfo names it)'}
    assert not runner.ran('ctr', 'images', 'check')


def test_an_image_mounted_as_a_volume_by_a_container_created_after_the_plan_is_kept(peer_root):
    """The re-check before each rmi batch inspects the containers created since the plan (only
    those) for their image volumes."""
    runner = node_runner(V16)
    grown = fixture_json(V16, 'ps-a.json')
    late = json.loads(json.dumps(grown['containers'][0]))
    late.update(id='e' * 64, state='CONTAINER_RUNNING', imageRef=IMG_BUSYBOX2)
    late['metadata'] = {'name': 'late', 'attempt': 0}
    late['image'] = {'image': 'docker.io/feas/busybox:2'}
    grown['containers'].append(late)
    runner.on('crictl ps --all --output json', json_reply(V16, fixture_json(V16, 'ps-a.json')), json_reply(V16, grown))
    staying = sorted(IDS[V16][n] for n in ('exit0', 'exit1', 'sleeper'))
    runner.on('crictl inspect', lambda argv, r: inspect_reply(V16, argv[argv.index('json') + 1:],
                                                              {'e' * 64: ['docker.io/feas/unused:3']}))
    result = _images(runner, peer_root, image_min_age='0s')
    kept = {i['id']: i['reason'] for i in result['kept']}
    assert kept[IMG_UNUSED3] == 'mounted as an image volume by container late (eeeeeeeeeeeee), created after the plan ' \
                                'was made'
    assert ids(result['removed']) == [IMG_BUSYBOX1]
    inspected = [argv[argv.index('json') + 1:] for argv in runner.ran('crictl', 'inspect')]
    assert inspected == [staying, ['e' * 64]]          # the plan's containers once, then only the newcomer


def test_image_volumes_that_cannot_be_read_keep_the_batch(peer_root):
    runner = node_runner(V16)
    grown = fixture_json(V16, 'ps-a.json')
    late = json.loads(json.dumps(grown['containers'][0]))
    late.update(id='e' * 64, state='CONTAINER_RUNNING')
    grown['containers'].append(late)
    runner.on('crictl ps --all --output json', json_reply(V16, fixture_json(V16, 'ps-a.json')), json_reply(V16, grown))
    runner.on('crictl inspect', lambda argv, r: inspect_reply(V16, argv[argv.index('json') + 1:]),
              Reply(1, '', 'time="x" level=fatal msg="container \\"eee\\" not found"\n'))
    result = _images(runner, peer_root, image_min_age='0s')
    assert result['removed'] == [] and runner.ran('crictl', 'rmi') == []
    kept = {i['id']: i['reason'] for i in result['kept']}
    for image_id in (IMG_UNUSED3, IMG_BUSYBOX1):
        assert kept[image_id].startswith('kept: the image volumes of containers created after the plan could not be '
                                         'read (crictl inspect'), kept[image_id]


# -- the look asked ahead, beside the disk report's listings (issue 26, item 4) -------------------
def _whole(runner, peer_root, check_mode=False, **settings):
    engine = make_engine(runner, settings=dict({'image_min_age': '10m'}, **settings),
                         phases=('containers', 'images', 'disk'), peer_root=peer_root)
    return engine.run(check_mode=check_mode)


def _check_argv(runner):
    found = runner.ran('ctr', 'images', 'check')
    assert len(found) == 1, found      # asked once, ahead, not again by phase 3
    return found[0]


def test_the_look_runs_beside_the_disk_report_and_phase_3_lists_it(peer_root):
    runner = _broken(node_runner(V16), V16, IMG_BUSYBOX1)
    run = _whole(runner, peer_root, image_unused_for='30d')
    by_phase = {r['phase']: r for r in run['phases']}
    argv = _check_argv(runner)
    # before phase 1 removed anything: it ran while the disk report listed
    keys = [tuple(c[len(CRICTL_PREFIX):]) if c[:len(CRICTL_PREFIX)] == CRICTL_PREFIX else tuple(c) for c in runner.calls]
    assert runner.calls.index(argv) < min(i for i, k in enumerate(keys) if k[:1] == ('rm',))
    assert by_phase['images']['commands'][0] == argv            # phase 3's, which used it
    assert argv not in by_phase['containers']['commands']
    assert ids(by_phase['images']['removed']) == [IMG_BUSYBOX1]
    assert by_phase['images']['unusable'] == {'checked': True, 'snapshotter': 'overlayfs', 'found': [IMG_BUSYBOX1]}


def test_the_look_asked_ahead_plans_as_in_check_mode(peer_root):
    real = _whole(_broken(node_runner(V16), V16, IMG_BUSYBOX1), peer_root, image_unused_for='30d')
    dry = _whole(_broken(node_runner(V16), V16, IMG_BUSYBOX1), peer_root, check_mode=True, image_unused_for='30d')
    assert [ids(r['removed']) for r in real['phases']] == [ids(r['removed']) for r in dry['phases']]


def test_a_look_that_failed_ahead_warns_in_phase_3_as_before(peer_root):
    runner = node_runner(V16)
    runner.on('ctr images check', recorded_reply(V21, 'ctr-nosocket'))
    images = [r for r in _whole(runner, peer_root)['phases'] if r['phase'] == 'images'][0]
    _check_argv(runner)
    assert images['status'] == 'ok' and images['unusable']['checked'] is False
    asked_in_phase_3 = node_runner(V16)
    asked_in_phase_3.on('ctr images check', recorded_reply(V21, 'ctr-nosocket'))
    warning = _images(asked_in_phase_3, peer_root)['warnings']
    assert warning[0].startswith('images the runtime cannot unpack again were not looked for: ctr images check')
    assert images['warnings'] == warning


def test_no_look_ahead_when_the_run_is_below_disk_usage_threshold(peer_root):
    runner = _broken(node_runner(V16), V16, IMG_BUSYBOX1)
    run = _whole(runner, peer_root, disk_usage_threshold=100)
    assert run['skip_reason'] and runner.ran('ctr', 'images', 'check') == []


def test_no_look_ahead_when_phase_3_is_off(peer_root):
    runner = _broken(node_runner(V16), V16, IMG_BUSYBOX1)
    _whole(runner, peer_root, images=False)
    assert runner.ran('ctr', 'images', 'check') == []
