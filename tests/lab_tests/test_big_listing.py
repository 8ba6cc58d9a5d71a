"""Phase 1 on a node whose container listing is bigger than one gRPC message.

crictl's CRI client receives at most 16 MiB (k8s.io/cri-client ``maxMsgSize``) and containerd sends
at most ``[grpc] max_send_message_size`` (16 MiB by default): a listing of kubelet-made containers
takes about 850 bytes each, so ``crictl ps -a`` fails with ResourceExhausted from about 19,000
containers on (docs/performance.md). The lab's containerd is set to send at most 64 KiB, so that a
few hundred containers exceed it, and the collection lists them in parts (per state, then per pod
sandbox): every one of them is removed but the newest instance in each pod (the kubelet keeps the
newest instance of each container of a live pod, created-never-started included), and the
container that runs and its image are kept.
"""

import importlib
import uuid

import pytest

from tests.lab_tests.ansible_play import EXCLUDE, FRESH_IMAGES, run_tasks, runtime_args, runtime_state, state_args
from tests.lab.lab import config_toml

S = importlib.import_module('tests.lab.scenario')
img = importlib.import_module('tests.lab.images')

LIMIT = 64 * 1024
PODS, PER_POD = 6, 50          # 50 containers of ~850 bytes fit one message of 64 KiB; 300 do not


def kubelet_like(lab, image, pods, per_pod):
    """Created containers with the labels and annotations the kubelet sets, ``per_pod`` in each of
    ``pods`` pod sandboxes."""
    c = lab.client
    ids = []
    for p in range(pods):
        name = 'web-frontend-7d9f8c6b5d-%05x' % p
        uid = str(uuid.uuid4())
        cfg = c.sandbox_config(name, namespace='production', uid=uid, labels={
            'io.kubernetes.pod.name': name, 'io.kubernetes.pod.namespace': 'production', 'io.kubernetes.pod.uid': uid,
            'app': 'web-frontend', 'pod-template-hash': '7d9f8c6b5d'})
        pod = c.run_pod_sandbox(cfg)
        for i in range(per_pod):
            config = c.container_config('web-frontend', image, ['/bin/busybox', 'true'], labels={
                'io.kubernetes.container.name': 'web-frontend', 'io.kubernetes.pod.name': name,
                'io.kubernetes.pod.namespace': 'production', 'io.kubernetes.pod.uid': uid}, annotations={
                'io.kubernetes.container.hash': '9e5b8a3f', 'io.kubernetes.container.restartCount': str(i),
                'io.kubernetes.container.terminationMessagePath': '/dev/termination-log',
                'io.kubernetes.container.terminationMessagePolicy': 'File',
                'io.kubernetes.pod.terminationGracePeriod': '30',
                'io.kubernetes.container.ports': '[{"name":"http","containerPort":8080,"protocol":"TCP"}]'})
            config.metadata.attempt = i
            ids.append(c.create_container(pod, config, cfg))
    return ids


def _configure(lab, max_send):
    with open(lab.config_path, 'w') as handle:
        handle.write(config_toml(lab.base, lab.sandbox_image, lab.version[0], grpc_max_send_message_size=max_send))
    lab.restart()


@pytest.fixture
def small_messages(lab):
    S.reset(lab)
    _configure(lab, LIMIT)
    try:
        yield lab
    finally:
        _configure(lab, None)
        S.reset(lab)


def test_a_listing_bigger_than_a_grpc_message_is_read_in_parts(small_messages):
    lab = small_messages
    web = img.build('registry.example.com/team/web-frontend:v1.24.3')
    busy = img.build('docker.io/feas/bigrun:1')
    S.import_images(lab, [img.build(S.SANDBOX_IMAGE), web, busy])
    created = kubelet_like(lab, web.name, PODS, PER_POD)
    pod, cfg = S.run_pod(lab, 'sleeper-pod')
    sleeper = S.run_container(lab, pod, cfg, 'sleeper', busy.name, ['/bin/busybox', 'sleep', '3600'])
    whole = lab.crictl('ps', '-a', '-o', 'json')
    assert whole.returncode != 0 and 'ResourceExhausted' in whole.stderr, whole.stderr[-500:]   # the limit bites

    args = dict(runtime_args(lab), **state_args(lab))
    args.update(FRESH_IMAGES, image_exclude=EXCLUDE, created_min_age='0s', sandboxes=False, content=False)
    res = run_tasks(lab, [('prune', 'nodemaint.image_gc.prune', args)])
    result = res['prune']
    assert not result.get('failed') and result['failed_phases'] == [], result.get('msg') or result
    newest = [created[(p + 1) * PER_POD - 1] for p in range(PODS)]     # the highest attempt of each pod
    assert sorted(c['id'] for c in result['containers']) == sorted(set(created) - set(newest))
    kept = dict((i['id'], i['reason']) for i in result['images_kept'])
    assert kept[busy.image_id].startswith('in use by container sleeper'), kept
    assert kept[web.image_id].startswith('in use by container web-frontend'), kept
    _configure(lab, None)
    left = runtime_state(lab)
    assert sorted(left['containers']) == sorted(newest + [sleeper])
    assert busy.image_id in left['images'] and web.image_id in left['images']
