# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The node runner's real textfile output, and the metric names a textfile declares."""

import io
import json

from ansible_collections.nodemaint.image_gc.plugins.module_utils import _runner

from .engine import make_engine
from .fixtures import V21
from .node_sim import node_runner


def runner_textfile(tmp_path, peer_root, runs=1, version=V21):
    """The textfile the node runner writes after ``runs`` real runs over the recorded scenario
    (stub engine): real _runner/_metrics output, for tests that must not use a hand list of names."""
    base = tmp_path / 'runner-textfile'
    base.mkdir()
    prom = base / 'node_image_gc.prom'
    config = base / 'config.json'
    config.write_text(json.dumps({'report_path': str(base / 'last-run.json'), 'textfile_path': str(prom),
                                  'lock_path': str(base / 'lock'), 'lock_wait': '1s', 'image_min_age': '0s',
                                  'image_unused_for': '0s', 'pod_aware': False}))

    def factory(settings, phases):
        return make_engine(node_runner(version), settings, phases=phases, peer_root=peer_root)
    for dummy in range(runs):
        assert _runner.run(str(config), stream=io.StringIO(), engine_factory=factory) == 0
    return prom.read_text()


def metric_names(textfile):
    """The metric names a textfile declares (its # TYPE lines)."""
    return {line.split()[2] for line in textfile.splitlines() if line.startswith('# TYPE ')}
