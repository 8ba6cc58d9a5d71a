# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""The four phases, plan first then act, shared by the modules and the node-side runner.

Every phase returns a plain dict: ``removed`` (what was, or in check mode would be, removed,
each item with its ``reason``), ``kept`` (what was deliberately kept, with its reason),
``failed`` (items whose removal failed, with the message), ``bytes``, ``changed``, ``warnings``
and the ``commands`` run.
"""

import time

from ._common import CommandError, CommandRunner, ImageGCError
from ._cri import Crictl, Ctr
from ._discovery import Discovery
from ._host import detect_peer_mirror, filesystem_usage
from ._settings import ENGINE_GROUPS, PHASES, names, validate
from . import _plan, _record

ENGINE_SETTINGS = names(*ENGINE_GROUPS)


def validate_settings(values, labels=None):
    """The engine's settings checked and converted (durations in seconds); ImageGCError naming the bad key."""
    return validate(values, ENGINE_SETTINGS, labels)


def _result(phase, check_mode):
    return {'phase': phase, 'check_mode': check_mode, 'changed': False, 'skipped': False,
            'removed': [], 'kept': [], 'failed': [], 'gone': [], 'bytes': 0, 'warnings': [],
            'commands': [], 'duration': 0.0}


def describe(exc):
    """The message of an exception a phase raised: ImageGCError messages name cause and fix."""
    if isinstance(exc, ImageGCError):
        return str(exc)
    return 'unexpected %s: %s' % (type(exc).__name__, exc)


def phase_status(result):
    """``failed`` (the phase raised, or an item could not be removed), ``skipped`` or ``ok``."""
    if result.get('error') or result.get('failed'):
        return 'failed'
    return 'skipped' if result.get('skipped') else 'ok'


class Engine(object):
    """Plans and runs phases for one node. ``runner``, ``discovery`` and ``clock`` are injectable.

    ``run`` is the one place that sequences the phases; the modules and the node runner are
    faces over it that pick which phases they offer.
    """

    def __init__(self, settings, phases, runner=None, discovery=None, clock=None, peer_mirror_root='/',
                 labels=None):
        """``settings``: the engine's settings (``ENGINE_SETTINGS``; missing ones take the table's
        default). ``phases``: what this engine will be asked to run, of PHASES and ``disk`` (the
        disk report); it decides which of crictl and ctr must be found. ``labels``: see
        validate_settings."""
        unknown = sorted(set(phases) - set(PHASES + ('disk',)))
        if unknown:
            raise ValueError('unknown phase(s): %s' % ', '.join(unknown))
        self.settings = validate_settings(settings, labels=labels)
        self.phases = tuple(p for p in PHASES + ('disk',) if p in phases)
        self.runner = runner or CommandRunner()
        self.clock = clock or time.time_ns
        self.peer_mirror_root = peer_mirror_root
        s = self.settings
        enabled = set(p for p in self.phases if p == 'disk' or s[p])
        # crictl serves every phase but the content prune: without it the run fails before it
        # starts. ctr serves only phase 4 (and image_min_age): a missing ctr fails those alone,
        # when they use it, with the error discovery found.
        self.runtime = (discovery or Discovery()).resolve(
            crictl_path=s['crictl_path'], ctr_path=s['ctr_path'], runtime_endpoint=s['runtime_endpoint'],
            image_endpoint=s['image_endpoint'], containerd_address=s['containerd_address'],
            timeout=s['timeout'], need_crictl=bool(enabled - set(('content',))), need_ctr=False)
        self.crictl = Crictl(self.runtime, self.runner, s['batch_size'])
        self.ctr = Ctr(self.runtime, self.runner, s['content_namespace'])
        # What earlier phases of this run removed (in check mode: planned to remove), so that a
        # later phase plans as it would after them: containers by id, image ids.
        self.removed_containers = {}
        self.removed_images = set()
        self._sandbox_image = None
        # What this run knows is on the node: the latest listing of each kind (containers,
        # sandboxes, images: id -> object), less what the run removed since.
        self._known = {}
        # Every container any listing of this run showed (evidence of use for the last-use
        # record, removed ones included), the record as read, and the disk report before.
        self._seen = {}
        self._record = None
        self._disk_before = None
        self.warnings = []
        self.write_failures = []         # files this run could not write: {'file', 'path', 'error'}

    # -- listings -----------------------------------------------------------------------------
    def _list(self, kind):
        """A fresh listing of ``kind``, remembered as what is known."""
        items = getattr(self.crictl, kind)()
        self._known[kind] = dict((i.id, i) for i in items)
        if kind == 'containers':
            now = self.clock() // 10 ** 9
            for c in items:
                self._seen[c.id] = (c, now)
        return items

    def _current(self, kind):
        """What this run knows of ``kind``: the latest listing less what was removed since, or a
        fresh listing when there is none yet. Safe for containers and sandboxes in phases 1 and 2
        (an exited container or a NotReady sandbox does not come back, and containerd creates no
        container in a sandbox that is not ready) and for the images of phase 3 (an image that
        appears later is simply not planned); phase 3 lists containers afresh before each
        removal batch."""
        if kind in self._known:
            return list(self._known[kind].values())
        return self._list(kind)

    def _forget(self, kind, ids):
        for i in ids:
            self._known.get(kind, {}).pop(i, None)

    def sandbox_image(self, images=()):
        """The sandbox image: the ``sandbox_image`` setting, else what ``crictl info`` reports
        (asked once per engine, and not at all when the runtime pins images: containerd 1.7 and
        2.x pin their sandbox image, and 2.x does not report it)."""
        if self.settings['sandbox_image']:
            return self.settings['sandbox_image']
        if self._sandbox_image is None:
            if any(i.pinned for i in images):
                return None
            self._sandbox_image = self.crictl.sandbox_image() or ''
        return self._sandbox_image or None

    def _finish(self, result, started, first_command):
        result['duration'] = round(time.monotonic() - started, 3)
        result['commands'] = [r.argv for r in self.runner.history[first_command:]]
        return result

    def _apply(self, result, plan, outcome):
        by_id = dict((item['id'], item) for item in plan.remove)
        result['removed'] = [by_id[i] for i in outcome.removed]
        result['gone'] = [by_id[i] for i in outcome.gone]
        result['failed'] = [dict(by_id[i], msg=msg) for i, msg in sorted(outcome.failed.items())]
        for item in result['failed']:
            result['warnings'].append('could not remove %s %s: %s' % (plan.phase[:-1], item['id'], item['msg']))
        result['changed'] = bool(result['removed'])
        self._forget(plan.phase, outcome.removed + outcome.gone)

    # -- the run ------------------------------------------------------------------------------
    def run(self, check_mode=False, on_event=None):
        """Every phase of ``phases`` in order, each failure-tolerant, between two disk reports
        when ``disk`` is one of ``phases``.

        Returns ``{check_mode, changed, status, phases: [phase result...], disk_before,
        disk_after, removed, bytes, failed_phases, skip_reason, warnings, commands}``; each phase result has a
        ``status`` (ok, failed, skipped) and, when the phase raised, its ``error``.
        ``on_event(kind, data)`` is called with ``('disk', {'when': ..., ...})`` and
        ``('phase', result)`` as the run goes.
        """
        emit = on_event or (lambda kind, data: None)
        first_command = len(self.runner.history)
        out = {'check_mode': check_mode, 'phases': [], 'disk_before': None, 'disk_after': None,
               'skip_reason': None, 'warnings': self.warnings}
        if 'disk' in self.phases:
            out['disk_before'] = self._disk_report('before', emit)
            out['skip_reason'] = self._below_threshold(out['disk_before'])
        for name, method in PHASE_TABLE:
            if name not in self.phases:
                continue
            started, first = time.monotonic(), len(self.runner.history)
            if not self.settings[name]:
                result = dict(_result(name, check_mode), skipped=True, skip_reason='disabled (%s: false)' % name)
            elif out['skip_reason']:
                result = dict(_result(name, check_mode), skipped=True, skip_reason=out['skip_reason'])
            else:
                try:
                    result = method(self, check_mode)
                except Exception as exc:  # pylint: disable=broad-except  # a failed phase never stops the next
                    result = self._finish(dict(_result(name, check_mode), error=describe(exc)), started, first)
                    if isinstance(exc, CommandError):
                        result['error_details'] = exc.to_dict()
            result['status'] = phase_status(result)
            out['phases'].append(result)
            emit('phase', result)
        if 'disk' in self.phases:
            if check_mode:
                # nothing was removed: the disk is as it was
                out['disk_after'] = dict(out['disk_before'], when='after')
                emit('disk', out['disk_after'])
            else:
                out['disk_after'] = self._disk_report('after', emit)
        if not check_mode and self._seen:
            self._save_record()
        out['write_failures'] = self.write_failures
        out['commands'] = [r.argv for r in self.runner.history[first_command:]]
        out['failed_phases'] = [r['phase'] for r in out['phases'] if r['status'] == 'failed']
        out['changed'] = any(r['changed'] for r in out['phases'])
        out['removed'] = sum(len(r['removed']) for r in out['phases'])
        out['bytes'] = sum(r['bytes'] for r in out['phases'])
        out['status'] = 'failed' if out['failed_phases'] else ('skipped' if out['skip_reason'] else 'ok')
        return out

    def _disk_report(self, when, emit):
        try:
            state = self.disk_state() if when == 'before' else self.disk_state(fresh=False)
        except Exception as exc:  # pylint: disable=broad-except  # a report, never a reason to stop
            state = {'error': describe(exc)}
        state['when'] = when
        emit('disk', state)
        return state

    def _below_threshold(self, disk):
        threshold = self.settings['disk_usage_threshold']
        values = [fs['fs_used_percent'] for fs in disk.get('image_filesystems', []) if 'fs_used_percent' in fs]
        if threshold and values and max(values) < threshold:
            return 'image filesystem %.1f%% used, below disk_usage_threshold %s%%: report only' % (
                max(values), threshold)
        return None

    # -- the last-use record -------------------------------------------------------------------
    def _evidence(self, images=None):
        """{image id: seconds}: the latest use each container seen in this run is evidence of."""
        containers = [c for c, dummy in self._seen.values()]
        ids = None
        if images is not None:
            ids = dict((c.id, image_id) for image_id, users in _plan.image_users(images, containers).items()
                       for c in users)
        out = {}
        for c, listed_at in self._seen.values():
            for image_id, when in _record.uses([c], listed_at, ids).items():
                out[image_id] = max(when, out.get(image_id, -1))
        return out

    def last_use(self, images=None):
        """The last-use record as this run sees it: as read, with this run's evidence merged in."""
        if self._record is None:
            self._record = _record.read(self.settings['image_record_path'], self.clock() // 10 ** 9)
            if self._record.warning:
                self.warnings.append(self._record.warning)
        return _record.merge(self._record.entries, self.clock() // 10 ** 9, self._evidence(images), images)

    def _save_record(self):
        # What the run knows is there now (what it removed is forgotten): entries of other images go.
        images = list(self._known['images'].values()) if 'images' in self._known else None
        entries = self.last_use(images)
        if self._record.keep_file:
            return                       # a newer format: left as it is (load warned)
        try:
            _record.save(self.settings['image_record_path'], entries, self.clock() // 10 ** 9)
        except OSError as exc:
            self.write_failures.append({'file': 'record', 'path': self.settings['image_record_path'],
                                        'error': exc.strerror or str(exc)})
            self.warnings.append('could not write the last-use record %s: %s' % (
                self.settings['image_record_path'], exc.strerror or exc))

    def _image_fs(self):
        """The fullest image filesystem (``used_bytes``/``size_bytes`` of the filesystem holding
        it), from the disk report before the run or, without one, read now; None if unknown."""
        disk = self._disk_before if self._disk_before is not None else self.disk_state(fresh=False)
        known = [fs for fs in disk.get('image_filesystems', []) if fs.get('fs_size_bytes')]
        if not known:
            return None
        fs = max(known, key=lambda f: f['fs_used_percent'])
        return {'used_bytes': fs['fs_used_bytes'], 'size_bytes': fs['fs_size_bytes'], 'path': fs['fs_path']}

    # -- phase 1 ------------------------------------------------------------------------------
    def containers_phase(self, check_mode=False):
        started, first = time.monotonic(), len(self.runner.history)
        result = _result('containers', check_mode)
        containers = self._current('containers')
        plan = _plan.plan_containers(containers, self.clock(), self.settings['created_min_age'],
                                     self.settings['keep_last_per_pod'])
        result['kept'] = plan.keep
        by_id = dict((c.id, c) for c in containers)
        if check_mode:
            result['removed'] = plan.remove
            result['changed'] = bool(plan.remove)
            done = plan.ids
        else:
            self._apply(result, plan, self.crictl.remove_containers(plan.ids))
            done = [item['id'] for item in result['removed'] + result['gone']]
        self.removed_containers.update((i, by_id[i]) for i in done)
        return self._finish(result, started, first)

    # -- phase 2 ------------------------------------------------------------------------------
    def sandboxes_phase(self, check_mode=False):
        started, first = time.monotonic(), len(self.runner.history)
        result = _result('sandboxes', check_mode)
        containers = [c for c in self._current('containers') if c.id not in self.removed_containers]
        sandboxes = self._current('sandboxes')
        plan = _plan.plan_sandboxes(sandboxes, containers, self.clock(), self.settings['sandbox_min_age'],
                                    self.settings['namespaces'], self.settings['exclude_namespaces'])
        result['kept'] = plan.keep
        if check_mode:
            result['removed'] = plan.remove
            result['changed'] = bool(plan.remove)
            done = set(plan.ids)
        else:
            self._apply(result, plan, self.crictl.remove_sandboxes(plan.ids))
            done = set(item['id'] for item in result['removed'] + result['gone'])
        # Removing a sandbox removes its containers too.
        gone = [c for c in containers if c.pod_id in done]
        self.removed_containers.update((c.id, c) for c in gone)
        if not check_mode:
            self._forget('containers', [c.id for c in gone])
        return self._finish(result, started, first)

    # -- phase 3 ------------------------------------------------------------------------------
    def images_phase(self, check_mode=False):
        started, first = time.monotonic(), len(self.runner.history)
        result = _result('images', check_mode)
        s = self.settings
        listed = self._current('containers')
        known = set(c.id for c in listed)
        containers = listed + [c for i, c in self.removed_containers.items() if i not in known]
        images = self._current('images')
        sandbox_image = self.sandbox_image(images)
        ages = None
        if s['image_min_age']:
            ages = _plan.image_manifest_ages(self.ctr.content())
        disk = None
        if s['disk_high']:
            disk = self._image_fs()
            if disk is None:
                result['warnings'].append('the image filesystem\'s usage is unknown here: disk_high/disk_low do '
                                          'not apply, only image_unused_for')
            else:
                disk.update(high=s['disk_high'], low=s['disk_low'])
        retention = _plan.Retention(self.clock() // 10 ** 9, s['image_unused_for'], self.last_use(images), disk,
                                    trust_ages=not self._record.saved_in_future)
        plan = _plan.plan_images(images, containers, sandbox_image, s['image_exclude'], s['image_min_age'],
                                 ages, removed_containers=self.removed_containers, retention=retention)
        result['kept'] = plan.keep
        result['warnings'].extend(plan.warnings)
        result['sandbox_image'] = sandbox_image
        if plan.disk:
            result['disk_target'] = plan.disk
        if check_mode:
            result['removed'] = plan.remove
            result['changed'] = bool(plan.remove)
        else:
            outcome = self.crictl.remove_images(plan.ids, before_batch=lambda batch: self._new_users(images, batch))
            by_id = dict((item['id'], item) for item in plan.remove)
            for image_id, reason in sorted(outcome.skipped.items()):
                result['kept'].append(dict(by_id[image_id], reason=reason))
            self._apply(result, plan, outcome)
        self.removed_images.update(item['id'] for item in result['removed'] + result['gone'])
        result['bytes'] = sum(item['size'] for item in result['removed'])
        return self._finish(result, started, first)

    def _new_users(self, images, batch):
        """{image id: reason} for the images of ``batch`` that a container uses now: containers
        are listed afresh right before each removal batch, because containerd's CRI removes an
        image even while a container uses it."""
        users = _plan.image_users(images, self._list('containers'))    # all images: a tag may have moved
        return dict((image_id, 'in use by container %s (%s), created after the plan was made' % (
            users[image_id][0].name, users[image_id][0].id[:13])) for image_id in batch if image_id in users)

    # -- phase 4 ------------------------------------------------------------------------------
    def content_phase(self, check_mode=False, settle=5.0):
        started, first = time.monotonic(), len(self.runner.history)
        result = _result('content', check_mode)
        mirror = detect_peer_mirror(self.peer_mirror_root)
        if mirror:
            message = ('%s: pruning content references removes the compressed layers this node serves to '
                       'its peers, and images can no longer be exported' % mirror)
            if self.settings['peer_mirror_action'] == 'skip':
                result['skipped'] = True
                result['skip_reason'] = message + ' (peer_mirror_action=skip)'
                return self._finish(result, started, first)
            result['warnings'].append(message + '; set peer_mirror_action=skip to leave the content store alone')
        before = self.ctr.content()
        if check_mode:
            # As the store will be once the images planned for removal are gone.
            before = _plan.without_images(before, self.removed_images)
        plan = _plan.plan_content(before)
        labels = sum(1 for b in before for k in b.labels if k.startswith(_plan.LAYER_LABEL_PREFIX))
        result['labels_removed'] = labels
        if not labels:
            pass                         # no layer label left: the prune would change nothing
        elif check_mode:
            self.ctr.prune_references(dry_run=True)
            result['removed'] = plan.remove
        else:
            self.ctr.prune_references()
            planned = set(plan.ids)
            deadline = time.monotonic() + settle
            while True:
                after = self.ctr.content()
                left = planned & set(b.digest for b in after)
                if not left or time.monotonic() >= deadline:
                    break
                time.sleep(0.2)          # containerd collects garbage asynchronously
            after_digests = set(b.digest for b in after)
            result['removed'] = [dict(b.to_dict(), id=b.digest, reason='collected after the prune')
                                 for b in sorted(before, key=lambda x: x.digest) if b.digest not in after_digests]
            reasons = dict((item['id'], item['reason']) for item in plan.remove)
            for item in result['removed']:
                item['reason'] = reasons.get(item['id'], item['reason'])
        result['bytes'] = sum(item['size'] for item in result['removed'])
        result['changed'] = bool(result['removed']) or labels > 0
        return self._finish(result, started, first)

    # -- disk state ---------------------------------------------------------------------------
    def disk_state(self, largest=5, fresh=True):
        """Read-only facts: image filesystem usage, object counts, reclaimable estimate.

        ``fresh=False`` (the report after a run) asks the runtime only for the image filesystem
        and counts from what the run listed and removed."""
        info = self.crictl.imagefsinfo()
        filesystems = []
        for fs in ((info.get('status') or {}).get('imageFilesystems') or []):
            mount = (fs.get('fsId') or {}).get('mountpoint', '')
            entry = {'mountpoint': mount,
                     'used_bytes': int((fs.get('usedBytes') or {}).get('value') or 0),
                     'inodes_used': int((fs.get('inodesUsed') or {}).get('value') or 0)}
            entry.update(filesystem_usage(mount))
            filesystems.append(entry)
        listing = self._list if fresh else self._current
        if fresh:
            self._disk_before = {'image_filesystems': filesystems}
        containers = listing('containers')
        sandboxes = listing('sandboxes')
        images = listing('images')
        exited = [c.id for c in containers if c.state == _plan.EXITED]
        sandbox_image = self.sandbox_image(images)
        plan = _plan.plan_images(images, containers, sandbox_image, self.settings['image_exclude'],
                                 removed_containers=exited)
        counts = {}
        for c in containers:
            key = c.state.replace('CONTAINER_', '').lower()
            counts[key] = counts.get(key, 0) + 1
        pods = {}
        for s in sandboxes:
            key = s.state.replace('SANDBOX_', '').lower()
            pods[key] = pods.get(key, 0) + 1
        biggest = sorted(images, key=lambda i: (-i.size, i.id))[:largest]
        return {
            'image_filesystems': filesystems,
            'image_fs_used_bytes': sum(f['used_bytes'] for f in filesystems),
            'containers': counts,
            'sandboxes': pods,
            'images': len(images),
            'images_bytes': sum(i.size for i in images),
            'reclaimable_images': len(plan.remove),
            'reclaimable_bytes': sum(item['size'] for item in plan.remove),
            'largest_images': [i.to_dict() for i in biggest],
            'sandbox_image': sandbox_image,
        }


# The phases in the order they run: each frees what the next one plans with (exited containers
# pin images; a removed sandbox takes its containers; removed images leave layer blobs).
PHASE_TABLE = (
    ('containers', Engine.containers_phase),
    ('sandboxes', Engine.sandboxes_phase),
    ('images', Engine.images_phase),
    ('content', Engine.content_phase),
)
