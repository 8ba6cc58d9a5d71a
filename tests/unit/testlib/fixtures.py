# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The recordings in tests/fixtures/: where they are, the ids of the recorded scenario, and
replies read from them (or DERIVED from them, each derivation said in its docstring)."""

import json
import os

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'fixtures')
V16 = 'crictl-1.36.0_containerd-1.6.20'
V21 = 'crictl-1.36.0_containerd-2.1.9'
VERSIONS = (V16, V21)
VCRIO = 'crictl-1.37.0_crio-1.34.0'   # CRI-O: its own runner (node_sim.crio_runner), not in VERSIONS
CRIO_SOCKET = '/var/run/crio/crio.sock'

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

# The CRI-O recording's ids (its README.md): image ids without ``sha256:``.
CRIO_IDS = {'feas-a': '55346aa366fd2e4c9abf2274d24fe5fdea9e93815da28cb5d441889b69e18c5a',
            'feas-b': '5fcabcd2ab34349c8580809e4922d3eda2395d450e27a418fb6129a9f93c626e',
            'exit0': '885e439b12aec947cfc686cd92b8f2466ac48788ce569d651e98cd0c0cb3451c',
            'exit1': '219af495d67e8dbf3654eb6e6dd88800768814956807d5808154722e4a209412',
            'sleeper': 'f36526b88c0abeb869bfb0e876ae61e409fb1f25f18bd5795b36d975a9aa7395',
            'pause': '662a6f22e884c4bc48a233aca54712a4bb6f2aa8f60a80022477b63e793b5cb6',
            'busybox1_old': 'fe72b35d8a1cff70647a1ec81e21e2e86f4c65d91fa41847c45d37ba02777d02',
            'busybox1': '6f6c4b72f3c26450c44fbadda5c69a23c6e5cb5faa5f395e687a30238b223a3d',
            'busybox2': '59a0618da8508f36896b24c59765c6bb648babcabdedec36b9ddd6e6ef8b86ba',
            'unused3': '45218034cf7c2ef2dd55e9622e5525cf88cafc3d306f41f6137552e5a2de6afb'}
CRIO_NOW_NS = 1796402072630968721 + 2 * 3600 * 10 ** 9   # two hours after its newest object

# A clock two hours after the newest object of either recording: everything is "old".
NOW_NS = 1795824621571634202 + 2 * 3600 * 10 ** 9

SOCKET = '/run/containerd/containerd.sock'
CRICTL = '/usr/local/bin/crictl'
CTR = '/usr/bin/ctr'
CRICTL_PREFIX = [CRICTL, '--runtime-endpoint', 'unix://' + SOCKET, '--image-endpoint', 'unix://' + SOCKET,
                 '--timeout', '120s']
CTR_PREFIX = [CTR, '--address', SOCKET, '--namespace', 'k8s.io']


def fixture_path(version, name):
    return os.path.join(FIXTURES, version, name)


def fixture_text(version, name):
    with open(fixture_path(version, name)) as handle:
        return handle.read()


def fixture_json(version, name):
    return json.loads(fixture_text(version, name))


class Reply:
    """One recorded (or derived) answer of a command: exit code, stdout, stderr."""

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


def recorded_reply(version, stem):
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


def rmi_deleted_output(version, image_ids):
    """DERIVED: ``crictl rmi ID...`` stdout, one ``Deleted: REF`` line per ref, in the format of the
    recorded rmi-inuse.out / rmi-prune.out."""
    images = {i['id']: i for i in fixture_json(version, 'images.json')['images']}
    lines = []
    for image_id in image_ids:
        image = images.get(image_id, {'repoTags': [image_id], 'repoDigests': []})
        for ref in image['repoTags'] + image['repoDigests']:
            lines.append('Deleted: %s' % ref)
    return '\n'.join(lines) + '\n'
