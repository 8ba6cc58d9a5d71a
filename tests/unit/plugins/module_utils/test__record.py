# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Over 300 lines: many cases of one subject, the last-use record and the retention it drives.
"""_record (the last-use record) and the retention of unused images in _plan (warm cache, disk
target): format, corrupt records, evidence of use, ordering, ties, clock skew, the engine's updates."""

import errno
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.nodemaint.image_gc.plugins.module_utils import _files, _plan_images, _record, _retention
from ansible_collections.nodemaint.image_gc.plugins.module_utils._common import ImageGCError
from ansible_collections.nodemaint.image_gc.plugins.module_utils._listings import Container, Image
from ansible_collections.nodemaint.image_gc.plugins.module_utils._settings import validate_settings

from tests.unit.image_gc_testlib import (
    IMG_BUSYBOX1, IMG_BUSYBOX2, IMG_OLD_BUSYBOX1, IMG_PAUSE, IMG_UNUSED3, NOW_NS, V16, V21, ids, make_engine,
    node_runner)

NOW = 1764600000
DAY = 86400


def load(path, now=None):
    """(entries, warning) of the record at ``path``, as ``_record.read`` finds them."""
    loaded = _record.read(path, now)
    return loaded.entries, loaded.warning


def image(letter, size=1000, tag=None):
    return Image({'id': 'sha256:' + letter * 64, 'repoTags': [tag or 'docker.io/x/%s:1' % letter], 'size': str(size)})


def container(letter, state, created):
    return Container({'id': letter * 64, 'state': state, 'createdAt': str(created * 10 ** 9),
                      'imageRef': 'sha256:' + letter * 64, 'image': {'image': 'docker.io/x/%s:1' % letter},
                      'metadata': {'name': 'c-' + letter}})


# -- the file ----------------------------------------------------------------------------------

def test_record_round_trip_and_format(tmp_path):
    path = str(tmp_path / 'state' / 'images.json')
    entries = _record.merge({}, NOW, {'sha256:' + 'a' * 64: NOW - 60}, [image('a'), image('b')])
    _record.save(path, entries, NOW)
    data = json.loads(open(path).read())
    assert data == {'version': 2, 'updated': NOW, 'images': {
        'sha256:' + 'a' * 64: {'first_seen': NOW - 60, 'last_used': NOW - 60, 'refs': ['docker.io/x/a:1'], 'size': 1000},
        'sha256:' + 'b' * 64: {'first_seen': NOW, 'last_used': None, 'refs': ['docker.io/x/b:1'], 'size': 1000}},
        'removed': {}, 'repulls': {'images': 0, 'bytes': 0, 'recent': []}}
    assert load(path) == (entries, None)
    assert os.listdir(str(tmp_path / 'state')) == ['images.json']          # no temp file left


def test_missing_record_is_empty_without_warning(tmp_path):
    assert load(str(tmp_path / 'none.json')) == ({}, None)


@pytest.mark.parametrize('text, why', [
    ('{not json', 'cannot be read'), ('[]', 'is not a version 1 or 2 record'),
    ('{"version": 0, "images": {}}', 'version 1 or 2'), ('{"version": 1, "images": []}', 'is not a version 1 or 2 record'),
    ('{"version": 2, "images": null}', 'is not a version 1 or 2 record'),
])
def test_corrupt_record_is_a_warning_and_empty(tmp_path, text, why):
    path = tmp_path / 'images.json'
    path.write_text(text)
    entries, warning = load(str(path))
    assert entries == {} and why in warning and 'first seen now' in warning


def test_malformed_entries_are_dropped_with_a_warning(tmp_path):
    path = tmp_path / 'images.json'
    path.write_text(json.dumps({'version': 1, 'images': {
        'sha256:good': {'first_seen': 5, 'last_used': 7}, 'sha256:bad': {'first_seen': 'yesterday'},
        'sha256:neg': {'first_seen': -1}}}))
    entries, warning = load(str(path))
    assert entries == {'sha256:good': {'first_seen': 5, 'last_used': 7, 'refs': [], 'size': 0}}
    assert '2 malformed entries' in warning


# -- evidence and merging ------------------------------------------------------------------------

def test_a_running_container_is_use_now_any_other_its_creation():
    found = _record.uses([container('a', 'CONTAINER_RUNNING', NOW - DAY), container('b', 'CONTAINER_EXITED', NOW - 50),
                          container('c', 'CONTAINER_CREATED', NOW - 70)], NOW)
    assert found == {'sha256:' + 'a' * 64: NOW, 'sha256:' + 'b' * 64: NOW - 50, 'sha256:' + 'c' * 64: NOW - 70}


def test_merge_keeps_the_latest_use_drops_gone_images_and_clamps_future_times():
    a, b = 'sha256:' + 'a' * 64, 'sha256:' + 'b' * 64
    old = {a: {'first_seen': NOW - 9 * DAY, 'last_used': NOW - 2 * DAY, 'refs': []},
           'sha256:gone': {'first_seen': 1, 'last_used': 2, 'refs': []}}
    merged = _record.merge(old, NOW, {a: NOW - 3 * DAY, b: NOW + 3600}, [image('a'), image('b')])
    assert merged[a]['last_used'] == NOW - 2 * DAY            # an older use does not move it back
    assert merged[b] == {'first_seen': NOW, 'last_used': NOW, 'refs': ['docker.io/x/b:1'], 'size': 1000}   # future: now
    assert 'sha256:gone' not in merged
    # without a listing nothing is dropped, and a container's imageRef names the image
    assert 'sha256:gone' in _record.merge(old, NOW, {}, None)


# -- retention -------------------------------------------------------------------------------------

def plan_with(images, last_use, unused_for=0, disk=None):
    return _plan_images.plan_images(images, [], 'docker.io/x/pause:1', retention=_retention.Retention(NOW, unused_for, last_use, disk))


def test_unused_for_keeps_recently_used_and_says_why():
    a, b, c = image('a'), image('b'), image('c')
    record = {a.id: {'first_seen': NOW - 30 * DAY, 'last_used': NOW - 3 * DAY},
              b.id: {'first_seen': NOW - 30 * DAY, 'last_used': NOW - 9 * DAY},
              c.id: {'first_seen': NOW - 2 * 3600, 'last_used': None}}
    plan = plan_with([a, b, c], record, unused_for=7 * DAY)
    assert plan.ids == [b.id]
    assert plan.remove[0]['reason'] == 'unused; last used 9d ago (image_unused_for 7d)'
    kept = dict((i['id'], i['reason']) for i in plan.keep)
    assert kept[a.id] == 'unused, last used 3d ago (image_unused_for 7d)'
    assert kept[c.id] == 'unused, never used, first seen 2h ago (image_unused_for 7d)'


def test_unknown_last_use_and_clock_skew_count_as_now():
    a, b = image('a'), image('b')
    plan = plan_with([a, b], {b.id: {'first_seen': NOW - DAY, 'last_used': NOW + 5 * DAY}}, unused_for=60)
    assert plan.ids == []
    kept = dict((i['id'], i['reason']) for i in plan.keep)
    assert kept[a.id] == 'unused, last use unknown, counted as now (image_unused_for 1m)'
    assert kept[b.id] == 'unused, last used 0s ago (image_unused_for 1m)'


def test_zero_unused_for_is_todays_behaviour():
    a = image('a')
    assert plan_with([a], {a.id: {'first_seen': NOW, 'last_used': NOW}}).ids == [a.id]


def disk(used_percent, high=85, low=80, size=100000):
    return {'used_bytes': used_percent * size // 100, 'size_bytes': size, 'high': high, 'low': low}


def test_above_disk_high_the_least_recently_used_go_first_until_disk_low():
    # 90% of 100000 used; each image 4000 bytes (4%): three must go to reach 80% (78%)
    imgs = [image(x, 4000) for x in 'abcde']
    record = dict((i.id, {'first_seen': 0, 'last_used': NOW - age}) for i, age in zip(imgs, (50, 40, 30, 20, 10)))
    plan = plan_with(imgs, record, unused_for=7 * DAY, disk=disk(90))
    assert plan.ids == [imgs[0].id, imgs[1].id, imgs[2].id]          # the oldest use first, and no more
    assert plan.remove[0]['reason'] == ('removed to bring the image filesystem from 90% to 80% (disk_low), '
                                        'least recently used first; last used 50s ago')
    assert plan.disk == {'used_percent': 90.0, 'high': 85, 'low': 80, 'projected_percent': 78.0,
                         'used_bytes': 90000, 'size_bytes': 100000, 'estimate': _retention.Retention.ESTIMATE,
                         'candidates': [i.id for i in imgs]}     # every warm one, in the order they may go
    assert plan.disk['estimate'].startswith('an estimate: projected from the image sizes the runtime reports')
    assert [i.get('disk_target') for i in plan.remove] == [True] * 3
    assert ids(plan.keep) == [imgs[3].id, imgs[4].id]
    assert plan.warnings == []


def test_disk_target_ties_take_the_larger_image_then_the_id():
    small, big, other = image('c', 1000), image('b', 9000), image('a', 1000)
    record = dict((i.id, {'first_seen': 0, 'last_used': NOW - 100}) for i in (small, big, other))
    plan = plan_with([small, big, other], record, unused_for=DAY, disk=disk(90, size=100000))
    assert plan.ids == [big.id, other.id]                             # 9% + 1%: 90 -> 80


def test_below_disk_high_only_unused_for_applies():
    a = image('a', 50000)
    plan = plan_with([a], {a.id: {'first_seen': 0, 'last_used': NOW - 100}}, unused_for=DAY, disk=disk(84))
    assert plan.ids == [] and plan.disk['used_percent'] == 84.0


def test_disk_target_never_removes_what_other_guards_keep_and_warns_when_unmet():
    used_image = image('a', 40000)
    pinned = Image({'id': 'sha256:' + 'p' * 64, 'repoTags': ['docker.io/x/p:1'], 'size': '40000', 'pinned': True})
    free = image('f', 1000)
    record = dict((i.id, {'first_seen': 0, 'last_used': NOW - 100}) for i in (used_image, pinned, free))
    plan = _plan_images.plan_images([used_image, pinned, free], [container('a', 'CONTAINER_EXITED', NOW - 100)], None,
                                    retention=_retention.Retention(NOW, DAY, record, disk(95)))
    assert plan.ids == [free.id]
    assert any('disk_low 80% is not reached' in w for w in plan.warnings)


# -- settings ------------------------------------------------------------------------------------

@pytest.mark.parametrize('values, message', [
    ({'disk_high': 85}, 'disk_high and disk_low go together'),
    ({'disk_low': 80}, 'disk_high and disk_low go together'),
    ({'disk_high': 80, 'disk_low': 80}, 'disk_low (80) must be below disk_high (80)'),
    ({'disk_high': 100, 'disk_low': 80}, 'disk_high: expected a whole percentage from 1 to 99'),
    ({'disk_high': 85, 'disk_low': 0}, 'disk_low: expected a whole percentage from 1 to 99'),
    ({'image_unused_for': '-7d'}, 'image_unused_for: invalid duration'),
    ({'image_unused_for': '7 days'}, 'image_unused_for: invalid duration'),
])
def test_bad_retention_settings_name_the_option(values, message):
    with pytest.raises(ImageGCError) as exc:
        validate_settings(values)
    assert str(exc.value).startswith(message)


# -- the engine keeps the record ---------------------------------------------------------------------

def test_a_run_records_use_and_a_later_run_keeps_the_recently_used(tmp_path, peer_root):
    path = str(tmp_path / 'images.json')
    settings = {'image_record_path': path, 'image_unused_for': '3h'}
    first = make_engine(node_runner(V16), settings, peer_root=peer_root, clock_ns=NOW_NS).run()
    images = first['phases'][2]
    # the old busybox:1 was last used by exit0/exit1, created 2h9m before the clock: kept warm
    kept = dict((i['id'], i['reason']) for i in images['kept'])
    assert kept[IMG_OLD_BUSYBOX1] == 'unused, last used 2h9m31s ago (image_unused_for 3h)'
    assert kept[IMG_UNUSED3] == 'unused, never used, first seen 0s ago (image_unused_for 3h)'
    assert images['removed'] == []
    record = json.loads(open(path).read())['images']
    assert record[IMG_BUSYBOX2]['last_used'] == NOW_NS // 10 ** 9              # sleeper runs: used now
    assert record[IMG_OLD_BUSYBOX1]['last_used'] == 1795824050                 # exit1's creation
    assert set(record) == {IMG_PAUSE, IMG_OLD_BUSYBOX1, IMG_BUSYBOX1, IMG_BUSYBOX2, IMG_UNUSED3}
    # four hours later (the stub replays the same listings): the record kept the first sightings
    later = make_engine(node_runner(V16), settings, peer_root=peer_root,
                        clock_ns=NOW_NS + 4 * 3600 * 10 ** 9).run()
    reasons = dict((i['id'], i['reason']) for i in later['phases'][2]['removed'])
    assert reasons[IMG_OLD_BUSYBOX1].endswith('last used 6h9m31s ago (image_unused_for 3h)')
    assert reasons[IMG_UNUSED3].endswith('never used, first seen 4h ago (image_unused_for 3h)')


def test_check_mode_reads_but_never_writes_the_record(tmp_path, peer_root):
    path = tmp_path / 'images.json'
    make_engine(node_runner(V21), {'image_record_path': str(path)}, peer_root=peer_root).run(check_mode=True)
    assert not path.exists()


def test_a_corrupt_record_keeps_every_unknown_image_and_warns(tmp_path, peer_root):
    path = tmp_path / 'images.json'
    path.write_text('{"version": 1, "images": ')
    run = make_engine(node_runner(V21), {'image_record_path': str(path), 'image_unused_for': '1m'},
                      peer_root=peer_root).run()
    # no image is known: the ones no container was ever seen with count as first seen now
    removed = ids(run['phases'][2]['removed'])
    assert IMG_UNUSED3 not in removed and IMG_BUSYBOX1 not in removed
    assert removed == [IMG_OLD_BUSYBOX1]       # its containers (created 2 h ago) are evidence of older use
    assert any('cannot be read' in w for w in run['warnings'])
    assert json.loads(path.read_text())['version'] == 2          # rewritten whole


def test_an_unwritable_record_is_a_warning(tmp_path, peer_root):
    blocker = tmp_path / 'file'
    blocker.write_text('')
    run = make_engine(node_runner(V21), {'image_record_path': str(blocker / 'images.json')}, peer_root=peer_root).run()
    assert run['status'] == 'ok'
    assert any(w.startswith('could not write the last-use record') for w in run['warnings'])


def _target_engine(tmp_path, peer_root, monkeypatch, measured):
    """An engine over the recorded 2.1 node whose image filesystem reads 90% of 10 MB before the
    run, then ``measured`` (percent), one figure per reading after a removal."""
    from ansible_collections.nodemaint.image_gc.plugins.module_utils import _disk
    monkeypatch.setattr(_disk, 'filesystem_usage', lambda path: {
        'fs_path': '/var/lib/containerd', 'fs_size_bytes': 10 ** 7, 'fs_free_bytes': 10 ** 6,
        'fs_used_bytes': 9 * 10 ** 6, 'fs_used_percent': 90.0})
    readings = iter(measured)

    def settled(path, **kwargs):
        percent = next(readings)
        return {'path': path, 'used_bytes': int(percent * 10 ** 5), 'size_bytes': 10 ** 7, 'used_percent': percent,
                'settled': True, 'waited': 0.25}
    monkeypatch.setattr(_disk, 'settled_figure', settled)
    settings = {'image_record_path': str(tmp_path / 'r.json'), 'image_unused_for': '7d', 'disk_high': 85,
                'disk_low': 70}
    runner = node_runner(V21)
    return make_engine(runner, settings, peer_root=peer_root), runner


def test_disk_target_in_check_mode_is_the_estimate_and_says_so(tmp_path, peer_root, monkeypatch):
    engine, runner = _target_engine(tmp_path, peer_root, monkeypatch, ())
    images = engine.run(check_mode=True)['phases'][2]
    # 90% of 10 MB; each image ~1 MB (10%): two of the warm ones would go, least recently used first
    assert len(images['removed']) == 2, images['removed']
    assert all(i['reason'].startswith('removed to bring the image filesystem from 90% to 70% (disk_low)')
               for i in images['removed'])
    target = images['disk_target']
    assert {k: target[k] for k in ('used_percent', 'high', 'low', 'projected_percent')} == {
        'used_percent': 90.0, 'high': 85, 'low': 70, 'projected_percent': 69.4}
    assert target['estimate'].startswith('an estimate: projected from the image sizes') and 'measured' not in target
    assert ids(images['removed']) == target['candidates'][:2]
    assert sum(1 for argv in runner.calls if 'imagefsinfo' in argv) == 1


def test_disk_target_candidates_are_asked_whether_they_are_unusable(tmp_path, peer_root, monkeypatch):
    """An image the disk target's estimate has go may still stay (the measure decides): phase 3's look
    for unusable images is asked of it, as of every image that does not go by the other rules."""
    engine, runner = _target_engine(tmp_path, peer_root, monkeypatch, ())
    images = engine.run(check_mode=True)['phases'][2]
    going = ids(images['removed'])
    assert len(going) == 2 and all(i.get('disk_target') for i in images['removed'])
    check = runner.ran('ctr', 'images', 'check')
    assert len(check) == 1
    asked = {json.loads(a[len('name=='):]) for a in check[0] if a.startswith('name==')}
    assert set(going) <= asked, (going, asked)
    assert images['unusable']['asked'] == 5


def test_disk_target_real_run_removes_in_batches_until_the_measured_usage_is_at_disk_low(
        tmp_path, peer_root, monkeypatch):
    # measured: 88% before the target's first batch, 80% after it, 70% (= disk_low) after the second;
    # each image is about 1 MB (10%) and half of 18% (then of 10%) is less: one image a batch
    engine, runner = _target_engine(tmp_path, peer_root, monkeypatch, (88.0, 80.0, 70.0, 70.0))
    run = engine.run()
    images = run['phases'][2]
    target = images['disk_target']
    assert ids(images['removed']) == target['candidates'][:2], images['removed']
    assert [i['reason'].split('; ')[-1] for i in images['removed']] == [
        '88.0% before its batch of 1 went (measured)', '80.0% before its batch of 1 went (measured)']
    assert target['measured'] == {'steps': [{'ids': target['candidates'][:1], 'used_percent': 80.0,
                                             'used_bytes': 8 * 10 ** 6},
                                            {'ids': target['candidates'][1:2], 'used_percent': 70.0,
                                             'used_bytes': 7 * 10 ** 6}],
                                  'used_percent': 70.0, 'used_bytes': 7 * 10 ** 6, 'reached': True}
    # one rmi per batch, each after the containers were listed afresh; the third candidate stays
    rmis = [argv for argv in runner.calls if 'rmi' in argv]
    assert [argv[-1] for argv in rmis] == target['candidates'][:2]
    assert target['candidates'][2] in ids(images['kept'])
    assert run['disk_after']['filesystem']['used_percent'] == 70.0


def test_disk_target_batch_is_half_the_measured_excess_from_the_sizes_at_least_one():
    sizes = {'a': 100, 'b': 100, 'c': 300, 'd': 100}
    order = ['a', 'b', 'c', 'd']
    # half of 500 is 250: a, b (200) are short of it, c crosses it
    assert _retention.target_batch(order, sizes, 500) == ['a', 'b', 'c']
    assert _retention.target_batch(order, sizes, 400) == ['a', 'b']
    # never fewer than one, however small the excess
    assert _retention.target_batch(order, sizes, 1) == ['a']
    # the batches before freed twice their size per byte: half as many bytes of size are taken
    assert _retention.target_batch(order, sizes, 400, freed_per_byte=2.0) == ['a']
    # freeing less than the size makes batches no larger than the sizes alone would
    assert _retention.target_batch(order, sizes, 400, freed_per_byte=0.1) == ['a', 'b']
    assert _retention.target_batch(order, sizes, 10 ** 6) == order


def test_disk_target_real_run_keeps_what_the_estimate_had_go_once_the_measure_says_enough(
        tmp_path, peer_root, monkeypatch):
    engine, dummy = _target_engine(tmp_path, peer_root, monkeypatch, (69.0, 69.0))
    images = engine.run()['phases'][2]
    target = images['disk_target']
    assert images['removed'] == [] and target['measured']['steps'] == [] and target['measured']['reached']
    kept = dict((i['id'], i['reason']) for i in images['kept'])
    assert kept[target['candidates'][0]].startswith('kept: the image filesystem was at or below disk_low 70%')


def test_disk_target_unmet_after_every_candidate_warns(tmp_path, peer_root, monkeypatch):
    engine, dummy = _target_engine(tmp_path, peer_root, monkeypatch, (89.0, 88.0, 87.0, 86.0, 85.0, 85.0))
    images = engine.run()['phases'][2]
    target = images['disk_target']
    assert ids(images['removed']) == target['candidates'] and not target['measured']['reached']
    assert any('after every unused image that may go was removed: disk_low 70% is not reached' in w
               for w in images['warnings'])


# -- durable, honest state (issue 19) -------------------------------------------------------------

def test_save_fsyncs_the_file_and_its_directory(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink('/proc/self/fd/%d' % fd))
        real_fsync(fd)
    monkeypatch.setattr(os, 'fsync', fsync)
    path = tmp_path / 'images.json'
    _record.save(str(path), {}, NOW)
    assert len(synced) == 2
    assert synced[0].startswith(str(tmp_path / '.images.json.'))          # the temp file, before the rename
    assert synced[1] == str(tmp_path)                                    # then the directory


def test_a_killed_write_leaves_the_old_record_and_the_next_write_removes_its_temp(tmp_path):
    path = tmp_path / 'images.json'
    _record.save(str(path), {'sha256:old': {'first_seen': 1, 'last_used': None, 'refs': []}}, NOW)
    old = path.read_bytes()
    # a writer killed (SIGKILL) in the middle of its write, after the data went to the temp file
    child = subprocess.Popen([sys.executable, '-c', '''
import os, sys, time
sys.path[:0] = sys.argv[2:]
from ansible_collections.nodemaint.image_gc.plugins.module_utils import _record
def stuck(fd):
    print("writing", flush=True)
    time.sleep(60)
os.fsync = stuck
_record.save(sys.argv[1], {"sha256:new": {"first_seen": 2, "last_used": None, "refs": []}}, 2)
''', str(path)] + sys.path, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b'writing'
    finally:
        child.kill()
        child.wait()
    temps = [n for n in os.listdir(str(tmp_path)) if n != 'images.json']
    assert temps == ['.images.json.%d.node-image-gc-tmp' % child.pid]
    assert path.read_bytes() == old
    assert load(str(path))[0] == {'sha256:old': {'first_seen': 1, 'last_used': None, 'refs': [], 'size': 0}}
    # the next write (another process) removes the dead writer's temp file
    _record.save(str(path), {}, NOW)
    assert os.listdir(str(tmp_path)) == ['images.json']


def test_a_live_writers_temp_file_is_left_alone(tmp_path):
    sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])
    try:
        live = tmp_path / ('.images.json.%d.node-image-gc-tmp' % sleeper.pid)
        live.write_text('')
        (tmp_path / 'unrelated.tmp').write_text('')
        _record.save(str(tmp_path / 'images.json'), {}, NOW)
        assert sorted(os.listdir(str(tmp_path))) == sorted([live.name, 'images.json', 'unrelated.tmp'])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_full_disk_leaves_the_old_record_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / 'images.json'
    path.write_text('old')
    real_fsync = os.fsync

    def full(fd):                # the data reaches the disk at fsync: that is where ENOSPC shows
        if os.readlink('/proc/self/fd/%d' % fd).endswith(_files.TEMP_SUFFIX):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)
    monkeypatch.setattr(os, 'fsync', full)
    with pytest.raises(OSError) as caught:
        _record.save(str(path), {}, NOW)
    assert caught.value.errno == errno.ENOSPC
    assert os.listdir(str(tmp_path)) == ['images.json'] and path.read_text() == 'old'


def test_a_symlinked_record_is_written_through(tmp_path):
    target = tmp_path / 'real' / 'images.json'
    target.parent.mkdir()
    target.write_text('{}')
    link = tmp_path / 'images.json'
    link.symlink_to(target)
    _record.save(str(link), {}, NOW)
    assert link.is_symlink() and os.readlink(str(link)) == str(target)
    assert json.loads(target.read_text())['updated'] == NOW
    assert sorted(os.listdir(str(tmp_path))) == ['images.json', 'real'] and os.listdir(str(target.parent)) == ['images.json']


def test_a_newer_format_record_plans_as_none_warns_and_is_left_alone(tmp_path, peer_root):
    (tmp_path / 'state').mkdir()
    path = tmp_path / 'state' / 'images.json'
    text = json.dumps({'version': 3, 'updated': NOW_NS // 10 ** 9 - DAY, 'images': {
        IMG_UNUSED3: {'first_seen': 0, 'last_used': 0}}, 'new_field': True})
    path.write_text(text)
    run = make_engine(node_runner(V21), {'image_record_path': str(path), 'image_unused_for': '1m'},
                      peer_root=peer_root).run()
    removed = ids(run['phases'][2]['removed'])
    assert removed == [IMG_OLD_BUSYBOX1]         # as with no record: UNUSED3 counts as first seen now
    assert any('version 3 record, newer than' in w and 'left as it is' in w for w in run['warnings'])
    assert path.read_text() == text
    assert sorted(os.listdir(str(path.parent))) == ['images.json', 'images.json.lock']   # read under its lock


def test_times_in_the_future_are_clamped_to_now_and_age_from_there():
    a = image('a')
    merged = _record.merge({a.id: {'first_seen': NOW + 5 * DAY, 'last_used': NOW + 5 * DAY, 'refs': []}}, NOW, {})
    assert merged[a.id]['first_seen'] == NOW and merged[a.id]['last_used'] == NOW
    # the clamped record ages with the clock: two days on, the image was last used two days ago
    assert _retention.Retention(NOW + 2 * DAY, DAY, merged).last(a.id) == (2 * DAY, 'last used')


def _old_record(path, updated):
    now = NOW_NS // 10 ** 9
    path.write_text(json.dumps({'version': 1, 'updated': updated, 'images': {
        IMG_OLD_BUSYBOX1: {'first_seen': now - 30 * DAY, 'last_used': now - 30 * DAY},
        IMG_UNUSED3: {'first_seen': now - 30 * DAY, 'last_used': None}}}))


def test_a_record_saved_in_the_future_turns_age_based_removal_off_for_the_run(tmp_path, peer_root):
    now = NOW_NS // 10 ** 9
    path = tmp_path / 'images.json'
    settings = {'image_record_path': str(path), 'image_unused_for': '7d'}
    _old_record(path, now - 60)                  # saved a minute ago: never used for 30 days, it goes
    removed = ids(make_engine(node_runner(V21), settings, peer_root=peer_root).run()['phases'][2]['removed'])
    assert removed == [IMG_UNUSED3]
    _old_record(path, now + DAY)                 # saved a day "from now": the clock went back
    run = make_engine(node_runner(V21), settings, peer_root=peer_root).run()
    images = run['phases'][2]
    assert images['removed'] == []
    kept = dict((i['id'], i['reason']) for i in images['kept'])
    assert kept[IMG_UNUSED3].endswith('kept: the last-use record was saved after now (the clock went back)')
    assert any('clock went back' in w and 'image_unused_for' in w for w in run['warnings'])
    # the run's own record is saved with the run's clock: the next run trusts it again
    assert json.loads(path.read_text())['updated'] == now
