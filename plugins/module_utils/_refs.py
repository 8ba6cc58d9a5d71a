# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""Image references: how a container, a pattern or a setting names an image (tags, digests,
ids, fully qualified or not), who uses an image, and what a sandbox (pause) image looks like."""

import fnmatch

# What a sandbox (pause) image is called by kubeadm (registry.k8s.io/pause), k3s and RKE2
# (rancher/mirrored-pause) and most mirrors of them, matched on fully qualified references.
SANDBOX_IMAGE_LOOKALIKES = ('*/pause:*', '*/pause@*', '*/mirrored-pause:*', '*/mirrored-pause@*',
                            '*/*-pause:*', '*/*-pause@*')


def matches_any(value, patterns):
    """The first of ``patterns`` (fnmatch, case-sensitive) that ``value`` matches, or None."""
    for pattern in patterns or ():
        if fnmatch.fnmatchcase(value, pattern):
            return pattern
    return None


def normalize_ref(ref):
    """Fully qualified image reference, as containerd stores it (``busybox`` -> ``docker.io/library/busybox:latest``)."""
    if not ref or ref.startswith('sha256:'):
        return ref
    name, at, digest = ref.partition('@')
    first, slash, rest = name.partition('/')
    if not slash:
        name = 'docker.io/library/' + name
    elif '.' not in first and ':' not in first and first != 'localhost':
        name = 'docker.io/' + name
    if not at and ':' not in name.rsplit('/', 1)[-1]:
        name += ':latest'
    return name + at + digest


def _qualified(pattern):
    """The fully qualified form of a pattern whose repository part has no wildcard, else None."""
    first, slash, dummy = pattern.partition('/')
    if any(ch in (first if slash else first.split(':')[0].split('@')[0]) for ch in '*?['):
        return None
    if not slash:
        return 'docker.io/library/' + pattern
    if '.' not in first and ':' not in first and first != 'localhost':
        return 'docker.io/' + pattern
    return None


def exclude_patterns(patterns):
    """{pattern to match: the user's pattern}. A pattern without tag or digest (``busybox``) matches
    every tag and digest of that repository (``busybox:*``, ``busybox@*``); ``repo:*`` also matches
    the digest form ``repo@...``; each form is matched as written and, when its repository part has
    no wildcard, fully qualified (``busybox:*`` also matches ``docker.io/library/busybox:1.36``)."""
    out = {}
    for pattern in patterns or ():
        forms = [pattern]
        if not pattern.startswith('sha256:'):
            last = pattern.rsplit('/', 1)[-1]
            if '@' not in pattern and ':' not in last:
                forms += [pattern + ':*', pattern + '@*']
            elif pattern.endswith(':*') and '@' not in pattern:
                forms.append(pattern[:-2] + '@*')
            forms += [q for q in (_qualified(f) for f in list(forms)) if q]
        for form in forms:
            out.setdefault(form, pattern)
    return out


def _refs_index(images):
    by_ref = {}
    for image in images:
        for ref in [image.id] + image.refs:
            by_ref[ref] = image.id
            by_ref[normalize_ref(ref)] = image.id
    return by_ref


def image_users(images, containers):
    """Image id -> containers using it, by image id, repo digest or tag (as ``crictl rmi --prune``)."""
    by_ref = _refs_index(images)
    users = {}
    for c in containers:
        for ref in (c.image_ref, c.image, normalize_ref(c.image)):
            if ref and ref in by_ref:
                users.setdefault(by_ref[ref], []).append(c)
                break
    return users


def looks_like_sandbox_image(image):
    return any(matches_any(normalize_ref(r), SANDBOX_IMAGE_LOOKALIKES) for r in image.refs)


def pins_a_sandbox_image(images):
    """Whether the runtime pins an image that looks like a sandbox image (containerd 1.7 and 2.x pin
    their own, and 2.x does not report it). Another pinned image says nothing about the sandbox image."""
    return any(i.pinned and looks_like_sandbox_image(i) for i in images)


def volume_users(images, containers, image_volumes):
    """Image id -> containers of ``containers`` that mount it as an image volume."""
    if not image_volumes:
        return {}
    by_ref = _refs_index(images)
    out = {}
    for c in containers:
        for ref in image_volumes.get(c.id, ()):
            image_id = by_ref.get(ref) or by_ref.get(normalize_ref(ref))
            if image_id and c not in out.get(image_id, []):
                out.setdefault(image_id, []).append(c)
    return out
