# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""What crictl and ctr list, parsed: the CRI state names, Container, Sandbox, Image and Blob, and
the parse_* functions over ``crictl version``, ``crictl inspect`` and ``ctr content ls``. Pure:
no command runs here (the command wrappers are _cri's)."""

from sys import intern

from ._common import ImageGCError
from ._units import parse_human_age, parse_human_size, seconds

# The CRI states a run tells apart (crictl prints them as the CRI names them).
CONTAINER_CREATED = 'CONTAINER_CREATED'
CONTAINER_RUNNING = 'CONTAINER_RUNNING'
CONTAINER_EXITED = 'CONTAINER_EXITED'
SANDBOX_READY = 'SANDBOX_READY'
SANDBOX_NOTREADY = 'SANDBOX_NOTREADY'


def state_word(state):
    """A CRI state as a reason or a count says it: ``CONTAINER_EXITED`` -> ``exited``."""
    return state.replace('CONTAINER_', '').replace('SANDBOX_', '').lower()


def shared(value):
    """One string object for a value many entries repeat (a listing's parse makes a new one each time)."""
    return intern(value) if type(value) is str else value   # pylint: disable=unidiomatic-typecheck


class Container:
    # A run holds one per container (10,000 and more on a big node, at every listing): no __dict__,
    # and the values containers share (their sandbox, state, image, pod) are one string each.
    __slots__ = ('id', 'name', 'attempt', 'pod_id', 'state', 'created_ns', 'image', 'image_ref', 'image_id',
                 'pod_name', 'pod_namespace', 'pod_uid')

    def __init__(self, raw):
        meta = raw.get('metadata') or {}
        labels = raw.get('labels') or {}
        self.id = raw['id']
        self.name = meta.get('name', '')
        self.attempt = int(meta.get('attempt') or 0)
        self.pod_id = shared(raw.get('podSandboxId', ''))
        self.state = shared(raw.get('state', ''))
        self.created_ns = int(raw.get('createdAt') or 0)
        self.image = shared((raw.get('image') or {}).get('image', ''))
        self.image_ref = shared(raw.get('imageRef', ''))
        # The image's id where the runtime says it apart from imageRef (CRI ``image_id``): CRI-O's
        # imageRef is the image's repo digest reference, containerd's is the id itself.
        self.image_id = shared(raw.get('imageId', ''))
        self.pod_name = shared(labels.get('io.kubernetes.pod.name', ''))
        self.pod_namespace = shared(labels.get('io.kubernetes.pod.namespace', ''))
        self.pod_uid = shared(labels.get('io.kubernetes.pod.uid', ''))

    def fields(self):
        return tuple(getattr(self, k) for k in self.__slots__)

    def to_dict(self):
        return {'id': self.id, 'name': self.name, 'attempt': self.attempt, 'pod_sandbox_id': self.pod_id,
                'state': self.state,
                'image': self.image, 'image_ref': self.image_ref, 'created_at': seconds(self.created_ns),
                'pod_name': self.pod_name, 'pod_namespace': self.pod_namespace}


class ListingShapeError(Exception):
    """A listing entry that does not have the shape of its kind (raised out of json.loads)."""


def slim_hook(cls, marks, reuse=None):
    """A ``json.loads`` object_hook that turns every JSON object that has the keys ``marks`` and a
    JSON object among its values (an entry of a crictl listing: label and annotation maps hold
    strings only) into ``cls(entry)`` as soon as the parser closes it: the entry's labels,
    annotations and other fields the plan does not use are dropped while the listing is parsed,
    not after, so a 10,000-container listing is never held as dicts all at once. ``reuse``
    ({id: entry} of an earlier listing): an entry equal in every field (``fields()``) to the one of
    its id there is that one, not a copy, so a re-listing does not hold the node's containers twice."""
    def hook(obj):
        if all(k in obj for k in marks) and any(isinstance(v, dict) for v in obj.values()):
            try:
                entry = cls(obj)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ListingShapeError('%s: %s' % (type(exc).__name__, exc))
            old = reuse.get(entry.id) if reuse else None
            return old if old is not None and old.fields() == entry.fields() else entry
        return obj
    return hook


# The keys that tell a listing's entry apart (the first is its own id).
CONTAINER_MARKS = ('id', 'podSandboxId')


class Sandbox:
    def __init__(self, raw):
        meta = raw.get('metadata') or {}
        self.id = raw['id']
        self.name = meta.get('name', '')
        self.namespace = meta.get('namespace', '')
        self.uid = meta.get('uid', '')
        self.attempt = int(meta.get('attempt') or 0)
        self.state = raw.get('state', '')
        self.created_ns = int(raw.get('createdAt') or 0)

    def to_dict(self):
        return {'id': self.id, 'name': self.name, 'namespace': self.namespace, 'uid': self.uid,
                'attempt': self.attempt, 'state': self.state, 'created_at': seconds(self.created_ns)}


class Image:
    def __init__(self, raw):
        self.id = raw['id']
        self.tags = list(raw.get('repoTags') or [])
        self.digests = list(raw.get('repoDigests') or [])
        self.size = int(raw.get('size') or 0)
        self.pinned = bool(raw.get('pinned', False))

    @property
    def refs(self):
        return self.tags + self.digests

    def to_dict(self):
        return {'id': self.id, 'repo_tags': self.tags, 'repo_digests': self.digests, 'size': self.size,
                'pinned': self.pinned}


class Blob:
    def __init__(self, digest, size, age, labels):
        self.digest = digest
        self.size = size
        self.age = age
        self.labels = labels

    def to_dict(self):
        return {'digest': self.digest, 'size': self.size}


def parse_runtime_name(text):
    """``RuntimeName:  cri-o`` of ``crictl version``'s output -> ``cri-o``; '' when absent."""
    for line in text.splitlines():
        key, sep, value = line.partition(':')
        if sep and key.strip() == 'RuntimeName':
            return value.strip()
    return ''


def parse_image_volumes(entries, what='crictl inspect'):
    """{container id: [image reference...]} from the entries ``crictl inspect -o json`` prints."""
    out = {}
    try:
        for entry in entries:
            status = entry.get('status') or {}
            config = (entry.get('info') or {}).get('config') or {}
            refs = []
            for mount in (status.get('mounts') or []) + (config.get('mounts') or []):
                image = (mount.get('image') or {}).get('image') if isinstance(mount.get('image'), dict) else None
                if image and image not in refs:
                    refs.append(image)
            if status.get('id'):
                out[status['id']] = refs
    except (AttributeError, TypeError) as exc:
        raise ImageGCError('%s: unexpected JSON shape (%s: %s); this crictl may be too old' % (
            what, type(exc).__name__, exc))
    return out


def parse_content_ls(text):
    lines = (text or '').splitlines()
    if not lines or not lines[0].startswith('DIGEST'):
        raise ImageGCError('ctr content ls printed no DIGEST header: %r' % (text[:200],))
    blobs = []
    for line in lines[1:]:
        if not line.strip():
            continue
        fields = [f for f in line.split('\t') if f != '']
        if len(fields) < 3:
            raise ImageGCError('ctr content ls: cannot parse line %r' % line)
        labels = {}
        if len(fields) > 3 and fields[3] != '':
            for pair in fields[3].split(','):
                key, dummy, value = pair.partition('=')
                labels[key] = value
        try:
            blobs.append(Blob(fields[0], parse_human_size(fields[1]), parse_human_age(fields[2]), labels))
        except ValueError as exc:
            raise ImageGCError('ctr content ls: cannot parse line %r: %s' % (line, exc))
    return blobs
