# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""One phase of one run (Phase, with the one ``Phase.run`` every phase uses), a phase's result
(new_result, finish) and phase 1's plan over a listing (plan_containers, which phase 2 asks too).

Every phase returns a plain dict: ``removed`` (what was, or in check mode would be, removed,
each item with its ``reason``), ``kept`` (what was deliberately kept, with its reason),
``failed`` (items whose removal failed, with the message), ``bytes``, ``changed``, ``warnings``
and the ``commands`` run.
"""

import time

from ._node import KINDS, build_pods
from . import _plan


def new_result(phase, check_mode):
    """A phase's result before it ran: nothing removed, kept or failed."""
    return {'phase': phase, 'check_mode': check_mode, 'changed': False, 'skipped': False,
            'removed': [], 'kept': [], 'failed': [], 'gone': [], 'bytes': 0, 'warnings': [],
            'commands': [], 'duration': 0.0}


def finish(result, runner, started, first_command):
    """``result`` with its duration and the commands run since ``first_command`` (of ``runner.history``)."""
    result['duration'] = round(time.monotonic() - started, 3)
    result['commands'] = [r.argv for r in runner.history[first_command:]]
    return result


def plan_containers(run, containers, sandboxes):
    """Phase 1's plan over these listings (by the kubelet's rules per pod unless ``pod_aware`` is off)."""
    s = run.settings
    pods = build_pods(sandboxes, containers, run.node.tracked)
    return _plan.plan_containers(containers, run.clock(), s['created_min_age'], pods,
                                 s['namespaces'], s['exclude_namespaces'], pod_aware=s['pod_aware'])


class Phase:
    """One phase of one run: ``plan()`` over the run's node, then, unless in check mode,
    ``act(plan)``; the node then forgets what went (in check mode: what would go).

    ``run`` (an _engine.Engine) gives a phase what it needs through its public interface only:
    ``settings``, ``node``, ``runtime``, ``runner``, ``crictl``, ``ctr``, ``clock()``, ``now()``,
    ``peer_mirror_root``, ``sandbox_images(images)``, ``image_fs()``, ``measure()``,
    ``last_use(images)``, ``ages_trusted()`` and ``snapshotters()``.

    The hooks a phase may override: ``skip_reason()`` (a reason to skip the phase, or None),
    ``preview(plan)`` (what check mode runs instead of acting), ``act(plan)`` -> outcome,
    ``apply(plan, outcome)`` (the outcome into the result) and ``changed()``. ``counts_bytes``:
    the result's ``bytes`` is the sum of the removed items' sizes."""

    name = None
    counts_bytes = False

    def __init__(self, run, check_mode):
        self.engine = run
        self.settings = run.settings
        self.node = run.node
        self.check_mode = check_mode
        self.started, self.first = time.monotonic(), len(run.runner.history)
        self.result = new_result(self.name, check_mode)

    @classmethod
    def entry(cls, run, check_mode=False):
        """The PHASE_TABLE entry: ``(engine, check_mode) -> result``."""
        return cls(run, check_mode).run()

    def finish(self):
        return finish(self.result, self.engine.runner, self.started, self.first)

    def run(self):
        result = self.result
        skip = self.skip_reason()
        if skip:
            result['skipped'] = True
            result['skip_reason'] = skip
            return self.finish()
        plan = self.plan()
        result['kept'] = plan.keep
        result['warnings'].extend(plan.warnings)
        if self.check_mode:
            self.preview(plan)
            result['removed'] = plan.remove
            done = plan.ids
        else:
            self.apply(plan, self.act(plan))
            done = [item['id'] for item in result['removed'] + result['gone']]
        if self.name in KINDS:
            self.node.forget(self.name, done)
        result['changed'] = self.changed()
        if self.counts_bytes:
            result['bytes'] = sum(item['size'] for item in result['removed'])
        return self.finish()

    def skip_reason(self):
        return None

    def preview(self, plan):
        """Check mode: nothing is removed; the removed items are the plan's."""

    def changed(self):
        return bool(self.result['removed'])

    def apply(self, plan, outcome):
        result = self.result
        by_id = {item['id']: item for item in plan.remove}
        result['removed'] = [by_id[i] for i in outcome.removed]
        result['gone'] = [by_id[i] for i in outcome.gone]
        result['failed'] = [dict(by_id[i], msg=msg) for i, msg in sorted(outcome.failed.items())]
        for item in result['failed']:
            result['warnings'].append('could not remove %s %s: %s' % (self.name[:-1], item['id'], item['msg']))

    def pods(self):
        """{sandbox id: Pod} when the kubelet's rules apply (``pod_aware``), else None."""
        return self.node.pods() if self.settings['pod_aware'] else None
