"""``scripts/demo.sh`` end to end: it runs from scratch to a clean exit, shows less garbage after
than before, and leaves no process or directory of its own lab behind."""

import os
import re
import subprocess

import pytest

from tests.lab_tests.ansible_play import ROOT
from tests.lab_tests.prune_playbook import fleet, task_output
from tests.lab.lab import pids_matching


def _section(out, title):
    start = out.index('=== %s ===' % title)
    end = out.find('\n=== ', start + 1)
    return out[start:end if end >= 0 else len(out)]


def _images(section):
    """(repository, tag) rows of the ``crictl images`` table in a section."""
    lines = section.splitlines()
    head = [i for i, line in enumerate(lines) if line.startswith('IMAGE ') and 'IMAGE ID' in line][0]
    rows = []
    for line in lines[head + 1:]:
        if not line.strip():
            break
        rows.append(tuple(line.split()[:2]))
    return rows


def _blobs(section):
    return int(re.search(r'content store: (\d+) blobs', section).group(1))


_UNITS = {'Bytes': 1, 'B': 1, 'KB': 1024, 'MB': 1024 ** 2, 'GB': 1024 ** 3, 'TB': 1024 ** 4}


def _bytes(text):
    number, unit = text.split()
    return float(number) * _UNITS[unit]


# On the whole-suite line (1.7, a Debian package unpacked) and on 2.4 (built with go install): the
# demo's line-specific part is its set-up branch; its playbook runs are test_playbooks.py's test_prune_check_then_real_...
@pytest.mark.matrix(lines=("2.4",))
def test_demo_runs_clean_and_shows_less_after(lab):
    """scripts/demo.sh end to end (its own lab; the session lab only guarantees the prerequisites)."""
    env = dict(os.environ, NO_SETUP_APT='1')   # NODEMAINT_CACHE_DIR passes through: the venv is reused
    for key in ('CONTAINER_RUNTIME_ENDPOINT', 'IMAGE_SERVICE_ENDPOINT', 'CONTAINERD_ADDRESS',
                'ANSIBLE_COLLECTIONS_PATH', 'DEMO_KEEP_LAB', 'VIRTUAL_ENV'):
        env.pop(key, None)
    # as from a fresh shell: no virtualenv's bin on PATH (the demo picks its Python from PATH, and
    # that choice is part of the key of the tools venv it reuses)
    env['PATH'] = os.pathsep.join(d for d in env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin').split(os.pathsep)
                                  if d and not os.path.exists(os.path.join(d, 'activate')))
    choice = '%d.%d' % lab.version[:2]  # the session lab's containerd: the demo runs on the same one
    proc = subprocess.run(['bash', os.path.join(ROOT, 'scripts', 'demo.sh'), '--containerd', choice], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200, check=False)
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-3000:]
    assert 'Starting a lab node: containerd %s' % lab.version_string in out, out[:2000]

    before, after = _section(out, 'Before'), _section(out, 'After')
    assert len(_images(before)) > len(_images(after)) > 0, (before, after)
    assert ('docker.io/feas/busybox', '2') in _images(after), after
    assert ('docker.io/feas/keep', '1') in _images(after) and ('docker.io/feas/pause', '1') in _images(after)
    assert _blobs(before) > _blobs(after)
    real = _section(out, 'Real run: ansible-playbook nodemaint.image_gc.prune')
    report = task_output(real, 'Report this node')['msg']
    # freed bytes, and the image filesystem's figure (the demo's lab has containerd's root on a tmpfs
    # of its own) changing with them
    match = re.search(r'^freed ([\d.]+ \w+) \(\d+ containers?, \d+ sandbox(?:es)?, (\d+) images?, (\d+) blobs?\); '
                      r'(\S+) ([\d.]+)% -> ([\d.]+)%; images (\d+) -> (\d+)', report)
    assert match, report
    assert _bytes(match.group(1)) > 0 and int(match.group(2)) > 0 and int(match.group(3)) > 0, report
    assert match.group(4).endswith('/root'), report
    assert float(match.group(5)) > float(match.group(6)), report
    assert int(match.group(7)) > int(match.group(8)) == len(_images(after))
    table = fleet(real)
    assert table['freed'] != '0.00 Bytes' and table['hosts_with_failed_phases'] == {}
    # the young NotReady sandboxes stay, the old ones go
    assert table['sandboxes'] == 2 and after.count('NotReady') == 2
    assert re.search(r'changed=0\s', _section(out, 'Second run (nothing left to remove: changed=0)'))

    # nothing left behind: no containerd or shim of the demo's lab, its directory removed. Its own
    # lab only: the other pytest process of scripts/test.sh may run this demo on another line now.
    own = re.search(r'lab directory: (/tmp/nodemaint-demo\.\w+)', proc.stdout + proc.stderr).group(1)
    left = [p for p in pids_matching(own + '/') if os.path.exists('/proc/%d' % p)]
    assert left == [], ['%d: %s' % (p, open('/proc/%d/cmdline' % p).read().replace('\0', ' ')) for p in left]
    assert not os.path.exists(own)
