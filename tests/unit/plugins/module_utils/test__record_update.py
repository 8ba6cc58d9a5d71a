# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""_record's version 2 and its writers (issue 26): the transaction under the record's own lock
(two writers interleaved lose nothing), the order-free merge, writes only when something worth one
changed, the version 1 record read and written back as version 2, and the re-pull counters."""

import json
import os
import subprocess
import sys
import threading
import time

from ansible_collections.nodemaint.image_gc.plugins.module_utils import _record, _record_merge
from ansible_collections.nodemaint.image_gc.plugins.module_utils._listings import Image

NOW = 1764600000
DAY = 86400


def image(letter, size=1000):
    return Image({'id': 'sha256:' + letter * 64, 'repoTags': ['docker.io/x/%s:1' % letter], 'size': str(size)})


def iid(letter):
    return 'sha256:' + letter * 64


def state(**images):
    return {'images': {iid(k): dict({'refs': [], 'size': 0, 'last_used': None}, **v) for k, v in images.items()},
            'removed': {}, 'repulls': _record_merge.empty_repulls()}


def on_disk(path):
    with open(path) as handle:
        return json.load(handle)


# -- version 1 in, version 2 out ------------------------------------------------------------------

def test_a_version_1_record_is_read_whole_and_written_back_as_version_2(tmp_path):
    path = str(tmp_path / 'images.json')
    with open(path, 'w') as handle:
        json.dump({'version': 1, 'updated': NOW - 60, 'images': {
            iid('a'): {'first_seen': NOW - DAY, 'last_used': NOW - 3600, 'refs': ['docker.io/x/a:1']},
            iid('b'): {'first_seen': NOW - 2 * DAY, 'last_used': None, 'refs': []}}}, handle)
    loaded = _record.read(path, NOW)
    assert loaded.warning is None and loaded.version == 1
    assert loaded.entries[iid('a')] == {'first_seen': NOW - DAY, 'last_used': NOW - 3600,
                                        'refs': ['docker.io/x/a:1'], 'size': 0}
    # nothing new seen: still written once, to move the file to version 2
    result = _record.update(path, _record_merge.Observation(), NOW)
    assert result.written and result.warning is None
    data = on_disk(path)
    assert data['version'] == 2 and set(data['images']) == {iid('a'), iid('b')}
    assert data['images'][iid('b')]['first_seen'] == NOW - 2 * DAY
    assert data['removed'] == {} and data['repulls'] == {'images': 0, 'bytes': 0, 'recent': []}
    # and then left alone
    assert not _record.update(path, _record_merge.Observation(), NOW + 10).written


# -- first seen, and the listing's drops --------------------------------------------------------------

def test_a_listed_image_is_first_seen_at_the_listing_and_a_later_one_is_not_dropped_by_an_older_listing():
    s = state(a={'first_seen': NOW - DAY})
    # writer 1 listed at NOW - 100: a and b; b is new
    _record_merge.apply(s, _record_merge.Observation(NOW - 100, [image('a'), image('b')]), NOW)
    assert s['images'][iid('b')]['first_seen'] == NOW - 100
    # writer 2 listed earlier (NOW - 200) and saw only a: b appeared after its listing, so it stays
    _record_merge.apply(s, _record_merge.Observation(NOW - 200, [image('a')]), NOW)
    assert iid('b') in s['images']
    # a listing after b's first sighting without b: b is gone
    _record_merge.apply(s, _record_merge.Observation(NOW - 50, [image('a')]), NOW)
    assert iid('b') not in s['images']


def test_two_writers_give_the_same_record_in_either_order():
    """A run stamps its removals with the time it writes them (under the lock), so a pass's
    listing that showed a removed image was taken before that: whichever writes first, the
    removal stands, the image is not brought back, and no re-pull is counted from that listing."""
    removal = {iid('c'): {'at': NOW - 10, 'size': 500, 'refs': ['docker.io/x/c:1']}}
    run = _record_merge.Observation(NOW - 300, [image('a'), image('b'), image('c')], {iid('a'): NOW - 40}, removal)
    observe = _record_merge.Observation(NOW - 20, [image('a'), image('b'), image('c', 700), image('d')], {iid('b'): NOW - 20})

    def base():
        return state(a={'first_seen': NOW - DAY}, b={'first_seen': NOW - DAY, 'last_used': NOW - 9000},
                     c={'first_seen': NOW - DAY})
    one, found_one = _record_merge.apply(_record_merge.apply(base(), run, NOW)[0], observe, NOW)
    two, found_two = _record_merge.apply(_record_merge.apply(base(), observe, NOW)[0], run, NOW)
    assert one == two
    assert set(one['images']) == {iid('a'), iid('b'), iid('d')} and set(one['removed']) == {iid('c')}
    assert one['images'][iid('a')]['last_used'] == NOW - 40 and one['images'][iid('b')]['last_used'] == NOW - 20
    assert one['images'][iid('d')]['first_seen'] == NOW - 20
    assert found_one == found_two == [] and one['repulls']['images'] == 0


# -- the transaction under the record's lock ---------------------------------------------------------

def test_two_writers_interleaved_lose_nothing(tmp_path, monkeypatch):
    """Writer A has read the record and is about to write it when writer B starts its update. With
    the record's lock, B waits until A has written and then applies its own observation to A's
    result; without it, A would write back its copy over B's update (or B over A's)."""
    path = str(tmp_path / 'images.json')
    _record.update(path, _record_merge.Observation(NOW - 600, [image('a'), image('b')]), NOW - 600)
    real_apply = _record.apply
    b_started, b_done = threading.Event(), threading.Event()

    def apply(state_, seen, now):
        out = real_apply(state_, seen, now)
        if threading.current_thread().name == 'A':
            b_thread.start()
            assert b_started.wait(5)
            b_done.wait(0.5)              # room for B to finish, were it not held off
        return out
    monkeypatch.setattr(_record, 'apply', apply)

    def writer_b():
        b_started.set()
        _record.update(path, _record_merge.Observation(NOW, None, {iid('b'): NOW}), NOW)
        b_done.set()
    b_thread = threading.Thread(target=writer_b, name='B')
    a_thread = threading.Thread(target=lambda: _record.update(
        path, _record_merge.Observation(NOW, None, {iid('a'): NOW - 5}), NOW), name='A')
    a_thread.start()
    a_thread.join(10)
    b_thread.join(10)
    assert b_done.is_set()
    images = on_disk(path)['images']
    assert images[iid('a')]['last_used'] == NOW - 5, 'writer A\'s update was lost'
    assert images[iid('b')]['last_used'] == NOW, 'writer B\'s update was lost'


WRITER = r'''
import sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.nodemaint.image_gc.plugins.module_utils import _record, _record_merge
path, name, count, now = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
for i in range(count):
    _record.update(path, _record_merge.Observation(None, None, {'sha256:%s-%03d' % (name, i): now}), now)
'''


def test_writers_in_separate_processes_lose_nothing(tmp_path):
    # the directory holding ansible_collections/ as this process imported it
    collections_root = _record.__file__
    for dummy in range(6):
        collections_root = os.path.dirname(collections_root)
    path = str(tmp_path / 'images.json')
    procs = [subprocess.Popen([sys.executable, '-c', WRITER, collections_root, path, name, '25', str(NOW)])
             for name in ('observe', 'run')]
    for proc in procs:
        assert proc.wait(60) == 0
    images = on_disk(path)['images']
    assert sorted(images) == sorted('sha256:%s-%03d' % (n, i) for n in ('observe', 'run') for i in range(25))


def test_a_held_record_lock_skips_the_update_with_a_warning_and_never_waits_long(tmp_path):
    path = str(tmp_path / 'images.json')
    holder = _record.RunLock(_record.lock_path(path), 1)
    assert holder.acquire()
    try:
        began = time.monotonic()
        result = _record.update(path, _record_merge.Observation(NOW, [image('a')]), NOW, wait=0.3)
        assert time.monotonic() - began < 2
    finally:
        holder.release()
    assert not result.written and not os.path.exists(path)
    assert 'was held for longer than' in result.warning and 'next pass or run' in result.warning
    assert iid('a') in result.state['images']          # what it would have written


# -- written only when worth it ----------------------------------------------------------------------

def test_the_record_is_written_only_when_something_worth_a_write_changed(tmp_path):
    path = str(tmp_path / 'images.json')
    listing = [image('a'), image('b')]
    assert _record.update(path, _record_merge.Observation(NOW, listing, {iid('a'): NOW}), NOW).written
    mtime = os.stat(path).st_mtime_ns
    # a running container seen again 5 and 25 minutes later: less than LAST_USE_STEP, no write
    for later in (300, 1500):
        t = NOW + later
        assert not _record.update(path, _record_merge.Observation(t, listing, {iid('a'): t}), t).written
    assert os.stat(path).st_mtime_ns == mtime
    assert on_disk(path)['images'][iid('a')]['last_used'] == NOW
    # 30 minutes: written, with the exact time
    t = NOW + _record_merge.LAST_USE_STEP
    assert _record.update(path, _record_merge.Observation(t, listing, {iid('a'): t}), t).written
    assert on_disk(path)['images'][iid('a')]['last_used'] == t
    # a first use, a new image, a gone image: each written at once
    t += 60
    assert _record.update(path, _record_merge.Observation(t, listing, {iid('b'): t}), t).written
    assert _record.update(path, _record_merge.Observation(t, listing + [image('c')]), t).written
    assert _record.update(path, _record_merge.Observation(t + 1, [image('a'), image('b')]), t + 1).written


# -- regret ---------------------------------------------------------------------------------------------

def removed(letter, at, size=1000):
    return {iid(letter): {'at': at, 'size': size, 'refs': ['docker.io/x/%s:1' % letter]}}


def test_an_image_listed_again_after_its_removal_is_a_repull_counted_once(tmp_path):
    path = str(tmp_path / 'images.json')
    _record.update(path, _record_merge.Observation(NOW - 100, [image('a'), image('b')]), NOW - 100)
    run = _record.update(path, _record_merge.Observation(NOW - 100, [image('a')], {}, removed('b', NOW - 10)), NOW - 10)
    assert run.written and run.repulled == []
    data = on_disk(path)
    assert iid('b') not in data['images'] and data['removed'][iid('b')]['at'] == NOW - 10
    # a pass whose listing was taken before the removal: not a re-pull, and b is not brought back
    stale = _record.update(path, _record_merge.Observation(NOW - 20, [image('a'), image('b')]), NOW)
    assert stale.repulled == [] and iid('b') not in on_disk(path)['images']
    # listed after the removal, pulled again at another size: counted, with the size listed now
    back = _record.update(path, _record_merge.Observation(NOW + 3600, [image('a'), image('b', 4321)]), NOW + 3600)
    assert [(r['id'], r['bytes'], r['removed_at'], r['seen_at']) for r in back.repulled] == [
        (iid('b'), 4321, NOW - 10, NOW + 3600)]
    data = on_disk(path)
    assert (data['repulls']['images'], data['repulls']['bytes']) == (1, 4321)
    assert data['removed'] == {} and data['images'][iid('b')]['first_seen'] == NOW + 3600
    # seen again: not counted twice
    assert _record.update(path, _record_merge.Observation(NOW + 7200, [image('a'), image('b', 4321)]),
                          NOW + 7200).repulled == []
    assert on_disk(path)['repulls']['images'] == 1


def test_a_removal_older_than_the_window_is_forgotten_and_not_counted(tmp_path):
    s = state()
    s['removed'] = removed('b', NOW - _record_merge.REGRET_WINDOW - 60)
    s, found = _record_merge.apply(s, _record_merge.Observation(NOW, [image('b')]), NOW)
    assert found == [] and s['removed'] == {} and s['repulls']['images'] == 0
    s = state()
    s['removed'] = removed('b', NOW - _record_merge.REGRET_WINDOW - 60)
    s, found = _record_merge.apply(s, _record_merge.Observation(), NOW)          # no listing: pruned by age alone
    assert s['removed'] == {}


def test_a_removed_images_old_container_evidence_does_not_bring_its_entry_back():
    s = state(b={'first_seen': NOW - DAY})
    run = _record_merge.Observation(NOW - 100, [image('a')], {iid('b'): NOW - DAY + 5}, removed('b', NOW))
    s, dummy = _record_merge.apply(s, run, NOW)
    assert iid('b') not in s['images'] and iid('b') in s['removed']
