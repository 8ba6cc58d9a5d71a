"""The library and the modules run on a node's Python 3.8 or newer, standard library only."""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODE_CODE = [os.path.join(ROOT, 'plugins', d) for d in ('module_utils', 'modules')]


def python_files():
    for directory in NODE_CODE:
        for name in sorted(os.listdir(directory)):
            if name.endswith('.py'):
                yield os.path.join(directory, name)


def test_vermin_says_python_3_8_is_enough():
    vermin = os.path.join(os.path.dirname(sys.executable), 'vermin')
    if not os.path.exists(vermin):
        pytest.fail('vermin is missing from the test venv (tests/requirements.txt)')
    proc = subprocess.run([vermin, '--no-tips', '--violations', '-t=3.8-']
                          + NODE_CODE, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize('path', list(python_files()), ids=os.path.basename)
def test_module_utils_import_only_the_standard_library(path):
    allowed_prefixes = ('ansible.module_utils.', 'ansible_collections.nodemaint.image_gc.plugins.module_utils.')
    with open(path) as handle:
        tree = ast.parse(handle.read(), path, feature_version=(3, 8))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ''] if node.level == 0 else []
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if 'module_utils' in os.path.dirname(path).split(os.sep)[-1]:
                assert not name.startswith('ansible'), '%s imports %s: the node runner has no Ansible' % (path, name)
            top = name.split('.')[0]
            assert top in sys.stdlib_module_names or name.startswith(allowed_prefixes), \
                '%s imports %s, which a node does not have' % (path, name)
