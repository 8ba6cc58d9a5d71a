"""The kubelet's evictableContainers, point by point (issue 25, item 5), on the real containerd.

The kubelet (pkg/kubelet/kuberuntime/kuberuntime_gc.go) groups every container that is not
running, created-never-started ones included, by (pod uid label, container name) and keeps the
newest of each group while the pod exists. A run must leave what that rule leaves, and must not
remove an image a container created while the run was going mounts as an image volume.
"""

import sys

import pytest

from tests import lab as L
from tests.lab_tests.ansible_play import collections_path, runtime_args, runtime_state, state_args
from tests.lab import pods as P

if collections_path() not in sys.path:
    sys.path.insert(0, collections_path())

from ansible_collections.nodemaint.image_gc.plugins.module_utils._engine import Engine  # noqa: E402


@pytest.fixture
def clean(lab):
    L.reset(lab)
    return lab


def _settings(lab, **extra):
    # the lab's objects are seconds old: no minimum age applies, and every unused image may go
    # (image_unused_for 0s; the default keeps an image first seen within 21 days)
    settings = dict(runtime_args(lab), image_record_path=state_args(lab)['image_record_path'],
                    sandbox_min_age='0s', image_min_age='0s', image_unused_for='0s', created_min_age='0s')
    settings.update(extra)
    return settings


def _phase(run, name):
    return next(r for r in run['phases'] if r['phase'] == name)


def test_newest_instance_only_created_in_a_live_pod_is_kept(clean):
    """A restart the kubelet created but could not start (attempt 1, CREATED) is the newest
    instance of ``app``: it stays even past created_min_age (0s here), the older exited
    attempt goes, as the kubelet's own GC would do."""
    lab = clean
    pod = P.pod(lab, 'stuck')
    exited = P.container(lab, pod['id'], 'app', attempt=0, state=P.EXITED, exit_code=1)
    created = P.container(lab, pod['id'], 'app', attempt=1, state=P.CREATED)
    check = Engine(_settings(lab), ('containers', 'sandboxes')).run(check_mode=True)
    run = Engine(_settings(lab), ('containers', 'sandboxes')).run()
    containers = _phase(run, 'containers')
    kept = {i['id']: i['reason'] for i in containers['kept']}
    removed = {i['id']: i['reason'] for i in containers['removed']}
    assert kept[created].startswith('newest instance of app (attempt 1, created, never started) in live pod '
                                    'feas/stuck'), kept
    assert removed[exited].startswith('older instance of app (attempt 0, exited; attempt 1, %s, created, is kept)'
                                      % created[:13]), removed
    assert {i['id'] for i in _phase(check, 'containers')['removed']} == set(removed)
    after = runtime_state(lab)['containers']
    assert created in after and exited not in after


def _drop_sandbox_record(lab, pod_id):
    """The sandbox's containerd record removed and containerd restarted: the CRI (1.6/1.7, whose
    sandboxes live only in containerd's container records) no longer lists the sandbox, while its
    containers stay listed, as after a crash in the middle of a sandbox removal."""
    lab.client.stop_pod_sandbox(pod_id)
    lab.ctr('-n', 'k8s.io', 'containers', 'rm', pod_id)
    lab.restart()
    assert pod_id not in runtime_state(lab)['pods']


def test_containers_whose_sandbox_is_not_listed_are_grouped_by_their_pod_uid_label(clean):
    """Two exited attempts of ``app`` whose sandbox is no longer listed, of a pod the kubelet
    still tracks (its directory under the kubelet root): they are one pod by their
    io.kubernetes.pod.uid label, so the newest attempt stays and the older goes."""
    lab = clean
    if lab.version[0] >= 2:
        pytest.skip('containerd %s keeps its sandboxes in a sandbox store: removing the container record '
                    'does not unlist the sandbox' % lab.version_string)
    pod = P.pod(lab, 'orphaned')
    P.track_pod(lab, pod['uid'])
    older = P.container(lab, pod['id'], 'app', attempt=0, state=P.EXITED, exit_code=1)
    newest = P.container(lab, pod['id'], 'app', attempt=1, state=P.EXITED, exit_code=1)
    _drop_sandbox_record(lab, pod['id'])
    run = Engine(_settings(lab, kubelet_root=lab.kubelet_root), ('containers',)).run()
    containers = _phase(run, 'containers')
    kept = {i['id']: i['reason'] for i in containers['kept']}
    removed = {i['id']: i['reason'] for i in containers['removed']}
    assert kept[newest].startswith('newest exited instance of app (attempt 1) in live pod feas/orphaned (the '
                                   'kubelet still tracks it'), kept
    assert older in removed, removed
    after = runtime_state(lab)['containers']
    assert newest in after and older not in after


@pytest.mark.matrix(lines=("2.4",))
@pytest.mark.containerd_min("2.1", reason="image volumes")
def test_image_volume_of_a_container_created_during_the_run_is_kept(clean, monkeypatch):
    """An image no container uses at plan time goes; but when a container created between the
    plan and the removal mounts it as an image volume, the re-check before the batch keeps it."""
    lab = clean
    volume = P.IMAGES['volume']
    P.ensure_images(lab, volume)
    pod = P.pod(lab, 'late')
    P.container(lab, pod['id'], 'app', state=P.RUNNING)
    engine = Engine(_settings(lab), ('images',))
    original = engine.crictl.remove_images
    created = []

    def create_then_remove(ids, before_batch=None):
        if not created:                     # the kubelet starts a pod with an image volume meanwhile
            created.append(P.container(lab, pod['id'], 'late', state=P.RUNNING,
                                       mounts=[P.image_mount(volume)]))
        return original(ids, before_batch=before_batch)

    monkeypatch.setattr(engine.crictl, 'remove_images', create_then_remove)
    image = lab.client.image_status(volume).image.id
    run = engine.run()
    images = _phase(run, 'images')
    assert created, 'no removal batch ran: the volume image was not planned for removal'
    kept = {i['id']: i['reason'] for i in images['kept']}
    assert kept[image] == ('mounted as an image volume by container late (%s), created after the plan was made'
                           % created[0][:13]), kept
    assert image in runtime_state(lab)['images']
