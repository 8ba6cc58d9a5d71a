"""The observation pass (``node-image-gc observe``) on the real containerd of the lab (issue 26):

- a pod that lived only between two runs keeps its image warm: the pass saw its container
  running, so with ``image_unused_for`` a later run keeps the image (without the pass, the record
  says the image was never used and the run removes it);
- an image a run removed and that is imported again counts as a re-pull: the counter in the
  record, the textfile metrics and the next run's report go up.

The node runner runs as its own process (``run`` and ``observe``), as the timer's units run it.
"""

import json
import os
import subprocess
import sys
import time

from tests.lab_tests.ansible_play import EXCLUDE, collections_path, runtime_args, runtime_state, state_args
from tests.lab import pods as labpods

RUNNER = ('import sys; sys.path.insert(0, sys.argv[1]); '
          'from ansible_collections.nodemaint.image_gc.plugins.module_utils._runner import main; '
          'sys.exit(main(sys.argv[2:]))')


def _config(lab, **values):
    path = os.path.join(lab.base, 'observe-config.json')
    cfg = dict(runtime_args(lab), **state_args(lab))
    cfg.update(image_exclude=EXCLUDE, image_min_age='0s', sandbox_min_age='0s', image_unused_for='0s',
               report_path=os.path.join(lab.base, 'observe-last-run.json'))
    cfg.update(values)
    with open(path, 'w') as handle:
        json.dump(cfg, handle)
    return path


def _runner(lab, command, **values):
    proc = subprocess.run([sys.executable, '-c', RUNNER, collections_path(), '--config', _config(lab, **values),
                           command], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def _record(lab):
    with open(state_args(lab)['image_record_path']) as handle:
        return json.load(handle)


def _phases(events):
    return {e['phase']: e for e in events if e['event'] == 'phase'}


def test_a_pod_that_lived_only_between_two_runs_keeps_its_image_warm(lab, scenario):
    unused = scenario['images']['unused3']
    path = state_args(lab)['image_record_path']
    now = int(time.time())
    # a version 1 record, as an earlier run left it: unused:3 has been on the node for two hours,
    # and no run ever saw a container use it
    with open(path, 'w') as handle:
        json.dump({'version': 1, 'updated': now - 3600, 'images': {
            unused['id']: {'first_seen': now - 7200, 'last_used': None, 'refs': [unused['name']]}}}, handle)
    # between two runs: a pod runs a container from unused:3, the pass sees it, the pod goes
    pod = labpods.pod(lab, 'between-runs')
    labpods.container(lab, pod['id'], 'job', image=unused['name'])
    [event] = _runner(lab, 'observe')
    assert event['event'] == 'observe' and event['status'] == 'ok' and event['record'] == 'written', event
    assert event['crictl_calls'] == 2
    seen = int(event['time'])
    lab.client.stop_pod_sandbox(pod['id'])
    lab.client.remove_pod_sandbox(pod['id'])
    assert unused['id'] not in {c['image_ref'] for c in _listed_containers(lab)}
    # the next run: unused for 30 minutes or more goes; unused:3 was used seconds ago
    images = _phases(_runner(lab, 'run', image_unused_for='30m', containers=False, sandboxes=False,
                             content=False))['images']
    kept = {k['id']: k['reason'] for k in images['kept']}
    assert kept.get(unused['id'], '').startswith('unused, last used '), (kept, images['ids'])
    assert kept[unused['id']].endswith('(image_unused_for 30m)')
    assert unused['id'] in runtime_state(lab)['images']
    entry = _record(lab)['images'][unused['id']]
    assert seen - 5 <= entry['last_used'] <= seen + 5 and entry['first_seen'] == now - 7200, entry


def _listed_containers(lab):
    proc = lab.crictl('ps', '-a', '-o', 'json')
    assert proc.returncode == 0, proc.stderr
    return [{'id': c['id'], 'image_ref': c['imageRef']} for c in json.loads(proc.stdout)['containers']]


def test_a_removed_image_imported_again_counts_a_repull(lab, scenario):
    unused = scenario['images']['unused3']
    if os.path.exists(state_args(lab)['image_record_path']):
        os.remove(state_args(lab)['image_record_path'])     # an earlier test's removals are not this one's
    prom = os.path.join(lab.base, 'observe-node_image_gc.prom')
    run = _phases(_runner(lab, 'run', textfile_path=prom, pod_aware=False))
    assert unused['id'] in run['images']['ids'], run['images']
    removed = _record(lab)['removed'][unused['id']]
    assert removed['size'] == unused['size'], removed
    with open(prom) as handle:
        assert 'node_image_gc_repulled_images_total 0\n' in handle.read()
    # imported again (as a pull would bring it back): the same image id. Times are whole seconds: a
    # listing in the second of the removal is not trusted to be after it (the next pass counts it)
    time.sleep(max(0.0, removed['at'] + 1 - time.time()))
    assert labpods.ensure_images(lab, unused['name'])[unused['name']] == unused['id']
    [event] = _runner(lab, 'observe', textfile_path=prom)
    assert [(r['id'], r['bytes']) for r in event['repulled']] == [(unused['id'], unused['size'])], event
    record = _record(lab)
    assert (record['repulls']['images'], record['repulls']['bytes']) == (1, unused['size'])
    assert unused['id'] not in record['removed']
    with open(prom) as handle:
        text = handle.read()
    assert 'node_image_gc_repulled_images_total 1\n' in text
    assert 'node_image_gc_repulled_bytes_total %d\n' % unused['size'] in text
    # the next run's report carries it; seen again, it is not counted twice
    _runner(lab, 'run', textfile_path=prom, images=False)
    with open(os.path.join(lab.base, 'observe-last-run.json')) as handle:
        regret = json.load(handle)['regret']
    assert (regret['images'], regret['bytes']) == (1, unused['size'])
    assert [r['id'] for r in regret['recent']] == [unused['id']]
