# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""The last-use record: when each image was first seen and last seen in use, kept on the node
across runs, restarts of containerd and of the node (the kubelet keeps this in memory only).

The file is JSON, written atomically::

    {"version": 1, "updated": 1764612345,
     "images": {"sha256:...": {"first_seen": 1764000000, "last_used": 1764600000, "refs": ["..."]}}}

Times are whole seconds since the epoch; ``last_used`` is null for an image never seen in use.
A missing or unreadable record is a warning and starts afresh: every image is then first seen
now, which keeps it for a whole ``image_unused_for`` (never a reason to remove more). A record of a
newer format is used the same way and never overwritten. Times after now count as now; a record
saved after now (the clock went back) turns age-based removal off for the run.
"""

import json

from ._cri import CONTAINER_RUNNING
from ._files import write_atomic
from ._units import seconds

VERSION = 1


class Loaded:
    """What ``read`` found: ``entries`` (``{image id: {'first_seen', 'last_used', 'refs'}}``), a
    ``warning`` or None, ``keep_file`` (a record of a newer format: plan as with no record, and
    never overwrite it) and ``saved_in_future`` (the record was saved after ``now``: the clock went
    back, so the ages it gives cannot be trusted this run)."""

    def __init__(self, entries=None, warning=None, keep_file=False, saved_in_future=False):
        self.entries = entries or {}
        self.warning = warning
        self.keep_file = keep_file
        self.saved_in_future = saved_in_future


def read(path, now=None):
    """The record at ``path`` as a Loaded; never raises. ``now`` (seconds) detects a record saved
    in the future."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return Loaded()
    except (OSError, ValueError) as exc:
        return Loaded(warning='the last-use record %s cannot be read (%s): every image counts as first seen now'
                      % (path, exc))
    version = data.get('version') if isinstance(data, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        return Loaded(keep_file=True, warning=(
            'the last-use record %s is a version %d record, newer than the version %d this collection writes '
            '(a newer collection wrote it): every image counts as first seen now, and the record is left as it is '
            '(not updated by this run). Upgrade the collection on this node.' % (path, version, VERSION)))
    entries = data.get('images') if version == VERSION else None
    if not isinstance(entries, dict):
        return Loaded(warning='the last-use record %s is not a version %d record: every image counts as first seen '
                      'now' % (path, VERSION))
    good = {}
    for image_id, entry in entries.items():
        if isinstance(entry, dict) and _time(entry.get('first_seen')) is not None and \
                (entry.get('last_used') is None or _time(entry.get('last_used')) is not None):
            good[image_id] = {'first_seen': int(entry['first_seen']),
                              'last_used': None if entry.get('last_used') is None else int(entry['last_used']),
                              'refs': [r for r in entry.get('refs') or [] if isinstance(r, str)]}
    warnings = []
    if len(good) != len(entries):
        warnings.append('the last-use record %s has %d malformed entries: those images count as first seen now'
                        % (path, len(entries) - len(good)))
    updated = _time(data.get('updated'))
    future = now is not None and updated is not None and updated > now
    if future:
        warnings.append('the last-use record %s was saved at %d, %ds after this run\'s clock (%d): the clock went '
                        'back, so the ages the record gives are not trusted and no image is removed for its age '
                        '(image_unused_for) in this run; times after now count as now'
                        % (path, updated, updated - now, now))
    return Loaded(good, '; '.join(warnings) or None, saved_in_future=future)


def _time(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def uses(containers, now, image_ids=None):
    """``{image id: seconds}``: the latest use each container is evidence of - now for a running
    container, its creation for any other (crictl lists no finish time). ``image_ids`` maps a
    container to its image (``_refs.image_users``); without it the container's ``imageRef``,
    the image id on containerd, is taken."""
    out = {}
    for c in containers:
        when = now if c.state == CONTAINER_RUNNING else seconds(c.created_ns)
        image_id = (image_ids or {}).get(c.id) or (c.image_ref if c.image_ref.startswith('sha256:') else None)
        if image_id and when > out.get(image_id, -1):
            out[image_id] = when
    return out


def merge(entries, now, used, images=None):
    """The record after this run: ``used`` ({image id: seconds}) raises ``last_used``, images
    listed (``images``, the whole listing when given) get a ``first_seen``, and entries of images
    that are gone are dropped (only when ``images`` is the listing, so they are known gone)."""
    # A time after now (saved by a clock that ran ahead, or skew) counts as now, and is stored so:
    # it would otherwise keep the image as used "now" until the clock catches up.
    out = {k: dict(v, first_seen=min(v['first_seen'], now),
                   last_used=None if v.get('last_used') is None else min(v['last_used'], now))
           for k, v in entries.items()}
    if images is not None:
        listed = {i.id: i for i in images}
        out = {k: v for k, v in out.items() if k in listed}
        for image_id, image in listed.items():
            entry = out.setdefault(image_id, {'first_seen': now, 'last_used': None, 'refs': []})
            entry['refs'] = sorted(image.refs)
    for image_id, when in used.items():
        if image_id not in out:
            if images is not None:
                continue                   # used by a container, but the image is gone
            out[image_id] = {'first_seen': now, 'last_used': None, 'refs': []}
        when = min(when, now)              # a container stamped in the future (clock skew) was used now
        entry = out[image_id]
        entry['first_seen'] = min(entry['first_seen'], when)
        if entry['last_used'] is None or when > entry['last_used']:
            entry['last_used'] = when
    return out


def save(path, entries, now):
    write_atomic(path, json.dumps({'version': VERSION, 'updated': now, 'images': entries},
                                  indent=1, sort_keys=True) + '\n')
