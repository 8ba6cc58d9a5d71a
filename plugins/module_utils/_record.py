# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""The last-use record: when each image was first seen and last seen in use, what runs removed
and which of those came back, kept on the node across runs, restarts of containerd and of the
node (the kubelet keeps this in memory only).

The file is JSON, written atomically::

    {"version": 2, "updated": 1764612345,
     "images": {"sha256:...": {"first_seen": 1764000000, "last_used": 1764600000, "refs": ["..."],
                               "size": 123}},
     "removed": {"sha256:...": {"at": 1764612000, "size": 123, "refs": ["..."]}},
     "repulls": {"images": 1, "bytes": 123, "recent": [{"id": ..., "refs": [...], "bytes": 123,
                                                        "removed_at": ..., "seen_at": ...}]}}

Times are whole seconds since the epoch; ``last_used`` is null for an image never seen in use.
``first_seen`` is the kubelet's ``firstDetected``: image age (``image_min_age``) is measured from it.
A version 1 record (``images`` only) is read and written back as version 2.

Several writers share the file: runs (the timer's and the modules') and the observation pass
(``node-image-gc observe``). Each changes it in one short transaction (``update``) under a lock of
its own (``<path>.lock``), never under the run lock a run holds for minutes: it re-reads the file,
applies what it saw (an ``Observation``) and writes the result only when that changed (``significant``).
``apply`` gives the same record whichever of two writers comes first.

A missing or unreadable record is a warning and starts afresh: every image is then first seen
now, which keeps it for a whole ``image_unused_for`` and ``image_min_age`` (never a reason to
remove more). A record of a newer format is used the same way and never overwritten. Times after
now count as now; a record saved after now (the clock went back) turns age-based removal off for
the run.
"""

import json

from ._listings import CONTAINER_RUNNING
from ._files import RunLock, write_atomic
from ._record_merge import RECENT, Observation, apply, empty_repulls, significant
from ._units import seconds

VERSION = 2
READABLE = (1, 2)
# How long a writer waits for the record's lock; it is held for a read, a merge and a write.
LOCK_WAIT = 30


class Loaded:
    """What ``read`` found: ``entries`` (``{image id: {'first_seen', 'last_used', 'refs', 'size'}}``),
    ``removed`` (``{image id: {'at', 'size', 'refs'}}``), ``repulls``, a ``warning`` or None,
    ``keep_file`` (a record of a newer format: plan as with no record, and never overwrite it),
    ``saved_in_future`` (the record was saved after ``now``: the clock went back, so the ages it gives
    cannot be trusted this run) and ``version`` (of the file read; None: none read)."""

    def __init__(self, entries=None, warning=None, keep_file=False, saved_in_future=False, removed=None,
                 repulls=None, version=None):
        self.entries = entries or {}
        self.warning = warning
        self.keep_file = keep_file
        self.saved_in_future = saved_in_future
        self.removed = removed or {}
        self.repulls = repulls or empty_repulls()
        self.version = version

    def state(self):
        """The record's content as ``apply`` takes it (copies)."""
        return {'images': {k: dict(v, refs=list(v['refs'])) for k, v in self.entries.items()},
                'removed': {k: dict(v, refs=list(v['refs'])) for k, v in self.removed.items()},
                'repulls': dict(self.repulls, recent=[dict(r) for r in self.repulls['recent']])}


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
    entries = data.get('images') if version in READABLE else None
    if not isinstance(entries, dict):
        return Loaded(warning='the last-use record %s is not a version %s record: every image counts as first seen '
                      'now' % (path, ' or '.join(str(v) for v in READABLE)))
    good = {}
    for image_id, entry in entries.items():
        if isinstance(entry, dict) and _time(entry.get('first_seen')) is not None and \
                (entry.get('last_used') is None or _time(entry.get('last_used')) is not None):
            good[image_id] = {'first_seen': int(entry['first_seen']),
                              'last_used': None if entry.get('last_used') is None else int(entry['last_used']),
                              'refs': _refs(entry.get('refs')), 'size': _time(entry.get('size')) or 0}
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
    return Loaded(good, '; '.join(warnings) or None, saved_in_future=future, removed=_removed(data.get('removed')),
                  repulls=_repulls(data.get('repulls')), version=version)


def _refs(value):
    return sorted(r for r in value or [] if isinstance(r, str)) if isinstance(value, list) else []


def _removed(value):
    out = {}
    for image_id, entry in (value.items() if isinstance(value, dict) else ()):
        if isinstance(entry, dict) and _time(entry.get('at')) is not None:
            out[image_id] = {'at': entry['at'], 'size': _time(entry.get('size')) or 0, 'refs': _refs(entry.get('refs'))}
    return out


def _repulls(value):
    out = empty_repulls()
    if isinstance(value, dict):
        out['images'] = _time(value.get('images')) or 0
        out['bytes'] = _time(value.get('bytes')) or 0
        out['recent'] = [r for r in value.get('recent') or [] if isinstance(r, dict)][-RECENT:]
    return out


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


def merge(entries, now, used, images=None, listed_at=None):
    """The entries after this run's evidence, in memory (for planning: nothing is written):
    ``used`` ({image id: seconds}), ``images`` (the listing, taken at ``listed_at``, default now)."""
    state = {'images': {k: dict(v, refs=list(v['refs'])) for k, v in entries.items()}, 'removed': {},
             'repulls': empty_repulls()}
    seen = Observation(now if listed_at is None else listed_at, images, used)
    return apply(state, seen, now)[0]['images']


def lock_path(path):
    return path + '.lock'


class Update:
    """What ``update`` did: ``state`` (the record after it), ``written`` (True, or False when
    nothing worth a write changed), ``repulled`` (re-pulls this writer found), ``warning`` (the
    record could not be used or written: why; the state is then what it would have been),
    ``error`` (the write failed: why), ``skipped`` (the lock was not had: nothing was written)
    and ``loaded`` (the record as read)."""

    def __init__(self, state, written, repulled, warning=None, loaded=None):
        self.state = state
        self.written = written
        self.repulled = repulled
        self.warning = warning
        self.loaded = loaded
        self.error = None
        self.skipped = False


def update(path, seen, now, wait=LOCK_WAIT, after=None, force=False):
    """Applies the Observation ``seen`` to the record at ``path`` in one transaction under the
    record's own lock: read, ``apply``, write when ``significant`` (or ``force``: a run writes
    at every real run, which keeps ``updated`` a true "last run" time). ``after(update)``, if given,
    runs still under the lock (the runner writes its metrics there, so that two writers never
    export the re-pull counters out of order). Never raises for the file: an OSError writing it is
    the Update's ``error`` (and ``warning``); a lock not had within ``wait`` seconds, ``skipped``."""
    lock = RunLock(lock_path(path), wait, poll=0.05)
    try:
        held = lock.acquire()
    except OSError as exc:
        result = _unlocked(path, seen, now, 'could not write the last-use record %s: its lock %s cannot be taken (%s)'
                           % (path, lock_path(path), exc.strerror or exc))
        result.error = exc.strerror or str(exc)
        return result
    if not held:
        return _unlocked(path, seen, now, 'the last-use record\'s lock %s was held for longer than %ss (by pid %s): '
                         'this update is skipped; the next pass or run sees the node again'
                         % (lock_path(path), wait, lock.holder()))
    try:
        loaded = read(path, now)
        state, found = apply(loaded.state(), seen, now)
        result = Update(state, False, found, loaded.warning, loaded)
        if not loaded.keep_file and (force or loaded.version != VERSION or significant(loaded.state(), state)):
            try:
                save(path, state, now)
                result.written = True
            except OSError as exc:
                result.error = exc.strerror or str(exc)
                result.warning = 'could not write the last-use record %s: %s' % (path, result.error)
        if after is not None:
            after(result)
        return result
    finally:
        lock.release()


class Locked:
    """``with Locked(path) as held:`` the record's lock around something that must not interleave
    with an update (the runner's report and metrics); ``held`` False: not had within ``wait``
    seconds (or the lock file could not be opened), go on without it."""

    def __init__(self, path, wait=LOCK_WAIT):
        self.lock = RunLock(lock_path(path), wait, poll=0.05)
        self.held = False

    def __enter__(self):
        try:
            self.held = self.lock.acquire()
        except OSError:
            self.held = False
        return self.held

    def __exit__(self, *exc):
        if self.held:
            self.lock.release()


def _unlocked(path, seen, now, warning):
    loaded = read(path, now)
    state, found = apply(loaded.state(), seen, now)
    result = Update(state, False, found, warning, loaded)
    result.skipped = True
    return result


def save(path, state, now):
    """Writes ``state`` (or, as version 1 callers pass it, bare entries) as a version 2 record."""
    if 'images' not in state or 'removed' not in state:
        state = {'images': state, 'removed': {}, 'repulls': empty_repulls()}
    write_atomic(path, json.dumps({'version': VERSION, 'updated': now, 'images': state['images'],
                                   'removed': state['removed'], 'repulls': state['repulls']},
                                  indent=1, sort_keys=True) + '\n')
