# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One source for every default: the settings table (plugins/module_utils/_settings.py).

The module docs, the role's defaults/main.yml and meta/argument_specs.yml, the prune playbook and
the README's table of playbook variables must agree with it; the playbook writes no default of
its own for a setting."""

import ast
import os
import re

import pytest
import yaml

from ansible_collections.nodemaint.image_gc.plugins.module_utils._settings import (
    OLD_OPTIONS, OLD_ROLE_TAG, PREFIXES, SETTINGS, names)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = ('crictl_prune', 'stale_sandbox', 'ctr_content_prune', 'imagefs_info', 'prune')
# options of a module's own, not settings of the run (each module names a setting as the table does)
MODULE_OWN = {'largest', 'fail_on_phase_error', 'return_commands'}
# role variables that do not mirror the runner's default on purpose
ROLE_OWN = {'textfile_path': 'written only with timer_metrics_enabled (the runner writes no metrics by default)'}


def _string_constants(path):
    with open(path) as handle:
        tree = ast.parse(handle.read())
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value.value
    return out


def _fragment_options():
    consts = _string_constants(os.path.join(ROOT, 'plugins', 'doc_fragments', 'runtime.py'))
    options = {}
    for name in ('DOCUMENTATION', 'LOCK'):
        options.update(yaml.safe_load(consts[name])['options'])
    return options


def _documented(module):
    doc = yaml.safe_load(_string_constants(os.path.join(ROOT, 'plugins', 'modules', module + '.py'))['DOCUMENTATION'])
    options = dict(doc['options'])
    consts = _string_constants(os.path.join(ROOT, 'plugins', 'doc_fragments', 'runtime.py'))
    for fragment in doc.get('extends_documentation_fragment', []):
        if fragment.startswith('nodemaint.image_gc.runtime'):
            part = fragment.split('.')[3].upper() if fragment.count('.') == 3 else 'DOCUMENTATION'
            options.update(yaml.safe_load(consts[part]).get('options') or {})
    return options


def _same(value, setting):
    """A documented/role value equals the table's default (durations as written, None as absent)."""
    return value == setting.default


CASES = [(m, opt) for m in MODULES for opt in _documented(m) if opt in SETTINGS]


@pytest.mark.parametrize('module, option', CASES, ids=['%s.%s' % c for c in CASES])
def test_module_doc_default_is_the_table_default(module, option):
    documented = _documented(module)[option].get('default')
    assert _same(documented, SETTINGS[option]), '%s: %s documents %r, the table says %r' % (
        module, option, documented, SETTINGS[option].default)


@pytest.mark.parametrize('module', MODULES)
def test_every_module_option_is_a_setting_by_its_name_or_the_modules_own(module):
    assert set(_documented(module)) - set(SETTINGS) <= MODULE_OWN


@pytest.mark.parametrize('module', MODULES)
def test_an_old_option_name_is_only_a_documented_alias_of_its_setting(module):
    old = {name: setting for setting, olds in OLD_OPTIONS.items() for name in olds}
    documented = _documented(module)
    assert not set(documented) & set(old), 'an old name is an option of its own'
    for option, doc in documented.items():
        for alias in doc.get('aliases', []):
            assert old.get(alias) == option, '%s: alias %s of %s is not an old name of it' % (module, alias, option)
            assert 'O(%s) (' % alias in ' '.join(doc['description']) and 'deprecated' in ' '.join(doc['description'])


def test_the_prune_module_offers_every_engine_and_lock_setting_by_its_name():
    documented = set(_documented('prune'))
    assert set(names('runtime', 'pods', 'containers', 'sandboxes', 'images', 'content', 'run', 'lock')) <= documented


def test_the_doc_fragment_covers_the_runtime_and_lock_settings():
    assert set(_fragment_options()) == set(names('runtime', 'lock'))


def _role():
    with open(os.path.join(ROOT, 'roles', 'timer', 'defaults', 'main.yml')) as handle:
        defaults = yaml.safe_load(handle)
    with open(os.path.join(ROOT, 'roles', 'timer', 'meta', 'argument_specs.yml')) as handle:
        specs = yaml.safe_load(handle)['argument_specs']['main']['options']
    return defaults, specs


def _render(value, defaults):
    """``{{ var }}/x`` with the role's own defaults (the only templating the defaults use)."""
    if isinstance(value, str):
        return re.sub(r'\{\{\s*(\w+)\s*\}\}', lambda m: str(defaults[m.group(1)]), value)
    return value


@pytest.mark.parametrize('setting', [s for s in SETTINGS if s not in ROLE_OWN])
def test_role_default_is_the_table_default(setting):
    defaults, specs = _role()
    var = PREFIXES['role'] + setting
    assert var in defaults, '%s: the role has no %s' % (setting, var)
    assert _same(_render(defaults[var], defaults), SETTINGS[setting]), '%s: %r' % (var, defaults[var])
    assert specs[var].get('default') == defaults[var], '%s: argument_specs and defaults/main.yml disagree' % var


def test_every_role_default_is_in_the_argument_specs():
    defaults, specs = _role()
    for var, value in defaults.items():
        assert var in specs, var
        assert specs[var].get('default') == value, var


def test_the_role_writes_every_setting_into_the_runner_config():
    with open(os.path.join(ROOT, 'roles', 'timer', 'vars', 'main.yml')) as handle:
        config = yaml.safe_load(handle)['_timer_config_base']
    assert set(config) == set(SETTINGS)


def test_the_prune_playbook_passes_every_setting_and_defaults_none():
    with open(os.path.join(ROOT, 'playbooks', 'prune.yml')) as handle:
        text = handle.read()
    plays = yaml.safe_load(text)
    task = [t for t in plays[0]['tasks'] if 'nodemaint.image_gc.prune' in t][0]['nodemaint.image_gc.prune']
    assert set(task) == set(_documented('prune'))
    for option, value in task.items():
        assert value == '{{ %s%s | default(omit) }}' % (PREFIXES['playbook'], option), option
    # the only defaults the playbook writes are its own variables'
    own = ['image_gc_hosts', 'image_gc_pipelining', 'image_gc_serial']
    assert sorted(set(re.findall(r'(image_gc_\w+) \| default\((?!omit)', text))) == own
    # ... and each is in the README's table with the default the playbook writes
    readme = dict((name, stated) for names_, stated in _readme_rows() for name in names_)
    for var in own:
        written = re.search(r'%s \| default\((.*?)\) \}\}' % var, text).group(1)
        stated = readme[var[len('image_gc_'):]]
        assert yaml.safe_load(stated.strip('`')) == yaml.safe_load(written), (var, written, stated)


def _readme_rows():
    with open(os.path.join(ROOT, 'README.md')) as handle:
        text = handle.read()
    table = text[text.index('### Playbook variables'):]
    table = table[:table.index('\n\n', table.index('| variable'))]
    for line in table.splitlines()[3:]:
        cells = [c.strip() for c in line.strip('|').split('|')]
        yield re.findall(r'`image_gc_(\w+)`', cells[0]), cells[1]


def test_readme_playbook_variables_state_the_table_defaults():
    seen = set()
    for variables, stated in _readme_rows():
        values = re.findall(r'`([^`]*)`', stated) if stated.startswith('`') else None
        for index, name in enumerate(variables):
            seen.add(name)
            if name not in SETTINGS:
                continue
            setting = SETTINGS[name]
            if setting.default is None:
                assert values is None, '%s: the README states %s, the table has no default' % (name, stated)
                continue
            assert values, '%s: no default stated' % name
            value = values[index] if len(values) > 1 else values[0]
            assert yaml.safe_load(value) == setting.default or value == setting.default, (name, value)
    assert set(names('runtime', 'pods', 'containers', 'sandboxes', 'images', 'content', 'run', 'lock')) <= seen


def _role_task_tags():
    tags = set()
    for name in os.listdir(os.path.join(ROOT, 'roles', 'timer', 'tasks')):
        with open(os.path.join(ROOT, 'roles', 'timer', 'tasks', name)) as handle:
            for task in yaml.safe_load(handle) or []:
                tags.update(task.get('tags', []) if isinstance(task.get('tags', []), list) else [task['tags']])
                tags.update((task.get('ansible.builtin.include_tasks', {}).get('apply') or {}).get('tags', []))
    return tags


def test_the_roles_tags_carry_the_roles_prefix_or_are_the_old_ones():
    """One prefix a face: the role's tags are timer and timer_<part> (its variables' prefix); the
    old node_image_gc ones stay beside them, each with its new one, until they go."""
    tags = _role_task_tags() - {'always'}
    prefix = PREFIXES['role'][:-1]
    new = {t for t in tags if t == prefix or t.startswith(PREFIXES['role'])}
    old = tags - new
    assert new and all(t == OLD_ROLE_TAG or t.startswith(OLD_ROLE_TAG + '_') for t in old), old
    assert {prefix + t[len(OLD_ROLE_TAG):] for t in old} <= new
