"""The timer role's preflight against this machine itself: a real host without systemd as PID 1.

``nodemaint.image_gc.install`` gathers no facts, so the role must find out by itself that the host
has no systemd, and fail with a clear message before it changes anything. Every path the role
would write is moved into a temp dir, so that even a broken check cannot install anything here.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.lab_tests.ansible_play import collections_path

without_systemd = pytest.mark.skipif(os.path.isdir('/run/systemd/system'),
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


@without_systemd
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


@without_systemd
def test_uninstall_fails_clearly_on_a_host_without_systemd(tmp_path):
    proc, root = run_install(tmp_path, playbook='nodemaint.image_gc.uninstall')
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert 'nodemaint.image_gc.timer needs systemd as the init system' in out, out
    assert not root.exists()


def render_service(tmp_path, **extra_vars):
    """The role's node-image-gc.service template rendered with its defaults and vars (as the
    role's configure tasks do), with ``extra_vars`` on top."""
    role = os.path.join(ROLE_ROOT, 'roles', 'timer')
    tmp_path.mkdir(parents=True, exist_ok=True)
    dest = tmp_path / 'node-image-gc.service'
    play = [{'name': 'render', 'hosts': 'localhost', 'gather_facts': False,
             'vars_files': [os.path.join(role, 'defaults', 'main.yml'), os.path.join(role, 'vars', 'main.yml')],
             'tasks': [{'name': 'Render the service unit', 'ansible.builtin.template': {
                 'src': os.path.join(role, 'templates', 'node-image-gc.service.j2'), 'dest': str(dest),
                 'mode': '0644'}}]}]
    path = tmp_path / 'render.yml'
    path.write_text(json.dumps(play))
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_LOCAL_TEMP=str(tmp_path / 'ansible-tmp'))
    argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
            '-e', 'ansible_python_interpreter=%s' % sys.executable, '-e', json.dumps(extra_vars), str(path)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dest


def exposure(unit_path):
    proc = subprocess.run(['systemd-analyze', 'security', '--offline=yes', '--no-pager', str(unit_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r'Overall exposure level for \S+: ([0-9]+\.[0-9]+)', proc.stdout + proc.stderr)
    assert match, proc.stdout + proc.stderr
    return float(match.group(1))


ROLE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
needs_analyze = pytest.mark.skipif(shutil.which('systemd-analyze') is None, reason='no systemd-analyze here')


@needs_analyze
def test_resource_limits_are_rendered_only_when_set(tmp_path):
    plain = render_service(tmp_path / 'plain').read_text()
    assert 'CPUQuota=' not in plain and 'MemoryMax=' not in plain
    limited = render_service(tmp_path / 'limited', timer_cpu_quota='50%', timer_memory_max='512M',
                             timer_metrics_enabled=True).read_text()
    lines = limited.splitlines()
    assert 'CPUQuota=50%' in lines and 'MemoryMax=512M' in lines
    assert 'ReadWritePaths=/var/lib/node_exporter/textfile_collector' in lines
    assert 'ReadWritePaths=-/var/lib/rancher/k3s/data' in lines
    assert 'CapabilityBoundingSet=' in lines   # empty: the role made no foreign textfile directory here
    # the limits do not change the sandbox: still 3.0 or lower (Molecule checks the installed unit)
    assert exposure(tmp_path / 'limited' / 'node-image-gc.service') <= 3.0
