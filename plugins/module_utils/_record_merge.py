# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""How one writer's sightings merge into the last-use record (_record keeps the file): what a
writer saw (``Observation``: an image listing and when it was taken, evidence of use, what a run
removed), how it is applied to the record's content (``apply``, the same whichever of two writers
comes first) and when the result is worth a write (``significant``). Pure functions over plain
dicts; docs/architecture.md, "The observation pass", has the design."""

# A last use that moved by less than this is not worth a write of its own (a container that runs for
# days would otherwise rewrite the file at every observation pass); docs/architecture.md says why 30 min.
LAST_USE_STEP = 30 * 60
# A removed image seen again within this long of its removal counts as a re-pull (issue 26).
REGRET_WINDOW = 7 * 24 * 3600
# Re-pulls listed by id in ``repulls.recent`` (the counters count them all).
RECENT = 20


def empty_repulls():
    return {'images': 0, 'bytes': 0, 'recent': []}


class Observation:
    """What one writer saw: ``images`` (the _listings.Image listing taken at ``listed_at`` seconds, or
    None when it listed none), ``used`` (``{image id: seconds}``, see ``uses``) and, for a run,
    ``removed`` (``{image id: {'at', 'size', 'refs'}}``: the images it removed, and when)."""

    def __init__(self, listed_at=None, images=None, used=None, removed=None):
        self.listed_at = listed_at
        self.images = images
        self.used = used or {}
        self.removed = removed or {}


def apply(state, seen, now):
    """``state`` (``Loaded.state()``, changed in place and returned) after the Observation ``seen``,
    and the re-pulls it found: ``(state, [re-pull...])``. The same state results whichever of two
    writers applies first (a run stamps its removals with the time it writes them, so any listing
    applied before was taken before that), which is what lets each writer apply only what it saw:

    - what the writer removed leaves ``images`` and goes into ``removed`` (kept REGRET_WINDOW);
    - an image listed and not in the record is first seen at ``listed_at`` (the kubelet's
      ``firstDetected``), unless it was removed after the listing was taken;
    - a removed image listed again after its removal, within REGRET_WINDOW, is a re-pull: counted
      (images, and bytes: the size listed now) and its removal forgotten;
    - an entry the listing does not show is dropped only when its ``first_seen`` is not after the
      listing (an image another writer saw appear later stays);
    - ``last_used`` only moves forward and ``first_seen`` only back; times after ``now`` count as now.
    """
    entries, removed, repulls = state['images'], state['removed'], state['repulls']
    for entry in entries.values():
        entry['first_seen'] = min(entry['first_seen'], now)
        if entry['last_used'] is not None:
            entry['last_used'] = min(entry['last_used'], now)
    for image_id, info in seen.removed.items():
        entries.pop(image_id, None)
        if image_id not in removed or removed[image_id]['at'] < info['at']:
            removed[image_id] = {'at': min(info['at'], now), 'size': info.get('size', 0),
                                 'refs': sorted(info.get('refs', []))}
    found = []
    if seen.images is not None:
        listed_at = min(seen.listed_at, now)
        listed = {i.id: i for i in seen.images}
        for image_id, image in sorted(listed.items()):
            gone = removed.get(image_id)
            if gone is not None:
                if gone['at'] >= listed_at:
                    continue                     # removed after this listing was taken
                del removed[image_id]
                if listed_at - gone['at'] <= REGRET_WINDOW:
                    found.append({'id': image_id, 'refs': sorted(image.refs) or gone['refs'], 'bytes': image.size,
                                  'removed_at': gone['at'], 'seen_at': listed_at})
            entry = entries.setdefault(image_id, {'first_seen': listed_at, 'last_used': None, 'refs': [], 'size': 0})
            entry['refs'] = sorted(image.refs)
            entry['size'] = image.size
        for image_id in [k for k, v in entries.items() if k not in listed and v['first_seen'] <= listed_at]:
            del entries[image_id]
    for image_id, when in seen.used.items():
        if image_id in removed:
            continue                             # the use predates the removal (a removed container's image)
        if image_id not in entries:
            if seen.images is not None:
                continue                         # used by a container, but the image is gone
            entries[image_id] = {'first_seen': now, 'last_used': None, 'refs': [], 'size': 0}
        when = min(when, now)                    # a container stamped in the future (clock skew) was used now
        entry = entries[image_id]
        entry['first_seen'] = min(entry['first_seen'], when)
        if entry['last_used'] is None or when > entry['last_used']:
            entry['last_used'] = when
    for image_id in [k for k, v in removed.items() if now - v['at'] > REGRET_WINDOW]:
        del removed[image_id]
    if found:
        repulls['images'] += len(found)
        repulls['bytes'] += sum(r['bytes'] for r in found)
        repulls['recent'] = (repulls['recent'] + found)[-RECENT:]
    return state, found


def significant(old, new, step=None):
    """Whether ``new`` differs from ``old`` (both states) by more than ``last_used`` times that moved
    by less than ``step`` seconds (default LAST_USE_STEP): only then is the record worth writing."""
    step = LAST_USE_STEP if step is None else step
    if old['removed'] != new['removed'] or old['repulls'] != new['repulls'] or set(old['images']) != set(new['images']):
        return True
    for image_id, entry in new['images'].items():
        before = old['images'][image_id]
        if (before['first_seen'], before['refs'], before['size']) != (entry['first_seen'], entry['refs'], entry['size']):
            return True
        if (before['last_used'] is None) != (entry['last_used'] is None):
            return True
        if entry['last_used'] is not None and abs(entry['last_used'] - before['last_used']) >= step:
            return True
    return False
