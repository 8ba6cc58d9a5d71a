# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""_snapshotters: the CRI's snapshotters (phase 4 runs with exactly one) and the images the CRI
lists but cannot unpack (issue 25, item 4), over recorded outputs."""

import copy
import json
import os

import pytest

from ansible_collections.nodemaint.image_gc.plugins.module_utils._common import ImageGCError
from ansible_collections.nodemaint.image_gc.plugins.module_utils._listings import Image
from ansible_collections.nodemaint.image_gc.plugins.module_utils._snapshotters import (
    content_prune_skip, cri_snapshotters, parse_images_check, unusable_images)

from tests.unit.image_gc_testlib import V16, V21, fixture_text

CHECK = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                     'fixtures', 'ctr-images-check')


def _info(version):
    return json.loads(fixture_text(version, 'info.json'))


def _fsinfo(version):
    return json.loads(fixture_text(version, 'imagefsinfo.json'))


def _check(line, name='ctr-images-check.txt'):
    with open(os.path.join(CHECK, 'containerd-' + line, name)) as f:
        return f.read()


def _images(line):
    with open(os.path.join(CHECK, 'containerd-' + line, 'crictl-images.json')) as f:
        return {i['repoTags'][0]: Image(i) for i in json.load(f)['images']}


# -- the snapshotters and phase 4 --------------------------------------------------------------

def test_containerd_16_names_its_snapshotter_in_crictl_info():
    s = cri_snapshotters(_info(V16), _fsinfo(V16))
    assert (s.default, s.by_runtime, s.names()) == ('overlayfs', {}, ['overlayfs'])
    assert s.source == 'crictl info config.containerd.snapshotter'
    assert content_prune_skip(s) is None


def test_containerd_2x_snapshotter_is_read_from_the_image_filesystem():
    s = cri_snapshotters(_info(V21), _fsinfo(V21))
    assert (s.default, s.by_runtime) == ('overlayfs', {})
    assert s.source == 'crictl imagefsinfo (the first image filesystem)'
    assert content_prune_skip(s) is None


def test_a_runtime_handler_with_another_snapshotter_skips_phase_4():
    for version in (V16, V21):
        info = copy.deepcopy(_info(version))
        info['config']['containerd']['runtimes']['kata'] = {'runtimeType': 'io.containerd.kata.v2',
                                                            'snapshotter': 'devmapper'}
        reason = content_prune_skip(cri_snapshotters(info, _fsinfo(version)))
        assert reason.startswith('the CRI uses more than one snapshotter (overlayfs; devmapper for runtime '
                                 'handler kata): a pod whose RuntimeClass'), reason
        assert reason.endswith('content prune skipped')


def test_a_runtime_handler_naming_the_default_snapshotter_is_one_snapshotter():
    info = copy.deepcopy(_info(V16))
    info['config']['containerd']['runtimes']['runc']['snapshotter'] = 'overlayfs'
    assert content_prune_skip(cri_snapshotters(info, _fsinfo(V16))) is None


def test_a_second_image_filesystem_of_another_snapshotter_skips_phase_4():
    fsinfo = copy.deepcopy(_fsinfo(V21))
    extra = copy.deepcopy(fsinfo['status']['imageFilesystems'][0])
    extra['fsId']['mountpoint'] = '/var/lib/containerd/io.containerd.snapshotter.v1.native'
    fsinfo['status']['imageFilesystems'].append(extra)
    reason = content_prune_skip(cri_snapshotters(_info(V21), fsinfo))
    assert 'more than one snapshotter (overlayfs; native for an image filesystem crictl imagefsinfo reports)' in reason


def test_unknown_snapshotters_skip_phase_4():
    assert content_prune_skip(cri_snapshotters({'config': {'sandboxImage': 'x'}}, {})).startswith(
        "the CRI's snapshotters are unknown")
    assert cri_snapshotters({}, None) is None


def test_a_default_nobody_names_and_no_handler_of_its_own_is_one_snapshotter():
    s = cri_snapshotters(_info(V21), {})
    assert s.default is None and content_prune_skip(s) is None
    info = copy.deepcopy(_info(V21))
    info['config']['containerd']['runtimes']['runc']['snapshotter'] = 'native'
    reason = content_prune_skip(cri_snapshotters(info, {}))
    assert 'more than one snapshotter (the default one, not reported; native for runtime handler runc)' in reason


# -- ctr images check and the unusable images ---------------------------------------------------

@pytest.mark.parametrize('line', ['1.6', '2.1'])
def test_parse_images_check_as_recorded(line):
    rows = parse_images_check(_check(line))
    assert rows['docker.io/feas/broken:1'] == {'status': 'incomplete (2/3)', 'complete': False, 'unpacked': False}
    assert rows['docker.io/feas/app:1'] == {'status': 'incomplete (2/3)', 'complete': False, 'unpacked': True}
    assert rows['docker.io/feas/complete:1'] == {'status': 'complete (3/3)', 'complete': True, 'unpacked': False}
    assert len(rows) == 8


@pytest.mark.parametrize('line', ['1.6', '2.1'])
def test_only_the_incomplete_image_no_snapshot_backs_is_unusable(line):
    images = _images(line)
    unusable = unusable_images(images.values(), parse_images_check(_check(line)))
    assert unusable == {images['docker.io/feas/broken:1'].id: 'incomplete (2/3)'}


def test_an_image_ctr_does_not_list_is_not_unusable():
    images = _images('1.6')
    rows = parse_images_check(_check('1.6'))
    broken = images['docker.io/feas/broken:1']
    rows = {k: v for k, v in rows.items() if k not in [broken.id] + broken.refs}
    assert unusable_images(images.values(), rows) == {}


def test_one_name_unpacked_is_enough_to_keep_it():
    images = _images('2.1')
    rows = parse_images_check(_check('2.1'))
    broken = images['docker.io/feas/broken:1']
    rows[broken.id] = dict(rows[broken.id], unpacked=True)
    assert unusable_images(images.values(), rows) == {}


def test_parse_images_check_of_filters_no_image_matches_is_no_row():
    # ctr 1.6.20, asked with name=="nope:1": rc 0 and nothing on stdout, not even the header
    assert parse_images_check('') == {}
    assert parse_images_check('\n') == {}


def test_parse_images_check_refuses_another_table():
    with pytest.raises(ImageGCError, match='no REF ... STATUS SIZE UNPACKED header'):
        parse_images_check('REF TYPE DIGEST STATUS\nx y z complete\n')
    header = _check('1.6').splitlines()[0]
    with pytest.raises(ImageGCError, match='cannot parse line'):
        parse_images_check(header + '\ndocker.io/x:1\n')
