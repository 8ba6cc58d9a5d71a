# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""The run loop: one Engine per run holds the settings, what discovery found and the node as
the run sees it, and sequences the phases of PHASE_TABLE (_phases) between two disk reports
(_disk). The modules and the node runner are faces over it."""

import time
import traceback

from ._common import CommandError, CommandRunner, ImageGCError
from ._cri import Crictl, Ctr
from ._cri_facts import CriFacts
from ._discovery import Discovery
from ._disk_view import DiskView
from ._node import Node
from ._phase import finish, new_result
from ._phases import PHASE_TABLE
from ._settings import PHASES, validate_settings
from ._text import describe, summary_line
from ._units import seconds
from . import _disk, _record, _record_merge, _refs


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
        self.facts = CriFacts(self.crictl, s['sandbox_image'])    # the runtime's name, crictl info, snapshotters
        self.disk = DiskView(self)       # the disk report and the image filesystem's figures
        self._record = None
        self.regret = None               # the re-pull counters after this run's record update
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

    # -- what the runtime says about itself (_cri_facts) ---------------------------------------
    def runtime_name(self):
        """The runtime's name as ``crictl version`` says it (_cri_facts.CriFacts.runtime_name)."""
        return self.facts.runtime_name()

    def is_crio(self):
        return self.facts.is_crio()

    def sandbox_images(self, images=()):
        """The sandbox images (_cri_facts.CriFacts.sandbox_images)."""
        return self.facts.sandbox_images(images)

    def cri_info(self):
        return self.facts.cri_info()

    def snapshotters(self):
        """``(snapshotters, exc)`` (_cri_facts.CriFacts.snapshotters)."""
        return self.facts.snapshotters()

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
            out['disk_before'] = self.disk.report('before', emit)
            out['skip_reason'] = _disk.below_threshold(out['disk_before'], self.settings['disk_usage_threshold'])
        self._run_phases(check_mode, out, emit)
        if 'disk' in self.phases:
            if check_mode:
                out['disk_after'] = _disk.stated_after(out['disk_before'])
                emit('disk', out['disk_after'])
            else:
                out['disk_after'] = self.disk.report('after', emit)
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

    def _run_phases(self, check_mode, out, emit):
        """Every phase of ``phases`` in PHASE_TABLE's order into ``out['phases']``."""
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

    # -- the disk report (_disk_view) ----------------------------------------------------------
    def image_fs(self):
        """The fullest image filesystem, or None (_disk_view.DiskView.image_fs)."""
        return self.disk.image_fs()

    def measure(self):
        """The image filesystem's settled figure now, or None (_disk_view.DiskView.measure)."""
        return self.disk.measure()

    def disk_state(self, largest=5, fresh=True, settle=False):
        """Read-only facts: image filesystem usage, object counts, reclaimable estimate (_disk_view)."""
        return self.disk.disk_state(largest, fresh, settle)
