# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""What the engine reads from the node itself rather than from the runtime: a peer-to-peer
image mirror served from this node, and the usage of the filesystem holding a path."""

import os
import time

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


def mount_point(path):
    """The mount point of the filesystem holding ``path`` (an existing path): the topmost parent
    on the same device. ``path`` itself if it cannot be told."""
    try:
        path = os.path.realpath(path)
        dev = os.stat(path).st_dev
        while True:
            parent = os.path.dirname(path)
            if parent == path or os.stat(parent).st_dev != dev:
                return path
            path = parent
    except OSError:
        return path


def filesystem_figure(path, usage=None):
    """The image filesystem's figure from the filesystem itself (statvfs of the filesystem
    holding ``path``): ``{path (its mount point), used_bytes, size_bytes, free_bytes,
    used_percent, source}``, or None when it cannot be read. ``usage``: a filesystem_usage
    result already read."""
    usage = usage if usage is not None else filesystem_usage(path)
    if not usage.get('fs_size_bytes') or 'fs_used_bytes' not in usage:
        return None
    probe = usage.get('fs_path') or path
    return {'path': mount_point(probe), 'used_bytes': usage['fs_used_bytes'], 'size_bytes': usage['fs_size_bytes'],
            'free_bytes': usage.get('fs_free_bytes'), 'used_percent': usage.get('fs_used_percent'),
            'source': 'statvfs of %s' % probe}


# containerd collects garbage (snapshots, blobs) asynchronously: a figure read right after a
# removal may not show it yet. The reading is repeated until two agree, for a bounded time.
SETTLE_TIMEOUT = 5.0
SETTLE_INTERVAL = 0.25


def settled_figure(path, timeout=SETTLE_TIMEOUT, interval=SETTLE_INTERVAL, read=None, sleep=time.sleep,
                   monotonic=time.monotonic):
    """filesystem_figure(path) once two readings ``interval`` apart agree on the used bytes, at
    most ``timeout`` seconds; ``settled`` (bool) and ``waited`` (seconds) say how it ended.
    None when the filesystem cannot be read."""
    read = read or filesystem_figure
    started = monotonic()
    last = read(path)
    while last is not None:
        if monotonic() - started >= timeout:
            last['settled'] = False
            break
        sleep(interval)
        now = read(path)
        if now is None:
            return None
        if now['used_bytes'] == last['used_bytes']:
            last = now
            last['settled'] = True
            break
        last = now
    if last is not None:
        last['waited'] = round(monotonic() - started, 2)
    return last
