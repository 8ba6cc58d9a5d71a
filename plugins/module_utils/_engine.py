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
from ._host import detect_peer_mirror, filesystem_figure, filesystem_usage, settled_figure
from ._node import Node, build_pods
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


class Engine:
    """Runs phases for one node: the settings, what discovery found, the node as this run sees
    it (``node``, a _node.Node) and the one loop over PHASE_TABLE. ``runner``, ``discovery`` and
    ``clock`` are injectable.

    ``run`` is the one place that sequences the phases; the modules and the node runner are
    faces over it that pick which phases they offer. Each phase is a small unit (a Phase) that
    plans over ``node`` and acts; the node forgets what a phase removed (in check mode: planned
    to remove), so the next phase plans as it would after it.
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
        enabled = {p for p in self.phases if p == 'disk' or s[p]}
        # crictl serves every phase but the content prune: without it the run fails before it
        # starts. ctr serves only phase 4 (image_min_age is measured from the last-use record):
        # a missing ctr fails that phase alone, with the error discovery found.
        self.runtime = (discovery or Discovery()).resolve(
            crictl_path=s['crictl_path'], ctr_path=s['ctr_path'], runtime_endpoint=s['runtime_endpoint'],
            image_endpoint=s['image_endpoint'], containerd_address=s['containerd_address'],
            timeout=s['timeout'], need_crictl=bool(enabled - {'content'}), need_ctr=False,
            kubelet_root=s['kubelet_root'])
        self.crictl = Crictl(self.runtime, self.runner, s['batch_size'])
        self.ctr = Ctr(self.runtime, self.runner, s['content_namespace'])
        self.node = Node(self.crictl, self.clock, self.runtime.kubelet_root)
        self._sandbox_image = None
        self._record = None
        self.regret = None               # the re-pull counters after this run's record update
        self._disk_before = None
        self._fs_path = None             # the path statvfs reads for the image filesystem's figure
        self.warnings = []
        self.write_failures = []         # files this run could not write: {'file', 'path', 'error'}
        if s['pod_aware'] and not self.runtime.kubelet_root and enabled & {'containers', 'sandboxes'}:
            self.warnings.append(
                'no kubelet root found (tried %s): pods are judged by the state of their sandboxes alone, so the '
                'containers and sandbox of a pod the kubelet still tracks but whose sandbox is NotReady (a '
                'completed Job, a pod being restarted) may go; set kubelet_root to the kubelet\'s --root-dir'
                % ', '.join(t for t in self.runtime.tried if 'kubelet root' in t))

    def sandbox_images(self, images=()):
        """The sandbox images, a list: the ``sandbox_image`` setting added to
        what ``crictl info`` reports. ``crictl info`` is asked once per engine, and not when the
        runtime pins an image that looks like a sandbox image (containerd 1.7 and 2.x pin their
        sandbox image, and 2.x does not report it); any other pinned image says nothing about it."""
        names = [self.settings['sandbox_image']] if self.settings['sandbox_image'] else []
        if self._sandbox_image is None:
            if _plan.pins_a_sandbox_image(images):
                return names
            self._sandbox_image = self.crictl.sandbox_image() or ''
        if self._sandbox_image and self._sandbox_image not in names:
            names.append(self._sandbox_image)
        return names

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
               'skip_reason': None, 'warnings': self.warnings, 'runtime': self.runtime.to_dict()}
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
                    result = _finish(self, dict(_result(name, check_mode), error=describe(exc)), started, first)
                    if isinstance(exc, CommandError):
                        result['error_details'] = exc.to_dict()
            result['status'] = phase_status(result)
            out['phases'].append(result)
            emit('phase', result)
        if 'disk' in self.phases:
            if check_mode:
                # nothing was removed: the disk is as it was (stated, not measured)
                out['disk_after'] = dict(out['disk_before'], when='after')
                if out['disk_after'].get('filesystem'):
                    out['disk_after']['filesystem'] = dict(out['disk_after']['filesystem'], note=CHECK_MODE_NOTE)
                emit('disk', out['disk_after'])
            else:
                out['disk_after'] = self._disk_report('after', emit)
        if not check_mode and self.node.seen:
            self._save_record()
        out['regret'] = self.regret
        out['write_failures'] = self.write_failures
        out['commands'] = [r.argv for r in self.runner.history[first_command:]]
        out['failed_phases'] = [r['phase'] for r in out['phases'] if r['status'] == 'failed']
        out['changed'] = any(r['changed'] for r in out['phases'])
        out['removed'] = sum(len(r['removed']) for r in out['phases'])
        out['bytes'] = sum(r['bytes'] for r in out['phases'])
        out['status'] = 'failed' if out['failed_phases'] else ('skipped' if out['skip_reason'] else 'ok')
        out['summary'] = summary_line(out)
        return out

    def _disk_report(self, when, emit):
        try:
            state = self.disk_state() if when == 'before' else self.disk_state(fresh=False, settle=True)
        except Exception as exc:  # pylint: disable=broad-except  # a report, never a reason to stop
            state = {'error': describe(exc)}
            if when == 'after' and self._fs_path:
                # the runtime did not answer; the filesystem it named before still can
                state['filesystem'] = settled_figure(self._fs_path)
            if not state.get('filesystem'):
                state['filesystem'] = None
                state['filesystem_unknown'] = state['error']
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
        containers = [c for c, dummy in self.node.seen.values()]
        ids = None
        if images is not None:
            ids = {c.id: image_id for image_id, users in _plan.image_users(images, containers).items()
                   for c in users}
        out = {}
        for c, listed_at in self.node.seen.values():
            for image_id, when in _record.uses([c], listed_at, ids).items():
                out[image_id] = max(when, out.get(image_id, -1))
        return out

    def last_use(self, images=None):
        """The last-use record as this run sees it: as read, with this run's evidence merged in."""
        if self._record is None:
            self._record = _record.read(self.settings['image_record_path'], self.clock() // 10 ** 9)
            if self._record.warning:
                self.warnings.append(self._record.warning)
        return _record.merge(self._record.entries, self.clock() // 10 ** 9, self._evidence(images), images,
                             listed_at=self.node.listed_at.get('images'))

    def ages_trusted(self):
        """False when the last-use record was saved after now (the clock went back): ages measured
        from it cannot be trusted, so image_unused_for removes nothing in this run."""
        self.last_use()
        return not self._record.saved_in_future

    def _save_record(self):
        """The record updated with what this run saw and removed, in one short transaction under
        the record's own lock (the observation pass writes it too, without the run lock)."""
        self.last_use()                  # read once: its warnings are this run's
        now = self.clock() // 10 ** 9
        images = self.node.current('images') if self.node.listed('images') else None
        removed = {image_id: {'at': now, 'size': image.size, 'refs': image.refs}
                   for image_id, image in self.node.removed['images'].items()}
        seen = _record.Observation(self.node.listed_at.get('images'), images, self._evidence(images), removed)
        path = self.settings['image_record_path']
        update = _record.update(path, seen, now, force=True)
        self.regret = {'images': update.state['repulls']['images'], 'bytes': update.state['repulls']['bytes'],
                       'found_now': update.repulled}
        if update.error or update.skipped:
            if update.error:
                self.write_failures.append({'file': 'record', 'path': path, 'error': update.error})
            self.warnings.append(update.warning)

    def _image_fs(self):
        """The fullest image filesystem (``used_bytes``/``size_bytes`` of the filesystem holding
        it), from the disk report before the run or, without one, read now; None if unknown."""
        disk = self._disk_before if self._disk_before is not None else self.disk_state(fresh=False)
        known = [fs for fs in disk.get('image_filesystems', []) if fs.get('fs_size_bytes')]
        if not known:
            return None
        fs = max(known, key=lambda f: f['fs_used_percent'])
        return {'used_bytes': fs['fs_used_bytes'], 'size_bytes': fs['fs_size_bytes'], 'path': fs['fs_path']}

    # -- single phases (for tests and callers that want one) ---------------------------------
    def run_phase(self, name, check_mode=False):
        """One phase, outside the loop (no skip rules, exceptions raise)."""
        return dict(PHASE_TABLE)[name](self, check_mode)

    def containers_phase(self, check_mode=False):
        return self.run_phase('containers', check_mode)

    def sandboxes_phase(self, check_mode=False):
        return self.run_phase('sandboxes', check_mode)

    def images_phase(self, check_mode=False):
        return self.run_phase('images', check_mode)

    def content_phase(self, check_mode=False):
        return self.run_phase('content', check_mode)

    # -- disk state ---------------------------------------------------------------------------
    def measure(self):
        """The image filesystem's figure now, read from the filesystem once containerd's garbage
        collection has settled (see _host.settled_figure); None if unknown."""
        if self._fs_path is None:
            self._image_fs()
        return settled_figure(self._fs_path) if self._fs_path else None

    def disk_state(self, largest=5, fresh=True, settle=False):
        """Read-only facts: image filesystem usage, object counts, reclaimable estimate.

        ``filesystem``: the fullest image filesystem's figure read from the filesystem itself
        (statvfs; ``settle``: once two readings agree, see _host.settled_figure), or None with
        ``filesystem_unknown`` saying why. ``image_fs_used_bytes`` is the runtime's own figure
        (CRI imagefsinfo: refreshed on containerd's schedule, snapshots only on 1.6).

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
        known = [f for f in filesystems if f.get('fs_size_bytes') and 'fs_used_bytes' in f]
        figure, unknown = None, None
        if known:
            fullest = max(known, key=lambda f: f.get('fs_used_percent') or 0)
            self._fs_path = fullest.get('fs_path') or fullest['mountpoint']
            figure = settled_figure(self._fs_path) if settle else filesystem_figure(self._fs_path, fullest)
        if figure is None:
            unknown = ('the runtime reported no image filesystem' if not filesystems else
                       'the image filesystem (%s) cannot be read here' % ', '.join(f['mountpoint'] for f in filesystems))
        listing = self.node.list if fresh else self.node.current
        if fresh:
            self._disk_before = {'image_filesystems': filesystems}
        containers = listing('containers')
        sandboxes = listing('sandboxes')
        images = listing('images')
        # reclaimable: what phase 3 would remove once phase 1's rules removed their containers
        leaving = ContainersPhase.plan_over(self, containers, sandboxes).ids
        sandbox_images = self.sandbox_images(images)
        plan = _plan.plan_images(images, containers, sandbox_images, self.settings['image_exclude'],
                                 removed_containers=leaving, image_volumes=self.node.known_image_volumes())
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
            'filesystem': figure,
            'filesystem_unknown': unknown,
            'image_filesystems': filesystems,
            'image_fs_used_bytes': sum(f['used_bytes'] for f in filesystems),
            'containers': counts,
            'sandboxes': pods,
            'images': len(images),
            'images_bytes': sum(i.size for i in images),
            'reclaimable_images': len(plan.remove),
            'reclaimable_bytes': sum(item['size'] for item in plan.remove),
            'largest_images': [i.to_dict() for i in biggest],
            'sandbox_image': ', '.join(sandbox_images) or None,
        }


CHECK_MODE_NOTE = 'check mode: nothing removed, after = before'


def human_bytes(n):
    """``11.40 MB`` (powers of 1024, as Ansible's human_readable writes them)."""
    n, unit = float(n), 'Bytes'
    for bigger in ('KB', 'MB', 'GB', 'TB'):
        if abs(n) < 1024:
            break
        n, unit = n / 1024.0, bigger
    return '%.2f %s' % (n, unit)


def _figure_text(disk):
    fs = (disk or {}).get('filesystem')
    if not fs or fs.get('used_percent') is None:
        return 'unknown'
    return '%.1f%%' % fs['used_percent']


def summary_line(run):
    """The run in one line: ``freed 11.40 MB (5 images, 4 blobs); /var/lib/containerd 81.2% ->
    62.0%`` -- the sum of what the phases removed, and the image filesystem's figures read from
    the filesystem before and after (after containerd's garbage collection settled); ``unknown``
    where a figure could not be read. Check mode: ``would free``, after = before, stated."""
    counts = {}
    for result in run.get('phases', []):
        counts[result['phase']] = len(result.get('removed', []))
    parts = ['%d %s' % (counts[p], label) for p, label in (
        ('containers', 'containers'), ('sandboxes', 'sandboxes'), ('images', 'images'), ('content', 'blobs'))
        if p in counts]
    freed = sum(r.get('bytes', 0) for r in run.get('phases', []))
    line = '%s %s (%s)' % ('would free' if run.get('check_mode') else 'freed', human_bytes(freed),
                           ', '.join(parts) or 'no phase ran')
    before, after = run.get('disk_before'), run.get('disk_after')
    if before is None and after is None:
        return line
    fs = (before or {}).get('filesystem') or (after or {}).get('filesystem') or {}
    line += '; %s %s -> %s' % (fs.get('path', 'image filesystem'), _figure_text(before), _figure_text(after))
    if run.get('check_mode') and fs:
        line += ' (check mode: nothing removed)'
    elif (after or {}).get('filesystem') and not after['filesystem'].get('settled', True):
        line += ' (still changing after %ss)' % after['filesystem'].get('waited')
    return line


def _finish(engine, result, started, first_command):
    result['duration'] = round(time.monotonic() - started, 3)
    result['commands'] = [r.argv for r in engine.runner.history[first_command:]]
    return result


class Phase:
    """One phase of one run: ``plan()`` over the engine's node, then, unless in check mode,
    ``act(plan)``; the node then forgets what went (in check mode: what would go)."""

    name = None

    def __init__(self, engine, check_mode):
        self.engine = engine
        self.settings = engine.settings
        self.node = engine.node
        self.check_mode = check_mode
        self.started, self.first = time.monotonic(), len(engine.runner.history)
        self.result = _result(self.name, check_mode)

    @classmethod
    def entry(cls, engine, check_mode=False):
        """The PHASE_TABLE entry: ``(engine, check_mode) -> result``."""
        return cls(engine, check_mode).run()

    def finish(self):
        return _finish(self.engine, self.result, self.started, self.first)

    def run(self):
        plan = self.plan()
        result = self.result
        result['kept'] = plan.keep
        result['warnings'].extend(plan.warnings)
        if self.check_mode:
            result['removed'] = plan.remove
            result['changed'] = bool(plan.remove)
            done = plan.ids
        else:
            self.apply(plan, self.act(plan))
            done = [item['id'] for item in result['removed'] + result['gone']]
        self.node.forget(self.name, done)
        return self.finish()

    def apply(self, plan, outcome):
        result = self.result
        by_id = {item['id']: item for item in plan.remove}
        result['removed'] = [by_id[i] for i in outcome.removed]
        result['gone'] = [by_id[i] for i in outcome.gone]
        result['failed'] = [dict(by_id[i], msg=msg) for i, msg in sorted(outcome.failed.items())]
        for item in result['failed']:
            result['warnings'].append('could not remove %s %s: %s' % (self.name[:-1], item['id'], item['msg']))
        result['changed'] = bool(result['removed'])

    def pods(self):
        """{sandbox id: Pod} when the kubelet's rules apply (``pod_aware``), else None."""
        return self.node.pods() if self.settings['pod_aware'] else None


class ContainersPhase(Phase):
    """Phase 1: exited containers (crictl rm), by the kubelet's rules per pod."""

    name = 'containers'

    @staticmethod
    def plan_over(engine, containers, sandboxes):
        s = engine.settings
        pods = build_pods(sandboxes, containers, engine.node.tracked)
        return _plan.plan_containers(containers, engine.clock(), s['created_min_age'], pods,
                                     s['namespaces'], s['exclude_namespaces'], pod_aware=s['pod_aware'])

    def plan(self):
        s = self.settings
        containers = self.node.current('containers')
        # the pods' namespaces and states; without the kubelet's rules and namespace filters
        # (pod_aware: false) phase 1 needs no sandbox listing
        needed = s['pod_aware'] or s['namespaces'] or s['exclude_namespaces']
        sandboxes = self.node.current('sandboxes') if needed else []
        return self.plan_over(self.engine, containers, sandboxes)

    def act(self, plan):
        return self.engine.crictl.remove_containers(plan.ids)


class SandboxesPhase(Phase):
    """Phase 2: NotReady sandboxes (crictl rmp), never one that holds a container that stays."""

    name = 'sandboxes'

    def plan(self):
        s = self.settings
        containers = self.node.current('containers')
        sandboxes = self.node.current('sandboxes')
        leaving = ContainersPhase.plan_over(self.engine, containers, sandboxes).ids if s['pod_aware'] else ()
        return _plan.plan_sandboxes(sandboxes, containers, self.engine.clock(), s['sandbox_min_age'],
                                    s['namespaces'], s['exclude_namespaces'], pods=self.pods(), leaving=leaving)

    def act(self, plan):
        return self.engine.crictl.remove_sandboxes(plan.ids)


class ImagesPhase(Phase):
    """Phase 3: images no container that stays uses (crictl rmi)."""

    name = 'images'

    def _check_listing(self):
        """An empty container listing while sandboxes are Ready is not trusted (a wrong endpoint
        shows no container, and every unpinned image would look unused)."""
        if self.node.first_listing.get('containers') != 0:
            return
        ready = self.node.ready_sandboxes()
        if ready:
            rt = self.engine.runtime
            raise ImageGCError(
                'crictl ps --all listed no container while %d sandbox(es) are Ready (%s): the container listing is '
                'not trusted and no image is removed. Endpoints used: runtime %s, image %s; set runtime_endpoint '
                'and image_endpoint to the runtime the kubelet uses' % (
                    len(ready), ', '.join(sorted(x.name or x.id[:13] for x in ready))[:200],
                    rt.runtime_endpoint, rt.image_endpoint))

    def plan(self):
        s, engine, result = self.settings, self.engine, self.result
        staying = self.node.current('containers')
        self._check_listing()
        known = {c.id for c in staying}
        containers = staying + [c for i, c in self.node.removed['containers'].items() if i not in known]
        images = self.node.current('images')
        self.images = images
        sandbox_images = engine.sandbox_images(images)
        volumes = self.node.image_volumes(staying)
        ages = None
        if s['image_min_age']:
            # from when the collection first saw each image (the kubelet's firstDetected), not from
            # the content store: an image the record does not know yet is first seen now
            now = engine.clock() // 10 ** 9
            ages = {image_id: max(0, now - entry['first_seen']) for image_id, entry in engine.last_use(images).items()}
        disk = None
        if s['disk_high']:
            disk = engine._image_fs()
            if disk is None:
                result['warnings'].append('the image filesystem\'s usage is unknown here: disk_high/disk_low do '
                                          'not apply, only image_unused_for')
            else:
                disk.update(high=s['disk_high'], low=s['disk_low'])
        retention = _plan.Retention(engine.clock() // 10 ** 9, s['image_unused_for'], engine.last_use(images), disk,
                                    trust_ages=engine.ages_trusted())
        plan = _plan.plan_images(images, containers, sandbox_images, s['image_exclude'], s['image_min_age'],
                                 ages, removed_containers=list(self.node.removed['containers']), retention=retention,
                                 image_volumes=volumes)
        result['sandbox_image'] = ', '.join(sandbox_images) or None
        if plan.disk:
            result['disk_target'] = plan.disk
        return plan

    def act(self, plan):
        target = plan.disk if plan.disk and plan.disk.get('candidates') else None
        by_id = {item['id']: item for item in plan.remove + plan.keep}
        ids = [i for i in plan.ids if not (target and by_id[i].get('disk_target'))]
        outcome = self.engine.crictl.remove_images(ids, before_batch=self._new_users)
        if target:
            self._to_target(plan, target, by_id, outcome)
        for image_id, reason in sorted(outcome.skipped.items()):
            self.result['kept'].append(dict(by_id[image_id], reason=reason))
        return outcome

    def _to_target(self, plan, target, by_id, outcome):
        """The disk target, measured: the candidates go one at a time, least recently used
        first, and the filesystem is read again (once containerd's garbage collection settled)
        after each, until its usage is at or below disk_low or no candidate is left. ``plan``
        is brought in line with what went (for Phase.apply) and ``target`` says what was
        measured."""
        low, result = target['low'], self.result
        estimated = [i for i in target['candidates'] if by_id[i].get('disk_target')]
        candidates = list(target['candidates'])
        figure = self.engine.measure()
        steps = []
        while figure is not None and candidates and figure['used_bytes'] * 100 > low * figure['size_bytes']:
            image_id = candidates.pop(0)
            item = by_id[image_id]
            item['reason'] = _plan.Retention.target_reason(round(target['used_percent']), low, '%s; %.1f%% before it '
                                                           'went (measured)' % (plan.last_use[image_id],
                                                                                figure['used_percent']))
            step = self.engine.crictl.remove_images([image_id], before_batch=self._new_users)
            for key in ('removed', 'gone', 'commands'):
                getattr(outcome, key).extend(getattr(step, key))
            outcome.failed.update(step.failed)
            outcome.skipped.update(step.skipped)
            figure = self.engine.measure()
            steps.append({'id': image_id, 'used_percent': figure['used_percent'] if figure else None})
        taken = [s['id'] for s in steps]
        # plan.remove: what was tried; plan.keep (the result's kept): the candidates left, with why
        plan.remove[:] = [i for i in plan.remove if not i.get('disk_target')] + [by_id[i] for i in taken]
        plan.keep[:] = [i for i in plan.keep if i['id'] not in taken]
        for image_id in estimated:
            if image_id not in taken:
                item = by_id[image_id]
                item.pop('disk_target', None)
                item['reason'] = 'kept: the image filesystem was at or below disk_low %d%% (measured) before its turn, ' \
                                 'though the estimate had it go' % low
                plan.keep.append(item)
        target['measured'] = {'steps': steps, 'used_percent': figure['used_percent'] if figure else None,
                              'used_bytes': figure['used_bytes'] if figure else None,
                              'reached': bool(figure) and figure['used_bytes'] * 100 <= low * figure['size_bytes']}
        if figure is None:
            result['warnings'].append('the image filesystem could not be read during the disk target: it stopped '
                                      'after %d image(s)' % len(steps))
        elif not target['measured']['reached']:
            result['warnings'].append('the image filesystem is at %.1f%% (measured) after every unused image that may '
                                      'go was removed: disk_low %d%% is not reached' % (figure['used_percent'], low))

    def run(self):
        super().run()
        self.result['bytes'] = sum(item['size'] for item in self.result['removed'])
        return self.result

    def _new_users(self, batch):
        """{image id: reason} for the images of ``batch`` that a container uses now: containers
        are listed afresh right before each removal batch, because containerd's CRI removes an
        image even while a container uses it."""
        fresh = self.node.list('containers')
        if not fresh and self.node.ready_sandboxes():
            return dict.fromkeys(batch, 'kept: the container listing right before the removal came back empty while '
                                        'sandboxes are Ready')
        users = _plan.image_users(self.images, fresh)    # all images: a tag may have moved
        return {image_id: 'in use by container %s (%s), created after the plan was made' % (
            users[image_id][0].name, users[image_id][0].id[:13]) for image_id in batch if image_id in users}


class ContentPhase(Phase):
    """Phase 4: ctr content prune references, over the store as phase 3 left it."""

    name = 'content'

    def run(self, settle=5.0):
        engine, result, check_mode = self.engine, self.result, self.check_mode
        mirror = detect_peer_mirror(engine.peer_mirror_root)
        if mirror:
            message = ('%s: pruning content references removes the compressed layers this node serves to '
                       'its peers, and images can no longer be exported' % mirror)
            if self.settings['peer_mirror_action'] == 'skip':
                result['skipped'] = True
                result['skip_reason'] = message + ' (peer_mirror_action=skip)'
                return self.finish()
            result['warnings'].append(message + '; set peer_mirror_action=skip to leave the content store alone')
        before = engine.ctr.content()
        if check_mode:
            # As the store will be once the images planned for removal are gone.
            before = _plan.without_images(before, list(self.node.removed['images']))
        plan = _plan.plan_content(before)
        labels = sum(1 for b in before for k in b.labels if k.startswith(_plan.LAYER_LABEL_PREFIX))
        result['labels_removed'] = labels
        if not labels:
            pass                         # no layer label left: the prune would change nothing
        elif check_mode:
            engine.ctr.prune_references(dry_run=True)
            result['removed'] = plan.remove
        else:
            engine.ctr.prune_references()
            planned = set(plan.ids)
            deadline = time.monotonic() + settle
            while True:
                after = engine.ctr.content()
                left = planned & {b.digest for b in after}
                if not left or time.monotonic() >= deadline:
                    break
                time.sleep(0.2)          # containerd collects garbage asynchronously
            after_digests = {b.digest for b in after}
            result['removed'] = [dict(b.to_dict(), id=b.digest, reason='collected after the prune')
                                 for b in sorted(before, key=lambda x: x.digest) if b.digest not in after_digests]
            reasons = {item['id']: item['reason'] for item in plan.remove}
            for item in result['removed']:
                item['reason'] = reasons.get(item['id'], item['reason'])
        result['bytes'] = sum(item['size'] for item in result['removed'])
        result['changed'] = bool(result['removed']) or labels > 0
        return self.finish()


# The phases in the order they run: each frees what the next one plans with (exited containers
# pin images; a removed sandbox takes its containers; removed images leave layer blobs). Each
# entry is called as ``entry(engine, check_mode)`` and returns the phase's result.
PHASE_TABLE = (
    ('containers', ContainersPhase.entry),
    ('sandboxes', SandboxesPhase.entry),
    ('images', ImagesPhase.entry),
    ('content', ContentPhase.entry),
)
