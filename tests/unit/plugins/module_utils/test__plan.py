# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Over 300 lines: many cases of one subject, the planning rules of _plan, each checked against the recordings.
"""_plan: every planning rule and its reason, checked against the recordings and what upstream
``crictl rmi --prune`` and ``ctr content prune references`` really deleted."""

import copy

import pytest

from ansible_collections.nodemaint.image_gc.plugins.module_utils import _content, _node, _plan, _plan_images, _refs
from ansible_collections.nodemaint.image_gc.plugins.module_utils._listings import Container, Image, Sandbox, parse_content_ls  # noqa: F401

from tests.unit.image_gc_testlib import (
    IDS, IMG_BUSYBOX1, IMG_BUSYBOX2, IMG_OLD_BUSYBOX1, IMG_PAUSE, IMG_UNUSED3, V16, V21, VERSIONS, fixture_json,
    fixture_text)

SEC = 10 ** 9


def containers(version, data=None):
    data = data or fixture_json(version, 'ps-a.json')
    return [Container(raw) for raw in data['containers']]


def sandboxes(version, data=None):
    data = data or fixture_json(version, 'pods.json')
    return [Sandbox(raw) for raw in data['items']]


def images(version, name='images.json'):
    return [Image(raw) for raw in fixture_json(version, name)['images']]


def blobs(version, name='ctr-content-ls.txt'):
    return parse_content_ls(fixture_text(version, name))


def newest_ns(version):
    return max(int(c['createdAt']) for c in fixture_json(version, 'ps-a.json')['containers'])


def sandbox_image(version):
    return fixture_json(version, 'info.json')['config'].get('sandboxImage')


def upstream_pruned_ids(version):
    """Image ids whose refs upstream ``crictl rmi --prune`` reported in rmi-prune.out."""
    refs = [line.split('Deleted: ', 1)[1] for line in fixture_text(version, 'rmi-prune.out').splitlines() if line]
    by_ref = {}
    for image in images(version):
        for ref in image.refs:
            by_ref[ref] = image.id
    return sorted(set(by_ref[r] for r in refs))


def reasons(items):
    return dict((item['id'], item['reason']) for item in items)


# -- phase 1: containers ---------------------------------------------------------------------

@pytest.mark.parametrize('version', VERSIONS)
def test_exited_containers_are_removed_oldest_first(version):
    plan = _plan.plan_containers(containers(version), newest_ns(version) + 60 * SEC)
    # ps-exited-q.txt lists exit1, exit0 (newest first); the plan is oldest first
    exited = fixture_text(version, 'ps-exited-q.txt').split()
    assert plan.ids == list(reversed(exited)) == [IDS[version]['exit0'], IDS[version]['exit1']]
    assert all(item['reason'] == 'exited' for item in plan.remove)
    assert plan.keep == []             # a running container is neither removed nor "kept"
    assert plan.remove[0]['age'] == (60 * SEC + newest_ns(version) - plan_created(version, 'exit0')) // SEC


def plan_created(version, name):
    return [c.created_ns for c in containers(version) if c.name == name][0]


def created_variant(version, age_s, now_ns):
    """DERIVED: ps-a.json with exit1 turned into a created-never-started container of age ``age_s``."""
    data = fixture_json(version, 'ps-a.json')
    for raw in data['containers']:
        if raw['metadata']['name'] == 'exit1':
            raw['state'] = 'CONTAINER_CREATED'
            raw['createdAt'] = str(now_ns - age_s * SEC)
    return containers(version, data)


def test_created_never_started_older_than_created_min_age_is_removed():
    now = newest_ns(V16) + 7200 * SEC
    plan = _plan.plan_containers(created_variant(V16, 3601, now), now, created_min_age=3600)
    assert reasons(plan.remove)[IDS[V16]['exit1']] == 'created but never started, 1h1s old (created_min_age 1h)'


def test_created_never_started_younger_than_created_min_age_is_kept():
    now = newest_ns(V16) + 7200 * SEC
    plan = _plan.plan_containers(created_variant(V16, 1800, now), now, created_min_age=3600)
    assert IDS[V16]['exit1'] not in plan.ids
    assert reasons(plan.keep) == {IDS[V16]['exit1']: 'created 30m ago, younger than created_min_age 1h'}
    assert plan.ids == [IDS[V16]['exit0']]


def pods_of(version, data=None, pods_data=None, tracked=None):
    return _node.build_pods(sandboxes(version, pods_data), containers(version, data), tracked)


def test_pod_aware_keeps_the_newest_exited_instance_in_a_live_pod():
    """keep_last_per_pod is folded into pod_aware (the default): the newest exited instance of each
    container name stays - in a LIVE pod. exit0's pod feas-a is not live (NotReady, untracked): it goes
    now, where keep_last_per_pod kept it."""
    # DERIVED: a second, newer exited instance (attempt 1) of exit1 in pod feas-c.
    data = fixture_json(V16, 'ps-a.json')
    retry = copy.deepcopy([c for c in data['containers'] if c['metadata']['name'] == 'exit1'][0])
    retry['id'] = 'f' * 64
    retry['metadata']['attempt'] = 1
    retry['createdAt'] = str(int(retry['createdAt']) + 30 * SEC)
    data['containers'].append(retry)
    now = newest_ns(V16) + 3600 * SEC
    plan = _plan.plan_containers(containers(V16, data), now, pods=pods_of(V16, data))
    assert plan.ids == [IDS[V16]['exit0'], IDS[V16]['exit1']]
    assert reasons(plan.remove)[IDS[V16]['exit1']] == (
        'older exited instance of exit1 (attempt 0; attempt 1, fffffffffffff, is kept) in live pod feas/feas-c')
    assert reasons(plan.remove)[IDS[V16]['exit0']].startswith('exited, and pod feas/feas-a is not live: its newest '
                                                              'sandbox 84a5f9a622d31 is NotReady')
    assert list(reasons(plan.keep)) == ['f' * 64]
    assert reasons(plan.keep)['f' * 64].startswith('newest exited instance of exit1 (attempt 1) in live pod '
                                                   'feas/feas-c (its newest sandbox fa9989b9e08be is Ready)')
    # pod_aware: false (no pods): everything exited goes
    assert len(_plan.plan_containers(containers(V16, data), now).ids) == 3


# -- phase 2: sandboxes ----------------------------------------------------------------------

def feas_a_created(version):
    return [s.created_ns for s in sandboxes(version) if s.name == 'feas-a'][0]


@pytest.mark.parametrize('version', VERSIONS)
def test_notready_sandbox_older_than_min_age_is_removed(version):
    now = feas_a_created(version) + 3600 * SEC
    plan = _plan.plan_sandboxes(sandboxes(version), containers(version), now, min_age=600)
    assert plan.ids == fixture_text(version, 'pods-notready-q.txt').split() == [IDS[version]['feas-a']]
    assert plan.remove[0]['reason'] == 'NotReady, created 1h ago (sandbox_min_age 10m)'
    assert plan.remove[0]['age'] == 3600
    assert plan.keep == []              # Ready sandboxes are not even considered


def test_notready_sandbox_younger_than_min_age_is_kept():
    now = feas_a_created(V21) + 599 * SEC
    plan = _plan.plan_sandboxes(sandboxes(V21), containers(V21), now, min_age=600)
    assert plan.ids == []
    assert reasons(plan.keep) == {IDS[V21]['feas-a']: 'NotReady but only 9m59s old, younger than sandbox_min_age 10m'}
    # at exactly min_age it goes
    assert _plan.plan_sandboxes(sandboxes(V21), containers(V21), now + SEC, min_age=600).ids == [IDS[V21]['feas-a']]


@pytest.mark.parametrize('namespaces, exclude, removed, reason', [
    (['feas'], [], True, None),
    (['fe*'], [], True, None),
    (['kube-system', 'default'], [], False, "namespace 'feas' is not in namespaces"),
    ([], ['feas'], False, "namespace 'feas' excluded by pattern 'feas'"),
    ([], ['kube-*', 'f?as'], False, "namespace 'feas' excluded by pattern 'f?as'"),
    (['feas'], ['feas'], False, "namespace 'feas' excluded by pattern 'feas'"),
    ([], ['kube-system'], True, None),
])
def test_namespaces_include_and_exclude(namespaces, exclude, removed, reason):
    now = feas_a_created(V16) + 3600 * SEC
    plan = _plan.plan_sandboxes(sandboxes(V16), containers(V16), now, 600, namespaces, exclude)
    feas_a = IDS[V16]['feas-a']
    if removed:
        assert plan.ids == [feas_a]
    else:
        assert plan.ids == []
        assert reasons(plan.keep) == {feas_a: reason}


@pytest.mark.parametrize('state', ['CONTAINER_RUNNING', 'CONTAINER_CREATED', 'CONTAINER_UNKNOWN'])
def test_notready_sandbox_with_live_container_is_kept(state):
    # DERIVED: exit0 (in NotReady feas-a) given another state.
    data = fixture_json(V16, 'ps-a.json')
    for raw in data['containers']:
        if raw['metadata']['name'] == 'exit0':
            raw['state'] = state
    now = feas_a_created(V16) + 3600 * SEC
    plan = _plan.plan_sandboxes(sandboxes(V16), containers(V16, data), now, 600)
    assert plan.ids == []
    assert reasons(plan.keep) == {IDS[V16]['feas-a']: 'NotReady but container exit0 is %s' % state}


# -- phase 3: images -------------------------------------------------------------------------

def test_image_in_use_by_running_container_is_kept():
    plan = _plan_images.plan_images(images(V21), containers(V21))
    assert reasons(plan.keep)[IMG_BUSYBOX2] == 'in use by container sleeper (%s, running)' % IDS[V21]['sleeper'][:13]
    assert [i for i in plan.keep if i['id'] == IMG_BUSYBOX2][0]['used_by'] == [IDS[V21]['sleeper']]


@pytest.mark.parametrize('version', VERSIONS)
def test_image_used_only_by_exited_containers_kept_when_they_stay(version):
    plan = _plan_images.plan_images(images(version), containers(version), sandbox_image(version))
    reason = reasons(plan.keep)[IMG_OLD_BUSYBOX1]
    assert reason.startswith('in use by container ') and reason.endswith(', exited) and 1 more')
    assert sorted([i for i in plan.keep if i['id'] == IMG_OLD_BUSYBOX1][0]['used_by']) == sorted(
        [IDS[version]['exit0'], IDS[version]['exit1']])
    assert IMG_OLD_BUSYBOX1 not in plan.ids


@pytest.mark.parametrize('version', VERSIONS)
def test_image_used_only_by_exited_containers_freed_when_removed_in_the_same_run(version):
    exited = [IDS[version]['exit0'], IDS[version]['exit1']]
    plan = _plan_images.plan_images(images(version), containers(version), sandbox_image(version), removed_containers=exited)
    assert reasons(plan.remove)[IMG_OLD_BUSYBOX1] == 'used only by containers removed in this run'
    # the re-tagged busybox:1 is NOT protected by the exited containers' (stale) tag
    assert reasons(plan.remove)[IMG_BUSYBOX1] == 'unused'


def test_removing_only_one_of_two_users_keeps_the_image():
    plan = _plan_images.plan_images(images(V16), containers(V16), sandbox_image(V16),
                                    removed_containers=[IDS[V16]['exit0']])
    assert reasons(plan.keep)[IMG_OLD_BUSYBOX1] == 'in use by container exit1 (%s, exited)' % IDS[V16]['exit1'][:13]


def test_pinned_image_is_kept_on_2x():
    plan = _plan_images.plan_images(images(V21), containers(V21))     # 2.1.9 info.json reports no sandbox image
    assert reasons(plan.keep)[IMG_PAUSE] == 'pinned by the runtime'
    assert plan.warnings == []


def test_unpinned_sandbox_image_is_kept_on_16_though_upstream_prune_deleted_it():
    assert 'Deleted: docker.io/feas/pause:1' in fixture_text(V16, 'rmi-prune.out').splitlines()
    pause = [i for i in images(V16) if i.id == IMG_PAUSE][0]
    assert not pause.pinned
    assert sandbox_image(V16) == 'docker.io/feas/pause:1'
    plan = _plan_images.plan_images(images(V16), containers(V16), sandbox_image(V16))
    assert reasons(plan.keep)[IMG_PAUSE] == 'sandbox (pause) image of the runtime (docker.io/feas/pause:1)'
    assert plan.warnings == []


@pytest.mark.parametrize('configured', ['docker.io/feas/pause:1', 'feas/pause:1', IMG_PAUSE])
def test_sandbox_image_matches_short_and_id_forms(configured):
    plan = _plan_images.plan_images(images(V16), containers(V16), configured)
    assert IMG_PAUSE in reasons(plan.keep)


def test_no_sandbox_image_and_nothing_pinned_keeps_what_looks_like_one_and_warns():
    """Fail safe (the first release removed the pause image here, and the next pod start failed)."""
    plan = _plan_images.plan_images(images(V16), containers(V16), None)
    assert IMG_PAUSE not in plan.ids
    assert reasons(plan.keep)[IMG_PAUSE].startswith('looks like a sandbox (pause) image')
    assert IMG_UNUSED3 in plan.ids
    assert len(plan.warnings) == 1 and 'set sandbox_image' in plan.warnings[0]


@pytest.mark.parametrize('tag, kept', [
    ('registry.k8s.io/pause:3.10', True), ('docker.io/rancher/mirrored-pause:3.6', True),
    ('rancher/mirrored-pause@sha256:' + 'a' * 64, True), ('k8s.gcr.io/pause:3.2', True),
    ('registry.example.net/mirror/eks-pause:3.9', True),
    ('docker.io/library/pause-detector:1', False), ('docker.io/feas/unused:3', False),
])
def test_sandbox_lookalikes_by_name(tag, kept):
    image = Image({'id': 'sha256:' + 'c' * 64, 'repoTags': [tag] if '@' not in tag else [],
                   'repoDigests': [tag] if '@' in tag else [], 'size': '9'})
    unknown = _plan_images.plan_images([image], [], None)
    assert (image.id not in unknown.ids) is kept
    # a runtime that names its sandbox image: a look-alike that is not it is removable
    assert image.id in _plan_images.plan_images([image], [], 'registry.k8s.io/pause:3.9').ids


@pytest.mark.parametrize('pattern, image', [
    ('docker.io/feas/unused:*', IMG_UNUSED3),                      # tag
    ('docker.io/feas/busybox@sha256:ee7e*', IMG_OLD_BUSYBOX1),     # repo digest
    ('sha256:7a74b334*', IMG_BUSYBOX1),                            # image id
    ('*/busybox:1', IMG_BUSYBOX1),
])
def test_exclude_patterns(pattern, image):
    plan = _plan_images.plan_images(images(V21), [], exclude=['quay.io/*', pattern])
    assert reasons(plan.keep)[image] == 'excluded by pattern %r' % pattern
    assert image not in plan.ids


def test_exclude_pattern_on_normalized_ref():
    # DERIVED: images.json of 1.6 with unused:3 listed under a short name, as some CRI runtimes do.
    data = fixture_json(V16, 'images.json')
    for raw in data['images']:
        if raw['id'] == IMG_UNUSED3:
            raw['repoTags'] = ['busybox:1.36']
    listed = [Image(raw) for raw in data['images']]
    plan = _plan_images.plan_images(listed, [], 'docker.io/feas/pause:1', exclude=['docker.io/library/busybox:*'])
    assert reasons(plan.keep)[IMG_UNUSED3] == "excluded by pattern 'docker.io/library/busybox:*'"


@pytest.mark.parametrize('ref, normalized', [
    ('busybox', 'docker.io/library/busybox:latest'),
    ('busybox:1.36', 'docker.io/library/busybox:1.36'),
    ('feas/pause:1', 'docker.io/feas/pause:1'),
    ('docker.io/feas/pause:1', 'docker.io/feas/pause:1'),
    ('registry.k8s.io/pause:3.9', 'registry.k8s.io/pause:3.9'),
    ('localhost/x', 'localhost/x:latest'),
    ('localhost:5000/x', 'localhost:5000/x:latest'),
    ('docker.io/feas/busybox@sha256:ee7e', 'docker.io/feas/busybox@sha256:ee7e'),
    ('busybox@sha256:ee7e', 'docker.io/library/busybox@sha256:ee7e'),
    (IMG_PAUSE, IMG_PAUSE),
    ('', ''),
])
def test_normalize_ref(ref, normalized):
    assert _refs.normalize_ref(ref) == normalized


def test_image_min_age_younger_kept_older_removed():
    # seconds since the last-use record first saw each image
    ages = {IMG_BUSYBOX1: 7, IMG_PAUSE: 10, IMG_BUSYBOX2: 9, IMG_UNUSED3: 9, IMG_OLD_BUSYBOX1: 10}
    plan = _plan_images.plan_images(images(V16), containers(V16), sandbox_image(V16), min_age=8, ages=ages,
                                    removed_containers=[IDS[V16]['exit0'], IDS[V16]['exit1']])
    assert reasons(plan.keep)[IMG_BUSYBOX1] == 'younger than image_min_age 8s (first seen 7s ago, per the last-use record)'
    assert sorted(plan.ids) == sorted([IMG_UNUSED3, IMG_OLD_BUSYBOX1])   # ages 9 and 10 >= 8


def test_image_min_age_unknown_age_kept():
    ages = {IMG_BUSYBOX1: 3600}
    plan = _plan_images.plan_images(images(V16), containers(V16), sandbox_image(V16), min_age=1, ages=ages)
    assert reasons(plan.keep)[IMG_UNUSED3] == ('age unknown (not in the last-use record); kept because '
                                               'image_min_age is set')
    assert plan.ids == [IMG_BUSYBOX1]


def test_image_min_age_zero_ignores_ages():
    plan = _plan_images.plan_images(images(V16), containers(V16), sandbox_image(V16), min_age=0, ages={})
    assert sorted(plan.ids) == sorted([IMG_BUSYBOX1, IMG_UNUSED3])


def test_dangling_reason():
    plan = _plan_images.plan_images(images(V16), [], sandbox_image(V16))
    assert reasons(plan.remove)[IMG_OLD_BUSYBOX1] == 'unused and untagged (dangling)'


@pytest.mark.parametrize('version', VERSIONS)
def test_plan_equals_upstream_rmi_prune_minus_the_sandbox_image(version):
    """The recorded sequence ran ``crictl rm`` (the exited containers) and ``rmp`` (feas-a)
    before ``crictl rmi --prune``; the same run of ours plans the same images, except that it
    keeps the runtime's sandbox image (which 1.6 does not pin)."""
    removed = fixture_text(version, 'ps-exited-q.txt').split()
    plan = _plan_images.plan_images(images(version), containers(version), sandbox_image(version),
                                    removed_containers=removed)
    upstream = upstream_pruned_ids(version)
    expected = sorted(set(upstream) - {IMG_PAUSE})
    assert sorted(plan.ids) == expected
    assert sorted(plan.ids) == sorted([IMG_OLD_BUSYBOX1, IMG_BUSYBOX1, IMG_UNUSED3])
    assert (IMG_PAUSE in upstream) == (version == V16)
    # and the survivors are exactly those of images-after.json, plus pause on 1.6
    after = set(i.id for i in images(version, 'images-after.json'))
    assert set(i['id'] for i in plan.keep) == after | {IMG_PAUSE}


# -- phase 4: content ------------------------------------------------------------------------

@pytest.mark.parametrize('version', VERSIONS)
def test_content_plan_equals_blobs_collected_by_the_prune(version):
    before = blobs(version, 'ctr-content-ls-after-rmi.txt')
    after = set(b.digest for b in blobs(version, 'ctr-content-ls-after-prune.txt'))
    collected = sorted(b.digest for b in before if b.digest not in after)
    plan = _content.plan_content(before)
    assert plan.ids == collected
    assert all(item['reason'] == 'layer blob referenced only by layer labels' for item in plan.remove)
    assert all(item['size'] == 1028000 for item in plan.remove)
    expected = {V16: ['sha256:5f4de468a2d94fad44b1fe435d8816e6a09e28f9f271edf57ce788021fd9fd55'],
                V21: ['sha256:5f4de468a2d94fad44b1fe435d8816e6a09e28f9f271edf57ce788021fd9fd55',
                      'sha256:f51d6ffc6841a4945a2c9f5919c130cc077317b4d1f87750cc78e070b738bb4b']}
    assert collected == expected[version]


@pytest.mark.parametrize('version', VERSIONS)
def test_content_plan_on_full_store_is_every_layer_named_in_the_dry_run(version):
    plan = _content.plan_content(blobs(version))
    assert len(plan.ids) == 5
    # the dry run names the 5 manifests whose l.0 label it drops; their l.0 targets are the plan
    manifests = [line.split('digest="', 1)[1].split('"', 1)[0]
                 for line in fixture_text(version, 'ctr-prune-dry.err').splitlines() if 'Removing label' in line]
    by_digest = dict((b.digest, b) for b in blobs(version))
    assert sorted(by_digest[m].labels['containerd.io/gc.ref.content.l.0'] for m in manifests) == plan.ids


def test_content_plan_after_prune_is_empty():
    assert _content.plan_content(blobs(V21, 'ctr-content-ls-after-prune.txt')).ids == []


def test_blob_referenced_by_a_non_layer_label_is_not_planned():
    # DERIVED: a manifest that also references a layer blob through another content label.
    listed = blobs(V16, 'ctr-content-ls-after-rmi.txt')
    listed[1].labels['containerd.io/gc.ref.content.m.0'] = listed[0].digest
    assert _content.plan_content(listed).ids == []


@pytest.mark.parametrize('version', VERSIONS)
def test_without_images_simulates_the_store_after_upstream_rmi_prune(version):
    """Dropping the images upstream `crictl rmi --prune` deleted from the recorded store gives
    exactly the recorded store after it (ctr-content-ls-after-rmi.txt)."""
    simulated = _content.without_images(blobs(version), upstream_pruned_ids(version))
    recorded_after = blobs(version, 'ctr-content-ls-after-rmi.txt')
    assert sorted(b.digest for b in simulated) == sorted(b.digest for b in recorded_after)
    assert _content.plan_content(simulated).ids == _content.plan_content(recorded_after).ids


def test_without_no_images_is_the_store_unchanged():
    listed = blobs(V21)
    assert _content.without_images(listed, []) == listed


def test_exclude_pattern_without_registry_matches_the_qualified_name():
    from ansible_collections.nodemaint.image_gc.plugins.module_utils._listings import Image
    images = [Image({'id': 'sha256:aa', 'repoTags': ['docker.io/library/busybox:1.36'], 'size': '5'}),
              Image({'id': 'sha256:bb', 'repoTags': ['docker.io/calico/node:v3.27'], 'size': '7'}),
              Image({'id': 'sha256:cc', 'repoTags': ['quay.io/calico/node:v3.27'], 'size': '9'})]
    plan = _plan_images.plan_images(images, [], sandbox_image='registry.k8s.io/pause:3.9',
                                    exclude=['busybox:*', 'calico/*'])
    kept = dict((i['id'], i['reason']) for i in plan.keep)
    assert kept == {'sha256:aa': "excluded by pattern 'busybox:*'", 'sha256:bb': "excluded by pattern 'calico/*'"}
    assert [i['id'] for i in plan.remove] == ['sha256:cc']


# -- issue 16: the kubelet's rules, phase 2 and 3 --------------------------------------------

def _sb(sid, uid, state='SANDBOX_NOTREADY', created=0, namespace='feas', name='web'):
    return Sandbox({'id': sid, 'metadata': {'name': name, 'uid': uid, 'namespace': namespace},
                    'state': state, 'createdAt': str(created * SEC)})


def _ct(cid, pod_id, name='app', state='CONTAINER_EXITED', created=0, attempt=0, image='docker.io/feas/app:1'):
    return Container({'id': cid, 'podSandboxId': pod_id, 'metadata': {'name': name, 'attempt': attempt},
                      'state': state, 'createdAt': str(created * SEC), 'image': {'image': image}})


def test_pod_aware_sandboxes_newest_of_a_live_pod_stays_older_ones_go():
    old, new = _sb('s-old', 'u1', created=1), _sb('s-new', 'u1', created=2)
    lone = _sb('s-lone', 'u2', created=3, name='lone')
    tracked = {'u1': (True, '/k/pods/u1'), 'u2': (False, '/k/pods/u2')}
    pods = _node.build_pods([old, new, lone], [], lambda uid: tracked[uid])
    plan = _plan.plan_sandboxes([old, new, lone], [], 3600 * SEC, 600, pods=pods)
    assert reasons(plan.keep) == {
        's-new': 'NotReady, but the newest sandbox of live pod feas/web (the kubelet still tracks it (/k/pods/u1 exists))'}
    assert reasons(plan.remove)['s-old'] == 'older sandbox of live pod feas/web (newest: s-new), created 59m59s ago (sandbox_min_age 10m)'
    assert reasons(plan.remove)['s-lone'].startswith('NotReady, pod feas/lone is not live (its newest sandbox s-lone is '
                                                     'NotReady, the kubelet does not track it (no /k/pods/u2))')


def test_pod_aware_sandbox_holding_a_container_that_stays_is_kept():
    s = _sb('s1', 'u1')
    old = _sb('s0', 'u1', created=-10)
    pods = _node.build_pods([old, s], [_ct('c0', 's0')], lambda uid: (True, '/k/pods/' + uid))
    plan = _plan.plan_sandboxes([old, s], [_ct('c0', 's0')], 3600 * SEC, 600, pods=pods)
    assert reasons(plan.keep)['s0'] == 'NotReady but holds container app (c0, exited), which stays'
    # a container phase 1 removes does not hold its sandbox: rmp takes it along
    plan = _plan.plan_sandboxes([old, s], [_ct('c0', 's0')], 3600 * SEC, 600, pods=pods, leaving=['c0'])
    assert plan.ids == ['s0']


@pytest.mark.parametrize('namespaces, exclude, reason', [
    (['feas'], [], "namespace 'kube-system' is not in namespaces"),
    ([], ['kube-*'], "namespace 'kube-system' excluded by pattern 'kube-*'"),
])
def test_namespace_filters_apply_to_containers_in_both_modes(namespaces, exclude, reason):
    s = _sb('s1', 'u1', namespace='kube-system')
    c = _ct('c1', 's1')
    pods = _node.build_pods([s], [c])
    for pod_aware in (True, False):
        plan = _plan.plan_containers([c], 3600 * SEC, pods=pods, namespaces=namespaces, exclude_namespaces=exclude,
                                     pod_aware=pod_aware)
        assert plan.ids == [] and reasons(plan.keep) == {'c1': reason}


def _img(iid, tags=(), digests=(), pinned=False):
    return Image({'id': iid, 'repoTags': list(tags), 'repoDigests': list(digests), 'size': '1', 'pinned': pinned})


@pytest.mark.parametrize('pattern, ref, kept', [
    ('busybox', 'docker.io/library/busybox:1.36', True),
    ('busybox', 'docker.io/library/busybox@sha256:aa', True),
    ('busybox', 'docker.io/library/busyboxx:1', False),
    ('docker.io/feas/app:*', 'docker.io/feas/app@sha256:bb', True),
    ('feas/app:*', 'docker.io/feas/app@sha256:bb', True),
    ('feas/app:1', 'docker.io/feas/app@sha256:bb', False),
    ('quay.io/x/y', 'quay.io/x/y:v2', True),
    ('*/pause', 'registry.k8s.io/pause:3.9', True),
])
def test_image_exclude_repository_and_digest_forms(pattern, ref, kept):
    key = 'repoDigests' if '@' in ref else 'repoTags'
    image = _img('sha256:1', **{'digests' if key == 'repoDigests' else 'tags': [ref]})
    plan = _plan_images.plan_images([image], [], 'docker.io/feas/pause:1', exclude=[pattern])
    assert (plan.ids == []) == kept
    if kept:
        assert reasons(plan.keep) == {'sha256:1': 'excluded by pattern %r' % pattern}
        assert plan.warnings == []
    else:
        assert plan.warnings == ["image_exclude pattern %r matches no image on this node (a pattern is matched against "
                                 "tags, digests and ids; one without tag or digest, such as busybox, matches every tag "
                                 "and digest of its repository)" % pattern]


def test_an_image_volume_of_a_container_that_stays_is_in_use():
    vol = _img('sha256:v', tags=['docker.io/feas/vol:1'])
    own = _img('sha256:o', tags=['docker.io/feas/app:1'])
    c = _ct('c1', 's1', state='CONTAINER_RUNNING')
    plan = _plan_images.plan_images([vol, own], [c], 'docker.io/feas/pause:1', image_volumes={'c1': ['docker.io/feas/vol:1']})
    assert plan.ids == []
    assert reasons(plan.keep)['sha256:v'] == 'mounted as an image volume by container app (c1, running)'
    # once the container is removed in the run, its image volume is free
    plan = _plan_images.plan_images([vol, own], [c], 'docker.io/feas/pause:1', image_volumes={'c1': ['docker.io/feas/vol:1']},
                                    removed_containers=['c1'])
    assert sorted(plan.ids) == ['sha256:o', 'sha256:v']


def test_sandbox_images_are_a_list_and_another_pinned_image_is_not_the_sandbox_image():
    old = _img('sha256:p1', tags=['registry.k8s.io/pause:3.9'])
    new = _img('sha256:p2', tags=['registry.k8s.io/pause:3.10'])
    other = _img('sha256:x', tags=['docker.io/feas/extra:1'], pinned=True)
    plan = _plan_images.plan_images([old, new, other], [], ['registry.k8s.io/pause:3.9', 'registry.k8s.io/pause:3.10'])
    assert plan.ids == []
    assert reasons(plan.keep)['sha256:p1'] == 'sandbox (pause) image of the runtime (registry.k8s.io/pause:3.9)'
    # nothing named, another image pinned: the look-alikes stay (the seed removed them), with the warning
    plan = _plan_images.plan_images([old, new, other], [])
    assert plan.ids == [] and reasons(plan.keep)['sha256:p1'].startswith('looks like a sandbox (pause) image')
    assert plan.warnings and plan.warnings[0].startswith('the runtime did not report its sandbox (pause) image')
    # a pinned look-alike (containerd 2.x pins its own): the other look-alikes still stay, silently
    pinned_pause = _img('sha256:p3', tags=['registry.k8s.io/pause:3.11'], pinned=True)
    plan = _plan_images.plan_images([old, pinned_pause], [])
    assert plan.ids == [] and plan.warnings == []


# -- issue 25, item 5: the newest instance stays also when it is only created ----------------

def _created_retry(version=V16, age_s=7200):
    """DERIVED: a created-never-started attempt 1 of exit1 in the Ready pod feas-c, newer than exit1."""
    data = fixture_json(version, 'ps-a.json')
    retry = copy.deepcopy([c for c in data['containers'] if c['metadata']['name'] == 'exit1'][0])
    retry['id'] = 'c' * 64
    retry['metadata']['attempt'] = 1
    retry['state'] = 'CONTAINER_CREATED'
    retry['createdAt'] = str(int(retry['createdAt']) + 30 * SEC)
    data['containers'].append(retry)
    return data


def test_the_newest_instance_only_created_in_a_live_pod_stays_past_created_min_age():
    data = _created_retry()
    now = newest_ns(V16) + 7200 * SEC
    plan = _plan.plan_containers(containers(V16, data), now, 3600, pods=pods_of(V16, data))
    kept = reasons(plan.keep)
    assert kept['c' * 64].startswith('newest instance of exit1 (attempt 1, created, never started) in live pod '
                                     'feas/feas-c (its newest sandbox fa9989b9e08be is Ready): the kubelet keeps')
    assert reasons(plan.remove)[IDS[V16]['exit1']] == (
        'older instance of exit1 (attempt 0, exited; attempt 1, ccccccccccccc, created, is kept) in live pod '
        'feas/feas-c')
    # pod_aware: false keeps today's rule: the created container goes past created_min_age
    blunt = _plan.plan_containers(containers(V16, data), now, 3600)
    assert reasons(blunt.remove)['c' * 64].startswith('created but never started, ')


def test_a_created_container_in_a_pod_that_is_not_live_goes_past_created_min_age():
    data = fixture_json(V16, 'ps-a.json')
    for raw in data['containers']:
        if raw['metadata']['name'] == 'exit0':          # pod feas-a: NotReady, untracked
            raw['state'] = 'CONTAINER_CREATED'
    now = newest_ns(V16) + 7200 * SEC
    plan = _plan.plan_containers(containers(V16, data), now, 3600, pods=pods_of(V16, data))
    assert reasons(plan.remove)[IDS[V16]['exit0']].startswith('created but never started, ')
    assert ', and pod feas/feas-a is not live: ' in reasons(plan.remove)[IDS[V16]['exit0']]
    young = _plan.plan_containers(containers(V16, data), now, 10 ** 6, pods=pods_of(V16, data))
    assert reasons(young.keep)[IDS[V16]['exit0']].endswith('younger than created_min_age 11d13h46m40s')
