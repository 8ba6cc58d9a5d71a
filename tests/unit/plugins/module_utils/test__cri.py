# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Over 300 lines: many cases of one subject, reading crictl/ctr output and their errors, batched removal.
"""_cri: listing and parsing the recorded crictl/ctr outputs, error messages, batched removal."""

import json
from types import SimpleNamespace

import pytest

from ansible_collections.nodemaint.image_gc.plugins.module_utils._common import CommandError, ImageGCError
from ansible_collections.nodemaint.image_gc.plugins.module_utils._cri import (
    Crictl, Ctr, describe_failure, error_lines, parse_content_ls)
from ansible_collections.nodemaint.image_gc.plugins.module_utils._common import CommandResult

from tests.unit.image_gc_testlib import (
    CRICTL_PREFIX, CTR_PREFIX, IDS, IMG_BUSYBOX1, IMG_BUSYBOX2, IMG_OLD_BUSYBOX1, IMG_PAUSE, IMG_UNUSED3, V16, V21,
    VERSIONS, Reply, StubRunner, crictl_warning, fixture_text, json_reply, node_discovery, recorded_reply)


@pytest.fixture
def runtime():
    return node_discovery().resolve(need_ctr=True, timeout=120)


def crictl_for(version, runtime, batch_size=100, **extra):
    table = {
        'crictl ps --all --output json': recorded_reply(version, 'ps-a.json'),
        'crictl pods --output json': recorded_reply(version, 'pods.json'),
        'crictl images --output json': recorded_reply(version, 'images.json'),
        'crictl imagefsinfo --output json': recorded_reply(version, 'imagefsinfo.json'),
        'crictl info --output json': recorded_reply(version, 'info.json'),
    }
    table.update(extra)
    runner = StubRunner(table)
    return Crictl(runtime, runner, batch_size), runner


# -- listings --------------------------------------------------------------------------------

# The stderr of crictl 1.37.0 against containerd 1.6.20 with [grpc] max_send_message_size = 65536
# and 120 kubelet-like containers (tests/lab_tests/test_big_listing.py builds the same on the lab).
TOO_BIG_ERR = (
    'time="2026-12-02T09:23:02Z" level=warning msg="Config \\"/etc/crictl.yaml\\" does not exist, trying next: '
    '\\"/var/cache/nodemaint-image-gc/crictl-v1.37.0/crictl.yaml\\""\n'
    'E1202 09:23:02.099683   10581 remote_runtime.go:594] "ListContainers with filter from runtime service failed" '
    'err="rpc error: code = ResourceExhausted desc = grpc: trying to send message larger than max (101844 vs. 65536)" '
    'filter=""\n'
    'time="2026-12-02T09:23:02Z" level=error msg="listing containers: list containers: call list containers RPC: '
    'rpc error: code = ResourceExhausted desc = grpc: trying to send message larger than max (101844 vs. 65536)"\n')


def _ps(version, keep):
    """A ``crictl ps`` reply with the recorded containers that ``keep(raw container)`` selects."""
    data = json.loads(fixture_text(version, 'ps-a.json'))
    data['containers'] = [c for c in data['containers'] if keep(c)]
    return Reply(0, json.dumps(data), crictl_warning(version))


@pytest.mark.parametrize('version', VERSIONS)
def test_a_listing_too_big_for_one_message_is_read_per_state_then_per_pod(version, runtime):
    ids = IDS[version]
    too_big = Reply(1, '', TOO_BIG_ERR)
    crictl, runner = crictl_for(version, runtime, **{
        'crictl ps --all --output json': too_big,
        'crictl ps --all --state created --output json': _ps(version, lambda c: c['state'] == 'CONTAINER_CREATED'),
        'crictl ps --all --state running --output json': _ps(version, lambda c: c['state'] == 'CONTAINER_RUNNING'),
        'crictl ps --all --state exited --output json': too_big,
        'crictl ps --all --state exited --pod %s --output json' % ids['feas-a']: _ps(
            version, lambda c: c['state'] == 'CONTAINER_EXITED' and c['podSandboxId'] == ids['feas-a']),
        'crictl ps --all --state exited --pod': _ps(
            version, lambda c: False),
        'crictl ps --all --state exited --pod %s --output json' % ids['feas-c']: _ps(
            version, lambda c: c['state'] == 'CONTAINER_EXITED' and c['podSandboxId'] == ids['feas-c']),
        'crictl ps --all --state unknown --output json': _ps(version, lambda c: False),
    })
    containers = crictl.containers()
    assert sorted(c.id for c in containers) == sorted([ids['exit0'], ids['exit1'], ids['sleeper']])
    asked = [argv[len(CRICTL_PREFIX):] for argv in runner.calls]
    assert asked[:4] == [['ps', '--all', '--output', 'json'], ['ps', '--all', '--state', 'created', '--output', 'json'],
                         ['ps', '--all', '--state', 'running', '--output', 'json'],
                         ['ps', '--all', '--state', 'exited', '--output', 'json']]
    assert asked[4] == ['pods', '--output', 'json']
    pods = sorted(p['id'] for p in json.loads(fixture_text(version, 'pods.json'))['items'])
    assert asked[5:-1] == [['ps', '--all', '--state', 'exited', '--pod', p, '--output', 'json'] for p in pods]
    assert asked[-1] == ['ps', '--all', '--state', 'unknown', '--output', 'json']


def test_other_listing_errors_are_not_read_in_parts(runtime):
    crictl, runner = crictl_for(V21, runtime, **{'crictl ps --all --output json': Reply(
        1, '', 'level=fatal msg="listing containers: rpc error: code = Unavailable desc = connection refused"')})
    with pytest.raises(CommandError, match='Unavailable'):
        crictl.containers()
    assert len(runner.calls) == 1


@pytest.fixture(params=VERSIONS)
def ps(request, runtime):
    """crictl.containers() over the recorded ``crictl ps`` of each version: the containers, by name too,
    the stub runner, the recorded ids and the raw listing."""
    crictl, runner = crictl_for(request.param, runtime)
    containers = crictl.containers()
    return SimpleNamespace(containers=containers, by_name=dict((c.name, c) for c in containers), runner=runner,
                           ids=IDS[request.param],
                           raw=json.loads(fixture_text(request.param, 'ps-a.json'))['containers'])


def test_containers_are_listed_with_one_crictl_ps(ps):
    assert ps.runner.calls == [CRICTL_PREFIX + ['ps', '--all', '--output', 'json']]


def test_the_listing_waits_the_crictl_timeout_plus_30_s(ps):
    assert ps.runner.timeouts == [150]      # crictl --timeout 120s, plus 30 s for the process


def test_every_listed_container_is_parsed(ps):
    assert sorted(ps.by_name) == ['exit0', 'exit1', 'sleeper']


def test_an_exited_container_has_its_id_pod_state_image_and_image_ref(ps):
    exit0 = ps.by_name['exit0']
    assert exit0.id == ps.ids['exit0']
    assert exit0.pod_id == ps.ids['feas-a']
    assert exit0.state == 'CONTAINER_EXITED'
    assert exit0.image == 'docker.io/feas/busybox:1'
    assert exit0.image_ref == IMG_OLD_BUSYBOX1


def test_each_container_belongs_to_its_own_sandbox(ps):
    assert ps.by_name['exit1'].pod_id == ps.ids['feas-c']


def test_a_running_container_has_its_state_and_image_ref(ps):
    assert ps.by_name['sleeper'].state == 'CONTAINER_RUNNING'
    assert ps.by_name['sleeper'].image_ref == IMG_BUSYBOX2


def test_created_is_kept_in_nanoseconds_and_shown_in_seconds(ps):
    assert [c.created_ns for c in ps.containers] == [int(r['createdAt']) for r in ps.raw]
    assert ps.by_name['sleeper'].to_dict()['created_at'] == int(ps.raw[1]['createdAt']) // 10 ** 9


def test_a_container_without_pod_labels_has_no_pod_name_and_attempt_0(ps):
    assert ps.by_name['sleeper'].pod_name == ''
    assert ps.by_name['sleeper'].attempt == 0


@pytest.mark.parametrize('version', VERSIONS)
def test_sandboxes_parsed_from_pods_json(version, runtime):
    crictl, runner = crictl_for(version, runtime)
    sandboxes = crictl.sandboxes()
    assert runner.calls == [CRICTL_PREFIX + ['pods', '--output', 'json']]
    states = dict((s.name, s.state) for s in sandboxes)
    assert states == {'feas-a': 'SANDBOX_NOTREADY', 'feas-b': 'SANDBOX_READY', 'feas-c': 'SANDBOX_READY'}
    feas_a = [s for s in sandboxes if s.name == 'feas-a'][0]
    assert feas_a.id == IDS[version]['feas-a']
    assert feas_a.namespace == 'feas'
    notready = fixture_text(version, 'pods-notready-q.txt').split()
    assert [s.id for s in sandboxes if s.state == 'SANDBOX_NOTREADY'] == notready


@pytest.mark.parametrize('version, pinned', [(V16, []), (V21, [IMG_PAUSE])])
def test_images_parsed_from_images_json(version, pinned, runtime):
    crictl, runner = crictl_for(version, runtime)
    images = dict((i.id, i) for i in crictl.images())
    assert runner.calls == [CRICTL_PREFIX + ['images', '--output', 'json']]
    assert sorted(images) == sorted([IMG_PAUSE, IMG_OLD_BUSYBOX1, IMG_BUSYBOX1, IMG_BUSYBOX2, IMG_UNUSED3])
    assert [i for i in images if images[i].pinned] == pinned
    assert images[IMG_OLD_BUSYBOX1].tags == []
    assert images[IMG_OLD_BUSYBOX1].digests == [
        'docker.io/feas/busybox@sha256:ee7e54988a503809bd2fe0f5c7e1fbe8b0b5c16423a8c4842fa454fde542c256']
    assert images[IMG_BUSYBOX1].tags == ['docker.io/feas/busybox:1']
    assert images[IMG_PAUSE].size == 1028899          # "size" is a JSON string in crictl's output
    assert images[IMG_UNUSED3].to_dict() == {'id': IMG_UNUSED3, 'repo_tags': ['docker.io/feas/unused:3'],
                                             'repo_digests': [], 'size': 1028854, 'pinned': False}


@pytest.mark.parametrize('version, used', [(V16, '0'), (V21, '10182656')])
def test_imagefsinfo_and_info(version, used, runtime):
    crictl, runner = crictl_for(version, runtime)
    info = crictl.imagefsinfo()
    fs = info['status']['imageFilesystems'][0]
    assert fs['usedBytes']['value'] == used
    assert fs['fsId']['mountpoint'] == '/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs'
    assert 'config' in crictl.info()
    assert runner.calls == [CRICTL_PREFIX + ['imagefsinfo', '--output', 'json'], CRICTL_PREFIX + ['info', '--output', 'json']]


def test_sandbox_image_from_info_on_16_and_none_on_2x(runtime):
    assert crictl_for(V16, runtime)[0].sandbox_image() == 'docker.io/feas/pause:1'
    assert crictl_for(V21, runtime)[0].sandbox_image() is None


# -- ctr content ls --------------------------------------------------------------------------

@pytest.mark.parametrize('version', VERSIONS)
def test_parse_content_ls(version):
    blobs = parse_content_ls(fixture_text(version, 'ctr-content-ls.txt'))
    assert len(blobs) == 15
    by_digest = dict((b.digest, b) for b in blobs)
    manifest = by_digest['sha256:62c01172f5bbb10791ca9224f0a8033f5cd8e3b2f9886924c39db7308a8eab19']  # pause:1
    assert manifest.size == 422
    assert manifest.labels == {
        'containerd.io/gc.ref.content.config': IMG_PAUSE,
        'containerd.io/gc.ref.content.l.0': 'sha256:f51d6ffc6841a4945a2c9f5919c130cc077317b4d1f87750cc78e070b738bb4b'}
    layer = by_digest['sha256:f51d6ffc6841a4945a2c9f5919c130cc077317b4d1f87750cc78e070b738bb4b']
    assert layer.size == 1028000
    assert layer.labels == {
        'containerd.io/uncompressed': 'sha256:e4a72aa201560961bb31398f9e15c383d7e350eedd7dbbd4bad4dadc38f754bf'}
    assert by_digest[IMG_PAUSE].size == 419
    expected_age = 10 if version == V16 else 12
    assert manifest.age == expected_age
    # the re-tagged busybox:1 was imported last, so it is the youngest
    assert by_digest['sha256:561acb74d5d4cbcd7b80ed65c21ffac177077699b3d7ab6ef8758c6bf460c8c3'].age == min(
        b.age for b in blobs)


def test_parse_content_ls_blob_without_labels_and_coarse_age():
    # DERIVED from a ctr-content-ls.txt line: labels dropped, age made coarse.
    text = ('DIGEST\t\t\t\t\t\t\t\t\tSIZE\tAGE\t\tLABELS\n'
            'sha256:1ab96848ab69e6eb011afbe64d90e0bc9938633a08c31692f323b36d82c5dcf6\t1.028MB\tAbout an hour\t\n')
    blob = parse_content_ls(text)[0]
    assert (blob.size, blob.age, blob.labels) == (1028000, 3600, {})


@pytest.mark.parametrize('text', ['', 'not a table\n', 'DIGEST\tSIZE\nsha256:x\t1B\n',
                                  'DIGEST\tSIZE\tAGE\tLABELS\nsha256:x\tbig\t7 seconds\t\n',
                                  'DIGEST\tSIZE\tAGE\tLABELS\nsha256:x\t1B\tyesterday\t\n'])
def test_parse_content_ls_rejects_garbage(text):
    with pytest.raises(ImageGCError, match='ctr content ls'):
        parse_content_ls(text)


def test_ctr_content_and_prune_argv(runtime):
    runner = StubRunner({'ctr content ls': recorded_reply(V21, 'ctr-content-ls.txt'),
                         'ctr content prune references --dry': recorded_reply(V21, 'ctr-prune-dry'),
                         'ctr content prune references': recorded_reply(V21, 'ctr-prune')})
    ctr = Ctr(runtime, runner, 'k8s.io')
    assert len(ctr.content()) == 15
    ctr.prune_references(dry_run=True)
    ctr.prune_references()
    assert runner.calls == [CTR_PREFIX + ['content', 'ls'],
                            CTR_PREFIX + ['content', 'prune', 'references', '--dry'],
                            CTR_PREFIX + ['content', 'prune', 'references']]


# -- errors ----------------------------------------------------------------------------------

def test_error_lines_ignores_warnings_and_debug():
    assert error_lines(crictl_warning(V16)) == []
    assert error_lines(fixture_text(V21, 'ctr-prune-dry.err')) == []   # level=debug only


def test_error_lines_extracts_fatal_with_unescaped_quotes():
    lines = error_lines(fixture_text(V16, 'rm-running.err'))
    assert lines == ['container "76e0cb7f55ba8cc754ba3588bf74e1f1a4bb78c5b01f25f20c4e339b9060349c" is running, '
                     'please stop it first']


@pytest.mark.parametrize('version', VERSIONS)
def test_listing_with_warning_on_stderr_is_not_a_failure(version, runtime):
    crictl, runner = crictl_for(version, runtime)
    assert 'level=warning' in runner.table[('crictl', 'ps', '--all', '--output', 'json')][0].err
    assert len(crictl.containers()) == 3


@pytest.mark.parametrize('stdout', ['', '{"containers": [', 'Version:  0.1.0\n', '[]', '"x"'])
def test_malformed_json_is_a_clear_error(stdout, runtime):
    crictl, runner = crictl_for(V16, runtime, **{'crictl ps --all --output json': Reply(0, stdout, '')})
    with pytest.raises(CommandError) as exc:
        crictl.containers()
    message = str(exc.value)
    assert message.startswith('crictl ps --all --output json printed malformed JSON')
    assert 'Is /usr/local/bin/crictl really crictl?' in message
    assert exc.value.result.stdout == stdout


def test_unexpected_json_shape_is_a_clear_error(runtime):
    # DERIVED: ps-a.json with the "id" of each container dropped.
    data = json.loads(fixture_text(V16, 'ps-a.json'))
    for c in data['containers']:
        del c['id']
    crictl = crictl_for(V16, runtime, **{'crictl ps --all --output json': json_reply(V16, data)})[0]
    with pytest.raises(ImageGCError, match='crictl ps: unexpected JSON shape'):
        crictl.containers()


@pytest.mark.parametrize('version', VERSIONS)
def test_crictl_no_socket_fatal_is_surfaced(version, runtime):
    reply = recorded_reply(version, 'crictl-nosocket')
    assert reply.rc == 1
    crictl = crictl_for(version, runtime, **{'crictl ps --all --output json': reply})[0]
    with pytest.raises(CommandError) as exc:
        crictl.containers()
    message = str(exc.value)
    assert message.startswith('crictl ps --all --output json failed: validate service connection')
    assert 'dial unix /var/lib/lab/nope.sock: connect: no such file or directory' in message
    assert 'runtime socket does not answer' in message
    assert 'runtime_endpoint' in message
    assert 'level=warning' not in message
    assert exc.value.to_dict()['rc'] == 1


@pytest.mark.parametrize('version, detail', [
    (V16, 'ctr: failed to dial "/var/lib/lab/nope.sock"'),
    (V21, 'ctr: cannot access socket /var/lib/lab/nope.sock'),
])
def test_ctr_no_socket_is_surfaced(version, detail, runtime):
    runner = StubRunner({'ctr content ls': recorded_reply(version, 'ctr-nosocket')})
    with pytest.raises(CommandError) as exc:
        Ctr(runtime, runner, 'k8s.io').content()
    message = str(exc.value)
    assert message.startswith('ctr content ls failed: ' + detail)
    assert 'containerd_address' in message


def test_describe_failure_missing_binary_and_timeout():
    missing = CommandResult(['/usr/local/bin/crictl', 'ps'], 127, '', '/usr/local/bin/crictl: No such file or directory')
    assert 'crictl_path' in describe_failure(missing, 'crictl ps')
    timed_out = CommandResult(['crictl', 'ps'], 124, '', 'timed out after 150s: crictl ps')
    assert 'Raise the timeout option' in describe_failure(timed_out, 'crictl ps')
    other = CommandResult(['crictl', 'ps'], 2, '', '')
    assert describe_failure(other, 'crictl ps') == 'crictl ps failed (rc=2): exit code 2, no message'


# -- batched removal -------------------------------------------------------------------------

FIVE = ['sha256:%064d' % n for n in range(1, 6)]


def test_batching_five_ids_by_two_is_three_calls(runtime):
    crictl, runner = crictl_for(V16, runtime, batch_size=2, **{'crictl rmi': Reply(0, '', crictl_warning(V16))})
    outcome = crictl.remove_images(FIVE)
    assert runner.calls == [CRICTL_PREFIX + ['rmi', FIVE[0], FIVE[1]],
                            CRICTL_PREFIX + ['rmi', FIVE[2], FIVE[3]],
                            CRICTL_PREFIX + ['rmi', FIVE[4]]]
    assert outcome.commands == runner.calls
    assert outcome.removed == FIVE and outcome.failed == {} and outcome.gone == []


def test_no_ids_runs_nothing(runtime):
    crictl, runner = crictl_for(V16, runtime)
    outcome = crictl.remove_containers([])
    assert runner.calls == [] and outcome.removed == []


@pytest.mark.parametrize('batch_size', [0, -1])
def test_batch_size_below_one_rejected(batch_size, runtime):
    with pytest.raises(ImageGCError, match='batch_size must be 1 or more'):
        Crictl(runtime, StubRunner(), batch_size)


def test_partial_failure_one_id_fails_others_removed(runtime):
    ids = IDS[V16]
    victims = [ids['exit1'], ids['exit0'], ids['sleeper']]
    # DERIVED from rm-running.err (recorded for a running container of the error-case run, id
    # 76e0cb7f...): the same fatal line, for the sleeper of the normal recording.
    err = fixture_text(V16, 'rm-running.err').replace(
        '76e0cb7f55ba8cc754ba3588bf74e1f1a4bb78c5b01f25f20c4e339b9060349c', ids['sleeper'])
    # DERIVED: after the batch, ps -a lists only the sleeper (exit0 and exit1 were removed).
    after = json.loads(fixture_text(V16, 'ps-a.json'))
    after['containers'] = [c for c in after['containers'] if c['id'] == ids['sleeper']]
    crictl, runner = crictl_for(V16, runtime, batch_size=100, **{
        'crictl rm': Reply(1, '%s\n%s\n' % (ids['exit1'], ids['exit0']), err),
        'crictl ps --all --output json': json_reply(V16, after)})
    outcome = crictl.remove_containers(victims)
    assert runner.calls == [CRICTL_PREFIX + ['rm'] + victims, CRICTL_PREFIX + ['ps', '--all', '--output', 'json']]
    assert outcome.removed == [ids['exit1'], ids['exit0']]
    assert outcome.failed == {ids['sleeper']: 'container "%s" is running, please stop it first' % ids['sleeper']}
    assert outcome.gone == []


def test_partial_failure_in_one_batch_does_not_stop_the_next(runtime):
    # batch 1 fails for FIVE[1] (re-listing shows it still there), batch 2 and 3 succeed
    err = crictl_warning(V16) + 'time="2026-11-28T00:11:00Z" level=fatal msg="error of removing image \\"%s\\": ' \
        'image is in use"\n' % FIVE[1]     # DERIVED: fatal line in crictl's format (see rm-running.err)
    listing = {'images': [{'id': FIVE[1], 'repoTags': [], 'repoDigests': [], 'size': '1', 'pinned': False}]}
    crictl, runner = crictl_for(V16, runtime, batch_size=2, **{
        'crictl rmi': [Reply(1, '', err), Reply(0, '', crictl_warning(V16))],
        'crictl images --output json': json_reply(V16, listing)})
    outcome = crictl.remove_images(FIVE)
    assert [c[len(CRICTL_PREFIX):] for c in runner.calls] == [
        ['rmi', FIVE[0], FIVE[1]], ['images', '--output', 'json'], ['rmi', FIVE[2], FIVE[3]], ['rmi', FIVE[4]]]
    assert outcome.removed == [FIVE[0], FIVE[2], FIVE[3], FIVE[4]]
    assert outcome.failed == {FIVE[1]: 'error of removing image "%s": image is in use' % FIVE[1]}


@pytest.mark.parametrize('version', VERSIONS)
def test_item_already_gone_is_reported_gone_not_failed(version, runtime):
    ids = IDS[version]
    # DERIVED from rm-missing.err (recorded as `crictl rm deadbeef`): the id replaced by exit0's.
    reply = recorded_reply(version, 'rm-missing')
    assert reply.rc == 1
    err = reply.err.replace('deadbeef', ids['exit0'])
    after = json.loads(fixture_text(version, 'ps-a.json'))
    after['containers'] = [c for c in after['containers'] if c['state'] != 'CONTAINER_EXITED']
    crictl, runner = crictl_for(version, runtime, **{
        'crictl rm': Reply(1, ids['exit1'] + '\n', err),
        'crictl ps --all --output json': json_reply(version, after)})
    outcome = crictl.remove_containers([ids['exit1'], ids['exit0']])
    assert outcome.removed == [ids['exit1']]
    assert outcome.gone == [ids['exit0']]
    assert outcome.failed == {}


def test_crictl_missing_rc_127_fails_every_item_naming_crictl_path(runtime):
    crictl, runner = crictl_for(V16, runtime, batch_size=2, **{
        'crictl rmp': Reply(127, '', '/usr/local/bin/crictl: No such file or directory')})
    outcome = crictl.remove_sandboxes(FIVE[:3])
    assert len(runner.calls) == 2                  # no re-listing with a missing binary
    assert sorted(outcome.failed) == FIVE[:3]
    for message in outcome.failed.values():
        assert 'crictl_path' in message
        assert '/usr/local/bin/crictl: No such file or directory' in message
    assert outcome.removed == [] and outcome.gone == []


def test_failed_batch_and_failed_relisting_fails_the_batch(runtime):
    crictl, runner = crictl_for(V16, runtime, **{
        'crictl rmp': Reply(1, '', fixture_text(V16, 'rmp-ready.err')),
        'crictl pods --output json': recorded_reply(V16, 'crictl-nosocket')})
    outcome = crictl.remove_sandboxes([IDS[V16]['feas-a']])
    message = outcome.failed[IDS[V16]['feas-a']]
    assert message.startswith('crictl rmp failed and the state could not be re-read')
    assert 'runtime socket does not answer' in message


def test_rmp_of_ready_sandbox_recorded_failure(runtime):
    # rmp-ready recorded for feas-b of the error-case run; the re-listing still shows it.
    feas_b = '8801e609c88a05d8fc64e31573b3085cf8378ce213c74470c0d6622c3169ee2e'
    listing = {'items': [{'id': feas_b, 'metadata': {'name': 'feas-b', 'namespace': 'feas'},
                          'state': 'SANDBOX_READY', 'createdAt': '1795824050135083787'}]}
    crictl, runner = crictl_for(V16, runtime, **{
        'crictl rmp': recorded_reply(V16, 'rmp-ready'), 'crictl pods --output json': json_reply(V16, listing)})
    outcome = crictl.remove_sandboxes([feas_b])
    assert outcome.failed == {feas_b: 'pod sandbox "%s" is running, please stop it first' % feas_b}


# -- the container listing parsed slim (issue 26: memory at 10,000 containers) ------------------

def _kubelet_like_ps(version, n):
    """A ``crictl ps`` JSON text of N containers shaped like the recorded ones, each with the labels
    and annotations the kubelet sets (DERIVED from ps-a.json)."""
    entry = json.loads(fixture_text(version, 'ps-a.json'))['containers'][0]
    out = []
    for i in range(n):
        c = json.loads(json.dumps(entry))
        c['id'] = '%064x' % i
        c['metadata'] = {'name': 'app-%05d' % i, 'attempt': i % 3}
        c['labels'] = {'io.kubernetes.container.name': 'app-%05d' % i, 'io.kubernetes.pod.name': 'pod-%d' % (i // 10),
                       'io.kubernetes.pod.namespace': 'ns', 'io.kubernetes.pod.uid': 'uid-%d' % (i // 10)}
        c['annotations'] = {'io.kubernetes.container.hash': '%08x' % i, 'io.kubernetes.container.restartCount': '0',
                            'io.kubernetes.container.terminationMessagePath': '/dev/termination-log',
                            'io.kubernetes.container.terminationMessagePolicy': 'File',
                            'io.kubernetes.pod.terminationGracePeriod': '30'}
        out.append(c)
    return json.dumps({'containers': out}, indent=2)


@pytest.mark.parametrize('version', VERSIONS)
def test_the_slim_parse_gives_the_same_containers_as_the_plain_parse(version, runtime):
    text = _kubelet_like_ps(version, 50) if version == V16 else fixture_text(version, 'ps-a.json')
    crictl = crictl_for(version, runtime, **{'crictl ps --all --output json': Reply(0, text, '')})[0]
    from ansible_collections.nodemaint.image_gc.plugins.module_utils._listings import Container
    plain = [Container(raw) for raw in json.loads(text)['containers']]
    slim = crictl.containers()
    fields = Container.__slots__    # every field a Container has
    assert [[getattr(c, k) for k in fields] for c in slim] == [[getattr(c, k) for k in fields] for c in plain]
    assert all(isinstance(c, Container) for c in slim)


def test_a_label_map_with_entry_like_keys_is_not_taken_for_an_entry(runtime):
    # DERIVED: labels named like an entry's keys (strings only) stay labels of their container.
    data = json.loads(_kubelet_like_ps(V16, 2))
    data['containers'][0]['labels'].update({'id': 'x', 'podSandboxId': 'y', 'io.kubernetes.pod.name': 'p'})
    crictl = crictl_for(V16, runtime, **{'crictl ps --all --output json': json_reply(V16, data)})[0]
    got = crictl.containers()
    assert [c.id for c in got] == ['%064x' % 0, '%064x' % 1]
    assert got[0].pod_name == 'p'


def test_an_entry_of_the_wrong_shape_in_the_slim_parse_is_a_clear_error(runtime):
    data = json.loads(_kubelet_like_ps(V16, 3))
    data['containers'][1]['createdAt'] = 'yesterday'
    crictl = crictl_for(V16, runtime, **{'crictl ps --all --output json': json_reply(V16, data)})[0]
    with pytest.raises(ImageGCError, match='crictl ps: unexpected JSON shape .ValueError'):
        crictl.containers()


def test_the_container_listing_is_never_held_as_parsed_dicts(runtime):
    """The parse's peak (tracemalloc) stays well under what the whole listing costs as dicts: each
    entry becomes a Container as soon as it is parsed. Fails if the listing is parsed first and
    converted after (the peak is then the dicts of every entry at once)."""
    import tracemalloc
    from ansible_collections.nodemaint.image_gc.plugins.module_utils._listings import Container
    text = _kubelet_like_ps(V16, 3000)
    crictl = crictl_for(V16, runtime, **{'crictl ps --all --output json': Reply(0, text, '')})[0]

    def peak(call):
        tracemalloc.start()
        try:
            kept = call()
            return tracemalloc.get_traced_memory()[1], kept
        finally:
            tracemalloc.stop()
    plain_peak, plain = peak(lambda: [Container(raw) for raw in json.loads(text)['containers']])
    slim_peak, slim = peak(crictl.containers)
    assert len(slim) == len(plain) == 3000
    assert slim_peak < 0.6 * plain_peak, (slim_peak, plain_peak)


def test_a_held_container_listing_is_small_one_string_for_what_containers_share(runtime):
    """A run holds the container listing (10,000 containers and more on a big node) while it spawns
    the next crictl: each Container has no __dict__, and the values containers share (sandbox,
    state, image, image ref, pod labels) are one string object each, not one per container. Fails
    with a plain class (a dict per container, a copy of every value per container)."""
    import tracemalloc
    from ansible_collections.nodemaint.image_gc.plugins.module_utils._listings import Container
    text = _kubelet_like_ps(V16, 2000)
    crictl = crictl_for(V16, runtime, **{'crictl ps --all --output json': Reply(0, text, '')})[0]
    tracemalloc.start()
    try:
        held = crictl.containers()
        size = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(held) == 2000
    assert not any(hasattr(c, '__dict__') for c in held)
    first, same_pod, other_pod = held[0], held[1], held[10]
    assert first.pod_uid == same_pod.pod_uid != other_pod.pod_uid
    for field in ('pod_id', 'state', 'image', 'image_ref', 'pod_name', 'pod_namespace', 'pod_uid'):
        assert getattr(first, field) is getattr(same_pod, field), field
    assert first.image_ref is other_pod.image_ref and first.state is other_pod.state
    # measured 355 bytes a container here; on the lab's 10,000 bare containers 3.3 MiB held, 7.3 before
    assert size < 450 * len(held), size / len(held)
