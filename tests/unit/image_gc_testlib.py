# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers shared by the unit tests, one module a job in the package testlib/ beside this file
(whose __init__.py stays empty, as ansible-test's empty-init check wants). The one way in: every test
imports them from here, as ``from tests.unit.image_gc_testlib import ...``.

- fixtures: the recordings in tests/fixtures/, the ids of the recorded scenario, replies read
  or DERIVED from them (each derivation said where it is made);
- stub_runner: a table-driven stub command runner;
- node_sim: the recorded node as a stateful stub runner (node_runner);
- discovery: a fake Discovery, and the recorded node's layout as one;
- engine: Engines over a stub runner, the fake discovery and a fixed clock;
- module_harness: a module's main() run as Ansible would, its engine built over a stub runner;
- metrics: the node runner's real textfile output;
- lock_holder: another process holding the run lock.
"""

from tests.unit.testlib.discovery import fake_discovery, node_discovery, running_kubelet
from tests.unit.testlib.engine import NO_PEER_ROOT, ids, make_engine, run_phase, stub_engine
from tests.unit.testlib.fixtures import (
    CRICTL, CRICTL_PREFIX, CRIO_IDS, CRIO_NOW_NS, CRIO_SOCKET, CTR, CTR_PREFIX, FIXTURES, IDS, IMG_BUSYBOX1, IMG_BUSYBOX2, IMG_OLD_BUSYBOX1, IMG_PAUSE,
    IMG_UNUSED3, NOW_NS, SOCKET, V16, V21, VCRIO, VERSIONS, Reply, crictl_warning, derived_pods_after,
    derived_ps_after, fixture_json, fixture_path, fixture_text, json_reply, recorded_reply, rmi_deleted_output)
from tests.unit.testlib.lock_holder import lock_held_elsewhere
from tests.unit.testlib.metrics import metric_names, runner_textfile
from tests.unit.testlib.module_harness import ModuleExit, documented_returns, failure_before_any_command, run_module
from tests.unit.testlib.node_sim import images_check_reply, inspect_reply, node_runner
from tests.unit.testlib.stub_runner import StubRunner, UnexpectedCommand, command_key

__all__ = [
    'CRICTL', 'CRICTL_PREFIX', 'CRIO_IDS', 'CRIO_NOW_NS', 'CRIO_SOCKET', 'CTR', 'CTR_PREFIX', 'FIXTURES', 'IDS', 'IMG_BUSYBOX1', 'IMG_BUSYBOX2',
    'IMG_OLD_BUSYBOX1', 'IMG_PAUSE', 'IMG_UNUSED3', 'NOW_NS', 'NO_PEER_ROOT', 'SOCKET', 'V16', 'V21', 'VCRIO', 'VERSIONS',
    'ModuleExit', 'Reply', 'StubRunner', 'UnexpectedCommand', 'command_key', 'crictl_warning',
    'derived_pods_after', 'derived_ps_after', 'documented_returns', 'failure_before_any_command',
    'fake_discovery', 'fixture_json', 'fixture_path', 'fixture_text', 'ids', 'images_check_reply', 'inspect_reply',
    'json_reply',
    'lock_held_elsewhere', 'make_engine', 'metric_names', 'node_discovery', 'node_runner', 'recorded_reply',
    'rmi_deleted_output', 'run_module', 'run_phase', 'runner_textfile', 'running_kubelet', 'stub_engine',
]
