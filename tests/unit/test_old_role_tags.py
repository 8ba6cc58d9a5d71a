# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The timer role's tags of before 0.1.0 (node_image_gc*) still work, and warn.

test_defaults.py checks that each old tag stays on the tasks of its new one; here the role's first
task, the warning, is evaluated by Ansible's own templating with the tags a run was given
(ansible_run_tags), as ansible-playbook evaluates it. (Running the role itself would install the
runner on this machine: its tasks change the host they run on.)"""

import os

import pytest
import yaml

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

try:
    from ansible.template import trust_as_template
except ImportError:          # ansible-core < 2.19 templates every string
    def trust_as_template(value):
        return value

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def warning_task():
    with open(os.path.join(ROOT, 'roles', 'timer', 'tasks', 'main.yml')) as handle:
        task = yaml.safe_load(handle)[0]
    assert task['name'] == 'Warn about deprecated tags' and task['tags'] == ['always']
    return task


def evaluate(run_tags):
    """(whether the warning task runs, its message) for a run given ``run_tags``."""
    task = warning_task()
    variables = {'ansible_run_tags': run_tags}
    templar = Templar(loader=DataLoader(), variables=variables)
    variables.update({k: templar.template(trust_as_template(v)) for k, v in task['vars'].items()})
    templar = Templar(loader=DataLoader(), variables=variables)
    runs = templar.template(trust_as_template('{{ %s }}' % task['when']))
    message = templar.template(trust_as_template(task['ansible.builtin.debug']['msg'])) if runs else None
    return runs, message


@pytest.mark.parametrize('tags, new', [(['node_image_gc_install'], 'timer_install'),
                                       (['node_image_gc', 'other'], 'timer')])
def test_an_old_tag_warns_naming_the_new_one(tags, new):
    runs, message = evaluate(tags)
    assert runs is True
    assert message.startswith('[DEPRECATION WARNING] nodemaint.image_gc.timer: the tag(s) %s are deprecated' % tags[0])
    assert message.endswith('use %s instead.' % new), message


@pytest.mark.parametrize('tags', [['all'], ['timer'], ['timer_install'], ['node_image_gcx']])
def test_other_tags_do_not_warn(tags):
    assert evaluate(tags) == (False, None)
