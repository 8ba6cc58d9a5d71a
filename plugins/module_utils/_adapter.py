# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It deliberately does not import Ansible: it only calls methods of the AnsibleModule it is given.
"""What every module shares: option specs built from the settings table, one way to run the
engine under the run lock, error reporting, the diff and the result's ``commands``."""

import traceback

from ._common import CommandError, ImageGCError
from ._engine import Engine
from ._files import RunLock
from ._settings import ENGINE_SETTINGS, OLD_OPTIONS, REMOVED_IN, SETTINGS, default, names
from ._units import parse_duration

_TYPES = {'str': 'str', 'path': 'path', 'duration': 'str', 'bool': 'bool', 'count': 'int', 'percent': 'int',
          'level': 'int', 'list': 'list'}


COLLECTION = 'nodemaint.image_gc'


def option(name, old_names=False, **extra):
    """The argument spec of the setting ``name``: its type and its default, from the table;
    ``old_names``: its names before 0.1.0 (_settings.OLD_OPTIONS) as deprecated aliases, for the
    modules that used them."""
    setting = SETTINGS[name]
    if isinstance(setting.kind, tuple):
        spec = {'type': 'str', 'choices': list(setting.kind)}
    else:
        spec = {'type': _TYPES[setting.kind]}
        if setting.kind == 'list':
            spec['elements'] = 'str'
    if setting.default is not None:
        spec['default'] = default(name)
    if old_names:
        spec['aliases'] = list(OLD_OPTIONS[name])
        spec['deprecated_aliases'] = [{'name': old, 'version': REMOVED_IN, 'collection_name': COLLECTION}
                                      for old in OLD_OPTIONS[name]]
    spec.update(extra)
    return spec


def options(*settings):
    return {name: option(name) for name in settings}


# Options of plugins/doc_fragments/runtime.py (DOCUMENTATION and LOCK)
RUNTIME_ARGUMENT_SPEC = options(*names('runtime'))
LOCK_ARGUMENT_SPEC = options(*names('lock'))
# Option of the COMMANDS doc fragment (a module's own, not a setting: the runner logs its commands)
COMMANDS_ARGUMENT_SPEC = {'return_commands': {'type': 'bool', 'default': False}}
# -vv and more: the result carries ``commands`` (as with return_commands=true)
COMMANDS_VERBOSITY = 2


def argument_spec(*parts, **own):
    spec = {}
    for part in parts:
        spec.update(part)
    spec.update(own)
    return spec


def settings_from(params):
    """Engine settings from module params (only the keys the engine knows: a module option is
    named as its setting; Ansible has already moved an old name's value to it)."""
    return {key: value for key, value in params.items() if key in ENGINE_SETTINGS and value is not None}


def fail(module, exc, **extra):
    """fail_json with the error's message (it names the cause and the fix) and the command output."""
    details = exc.to_dict() if isinstance(exc, CommandError) else {'msg': str(exc)}
    details.update(extra)
    module.fail_json(**details)


def guarded(module, body):
    """``body()``, with an exception nobody expected (a bug, not an ImageGCError) failing the
    module with its type and message and the traceback (shown with -vvv), not a bare message."""
    try:
        return body()
    except ImageGCError as exc:
        fail(module, exc)
    except Exception as exc:  # pylint: disable=broad-except  # reported with its traceback
        module.fail_json(msg='unexpected %s: %s (a bug of nodemaint.image_gc: please report it with the traceback '
                             'shown at -vvv)' % (type(exc).__name__, exc),
                         exception=traceback.format_exc())
    return None


def wants_commands(module):
    """Whether the result carries ``commands``: with return_commands=true, or at -vv and more."""
    return bool(module.params.get('return_commands')) or module._verbosity >= COMMANDS_VERBOSITY


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


def module_engine(module, phases):
    """The Engine a module runs, with the module's options as settings."""
    return Engine(settings_from(module.params), phases)


def run_engine(module, phases, fail_on_error=True):
    """Engine.run for a module: ``phases`` (of the engine's, ``disk`` included) with the module's
    options, under the run lock, in check mode when the module is. Bad options, discovery errors
    and the lock fail the module before anything runs; a phase that raised fails it too unless
    ``fail_on_error`` is false. Every warning of the run becomes a module warning."""
    try:
        engine = module_engine(module, phases)
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
        if first.get('traceback'):
            details['exception'] = first['traceback']
        module.fail_json(partial=[r for r in run['phases'] if not r.get('error')], **details)
    return run


def ids_diff(results):
    """``diff`` for ``--diff``: per kind of object, the ids present before and after (in check
    mode, after the plan). ``results``: (kind, phase result) pairs, one per phase shown."""
    diff = {'before': {}, 'after': {}}
    for kind, result in results:
        gone = {item['id'] for item in result['removed'] + result.get('gone', [])}
        present = {item['id'] for item in result['removed'] + result.get('gone', []) + result['kept'] + result['failed']}
        diff['before'][kind] = sorted(present)
        diff['after'][kind] = sorted(present - gone)
    return diff


def finish(module, out, diff_results):
    """exit_json with ``out``, the diff of ``diff_results`` (see ids_diff) under --diff, and
    ``commands`` only when asked for (wants_commands)."""
    commands = out.pop('commands')
    if wants_commands(module):
        out['commands'] = commands
    if module._diff:
        out['diff'] = ids_diff(diff_results)
    module.exit_json(**out)


__all__ = ['ImageGCError', 'CommandError', 'RUNTIME_ARGUMENT_SPEC', 'LOCK_ARGUMENT_SPEC', 'COMMANDS_ARGUMENT_SPEC',
           'option', 'options', 'argument_spec', 'settings_from', 'fail', 'guarded', 'wants_commands',
           'ModuleLock', 'module_engine', 'run_engine', 'ids_diff', 'finish']
