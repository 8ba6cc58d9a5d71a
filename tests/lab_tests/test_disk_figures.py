"""The disk figures, measured (issue 19, items 1 and 2), on a lab whose containerd root is a small
tmpfs of its own (``Lab(root_tmpfs=...)``): the machine's root filesystem is written by other
processes all the time, the lab's tmpfs only by its containerd, so the figures are exact.

- a real run's figure after is the one before less at least the content it removed, read from
  the filesystem once containerd's garbage collection settled; a dry run's after is its before;
- the disk target removes the least recently used warm image first, one at a time, and stops as
  soon as the measured usage is at or below disk_low.
"""

import json
import os
import sys
import time

import pytest

from tests import lab as labpkg
from tests.lab_tests.ansible_play import (
    EXCLUDE, FRESH_IMAGES, collections_path, run_tasks, runtime_args, runtime_state, state_args)

if collections_path() not in sys.path:
    sys.path.insert(0, collections_path())

from ansible_collections.nodemaint.image_gc.plugins.module_utils import _disk, _text, _units  # noqa: E402

pytestmark = [pytest.mark.matrix,
              pytest.mark.containerd_only(reason="a containerd lab of its own on a tmpfs, and the content store; CRI-O's disk figures: test_crio.py")]

PRUNE = 'nodemaint.image_gc.prune'
ROOT_SIZE = 64 * 1024 * 1024


@pytest.fixture(scope='module')
def small_lab(lab):
    """A lab of its own, on the session lab's containerd line (so the version matrix selects it
    like any lab test), whose containerd root is a 64 MiB tmpfs (torn down, tmpfs unmounted)."""
    the_lab = labpkg.Lab(containerd_dir=lab.containerd_dir, root_tmpfs='%d' % ROOT_SIZE)
    try:
        the_lab.start()
        yield the_lab
    finally:
        the_lab.stop()
        assert not any(the_lab.leftovers().values()), the_lab.leftovers()


@pytest.fixture
def small_scenario(small_lab):
    labpkg.reset(small_lab)
    return labpkg.scenario(small_lab)


def _args(lab, **extra):
    args = dict(runtime_args(lab), **state_args(lab))
    args.update(image_exclude=EXCLUDE, sandbox_min_age='0s', pod_aware=False, **FRESH_IMAGES)
    args.update(extra)
    return args


def test_the_root_is_a_tmpfs_of_its_own(small_lab):
    st = os.statvfs(small_lab.root)
    assert st.f_blocks * st.f_frsize == ROOT_SIZE
    assert small_lab.root in labpkg.lab.mounts_under(small_lab.base)


def test_the_figure_after_is_lower_by_at_least_the_content_removed(small_lab, small_scenario):
    check = run_tasks(small_lab, [('dry', PRUNE, _args(small_lab))], check=True)['dry']
    assert not check.get('failed'), check
    fs_before, fs_after = check['disk_before']['filesystem'], check['disk_after']['filesystem']
    assert fs_before['path'] == small_lab.root and fs_before['size_bytes'] == ROOT_SIZE
    # a dry run removes nothing: after = before, stated as such; the line projects the after figure
    # from the plan's sizes, marked as an estimate
    assert fs_after['used_bytes'] == fs_before['used_bytes'] and 'check mode' in fs_after['note']
    planned = check['images_space_reclaimed'] + check['content_space_reclaimed']
    if planned < fs_before['used_bytes']:
        projected = 100.0 * (fs_before['used_bytes'] - planned) / fs_before['size_bytes']
        assert check['summary'].endswith('%.1f%% -> ~%.1f%% (estimate: check mode removes nothing)' % (
            fs_before['used_percent'], projected)), check['summary']
    else:
        # here the images share the busybox layer, which their sizes count once each: the plan's sum
        # passes what the filesystem holds, and no figure is made up
        assert check['summary'].endswith('%.1f%% -> unknown (no estimate: the plan\'s sizes reach the %s used, '
                                         'layers shared by images counted once per image; check mode removes '
                                         'nothing)' % (fs_before['used_percent'],
                                                       _units.human_bytes(fs_before['used_bytes']))), check['summary']

    real = run_tasks(small_lab, [('real', PRUNE, _args(small_lab))])['real']
    assert not real.get('failed') and real['failed_phases'] == [], real
    before, after = real['disk_before']['filesystem'], real['disk_after']['filesystem']
    blobs = real['content_space_reclaimed']
    assert real['images'] and real['blobs'] and blobs > 0, real
    assert after['settled'] is True, after
    assert before['used_bytes'] - after['used_bytes'] >= blobs, (before, after, blobs)
    assert after['used_percent'] < before['used_percent']
    # the line says the same figures
    assert real['summary'] == 'freed %s (%s, %s, %s, %s); %s %.1f%% -> %.1f%%' % (
        _units.human_bytes(real['images_space_reclaimed'] + blobs), _text.count(len(real['containers']), 'container'),
        _text.count(len(real['sandboxes']), 'sandbox'), _text.count(len(real['images']), 'image'),
        _text.count(len(real['blobs']), 'blob'), small_lab.root, before['used_percent'], after['used_percent'])


PAYLOAD = 4 * 1024 * 1024


def _big_images(monkeypatch, names, payload=PAYLOAD):
    """Images of the lab's shared busybox layer and a layer of its own: ``payload`` random bytes,
    so removing one frees its unpacked snapshot and its blob (about 2 x payload, measured on both
    containerd versions), while the runtime reports each image's size as the two layers' sum."""
    monkeypatch.setattr(labpkg.images, 'marker_layer', lambda name, variant='': labpkg.images._tar(
        [('etc', 'dir', None, 0o755), ('etc/feas-image', 'file', os.urandom(payload), 0o644)]))
    built = [labpkg.images.build('docker.io/feas/%s:1' % name) for name in names]
    monkeypatch.undo()
    return built


def _warm(lab, built):
    """The last-use record: every image of ``built`` used hours ago, the first least recently."""
    now = int(time.time())
    record = {'version': 1, 'updated': now, 'images': dict(
        (im.image_id, {'first_seen': now - 30 * 86400, 'last_used': now - (len(built) + 10 - i) * 3600, 'refs': []})
        for i, im in enumerate(built))}
    with open(state_args(lab)['image_record_path'], 'w') as handle:
        json.dump(record, handle)


def test_the_disk_target_stops_as_soon_as_the_measured_usage_is_at_disk_low(small_lab, monkeypatch):
    labpkg.reset(small_lab)
    order = ['lru-a', 'lru-b', 'lru-c', 'lru-d']                    # least recently used first
    built = _big_images(monkeypatch, order)
    labpkg.images.import_images(small_lab.ctr_argv, built, small_lab.work)
    _warm(small_lab, built)
    # the target lies between one and two images' worth of freed space below the usage now
    fs = _disk.settled_figure(small_lab.root, timeout=10)
    step = 2 * PAYLOAD
    low = int(100.0 * (fs['used_bytes'] - 1.5 * step) / fs['size_bytes'])
    high = int(fs['used_percent']) - 1
    assert 1 <= low < high, (fs, low, high)
    res = run_tasks(small_lab, [('gc', PRUNE, _args(small_lab, image_unused_for='7d', disk_high=high, disk_low=low,
                                                    content=False))])['gc']
    assert not res.get('failed') and res['failed_phases'] == [], res
    removed = [i['id'] for i in res['images']]
    # least recently used first, and no more once the measured usage is at or below disk_low
    assert removed == [built[0].image_id, built[1].image_id], res['images']
    left = runtime_state(small_lab)['images']
    assert built[2].image_id in left and built[3].image_id in left
    measured = res['disk_target']['measured']
    assert measured['reached'] is True
    steps = measured['steps']                   # one per batch, the filesystem measured after each
    assert [i for s in steps for i in s['ids']] == removed
    assert all(s['used_bytes'] * 100 > low * fs['size_bytes'] for s in steps[:-1]), (steps, low)
    assert steps[-1]['used_bytes'] * 100 <= low * fs['size_bytes'], (steps, low)
    after = res['disk_after']['filesystem']
    assert after['used_bytes'] * 100 <= low * after['size_bytes'] and after['settled'] is True
    assert all('(measured)' in i['reason'] for i in res['images'])


def test_a_disk_target_batch_overshoots_disk_low_by_less_than_one_image(small_lab, monkeypatch):
    """The disk target in batches (issue 26): each batch is sized, from the image sizes, to free
    half of what the filesystem measures above disk_low (scaled by what the batches before it
    freed per byte of size), at least one image. So the run measures far fewer times than it
    removes images, and ends below disk_low by less than what one image frees: the bound of
    removing one at a time, as long as an image frees at most twice what the sizes say (here
    about 2 x payload for a size of payload plus the shared busybox layer)."""
    labpkg.reset(small_lab)
    payload = 1024 * 1024
    built = _big_images(monkeypatch, ['batch-%02d' % i for i in range(12)], payload=payload)
    labpkg.images.import_images(small_lab.ctr_argv, built, small_lab.work)
    _warm(small_lab, built)
    fs = _disk.settled_figure(small_lab.root, timeout=10)
    one = 2 * payload + 256 * 1024            # what removing one of them frees, at most (blob, snapshot, metadata)
    low = int(100.0 * (fs['used_bytes'] - 8.5 * 2 * payload) / fs['size_bytes'])   # about 8 to 9 must go
    high = int(fs['used_percent']) - 1
    assert 1 <= low < high, (fs, low, high)
    low_bytes = low * fs['size_bytes'] / 100.0
    res = run_tasks(small_lab, [('gc', PRUNE, _args(small_lab, image_unused_for='7d', disk_high=high, disk_low=low,
                                                    content=False))])['gc']
    assert not res.get('failed') and res['failed_phases'] == [], res
    removed = [i['id'] for i in res['images']]
    assert removed == [im.image_id for im in built[:len(removed)]], res['images']       # least recently used first
    measured = res['disk_target']['measured']
    steps = measured['steps']
    assert measured['reached'] is True and [i for s in steps for i in s['ids']] == removed
    # batched: fewer measurements than images, the first batch more than one image
    assert len(steps[0]['ids']) > 1 and len(steps) < len(removed), steps
    # every batch but the last left the filesystem above disk_low; the last brought it below by
    # less than one image's worth
    assert all(s['used_bytes'] > low_bytes for s in steps[:-1]), (steps, low_bytes)
    after = res['disk_after']['filesystem']
    assert after['settled'] is True and after['used_bytes'] <= low_bytes, (after, low_bytes)
    assert low_bytes - after['used_bytes'] < one, ('overshoot', low_bytes - after['used_bytes'], one, steps)
    left = runtime_state(small_lab)['images']
    assert all(im.image_id in left for im in built[len(removed):])
