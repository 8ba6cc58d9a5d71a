# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""_node: pods by sandbox uid, liveness (Ready newest sandbox, kubelet root), the newest exited
instance per container name, what the run forgets, and the one batched crictl inspect."""

import json

from ansible_collections.nodemaint.image_gc.plugins.module_utils import _node
from ansible_collections.nodemaint.image_gc.plugins.module_utils._cri import Crictl
from ansible_collections.nodemaint.image_gc.plugins.module_utils._listings import Container, Sandbox

from tests.unit.image_gc_testlib import CRICTL_PREFIX, IDS, V16, StubRunner, fixture_json, inspect_reply, json_reply, node_discovery

SEC = 10 ** 9


def sandbox(sid, uid, state='SANDBOX_READY', created=0, attempt=0, name='web', namespace='feas'):
    return Sandbox({'id': sid, 'metadata': {'name': name, 'uid': uid, 'namespace': namespace, 'attempt': attempt},
                    'state': state, 'createdAt': str(created * SEC)})


def container(cid, pod_id, name='app', state='CONTAINER_EXITED', created=0, attempt=0):
    return Container({'id': cid, 'podSandboxId': pod_id, 'metadata': {'name': name, 'attempt': attempt},
                      'state': state, 'createdAt': str(created * SEC), 'image': {'image': 'docker.io/feas/app:1'}})


def test_sandboxes_with_one_uid_are_one_pod_newest_first():
    old = sandbox('s-old', 'u1', 'SANDBOX_NOTREADY', created=10, attempt=0)
    new = sandbox('s-new', 'u1', 'SANDBOX_READY', created=20, attempt=1)
    other = sandbox('s-other', 'u2', 'SANDBOX_NOTREADY', created=30)
    c1 = container('c1', 's-old')
    c2 = container('c2', 's-new', state='CONTAINER_RUNNING')
    pods = _node.build_pods([old, other, new], [c1, c2])
    assert pods['s-old'] is pods['s-new'] and pods['s-other'] is not pods['s-new']
    pod = pods['s-old']
    assert [s.id for s in pod.sandboxes] == ['s-new', 's-old'] and pod.newest.id == 's-new'
    assert sorted(c.id for c in pod.containers) == ['c1', 'c2']
    assert pod.label == 'feas/web'
    assert pod.liveness() == (True, 'its newest sandbox s-new is Ready')
    assert pods['s-other'].liveness() == (False, 'its newest sandbox s-other is NotReady, no kubelet root is known to ask')


def test_a_sandbox_without_uid_is_a_pod_of_its_own_and_an_orphan_container_too():
    a = sandbox('s-a', '', 'SANDBOX_NOTREADY')
    b = sandbox('s-b', '', 'SANDBOX_NOTREADY')
    orphan = container('c-orphan', 's-gone')
    pods = _node.build_pods([a, b], [orphan])
    assert pods['s-a'] is not pods['s-b']
    assert pods['s-a'].liveness() == (False, 'its newest sandbox s-a is NotReady, it has no uid to ask the kubelet '
                                             'root about')
    assert pods['s-gone'].sandboxes == [] and pods['s-gone'].liveness()[1].startswith('its sandbox is gone')


def test_the_kubelet_root_makes_a_notready_pod_live(tmp_path):
    (tmp_path / 'pods' / 'u-tracked').mkdir(parents=True)
    node = _node.Node(None, lambda: 0, kubelet_root=str(tmp_path))
    pods = _node.build_pods([sandbox('s1', 'u-tracked', 'SANDBOX_NOTREADY'), sandbox('s2', 'u-gone', 'SANDBOX_NOTREADY')],
                            [], node.tracked)
    assert pods['s1'].liveness() == (True, 'the kubelet still tracks it (%s/pods/u-tracked exists)' % tmp_path)
    assert pods['s2'].liveness() == (False, 'its newest sandbox s2 is NotReady, the kubelet does not track it '
                                            '(no %s/pods/u-gone)' % tmp_path)
    # no root set and none to try: no live root, every pod counts as live
    assert _node.Node(None, lambda: 0).tracked('u-tracked') == (_node.ASSUMED, None)


def test_newest_exited_instance_per_name_init_containers_included():
    s = sandbox('s1', 'u1')
    cs = [container('a0', 's1', 'app', created=1, attempt=0), container('a1', 's1', 'app', created=2, attempt=1),
          container('a2', 's1', 'app', 'CONTAINER_RUNNING', created=3, attempt=2),
          container('i0', 's1', 'init', created=0)]
    newest = _node.build_pods([s], cs)['s1'].newest_exited()
    assert dict((k, v.id) for k, v in newest.items()) == {'app': 'a1', 'init': 'i0'}


def _node_over(version=V16, volumes=None):
    runner = StubRunner({
        'crictl ps --all --output json': json_reply(version, fixture_json(version, 'ps-a.json')),
        'crictl pods --output json': json_reply(version, fixture_json(version, 'pods.json')),
        'crictl inspect': lambda argv, r: inspect_reply(version, argv[argv.index('json') + 1:], volumes),
    })
    runtime = node_discovery().resolve(timeout=120)
    return _node.Node(Crictl(runtime, runner, 100), lambda: 1000 * SEC), runner


def test_each_kind_is_listed_once_and_a_removed_sandbox_takes_its_containers():
    node, runner = _node_over()
    assert len(node.current('containers')) == 3 and len(node.current('sandboxes')) == 3
    node.current('containers')
    assert len(runner.calls) == 2
    node.forget('sandboxes', [IDS[V16]['feas-a']])
    assert sorted(node.removed['containers']) == [IDS[V16]['exit0']]
    assert IDS[V16]['exit0'] not in [c.id for c in node.current('containers')]
    assert node.first_listing == {'containers': 3, 'sandboxes': 3}
    assert sorted(node.seen) == sorted(IDS[V16][n] for n in ('exit0', 'exit1', 'sleeper'))


def test_image_volumes_come_from_one_batched_quiet_inspect_and_none_without_containers():
    node, runner = _node_over(volumes={IDS[V16]['sleeper']: ['docker.io/feas/vol:1']})
    containers = node.current('containers')
    found = node.image_volumes(containers)
    assert found[IDS[V16]['sleeper']] == ['docker.io/feas/vol:1'] and found[IDS[V16]['exit0']] == []
    node.image_volumes(containers)
    inspects = runner.ran('crictl', 'inspect')
    # --quiet: without the verbose info (the runtime spec), which the status's mounts do not need
    assert inspects == [CRICTL_PREFIX + ['inspect', '--quiet', '--output', 'json'] + sorted(c.id for c in containers)]


def test_image_volumes_are_inspected_in_bounded_batches(monkeypatch):
    node, runner = _node_over(volumes={IDS[V16]['sleeper']: ['docker.io/feas/vol:1']})
    containers = node.current('containers')
    monkeypatch.setattr(node.crictl, 'INSPECT_BATCH', 2)
    found = node.image_volumes(containers)
    assert found[IDS[V16]['sleeper']] == ['docker.io/feas/vol:1'] and set(found) == {c.id for c in containers}
    batches = [argv[argv.index('json') + 1:] for argv in runner.ran('crictl', 'inspect')]
    assert [len(b) for b in batches] == [2] * (len(containers) // 2) + [1] * (len(containers) % 2)
    assert [i for b in batches for i in b] == sorted(c.id for c in containers)
    empty, runner = _node_over()
    assert empty.image_volumes([]) == {} and runner.calls == []


# crictl 1.37's message when one container of ``crictl inspect ID...`` went (the whole command fails)
GONE_ERR = ('time="2026-12-04T19:50:01Z" level=fatal msg="get the status of containers: get container status: rpc '
            'error: code = NotFound desc = an error occurred when try to find container \\"%s\\": not found"\n')


def _node_with_a_container_gone(gone, other_error=None):
    """A node whose ``crictl inspect`` fails while it is asked about ``gone`` (a container the
    listing no longer has: the kubelet's GC removed it after the run's listing)."""
    from tests.unit.testlib.fixtures import Reply
    node, runner = _node_over(volumes={IDS[V16]['sleeper']: ['docker.io/feas/vol:1']})

    def inspect(argv, r):
        asked = argv[argv.index('json') + 1:]
        if other_error:
            return Reply(1, '', other_error)
        if gone in asked:
            return Reply(1, '', GONE_ERR % gone)
        return inspect_reply(V16, asked, {IDS[V16]['sleeper']: ['docker.io/feas/vol:1']})
    runner.on('crictl inspect', inspect)
    return node, runner


def test_a_container_gone_between_the_listing_and_the_inspect_is_asked_without():
    """Found against the real kubelet under disk pressure (its container GC every 10 s): a
    container listed by the run and removed before ``crictl inspect`` failed the whole images
    phase. It is left out and the batch asked again; it mounts nothing any more."""
    node, runner = _node_with_a_container_gone('c-gone')
    ids = sorted(c.id for c in node.current('containers'))
    found = node.crictl.image_volumes(ids + ['c-gone'])
    assert found[IDS[V16]['sleeper']] == ['docker.io/feas/vol:1'] and found['c-gone'] == []
    assert set(found) == set(ids) | {'c-gone'}
    batches = [argv[argv.index('json') + 1:] for argv in runner.ran('crictl', 'inspect')]
    assert batches == [ids + ['c-gone'], ids]


def test_an_inspect_that_fails_otherwise_still_fails():
    """Not a race: a "not found" while every container asked is still listed, or another error,
    fails as before (no image is removed while the image volumes are unknown)."""
    import pytest
    from ansible_collections.nodemaint.image_gc.plugins.module_utils._common import CommandError
    node, runner = _node_with_a_container_gone('c-gone')
    ids = sorted(c.id for c in node.current('containers'))
    listed_but_not_found = GONE_ERR % ids[0]
    for err in (listed_but_not_found, 'time="x" level=fatal msg="connect: connection refused"\n'):
        node, runner = _node_with_a_container_gone('c-gone', other_error=err)
        with pytest.raises(CommandError) as exc:
            node.crictl.image_volumes(ids)
        assert 'no image is removed while the image volumes of the containers are unknown' in str(exc.value)
        assert len(runner.ran('crictl', 'inspect')) == 1


def test_one_container_inspect_prints_an_object_not_a_list():
    node, runner = _node_over(volumes={IDS[V16]['sleeper']: ['docker.io/feas/vol:1']})
    sleeper = [c for c in node.current('containers') if c.name == 'sleeper']
    printed = []
    real_run = runner.run

    def run(argv, timeout=None):
        result = real_run(argv, timeout)
        printed.append(result.stdout)
        return result
    runner.run = run
    assert node.image_volumes(sleeper) == {IDS[V16]['sleeper']: ['docker.io/feas/vol:1']}
    assert isinstance(json.loads(printed[-1]), dict)


# -- issue 25, item 5: the kubelet's evict units (pod uid label, container name) ---------------

def labelled(cid, pod_id, uid, name='app', state='CONTAINER_EXITED', created=0, attempt=0):
    c = container(cid, pod_id, name=name, state=state, created=created, attempt=attempt)
    c.pod_uid = uid
    return c


def test_a_container_whose_sandbox_is_not_listed_joins_the_pod_of_its_uid_label():
    live = sandbox('s-new', 'u1', 'SANDBOX_READY', created=20, attempt=1)
    older = labelled('c-old', 's-gone', 'u1', created=5, attempt=0)
    newer = labelled('c-new', 's-gone', 'u1', created=6, attempt=1)
    pods = _node.build_pods([live], [older, newer])
    assert pods['s-gone'] is pods['s-new']
    assert pods['s-new'].newest_exited()['app'].id == 'c-new'
    from ansible_collections.nodemaint.image_gc.plugins.module_utils import _plan
    plan = _plan.plan_containers([older, newer], 100 * SEC, 0, pods)
    assert plan.ids == ['c-old']
    assert [i['id'] for i in plan.keep] == ['c-new']


def test_containers_of_an_unlisted_sandbox_are_one_pod_the_kubelet_root_is_asked_about(tmp_path):
    (tmp_path / 'pods' / 'u-tracked').mkdir(parents=True)
    node = _node.Node(None, lambda: 0, kubelet_root=str(tmp_path))
    a = labelled('c-a', 's-gone', 'u-tracked', created=1, attempt=0)
    b = labelled('c-b', 's-gone', 'u-tracked', created=2, attempt=1)
    unlabelled = container('c-x', 's-gone-too')
    pods = _node.build_pods([], [a, b, unlabelled], node.tracked)
    pod = pods['s-gone']
    assert pod.uid == 'u-tracked' and pod.sandboxes == []
    assert pod.liveness() == (True, 'the kubelet still tracks it (%s/pods/u-tracked exists)' % tmp_path)
    assert pods['s-gone-too'].uid == '' and pods['s-gone-too'] is not pod     # no label: a pod of its own


def test_the_uid_label_is_read_from_the_listing():
    raw = {'id': 'c', 'podSandboxId': 's', 'metadata': {'name': 'app'}, 'state': 'CONTAINER_EXITED',
           'labels': {'io.kubernetes.pod.uid': 'u-9'}}
    assert Container(raw).pod_uid == 'u-9'


def test_newest_instances_counts_created_ones():
    s = sandbox('s1', 'u1')
    exited = container('c0', 's1', created=1, attempt=0)
    created = container('c1', 's1', state='CONTAINER_CREATED', created=2, attempt=1)
    running = container('c2', 's1', name='side', state='CONTAINER_RUNNING', created=3)
    pod = _node.build_pods([s], [exited, created, running])['s1']
    assert {k: c.id for k, c in pod.newest_instances(('CONTAINER_EXITED', 'CONTAINER_CREATED')).items()} == {
        'app': 'c1'}
    assert {k: c.id for k, c in pod.newest_exited().items()} == {'app': 'c0'}


def test_a_re_listing_gives_back_the_known_object_of_every_unchanged_container_and_a_new_one_if_changed():
    """Issue 26: the containers are listed again before each image removal batch; an unchanged
    container is the object the node already holds, so a 10,000-container node is held once, not
    once per listing (the parse makes a Container of each entry, then keeps the known one). A
    container whose state changed, or a new one, is the new listing's. Fails when every listing
    makes new objects."""
    import copy
    data = fixture_json(V16, 'ps-a.json')
    later = copy.deepcopy(data)
    running = [c for c in later['containers'] if c['state'] == 'CONTAINER_RUNNING'][0]
    running['state'] = 'CONTAINER_EXITED'
    new = copy.deepcopy(running)
    new['id'] = 'f' * 64
    later['containers'].append(new)
    replies = [json_reply(V16, data), json_reply(V16, later)]
    runner = StubRunner({'crictl ps --all --output json': lambda argv, r: replies.pop(0)})
    node = _node.Node(Crictl(node_discovery().resolve(timeout=120), runner, 100), lambda: 1000 * SEC)
    first = {c.id: c for c in node.list('containers')}
    second = {c.id: c for c in node.list('containers')}
    assert sorted(second) == sorted(list(first) + ['f' * 64])
    for cid, c in second.items():
        if cid in (running['id'], 'f' * 64):
            assert c is not first.get(cid) and c.state == 'CONTAINER_EXITED'
        else:
            assert c is first[cid]
    assert node.seen[running['id']][0].state == 'CONTAINER_EXITED'
