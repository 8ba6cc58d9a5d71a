# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""The disk report: the image filesystem's figure read from the filesystem itself (statvfs,
settled once containerd's garbage collection is done), the runtime's own figure (CRI
imagefsinfo), object counts and what phase 3 could reclaim."""

import os
import time

from ._listings import state_word

# The report after a check-mode run: nothing was removed, so it is the report before, stated.
CHECK_MODE_NOTE = 'check mode: nothing removed, after = before'


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
# removal may not show it yet. The reading is repeated until two agree, for a bounded time: the
# first re-reading after SETTLE_INTERVAL, and while they differ (something is being collected)
# at intervals doubling up to SETTLE_MAX_INTERVAL. CRI's image removal collects synchronously and
# phase 4 waits for its blobs to go, so a quiet filesystem agrees at the first re-reading.
SETTLE_TIMEOUT = 5.0
SETTLE_INTERVAL = 0.05
SETTLE_MAX_INTERVAL = 0.25


def settled_figure(path, timeout=SETTLE_TIMEOUT, interval=SETTLE_INTERVAL, read=None, sleep=time.sleep,
                   monotonic=time.monotonic, max_interval=SETTLE_MAX_INTERVAL):
    """filesystem_figure(path) once two readings agree on the used bytes (``interval`` apart,
    doubling up to ``max_interval`` while they differ), at most ``timeout`` seconds; ``settled``
    (bool) and ``waited`` (seconds) say how it ended. None when the filesystem cannot be read."""
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
        interval = min(interval * 2, max(interval, max_interval))
    if last is not None:
        last['waited'] = round(monotonic() - started, 2)
    return last


def image_filesystems(info):
    """The image filesystems of a ``crictl imagefsinfo`` answer, each with the runtime's figure
    (``used_bytes``, ``inodes_used``) and the filesystem's own (filesystem_usage of its mount point)."""
    filesystems = []
    for fs in ((info.get('status') or {}).get('imageFilesystems') or []):
        mount = (fs.get('fsId') or {}).get('mountpoint', '')
        entry = {'mountpoint': mount,
                 'used_bytes': int((fs.get('usedBytes') or {}).get('value') or 0),
                 'inodes_used': int((fs.get('inodesUsed') or {}).get('value') or 0)}
        entry.update(filesystem_usage(mount))
        filesystems.append(entry)
    return filesystems


def read_figure(filesystems, settle=False, settled=None):
    """(path statvfs reads, figure, why unknown) of the fullest of ``filesystems`` that can be read:
    ``settle`` waits for two readings to agree (settled_figure). The path is None when none can be read.
    ``settled``: ``(path, settled_figure(path))`` already read (used when that path is the fullest's)."""
    known = [f for f in filesystems if f.get('fs_size_bytes') and 'fs_used_bytes' in f]
    path, figure, unknown = None, None, None
    if known:
        fullest = max(known, key=lambda f: f.get('fs_used_percent') or 0)
        path = fullest.get('fs_path') or fullest['mountpoint']
        if settle and settled is not None and settled[0] == path:
            figure = settled[1]
        else:
            figure = settled_figure(path) if settle else filesystem_figure(path, fullest)
    if figure is None:
        unknown = ('the runtime reported no image filesystem' if not filesystems else
                   'the image filesystem (%s) cannot be read here' % ', '.join(f['mountpoint'] for f in filesystems))
    return path, figure, unknown


def fullest_image_fs(filesystems):
    """The fullest of ``filesystems`` (``used_bytes``/``size_bytes`` of the filesystem holding it,
    ``path``), or None when none has a known size."""
    known = [fs for fs in filesystems if fs.get('fs_size_bytes')]
    if not known:
        return None
    fs = max(known, key=lambda f: f['fs_used_percent'])
    return {'used_bytes': fs['fs_used_bytes'], 'size_bytes': fs['fs_size_bytes'], 'path': fs['fs_path']}


def _count_states(objects):
    counts = {}
    for o in objects:
        key = state_word(o.state)
        counts[key] = counts.get(key, 0) + 1
    return counts


def report(filesystems, figure, unknown, containers, sandboxes, images, reclaimable, sandbox_images, largest=5):
    """The disk report: ``reclaimable`` is the plan of what phase 3 would remove."""
    biggest = sorted(images, key=lambda i: (-i.size, i.id))[:largest]
    return {
        'filesystem': figure,
        'filesystem_unknown': unknown,
        'image_filesystems': filesystems,
        'image_fs_used_bytes': sum(f['used_bytes'] for f in filesystems),
        'containers': _count_states(containers),
        'sandboxes': _count_states(sandboxes),
        'images': len(images),
        'images_bytes': sum(i.size for i in images),
        'reclaimable_images': len(reclaimable.remove),
        'reclaimable_bytes': sum(item['size'] for item in reclaimable.remove),
        'largest_images': [i.to_dict() for i in biggest],
        'sandbox_image': ', '.join(sandbox_images) or None,
    }


def failed_report(error, path=None):
    """The report when the runtime did not answer (``error``): the filesystem it named before
    (``path``) still can."""
    state = {'error': error}
    if path:
        state['filesystem'] = settled_figure(path)
    if not state.get('filesystem'):
        state['filesystem'] = None
        state['filesystem_unknown'] = error
    return state


def stated_after(before):
    """The report after a check-mode run: nothing was removed, so the disk is as it was (stated,
    not measured)."""
    after = dict(before, when='after')
    if after.get('filesystem'):
        after['filesystem'] = dict(after['filesystem'], note=CHECK_MODE_NOTE)
    return after


def below_threshold(disk, threshold):
    """Why every phase is skipped (the image filesystem is below ``threshold`` percent), or None."""
    values = [fs['fs_used_percent'] for fs in disk.get('image_filesystems', []) if 'fs_used_percent' in fs]
    if threshold and values and max(values) < threshold:
        return 'image filesystem %.1f%% used, below disk_usage_threshold %s%%: report only' % (
            max(values), threshold)
    return None
