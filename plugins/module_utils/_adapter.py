# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It deliberately does not import Ansible: it only calls methods of the AnsibleModule it is given.
"""What every module shares: option specs built from the settings table, one way to run the
engine under the run lock, error reporting and the diff."""

from ._common import CommandError, ImageGCError
from ._engine import Engine
from ._files import RunLock
from ._settings import ENGINE_SETTINGS, SETTINGS, default, names
from ._units import parse_duration

_TYPES = {'str': 'str', 'path': 'path', 'duration': 'str', 'bool': 'bool', 'count': 'int', 'percent': 'int',
          'level': 'int', 'list': 'list'}


def option(name, **extra):
    """The argument spec of the setting ``name``: its type and its default, from the table."""
    setting = SETTINGS[name]
    if isinstance(setting.kind, tuple):
        spec = {'type': 'str', 'choices': list(setting.kind)}
    else:
        spec = {'type': _TYPES[setting.kind]}
        if setting.kind == 'list':
            spec['elements'] = 'str'
    if setting.default is not None:
        spec['default'] = default(name)
    spec.update(extra)
    return spec


def options(*settings):
    return {name: option(name) for name in settings}


# Options of plugins/doc_fragments/runtime.py (DOCUMENTATION and LOCK)
RUNTIME_ARGUMENT_SPEC = options(*names('runtime'))
LOCK_ARGUMENT_SPEC = options(*names('lock'))


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
        if name in ENGINE_SETTINGS and value is not None:
            settings[name] = value
    return settings


def fail(module, exc, **extra):
    """fail_json with the error's message (it names the cause and the fix) and the command output."""
    details = exc.to_dict() if isinstance(exc, CommandError) else {'msg': str(exc)}
    details.update(extra)
    module.fail_json(**details)


class ModuleLock:
    """The runner's lock, taken by a module run for all of it, in check mode too: a plan made
    while another run removes things would be of a node that changes under it."""

    def __init__(self, module):
        wait = parse_duration(module.params['lock_wait'], 'lock_wait')
        self.lock = RunLock(module.params['lock_path'], wait)

    def __enter__(self):
        self.lock.__enter__()
        return self

    def __exit__(self, *exc):
        self.lock.release()


def module_engine(module, phases, renames=None):
    """The Engine a module runs, with the module's options as settings (``renames``: module option
    -> setting name); errors name the module's option."""
    labels = {setting: opt for opt, setting in (renames or {}).items()}
    return Engine(settings_from(module.params, renames), phases, labels=labels)


def run_engine(module, phases, renames=None, fail_on_error=True):
    """Engine.run for a module: ``phases`` (of the engine's, ``disk`` included) with the module's
    options, under the run lock, in check mode when the module is. Bad options, discovery errors
    and the lock fail the module before anything runs; a phase that raised fails it too unless
    ``fail_on_error`` is false. Every warning of the run becomes a module warning."""
    try:
        engine = module_engine(module, phases, renames)
        with ModuleLock(module):
            run = engine.run(check_mode=module.check_mode)
    except ImageGCError as exc:
        fail(module, exc)
    for warning in run['warnings'] + [w for result in run['phases'] for w in result['warnings']]:
        module.warn(warning)
    errors = [r for r in run['phases'] if r.get('error')]
    if errors and fail_on_error:
        first = errors[0]
        details = dict(first.get('error_details') or {}, msg=first['error'])
        module.fail_json(partial=[r for r in run['phases'] if not r.get('error')], **details)
    return run


def ids_diff(kind, results):
    """``diff`` for ``--diff``: object ids present before and after (or, in check mode, after the plan)."""
    before, after = [], []
    for result in results:
        gone = {item['id'] for item in result['removed'] + result.get('gone', [])}
        present = [item['id'] for item in result['removed'] + result.get('gone', []) + result['kept'] + result['failed']]
        before += present
        after += [i for i in present if i not in gone]
    return {'before': {kind: sorted(set(before))}, 'after': {kind: sorted(set(after))}}


__all__ = ['ImageGCError', 'CommandError', 'RUNTIME_ARGUMENT_SPEC', 'LOCK_ARGUMENT_SPEC', 'option', 'options',
           'argument_spec', 'settings_from', 'fail', 'ModuleLock', 'module_engine', 'run_engine',
           'ids_diff']
