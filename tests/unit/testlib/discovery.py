# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A Discovery over an imaginary filesystem, and the recorded node's layout as one."""

from ansible_collections.nodemaint.image_gc.plugins.module_utils._discovery import Discovery

from .fixtures import CRICTL, CTR, SOCKET


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
