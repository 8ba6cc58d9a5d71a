# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers shared by the unit tests: recorded fixtures, a table-driven stub command runner,
a fake Discovery, and a harness to run a module's main().

The stub runner answers from the recordings in tests/fixtures/. Where a test needs an output
that was not recorded, it is derived from a recording and the derivation is said in a comment.
"""

import copy
import json
import os

from ansible_collections.nodemaint.image_gc.plugins.module_utils import _common, _engine
from ansible_collections.nodemaint.image_gc.plugins.module_utils._common import CommandResult
from ansible_collections.nodemaint.image_gc.plugins.module_utils._discovery import Discovery

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(HERE), 'fixtures')
V16 = 'crictl-1.36.0_containerd-1.6.20'
V21 = 'crictl-1.36.0_containerd-2.1.9'
VERSIONS = (V16, V21)

# The ids of the recorded scenario (README.md of each fixture dir).
IMG_PAUSE = 'sha256:24d594dff834ff76c19a30248c9cb360ee8cb5080c2114cf12716b255381c9b2'
IMG_OLD_BUSYBOX1 = 'sha256:56d86990c3456945ccf5df2654b411f27858866a45387349eb561eb83b4058dc'
IMG_BUSYBOX1 = 'sha256:7a74b3344e1e5f92dc08911366d9aaf81ec77e9ce66e5bf757de119d20ca49dd'
IMG_BUSYBOX2 = 'sha256:a01d12e59fd3a12b3a9780a2565460ffe371fec06e8621ac8a290828dce9bcd8'
IMG_UNUSED3 = 'sha256:3eec21629e5d91c14b0b65cf4976f0b1f6a1bec43c9945e85f995918adee253e'

IDS = {
    V16: {'feas-a': '84a5f9a622d31f8350162bb680a4f6f85233240760b95bc74199fa3ab14aa044',
          'feas-b': '3331e06ada7f953bf86fbcfcad514badaba18c7f5007f41f637644289e6d7c59',
          'feas-c': 'fa9989b9e08befcf6bc6c57ce6a0f7ebc30af5ecd1f82c1a7fb42fb543e76fe9',
          'exit0': 'a5bfe3435ddaa43c0ed521276458afdbcaa57ca1603574eab0edddb5dc1c5edf',
          'sleeper': 'edd9cbc33ce46b610eacb5514c65451fcde78fe5811538e4d4f2d2835d53f70c',
          'exit1': '13f0c812c8370f32440a3427a39a8bff92def7777cff7b566352ab9b8d5c07c0'},
    V21: {'feas-a': '41a3e3512381c605aea9768ff7eccaf141d45c500705ec3894f929ce1f060a34',
          'feas-b': '7e1a86d72de4869b8c8ae7764d3fb428cbf6df8bb788b2b4349217ba2e2dc7e0',
          'feas-c': 'a787849b080b5a1011edbc9385f4b9ee152e205ae5e52754f2a28b31f83c9e37',
          'exit0': 'e9b15a052bc72bea4f57b94ddb1bb81c2ec3bb9fed8d1a9dc348063dd5a4b52e',
          'sleeper': 'ed13fb5a2e99bf9eee2eb7c6135b0c0876d06ba41f50123dc0400abc242d6fcc',
          'exit1': '7f2082b37718aa649212c277781b7ae88417aece161eb5f0d6047f5bb3e3af53'},
}

# A clock two hours after the newest object of either recording: everything is "old".
NOW_NS = 1795824621571634202 + 2 * 3600 * 10 ** 9

SOCKET = '/run/containerd/containerd.sock'
CRICTL = '/usr/local/bin/crictl'
CTR = '/usr/bin/ctr'
CRICTL_PREFIX = [CRICTL, '--runtime-endpoint', 'unix://' + SOCKET, '--image-endpoint', 'unix://' + SOCKET,
                 '--timeout', '120s']
CTR_PREFIX = [CTR, '--address', SOCKET, '--namespace', 'k8s.io']


# --------------------------------------------------------------------------------------------
# Fixture files

def fixture_path(version, name):
    return os.path.join(FIXTURES, version, name)


def fixture_text(version, name):
    with open(fixture_path(version, name)) as handle:
        return handle.read()


def fixture_json(version, name):
    return json.loads(fixture_text(version, name))


class Reply(object):
    def __init__(self, rc=0, out='', err=''):
        self.rc = rc
        self.out = out
        self.err = err

    def __repr__(self):
        return 'Reply(rc=%r, out=%r, err=%r)' % (self.rc, self.out[:40], self.err[:80])


def crictl_warning(version):
    """The config-search warning every crictl stderr starts with. The README says the stderr of
    the .json/.txt listings was only this line; it is taken from the recorded rm.err."""
    return fixture_text(version, 'rm.err')


def recorded(version, stem):
    """A Reply from ``stem.{out,err,rc}``, or from the stdout-only ``stem`` (.json/.txt) file."""
    if os.path.exists(fixture_path(version, stem + '.out')):
        rc = 0
        if os.path.exists(fixture_path(version, stem + '.rc')):
            rc = int(fixture_text(version, stem + '.rc').strip())
        return Reply(rc, fixture_text(version, stem + '.out'), fixture_text(version, stem + '.err'))
    err = crictl_warning(version) if not stem.startswith('ctr-') else ''
    return Reply(0, fixture_text(version, stem), err)


def json_reply(version, data):
    return Reply(0, json.dumps(data, indent=2) + '\n', crictl_warning(version))


def derived_ps_after(version):
    """DERIVED: ps-a.json with the exited containers removed (the state after the recorded
    ``crictl rm``/``rmp``; that listing itself was not recorded)."""
    data = fixture_json(version, 'ps-a.json')
    data['containers'] = [c for c in data['containers'] if c['state'] != 'CONTAINER_EXITED']
    return data


def derived_pods_after(version):
    """DERIVED: pods.json without the NotReady feas-a (state after the recorded ``crictl rmp``)."""
    data = fixture_json(version, 'pods.json')
    data['items'] = [p for p in data['items'] if p['state'] != 'SANDBOX_NOTREADY']
    return data


def deleted_lines(version, image_ids):
    """DERIVED: ``crictl rmi ID...`` stdout, one ``Deleted: REF`` line per ref, in the format of the
    recorded rmi-inuse.out / rmi-prune.out."""
    images = dict((i['id'], i) for i in fixture_json(version, 'images.json')['images'])
    lines = []
    for image_id in image_ids:
        image = images.get(image_id, {'repoTags': [image_id], 'repoDigests': []})
        for ref in image['repoTags'] + image['repoDigests']:
            lines.append('Deleted: %s' % ref)
    return '\n'.join(lines) + '\n'


# --------------------------------------------------------------------------------------------
# The stub command runner

CRICTL_GLOBAL_WITH_VALUE = ('--runtime-endpoint', '-r', '--image-endpoint', '-i', '--timeout', '-t', '--config', '-c')
CTR_GLOBAL_WITH_VALUE = ('--address', '-a', '--namespace', '-n')


def command_key(argv):
    """``('crictl', 'ps', '--all', ...)``: the tool and its subcommand words, global options dropped."""
    args = list(argv)
    prog = os.path.basename(args.pop(0))
    if prog in ('k3s', 'microk8s') and args:
        prog = args.pop(0)
    tool = 'ctr' if prog == 'ctr' else 'crictl' if prog == 'crictl' else prog
    with_value = CRICTL_GLOBAL_WITH_VALUE if tool == 'crictl' else CTR_GLOBAL_WITH_VALUE
    rest, index = [], 0
    while index < len(args):
        if args[index] in with_value:
            index += 2
            continue
        rest.append(args[index])
        index += 1
    return (tool,) + tuple(rest)


class UnexpectedCommand(AssertionError):
    pass


class StubRunner(object):
    """``run(argv, timeout=None)`` -> CommandResult, answered from a table.

    The table maps a command key prefix (``'crictl ps --all --output json'``, ``'crictl rm'``) to
    replies: a Reply, or a callable ``(argv, runner) -> Reply``. Several replies are used in turn,
    the last one repeating. The longest matching prefix wins; an unknown command raises.
    """

    def __init__(self, table=None):
        self.table = {}
        self.history = []
        self.timeouts = []
        for key, replies in (table or {}).items():
            self.on(key, *(replies if isinstance(replies, list) else [replies]))

    def on(self, key, *replies):
        key = tuple(key.split()) if isinstance(key, str) else tuple(key)
        self.table[key] = list(replies)
        return self

    def run(self, argv, timeout=None):
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), argv
        key = command_key(argv)
        for size in range(len(key), 0, -1):
            if key[:size] in self.table:
                replies = self.table[key[:size]]
                break
        else:
            raise UnexpectedCommand('unexpected command %r (key %r)' % (argv, key))
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if callable(reply):
            reply = reply(argv, self)
        result = CommandResult(argv, reply.rc, reply.out, reply.err)
        self.history.append(result)
        self.timeouts.append(timeout)
        return result

    # -- what was run -------------------------------------------------------------------------
    @property
    def calls(self):
        return [r.argv for r in self.history]

    @property
    def keys(self):
        return [command_key(r.argv) for r in self.history]

    def ran(self, *prefix):
        return [r.argv for r in self.history if command_key(r.argv)[:len(prefix)] == prefix]

    def removals(self):
        """Every command that removes or changes something."""
        out = []
        for argv in self.calls:
            key = command_key(argv)
            if key[:2] in (('crictl', 'rm'), ('crictl', 'rmp'), ('crictl', 'rmi'), ('crictl', 'stopp')):
                out.append(argv)
            elif key[:4] == ('ctr', 'content', 'prune', 'references') and '--dry' not in key:
                out.append(argv)
        return out


def inspect_reply(version, ids, volumes=None):
    """``crictl inspect --output json ID...``: DERIVED from the recorded shape (crictl 1.37 against
    a lab, by hand): one ID prints one object, several print a JSON array; each entry's
    ``status.mounts[].image.image`` names an image volume. ``volumes``: {id: [image ref...]}."""
    entries = []
    for cid in ids:
        mounts = [{'containerPath': '/volume%d' % n, 'hostPath': '', 'readonly': True, 'image': {'image': ref}}
                  for n, ref in enumerate((volumes or {}).get(cid, ()))]
        entries.append({'status': {'id': cid, 'mounts': mounts}, 'info': {}})
    return Reply(0, json.dumps(entries[0] if len(entries) == 1 else entries), crictl_warning(version))


def node_runner(version, state='before'):
    """A stub that plays the recorded sequence of ``version``.

    ``state='before'``: listings are the recorded "before" files until the matching removal ran,
    then the "after" ones (ps/pods DERIVED as described in derived_ps_after/derived_pods_after;
    images-after.json, ctr-content-ls-after-rmi.txt and -after-prune.txt recorded).
    ``state='after'``: every listing is the "after" one, as on a second run.
    """
    ps_before = recorded(version, 'ps-a.json')
    ps_after = json_reply(version, derived_ps_after(version))
    pods_before = recorded(version, 'pods.json')
    pods_after = json_reply(version, derived_pods_after(version))
    images_before = recorded(version, 'images.json')
    images_after = recorded(version, 'images-after.json')
    content_before = recorded(version, 'ctr-content-ls.txt')
    content_after_rmi = recorded(version, 'ctr-content-ls-after-rmi.txt')
    content_after_prune = recorded(version, 'ctr-content-ls-after-prune.txt')
    after = state == 'after'

    def ps(argv, runner):
        gone = after or runner.ran('crictl', 'rm') or runner.ran('crictl', 'rmp')
        return ps_after if gone else ps_before

    def pods(argv, runner):
        return pods_after if after or runner.ran('crictl', 'rmp') else pods_before

    def images(argv, runner):
        return images_after if after or runner.ran('crictl', 'rmi') else images_before

    def content(argv, runner):
        if after or [a for a in runner.ran('ctr', 'content', 'prune', 'references') if '--dry' not in a]:
            return content_after_prune
        if runner.ran('crictl', 'rmi'):
            return content_after_rmi
        return content_before

    def rm(argv, runner):
        # DERIVED from rm.out: crictl prints each removed id on stdout.
        ids = list(command_key(argv)[2:])
        return Reply(0, '\n'.join(ids) + '\n', crictl_warning(version))

    def rmp(argv, runner):
        # DERIVED from rmp.out: "Removed sandbox ID" per id.
        ids = list(command_key(argv)[2:])
        return Reply(0, ''.join('Removed sandbox %s\n' % i for i in ids), crictl_warning(version))

    def rmi(argv, runner):
        return Reply(0, deleted_lines(version, command_key(argv)[2:]), crictl_warning(version))

    def inspect(argv, runner):
        return inspect_reply(version, command_key(argv)[4:])

    return StubRunner({
        'crictl ps --all --output json': ps,
        'crictl pods --output json': pods,
        'crictl images --output json': images,
        'crictl imagefsinfo --output json': recorded(version, 'imagefsinfo.json'),
        'crictl info --output json': recorded(version, 'info.json'),
        'crictl rm': rm,
        'crictl rmp': rmp,
        'crictl rmi': rmi,
        'crictl inspect': inspect,
        'ctr content ls': content,
        'ctr content prune references --dry': recorded(version, 'ctr-prune-dry'),
        'ctr content prune references': recorded(version, 'ctr-prune'),
    })


# --------------------------------------------------------------------------------------------
# Fake discovery

def fake_discovery(env=None, configs=None, executables=(), sockets=(), dirs=()):
    """A Discovery over an imaginary filesystem: ``configs`` maps crictl.yaml paths to their
    parsed values; ``executables`` and ``sockets`` are the paths that exist as such."""
    configs = dict(configs or {})
    executables = set(executables)
    sockets = set(sockets)
    dirs = set(dirs)
    seen = {'exists': [], 'is_executable': [], 'is_socket': [], 'read_config': [], 'is_dir': []}

    def is_dir(path):
        seen['is_dir'].append(path)
        return path in dirs

    def exists(path):
        seen['exists'].append(path)
        return path in configs or path in executables or path in sockets

    def is_executable(path):
        seen['is_executable'].append(path)
        return path in executables

    def is_socket(path):
        seen['is_socket'].append(path)
        return path in sockets

    def read_config(path):
        seen['read_config'].append(path)
        return dict(configs[path])

    discovery = Discovery(env={'PATH': '/usr/bin:/bin'} if env is None else env, exists=exists,
                          is_executable=is_executable, is_socket=is_socket, read_config=read_config, is_dir=is_dir)
    discovery.seen = seen
    return discovery


def node_discovery(dirs=()):
    """crictl in /usr/local/bin, ctr in /usr/bin, containerd on its kubeadm socket; ``dirs``: the
    directories that exist (none by default: no kubelet root is found)."""
    return fake_discovery(env={'PATH': '/usr/local/bin:/usr/bin'}, executables={CRICTL, CTR}, sockets={SOCKET},
                          dirs=dirs)


def make_engine(runner, settings=None, phases=None, clock_ns=NOW_NS, peer_root='/nonexistent-peer-root',
                discovery=None):
    """An Engine over ``runner``; ``phases`` defaults to all four and the disk report.

    ``image_min_age`` is 0s unless ``settings`` say otherwise: the recorded content stores say
    their manifests are seconds old (``ctr content ls`` AGE), so the default (10m) keeps every
    image (test_default_image_min_age_keeps_the_recorded_fresh_images shows it).

    ``pod_aware`` is false unless ``settings`` say otherwise: the recorded sequence (and the
    "after" states derived from it) is upstream's blunt removal of every exited container, exit1
    of the Ready pod feas-c included. The default rules are tested with ``pod_aware: True`` in
    test__engine.py (``pod_engine``), test__plan.py and test__node.py."""
    if phases is None:
        phases = ('containers', 'sandboxes', 'images', 'content', 'disk')
    settings = dict({'image_min_age': '0s', 'pod_aware': False}, **(settings or {}))
    return _engine.Engine(settings, phases, runner=runner, discovery=discovery or node_discovery(),
                          clock=lambda: clock_ns, peer_mirror_root=str(peer_root))


def ids(items):
    return [item['id'] for item in items]


def deep(data):
    return copy.deepcopy(data)


class FakeTime(object):
    """Stands in for the ``time`` module inside _engine: a fixed wall clock, real monotonic/sleep."""

    def __init__(self, now_ns):
        import time
        self._now_ns = now_ns
        self.monotonic = time.monotonic
        self.sleep = time.sleep

    def time_ns(self):
        return self._now_ns

    def time(self):
        return self._now_ns / 1e9


# --------------------------------------------------------------------------------------------
# Running a module's main()

class ModuleExit(Exception):
    """Raised by the patched exit_json/fail_json; ``result`` holds what the module returned."""

    def __init__(self, result, failed):
        super(ModuleExit, self).__init__(result)
        self.result = result
        self.failed = failed


def run_module(monkeypatch, module, args, runner, discovery=None, now_ns=NOW_NS, peer_root=None,
               check_mode=False, diff=False):
    """Run ``module.main()`` with ``args`` as Ansible would pass them; return a ModuleExit.

    CommandRunner.run is patched to answer from ``runner`` (still filling the real runner's
    history, which the Engine reads), Discovery finds the fake crictl/ctr/socket, the Engine's
    wall clock is ``now_ns``, and peer-mirror detection looks under ``peer_root``.
    """
    from ansible.module_utils import basic

    def exit_json(self, **kwargs):
        raise ModuleExit(kwargs, False)

    def fail_json(self, msg=None, **kwargs):
        kwargs['msg'] = msg
        kwargs['failed'] = True
        raise ModuleExit(kwargs, True)

    def run(self, argv, timeout=None):
        result = runner.run(argv, timeout)
        self.history.append(result)
        return result

    original_detect = _engine.detect_peer_mirror
    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', exit_json)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', fail_json)
    monkeypatch.setattr(_common.CommandRunner, 'run', run)
    monkeypatch.setattr(_engine, 'Discovery', lambda: discovery or node_discovery())
    monkeypatch.setattr(_engine, 'time', FakeTime(now_ns))
    monkeypatch.setattr(_engine, 'detect_peer_mirror',
                        lambda root='/': original_detect(str(peer_root) if peer_root else '/nonexistent-peer-root'))
    args = dict(args)
    args['_ansible_check_mode'] = check_mode
    args['_ansible_diff'] = diff
    try:
        from ansible.module_utils.testing import patch_module_args
    except ImportError:          # ansible-core < 2.19: the _ANSIBLE_ARGS way
        import contextlib
        from ansible.module_utils.common.text.converters import to_bytes

        @contextlib.contextmanager
        def patch_module_args(values):
            monkeypatch.setattr(basic, '_ANSIBLE_ARGS', to_bytes(json.dumps({'ANSIBLE_MODULE_ARGS': values})))
            yield
    with patch_module_args(args):
        try:
            module.main()
        except ModuleExit as exc:
            return exc
    raise AssertionError('%s.main() neither exited nor failed' % module.__name__)


def documented_returns(module):
    import yaml
    return yaml.safe_load(module.RETURN)


def runner_textfile(tmp_path, peer_root, runs=1, version=V21):
    """The textfile the node runner writes after ``runs`` real runs over the recorded scenario
    (stub engine): real _runner/_metrics output, for tests that must not use a hand list of names."""
    import io
    from ansible_collections.nodemaint.image_gc.plugins.module_utils import _runner
    base = tmp_path / 'runner-textfile'
    base.mkdir()
    prom = base / 'node_image_gc.prom'
    config = base / 'config.json'
    config.write_text(json.dumps({'report_path': str(base / 'last-run.json'), 'textfile_path': str(prom),
                                  'lock_path': str(base / 'lock'), 'lock_wait': '1s', 'image_min_age': '0s',
                                  'pod_aware': False}))

    def factory(settings, phases):
        return make_engine(node_runner(version), settings, phases=phases, peer_root=peer_root)
    for dummy in range(runs):
        assert _runner.run(str(config), stream=io.StringIO(), engine_factory=factory) == 0
    return prom.read_text()


def metric_names(textfile):
    """The metric names a textfile declares (its # TYPE lines)."""
    return set(line.split()[2] for line in textfile.splitlines() if line.startswith('# TYPE '))
