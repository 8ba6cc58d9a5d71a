# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""A peer-to-peer image mirror served from this node (Spegel, the k3s/RKE2 embedded registry):
phase 4's content prune removes the compressed layers it serves to its peers."""

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
