"""CRI-O nodes (issue 28) on the lab's real CRI-O 1.34.0 (tests/lab/crio.py), through the real crictl:
a run with nothing configured but what a CRI-O node has finds CRI-O on its default socket, names it,
removes the garbage of phases 1-3 and reports phase 4 as not applicable, without ctr.

The node's layout: the lab's socket is linked at ``<node>/var/run/crio/crio.sock`` and discovery's root
(``Discovery(root=...)``, ``/`` on a node) is ``<node>``: the well-known socket is found as on a node,
nothing else is given (no endpoint, no CONTAINER_RUNTIME_ENDPOINT). The only settings are the minimum
ages and image_unused_for, 0s (the lab's garbage is seconds old; the containerd tests do the same,
FRESH_IMAGES), and the lab's kubelet root, as no kubelet runs beside this CRI-O (test_kubelet.py runs
one on this line and finds its root with nothing given).
"""

import os
import sys

import pytest

from tests.lab_tests.ansible_play import collections_path, lab_kubelet_root, runtime_state

if collections_path() not in sys.path:
    sys.path.insert(0, collections_path())

from ansible_collections.nodemaint.image_gc.plugins.module_utils._discovery import Discovery  # noqa: E402
from ansible_collections.nodemaint.image_gc.plugins.module_utils._engine import Engine  # noqa: E402

pytestmark = [pytest.mark.matrix, pytest.mark.crio_only]

NOT_APPLICABLE = ('not applicable: CRI-O has no content store (its images live in containers/storage, with no '
                  'compressed layer blobs for ctr to prune)')


def crio_node_discovery(lab):
    """Discovery as on a CRI-O node: the lab's socket at the node's ``/var/run/crio/crio.sock``,
    crictl on PATH, no runtime endpoint in the environment."""
    node = os.path.join(lab.base, "node")
    sock = os.path.join(node, "var", "run", "crio", "crio.sock")
    os.makedirs(os.path.dirname(sock), exist_ok=True)
    if not os.path.lexists(sock):
        os.symlink(lab.socket, sock)
    return Discovery(env={'PATH': lab.bin_dir + os.pathsep + '/usr/bin:/bin'}, root=node), sock


def test_a_default_run_on_crio_removes_phases_1_to_3_and_skips_phase_4(lab, scenario):
    discovery, sock = crio_node_discovery(lab)
    # the lab runs no kubelet here: its (empty) kubelet root is named as an operator names the
    # kubelet's --root-dir (with none found live every pod counts as live and its newest containers
    # stay); test_kubelet.py's run on this line finds the running kubelet's root with nothing given
    settings = {'image_min_age': '0s', 'sandbox_min_age': '0s', 'image_unused_for': '0s',
                'kubelet_root': lab_kubelet_root(lab), 'image_record_path': os.path.join(lab.base, 'images.json')}
    phases = ('containers', 'sandboxes', 'images', 'content', 'disk')
    before = runtime_state(lab)
    check = Engine(settings, phases, discovery=discovery).run(check_mode=True)
    assert runtime_state(lab) == before, 'check mode removed something'
    run = Engine(settings, phases, discovery=discovery).run()
    after = runtime_state(lab)

    assert run['runtime']['name'] == check['runtime']['name'] == 'cri-o'
    assert run['runtime']['runtime_endpoint'] == 'unix://' + sock
    assert run['runtime']['sources']['runtime_endpoint'] == 'well-known socket'
    assert run['status'] == 'ok' and run['failed_phases'] == [], run
    phases_run = {r['phase']: r for r in run['phases']}
    checked = {r['phase']: r for r in check['phases']}
    for name in ('containers', 'sandboxes', 'images'):
        assert sorted(i['id'] for i in phases_run[name]['removed']) == sorted(i['id'] for i in checked[name]['removed'])
    # phase 4: not applicable, skipped, and no ctr was called
    for result in (phases_run['content'], checked['content']):
        assert result['status'] == 'skipped' and result['skip_reason'] == NOT_APPLICABLE
    assert not [argv for argv in run['commands'] + check['commands'] if os.path.basename(argv[0]) == 'ctr']

    exp, imgs, ctrs = scenario['expected'], scenario['images'], scenario['containers']
    # phase 1: the exited container of the NotReady pod goes; exit1, the newest exited instance of a
    # container of a live (Ready) pod, stays (the kubelet's rule), and so does the running one
    assert ctrs['exit0']['id'] not in after['containers']
    assert ctrs['exit1']['id'] in after['containers'] and ctrs['sleeper']['id'] in after['containers']
    # phase 2: every NotReady sandbox goes, the Ready ones stay
    assert not set(exp['notready_pod_ids']) & set(after['pods'])
    assert all(after['pods'][p] == 'SANDBOX_READY' for p in exp['ready_pod_ids'])
    # phase 3: unused, digest-only and freed images go; in use and the pinned pause image stay
    for key in ('unused3', 'busybox1_old', 'busybox1', 'notready', 'keep'):
        assert imgs[key]['id'] not in after['images'], key
    kept = {i['id']: i['reason'] for i in phases_run['images']['kept']}
    assert kept[imgs['pause']['id']] == 'pinned by the runtime'
    assert kept[imgs['exitonly']['id']].startswith('in use by container exit1')
    assert kept[imgs['busybox2']['id']].startswith('in use by container sleeper')
    for key in ('pause', 'exitonly', 'busybox2'):
        assert imgs[key]['id'] in after['images'], key

    # disk figures: CRI-O's image filesystem (crictl imagefsinfo) and the filesystem under it
    fs = run['disk_before']['image_filesystems'][0]
    assert fs['mountpoint'] == os.path.join(lab.storage_root, 'vfs-images'), fs
    assert run['disk_before']['filesystem'] is not None, run['disk_before']
    assert run['disk_after']['filesystem'] is not None, run['disk_after']


def test_image_min_age_on_crio_needs_no_ctr(lab, scenario):
    """The default image_min_age (10m) on CRI-O: no content store and no ctr; the images are new to
    this collection (its record), so every unused one stays and says why."""
    discovery, sock = crio_node_discovery(lab)
    settings = {'image_record_path': os.path.join(lab.base, 'images-fresh.json')}
    run = Engine(settings, ('images',), discovery=discovery).run(check_mode=True)
    images = run['phases'][0]
    assert images['status'] == 'ok', images.get('error')
    kept = {i['id']: i['reason'] for i in images['kept']}
    assert kept[scenario['images']['unused3']['id']].startswith('younger than image_min_age 10m (first seen ')
    assert kept[scenario['images']['unused3']['id']].endswith(' ago, per the last-use record)')
    assert images['removed'] == []


def test_the_lab_runs_crio_and_its_teardown_leaves_nothing(lab):
    """A CRI-O lab of its own: the pinned CRI-O answers; after stop() no crio, conmon, mount (pinned
    namespaces, shm) or socket is left, and the base is gone."""
    from tests import lab as labpkg
    from tests.lab.crio import CrioLab
    assert lab.crictl("version").stdout.splitlines()[1:3] == ["RuntimeName:  cri-o",
                                                              "RuntimeVersion:  " + lab.version_string]
    other = CrioLab(crio=lab.crio_bin).start()
    try:
        labpkg.feas(other)
        assert other.conmon_pids(), "a running container should have a conmon"
        assert labpkg.lab.mounts_under(other.base), "pinned namespaces and shm expected while running"
    finally:
        errors = other.stop()
    assert errors == []
    assert other.leftovers() == {"crio": [], "conmons": [], "mounts": [], "socket": []}
    assert not os.path.exists(other.base)
