# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A Discovery over an imaginary filesystem, and the recorded node's layout as one."""

from ansible_collections.nodemaint.image_gc.plugins.module_utils._discovery import Discovery

from .fixtures import CRICTL, CTR, SOCKET, fixture_json


def fake_discovery(env=None, configs=None, executables=(), sockets=(), dirs=(), proc='/nonexistent/proc'):
    """A Discovery over an imaginary filesystem: ``configs`` maps crictl.yaml paths to their
    parsed values; ``executables`` and ``sockets`` are the paths that exist as such; ``proc``: the
    /proc whose command lines name a running kubelet (none by default: never the machine's)."""
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
                          is_executable=is_executable, is_socket=is_socket, read_config=read_config, is_dir=is_dir,
                          proc=proc)
    discovery.seen = seen
    return discovery


def node_discovery(dirs=(), proc='/nonexistent/proc'):
    """crictl in /usr/local/bin, ctr in /usr/bin, containerd on its kubeadm socket; ``dirs``: the
    directories that exist (none by default); ``proc``: the /proc of the running processes (none
    by default: no running kubelet names its root)."""
    return fake_discovery(env={'PATH': '/usr/local/bin:/usr/bin'}, executables={CRICTL, CTR}, sockets={SOCKET},
                          dirs=dirs, proc=proc)


def running_kubelet(tmp_path, version, tracked=('feas-b', 'feas-c')):
    """A /proc (a fake tree) where a kubelet runs with ``--root-dir=<tmp>/kubelet``, a root that
    tracks the recorded pods named ``tracked`` (feas-b and feas-c are the Ready ones, so the root is
    live). Returns (the /proc path, the root); pass the first as ``node_discovery(proc=...)``."""
    root = tmp_path / 'kubelet'
    (root / 'pods').mkdir(parents=True, exist_ok=True)
    for pod in fixture_json(version, 'pods.json')['items']:
        if pod['metadata']['name'] in tracked:
            (root / 'pods' / pod['metadata']['uid']).mkdir(exist_ok=True)
    proc = tmp_path / 'proc-with-kubelet'
    (proc / '4242').mkdir(parents=True, exist_ok=True)
    (proc / '4242' / 'cmdline').write_bytes(b'/usr/bin/kubelet\0--root-dir=%s\0' % str(root).encode())
    return str(proc), str(root)
