"""The warm cache on the real containerd of the lab (issue 11): the last-use record, retention by
``image_unused_for`` and the disk target.

- through the prune module: an image whose last container was removed moments ago stays with
  ``image_unused_for: 1h`` and goes with ``0s``; a run with the defaults (21d) keeps it too;
- through the node runner, run as its own process: the record survives a restart of containerd
  and of the runner (a later run still knows when the image was last used);
- a corrupt record leaves every image whose last use is unknown in place;
- the disk target, with an INJECTED usage figure for the image filesystem (the lab's filesystem is
  not full; ``_disk.filesystem_usage`` and the measurement after each removal, ``_disk.settled_figure``,
  are replaced in-process): the least recently used images go first, and no more once the target is
  met. test_disk_figures.py measures it for real on a small filesystem.
"""

import json
import os
import re
import subprocess
import sys

from tests.lab_tests.ansible_play import (
    EXCLUDE, FRESH_IMAGES, collections_path, run_tasks, runtime_args, runtime_state, state_args)

if collections_path() not in sys.path:
    sys.path.insert(0, collections_path())

from ansible_collections.nodemaint.image_gc.plugins.module_utils import _disk, _engine, _settings  # noqa: E402

PRUNE = 'nodemaint.image_gc.prune'


def _args(lab, **extra):
    args = dict(runtime_args(lab), **state_args(lab))
    # pod_aware: false - exit1 (exited in the Ready pod feas-exit) goes only in the blunt mode, which these
    # tests use to free exitonly; the kubelet's rules keep it (test_pod_safety.py)
    args.update(image_exclude=EXCLUDE, sandbox_min_age='0s', pod_aware=False, **FRESH_IMAGES)
    args.update(extra)
    return args


def test_a_just_used_image_stays_with_unused_for_and_goes_without(lab, scenario):
    exitonly = scenario['images']['exitonly']          # used only by exit1, which phase 1 removes
    unused = scenario['images']['unused3']              # never used
    res = run_tasks(lab, [('warm', PRUNE, _args(lab, image_unused_for='1h'))])
    warm = res['warm']
    assert not warm.get('failed'), warm
    assert scenario['containers']['exit1']['id'] in [c['id'] for c in warm['containers']]
    kept = dict((i['id'], i['reason']) for i in warm['images_kept'])
    assert kept[exitonly['id']].startswith('unused, last used ') and kept[exitonly['id']].endswith(
        '(image_unused_for 1h)'), kept[exitonly['id']]
    assert kept[unused['id']].startswith('unused, never used, first seen')
    assert exitonly['id'] in runtime_state(lab)['images']
    record = json.load(open(state_args(lab)['image_record_path']))['images']
    assert record[exitonly['id']]['last_used'] == scenario['containers']['exit1']['created_at'] // 10 ** 9

    res = run_tasks(lab, [('cold', PRUNE, _args(lab, image_unused_for='0s'))])
    removed = dict((i['id'], i['reason']) for i in res['cold']['images'])
    assert exitonly['id'] in removed and unused['id'] in removed
    assert exitonly['id'] not in runtime_state(lab)['images']
    assert exitonly['id'] not in json.load(open(state_args(lab)['image_record_path']))['images']


def test_a_default_run_keeps_a_just_used_image(lab, scenario):
    """The collection's default image_unused_for (21d, chosen by the policy replay, issue 26): a run
    with no image policy of its own removes exit1 (the blunt mode, as _args) but keeps the image it
    used moments ago, and the never-used one first seen now. image_min_age 0s so that only
    image_unused_for decides (the lab's images are seconds old)."""
    exitonly = scenario['images']['exitonly']
    unused = scenario['images']['unused3']
    args = dict(runtime_args(lab), **state_args(lab))
    args.update(image_exclude=EXCLUDE, sandbox_min_age='0s', pod_aware=False, image_min_age='0s')
    assert 'image_unused_for' not in args
    res = run_tasks(lab, [('default', PRUNE, args)])
    run = res['default']
    assert not run.get('failed'), run
    assert scenario['containers']['exit1']['id'] in [c['id'] for c in run['containers']]
    kept = dict((i['id'], i['reason']) for i in run['images_kept'])
    assert kept[exitonly['id']].startswith('unused, last used ') and kept[exitonly['id']].endswith(
        '(image_unused_for 21d)'), kept[exitonly['id']]
    assert kept[unused['id']].startswith('unused, never used, first seen ') and kept[unused['id']].endswith(
        '(image_unused_for 21d)'), kept[unused['id']]
    assert exitonly['id'] in runtime_state(lab)['images'] and unused['id'] in runtime_state(lab)['images']


RUNNER = ('import sys; sys.path.insert(0, sys.argv[1]); '
          'from ansible_collections.nodemaint.image_gc.plugins.module_utils._runner import main; '
          'sys.exit(main(sys.argv[2:]))')


def _runner(lab, **values):
    path = os.path.join(lab.base, 'runner-config.json')
    cfg = dict(runtime_args(lab), **state_args(lab))
    cfg.update(image_exclude=EXCLUDE, report_path=os.path.join(lab.base, 'last-run.json'), pod_aware=False,
               **FRESH_IMAGES)      # the blunt mode, as _args
    cfg.update(values)
    with open(path, 'w') as handle:
        json.dump(cfg, handle)
    proc = subprocess.run([sys.executable, '-c', RUNNER, collections_path(), '--config', path, 'run'],
                          capture_output=True, text=True, timeout=300, check=False)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return dict((e['phase'], e) for e in events if e['event'] == 'phase')


def test_the_record_survives_a_restart_of_containerd_and_of_the_runner(lab, scenario):
    exitonly = scenario['images']['exitonly']
    first = _runner(lab, image_unused_for='1d')
    assert scenario['containers']['exit1']['id'] in first['containers']['ids']
    lab.restart()
    # a new runner process, a restarted containerd: exit1 is long gone, the record still knows
    second = _runner(lab, image_unused_for='1d')
    kept = dict((k['id'], k['reason']) for k in second['images']['kept'])
    assert kept[exitonly['id']].startswith('unused, last used '), kept[exitonly['id']]
    assert 'never used' not in kept[exitonly['id']]
    assert exitonly['id'] in runtime_state(lab)['images']


def test_a_corrupt_record_keeps_every_image_whose_last_use_is_unknown(lab, scenario):
    path = state_args(lab)['image_record_path']
    with open(path, 'w') as handle:
        handle.write('{"version": 1, "images": {"sha256:')
    res = run_tasks(lab, [('run', PRUNE, _args(lab, image_unused_for='1m', containers=False))])
    run = res['run']
    assert not run.get('failed'), run
    assert any('cannot be read' in w for w in run.get('warnings', [])), run.get('warnings')
    after = runtime_state(lab)['images']
    for key in ('unused3', 'busybox1', 'notready'):        # no container was ever seen with these
        assert scenario['images'][key]['id'] in after, key
    assert json.load(open(path))['version'] == 2           # rewritten whole, in the current format


def test_the_disk_target_frees_least_recently_used_first_and_stops_when_met(lab, scenario, monkeypatch):
    imgs = scenario['images']
    now = scenario['pods']['feas-run']['created_at'] // 10 ** 9
    order = ['unused3', 'busybox1', 'notready', 'exitonly']           # oldest use first
    record = {'version': 1, 'updated': now, 'images': dict(
        (imgs[k]['id'], {'first_seen': now - 30 * 86400, 'last_used': now - (10 - i) * 3600, 'refs': []})
        for i, k in enumerate(order))}
    path = state_args(lab)['image_record_path']
    with open(path, 'w') as handle:
        json.dump(record, handle)
    sizes = dict((k, imgs[k]['size']) for k in order)
    size = 100 * 1000 * 1000
    # INJECTED: the image filesystem is 95% full; the two least recently used images bring it to
    # at or below disk_low, which lies just under what removing the first one alone reaches
    used = 95 * size // 100
    low_bytes = used - sizes['unused3'] - sizes['busybox1'] // 2
    low = int(100.0 * low_bytes / size)
    monkeypatch.setattr(_disk, 'filesystem_usage', lambda p: {
        'fs_path': p, 'fs_size_bytes': size, 'fs_free_bytes': size - used, 'fs_used_bytes': used,
        'fs_used_percent': round(100.0 * used / size, 1)})

    def measured(path, **kwargs):
        # INJECTED too: the real run re-reads the filesystem after each removal; here it reads as
        # the injected usage less the sizes of the images of ``order`` that are gone by now
        present = runtime_state(lab)['images']
        now_used = used - sum(sizes[k] for k in order if imgs[k]['id'] not in present)
        return {'path': path, 'used_bytes': now_used, 'size_bytes': size, 'free_bytes': size - now_used,
                'used_percent': round(100.0 * now_used / size, 1), 'settled': True, 'waited': 0.0}
    monkeypatch.setattr(_disk, 'settled_figure', measured)
    settings = dict((k, v) for k, v in _args(lab, image_unused_for='7d', disk_high=low + 1, disk_low=low).items()
                    if k in _settings.ENGINE_SETTINGS)
    run = _engine.Engine(settings, ('containers', 'sandboxes', 'images', 'disk')).run()
    images = run['phases'][2]
    assert images['status'] == 'ok', images
    reasons = dict((i['id'], i['reason']) for i in images['removed'])
    # the exited/NotReady containers went in phases 1-2, so exitonly and notready are unused too,
    # but they were used more recently: the target is met before their turn
    assert set(reasons) == {imgs['unused3']['id'], imgs['busybox1']['id']}, images['removed']
    assert all('least recently used first' in r and re.search(r'before its batch of \d+ went \(measured\)$', r)
               for r in reasons.values())
    assert [i for step in images['disk_target']['measured']['steps'] for i in step['ids']] == [
        imgs['unused3']['id'], imgs['busybox1']['id']]
    after = runtime_state(lab)['images']
    assert imgs['unused3']['id'] not in after and imgs['busybox1']['id'] not in after
    for key in ('notready', 'exitonly', 'busybox2', 'pause', 'keep'):
        assert imgs[key]['id'] in after, key
