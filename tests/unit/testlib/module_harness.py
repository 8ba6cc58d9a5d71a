# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running a module's main() as Ansible would, with its engine built over a stub runner."""

import contextlib
import json

import yaml

from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

from ansible_collections.nodemaint.image_gc.plugins.module_utils import _adapter

from .engine import stub_engine
from .fixtures import NOW_NS, V21
from .node_sim import node_runner

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:          # ansible-core < 2.19: the _ANSIBLE_ARGS way
    patch_module_args = None


class ModuleExit(Exception):
    """Raised by the patched exit_json/fail_json; ``result`` holds what the module returned."""

    def __init__(self, result, failed):
        super().__init__(result)
        self.result = result
        self.failed = failed


def _exit_json(self, **kwargs):
    raise ModuleExit(kwargs, False)


def _fail_json(self, msg=None, **kwargs):
    kwargs['msg'] = msg
    kwargs['failed'] = True
    raise ModuleExit(kwargs, True)


@contextlib.contextmanager
def _module_args(monkeypatch, values):
    if patch_module_args:
        with patch_module_args(values):
            yield
    else:
        monkeypatch.setattr(basic, '_ANSIBLE_ARGS', to_bytes(json.dumps({'ANSIBLE_MODULE_ARGS': values})))
        yield


def run_module(monkeypatch, module, args, runner, discovery=None, now_ns=NOW_NS, peer_root=None,
               check_mode=False, diff=False):
    """Run ``module.main()`` with ``args`` as Ansible would pass them; return a ModuleExit.

    The Engine class the adapter constructs (_adapter.Engine) is replaced by one built with the
    same settings, phases and labels over a stub: the engine runs its commands through ``runner``,
    finds crictl/ctr/socket through ``discovery`` (the recorded node's by default), reads the wall
    clock ``now_ns`` and looks for a peer mirror under ``peer_root``.
    """
    def engine(settings, phases, labels=None):
        return stub_engine(runner, settings, phases, labels=labels, clock_ns=now_ns, peer_root=peer_root,
                           discovery=discovery)

    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', _exit_json)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', _fail_json)
    monkeypatch.setattr(_adapter, 'Engine', engine)
    args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
    with _module_args(monkeypatch, args):
        try:
            module.main()
        except ModuleExit as exc:
            return exc
    raise AssertionError('%s.main() neither exited nor failed' % module.__name__)


def documented_returns(module):
    return yaml.safe_load(module.RETURN)


def failure_before_any_command(monkeypatch, module, args, version=V21, check_mode=False):
    """Run ``module`` with ``args`` over the recorded node: it must fail having run no command.
    Returns the failure's message."""
    runner = node_runner(version)
    out = run_module(monkeypatch, module, args, runner, check_mode=check_mode)
    assert out.failed, out.result
    assert runner.calls == []
    return out.result['msg']
