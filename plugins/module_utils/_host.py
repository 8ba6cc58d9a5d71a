# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""What the engine reads from the node itself rather than from the runtime: a peer-to-peer
image mirror served from this node, and the usage of the filesystem holding a path."""

import os

PEER_MIRROR_CONFIGS = ('/etc/rancher/k3s/config.yaml', '/etc/rancher/rke2/config.yaml')


def detect_peer_mirror(root='/'):
    """A description of a peer-to-peer image mirror served from this node (Spegel, the k3s/RKE2
    embedded registry), or None."""
    proc = os.path.join(root, 'proc')
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        pids = []
    for pid in pids:
        try:
            with open(os.path.join(proc, pid, 'comm')) as handle:
                if handle.read().strip() == 'spegel':
                    return 'Spegel is running (pid %s)' % pid
        except OSError:
            continue
    for config in PEER_MIRROR_CONFIGS:
        candidates = [config]
        dropins = os.path.join(root, config.lstrip('/') + '.d')
        if os.path.isdir(dropins):
            candidates += [os.path.join(config + '.d', n) for n in sorted(os.listdir(dropins))]
        for path in candidates:
            try:
                with open(os.path.join(root, path.lstrip('/'))) as handle:
                    for line in handle:
                        key, dummy, value = line.split('#', 1)[0].partition(':')
                        if key.strip() == 'embedded-registry' and value.strip().strip('"\'').lower() == 'true':
                            return 'the embedded registry mirror is enabled in %s' % path
            except OSError:
                continue
    return None


def filesystem_usage(path):
    """Size, free and used bytes of the filesystem holding ``path`` (its nearest existing parent)."""
    probe = path or '/'
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    try:
        st = os.statvfs(probe or '/')
    except OSError:
        return {}
    size = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    used = size - st.f_bfree * st.f_frsize
    return {'fs_path': probe, 'fs_size_bytes': size, 'fs_free_bytes': free, 'fs_used_bytes': used,
            'fs_used_percent': round(100.0 * used / size, 1) if size else 0.0}
