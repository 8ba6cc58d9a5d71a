# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""_metrics: counters that add up across real runs (kept in the runner's report), the textfile
the runner writes (checked with promtool), and the collection version it reports."""

import io
import json
import os
import re
from types import SimpleNamespace

import pytest
import yaml

from ansible_collections.nodemaint.image_gc.plugins.module_utils import _metrics, _runner
from ansible_collections.nodemaint.image_gc.plugins.module_utils._common import ImageGCError

from tests.unit.image_gc_testlib import V21, make_engine, node_runner
from tests.unit.promtool_lib import promtool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
PHASES = ('containers', 'sandboxes', 'images', 'content')


def samples(text):
    """{'name{labels}': float} from a textfile."""
    return dict((key, float(value)) for key, value in
                (line.rsplit(' ', 1) for line in text.splitlines() if line and not line.startswith('#')))


def types(text):
    return dict(line.split()[2:4] for line in text.splitlines() if line.startswith('# TYPE '))


def a_report(status='ok', removed=(2, 1, 3, 0), nbytes=(0, 0, 3086563, 1200), failed=(), dry_run=False):
    phases = [{'phase': name, 'removed': r, 'bytes': b, 'status': 'failed' if name in failed else 'ok'}
              for name, r, b in zip(PHASES, removed, nbytes)]
    return {'status': status, 'phases': phases, 'dry_run': dry_run, 'finished': 1795831821.5, 'duration': 2.25,
            'last_success': 1795831821.5 if status != 'failed' else None,
            # image_fs_used_bytes: the runtime's own figure (CRI), never what the metrics report
            'disk_before': {'image_fs_used_bytes': 10182656, 'image_filesystems': [
                {'fs_size_bytes': 1000, 'fs_used_bytes': 910}, {'fs_size_bytes': 1000, 'fs_used_bytes': 100}],
                'filesystem': {'path': '/var/lib/containerd', 'used_bytes': 910, 'size_bytes': 1000}},
            'disk_after': {'image_fs_used_bytes': 10182656, 'reclaimable_bytes': 4096, 'image_filesystems': [
                {'fs_size_bytes': 1000, 'fs_used_bytes': 805}, {}],
                'filesystem': {'path': '/var/lib/containerd', 'used_bytes': 805, 'size_bytes': 1000, 'settled': True}}}


# -- the version -------------------------------------------------------------------------------

def test_version_is_galaxy_yml_version():
    with open(os.path.join(ROOT, 'galaxy.yml')) as handle:
        galaxy = yaml.safe_load(handle)
    assert _metrics.COLLECTION_VERSION == galaxy['version'], \
        'bump COLLECTION_VERSION in plugins/module_utils/_metrics.py together with galaxy.yml'


# -- accumulate ----------------------------------------------------------------------------------

def test_accumulate_adds_a_run_to_the_previous_counters():
    first = _metrics.accumulate(_metrics.empty_counters(), a_report())
    assert first == {'runs': {'ok': 1, 'failed': 0, 'skipped': 0},
                     'removed_objects': {'containers': 2, 'sandboxes': 1, 'images': 3, 'content': 0},
                     'reclaimed_bytes': {'containers': 0, 'sandboxes': 0, 'images': 3086563, 'content': 1200},
                     'phase_failures': {'containers': 0, 'sandboxes': 0, 'images': 0, 'content': 0}}
    second = _metrics.accumulate(first, a_report('failed', removed=(1, 0, 0, 0), nbytes=(0, 0, 0, 0),
                                                 failed=('sandboxes',)))
    assert second['runs'] == {'ok': 1, 'failed': 1, 'skipped': 0}
    assert second['removed_objects']['containers'] == 3 and second['removed_objects']['images'] == 3
    assert second['reclaimed_bytes']['images'] == 3086563
    assert second['phase_failures'] == {'containers': 0, 'sandboxes': 1, 'images': 0, 'content': 0}
    assert first['runs']['failed'] == 0, 'accumulate must not change its input'


def test_a_dry_run_counts_nothing():
    before = _metrics.accumulate(_metrics.empty_counters(), a_report())
    assert _metrics.accumulate(before, a_report(dry_run=True)) == before


def test_a_skipped_run_counts_as_skipped():
    counters = _metrics.accumulate(_metrics.empty_counters(), a_report('skipped', removed=(0, 0, 0, 0),
                                                                       nbytes=(0, 0, 0, 0)))
    assert counters['runs'] == {'ok': 0, 'failed': 0, 'skipped': 1}


# -- load_previous ---------------------------------------------------------------------------------

def test_load_previous_returns_the_stored_counters(tmp_path):
    stored = _metrics.accumulate(_metrics.empty_counters(), a_report())
    path = tmp_path / 'last-run.json'
    path.write_text(json.dumps({'last_success': 12.5, 'counters': stored}))
    previous, counters, warning = _metrics.load_previous(str(path))
    assert warning is None
    assert counters == stored and previous['last_success'] == 12.5


def test_load_previous_keeps_counters_of_unknown_label_values(tmp_path):
    stored = _metrics.empty_counters()
    stored['removed_objects']['volumes'] = 7       # a phase a later version may add: not dropped
    stored['pulled_images'] = {'x': 1}             # a counter a later version may add: ignored
    path = tmp_path / 'last-run.json'
    path.write_text(json.dumps({'counters': stored}))
    previous, counters, warning = _metrics.load_previous(str(path))
    assert warning is None
    assert counters['removed_objects']['volumes'] == 7 and 'pulled_images' not in counters


@pytest.mark.parametrize('content, says', [
    (None, 'no previous report at'),
    ('{"counters": {"runs"', 'is unreadable'),
    ('[1, 2]', 'is not a JSON object'),
    ('{"last_success": 5}', 'has no counters'),
    ('{"last_success": 5, "counters": {"runs": {"ok": -1}}}', 'malformed counters'),
    ('{"last_success": 5, "counters": {"runs": {}, "removed_objects": {}, "reclaimed_bytes": {},'
     ' "phase_failures": {"images": "3"}}}', 'malformed counters'),
    ('{"last_success": 5, "counters": {"runs": {"ok": true}, "removed_objects": {}, "reclaimed_bytes": {},'
     ' "phase_failures": {}}}', 'malformed counters'),
    ('{"last_success": 5, "counters": []}', 'malformed counters'),
])
def test_missing_or_corrupt_state_starts_from_zero_with_a_warning(tmp_path, content, says):
    path = tmp_path / 'last-run.json'
    if content is not None:
        path.write_text(content)
    previous, counters, warning = _metrics.load_previous(str(path))
    assert says in warning and str(path) in warning and 'counters start from zero' in warning
    assert counters == _metrics.empty_counters()
    assert previous.get('last_success') == (5 if 'last_success' in (content or '') else None)


# -- metrics_text ------------------------------------------------------------------------------------

def metrics_of(report):
    """The textfile a run with this report writes, its counters being that run's alone."""
    return _metrics.metrics_text(report, _metrics.accumulate(_metrics.empty_counters(), report))


@pytest.fixture
def text():
    """The textfile of one ok run (a_report): 2 containers, 1 sandbox, 3 images removed."""
    return metrics_of(a_report())


def test_the_info_metric_names_the_collection_version(text):
    assert samples(text)['node_image_gc_info{version="%s"}' % _metrics.COLLECTION_VERSION] == 1


def test_used_bytes_before_and_after_are_the_filesystems_own_figures(text):
    """statvfs' figures, not the runtime's image_fs_used_bytes (which did not change here)."""
    got = samples(text)
    assert got['node_image_gc_image_fs_used_bytes{when="before"}'] == 910
    assert got['node_image_gc_image_fs_used_bytes{when="after"}'] == 805


def test_the_runtimes_figure_is_not_exported_under_another_name(text):
    assert not [name for name in samples(text) if name.startswith('node_image_gc_image_fs_used_bytes_')]


def test_usage_ratio_is_that_of_the_fullest_image_filesystem(text):
    got = samples(text)
    assert got['node_image_gc_image_fs_usage_ratio{when="before"}'] == 0.91
    assert got['node_image_gc_image_fs_usage_ratio{when="after"}'] == 0.805


def test_reclaimable_bytes_are_the_reports_after_the_run(text):
    assert samples(text)['node_image_gc_reclaimable_bytes'] == 4096


def test_runs_are_counted_by_status(text):
    got = samples(text)
    assert got['node_image_gc_runs_total{status="ok"}'] == 1
    assert got['node_image_gc_runs_total{status="failed"}'] == 0


def test_removed_objects_reclaimed_bytes_and_failures_are_counted_by_phase(text):
    got = samples(text)
    assert got['node_image_gc_reclaimed_bytes_total{phase="images"}'] == 3086563
    assert got['node_image_gc_removed_objects_total{phase="containers"}'] == 2
    assert got['node_image_gc_phase_failures_total{phase="sandboxes"}'] == 0


def test_last_success_is_the_time_the_run_finished(text):
    assert samples(text)['node_image_gc_last_success_timestamp_seconds'] == 1795831821.5


def test_an_unknown_after_figure_is_left_out_never_replaced_by_the_runtimes():
    report = a_report()
    report['disk_after']['filesystem'] = None
    got = samples(metrics_of(report))
    assert 'node_image_gc_image_fs_used_bytes{when="after"}' not in got
    assert 'node_image_gc_image_fs_usage_ratio{when="after"}' not in got


def test_every_total_is_a_counter_and_every_counter_a_total(text):
    kinds = types(text)
    assert dict((n, k) for n, k in kinds.items() if k == 'counter') == dict(
        (n, 'counter') for n in kinds if n.endswith('_total'))


def test_runs_total_is_a_counter_and_info_a_gauge(text):
    kinds = types(text)
    assert kinds['node_image_gc_runs_total'] == 'counter'
    assert kinds['node_image_gc_info'] == 'gauge'


def test_metrics_text_without_disk_facts_leaves_those_metrics_out():
    report = a_report('failed', failed=('containers',))
    report['disk_before'] = report['disk_after'] = {'error': 'crictl imagefsinfo failed', 'filesystem': None,
                                                    'filesystem_unknown': 'crictl imagefsinfo failed'}
    text = _metrics.metrics_text(report, _metrics.accumulate(_metrics.empty_counters(), report))
    assert 'image_fs_used_bytes' not in text and 'reclaimable_bytes' not in text and 'usage_ratio' not in text
    got = samples(text)
    assert got['node_image_gc_last_success_timestamp_seconds'] == 0
    assert got['node_image_gc_run_success'] == 0
    assert got['node_image_gc_phase_failures_total{phase="containers"}'] == 1


def test_label_values_are_escaped():
    report = a_report()
    text = _metrics.metrics_text(report, _metrics.empty_counters(), version='1.0.0-"rc\\1"\n')
    assert 'node_image_gc_info{version="1.0.0-\\"rc\\\\1\\"\\n"} 1\n' in text


# -- through the runner ----------------------------------------------------------------------------

@pytest.fixture
def node(tmp_path, peer_root):
    """A runner config with report/textfile/lock under tmp_path, and runs with the stub engine."""
    class Node(object):
        report = tmp_path / 'state' / 'last-run.json'
        prom = tmp_path / 'textfile' / 'node_image_gc.prom'
        config = tmp_path / 'config.json'
    n = Node()
    n.config.write_text(json.dumps({'report_path': str(n.report), 'textfile_path': str(n.prom),
                                    'lock_path': str(tmp_path / 'lock'), 'lock_wait': '1s',
                                    'image_min_age': '0s',  # the recorded images are seconds old
                                    'image_unused_for': '0s',  # and never seen in use: every unused one goes
                                    'pod_aware': False}))  # the recorded sequence: see make_engine

    def factory(settings, phases):
        return make_engine(node_runner(V21), settings, phases=phases, peer_root=peer_root)

    def run(dry_run=False, engine_factory=factory):
        return _runner.run(str(n.config), dry_run=dry_run, stream=io.StringIO(), engine_factory=engine_factory)
    n.run = run
    return n


@pytest.fixture
def two_runs_and_a_dry_run(node, capsys):
    """Two real runs then a dry run (which writes nothing and counts nothing) of the same node: their exit
    codes, each run's stderr, and the textfile after the first and after the last."""
    runs = SimpleNamespace(exit_codes=[], stderr=[])
    for dry_run in (False, False, True):
        runs.exit_codes.append(node.run(dry_run=dry_run))
        runs.stderr.append(capsys.readouterr().err)
        if len(runs.exit_codes) == 1:
            runs.first = samples(node.prom.read_text())
    runs.last = samples(node.prom.read_text())
    runs.report = json.loads(node.report.read_text())
    return runs


def test_two_runs_and_a_dry_run_exit_0(two_runs_and_a_dry_run):
    assert two_runs_and_a_dry_run.exit_codes == [0, 0, 0]


def test_the_first_run_warns_that_there_is_no_previous_report(two_runs_and_a_dry_run):
    assert 'warning: no previous report at' in two_runs_and_a_dry_run.stderr[0]


def test_a_run_after_a_report_warns_nothing(two_runs_and_a_dry_run):
    assert two_runs_and_a_dry_run.stderr[1] == ''


def test_runs_total_counts_each_real_run_not_the_dry_run(two_runs_and_a_dry_run):
    assert two_runs_and_a_dry_run.first['node_image_gc_runs_total{status="ok"}'] == 1
    assert two_runs_and_a_dry_run.last['node_image_gc_runs_total{status="ok"}'] == 2


def test_each_phase_total_adds_up_what_each_run_removed_and_reclaimed(two_runs_and_a_dry_run):
    first, last = two_runs_and_a_dry_run.first, two_runs_and_a_dry_run.last
    for phase in PHASES:
        for name in ('removed_objects', 'reclaimed_bytes'):
            assert last['node_image_gc_%s_total{phase="%s"}' % (name, phase)] == \
                2 * first['node_image_gc_last_run_%s{phase="%s"}' % (name, phase)]
    assert last['node_image_gc_removed_objects_total{phase="images"}'] == 6


def test_the_counters_survive_in_the_report(two_runs_and_a_dry_run):
    assert two_runs_and_a_dry_run.report['counters']['runs'] == {'ok': 2, 'failed': 0, 'skipped': 0}


def test_a_failed_run_counts_as_failed_and_keeps_the_counters(node):
    node.run()

    def broken(settings, phases):
        raise ImageGCError('crictl not found. Tried: /usr/bin/crictl')
    assert node.run(engine_factory=broken) == 1
    got = samples(node.prom.read_text())
    assert got['node_image_gc_runs_total{status="ok"}'] == 1
    assert got['node_image_gc_runs_total{status="failed"}'] == 1
    assert got['node_image_gc_removed_objects_total{phase="images"}'] == 3
    assert all(got['node_image_gc_phase_failures_total{phase="%s"}' % p] == 1 for p in PHASES)


def test_a_corrupt_report_restarts_the_counters_with_a_warning(node, capsys):
    node.run()
    node.run()
    node.report.write_text('{"truncated')
    assert node.run() == 0
    assert 'is unreadable' in capsys.readouterr().err
    assert samples(node.prom.read_text())['node_image_gc_runs_total{status="ok"}'] == 1


def check_metrics(text):
    proc = promtool('check', 'metrics', stdin=text)
    assert proc.returncode == 0, 'promtool check metrics:\n%s%s\n---\n%s' % (proc.stdout, proc.stderr, text)


def test_promtool_accepts_the_runner_textfile(node):
    node.run()
    node.run()
    text = node.prom.read_text()
    assert 'node_image_gc_runs_total{status="ok"} 2' in text
    check_metrics(text)


def test_promtool_accepts_the_textfile_of_a_failed_run(node):
    def broken(settings, phases):
        raise ImageGCError('no container runtime socket found')
    node.run(engine_factory=broken)
    check_metrics(node.prom.read_text())


def test_promtool_check_metrics_does_fail_on_a_bad_textfile():
    """The check above can fail: promtool rejects a counter without _total."""
    proc = promtool('check', 'metrics', stdin='# HELP x_bytes A.\n# TYPE x_bytes counter\nx_bytes 1\n')
    assert proc.returncode != 0 and re.search('_total', proc.stdout + proc.stderr)
