"""The trace: which pods a node starts when, for how long, with which images of which size.

A trace file is JSON lines. An optional first line describes the node; every other line is one
pod start::

    {"node": "my-node", "disk_bytes": 64000000000, "base_bytes": 22000000000, "horizon": 2419200}
    {"t": 3600, "pod": "web-7f9c", "duration": 86400, "images": [{"ref": "ghcr.io/me/web:1.2", "size": 734003200}]}
    {"t": 7200, "pod": "backup-29", "duration": 600, "linger": 10800, "images": [["docker.io/restic/restic:0.17", 65000000]]}

``t``: seconds from the start of the trace; ``duration``: seconds the pod runs (its containers
are running); ``linger`` (default 0): seconds its exited containers stay listed after it ends
(a Job pod kept by the Job's history limit; 0 for a pod deleted when it ends); ``images``:
references and their size on disk in bytes (``{"ref", "size"}`` or ``[ref, size]``). An image is
known by its reference: a new tag is a new image. ``disk_bytes`` is the image filesystem's size,
``base_bytes`` what else it holds (the OS, logs, the sandbox image), ``horizon`` the length of the
replay (default: the end of the last pod). ``--disk``/``--base`` on the command line override them.
"""

import json
import os

GB = 10 ** 9


class Start(object):
    __slots__ = ('t', 'pod', 'duration', 'linger', 'images')

    def __init__(self, t, pod, duration, images, linger=0):
        self.t = int(t)
        self.pod = pod
        self.duration = max(1, int(duration))
        self.linger = max(0, int(linger))
        self.images = tuple((ref, int(size)) for ref, size in images)

    def to_dict(self):
        out = {'t': self.t, 'pod': self.pod, 'duration': self.duration,
               'images': [{'ref': r, 'size': s} for r, s in self.images]}
        if self.linger:
            out['linger'] = self.linger
        return out


class Trace(object):
    """``starts`` sorted by time; ``params``: how it was made (for the report)."""

    def __init__(self, name, starts, disk_bytes, base_bytes, horizon=None, params=''):
        self.name = name
        self.starts = sorted(starts, key=lambda s: (s.t, s.pod))
        self.disk_bytes = int(disk_bytes)
        self.base_bytes = int(base_bytes)
        self.horizon = int(horizon) if horizon else max([s.t + s.duration for s in self.starts] or [0])
        self.params = params
        sizes = {}
        for s in self.starts:
            for ref, size in s.images:
                if sizes.setdefault(ref, size) != size:
                    raise ValueError('trace %s: image %s has two sizes (%d, %d); a new build needs a new tag'
                                     % (name, ref, sizes[ref], size))
        self.sizes = sizes

    def write(self, path):
        with open(path, 'w') as handle:
            handle.write(json.dumps({'node': self.name, 'disk_bytes': self.disk_bytes,
                                     'base_bytes': self.base_bytes, 'horizon': self.horizon}) + '\n')
            for s in self.starts:
                handle.write(json.dumps(s.to_dict()) + '\n')


def _images(value, where):
    out = []
    for item in value:
        if isinstance(item, dict):
            out.append((item['ref'], item['size']))
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            out.append((item[0], item[1]))
        else:
            raise ValueError('%s: an image is {"ref": ..., "size": bytes} or [ref, bytes], got %r' % (where, item))
    return out


def read(path, disk_bytes=None, base_bytes=None):
    """The Trace of a JSON lines file; ValueError naming the line and what is wrong."""
    node, starts = {}, []
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = '%s line %d' % (path, number)
            try:
                data = json.loads(line)
                if 'node' in data and 't' not in data:
                    node = data
                    continue
                starts.append(Start(data['t'], data.get('pod', 'pod-%d' % number), data['duration'],
                                    _images(data['images'], where), data.get('linger', 0)))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError('%s: %s (a pod start is {"t": s, "pod": name, "duration": s, "images": '
                                 '[{"ref": ..., "size": bytes}]}; see bench/policy/trace.py)' % (where, exc))
    disk_bytes = disk_bytes or node.get('disk_bytes')
    if not disk_bytes:
        raise ValueError('%s: the image filesystem size is unknown: give --disk GB or a first line '
                         '{"node": ..., "disk_bytes": ...}' % path)
    base = base_bytes if base_bytes is not None else node.get('base_bytes', 0)
    name = os.path.basename(path)
    return Trace(node.get('node', name), starts, disk_bytes, base, node.get('horizon'), 'from %s' % name)
