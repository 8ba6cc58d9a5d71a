"""The node package -- ``plugins/module_utils`` as the package ``nodemaint_image_gc`` plus the
``node-image-gc`` launcher -- installed the one way production installs it: the timer role's own
tasks (``roles/timer/tasks/install.yml``), run by ansible-playbook on localhost into a private
directory. Every caller that runs the node runner outside Molecule uses this (the lab tests,
``bench/``), so what they run is what the role puts on a node.
"""

import collections
import json
import os
import subprocess
import sys

from tests.lab_tests.ansible_play import collections_path

PLAYBOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'node_package.yml')
# The node's interpreter, as the role's default timer_python.
NODE_PYTHON = '/usr/bin/python3' if os.path.exists('/usr/bin/python3') else sys.executable

NodePackage = collections.namedtuple('NodePackage', 'lib package launcher python')


def install(base, python=NODE_PYTHON, timeout=600):
    """Install into BASE (BASE/lib/nodemaint_image_gc, BASE/bin/node-image-gc); a NodePackage.

    ``launcher`` runs like the timer's service does: ``[launcher, '--config', FILE, 'run']``."""
    lib = os.path.join(base, 'lib')
    launcher = os.path.join(base, 'bin', 'node-image-gc')
    extra = {'timer_lib_dir': lib, 'timer_launcher_path': launcher, 'timer_python': python,
             'timer_config_dir': os.path.join(base, 'etc'), 'ansible_python_interpreter': sys.executable}
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path(), ANSIBLE_NOCOLOR='1',
               ANSIBLE_RETRY_FILES_ENABLED='False', ANSIBLE_LOCAL_TEMP=os.path.join(base, 'ansible-tmp'))
    argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,',
            PLAYBOOK, '-e', json.dumps(extra)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError('installing the node package with the timer role failed (rc=%d):\n%s\n%s'
                           % (proc.returncode, proc.stdout[-3000:], proc.stderr[-2000:]))
    return NodePackage(lib, os.path.join(lib, 'nodemaint_image_gc'), launcher, python)
