# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""Phase 3's plan: which images go and which stay, and why (what a container uses or mounts,
pinned, the sandbox image, excluded, too young, the warm cache of _retention). A pure function
over parsed listings, as the plans of phases 1 and 2 (_plan)."""

from ._listings import state_word
from ._plan import Plan
from ._refs import (SANDBOX_IMAGE_LOOKALIKES, exclude_patterns, image_users, looks_like_sandbox_image, matches_any,
                    normalize_ref, pins_a_sandbox_image, volume_users)
from ._units import format_duration, short_id


def _sandbox_images(sandbox_image):
    if not sandbox_image:
        return []
    return [sandbox_image] if isinstance(sandbox_image, str) else [i for i in sandbox_image if i]


def _describe_user(c, more):
    return '%s (%s, %s)%s' % (c.name, short_id(c.id), state_word(c.state),
                              ' and %d more' % more if more else '')


def plan_images(images, containers, sandbox_image=None, exclude=(), min_age=0, ages=None,
                removed_containers=(), retention=None, image_volumes=None, unusable=None):
    """Unused images with the semantics of ``crictl rmi --prune``, plus the collection's guards.

    ``images``, ``containers``: lists of _listings.Image / _listings.Container. An image is in use when any
    container (exited ones included) refers to it, or mounts it as an image volume
    (``image_volumes``: {container id: [image reference...]}), unless that container is in
    ``removed_containers`` (removed earlier in the same run). Pinned images, the sandbox images
    (``sandbox_image``: a reference or a list of them - the setting and what the runtime reports),
    images matching an ``exclude`` pattern (on tags, digests or id) and images younger than
    ``min_age`` (``ages``: {image id: seconds since the last-use record first saw it}) are kept. When no sandbox image
    is named, images that look like one are kept (a runtime that pins one may have used others
    before: a changed sandbox image). ``retention`` (a _retention.Retention) then keeps a warm
    cache of recently used images.

    ``unusable``: {image id: (reason to remove it, note when it is kept)} of the images the CRI
    cannot unpack again (_snapshotters.unusable_images): one that no rule above keeps goes
    whatever its age and last use (image_min_age, image_unused_for: the kubelet must pull it
    again anyway); one that is kept (in use, mounted, pinned, sandbox image, excluded) says so.
    """
    plan = Plan('images')
    removed = set(removed_containers or ())
    staying = [c for c in containers if c.id not in removed]
    users = image_users(images, staying)
    freed_by = image_users(images, [c for c in containers if c.id in removed])
    mounted = volume_users(images, staying, image_volumes)
    sandbox_refs = _sandbox_images(sandbox_image)
    sandbox_norm = {normalize_ref(r): r for r in sandbox_refs}
    # Fail safe: when no sandbox image is named, every image that looks like one stays (removing
    # it breaks the next pod start on a node that cannot pull). Some pinned image does not stand
    # for the sandbox image; a pinned look-alike only makes the warning unnecessary.
    unknown_sandbox = not sandbox_refs
    patterns = exclude_patterns(exclude)
    matched = set()
    for image in sorted(images, key=lambda i: i.id):
        item = image.to_dict()
        norm_refs = [normalize_ref(r) for r in image.refs]
        pattern = None
        for candidate in [image.id] + image.refs + norm_refs:
            pattern = matches_any(candidate, patterns)
            if pattern:
                pattern = patterns[pattern]
                matched.add(pattern)
                break
        sandbox = [sandbox_norm[r] for r in norm_refs if r in sandbox_norm] + [r for r in sandbox_refs if r == image.id]
        age = (ages or {}).get(image.id)
        if image.id in users:
            item['reason'] = 'in use by container %s' % _describe_user(users[image.id][0], len(users[image.id]) - 1)
            item['used_by'] = [c.id for c in users[image.id]]
            plan.keep.append(item)
        elif image.id in mounted:
            item['reason'] = 'mounted as an image volume by container %s' % _describe_user(
                mounted[image.id][0], len(mounted[image.id]) - 1)
            item['used_by'] = [c.id for c in mounted[image.id]]
            plan.keep.append(item)
        elif image.pinned:
            item['reason'] = 'pinned by the runtime'
            plan.keep.append(item)
        elif sandbox:
            item['reason'] = 'sandbox (pause) image of the runtime (%s)' % sandbox[0]
            plan.keep.append(item)
        elif unknown_sandbox and looks_like_sandbox_image(image):
            item['reason'] = ('looks like a sandbox (pause) image, and the runtime does not report its own; set '
                              'sandbox_image to name it')
            plan.keep.append(item)
        elif pattern:
            item['reason'] = 'excluded by pattern %r' % pattern
            plan.keep.append(item)
        elif image.id in (unusable or {}):
            item['reason'] = unusable[image.id][0]
            item['unusable'] = True
            plan.remove.append(item)
        elif min_age and age is None:
            item['reason'] = ('age unknown (not in the last-use record); kept because image_min_age is set')
            plan.keep.append(item)
        elif min_age and age < min_age:
            item['reason'] = 'younger than image_min_age %s (first seen %s ago, per the last-use record)' % (
                format_duration(min_age), format_duration(age))
            plan.keep.append(item)
        else:
            if image.id in freed_by:
                reason = 'used only by containers removed in this run'
            elif not image.tags:
                reason = 'unused and untagged (dangling)'
            else:
                reason = 'unused'
            item['reason'] = reason
            plan.remove.append(item)
    for item in plan.keep:
        if item['id'] in (unusable or {}):
            item['reason'] += unusable[item['id']][1]
    if retention is not None:
        retention.apply(plan)
    if unknown_sandbox and not pins_a_sandbox_image(images):
        plan.warnings.append('the runtime did not report its sandbox (pause) image and pins none that looks like '
                             'one: images that look like one (%s) are kept; set sandbox_image to name it'
                             % ', '.join(SANDBOX_IMAGE_LOOKALIKES))
    for pattern in exclude or ():
        if pattern not in matched:
            plan.warnings.append('image_exclude pattern %r matches no image on this node (a pattern is matched '
                                 'against tags, digests and ids; one without tag or digest, such as busybox, '
                                 'matches every tag and digest of its repository)' % pattern)
    return plan
