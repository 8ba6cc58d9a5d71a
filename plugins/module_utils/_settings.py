# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""The one table of settings: every name and default of the engine, the lock and the runner.

The modules' argument specs are built from it (``_adapter.option``), the runner validates its
config with it, and a unit test checks the module docs, the role's defaults and argument specs,
the prune playbook and the README against it. Nothing else writes a default.
"""

import collections

from ._common import ImageGCError
from ._units import parse_duration

# kind: 'str', 'path', 'duration' (converted to seconds), 'bool', 'count' (an int >= 1),
# 'percent' (an int 0-100), 'level' (an int 1-99, or None: off), 'list' (of non-empty strings),
# or a tuple of choices.
# group: which part of the run reads it ('runtime', 'pods' (phases 1 and 2), a phase, 'run', 'lock', 'runner').
Setting = collections.namedtuple('Setting', 'kind default group')

SETTINGS = collections.OrderedDict([
    # where the runtime is (None: discovered)
    ('crictl_path', Setting('path', None, 'runtime')),
    ('ctr_path', Setting('path', None, 'runtime')),
    ('runtime_endpoint', Setting('str', None, 'runtime')),
    ('image_endpoint', Setting('str', None, 'runtime')),
    ('containerd_address', Setting('str', None, 'runtime')),
    ('timeout', Setting('duration', '2m', 'runtime')),
    ('batch_size', Setting('count', 100, 'runtime')),
    ('kubelet_root', Setting('path', None, 'runtime')),
    # phases 1 and 2: which pods are live, and whose objects are touched at all
    ('pod_aware', Setting('bool', True, 'pods')),
    ('namespaces', Setting('list', [], 'pods')),
    ('exclude_namespaces', Setting('list', [], 'pods')),
    # phase 1
    ('containers', Setting('bool', True, 'containers')),
    ('created_min_age', Setting('duration', '1h', 'containers')),
    # phase 2
    ('sandboxes', Setting('bool', True, 'sandboxes')),
    ('sandbox_min_age', Setting('duration', '10m', 'sandboxes')),
    # phase 3
    ('images', Setting('bool', True, 'images')),
    ('image_exclude', Setting('list', [], 'images')),
    ('image_min_age', Setting('duration', '10m', 'images')),
    ('sandbox_image', Setting('str', None, 'images')),
    # 21d: chosen by the policy replay (bench/policy/run.py, docs/performance.md, issue 26): never more
    # re-pulls, re-pulled bytes or hours at 85% than the kubelet alone in any of its 45 replays
    ('image_unused_for', Setting('duration', '21d', 'images')),
    ('disk_high', Setting('level', None, 'images')),
    ('disk_low', Setting('level', None, 'images')),
    # phase 4
    ('content', Setting('bool', True, 'content')),
    ('content_namespace', Setting('str', 'k8s.io', 'content')),
    ('peer_mirror_action', Setting(('warn', 'skip'), 'warn', 'content')),
    # the whole run
    ('disk_usage_threshold', Setting('percent', 0, 'run')),
    ('image_record_path', Setting('path', '/var/lib/node-image-gc/images.json', 'run')),
    # the lock shared by the modules and the runner
    ('lock_path', Setting('path', '/run/node-image-gc/lock', 'lock')),
    ('lock_wait', Setting('duration', '10m', 'lock')),
    # the node-side runner only
    ('report_path', Setting('path', '/var/lib/node-image-gc/last-run.json', 'runner')),
    ('textfile_path', Setting('path', None, 'runner')),
])

# Names that went before 0.1.0, kept working with a deprecation warning until REMOVED_IN: the setting
# -> its old module option names. Every face derives its names from here: the module aliases
# (_adapter.option).
OLD_OPTIONS = {
    'sandbox_min_age': ('min_age',),        # stale_sandbox
    'content_namespace': ('namespace',),    # crictl_prune, ctr_content_prune
}
REMOVED_IN = '1.0.0'
# The prefix of each face's names: the setting NAME is the role variable timer_NAME (the role is
# nodemaint.image_gc.timer: Ansible's convention, which ansible-lint's var-naming checks, prefixes a
# role's variables and tags with the role's name) and the playbook variable image_gc_NAME (the
# collection's name: a playbook's variables live in the inventory, beside other collections').
PREFIXES = {'role': 'timer_', 'playbook': 'image_gc_'}
# The role's tags before 0.1.0 (node_image_gc, node_image_gc_<part>): still on its tasks, with a warning.
OLD_ROLE_TAG = 'node_image_gc'


PHASES = ('containers', 'sandboxes', 'images', 'content')
ENGINE_GROUPS = ('runtime', 'pods') + PHASES + ('run',)


def names(*groups):
    """Setting names of these groups, in table order."""
    return [name for name, s in SETTINGS.items() if s.group in groups]


def default(name):
    value = SETTINGS[name].default
    return list(value) if isinstance(value, list) else value


def _check(kind, value, name):
    if kind == 'duration':
        return parse_duration(value, name)
    if kind == 'bool':
        if not isinstance(value, bool):
            raise ImageGCError('%s: expected true or false, got %r' % (name, value))
    elif kind == 'level' and value is None:
        pass
    elif kind in ('count', 'percent', 'level'):
        low, high, text = {'count': (1, None, 'a whole number of 1 or more'),
                           'percent': (0, 100, 'a whole percentage from 0 to 100'),
                           'level': (1, 99, 'a whole percentage from 1 to 99')}[kind]
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            raise ImageGCError('%s: expected %s, got %r' % (name, text, value))
    elif kind == 'list':
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or \
                not all(isinstance(v, str) and v for v in value):
            raise ImageGCError('%s: expected a list of non-empty strings, got %r' % (name, value))
        return list(value)
    elif isinstance(kind, tuple):
        if value not in kind:
            raise ImageGCError('%s: expected one of %s, got %r' % (name, ', '.join(kind), value))
    elif value is not None and (not isinstance(value, str) or not value):
        raise ImageGCError('%s: expected a non-empty string, got %r' % (name, value))
    return value


def validate(values, keys, labels=None):
    """``keys`` of ``values`` checked and converted (durations in seconds), defaults filled in.

    A key of ``values`` that is not a setting of ``keys`` is an error; ``labels`` maps a setting
    to the name the caller knows it by (a module option), for errors.
    """
    unknown = sorted(set(values) - set(keys))
    if unknown:
        raise ImageGCError('unknown setting(s): %s' % ', '.join(unknown))
    out = {}
    for key in keys:
        value = values.get(key)
        out[key] = _check(SETTINGS[key].kind, default(key) if value is None else value,
                          (labels or {}).get(key, key))
    if 'disk_high' in out and 'disk_low' in out:
        label = {k: (labels or {}).get(k, k) for k in ('disk_high', 'disk_low')}
        high, low = out['disk_high'], out['disk_low']
        if (high is None) != (low is None):
            raise ImageGCError('%s and %s go together: set both (for example 85 and 80) or neither'
                               % (label['disk_high'], label['disk_low']))
        if high is not None and low >= high:
            raise ImageGCError('%s (%d) must be below %s (%d)' % (label['disk_low'], low, label['disk_high'], high))
    return out


ENGINE_SETTINGS = names(*ENGINE_GROUPS)


def validate_settings(values, labels=None):
    """The engine's settings checked and converted (durations in seconds); ImageGCError naming the bad key."""
    return validate(values, ENGINE_SETTINGS, labels)
