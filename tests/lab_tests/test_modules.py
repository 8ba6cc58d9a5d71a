"""Each module through ansible-playbook against the real containerd of the lab.

Assertions are on the runtime's state afterwards (listed through CRI and ctr), not only on the
modules' return values: check mode removes nothing and reports exactly what the real run then
removes; a second run reports changed: false.
"""

import os
import time

import pytest

from tests.lab_tests.ansible_play import (
    EXCLUDE, FRESH_IMAGES, lock_args, run_tasks, runtime_args, runtime_state, settled_content, state_args)
import tests.lab as labpkg


def state(lab):
    return runtime_state(lab, with_content=False)


def content(lab):
    return settled_content(lab)


def blob_bytes(lab):
    root = os.path.join(lab.base, 'root', 'io.containerd.content.v1.content', 'blobs')
    total = 0
    for directory, dummy, files in os.walk(root):
        total += sum(os.path.getsize(os.path.join(directory, f)) for f in files)
    return total


def ids(items):
    return sorted(item['id'] for item in items)


@pytest.mark.matrix  # how the sandbox image is kept differs per line
def test_crictl_prune_check_then_real_then_idempotent(lab, scenario):
    exp = scenario['expected']
    imgs = scenario['images']
    args = dict(runtime_args(lab), **state_args(lab))
    args.update(image_exclude=EXCLUDE, pod_aware=False, **FRESH_IMAGES)
    # pod_aware: false - exit1 (exited in the Ready pod feas-exit) is garbage only in the blunt mode; the
    # kubelet's rules (the default) keep it: tests/lab_tests/test_pod_safety.py
    before = state(lab)

    check = run_tasks(lab, [('prune', 'nodemaint.image_gc.crictl_prune', args)], check=True)
    assert check.rc == 0, check
    planned = check['prune']
    assert planned['changed'] is True
    assert state(lab) == before, 'check mode removed something'
    assert ids(planned['containers']) == sorted(exp['exited_container_ids'])

    real = run_tasks(lab, [('prune', 'nodemaint.image_gc.crictl_prune', args)])
    assert real.rc == 0, real
    done = real['prune']
    assert ids(done['containers']) == ids(planned['containers'])
    assert ids(done['images']) == ids(planned['images'])
    assert done['failures'] == []
    assert done['images_space_reclaimed'] == sum(i['size'] for i in done['images']) > 0

    after = state(lab)
    # exited containers are gone; the running container and the Ready sandboxes are untouched
    assert not set(exp['exited_container_ids']) & set(after['containers'])
    assert after['containers'] == dict((i, 'CONTAINER_RUNNING') for i in exp['running_container_ids'])
    for pod in exp['ready_pod_ids']:
        assert after['pods'][pod] == 'SANDBOX_READY'
    # unused, dangling (digest-only) and exited-only images are gone ...
    for key in ('unused3', 'busybox1_old', 'busybox1', 'exitonly', 'notready'):
        assert imgs[key]['id'] not in after['images'], key
    # ... the running container's image, the excluded image and the sandbox image stay
    for key in ('busybox2', 'keep', 'pause'):
        assert imgs[key]['id'] in after['images'], key
    kept = dict((i['id'], i['reason']) for i in done['images_kept'])
    if not lab.pins_sandbox_image:
        # containerd 1.6 does not pin it: the collection keeps it by the name `crictl info` reports
        assert not imgs['pause']['pinned'], 'containerd 1.6 does not pin the sandbox image'
        assert kept[imgs['pause']['id']] == 'sandbox (pause) image of the runtime (docker.io/feas/pause:1)'
    else:
        # containerd 1.7 and 2.x pin it (2.x does not report it in `crictl info`, 1.7 does): a pin
        # is the first reason the plan gives
        assert imgs['pause']['pinned'], 'containerd %s pins the sandbox image' % lab.version_string
        assert kept[imgs['pause']['id']] == 'pinned by the runtime'
    assert kept[imgs['keep']['id']] == "excluded by pattern 'docker.io/feas/keep:*'"
    assert kept[imgs['busybox2']['id']].startswith('in use by container sleeper')
    # the image used only by an exited container was freed because that container went too
    reasons = dict((i['id'], i['reason']) for i in done['images'])
    assert reasons[imgs['exitonly']['id']] == 'used only by containers removed in this run'
    # exit0 (in a NotReady pod) was exited too, so its image went with it
    assert reasons[imgs['notready']['id']] == 'used only by containers removed in this run'

    again = run_tasks(lab, [('prune', 'nodemaint.image_gc.crictl_prune', args)])
    assert again.rc == 0, again
    assert again['prune']['changed'] is False
    assert again['prune']['containers'] == [] and again['prune']['images'] == []
    assert again['prune']['images_space_reclaimed'] == 0
    assert state(lab) == after


def test_image_used_only_by_exited_container_is_kept_without_container_phase(lab, scenario):
    imgs = scenario['images']
    args = dict(runtime_args(lab), **state_args(lab))
    args.update(containers=False, image_exclude=EXCLUDE, **FRESH_IMAGES)
    res = run_tasks(lab, [('images', 'nodemaint.image_gc.crictl_prune', args)])
    assert res.rc == 0, res
    after = state(lab)
    assert imgs['exitonly']['id'] in after['images']
    kept = dict((i['id'], i['reason']) for i in res['images']['images_kept'])
    assert kept[imgs['exitonly']['id']].startswith('in use by container exit1')
    assert res['images']['containers'] == []
    assert set(scenario['expected']['exited_container_ids']) <= set(after['containers'])


def _min_age_keeping_young(scenario, margin=20):
    """A min_age that the old NotReady sandboxes exceed and the young ones stay under for
    ``margin`` seconds from now (the scenario's gap between them is larger)."""
    young_age = (time.time_ns() - scenario['young_min_created_ns']) / 1e9
    return '%ds' % (int(young_age) + margin)


@pytest.fixture
def gapped_scenario(lab):
    labpkg.reset(lab)
    return labpkg.scenario(lab, gap=30)


def test_stale_sandbox_check_then_real_then_idempotent(lab, gapped_scenario):
    exp = gapped_scenario['expected']
    args = dict(runtime_args(lab), **state_args(lab))
    before = state(lab)

    args['min_age'] = _min_age_keeping_young(gapped_scenario)
    check = run_tasks(lab, [('sandboxes', 'nodemaint.image_gc.stale_sandbox', args)], check=True)
    assert check.rc == 0, check
    assert ids(check['sandboxes']['sandboxes']) == sorted(exp['notready_old_pod_ids'])
    assert state(lab) == before

    args['min_age'] = _min_age_keeping_young(gapped_scenario)
    real = run_tasks(lab, [('sandboxes', 'nodemaint.image_gc.stale_sandbox', args)])
    assert real.rc == 0, real
    assert ids(real['sandboxes']['sandboxes']) == sorted(exp['notready_old_pod_ids'])
    kept = dict((i['id'], i['reason']) for i in real['sandboxes']['sandboxes_kept'])
    assert sorted(kept) == sorted(exp['notready_young_pod_ids'])
    assert all('younger than sandbox_min_age' in r for r in kept.values())

    after = state(lab)
    assert not set(exp['notready_old_pod_ids']) & set(after['pods'])
    for pod in exp['notready_young_pod_ids']:
        assert after['pods'][pod] == 'SANDBOX_NOTREADY'
    for pod in exp['ready_pod_ids']:
        assert after['pods'][pod] == 'SANDBOX_READY'
    for cid in exp['running_container_ids']:
        assert after['containers'][cid] == 'CONTAINER_RUNNING'

    args['min_age'] = _min_age_keeping_young(gapped_scenario)
    again = run_tasks(lab, [('sandboxes', 'nodemaint.image_gc.stale_sandbox', args)])
    assert again['sandboxes']['changed'] is False and again['sandboxes']['sandboxes'] == []


@pytest.mark.matrix  # the content phase: ctr differs per line
@pytest.mark.containerd_only(reason="no content store; phase 4 on CRI-O: test_crio.py")
def test_ctr_content_prune_check_then_real_then_idempotent(lab, scenario):
    exp = scenario['expected']
    args = dict(runtime_args(lab), **lock_args(lab))
    blobs_before, bytes_before = content(lab), blob_bytes(lab)

    check = run_tasks(lab, [('content', 'nodemaint.image_gc.ctr_content_prune', args)], check=True)
    assert check.rc == 0, check
    planned = check['content']
    assert planned['changed'] is True and planned['blobs']
    assert content(lab) == blobs_before, 'check mode changed the content store'

    real = run_tasks(lab, [('content', 'nodemaint.image_gc.ctr_content_prune', args)])
    assert real.rc == 0, real
    done = real['content']
    assert ids(done['blobs']) == ids(planned['blobs'])
    blobs_after = content(lab)
    assert blobs_after == blobs_before - set(ids(done['blobs']))
    assert blob_bytes(lab) < bytes_before
    assert done['content_space_reclaimed'] > 0
    # running containers keep running
    after = state(lab)
    for cid in exp['running_container_ids']:
        assert after['containers'][cid] == 'CONTAINER_RUNNING'

    again = run_tasks(lab, [('content', 'nodemaint.image_gc.ctr_content_prune', args)])
    assert again['content']['changed'] is False and again['content']['blobs'] == []
    assert content(lab) == blobs_after


def test_imagefs_info_before_and_after_shows_freed_images(lab, scenario):
    rt = runtime_args(lab)
    prune = dict(rt, **state_args(lab))
    prune.update(image_exclude=EXCLUDE, **FRESH_IMAGES)
    res = run_tasks(lab, [
        ('before', 'nodemaint.image_gc.imagefs_info', dict(rt, image_exclude=EXCLUDE)),
        ('prune', 'nodemaint.image_gc.crictl_prune', prune),
        ('after', 'nodemaint.image_gc.imagefs_info', dict(rt, image_exclude=EXCLUDE)),
    ])
    assert res.rc == 0, res
    before, after = res['before']['imagefs'], res['after']['imagefs']
    assert res['before']['changed'] is False
    # the kubelet's rules (the default): exit1, the newest exited instance in the Ready pod feas-exit, stays
    assert before['containers'].get('exited') == 2 and after['containers'].get('exited') == 1
    assert before['images'] - after['images'] == len(res['prune']['images'])
    assert before['images_bytes'] - after['images_bytes'] == res['prune']['images_space_reclaimed'] > 0
    # the estimate before equals what the prune then freed
    assert before['reclaimable_bytes'] == res['prune']['images_space_reclaimed']
    assert after['reclaimable_bytes'] == 0
    fs = before['image_filesystems'][0]
    assert fs['mountpoint'].startswith(lab.base)
    assert fs['fs_size_bytes'] > 0 and 0 <= fs['fs_used_percent'] <= 100


def test_bad_option_fails_naming_it_and_removes_nothing(lab, scenario):
    before = state(lab)
    args = dict(runtime_args(lab), **state_args(lab))
    res = run_tasks(lab, [
        ('sandbox', 'nodemaint.image_gc.stale_sandbox', dict(args, min_age='10x')),
        ('prune', 'nodemaint.image_gc.crictl_prune', dict(args, image_min_age='soon')),
        ('batch', 'nodemaint.image_gc.crictl_prune', dict(args, batch_size=0)),
    ])
    assert res['sandbox']['failed'] and 'min_age' in res['sandbox']['msg'] and '10x' in res['sandbox']['msg']
    assert res['prune']['failed'] and 'image_min_age' in res['prune']['msg']
    assert res['batch']['failed'] and 'batch_size' in res['batch']['msg']
    assert state(lab) == before
