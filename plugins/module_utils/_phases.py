# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""The four phases, plan first then act: each a Phase over the run's node, all with the one
``Phase.run``; PHASE_TABLE lists them in the order the engine runs them.

Every phase returns a plain dict: ``removed`` (what was, or in check mode would be, removed,
each item with its ``reason``), ``kept`` (what was deliberately kept, with its reason),
``failed`` (items whose removal failed, with the message), ``bytes``, ``changed``, ``warnings``
and the ``commands`` run.
"""

import time

from ._common import CommandError, ImageGCError
from ._mirror import detect_peer_mirror
from ._node import KINDS, build_pods
from ._refs import image_users, volume_users
from ._retention import Retention
from ._text import describe
from ._units import short_id
from . import _content, _plan, _snapshotters


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


class ContainersPhase(Phase):
    """Phase 1: exited containers (crictl rm), by the kubelet's rules per pod."""

    name = 'containers'

    def plan(self):
        s = self.settings
        containers = self.node.current('containers')
        # the pods' namespaces and states; without the kubelet's rules and namespace filters
        # (pod_aware: false) phase 1 needs no sandbox listing
        needed = s['pod_aware'] or s['namespaces'] or s['exclude_namespaces']
        sandboxes = self.node.current('sandboxes') if needed else []
        return plan_containers(self.engine, containers, sandboxes)

    def act(self, plan):
        return self.engine.crictl.remove_containers(plan.ids)


class SandboxesPhase(Phase):
    """Phase 2: NotReady sandboxes (crictl rmp), never one that holds a container that stays."""

    name = 'sandboxes'

    def plan(self):
        s = self.settings
        containers = self.node.current('containers')
        sandboxes = self.node.current('sandboxes')
        leaving = plan_containers(self.engine, containers, sandboxes).ids if s['pod_aware'] else ()
        return _plan.plan_sandboxes(sandboxes, containers, self.engine.clock(), s['sandbox_min_age'],
                                    s['namespaces'], s['exclude_namespaces'], pods=self.pods(), leaving=leaving)

    def act(self, plan):
        return self.engine.crictl.remove_sandboxes(plan.ids)


class ImagesPhase(Phase):
    """Phase 3: images no container that stays uses (crictl rmi)."""

    name = 'images'
    counts_bytes = True

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
                    len(ready), ', '.join(sorted(x.name or short_id(x.id) for x in ready))[:200],
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
        unusable = find_unusable_images(engine, images, result)
        volumes = self.node.image_volumes(staying)
        self.volume_ids = {c.id for c in staying}   # the containers whose image volumes are known
        self.late_volumes = {}
        ages = None
        if s['image_min_age']:
            ages = _content.image_manifest_ages(engine.ctr.content())
        disk = None
        if s['disk_high']:
            disk = engine.image_fs()
            if disk is None:
                result['warnings'].append('the image filesystem\'s usage is unknown here: disk_high/disk_low do '
                                          'not apply, only image_unused_for')
            else:
                disk.update(high=s['disk_high'], low=s['disk_low'])
        retention = Retention(engine.now(), s['image_unused_for'], engine.last_use(images), disk,
                              trust_ages=engine.ages_trusted())
        plan = _plan.plan_images(images, containers, sandbox_images, s['image_exclude'], s['image_min_age'],
                                 ages, removed_containers=list(self.node.removed['containers']), retention=retention,
                                 image_volumes=volumes, unusable=unusable)
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
            item['reason'] = Retention.target_reason(round(target['used_percent']), low, '%s; %.1f%% before it '
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

    def _new_users(self, batch):
        """{image id: reason} for the images of ``batch`` that a container uses now: containers
        are listed afresh right before each removal batch, because containerd's CRI removes an
        image even while a container uses it."""
        fresh = self.node.list('containers')
        if not fresh and self.node.ready_sandboxes():
            return dict.fromkeys(batch, 'kept: the container listing right before the removal came back empty while '
                                        'sandboxes are Ready')
        users = image_users(self.images, fresh)    # all images: a tag may have moved
        out = {image_id: 'in use by container %s (%s), created after the plan was made' % (
            users[image_id][0].name, short_id(users[image_id][0].id)) for image_id in batch if image_id in users}
        # a container created since the plan may mount an image as an image volume: only those
        # containers are inspected (a container's mounts do not change after its creation)
        new = sorted(c.id for c in fresh if c.id not in self.volume_ids and c.id not in self.late_volumes)
        if new:
            try:
                self.late_volumes.update(self.engine.crictl.image_volumes(new))
            except (CommandError, ImageGCError) as exc:
                return dict(dict.fromkeys(batch, 'kept: the image volumes of containers created after the plan '
                                                 'could not be read (%s)' % describe(exc)), **out)
        mounted = volume_users(self.images, [c for c in fresh if c.id in self.late_volumes], self.late_volumes)
        for image_id in batch:
            if image_id in mounted and image_id not in out:
                out[image_id] = 'mounted as an image volume by container %s (%s), created after the plan was made' % (
                    mounted[image_id][0].name, short_id(mounted[image_id][0].id))
        return out


def find_unusable_images(run, images, result):
    """{image id: (reason to remove it, note when kept)} of the ``images`` the CRI lists but cannot
    unpack again (content incomplete, no snapshot in the CRI's snapshotter; see _snapshotters);
    ``result['unusable']`` says what was asked and found. Never fails the phase: when the
    snapshotter or ``ctr images check`` cannot be read, none is found (kept when in doubt), and a
    ctr that is there but fails is a warning."""
    snapshotters, exc = run.snapshotters()
    snapshotter = snapshotters.default if snapshotters is not None else None
    if not snapshotter:
        result['unusable'] = {'checked': False, 'why': 'the CRI\'s snapshotter is unknown (%s)' % (
            describe(exc) if exc else 'neither crictl info nor crictl imagefsinfo names it')}
        return {}
    try:
        checked = _snapshotters.parse_images_check(run.ctr.images_check(snapshotter))
    except (CommandError, ImageGCError) as exc:
        result['unusable'] = {'checked': False, 'why': describe(exc)}
        if isinstance(exc, CommandError):
            result['warnings'].append('images the runtime cannot unpack again were not looked for: %s' % describe(exc))
        return {}
    found = _snapshotters.unusable_images(images, checked)
    result['unusable'] = {'checked': True, 'snapshotter': snapshotter, 'found': sorted(found)}
    return {image_id: (_snapshotters.unusable_reason(status, snapshotter),
                       _snapshotters.unusable_but_kept(status, snapshotter)) for image_id, status in found.items()}


def snapshotter_skip(run):
    """Why phase 4 must not run on this node, or None: it runs only when the CRI uses exactly one
    snapshotter (_snapshotters.content_prune_skip). Kept apart from ContentPhase.skip_reason so
    that other skip rules stay separate. crictl that is there but fails (containerd down) fails
    the phase; crictl not found skips it."""
    snapshotters, exc = run.snapshotters()
    if isinstance(exc, CommandError):
        raise exc
    if exc is not None:
        return ('the CRI\'s snapshotters could not be read (%s): a RuntimeClass with a snapshotter of its own would '
                'need the layer blobs the prune removes; content prune skipped' % describe(exc))
    return _snapshotters.content_prune_skip(snapshotters)


class ContentPhase(Phase):
    """Phase 4: ctr content prune references, over the store as phase 3 left it."""

    name = 'content'
    counts_bytes = True
    SETTLE = 5.0                     # seconds to wait for containerd's garbage collection after the prune

    def skip_reason(self):
        mirror = detect_peer_mirror(self.engine.peer_mirror_root)
        message = mirror and ('%s: pruning content references removes the compressed layers this node serves to '
                              'its peers, and images can no longer be exported' % mirror)
        if mirror and self.settings['peer_mirror_action'] == 'skip':
            return message + ' (peer_mirror_action=skip)'
        unsafe = snapshotter_skip(self.engine)
        snapshotters = self.engine.snapshotters()[0]
        self.result['snapshotters'] = snapshotters.names() if snapshotters is not None else None
        if unsafe:
            return unsafe
        if mirror:
            self.result['warnings'].append(message + '; set peer_mirror_action=skip to leave the content store alone')
        return None

    def plan(self):
        before = self.engine.ctr.content()
        if self.check_mode:
            # As the store will be once the images planned for removal are gone.
            before = _content.without_images(before, list(self.node.removed['images']))
        self.before = before
        self.labels = sum(1 for b in before for k in b.labels if k.startswith(_content.LAYER_LABEL_PREFIX))
        self.result['labels_removed'] = self.labels
        return _content.plan_content(before)   # no layer label left: nothing to remove, the prune changes nothing

    def preview(self, plan):
        if self.labels:
            self.engine.ctr.prune_references(dry_run=True)

    def act(self, plan):
        """The prune (none without a layer label: it would change nothing), then the store listed until what the plan frees is gone (containerd
        collects garbage asynchronously) or SETTLE seconds passed; the blobs that went."""
        if not self.labels:
            return []
        self.engine.ctr.prune_references()
        planned = set(plan.ids)
        deadline = time.monotonic() + self.SETTLE
        while True:
            after = self.engine.ctr.content()
            left = planned & {b.digest for b in after}
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        after_digests = {b.digest for b in after}
        reasons = {item['id']: item['reason'] for item in plan.remove}
        return [dict(b.to_dict(), id=b.digest, reason=reasons.get(b.digest, 'collected after the prune'))
                for b in sorted(self.before, key=lambda x: x.digest) if b.digest not in after_digests]

    def apply(self, plan, outcome):
        self.result['removed'] = outcome

    def changed(self):
        return bool(self.result['removed']) or self.labels > 0


# The phases in the order they run: each frees what the next one plans with (exited containers
# pin images; a removed sandbox takes its containers; removed images leave layer blobs). Each
# entry is called as ``entry(engine, check_mode)`` and returns the phase's result.
PHASE_TABLE = (
    ('containers', ContainersPhase.entry),
    ('sandboxes', SandboxesPhase.entry),
    ('images', ImagesPhase.entry),
    ('content', ContentPhase.entry),
)
