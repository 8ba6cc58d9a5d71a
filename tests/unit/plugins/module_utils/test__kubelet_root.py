# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Finding the kubelet root without being told (issue 25): the running kubelet's --root-dir from
/proc/<pid>/cmdline (fake /proc trees), k3s/RKE2's --kubelet-arg, the distribution defaults, the
setting; and the check that a candidate is the live root (every Ready sandbox's uid has pods/<uid>)."""

import pytest

from ansible_collections.nodemaint.image_gc.plugins.module_utils import _node
from ansible_collections.nodemaint.image_gc.plugins.module_utils._listings import Sandbox
from ansible_collections.nodemaint.image_gc.plugins.module_utils._discovery import Discovery
from ansible_collections.nodemaint.image_gc.plugins.module_utils._kubelet_root import (
    KUBELET_ROOTS, kubelet_root_of, read_cmdlines)

from tests.unit.image_gc_testlib import fake_discovery


def sandbox(sid, uid, state):
    return Sandbox({'id': sid, 'metadata': {'name': 'web', 'uid': uid, 'namespace': 'feas', 'attempt': 0},
                    'state': state, 'createdAt': '0'})


def fake_proc(tmp_path, *argvs):
    """A /proc with one process per argv (pids 100, 101, ...), plus noise: a kernel thread (empty
    cmdline), a process that vanished (no cmdline file), a non-pid entry."""
    proc = tmp_path / 'proc'
    proc.mkdir()
    for n, argv in enumerate(argvs):
        (proc / str(100 + n)).mkdir()
        (proc / str(100 + n) / 'cmdline').write_bytes(b'\0'.join(a.encode() for a in argv) + b'\0')
    (proc / '2').mkdir()
    (proc / '2' / 'cmdline').write_bytes(b'')
    (proc / '3').mkdir()
    (proc / 'self').mkdir()
    return str(proc)


@pytest.mark.parametrize('argv, expected', [
    (['/usr/bin/kubelet', '--config=/etc/k0s/kubelet.yaml', '--root-dir=/var/lib/k0s/kubelet'],
     ('/var/lib/k0s/kubelet', '--root-dir')),
    (['kubelet', '--root-dir', '/data/kubelet', '--v=2'], ('/data/kubelet', '--root-dir')),
    (['/usr/bin/kubelet', '--root-dir=/a', '--root-dir=/b'], ('/b', '--root-dir')),        # the last one wins, as in pflag
    (['/usr/bin/kubelet', '--config', '/var/lib/kubelet/config.yaml'], ('/var/lib/kubelet', 'no --root-dir: the default')),
    (['/var/lib/rancher/rke2/data/v1.31/bin/kubelet', '--root-dir=/srv/kubelet'], ('/srv/kubelet', '--root-dir')),
    (['/usr/local/bin/k3s', 'server', '--kubelet-arg=root-dir=/k3s/kubelet'], ('/k3s/kubelet', '--kubelet-arg root-dir')),
    (['/usr/local/bin/k3s', 'agent', '--kubelet-arg', 'root-dir=/k3s/kubelet'], ('/k3s/kubelet', '--kubelet-arg root-dir')),
    (['/usr/local/bin/k3s server', '--kubelet-arg', '--root-dir=/k3s/kubelet'], ('/k3s/kubelet', '--kubelet-arg root-dir')),
    (['/usr/local/bin/rke2', 'server', '--kubelet-arg=max-pods=200', '--kubelet-arg=root-dir=/rke2/kubelet'],
     ('/rke2/kubelet', '--kubelet-arg root-dir')),
    (['/usr/local/bin/k3s', 'server', '--kubelet-arg=max-pods=200'], ('/var/lib/kubelet', 'no --kubelet-arg root-dir: the default')),
    (['/usr/local/bin/k3s', 'kubectl', 'get', 'pods'], None),          # not a server/agent: runs no kubelet
    (['/usr/local/bin/k3s', 'crictl', 'ps', '--kubelet-arg=root-dir=/x'], None),
    (['/usr/bin/containerd', '--root-dir=/nope'], None),
    (['/usr/bin/python3', '/tmp/kubelet', '--root-dir=/nope'], None),   # a script named kubelet is an argument, not the program
    ([], None),
])
def test_kubelet_root_of_a_command_line(argv, expected):
    assert kubelet_root_of(argv) == expected


def test_read_cmdlines_skips_kernel_threads_and_vanished_processes(tmp_path):
    proc = fake_proc(tmp_path, ['/usr/bin/kubelet', '--root-dir=/r'], ['sleep', '1'])
    assert read_cmdlines(proc) == [(100, ['/usr/bin/kubelet', '--root-dir=/r']), (101, ['sleep', '1'])]
    assert read_cmdlines(str(tmp_path / 'no-proc')) == []


def test_candidates_running_kubelet_first_then_the_distribution_defaults(tmp_path):
    proc = fake_proc(tmp_path, ['/usr/bin/containerd'], ['/usr/bin/kubelet', '--root-dir=/var/lib/k0s/kubelet'])
    tried = []
    got = fake_discovery(proc=proc).kubelet_root_candidates(None, tried)
    assert got == [('/var/lib/k0s/kubelet', 'the running kubelet (pid 101, --root-dir)'),
                   (KUBELET_ROOTS[0], 'well-known kubelet root'),
                   (KUBELET_ROOTS[1], 'well-known kubelet root')]
    assert tried == ['%s (%s)' % c for c in got]


def test_a_running_kubelet_on_the_default_root_is_named_once(tmp_path):
    proc = fake_proc(tmp_path, ['/usr/bin/kubelet', '--config=/var/lib/kubelet/config.yaml'])
    got = fake_discovery(proc=proc).kubelet_root_candidates(None, [])
    assert got[0] == ('/var/lib/kubelet', 'the running kubelet (pid 100, no --root-dir: the default)')
    assert [candidate[0] for candidate in got] == ['/var/lib/kubelet', KUBELET_ROOTS[1]]


def test_k3s_kubelet_arg_root_dir(tmp_path):
    proc = fake_proc(tmp_path, ['/usr/local/bin/k3s', 'agent', '--kubelet-arg', 'root-dir=/mnt/kubelet'])
    got = fake_discovery(proc=proc).kubelet_root_candidates(None, [])
    assert got[0] == ('/mnt/kubelet', 'the running k3s (pid 100, --kubelet-arg root-dir)')


def test_the_setting_wins_and_is_the_only_candidate(tmp_path):
    proc = fake_proc(tmp_path, ['/usr/bin/kubelet', '--root-dir=/elsewhere'])
    d = fake_discovery(proc=proc, dirs={'/set/root'})
    assert d.kubelet_root_candidates('/set/root', []) == [('/set/root', 'option kubelet_root')]


def test_the_default_discovery_reads_the_machines_proc():
    assert Discovery().proc == '/proc'


# -- which candidate is the live root -----------------------------------------------------------

def _roots(tmp_path, **pods):
    """Directories <tmp>/<root>/pods/<uid> for each root=[uids]; returns {root: path}."""
    out = {}
    for root, uids in pods.items():
        base = tmp_path / root
        (base / 'pods').mkdir(parents=True)
        for uid in uids:
            (base / 'pods' / uid).mkdir()
        out[root] = str(base)
    return out


def _node_over(sandboxes, candidates, explicit=None):
    crictl = type('C', (), {'sandboxes': lambda self: list(sandboxes), 'containers': lambda self, reuse=None: []})()
    return _node.Node(crictl, lambda: 0, kubelet_root=explicit, kubelet_candidates=candidates)


def test_the_live_root_is_the_one_every_ready_sandbox_has_a_directory_in(tmp_path):
    r = _roots(tmp_path, stale=['u-old'], live=['u-ready', 'u-done'])
    sbs = [sandbox('s1', 'u-ready', 'SANDBOX_READY'), sandbox('s2', 'u-done', 'SANDBOX_NOTREADY'),
           sandbox('s3', 'u-gone', 'SANDBOX_NOTREADY')]
    node = _node_over(sbs, [(r['stale'], 'well-known kubelet root'), (r['live'], 'the running kubelet (pid 7, --root-dir)')])
    pods = node.pods()
    assert node.kubelet_root == r['live']
    assert node.kubelet_root_source.startswith('the running kubelet (pid 7, --root-dir); live: ')
    assert pods['s2'].liveness() == (True, 'the kubelet still tracks it (%s/pods/u-done exists)' % r['live'])
    assert pods['s3'].live is False
    assert node.no_live_root is None


def test_a_root_with_no_pod_of_the_node_is_not_live(tmp_path):
    """/var/lib/kubelet on a node whose kubelet runs elsewhere (it makes device-plugins/ there whatever
    --root-dir says): no sandbox's pod has a directory in it, even when no sandbox is Ready."""
    r = _roots(tmp_path, default=[])
    sbs = [sandbox('s1', 'u-a', 'SANDBOX_NOTREADY'), sandbox('s2', 'u-b', 'SANDBOX_NOTREADY')]
    node = _node_over(sbs, [(r['default'], 'well-known kubelet root')])
    pods = node.pods()
    assert node.kubelet_root is None
    assert 'no sandbox\'s pod has a directory there' in node.no_live_root
    # every pod is live: its newest containers and sandbox stay
    assert pods['s1'].liveness() == (True, 'no live kubelet root was found, so every pod counts as live '
                                           '(set kubelet_root to the kubelet\'s --root-dir)')


def test_a_root_missing_a_ready_sandboxs_pod_is_not_live(tmp_path):
    r = _roots(tmp_path, other=['u-a'])
    sbs = [sandbox('s1', 'u-a', 'SANDBOX_NOTREADY'), sandbox('s2', 'u-b', 'SANDBOX_READY')]
    node = _node_over(sbs, [(r['other'], 'well-known kubelet root')])
    node.pods()
    assert node.kubelet_root is None
    assert 'the Ready sandbox s2 has no pods/u-b there' in node.no_live_root


def test_no_candidate_at_all_every_pod_is_live():
    node = _node_over([sandbox('s1', 'u-a', 'SANDBOX_NOTREADY')], [])
    pods = node.pods()
    assert pods['s1'].live is True
    assert node.no_live_root == 'no kubelet root to try'


def test_the_explicit_root_is_used_without_the_check(tmp_path):
    r = _roots(tmp_path, set=[])
    node = _node_over([sandbox('s1', 'u-a', 'SANDBOX_READY'), sandbox('s2', 'u-b', 'SANDBOX_NOTREADY')], [],
                      explicit=r['set'])
    pods = node.pods()
    assert node.kubelet_root == r['set'] and node.no_live_root is None
    assert pods['s2'].live is False
