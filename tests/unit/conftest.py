# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit test setup: make the collection importable as ``ansible_collections.nodemaint.image_gc``.

Run from the repo root: ``python -m pytest tests/unit``. When the collection is not already
importable (for example from an ``ansible-galaxy collection install`` tree on PYTHONPATH), a temp
dir with ``ansible_collections/nodemaint/image_gc`` -> repo root is put first on sys.path. This
happens at conftest import time, before any test module imports the collection.

Shared helpers (stub runner, fake discovery, fixture readers) live in the ``testlib`` package
next to this file; every test imports them one way, ``from tests.unit.image_gc_testlib import ...``
(the repo root is put on sys.path for that, as for ``tests.lab_tests``).
"""

import atexit
import os
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))

if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def _collection_importable():
    try:
        import ansible_collections.nodemaint.image_gc.plugins.module_utils._common  # noqa: F401
    except ImportError:
        return False
    return True


def _link_collection():
    base = tempfile.mkdtemp(prefix='image_gc_unit_')
    namespace_dir = os.path.join(base, 'ansible_collections', 'nodemaint')
    os.makedirs(namespace_dir)
    link = os.path.join(namespace_dir, 'image_gc')
    os.symlink(REPO_ROOT, link)

    def cleanup():
        # Never rmtree through the symlink: remove the link, then the two empty dirs.
        os.unlink(link)
        os.rmdir(namespace_dir)
        os.rmdir(os.path.dirname(namespace_dir))
        os.rmdir(base)

    atexit.register(cleanup)
    sys.path.insert(0, base)
    for name in list(sys.modules):
        if name == 'ansible_collections' or name.startswith('ansible_collections.'):
            del sys.modules[name]


if not _collection_importable():
    _link_collection()
    assert _collection_importable(), 'cannot import ansible_collections.nodemaint.image_gc from %s' % REPO_ROOT


@pytest.fixture
def peer_root(tmp_path):
    """A fake filesystem root for peer-mirror detection: empty proc/ and etc/rancher/."""
    (tmp_path / 'proc').mkdir()
    (tmp_path / 'etc' / 'rancher' / 'k3s').mkdir(parents=True)
    (tmp_path / 'etc' / 'rancher' / 'rke2').mkdir(parents=True)
    return tmp_path


@pytest.fixture(autouse=True)
def private_image_record(request, tmp_path, monkeypatch):
    """Every engine of a unit test keeps its last-use record under tmp_path, never in the
    machine's /var/lib/node-image-gc (tests that test the record pass their own path; the
    test of the settings table itself sees the table as it is)."""
    if request.module.__name__.endswith('test_defaults'):
        return None
    from ansible_collections.nodemaint.image_gc.plugins.module_utils import _settings
    path = str(tmp_path / 'node-image-gc' / 'images.json')
    monkeypatch.setitem(_settings.SETTINGS, 'image_record_path',
                        _settings.SETTINGS['image_record_path']._replace(default=path))
    return path


@pytest.fixture(autouse=True)
def no_settle_wait(request, monkeypatch):
    """The engine's after-run figure waits until two filesystem readings agree (at most a few
    seconds); unit tests read the machine's own busy filesystem, so they read it once, marked
    settled (test__disk.py tests the wait itself)."""
    if request.module.__name__.endswith(('test_defaults', 'test__disk')):
        return
    from ansible_collections.nodemaint.image_gc.plugins.module_utils import _disk

    def once(path, **kwargs):
        figure = _disk.filesystem_figure(path)
        return dict(figure, settled=True, waited=0.0) if figure else None
    monkeypatch.setattr(_disk, 'settled_figure', once)
