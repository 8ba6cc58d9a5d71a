# Over 300 lines: many cases of one subject, the kubelet's rules of issue 16 on the real containerd, one test a rule.
"""Never remove what the kubelet still needs (issue 16): the pod-aware rules on the real
containerd of the lab, through the real crictl, with the engine run in-process as the prune
module runs it. Each test runs check mode first and then the real run, and checks that both
planned the same removals with the same reasons (``plan_then_run``).

Pods are built as the kubelet builds them (tests/lab/pods.py): sandbox metadata uid, container
attempts, init containers, restartPolicy Never pods, image volumes (containerd >= 2.1), pinning
(>= 1.7), a lab kubelet root with pods/<uid> directories.
"""

import re
import sys

import pytest

from tests import lab as L
from tests.lab_tests.ansible_play import collections_path, runtime_args, runtime_state, state_args
from tests.lab import pods as P

if collections_path() not in sys.path:            # the collection as ansible_collections.nodemaint.image_gc
    sys.path.insert(0, collections_path())

from ansible_collections.nodemaint.image_gc.plugins.module_utils._engine import Engine  # noqa: E402

pytestmark = pytest.mark.matrix

PHASES = ('containers', 'sandboxes', 'images')


@pytest.fixture
def clean(lab):
    L.reset(lab)
    return lab


def _settings(lab, **extra):
    # the lab's objects are seconds old: no minimum age applies here, and every unused image may go
    # (image_unused_for 0s): what stays, stays for the kubelet's rules, not for a recent use
    settings = dict(runtime_args(lab), image_record_path=state_args(lab)['image_record_path'],
                    sandbox_min_age='0s', image_min_age='0s', image_unused_for='0s')
    settings.update(extra)
    return settings


def _by_id(items):
    return dict((i['id'], i['reason']) for i in items)


def _same_plan(items):
    """{id: reason} with the ages in a reason blanked: check mode runs a second or so earlier."""
    return dict((i, re.sub(r'created \S+ ago', 'created _ ago', r)) for i, r in _by_id(items).items())


# A kubelet root candidate found from a running kubelet: in CI another test process's lab kubelet
# (tests/lab/kubelet.py) may start or stop between check mode and the real run, and the warning
# that lists the candidates tried then names it in one run and not in the other.
_OTHER_KUBELET = re.compile(r"[^ (;]+ \(the running \S+ \(pid \d+, [^)]*\)\): [^;)]*(; )?")


def _this_labs_warnings(run):
    """The run's warnings without the candidates taken from running kubelets (see _OTHER_KUBELET)."""
    return [_OTHER_KUBELET.sub('', w) for w in run['warnings']]


def plan_then_run(lab, phases=PHASES, **extra):
    """Check mode, then the real run, over the same state: {phase: real result}, and both plans
    must remove the same objects for the same reasons."""
    check = Engine(_settings(lab, **extra), phases).run(check_mode=True)
    before = runtime_state(lab)
    real = Engine(_settings(lab, **extra), phases).run()
    checked = dict((r['phase'], r) for r in check['phases'])
    out = dict((r['phase'], r) for r in real['phases'])
    for phase, result in out.items():
        assert result['status'] == checked[phase]['status'], (phase, result.get('error'), checked[phase].get('error'))
        assert _same_plan(checked[phase]['removed']) == _same_plan(result['removed']), phase
        assert _same_plan(checked[phase]['kept']) == _same_plan(result['kept']), phase
    assert _this_labs_warnings(check) == _this_labs_warnings(real)
    out['before'] = before
    out['after'] = runtime_state(lab)
    out['run'] = real
    return out


def _gone(out, kind, ident):
    return ident in out['before'][kind] and ident not in out['after'][kind]


def _stays(out, kind, ident):
    return ident in out['before'][kind] and ident in out['after'][kind]


def _notready_pod_with_exited(lab, name, namespace='feas', image=None):
    """A pod whose only sandbox is NotReady, holding an exited container (the kubelet stopped it)."""
    pod = P.pod(lab, name, namespace=namespace)
    cid = P.container(lab, pod['id'], 'app', state=P.EXITED, image=image)
    lab.client.stop_pod_sandbox(pod['id'])
    return pod, cid


# -- phase 1: the newest exited instance of each container of a live pod ---------------------

def test_exited_init_container_of_a_running_pod_is_kept_with_its_image(clean):
    lab = clean
    d = P.init_done(lab)
    init = d['containers']['init']['id']
    out = plan_then_run(lab)
    kept = _by_id(out['containers']['kept'])
    assert kept[init].startswith('newest exited instance of init (attempt 0) in live pod feas/init-done '
                                 '(its newest sandbox '), kept[init]
    assert _stays(out, 'containers', init)
    image = d['images']['init']['id']
    assert _by_id(out['images']['kept'])[image].startswith('in use by container init (')
    assert _stays(out, 'images', image)


def test_newest_dead_instance_is_kept_and_older_ones_removed(clean):
    lab = clean
    d = P.crashloop(lab, last=P.RUNNING, attempts=3)
    newest, older = d['newest_exited'], d['older_exited']
    assert len(older) == 1
    out = plan_then_run(lab)
    assert _by_id(out['containers']['kept'])[newest].startswith('newest exited instance of app (attempt 1) in live pod')
    assert _by_id(out['containers']['removed'])[older[0]] == (
        'older exited instance of app (attempt 0; attempt 1, %s, is kept) in live pod feas/crashloop' % newest[:13])
    assert _stays(out, 'containers', newest) and _gone(out, 'containers', older[0])
    for running in d['running']:
        assert _stays(out, 'containers', running)


def _kept_with_its_image(lab, built, name, reason):
    """The exited container ``name`` of the pods ``built`` is kept for ``reason`` (how it starts),
    and it and its image stay."""
    ident = built['containers'][name]['id']
    out = plan_then_run(lab)
    assert _by_id(out['containers']['kept'])[ident].startswith(reason)
    assert _stays(out, 'containers', ident)
    assert _stays(out, 'images', built['images'][name]['id'])


def test_first_init_container_is_kept_while_the_second_runs(clean):
    _kept_with_its_image(clean, P.init_running(clean), 'init-exited',
                         'newest exited instance of init-1 (attempt 0) in live pod')


def test_finished_container_of_a_never_pod_is_kept_while_its_sibling_runs(clean):
    _kept_with_its_image(clean, P.never_pod(clean), 'exited', 'newest exited instance of a (attempt 0) in live pod feas/never')


def test_pod_aware_false_is_the_blunt_mode(clean):
    """The seed's semantics, behind one explicit option: the init container of a running pod goes."""
    lab = clean
    d = P.init_done(lab)
    init = d['containers']['init']['id']
    out = plan_then_run(lab, pod_aware=False)
    assert _by_id(out['containers']['removed'])[init] == 'exited'
    assert _gone(out, 'containers', init) and _gone(out, 'images', d['images']['init']['id'])


# -- the kubelet root: a pod the kubelet still tracks is live ----------------------------------

def test_a_tracked_pod_keeps_its_notready_sandbox_and_containers_an_untracked_one_goes(clean):
    lab = clean
    root = P.kubelet_root(lab)
    tracked, tracked_ctr = _notready_pod_with_exited(lab, 'job-done', image=P.IMAGES['done'])
    untracked, untracked_ctr = _notready_pod_with_exited(lab, 'gone')
    P.track_pod(lab, tracked['uid'])
    out = plan_then_run(lab, kubelet_root=root)
    assert out['run']['runtime']['kubelet_root'] == root
    assert out['run']['runtime']['sources']['kubelet_root'] == 'option kubelet_root'
    why = 'the kubelet still tracks it (%s/pods/%s exists)' % (root, tracked['uid'])
    assert _by_id(out['containers']['kept'])[tracked_ctr] == (
        'newest exited instance of app (attempt 0) in live pod feas/job-done (%s): the kubelet keeps it for its '
        'status, restart count and logs' % why)
    assert _by_id(out['sandboxes']['kept'])[tracked['id']] == (
        'NotReady, but the newest sandbox of live pod feas/job-done (%s)' % why)
    assert _by_id(out['containers']['removed'])[untracked_ctr].startswith(
        'exited, and pod feas/gone is not live: its newest sandbox %s is NotReady, the kubelet does not track it'
        % untracked['id'][:13])
    assert untracked['id'] in _by_id(out['sandboxes']['removed'])
    assert _stays(out, 'pods', tracked['id']) and _stays(out, 'containers', tracked_ctr)
    assert _gone(out, 'pods', untracked['id']) and _gone(out, 'containers', untracked_ctr)
    assert _stays(out, 'images', P.ensure_images(lab, P.IMAGES['done'])[P.IMAGES['done']])


def test_without_a_live_kubelet_root_every_pod_counts_as_live_and_the_run_says_so(clean):
    """No kubelet_root and no kubelet running for this lab (issue 25): no root is live, so the pod
    keeps its newest exited container and newest sandbox, and the run says so, naming the setting."""
    lab = clean
    pod, cid = _notready_pod_with_exited(lab, 'job-done')
    out = plan_then_run(lab, kubelet_root=None)
    warned = [w for w in out['run']['warnings'] if w.startswith('no live kubelet root found (')]
    assert len(warned) == 1 and 'Set kubelet_root to the kubelet\'s --root-dir' in warned[0], out['run']['warnings']
    assert out['run']['runtime']['kubelet_root'] is None
    assert _stays(out, 'containers', cid) and _stays(out, 'pods', pod['id'])


def test_older_sandbox_of_a_live_pod_goes_its_newest_notready_one_stays(clean):
    lab = clean
    root = P.kubelet_root(lab)
    old = P.pod(lab, 'restarted', uid='uid-restarted', ready=False, attempt=0)
    new = P.pod(lab, 'restarted', uid='uid-restarted', ready=False, attempt=1)
    P.track_pod(lab, 'uid-restarted')
    out = plan_then_run(lab, kubelet_root=root)
    assert _by_id(out['sandboxes']['removed'])[old['id']].startswith(
        'older sandbox of live pod feas/restarted (newest: %s)' % new['id'][:13])
    assert _gone(out, 'pods', old['id']) and _stays(out, 'pods', new['id'])


# -- phase 3 --------------------------------------------------------------------------------

def test_an_image_volume_image_is_kept(clean):
    lab = clean
    try:
        d = P.image_volume(lab)
    except L.Unsupported as exc:
        pytest.skip(str(exc))
    volume = d['images']['volume']['id']
    out = plan_then_run(lab)
    assert _by_id(out['images']['kept'])[volume].startswith('mounted as an image volume by container app (')
    assert _stays(out, 'images', volume)


def test_namespace_filters_apply_to_phase_1(clean):
    lab = clean
    system, system_ctr = _notready_pod_with_exited(lab, 'dns', namespace='kube-system', image=P.IMAGES['done'])
    other, other_ctr = _notready_pod_with_exited(lab, 'web', namespace='feas')
    out = plan_then_run(lab, exclude_namespaces=['kube-*'])
    assert _by_id(out['containers']['kept'])[system_ctr] == "namespace 'kube-system' excluded by pattern 'kube-*'"
    assert _by_id(out['sandboxes']['kept'])[system['id']] == "namespace 'kube-system' excluded by pattern 'kube-*'"
    assert _stays(out, 'containers', system_ctr) and _stays(out, 'pods', system['id'])
    assert _gone(out, 'containers', other_ctr)
    done = P.ensure_images(lab, P.IMAGES['done'])[P.IMAGES['done']]
    assert _by_id(out['images']['kept'])[done].startswith('in use by container app (%s' % system_ctr[:13])
    # namespaces (the include list) too
    out = plan_then_run(lab, namespaces=['feas'])
    assert _by_id(out['containers']['kept'])[system_ctr] == "namespace 'kube-system' is not in namespaces"
    assert _stays(out, 'containers', system_ctr)


def test_image_exclude_forms(clean):
    lab = clean
    ids = P.ensure_images(lab, P.IMAGES['extra'], P.IMAGES['done'], P.IMAGES['crash'])
    digest_ref = lab.digest_only(P.IMAGES['extra'])
    out = plan_then_run(lab, phases=('images',),
                        image_exclude=['docker.io/feas/extra:*', 'feas/done', 'docker.io/feas/nothing'])
    kept = _by_id(out['images']['kept'])
    # repo:* also matches the digest-only form
    assert kept[ids[P.IMAGES['extra']]] == "excluded by pattern 'docker.io/feas/extra:*'", digest_ref
    # a pattern without tag or digest matches every tag and digest of its (fully qualified) repository
    assert kept[ids[P.IMAGES['done']]] == "excluded by pattern 'feas/done'"
    assert _by_id(out['images']['removed'])[ids[P.IMAGES['crash']]] == 'unused'
    assert ("image_exclude pattern 'docker.io/feas/nothing' matches no image on this node"
            in ' '.join(out['images']['warnings']))
    assert _stays(out, 'images', ids[P.IMAGES['extra']]) and _stays(out, 'images', ids[P.IMAGES['done']])


def test_pause_image_is_kept_while_another_image_is_pinned(clean):
    """After a sandbox image change the old pause (still used by the sandboxes made before) is not
    pinned; another image is. Before, "some image is pinned" stood for "the sandbox image is pinned",
    and the runtime was not asked for its sandbox image.

    A runtime that names its sandbox image (1.7: the new one) keeps it, whatever else is pinned; the
    old pause then is no sandbox image and used by no container: it may go, as the kubelet's own
    image GC lets it (a sandbox made from now on uses the new one). A runtime that names none (2.x)
    leaves the sandbox image unknown: every pause look-alike stays, the old one included."""
    lab = clean
    with P.sandbox_image_switched(lab) as d:
        try:
            P.pin_image(lab, P.IMAGES['extra'])
        except L.Unsupported as exc:
            pytest.skip(str(exc))
        assert not d['old']['pinned']
        out = plan_then_run(lab, phases=('images',))
        kept = _by_id(out['images']['kept'])
        if lab.reports_sandbox_image:
            assert kept[d['new']['id']] in ('sandbox (pause) image of the runtime (%s)' % d['new']['ref'],
                                            'pinned by the runtime'), kept
            assert _stays(out, 'images', d['new']['id'])
        else:
            assert kept[d['old']['id']].startswith('looks like a sandbox (pause) image')
            assert _stays(out, 'images', d['old']['id'])


def test_the_sandbox_image_setting_adds_to_what_the_runtime_reports(clean):
    """containerd 1.6 reports its sandbox image (the new one after a change); the setting names the
    old one: both stay. Before, the setting replaced what the runtime reported."""
    lab = clean
    with P.sandbox_image_switched(lab) as d:
        if d['new']['pinned']:
            pytest.skip('containerd %s pins its sandbox image and does not report it: the setting has nothing '
                        'to add to' % lab.version_string)
        out = plan_then_run(lab, phases=('images',), sandbox_image=d['old']['ref'])
        kept = _by_id(out['images']['kept'])
        assert kept[d['old']['id']] == 'sandbox (pause) image of the runtime (%s)' % d['old']['ref']
        assert kept[d['new']['id']] == 'sandbox (pause) image of the runtime (%s)' % d['new']['ref']
        assert _stays(out, 'images', d['old']['id']) and _stays(out, 'images', d['new']['id'])


def test_an_empty_container_listing_with_ready_sandboxes_removes_no_image(clean):
    lab = clean
    P.pod(lab, 'starting')                      # Ready, no container yet
    ids = P.ensure_images(lab, P.IMAGES['extra'])
    out = plan_then_run(lab, phases=('images',))
    error = out['images']['error']
    assert error.startswith('crictl ps --all listed no container while 1 sandbox is Ready (starting): the '
                            'container listing is not trusted and no image is removed. Endpoints used: runtime %s, '
                            'image %s' % (lab.endpoint, lab.endpoint)), error
    assert out['images']['removed'] == []
    assert _stays(out, 'images', ids[P.IMAGES['extra']])
