# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The images phase over the recorded node (issue 25): images the CRI lists but cannot unpack
again go whatever their age, never one a container uses; image volumes of containers created
after the plan are re-checked before each removal batch."""

import json

from ansible_collections.nodemaint.image_gc.plugins.module_utils._images_phase import find_unusable_images

from tests.unit.image_gc_testlib import (
    CRICTL_PREFIX, IDS, IMG_BUSYBOX1, IMG_BUSYBOX2, IMG_OLD_BUSYBOX1, IMG_PAUSE, IMG_UNUSED3, V16, V21, Reply, fixture_json, fixture_text, ids,
    images_check_reply, inspect_reply, json_reply, make_engine, node_runner, recorded_reply)


def _broken(runner, version, *unusable):
    images = fixture_text(version, 'images.json')
    runner.on('ctr images check', lambda argv, r: images_check_reply(images, unusable, argv))
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
        assert result['unusable'] == {'checked': True, 'snapshotter': 'overlayfs', 'asked': 5, 'found': [IMG_BUSYBOX1]}


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


# -- the look asked of the images that stay only (issue 26, item 4) ------------------------------
def _whole(runner, peer_root, check_mode=False, **settings):
    engine = make_engine(runner, settings=dict({'image_min_age': '10m'}, **settings),
                         phases=('containers', 'images', 'disk'), peer_root=peer_root)
    return engine.run(check_mode=check_mode)


def _asked(runner):
    """The image names the one ``ctr images check`` of the run was asked of (its name== filters)."""
    found = runner.ran('ctr', 'images', 'check')
    assert len(found) == 1, found
    return sorted(json.loads(a[len('name=='):]) for a in found[0] if a.startswith('name=='))


def _names(version, *image_ids):
    images = fixture_json(version, 'images.json')['images']
    return sorted(n for i in images if i['id'] in image_ids
                  for n in [i['id']] + (i.get('repoTags') or []) + (i.get('repoDigests') or []))


def test_the_look_is_asked_of_the_images_that_stay_only(peer_root):
    """image_unused_for 0s (no image_min_age): the three unused images go by the other rules and are
    not asked of; the sandbox image and the sleeper's stay and are."""
    runner = _broken(node_runner(V16), V16, IMG_BUSYBOX1)
    run = _whole(runner, peer_root, image_min_age='0s', image_unused_for='0s')
    images = [r for r in run['phases'] if r['phase'] == 'images'][0]
    assert _asked(runner) == _names(V16, IMG_PAUSE, IMG_BUSYBOX2)
    assert ids(images['removed']) == [IMG_UNUSED3, IMG_OLD_BUSYBOX1, IMG_BUSYBOX1]
    # it went for being unused: the look that would have said "unusable" was not needed for it
    reason = {i['id']: i['reason'] for i in images['removed']}[IMG_BUSYBOX1]
    assert not reason.startswith('unusable'), reason
    assert images['unusable'] == {'checked': True, 'snapshotter': 'overlayfs', 'asked': 2, 'found': []}
    assert runner.ran('ctr', 'images', 'check')[0] in images['commands']


def test_an_unusable_image_the_warm_cache_would_keep_is_asked_of_and_goes(peer_root):
    runner = _broken(node_runner(V16), V16, IMG_BUSYBOX1)
    images = [r for r in _whole(runner, peer_root, image_min_age='0s', image_unused_for='30d')['phases']
              if r['phase'] == 'images'][0]
    assert IMG_BUSYBOX1 in [n for n in _asked(runner) if n.startswith('sha256:')]
    assert ids(images['removed']) == [IMG_BUSYBOX1]
    assert images['removed'][0]['reason'].startswith('unusable: its content is incomplete')


def test_no_look_when_every_image_goes_by_the_other_rules(peer_root):
    """Nothing left to ask of (the recorded node always keeps the running sleeper's image, so the
    function is called as phase 3 calls it, with the images that do not go): no ctr at all."""
    runner = _broken(node_runner(V16), V16, IMG_BUSYBOX1)
    result = {'warnings': []}
    assert find_unusable_images(make_engine(runner, peer_root=peer_root), [], result) == {}
    assert runner.ran('ctr', 'images', 'check') == []
    assert result == {'warnings': [], 'unusable': {'checked': False, 'why': 'not needed: every image goes in this '
                                                                            'run by the other rules'}}


def test_the_look_plans_as_in_check_mode(peer_root):
    real = _whole(_broken(node_runner(V16), V16, IMG_BUSYBOX1), peer_root, image_unused_for='30d')
    dry = _whole(_broken(node_runner(V16), V16, IMG_BUSYBOX1), peer_root, check_mode=True, image_unused_for='30d')
    assert [ids(r['removed']) for r in real['phases']] == [ids(r['removed']) for r in dry['phases']]
    assert [[i['reason'] for i in r['removed']] for r in real['phases']] == \
        [[i['reason'] for i in r['removed']] for r in dry['phases']]


def test_no_look_when_the_run_is_below_disk_usage_threshold(peer_root):
    runner = _broken(node_runner(V16), V16, IMG_BUSYBOX1)
    run = _whole(runner, peer_root, disk_usage_threshold=100)
    assert run['skip_reason'] and runner.ran('ctr', 'images', 'check') == []


def test_no_look_when_phase_3_is_off(peer_root):
    runner = _broken(node_runner(V16), V16, IMG_BUSYBOX1)
    _whole(runner, peer_root, images=False)
    assert runner.ran('ctr', 'images', 'check') == []
