# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It deliberately does not import Ansible: it only calls methods of the AnsibleModule it is given.
"""What every module shares: the common argument spec, settings, error reporting, the run lock."""

from ._common import CommandError, ImageGCError, RunLock, DEFAULT_LOCK_PATH, parse_duration
from ._engine import SETTINGS

# Engine defaults, the one source for the modules' option defaults (their docs repeat them, and
# validate-modules checks that the two agree).
DEFAULTS = dict((name, spec[1]) for name, spec in SETTINGS.items())
PEER_MIRROR_ACTIONS = list(SETTINGS['peer_mirror_action'][0])

# Options of plugins/doc_fragments/runtime.py
RUNTIME_ARGUMENT_SPEC = dict(
    crictl_path=dict(type='path'),
    ctr_path=dict(type='path'),
    runtime_endpoint=dict(type='str'),
    image_endpoint=dict(type='str'),
    containerd_address=dict(type='str'),
    timeout=dict(type='str', default=DEFAULTS['timeout']),
    batch_size=dict(type='int', default=DEFAULTS['batch_size']),
)

# Options of plugins/doc_fragments/lock.py
LOCK_ARGUMENT_SPEC = dict(
    lock_path=dict(type='path', default=DEFAULT_LOCK_PATH),
    lock_wait=dict(type='str', default='10m'),
)


def argument_spec(*parts, **own):
    spec = {}
    for part in parts:
        spec.update(part)
    spec.update(own)
    return spec


def settings_from(params, renames=None):
    """Engine settings from module params (only the keys the engine knows; ``renames`` maps
    module option -> setting name)."""
    renames = renames or {}
    settings = {}
    for key, value in params.items():
        name = renames.get(key, key)
        if name in SETTINGS and value is not None:
            settings[name] = value
    return settings


def make_engine(module, phases, renames=None):
    """The Engine for a module; errors in option values name the module's options."""
    from ._engine import Engine
    labels = dict((setting, option) for option, setting in (renames or {}).items())
    return Engine(settings_from(module.params, renames), phases, labels=labels)


def fail(module, exc, **extra):
    """fail_json with the error's message (it names the cause and the fix) and the command output."""
    details = exc.to_dict() if isinstance(exc, CommandError) else {'msg': str(exc)}
    details.update(extra)
    module.fail_json(**details)


class ModuleLock(object):
    """The runner's lock, taken by a real (not check mode) module run."""

    def __init__(self, module):
        self.module = module
        self.lock = None
        if not module.check_mode:
            wait = parse_duration(module.params['lock_wait'], 'lock_wait')
            self.lock = RunLock(module.params['lock_path'], wait)

    def __enter__(self):
        if self.lock:
            self.lock.__enter__()
        return self

    def __exit__(self, *exc):
        if self.lock:
            self.lock.release()


def ids_diff(kind, results):
    """``diff`` for ``--diff``: object ids present before and after (or, in check mode, after the plan)."""
    before, after = [], []
    for result in results:
        gone = set(item['id'] for item in result['removed'] + result.get('gone', []))
        present = [item['id'] for item in result['removed'] + result.get('gone', []) + result['kept'] + result['failed']]
        before += present
        after += [i for i in present if i not in gone]
    return {'before': {kind: sorted(set(before))}, 'after': {kind: sorted(set(after))}}


__all__ = ['ImageGCError', 'CommandError', 'DEFAULTS', 'PEER_MIRROR_ACTIONS', 'RUNTIME_ARGUMENT_SPEC', 'LOCK_ARGUMENT_SPEC', 'argument_spec',
           'settings_from', 'make_engine', 'fail', 'ModuleLock', 'ids_diff']
