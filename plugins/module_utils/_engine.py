# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""The run loop: one Engine per run holds the settings, what discovery found and the node as
the run sees it, and sequences the phases of PHASE_TABLE (_phases) between two disk reports
(_disk). The modules and the node runner are faces over it."""

import concurrent.futures
import time
import traceback

from ._common import CommandError, CommandRunner, ImageGCError
from ._cri import Crictl, Ctr
from ._discovery import Discovery
from ._node import Node
from ._phase import finish, new_result, plan_containers
from ._phases import PHASE_TABLE
from ._settings import PHASES, validate_settings
from ._text import describe, summary_line
from ._units import seconds
from . import _disk, _plan, _record, _record_merge, _refs, _snapshotters


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
        # starts (phase 4 reads the CRI's snapshotters with it, and is skipped without). ctr serves
        # phase 4 and phase 3's look for images the CRI cannot unpack again (image_min_age is
        # measured from the last-use record): a missing ctr fails phase 4 alone, when it uses it,
        # and the look is not made.
        self.runtime = (discovery or Discovery()).resolve(
            crictl_path=s['crictl_path'], ctr_path=s['ctr_path'], runtime_endpoint=s['runtime_endpoint'],
            image_endpoint=s['image_endpoint'], containerd_address=s['containerd_address'],
            timeout=s['timeout'], need_crictl=bool(enabled - {'content'}), need_ctr=False,
            kubelet_root=s['kubelet_root'])
        self.crictl = Crictl(self.runtime, self.runner, s['batch_size'])
        self.ctr = Ctr(self.runtime, self.runner, s['content_namespace'])
        self.node = Node(self.crictl, self.clock, self.runtime.kubelet_root, self.runtime.kubelet_candidates)
        self._sandbox_image = None
        self._runtime_name = None
        self._info = None                # crictl info, asked once
        self._fsinfo = None              # the latest crictl imagefsinfo (the disk report's, if any)
        self._snapshotters = None        # (Snapshotters or None, the exception that kept them unknown)
        self._record = None
        self.regret = None               # the re-pull counters after this run's record update
        self._disk_before = None         # the image filesystems of the disk report before the run
        self._fs_path = None             # the path statvfs reads for the image filesystem's figure
        self.warnings = []
        self.write_failures = []         # files this run could not write: {'file', 'path', 'error'}
        self._root_noted = False

    def _note_kubelet_root(self):
        """Once the node has chosen the kubelet root (phases 1 and 2 ask it): the runtime says which
        root and from where; with none live, one warning naming the setting that fixes it."""
        if self._root_noted or not self.node.kubelet_candidates or not self.node.root_checked:
            return
        self._root_noted = True
        if self.node.kubelet_root:
            self.runtime.kubelet_root = self.node.kubelet_root
            self.runtime.sources['kubelet_root'] = self.node.kubelet_root_source
            return
        self.runtime.sources['kubelet_root'] = 'none live: every pod counts as live'
        self.warnings.append(
            'no live kubelet root found (%s): every pod counts as live in phases 1 and 2, so its newest '
            'containers and newest sandbox stay, and the images they use; the leftovers of deleted pods are '
            'left to the kubelet\'s own garbage collection. Set kubelet_root to the kubelet\'s --root-dir to '
            'remove them' % self.node.no_live_root)

    def runtime_name(self):
        """The runtime behind the endpoint as ``crictl version`` names it (``containerd``, ``cri-o``),
        asked once per engine; '' when crictl cannot tell (then nothing runtime-specific applies)."""
        if self._runtime_name is None:
            try:
                self._runtime_name = self.crictl.runtime_name()
            except Exception:  # pylint: disable=broad-except  # the phases report crictl's failure
                self._runtime_name = ''
        return self._runtime_name

    def is_crio(self):
        """CRI-O: no content store (phase 4 does not apply), no ctr, images in containers/storage."""
        return self.runtime_name() == 'cri-o'

    def sandbox_images(self, images=()):
        """The sandbox images, a list: the ``sandbox_image`` setting added to
        what ``crictl info`` reports. ``crictl info`` is asked once per engine, and not when the
        runtime pins an image that looks like a sandbox image (containerd 1.7 and 2.x pin their
        sandbox image, and 2.x does not report it); any other pinned image says nothing about it."""
        names = [self.settings['sandbox_image']] if self.settings['sandbox_image'] else []
        if self._sandbox_image is None:
            if _refs.pins_a_sandbox_image(images):
                return names
            self._sandbox_image = self.crictl.sandbox_image(self.cri_info()) or ''
        if self._sandbox_image and self._sandbox_image not in names:
            names.append(self._sandbox_image)
        return names

    def cri_info(self):
        """``crictl info`` (a dict), asked once per engine; raises as Crictl.info does."""
        if self._info is None:
            self._info = self.crictl.info()
        return self._info

    def snapshotters(self):
        """``(snapshotters, exc)``: the CRI's snapshotters (_snapshotters.Snapshotters; None when
        ``crictl info`` shows no containerd CRI config, or could not be read: ``exc`` then says
        why) from ``crictl info`` and ``crictl imagefsinfo`` (the disk report's, when there was
        one); asked once per engine."""
        if self._snapshotters is None:
            try:
                info = self.cri_info()
            except (CommandError, ImageGCError) as exc:
                self._snapshotters = (None, exc)
                return self._snapshotters
            try:
                fsinfo = self._fsinfo if self._fsinfo is not None else self.crictl.imagefsinfo()
            except (CommandError, ImageGCError):
                fsinfo = {}              # the snapshotters crictl info names are still known
            self._snapshotters = (_snapshotters.cri_snapshotters(info, fsinfo), None)
        return self._snapshotters

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
            out['skip_reason'] = _disk.below_threshold(out['disk_before'], self.settings['disk_usage_threshold'])
        for name, entry in PHASE_TABLE:
            if name not in self.phases:
                continue
            started, first = time.monotonic(), len(self.runner.history)
            if not self.settings[name]:
                result = dict(new_result(name, check_mode), skipped=True, skip_reason='disabled (%s: false)' % name)
            elif out['skip_reason']:
                result = dict(new_result(name, check_mode), skipped=True, skip_reason=out['skip_reason'])
            else:
                try:
                    result = entry(self, check_mode)
                except Exception as exc:  # pylint: disable=broad-except  # a failed phase never stops the next
                    result = finish(dict(new_result(name, check_mode), error=describe(exc)), self.runner, started,
                                    first)
                    if isinstance(exc, CommandError):
                        result['error_details'] = exc.to_dict()
                    elif not isinstance(exc, ImageGCError):
                        # a bug, not a state of the node: its traceback goes with it (a module's exception=)
                        result['traceback'] = traceback.format_exc()
            result['status'] = phase_status(result)
            self._note_kubelet_root()
            out['phases'].append(result)
            emit('phase', result)
        if 'disk' in self.phases:
            if check_mode:
                out['disk_after'] = _disk.stated_after(out['disk_before'])
                emit('disk', out['disk_after'])
            else:
                out['disk_after'] = self._disk_report('after', emit)
        if not check_mode and self.node.seen:
            # an image removed because the runtime could not run it again is no choice of the
            # policy: the pull that brings it back is not a re-pull to count
            self._save_record({i['id'] for r in out['phases'] if r['phase'] == 'images'
                               for i in r.get('removed', []) if i.get('unusable')})
        out['regret'] = self.regret
        # with the kubelet root the phases chose, and the runtime crictl version named
        out['runtime'] = dict(self.runtime.to_dict(), name=self.runtime_name() or 'unknown')
        out['write_failures'] = self.write_failures
        out['commands'] = [r.argv for r in self.runner.history[first_command:]]
        out['failed_phases'] = [r['phase'] for r in out['phases'] if r['status'] == 'failed']
        out['changed'] = any(r['changed'] for r in out['phases'])
        out['removed'] = sum(len(r['removed']) for r in out['phases'])
        out['bytes'] = sum(r['bytes'] for r in out['phases'])
        out['status'] = 'failed' if out['failed_phases'] else ('skipped' if out['skip_reason'] else 'ok')
        out['summary'] = summary_line(out)
        return out

    def now(self):
        """The wall clock in whole seconds."""
        return seconds(self.clock())

    # -- the last-use record -------------------------------------------------------------------
    def _evidence(self, images=None):
        """{image id: seconds}: the latest use each container seen in this run is evidence of."""
        containers = [c for c, dummy in self.node.seen.values()]
        ids = None
        if images is not None:
            ids = {c.id: image_id for image_id, users in _refs.image_users(images, containers).items()
                   for c in users}
        out = {}
        for c, listed_at in self.node.seen.values():
            for image_id, when in _record.uses([c], listed_at, ids).items():
                out[image_id] = max(when, out.get(image_id, -1))
        return out

    def last_use(self, images=None):
        """The last-use record as this run sees it: as read, with this run's evidence merged in."""
        if self._record is None:
            self._record = _record.read(self.settings['image_record_path'], self.now())
            if self._record.warning:
                self.warnings.append(self._record.warning)
        return _record.merge(self._record.entries, self.now(), self._evidence(images), images,
                             listed_at=self.node.listed_at.get('images'))

    def ages_trusted(self):
        """False when the last-use record was saved after now (the clock went back): ages measured
        from it cannot be trusted, so image_unused_for removes nothing in this run."""
        self.last_use()
        return not self._record.saved_in_future

    def _save_record(self, not_counted=()):
        """The record updated with what this run saw and removed (less ``not_counted``: removed, but
        not to be counted as a re-pull when they come back), in one short transaction under the
        record's own lock (the observation pass writes it too, without the run lock)."""
        self.last_use()                  # read once: its warnings are this run's
        now = self.now()
        images = self.node.current('images') if self.node.listed('images') else None
        removed = {image_id: {'at': now, 'size': image.size, 'refs': image.refs}
                   for image_id, image in self.node.removed['images'].items() if image_id not in not_counted}
        seen = _record_merge.Observation(self.node.listed_at.get('images'), images, self._evidence(images), removed)
        path = self.settings['image_record_path']
        update = _record.update(path, seen, now, force=True)
        self.regret = {'images': update.state['repulls']['images'], 'bytes': update.state['repulls']['bytes'],
                       'found_now': update.repulled}
        if update.error or update.skipped:
            if update.error:
                self.write_failures.append({'file': 'record', 'path': path, 'error': update.error})
            self.warnings.append(update.warning)

    # -- the disk report (_disk) ----------------------------------------------------------------
    def _disk_report(self, when, emit):
        try:
            state = self.disk_state() if when == 'before' else self.disk_state(fresh=False, settle=True)
        except Exception as exc:  # pylint: disable=broad-except  # a report, never a reason to stop
            state = _disk.failed_report(describe(exc), self._fs_path if when == 'after' else None)
        state['when'] = when
        emit('disk', state)
        return state

    def image_fs(self):
        """The fullest image filesystem (``used_bytes``/``size_bytes`` of the filesystem holding
        it), from the disk report before the run or, without one, read now; None if unknown."""
        disk = self._disk_before if self._disk_before is not None else self.disk_state(fresh=False)
        return _disk.fullest_image_fs(disk.get('image_filesystems', []))

    def measure(self):
        """The image filesystem's figure now, read from the filesystem once containerd's garbage
        collection settled (_disk.settled_figure); None when it cannot be read."""
        if self._fs_path is None:
            self.image_fs()
        return _disk.settled_figure(self._fs_path) if self._fs_path else None

    def _list_side_by_side(self):
        """The runtime's image filesystems (``crictl imagefsinfo``), with the containers,
        sandboxes and images listed at the same time, each by its own crictl process (they
        answer independently: side by side a run waits for the slowest, not for their sum). The
        sandbox image (``crictl info``, when needed) is asked once the images are known. A
        failure raises as it would one after the other, imagefsinfo's first."""
        def images_then_sandbox_image():
            self.sandbox_images(self.node.list('images'))
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            info = pool.submit(self.crictl.imagefsinfo)
            listings = [pool.submit(self.node.list, 'containers'), pool.submit(self.node.list, 'sandboxes'),
                        pool.submit(images_then_sandbox_image)]
            answer = info.result()
            for listing in listings:
                listing.result()
        return answer

    def disk_state(self, largest=5, fresh=True, settle=False):
        """Read-only facts: image filesystem usage, object counts, reclaimable estimate.

        ``filesystem``: the fullest image filesystem's figure read from the filesystem itself
        (statvfs; ``settle``: once two readings agree, see _disk.settled_figure), or None with
        ``filesystem_unknown`` saying why. ``image_fs_used_bytes`` is the runtime's own figure
        (CRI imagefsinfo: refreshed on containerd's schedule, snapshots only on 1.6).

        ``fresh=False`` (the report after a run) asks the runtime only for the image filesystem
        and counts from what the run listed and removed."""
        self._fsinfo = self._list_side_by_side() if fresh else self.crictl.imagefsinfo()
        filesystems = _disk.image_filesystems(self._fsinfo)
        path, figure, unknown = _disk.read_figure(filesystems, settle)
        if path:
            self._fs_path = path
        if fresh:
            self._disk_before = {'image_filesystems': filesystems}
        # fresh: listed just now, side by side with imagefsinfo
        containers = self.node.current('containers')
        sandboxes = self.node.current('sandboxes')
        images = self.node.current('images')
        # reclaimable: what phase 3 would remove once phase 1's rules removed their containers
        leaving = plan_containers(self, containers, sandboxes).ids
        sandbox_images = self.sandbox_images(images)
        reclaimable = _plan.plan_images(images, containers, sandbox_images, self.settings['image_exclude'],
                                        removed_containers=leaving, image_volumes=self.node.known_image_volumes())
        return _disk.report(filesystems, figure, unknown, containers, sandboxes, images, reclaimable, sandbox_images,
                            largest)
