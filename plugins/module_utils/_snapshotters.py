# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""Whether the CRI can still unpack an image: its snapshotters, and the images it cannot run.

An image is unpacked at pull time into the CRI's snapshotter; its compressed layer blobs are
needed again only to unpack it anew: into another snapshotter (a RuntimeClass whose handler has
its own ``snapshotter``), or after its snapshot was lost. ``ctr content prune references``
(phase 4) removes those blobs. Two rules follow:

- ``content_prune_skip``: phase 4 runs only when the CRI uses exactly one snapshotter.
- ``unusable_images``: an image whose content is incomplete (``ctr images check``) and that no
  snapshot of the CRI's snapshotter backs cannot be run (CreateContainerError) and is never
  pulled again while it is listed; the images phase removes it, so the kubelet pulls it again.

Pure functions over parsed output: the commands run in _cri.py.
"""

from ._common import ImageGCError

SNAPSHOTTER_DIR_PREFIX = 'io.containerd.snapshotter.v1.'
# The containerd 1.6/1.7 runtime entries beside ``runtimes`` (deprecated, still reported).
LEGACY_RUNTIMES = ('defaultRuntime', 'untrustedWorkloadRuntime')


class Snapshotters:
    """The CRI's snapshotters as ``crictl info`` and ``crictl imagefsinfo`` report them.

    ``default``: the snapshotter images are unpacked into (None when neither says);
    ``source``: where ``default`` was read; ``by_runtime``: {runtime handler: snapshotter} of the
    handlers that name one of their own; ``filesystems``: the snapshotters whose directory
    ``imagefsinfo`` lists (containerd 2.x lists one per snapshotter in use, the default first)."""

    def __init__(self, default, source, by_runtime, filesystems):
        self.default = default
        self.source = source
        self.by_runtime = dict(by_runtime)
        self.filesystems = list(filesystems)

    def others(self):
        """[(snapshotter, what uses it)] of every snapshotter besides the default one."""
        out = [(s, 'runtime handler %s' % rt) for rt, s in sorted(self.by_runtime.items()) if s != self.default]
        out += [(s, 'an image filesystem crictl imagefsinfo reports') for s in self.filesystems
                if s != self.default and s not in self.by_runtime.values()]
        return out

    def names(self):
        """Every snapshotter, the default first (``?`` when it is not known)."""
        out = [self.default or '?']
        for snapshotter, dummy in self.others():
            if snapshotter not in out:
                out.append(snapshotter)
        return out


def _snapshotter_of(mountpoint):
    base = (mountpoint or '').rstrip('/').rsplit('/', 1)[-1]
    return base[len(SNAPSHOTTER_DIR_PREFIX):] if base.startswith(SNAPSHOTTER_DIR_PREFIX) else None


def cri_snapshotters(info, imagefsinfo=None):
    """Snapshotters from ``crictl info -o json`` and ``crictl imagefsinfo -o json`` (dicts), or None
    when ``info`` has no ``config.containerd.runtimes`` (not containerd's CRI, or a layout this
    code does not know: the snapshotters are unknown).

    containerd 1.6/1.7 report ``config.containerd.snapshotter`` and, 1.7 on, a ``snapshotter`` per
    runtime (empty: the default); 2.x report the per-runtime ones only, and the image service's
    snapshotter is read from the first image filesystem's directory
    (``.../io.containerd.snapshotter.v1.NAME``)."""
    config = (info or {}).get('config')
    containerd = config.get('containerd') if isinstance(config, dict) else None
    runtimes = containerd.get('runtimes') if isinstance(containerd, dict) else None
    if not isinstance(runtimes, dict):
        return None
    entries = sorted(runtimes.items())
    entries += [(name, containerd.get(name)) for name in LEGACY_RUNTIMES]
    by_runtime = {}
    for name, runtime in entries:
        snapshotter = runtime.get('snapshotter') if isinstance(runtime, dict) else None
        if snapshotter and (name not in LEGACY_RUNTIMES or runtime.get('runtimeType')):
            by_runtime[name] = snapshotter
    status = (imagefsinfo or {}).get('status') or {}
    filesystems = []
    for fs in status.get('imageFilesystems') or []:
        name = _snapshotter_of(((fs or {}).get('fsId') or {}).get('mountpoint'))
        if name and name not in filesystems:
            filesystems.append(name)
    default, source = containerd.get('snapshotter') or None, 'crictl info config.containerd.snapshotter'
    if not default and filesystems:
        default, source = filesystems[0], 'crictl imagefsinfo (the first image filesystem)'
    return Snapshotters(default, source if default else None, by_runtime, filesystems)


def content_prune_skip(snapshotters):
    """Why phase 4 must not run with these snapshotters, or None when it may (exactly one).

    Kept when in doubt: unknown snapshotters skip it too. A default that is not named with no
    runtime handler naming another is one snapshotter (whatever its name): the prune may run."""
    if snapshotters is None:
        return ('the CRI\'s snapshotters are unknown (crictl info reports no config.containerd.runtimes): a '
                'RuntimeClass with a snapshotter of its own would need the layer blobs the prune removes; '
                'content prune skipped')
    others = snapshotters.others()
    if not others:
        return None
    default = snapshotters.default or 'the default one, not reported'
    return ('the CRI uses more than one snapshotter (%s; %s): a pod whose RuntimeClass uses another snapshotter '
            'unpacks its image there from the compressed layer blobs, which the prune removes, and would fail '
            'with CreateContainerError for as long as the image is listed; content prune skipped' % (
                default, '; '.join('%s for %s' % (s, what) for s, what in others)))


def parse_images_check(text):
    """{image name: {'status': 'incomplete (2/3)', 'complete': bool, 'unpacked': bool}} from
    ``ctr images check`` (a space-aligned table: REF TYPE DIGEST STATUS SIZE UNPACKED). Asked with
    filters no image matches, ctr prints nothing at all, not even the header: no row."""
    lines = (text or '').splitlines()
    if not any(line.strip() for line in lines):
        return {}
    header = lines[0] if lines else ''
    names = ('REF', 'STATUS', 'SIZE', 'UNPACKED')
    if not all(name in header.split() for name in names):
        raise ImageGCError('ctr images check printed no REF ... STATUS SIZE UNPACKED header: %r; this ctr may be '
                           'too old' % (header[:200],))
    cols = {name: header.index(name) for name in names}
    out = {}
    for line in lines[1:]:
        if not line.strip():
            continue
        ref = line.split()[0]
        status = line[cols['STATUS']:cols['SIZE']].strip()
        unpacked = line[cols['UNPACKED']:].strip()
        if not status or unpacked not in ('true', 'false'):
            raise ImageGCError('ctr images check: cannot parse line %r' % line)
        out[ref] = {'status': status, 'complete': status.startswith('complete'), 'unpacked': unpacked == 'true'}
    return out


def unusable_images(images, checked):
    """{image id: ctr's status} of the ``images`` (_listings.Image) whose every name ``checked`` lists
    (``parse_images_check``) says ``incomplete`` and not unpacked. An image none of whose names is
    listed, or listed ``unavailable`` or ``error``, is not unusable here: kept when in doubt."""
    out = {}
    for image in images:
        rows = [checked[name] for name in [image.id] + image.refs if name in checked]
        if rows and all(r['status'].startswith('incomplete') and not r['unpacked'] for r in rows):
            out[image.id] = rows[0]['status']
    return out


def unusable_reason(status, snapshotter):
    return ('unusable: its content is incomplete (ctr images check: %s; the layer blobs were pruned) and it is not '
            'unpacked in %s: the CRI cannot create a container from it (CreateContainerError) and the kubelet does '
            'not pull it again while it is listed; removed so that the next pod pulls it again' % (status, snapshotter))


def unusable_but_kept(status, snapshotter):
    return ('; unusable (content %s, not unpacked in %s), but kept for that reason: the kubelet pulls it again '
            'once nothing keeps it and a run removed it' % (status, snapshotter))
