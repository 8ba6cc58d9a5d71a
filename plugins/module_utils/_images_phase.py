# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""Phase 3, the images (crictl rmi): ImagesPhase with its guard against an empty container
listing, the disk target measured batch by batch and the re-check of the containers before each
batch; find_unusable_images (the images the CRI cannot unpack again)."""

from ._common import CommandError, ImageGCError
from ._phase import Phase
from ._refs import image_users, volume_users
from ._retention import Retention, target_batch
from ._text import count, describe
from ._units import short_id
from . import _plan_images, _snapshotters


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
                'crictl ps --all listed no container while %s %s Ready (%s): the container listing is '
                'not trusted and no image is removed. Endpoints used: runtime %s, image %s; set runtime_endpoint '
                'and image_endpoint to the runtime the kubelet uses' % (
                    count(len(ready), 'sandbox'), 'is' if len(ready) == 1 else 'are',
                    ', '.join(sorted(x.name or short_id(x.id) for x in ready))[:200],
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
        self.volume_ids = {c.id for c in staying}   # the containers whose image volumes are known
        self.late_volumes = {}
        ages = None
        if s['image_min_age']:
            # from when the collection first saw each image (the kubelet's firstDetected), not from
            # the content store: an image the record does not know yet is first seen now
            now = engine.now()
            ages = {image_id: max(0, now - entry['first_seen']) for image_id, entry in engine.last_use(images).items()}
        disk = None
        if s['disk_high']:
            disk = engine.image_fs()
            if disk is None:
                result['warnings'].append('the image filesystem\'s usage is unknown here: disk_high/disk_low do '
                                          'not apply, only image_unused_for')
            else:
                disk.update(high=s['disk_high'], low=s['disk_low'])

        now, last_use, trusted = engine.now(), engine.last_use(images), engine.ages_trusted()

        def make(unusable):
            retention = Retention(now, s['image_unused_for'], last_use, disk, trust_ages=trusted)
            return _plan_images.plan_images(images, containers, sandbox_images, s['image_exclude'], s['image_min_age'],
                                            ages, removed_containers=list(self.node.removed['containers']),
                                            retention=retention, image_volumes=volumes, unusable=unusable)
        plan = make(None)
        # the look for unusable images changes only what stays: an image the other rules remove
        # goes whatever it says (only its reason would say so), so the others alone are asked
        goes = {item['id'] for item in plan.remove if not item.get('disk_target')}
        unusable = find_unusable_images(engine, [i for i in images if i.id not in goes], result)
        if unusable:
            plan = make(unusable)
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
        """The disk target, measured, in batches: least recently used first, each batch sized by
        target_batch (half of what the filesystem measures above disk_low, from the image sizes
        scaled by what the batches before freed), the filesystem read again (once containerd's
        garbage collection settled) after each, until its usage is at or below disk_low or no
        candidate is left. The containers are listed afresh before each batch (_new_users).
        ``plan`` is brought in line with what went (for Phase.apply) and ``target`` says what
        was measured: ``steps``, one per batch (its ids and the figure after it)."""
        low, result = target['low'], self.result
        estimated = [i for i in target['candidates'] if by_id[i].get('disk_target')]
        candidates = list(target['candidates'])
        figure = self.engine.measure()
        steps, sized, freed = [], 0, 0
        while figure is not None and candidates and figure['used_bytes'] * 100 > low * figure['size_bytes']:
            excess = figure['used_bytes'] - low * figure['size_bytes'] / 100.0
            batch = target_batch(candidates, {i: by_id[i]['size'] for i in candidates}, excess,
                                 freed / float(sized) if sized else 1.0)
            del candidates[:len(batch)]
            for image_id in batch:
                by_id[image_id]['reason'] = Retention.target_reason(
                    round(target['used_percent']), low, '%s; %.1f%% before its batch of %d went (measured)' % (
                        plan.last_use[image_id], figure['used_percent'], len(batch)))
            step = self.engine.crictl.remove_images(batch, before_batch=self._new_users)
            for key in ('removed', 'gone', 'commands'):
                getattr(outcome, key).extend(getattr(step, key))
            outcome.failed.update(step.failed)
            outcome.skipped.update(step.skipped)
            before = figure
            figure = self.engine.measure()
            sized += sum(by_id[i]['size'] for i in step.removed)
            freed += max(0, before['used_bytes'] - figure['used_bytes']) if figure else 0
            steps.append({'ids': batch, 'used_percent': figure['used_percent'] if figure else None,
                          'used_bytes': figure['used_bytes'] if figure else None})
        taken = [i for s in steps for i in s['ids']]
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
                                      'after %s' % count(len(taken), 'image'))
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
    unpack again (content incomplete, no snapshot in the CRI's snapshotter; see _snapshotters):
    ``ctr images check`` asked of their names only, not at all when there is none;
    ``result['unusable']`` says what was asked and found. Never fails the phase: when the
    snapshotter or ``ctr images check`` cannot be read, none is found (kept when in doubt), and a
    ctr that is there but fails is a warning."""
    if run.is_crio():
        result['unusable'] = {'checked': False, 'why': 'not applicable: CRI-O has no containerd snapshotter '
                                                       '(images live in containers/storage; ctr is not used)'}
        return {}
    if not images:
        result['unusable'] = {'checked': False, 'why': 'not needed: every image goes in this run by the other rules'}
        return {}
    snapshotters, exc = run.snapshotters()
    snapshotter = snapshotters.default if snapshotters is not None else None
    if not snapshotter:
        result['unusable'] = {'checked': False, 'why': 'the CRI\'s snapshotter is unknown (%s)' % (
            describe(exc) if exc else 'neither crictl info nor crictl imagefsinfo names it')}
        return {}
    names = sorted({name for image in images for name in [image.id] + image.refs})
    try:
        checked = _snapshotters.parse_images_check(run.ctr.images_check(snapshotter, names))
    except (CommandError, ImageGCError) as exc:
        result['unusable'] = {'checked': False, 'why': describe(exc)}
        if isinstance(exc, CommandError):
            result['warnings'].append('images the runtime cannot unpack again were not looked for: %s' % describe(exc))
        return {}
    found = _snapshotters.unusable_images(images, checked)
    result['unusable'] = {'checked': True, 'snapshotter': snapshotter, 'asked': len(images), 'found': sorted(found)}
    return {image_id: (_snapshotters.unusable_reason(status, snapshotter),
                       _snapshotters.unusable_but_kept(status, snapshotter)) for image_id, status in found.items()}
