# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Over 300 lines: many cases of one subject, the node runner's CLI (config, a run, status, a full disk).
"""_runner: the node-side CLI - config, JSON event lines, failure tolerance, dry run, report and
metrics files, the run lock, the disk usage threshold."""

import errno
import io
import json
import os
from types import SimpleNamespace

import pytest

from ansible_collections.nodemaint.image_gc.plugins.module_utils import _disk, _engine, _files, _runner, _units
from ansible_collections.nodemaint.image_gc.plugins.module_utils._common import ImageGCError

from tests.unit.image_gc_testlib import IDS, V21, VERSIONS, Reply, lock_held_elsewhere, make_engine, node_runner


@pytest.fixture
def node(tmp_path, peer_root):
    """Config/report/metrics/lock paths under tmp_path, and a factory for stub-backed engines."""
    class Node(object):
        pass
    n = Node()
    n.dir = tmp_path / 'var'
    n.report = n.dir / 'lib' / 'last-run.json'
    n.prom = n.dir / 'textfile' / 'node_image_gc.prom'
    n.lock = n.dir / 'run' / 'gc.lock'
    n.config = tmp_path / 'config.json'
    n.runners = []
    n.version = V21

    def write_config(**values):
        data = {'report_path': str(n.report), 'textfile_path': str(n.prom), 'lock_path': str(n.lock),
                'lock_wait': '1s', 'image_min_age': '0s', 'image_unused_for': '0s',
                'pod_aware': False}  # the recorded sequence: every unused image, the blunt removal (make_engine)
        data.update(values)
        n.config.write_text(json.dumps(data))
        return str(n.config)

    def factory(settings, phases):
        runner = node_runner(n.version)
        n.runners.append(runner)
        return make_engine(runner, settings, phases=phases, peer_root=peer_root)

    def run(dry_run=False, factory=factory):
        stream = io.StringIO()
        code = _runner.run(str(n.config), dry_run=dry_run, stream=stream, engine_factory=factory)
        return code, [json.loads(line) for line in stream.getvalue().splitlines()]

    n.write_config = write_config
    n.factory = factory
    n.run = run
    write_config()
    return n


def files_under(path):
    return sorted(os.path.relpath(os.path.join(d, f), str(path)) for d, dummy, fs in os.walk(str(path)) for f in fs)


# -- config ----------------------------------------------------------------------------------

def test_load_config_splits_engine_and_runner_settings(tmp_path):
    path = tmp_path / 'c.json'
    path.write_text(json.dumps({'sandbox_min_age': '1h', 'image_exclude': ['quay.io/*'], 'lock_wait': '30s',
                                'disk_usage_threshold': 80, 'textfile_path': None}))
    settings, opts = _runner.load_config(str(path))
    # checked and converted once, every setting filled in from the table
    assert settings['sandbox_min_age'] == 3600 and settings['image_exclude'] == ['quay.io/*']
    assert settings['disk_usage_threshold'] == 80
    assert settings['created_min_age'] == 3600 and settings['crictl_path'] is None
    assert sorted(opts) == ['lock_path', 'lock_wait', 'report_path', 'textfile_path']
    assert opts['lock_wait'] == 30
    assert opts['textfile_path'] is None
    assert opts['report_path'] == '/var/lib/node-image-gc/last-run.json'


@pytest.mark.parametrize('content, message', [
    ({'sandbox_min_age': '10m', 'colour': 'blue'}, 'unknown key(s) colour'),
    ({'sandbox_min_age': '10x'}, 'sandbox_min_age: invalid duration'),
    ({'batch_size': 0}, 'batch_size: expected a whole number'),
    ({'image_min_age': 'soon'}, 'image_min_age: invalid duration'),
    ({'disk_usage_threshold': 150}, 'disk_usage_threshold: expected a whole percentage from 0 to 100'),
    ({'disk_usage_threshold': True}, 'disk_usage_threshold: expected a whole percentage from 0 to 100'),
    ({'lock_wait': 'forever'}, 'lock_wait: invalid duration'),
    (['not', 'an', 'object'], 'must hold a JSON object'),
    ('{not json', 'is not valid JSON'),
])
def test_bad_config_exits_2_and_runs_nothing(content, message, node):
    node.config.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ImageGCError, match=message.replace('(', r'\(').replace(')', r'\)')):
        _runner.load_config(str(node.config))
    code, events = node.run()
    assert code == 2
    assert [e['event'] for e in events] == ['end']
    assert events[0]['status'] == 'failed' and message in events[0]['error']
    assert node.runners == []                        # no engine, so no command
    assert not node.report.exists()


def test_missing_config_exits_2(tmp_path, capsys):
    assert _runner.main(['--config', str(tmp_path / 'nope.json'), 'run']) == 2
    end = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert 'cannot read config' in end['error']


# -- a run -----------------------------------------------------------------------------------

@pytest.fixture(params=VERSIONS)
def a_run(request, node):
    """One real run of the runner over the recorded node of each version: exit code, events, phase events."""
    node.version = request.param
    code, events = node.run()
    return SimpleNamespace(code=code, events=events, ids=IDS[request.param],
                           phases=dict((e['phase'], e) for e in events if e['event'] == 'phase'))


def test_a_good_run_exits_0(a_run):
    assert a_run.code == 0


def test_run_emits_start_disk_phases_disk_end(a_run):
    assert [(e['event'], e.get('when') or e.get('phase')) for e in a_run.events] == [
        ('start', None), ('disk', 'before'), ('phase', 'containers'), ('phase', 'sandboxes'), ('phase', 'images'),
        ('phase', 'content'), ('disk', 'after'), ('end', None)]


def test_each_phase_event_says_what_it_removed(a_run):
    assert a_run.phases['containers']['ids'] == [a_run.ids['exit0'], a_run.ids['exit1']]
    assert a_run.phases['sandboxes']['ids'] == [a_run.ids['feas-a']]
    assert a_run.phases['images']['removed'] == 3


def test_every_phase_of_a_good_run_is_ok_with_no_errors_and_not_a_dry_run(a_run):
    assert all(p['status'] == 'ok' and p['errors'] == [] and p['dry_run'] is False for p in a_run.phases.values())


def test_the_images_phase_event_says_why_an_image_was_kept(a_run):
    assert any(k['reason'].startswith('in use by container sleeper') for k in a_run.phases['images']['kept'])


def test_the_end_event_is_ok_and_sums_what_the_phases_removed(a_run):
    end = a_run.events[-1]
    assert end['status'] == 'ok'
    assert end['removed'] == sum(p['removed'] for p in a_run.phases.values())


def test_the_disk_event_before_counts_images_and_containers(a_run):
    assert a_run.events[1]['images'] == 5
    assert a_run.events[1]['containers'] == {'exited': 2, 'running': 1}


@pytest.fixture
def finished(node):
    """One real run of the runner over the recorded node: its exit code, events, report and metrics."""
    code, events = node.run()
    assert code == 0
    metrics = node.prom.read_text()
    samples = dict(line.rsplit(' ', 1) for line in metrics.splitlines() if not line.startswith('#'))
    return {'node': node, 'events': events, 'report': json.loads(node.report.read_text()), 'metrics': metrics,
            'samples': samples}


def test_the_report_says_the_run_and_its_phases(finished):
    report, events = finished['report'], finished['events']
    assert report['status'] == 'ok'
    assert [p['phase'] for p in report['phases']] == ['containers', 'sandboxes', 'images', 'content']
    assert report['last_success'] == report['finished']
    assert report['disk_before']['images'] == 5
    assert report['removed'] == events[-1]['removed']


def test_report_and_metrics_are_written_atomically_mode_0644(finished):
    node = finished['node']
    # nothing but the two files (no temp files left), mode 0644
    assert files_under(node.dir / 'lib') == ['last-run.json']
    assert files_under(node.dir / 'textfile') == ['node_image_gc.prom']
    assert oct(os.stat(str(node.report)).st_mode & 0o777) == '0o644'


def test_the_metrics_say_the_run_succeeded_and_when(finished):
    report, samples = finished['report'], finished['samples']
    assert samples['node_image_gc_run_success'] == '1'
    assert float(samples['node_image_gc_last_success_timestamp_seconds']) == report['finished']
    assert float(samples['node_image_gc_last_run_timestamp_seconds']) == report['finished']


def test_the_metrics_say_what_each_phase_removed(finished):
    samples = finished['samples']
    assert samples['node_image_gc_last_run_removed_objects{phase="containers"}'] == '2'
    assert samples['node_image_gc_last_run_removed_objects{phase="sandboxes"}'] == '1'
    assert samples['node_image_gc_last_run_removed_objects{phase="images"}'] == '3'
    assert samples['node_image_gc_last_run_reclaimed_bytes{phase="images"}'] == str(1028854 + 1028853 + 1028856)


def test_the_metrics_say_the_content_phase_succeeded(finished):
    assert finished['samples']['node_image_gc_phase_success{phase="content"}'] == '1'


def test_the_metrics_carry_the_filesystems_figures_of_the_report(finished):
    report, samples = finished['report'], finished['samples']
    # the filesystem's figures (statvfs), as the report has them
    assert samples['node_image_gc_image_fs_used_bytes{when="before"}'] == str(
        report['disk_before']['filesystem']['used_bytes'])
    assert samples['node_image_gc_image_fs_used_bytes{when="after"}'] == str(
        report['disk_after']['filesystem']['used_bytes'])


def test_the_end_line_says_the_figures_in_words(finished):
    report, events = finished['report'], finished['events']
    assert events[-1]['summary'] == report['summary'] and report['summary'].startswith('freed ')
    assert ' -> ' in report['summary'] and report['summary'].split('; ')[1].startswith(
        report['disk_before']['filesystem']['path'] + ' ')


def test_the_metrics_file_is_well_formed(finished):
    assert '# TYPE node_image_gc_run_success gauge' in finished['metrics']
    assert finished['metrics'].endswith('\n')


def test_write_atomic_failure_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / 'r.json'
    target.write_text('old')

    def boom(src, dst):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(_runner.os, 'replace', boom)
    with pytest.raises(OSError):
        _runner.write_atomic(str(target), 'new')
    assert files_under(tmp_path) == ['r.json']
    assert target.read_text() == 'old'


@pytest.fixture
def sandboxes_failed(node):
    """A good run, then a run whose ``crictl pods`` fails (phase 2): that run's exit code, events and phase
    events, the report before and after it, its metrics and its runner."""
    node.run()                                               # a good run first: last_success is kept
    first = json.loads(node.report.read_text())

    def factory(settings, phases):
        engine = node.factory(settings, phases)
        engine.runner.on('crictl pods --output json', Reply(1, '', 'time="x" level=fatal msg="boom"\n'))
        return engine
    code, events = node.run(factory=factory)
    return SimpleNamespace(code=code, events=events, first=first, report=json.loads(node.report.read_text()),
                           phases=dict((e['phase'], e) for e in events if e['event'] == 'phase'),
                           metrics=node.prom.read_text(), runner=node.runners[-1])


def test_a_failing_phase_makes_the_exit_code_1(sandboxes_failed):
    assert sandboxes_failed.code == 1


def test_the_failed_phase_says_which_command_failed_its_rc_and_why(sandboxes_failed):
    assert sandboxes_failed.phases['sandboxes']['status'] == 'failed'
    assert sandboxes_failed.phases['sandboxes']['errors'] == ['crictl pods --output json failed (rc=1): boom']


def test_a_failing_phase_does_not_stop_the_next(sandboxes_failed):
    assert sandboxes_failed.phases['images']['status'] == 'ok'
    assert sandboxes_failed.phases['content']['status'] == 'ok'
    assert sandboxes_failed.runner.ran('ctr', 'content', 'ls')      # phase 4 ran


def test_a_run_with_a_failed_phase_ends_failed_in_the_event_and_the_report(sandboxes_failed):
    assert sandboxes_failed.events[-1]['status'] == 'failed'
    assert sandboxes_failed.report['status'] == 'failed'


def test_a_failed_run_keeps_the_last_success_of_the_run_before(sandboxes_failed):
    assert sandboxes_failed.report['last_success'] == sandboxes_failed.first['last_success']


def test_the_metrics_say_the_run_and_the_failed_phase_failed_and_the_others_succeeded(sandboxes_failed):
    assert 'node_image_gc_run_success 0' in sandboxes_failed.metrics
    assert 'node_image_gc_phase_success{phase="sandboxes"} 0' in sandboxes_failed.metrics
    assert 'node_image_gc_phase_success{phase="images"} 1' in sandboxes_failed.metrics


def test_an_unexpected_exception_in_a_phase_does_not_stop_the_next(node, monkeypatch):
    def broken(self, check_mode=False):
        raise RuntimeError('unexpected')
    monkeypatch.setattr(_engine, 'PHASE_TABLE', (('containers', broken),) + _engine.PHASE_TABLE[1:])
    code, events = node.run()
    assert code == 1
    phases = dict((e['phase'], e) for e in events if e['event'] == 'phase')
    assert phases['containers']['status'] == 'failed'
    assert phases['containers']['errors'] == ['unexpected RuntimeError: unexpected']
    assert phases['content']['status'] == 'ok'
    assert json.loads(node.report.read_text())['status'] == 'failed'


def test_engine_that_cannot_start_fails_every_phase(node):
    def factory(settings, phases):
        raise ImageGCError('crictl not found. Tried: /usr/bin/crictl')
    code, events = node.run(factory=factory)
    assert code == 1
    assert [e['event'] for e in events] == ['start', 'error', 'phase', 'phase', 'phase', 'phase', 'end']
    assert all(e['status'] == 'failed' and 'crictl not found' in e['errors'][0]
               for e in events if e['event'] == 'phase')


def test_disabled_phase_is_skipped(node):
    node.write_config(content=False)
    code, events = node.run()
    assert code == 0
    content = [e for e in events if e.get('phase') == 'content'][0]
    assert content['status'] == 'skipped' and content['skip_reason'] == 'disabled (content: false)'
    assert not node.runners[0].ran('ctr', 'content')   # ctr images check serves the images phase


def test_dry_run_removes_nothing_and_writes_no_report(node):
    code, events = node.run(dry_run=True)
    assert code == 0
    assert node.runners[0].removals() == []
    assert events[0]['dry_run'] is True and events[-1]['dry_run'] is True
    phases = dict((e['phase'], e) for e in events if e['event'] == 'phase')
    assert phases['images']['removed'] == 3 and phases['images']['dry_run'] is True
    assert not node.report.exists() and not node.prom.exists()
    assert node.lock.exists()                                # it ran under the lock


def test_dry_run_waits_for_the_lock_like_a_real_run(node):
    node.lock.parent.mkdir(parents=True)
    with lock_held_elsewhere(node.lock) as holder:
        code, events = node.run(dry_run=True)
    assert code == 0 and [e['event'] for e in events] == ['start', 'end']
    assert events[-1]['status'] == 'skipped' and events[-1]['dry_run'] is True
    assert 'another run (pid %d)' % holder in events[-1]['reason']
    assert node.runners == []                                # no plan was made of a node changing under it


def test_lock_held_by_another_process_skips_the_run(node):
    node.lock.parent.mkdir(parents=True)
    with lock_held_elsewhere(node.lock) as holder:
        code, events = node.run()
    assert code == 0
    assert [e['event'] for e in events] == ['start', 'end']
    assert events[-1]['status'] == 'skipped'
    assert 'another run (pid %d)' % holder in events[-1]['reason']
    assert node.runners == []
    assert not node.report.exists()
    # and once it is released, a run goes ahead
    assert node.run()[0] == 0


def fake_usage(percent):
    def usage(path):
        return {'fs_path': '/var/lib/containerd', 'fs_size_bytes': 1000, 'fs_free_bytes': 1000 - int(percent * 10),
                'fs_used_bytes': int(percent * 10), 'fs_used_percent': percent}
    return usage


def test_disk_usage_below_threshold_is_report_only(node, monkeypatch):
    monkeypatch.setattr(_disk, 'filesystem_usage', fake_usage(40.0))
    node.write_config(disk_usage_threshold=80)
    code, events = node.run()
    assert code == 0
    phases = [e for e in events if e['event'] == 'phase']
    assert len(phases) == 4
    for phase in phases:
        assert phase['status'] == 'skipped'
        assert phase['skip_reason'] == 'image filesystem 40.0% used, below disk_usage_threshold 80%: report only'
    assert node.runners[0].removals() == []
    assert [e['when'] for e in events if e['event'] == 'disk'] == ['before', 'after']
    assert events[-1]['status'] == 'skipped'
    assert json.loads(node.report.read_text())['status'] == 'skipped'


def test_disk_usage_above_threshold_runs(node, monkeypatch):
    monkeypatch.setattr(_disk, 'filesystem_usage', fake_usage(85.5))
    node.write_config(disk_usage_threshold=80)
    code, events = node.run()
    assert code == 0
    assert node.runners[0].ran('crictl', 'rmi')
    assert events[-1]['status'] == 'ok'


# -- status ----------------------------------------------------------------------------------

def test_status_prints_the_last_report(node, capsys):
    assert _runner.status(str(node.config)) == 1
    assert 'no report at' in capsys.readouterr().err
    node.run()
    stream = io.StringIO()
    assert _runner.status(str(node.config), stream=stream) == 0
    assert json.loads(stream.getvalue())['status'] == 'ok'


# -- a full disk, the journal (issue 19) --------------------------------------------------------

def test_a_full_disk_still_cleans_up_keeps_every_old_file_and_says_which_writes_failed(node, monkeypatch,
                                                                                       private_image_record):
    node.write_config(image_record_path=private_image_record)
    assert node.run()[0] == 0                                # a first run writes all three files
    before = dict((str(p), p.read_bytes()) for p in (node.report, node.prom, node.dir.parent / 'node-image-gc'
                                                     / 'images.json'))
    real_fsync = os.fsync

    def full(fd):
        if os.readlink('/proc/self/fd/%d' % fd).endswith(_files.TEMP_SUFFIX):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)
    monkeypatch.setattr(os, 'fsync', full)
    code, events = node.run()
    assert node.runners[-1].removals() != []                 # the cleanup ran and removed what it planned
    assert dict((path, open(path, 'rb').read()) for path in before) == before
    assert files_under(node.dir) == ['lib/last-run.json', 'run/gc.lock', 'textfile/node_image_gc.prom']
    end = events[-1]
    assert code == 1 and end['status'] == 'ok'               # the phases were fine; the state is not
    assert [(f['file'], f['error']) for f in end['write_failed']] == [
        ('record', 'No space left on device'), ('report', 'No space left on device'),
        ('metrics', 'No space left on device')]
    assert any(w.startswith('could not write the report %s' % node.report) for w in end['warnings'])
    assert any(w.startswith('could not write the last-use record') for w in end['warnings'])


class _HugeEngine(object):
    """An engine whose images phase removed, kept and failed thousands of items."""

    def __init__(self, settings, phases):
        pass

    def run(self, check_mode=False, on_event=None):
        n = 5000

        def item(i, why):
            return {'id': 'sha256:%064x' % i, 'size': 1000, 'reason': why}
        result = {'phase': 'images', 'status': 'failed', 'check_mode': check_mode, 'bytes': n * 1000,
                  'removed': [item(i, 'unused') for i in range(n)],
                  'kept': [item(n + i, 'in use by container %s ' % ('x' * 300)) for i in range(n)],
                  'failed': [dict(item(2 * n + i, 'unused'), msg='rpc error: ' + 'y' * 2000) for i in range(n)],
                  'warnings': ['could not remove image %d: %s' % (i, 'z' * 500) for i in range(n)], 'duration': 1.0}
        on_event('phase', result)
        return {'status': 'failed', 'warnings': ['w' * 100000] * 50}


def test_each_journal_line_is_bounded_and_the_report_keeps_every_item(node):
    code, events = node.run(factory=_HugeEngine)
    stream = io.StringIO()
    _runner.run(str(node.config), stream=stream, engine_factory=_HugeEngine)
    lines = stream.getvalue().splitlines()
    assert lines and max(len(line.encode()) for line in lines) <= _runner.LINE_MAX < 48 * 1024   # journald LineMax
    phase = [json.loads(line) for line in lines if '"phase"' in line][0]
    assert phase['removed'] == 5000 and phase['bytes'] == 5000 * 1000 and phase['status'] == 'failed'
    assert phase['ids_total'] == 5000 and len(phase['ids']) == _runner.SHOWN and phase['truncated'] is True
    assert phase['kept_total'] == 5000 and phase['errors_total'] == 5000
    report = json.loads(node.report.read_text())['phases'][0]
    assert len(report['ids']) == 5000 and len(report['kept']) == 5000 and len(report['errors']) == 5000


def test_a_small_phase_is_printed_whole_and_full_prints_everything(node):
    code, events = node.run()
    phases = dict((e['phase'], e) for e in events if e['event'] == 'phase')
    assert 'truncated' not in phases['images'] and len(phases['images']['kept']) == 2
    stream = io.StringIO()
    _runner.run(str(node.config), dry_run=True, stream=stream, engine_factory=_HugeEngine, full=True)
    phase = [json.loads(line) for line in stream.getvalue().splitlines() if '"phase"' in line][0]
    assert len(phase['ids']) == 5000 and 'truncated' not in phase


def test_the_disk_target_goes_into_the_phase_event_as_figures_and_counts():
    target = {'used_percent': 91.0, 'high': 85, 'low': 80, 'projected_percent': 79.5, 'estimate': 'an estimate: ...',
              'candidates': ['sha256:a', 'sha256:b', 'sha256:c'],
              'measured': {'steps': [{'id': 'sha256:a', 'used_percent': 79.1}], 'used_percent': 79.1,
                           'used_bytes': 791, 'reached': True}}
    event = _runner.phase_event({'phase': 'images', 'status': 'ok', 'removed': [], 'disk_target': target})
    assert event['disk_target'] == dict(target, candidates=3, measured=dict(target['measured'], steps=1))
    assert len(target['candidates']) == 3 and len(target['measured']['steps']) == 1     # not changed in place


def test_human_bytes_writes_sizes_as_ansible_human_readable_does():
    assert [_units.human_bytes(n) for n in (0, 1023, 1024, 11953766, 5 * 1024 ** 4, 3 * 1024 ** 5)] == [
        '0.00 Bytes', '1023.00 Bytes', '1.00 KB', '11.40 MB', '5.00 TB', '3072.00 TB']


def test_the_report_says_which_kubelet_root_the_pods_were_judged_by(node):
    """pod_aware (the default): the report names the kubelet root and where it came from; on the recorded
    node no kubelet runs and no default root exists, so none is live and the report says so."""
    node.write_config(pod_aware=True)
    code, events = node.run()
    assert code == 0
    report = json.loads(node.report.read_text())
    assert report['kubelet_root'] == {'path': None, 'source': 'none live: every pod counts as live'}
    assert [w for w in report['warnings'] if w.startswith('no live kubelet root found (')]
