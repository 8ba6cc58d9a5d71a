"""The node runner (``node-image-gc run``) against the real containerd of the lab, installed by the
timer role's own install tasks (tests/lab_tests/node_package.py: the library as package
``nodemaint_image_gc`` and the launcher, run by the node's python3):
its textfile metrics pass ``promtool check metrics``, and the counters add up across runs.
"""

import json
import os
import subprocess

import tests.lab as labpkg
from tests.lab_tests import node_package
from tests.lab_tests.ansible_play import EXCLUDE, FRESH_IMAGES, runtime_args, state_args
from tests.unit.promtool_lib import promtool

PHASES = ('containers', 'sandboxes', 'images', 'content')


def samples(text):
    return dict((key, float(value)) for key, value in
                (line.rsplit(' ', 1) for line in text.splitlines() if line and not line.startswith('#')))


class Node(object):
    def __init__(self, lab, base):
        self.lab = lab
        self.package = node_package.install(base)
        self.report = os.path.join(base, 'state', 'last-run.json')
        self.prom = os.path.join(base, 'textfile', 'node_image_gc.prom')
        self.config = os.path.join(base, 'config.json')
        config = dict(runtime_args(lab), **state_args(lab))
        config.update(FRESH_IMAGES)
        # pod_aware: false - the counts below take exit1 (exited in the Ready pod) as garbage: the blunt mode
        config.update(report_path=self.report, textfile_path=self.prom, image_exclude=EXCLUDE,
                      sandbox_min_age='1s', pod_aware=False)
        del config['kubelet_root']          # the blunt mode asks no kubelet root (and the test resets the lab's)
        with open(self.config, 'w') as handle:
            json.dump(config, handle)

    def run(self, *args):
        env = self.lab.env()
        # The runner must find everything through its config, not the lab's environment.
        for key in ('CONTAINER_RUNTIME_ENDPOINT', 'IMAGE_SERVICE_ENDPOINT', 'CONTAINERD_ADDRESS'):
            env.pop(key, None)
        proc = subprocess.run([self.package.launcher, '--config', self.config, 'run'] + list(args),
                              capture_output=True, text=True, env=env, timeout=300, check=False)
        events = [json.loads(line) for line in proc.stdout.splitlines()]
        return proc, events

    def metrics(self):
        with open(self.prom) as handle:
            return handle.read()


def check_metrics(text):
    proc = promtool('check', 'metrics', stdin=text)
    assert proc.returncode == 0, 'promtool check metrics:\n%s%s\n---\n%s' % (proc.stdout, proc.stderr, text)


def test_counters_add_up_across_runs_on_the_lab(lab, scenario, tmp_path):
    node = Node(lab, str(tmp_path))

    first_proc, events = node.run()
    assert first_proc.returncode == 0, first_proc.stdout + first_proc.stderr
    assert events[-1]['status'] == 'ok' and events[-1]['removed'] > 0
    assert 'counters start from zero' in first_proc.stderr            # no previous state: a first run
    first_text = node.metrics()
    check_metrics(first_text)
    first = samples(first_text)
    phases = dict((e['phase'], e) for e in events if e['event'] == 'phase')
    for phase in PHASES:
        assert first['node_image_gc_last_run_removed_objects{phase="%s"}' % phase] == phases[phase]['removed']
        assert first['node_image_gc_removed_objects_total{phase="%s"}' % phase] == phases[phase]['removed']
        assert first['node_image_gc_reclaimed_bytes_total{phase="%s"}' % phase] == phases[phase]['bytes']
    assert first['node_image_gc_last_run_removed_objects{phase="containers"}'] == len(scenario['expected']['exited_container_ids'])
    assert first['node_image_gc_last_run_removed_objects{phase="images"}'] > 0
    assert first['node_image_gc_last_run_reclaimed_bytes{phase="images"}'] > 0
    assert first['node_image_gc_runs_total{status="ok"}'] == 1
    # containerd's own image fs figure (snapshotter usage, refreshed on its schedule) may not have
    # moved yet: only that both are reported
    assert first['node_image_gc_image_fs_used_bytes{when="before"}'] >= 0
    assert first['node_image_gc_image_fs_used_bytes{when="after"}'] >= 0
    assert 0 < first['node_image_gc_image_fs_usage_ratio{when="after"}'] < 1
    assert 'node_image_gc_reclaimable_bytes' in first

    # A dry run in between counts nothing and writes nothing.
    dry_proc, dry_events = node.run('--dry-run')
    assert dry_proc.returncode == 0 and dry_events[-1]['dry_run'] is True
    assert node.metrics() == first_text

    # Fresh garbage, and a second real run: the counters are the sum of both runs.
    labpkg.reset(lab)
    labpkg.scenario(lab)
    second_proc, events = node.run()
    assert second_proc.returncode == 0, second_proc.stdout + second_proc.stderr
    assert 'warning' not in second_proc.stderr
    second_text = node.metrics()
    check_metrics(second_text)
    second = samples(second_text)
    assert second['node_image_gc_runs_total{status="ok"}'] == 2
    for phase in PHASES:
        for name in ('removed_objects', 'reclaimed_bytes'):
            key = 'node_image_gc_last_run_%s{phase="%s"}' % (name, phase)
            total = 'node_image_gc_%s_total{phase="%s"}' % (name, phase)
            assert second[total] == first[key] + second[key], total
    assert second['node_image_gc_removed_objects_total{phase="images"}'] > first[
        'node_image_gc_removed_objects_total{phase="images"}']
    with open(node.report) as handle:
        report = json.load(handle)
    assert report['counters']['runs'] == {'ok': 2, 'failed': 0, 'skipped': 0}
    assert report['counters']['removed_objects']['containers'] == second[
        'node_image_gc_removed_objects_total{phase="containers"}']


def test_a_full_state_filesystem_still_cleans_up_and_keeps_the_old_files_on_the_lab(lab, scenario, tmp_path):
    """The state directory (last-use record, report, metrics) on a tiny tmpfs filled to the last
    byte: the run removes the garbage all the same, the previous three files stay byte for byte,
    no temp file is left, and the run says which writes failed (exit 1, ``write_failed``)."""
    from tests.lab_tests.ansible_play import runtime_state
    node = Node(lab, str(tmp_path))
    state = str(tmp_path / 'full')
    os.makedirs(state)
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=256k,mode=0755', 'tmpfs', state], check=True)
    try:
        with open(node.config) as handle:
            config = json.load(handle)
        paths = {'record': os.path.join(state, 'images.json'), 'report': os.path.join(state, 'last-run.json'),
                 'metrics': os.path.join(state, 'node_image_gc.prom')}
        config.update(image_record_path=paths['record'], report_path=paths['report'], textfile_path=paths['metrics'])
        with open(node.config, 'w') as handle:
            json.dump(config, handle)
        old = {'record': json.dumps({'version': 1, 'updated': 1, 'images': {}}) + '\n',
               'report': json.dumps({'status': 'ok', 'finished': 1.0, 'phases': []}) + '\n',
               'metrics': '# an older run\n'}
        for key, text in old.items():
            with open(paths[key], 'w') as handle:
                handle.write(text)
        filler = subprocess.run(['dd', 'if=/dev/zero', 'of=' + os.path.join(state, 'filler'), 'bs=4k'],
                                capture_output=True, text=True, check=False)
        assert 'No space left on device' in filler.stderr, filler.stderr
        exited = scenario['expected']['exited_container_ids']
        assert set(exited) <= set(runtime_state(lab)['containers'])

        proc, events = node.run()
        assert not set(exited) & set(runtime_state(lab)['containers']), 'the cleanup did not run on a full disk'
        end = events[-1]
        assert end['event'] == 'end' and end['removed'] >= len(exited), proc.stdout[-3000:]
        assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert [(f['file'], f['error']) for f in end['write_failed']] == [
            ('record', 'No space left on device'), ('report', 'No space left on device'),
            ('metrics', 'No space left on device')]
        for key, text in old.items():
            with open(paths[key]) as handle:
                assert handle.read() == text, key
        # no temp file left; images.json.lock is the record's lock file (made by the first run)
        assert sorted(os.listdir(state)) == ['filler', 'images.json', 'images.json.lock', 'last-run.json',
                                             'node_image_gc.prom']
    finally:
        subprocess.run(['umount', state], check=False)
