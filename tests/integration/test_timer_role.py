"""The timer role's preflight against this machine itself: a real host without systemd as PID 1.

``nodemaint.image_gc.install`` gathers no facts, so the role must find out by itself that the host
has no systemd, and fail with a clear message before it changes anything. Every path the role
would write is moved into a temp dir, so that even a broken check cannot install anything here.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.integration.ansible_play import collections_path

pytestmark = pytest.mark.skipif(os.path.isdir('/run/systemd/system'),
                                reason='this host runs systemd: the role would (rightly) install here')


def run_install(tmp_path, playbook='nodemaint.image_gc.install', check=False):
    root = tmp_path / 'node'
    extra = {
        'timer_lib_dir': str(root / 'lib'),
        'timer_launcher_path': str(root / 'sbin' / 'node-image-gc'),
        'timer_config_dir': str(root / 'etc'),
        'timer_state_dir': str(root / 'state'),
        'timer_lock_path': str(root / 'run' / 'lock'),
        'timer_textfile_dir': str(root / 'textfile'),
        '_timer_unit_dir': str(root / 'systemd'),
    }
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path(), ANSIBLE_NOCOLOR='1',
               ANSIBLE_RETRY_FILES_ENABLED='False', ANSIBLE_LOCAL_TEMP=str(tmp_path / 'ansible-tmp'),
               ANSIBLE_REMOTE_TEMP=str(tmp_path / 'ansible-remote-tmp'))
    argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
            '-e', 'ansible_python_interpreter=%s' % sys.executable, '-e', json.dumps(extra), playbook]
    if check:
        argv.append('--check')
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)
    return proc, root


@pytest.mark.parametrize('check', [False, True], ids=['run', 'check'])
def test_install_fails_clearly_on_a_host_without_systemd(tmp_path, check):
    proc, root = run_install(tmp_path, check=check)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert 'nodemaint.image_gc.timer needs systemd as the init system' in out, out
    assert '/run/systemd/system does not exist' in out, out
    assert 'TASK [nodemaint.image_gc.timer : Assert usage of systemd as an init system]' in out, out
    assert 'failed=1' in out, out
    # the check ran first: no later task started, nothing was written
    assert 'Copy the runner' not in out and 'Validate the calendar' not in out, out
    assert not root.exists(), sorted(str(p) for p in root.rglob('*'))


def test_uninstall_fails_clearly_on_a_host_without_systemd(tmp_path):
    proc, root = run_install(tmp_path, playbook='nodemaint.image_gc.uninstall')
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert 'nodemaint.image_gc.timer needs systemd as the init system' in out, out
    assert not root.exists()
