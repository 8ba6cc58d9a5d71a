# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""_observe (``node-image-gc observe``, issue 26): two listings, the record updated under its own
lock, never a removal and never the run lock; a re-pull found by a pass reaches the metrics."""

import io
import json
from types import SimpleNamespace

import pytest

from ansible_collections.nodemaint.image_gc.plugins.module_utils import _observe, _runner
from ansible_collections.nodemaint.image_gc.plugins.module_utils._files import RunLock

from tests.unit.image_gc_testlib import IMG_BUSYBOX2, IMG_UNUSED3, NOW_NS, V21, make_engine, node_discovery, node_runner
from tests.unit.image_gc_testlib import metric_names

NOW = NOW_NS // 10 ** 9


def config(tmp_path, **values):
    base = {'image_record_path': str(tmp_path / 'state' / 'images.json'), 'report_path': str(tmp_path / 'last-run.json'),
            'lock_path': str(tmp_path / 'run' / 'lock'), 'lock_wait': '1s', 'image_min_age': '0s', 'pod_aware': False,
            # the recorded images are new to the record: with the default (21d) none would go
            'image_unused_for': '0s'}
    base.update(values)
    path = tmp_path / 'config.json'
    path.write_text(json.dumps(base))
    return str(path)


def observer(runner, clock_ns=NOW_NS):
    def run(settings, opts):
        return _observe.observe(settings, opts, runner=runner, discovery=node_discovery(), clock=lambda: clock_ns)
    return run


def test_a_pass_lists_twice_removes_nothing_and_writes_the_record(tmp_path):
    runner = node_runner(V21)
    out = io.StringIO()
    assert _runner.observe(config(tmp_path), stream=out, observer=observer(runner)) == 0
    event = json.loads(out.getvalue())
    assert event['event'] == 'observe' and event['status'] == 'ok' and event['record'] == 'written', event
    assert [k[:2] for k in runner.keys] == [('crictl', 'ps'), ('crictl', 'images')]
    assert event['crictl_calls'] == 2 and runner.removals() == []
    record = json.load(open(str(tmp_path / 'state' / 'images.json')))
    assert record['version'] == 2
    assert record['images'][IMG_UNUSED3] == {'first_seen': NOW, 'last_used': None, 'refs': record['images'][
        IMG_UNUSED3]['refs'], 'size': record['images'][IMG_UNUSED3]['size']}
    assert record['images'][IMG_BUSYBOX2]['last_used'] == NOW            # its container runs
    # nothing new a minute later: no write
    out = io.StringIO()
    assert _runner.observe(config(tmp_path), stream=out, observer=observer(node_runner(V21), NOW_NS + 60 * 10 ** 9)) == 0
    assert json.loads(out.getvalue())['record'] == 'unchanged'


def test_a_pass_does_not_wait_for_a_held_run_lock(tmp_path):
    path = config(tmp_path, lock_wait='10m')
    holder = RunLock(str(tmp_path / 'run' / 'lock'), 1)
    assert holder.acquire()
    try:
        out = io.StringIO()
        assert _runner.observe(path, stream=out, observer=observer(node_runner(V21))) == 0
    finally:
        holder.release()
    assert json.loads(out.getvalue())['record'] == 'written'


def test_a_listing_that_fails_fails_the_pass_and_writes_nothing(tmp_path):
    from tests.unit.image_gc_testlib import Reply
    runner = node_runner(V21)
    runner.on('crictl ps --all --output json', Reply(1, '', 'level=fatal msg="validate service connection: connection refused"'))
    out = io.StringIO()
    assert _runner.observe(config(tmp_path), stream=out, observer=observer(runner)) == 1
    event = json.loads(out.getvalue())
    assert event['status'] == 'failed' and 'is containerd running?' in event['error'], event
    assert not (tmp_path / 'state' / 'images.json').exists()


@pytest.fixture
def repull(tmp_path, peer_root):
    """A real run (stub engine over the recorded 2.1 node) removes unused:3 and more; a pass a day later lists
    the images as before the run (the removed ones are back, pulled again); then the next run. The exit code
    of each, the record and the textfile after the first run, the pass's event, the textfile after the pass,
    and the report and textfile after the next run."""
    prom = tmp_path / 'node_image_gc.prom'
    path = config(tmp_path, textfile_path=str(prom))

    def factory(settings, phases):
        return make_engine(node_runner(V21), settings, phases=phases, peer_root=peer_root)
    story = SimpleNamespace(exit_codes=[])
    story.exit_codes.append(_runner.run(path, stream=io.StringIO(), engine_factory=factory))
    story.record = json.load(open(str(tmp_path / 'state' / 'images.json')))
    story.text_after_run = prom.read_text()
    out = io.StringIO()
    story.exit_codes.append(_runner.observe(path, stream=out,
                                            observer=observer(node_runner(V21), NOW_NS + 86400 * 10 ** 9)))
    story.event = json.loads(out.getvalue())
    story.found = sorted(r['id'] for r in story.event['repulled'])
    story.text_after_pass = prom.read_text()
    story.exit_codes.append(_runner.run(path, stream=io.StringIO(), engine_factory=factory))
    story.report = json.load(open(str(tmp_path / 'last-run.json')))
    story.text_after_next_run = prom.read_text()
    return story


def test_the_run_the_pass_and_the_next_run_exit_0(repull):
    assert repull.exit_codes == [0, 0, 0]


def test_the_run_records_what_it_removed(repull):
    assert IMG_UNUSED3 in repull.record['removed']


def test_before_a_pass_sees_a_repull_the_textfile_counts_none(repull):
    assert 'node_image_gc_repulled_images_total 0' in repull.text_after_run


def test_the_pass_finds_every_removed_image_that_came_back_and_its_bytes(repull):
    assert IMG_UNUSED3 in repull.found, repull.event
    assert repull.found == sorted(repull.record['removed']), repull.event
    assert repull.event['repulled_bytes'] > 0, repull.event


def test_the_pass_moves_the_repull_counters_in_the_textfile_at_once(repull):
    assert 'node_image_gc_repulled_images_total %d' % len(repull.found) in repull.text_after_pass
    assert 'node_image_gc_repulled_bytes_total %d' % repull.event['repulled_bytes'] in repull.text_after_pass


def test_the_textfile_the_pass_rewrites_keeps_the_run_metrics(repull):
    assert {'node_image_gc_repulled_images_total', 'node_image_gc_repulled_bytes_total',
            'node_image_gc_runs_total'} <= metric_names(repull.text_after_pass)


def test_the_next_run_carries_the_repull_counters_in_its_report_and_textfile(repull):
    assert (repull.report['regret']['images'], repull.report['regret']['bytes']) == (
        len(repull.found), repull.event['repulled_bytes'])
    assert 'node_image_gc_repulled_images_total %d' % len(repull.found) in repull.text_after_next_run
