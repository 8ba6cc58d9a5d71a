"""Images the runtime lists but cannot run (issue 25, item 4), on every containerd line.

An image whose layer blobs were pruned (``ctr content prune references``, phase 4) and whose
snapshot is gone cannot be unpacked again: CreateContainer fails and the kubelet, which still
finds the image, never pulls it again. The images phase removes such an image (``crictl rmi``)
so that the next pod pulls it again; never one a container uses, a pinned one or the sandbox
image. The lab builds the state with tests/lab/unpack.py and shows first that the CRI really
refuses the image, then that a default run (images younger than image_min_age: nothing else
goes) removes exactly that image and that it can be imported and run again.
"""

import sys

import pytest

from tests import lab as L
from tests.lab_tests.ansible_play import collections_path, runtime_args, runtime_state, state_args
from tests.lab import pods as P
from tests.lab import unpack as U

if collections_path() not in sys.path:
    sys.path.insert(0, collections_path())

from ansible_collections.nodemaint.image_gc.plugins.module_utils._engine import Engine  # noqa: E402

pytestmark = [pytest.mark.matrix,
              pytest.mark.containerd_only(reason="containerd's content store and snapshotters, made with ctr (on "
                                                 "CRI-O the check is not applicable: test__crio.py)")]

BROKEN = "docker.io/feas/broken:1"       # pruned, and its snapshot removed: unusable
PRUNED = "docker.io/feas/pruned:1"       # pruned but still unpacked: runs
COMPLETE = "docker.io/feas/complete:1"   # complete content, snapshot removed: the CRI unpacks it again
USED = "docker.io/feas/used:1"           # unusable, but an exited container still refers to it


@pytest.fixture
def clean(lab):
    L.reset(lab)
    return lab


def _run(lab, check_mode=False, **extra):
    # the default settings: image_min_age (10m) keeps every image of the lab, which is seconds old
    settings = dict(runtime_args(lab), image_record_path=state_args(lab)['image_record_path'])
    settings.update(extra)
    return Engine(settings, ('containers', 'sandboxes', 'images')).run(check_mode=check_mode)


def _phase(run, name):
    return next(r for r in run['phases'] if r['phase'] == name)


def _ids(lab, *refs):
    return {ref: lab.client.image_status(ref).image.id for ref in refs}


def test_an_image_with_pruned_content_and_no_snapshot_is_removed_so_it_is_pulled_again(clean):
    lab = clean
    P.ensure_images(lab, BROKEN, PRUNED)
    U.prune_content(lab)
    U.break_image(lab, BROKEN, prune=False)
    P.ensure_images(lab, COMPLETE)
    U.remove_snapshot(lab, COMPLETE)
    ids = _ids(lab, BROKEN, PRUNED, COMPLETE)
    # the state is the one the kubelet cannot leave: CreateContainer fails for BROKEN only
    assert 'not found' in (U.create_fails(lab, BROKEN) or '')
    assert U.create_fails(lab, PRUNED, name='probe-pruned') is None
    assert U.create_fails(lab, COMPLETE, name='probe-complete') is None
    U.remove_snapshot(lab, COMPLETE)       # the probe unpacked it again

    check = _phase(_run(lab, check_mode=True), 'images')
    before = runtime_state(lab)
    run = _run(lab)
    images = _phase(run, 'images')
    after = runtime_state(lab)
    assert images['status'] == 'ok', images.get('error') or images['warnings']
    removed = {i['id']: i['reason'] for i in images['removed']}
    assert list(removed) == [ids[BROKEN]], removed
    assert removed[ids[BROKEN]].startswith('unusable: its content is incomplete'), removed
    assert 'not unpacked in overlayfs' in removed[ids[BROKEN]]
    assert {i['id']: i['reason'] for i in check['removed']} == removed     # check mode planned the same
    assert ids[BROKEN] in before['images'] and ids[BROKEN] not in after['images']
    for ref in (PRUNED, COMPLETE):
        assert ids[ref] in after['images'], ref
    # the kubelet would now pull it again: here, import it again, and a container runs from it
    P.ensure_images(lab, BROKEN)
    assert U.create_fails(lab, BROKEN, name='probe-again') is None


def test_an_unusable_image_a_container_still_uses_is_kept_with_its_reason(clean):
    lab = clean
    P.ensure_images(lab, USED)
    pod = P.pod(lab, 'user')
    cid = P.container(lab, pod['id'], 'w', state=P.EXITED, image=USED)
    U.prune_content(lab)
    U.drop_container_snapshot(lab, cid)    # snapshots lost while the container is still recorded
    U.remove_snapshot(lab, USED)
    state = U.check(lab)[USED]
    assert state[0].startswith('incomplete') and not state[1], state
    image = _ids(lab, USED)[USED]

    run = _run(lab)
    images = _phase(run, 'images')
    assert images['status'] == 'ok', images.get('error') or images['warnings']
    kept = {i['id']: i['reason'] for i in images['kept']}
    assert kept[image].startswith('in use by container w (%s, exited)' % cid[:13]), kept[image]
    assert 'unusable' in kept[image], kept[image]
    assert image in runtime_state(lab)['images']
    assert cid in runtime_state(lab)['containers']


# -- phase 4 only with one snapshotter ---------------------------------------------------------

def _content_run(lab, check_mode=False):
    settings = dict(runtime_args(lab), image_record_path=state_args(lab)['image_record_path'])
    return _phase(Engine(settings, ('content',)).run(check_mode=check_mode), 'content')


def _layer_labels(lab):
    out = lab.ctr('-n', 'k8s.io', 'content', 'ls').stdout
    return out.count('containerd.io/gc.ref.content.l.')


def test_content_prune_runs_with_the_one_default_snapshotter(clean):
    lab = clean
    P.ensure_images(lab, PRUNED)
    assert _layer_labels(lab) > 0
    content = _content_run(lab)
    assert content['status'] == 'ok' and not content['skipped'], content.get('skip_reason') or content.get('error')
    assert content['snapshotters'] == ['overlayfs']
    assert _layer_labels(lab) == 0


@pytest.mark.containerd_min("1.7", reason="a runtime handler with its own snapshotter")
def test_content_prune_is_skipped_when_a_runtime_handler_uses_another_snapshotter(clean):
    """With a RuntimeClass whose handler uses another snapshotter, the CRI unpacks an image into
    it when a pod of that class starts: from the layer blobs. Phase 4 would remove them, so it
    is skipped, and every layer label stays."""
    lab = clean
    P.ensure_images(lab, PRUNED)
    labels = _layer_labels(lab)
    with U.second_snapshotter(lab) as handler:
        check = _content_run(lab, check_mode=True)
        content = _content_run(lab)
        assert content['skipped'] and check['skipped'], content
        assert content['skip_reason'] == check['skip_reason']
        assert content['skip_reason'].startswith('the CRI uses more than one snapshotter (overlayfs; native for '
                                                 'runtime handler %s)' % handler), content['skip_reason']
        assert _layer_labels(lab) == labels
