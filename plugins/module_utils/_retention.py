# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""The warm cache: of the unused images a plan would remove, those used recently stay, and while
the image filesystem is above disk_high the least recently used go until the projection
reaches disk_low (an estimate the plan says is one)."""

from ._units import format_duration


class Retention:
    """The warm cache: of the unused images a plan would remove, keep those used (or, never used,
    first seen) less than ``unused_for`` seconds ago; but while the image filesystem is above
    ``disk['high']`` percent, remove kept ones too, least recently used first, until the projected
    usage is at or below ``disk['low']``.

    ``last_use``: ``{image id: {'first_seen': s, 'last_used': s or None}}`` (the last-use record);
    an image it does not know counts as used ``now``. ``disk``: None, or ``{'high', 'low',
    'used_bytes', 'size_bytes'}`` of the image filesystem.
    """

    def __init__(self, now, unused_for=0, last_use=None, disk=None, trust_ages=True):
        """``trust_ages`` False (the record was saved after now: the clock went back): no image
        goes for its age; every one ``unused_for`` would remove is kept warm."""
        self.now = now
        self.unused_for = unused_for
        self.last_use = last_use or {}
        self.disk = disk
        self.trust_ages = trust_ages

    def last(self, image_id):
        """(seconds ago, what): the image's last use, or its first sighting, or now if unknown.
        A time in the future (clock skew) counts as now."""
        entry = self.last_use.get(image_id)
        if not entry:
            return 0, 'last use unknown, counted as now'
        if entry.get('last_used') is not None:
            stamp, what = entry['last_used'], 'last used'
        else:
            stamp, what = entry['first_seen'], 'never used, first seen'
        return max(0, self.now - stamp), what

    def _said(self, image_id):
        ago, what = self.last(image_id)
        return what if what.endswith('now') else '%s %s ago' % (what, format_duration(ago))

    def apply(self, plan):
        warm = []
        if self.unused_for:
            removable = []
            for item in plan.remove:
                if item.get('unusable'):
                    removable.append(item)   # the kubelet must pull it again: no warm cache
                elif not self.trust_ages or self.last(item['id'])[0] < self.unused_for:
                    warm.append(item)
                else:
                    item['reason'] += '; %s (image_unused_for %s)' % (
                        self._said(item['id']), format_duration(self.unused_for))
                    removable.append(item)
            plan.remove[:] = removable
        if self.disk and self.disk.get('size_bytes'):
            warm = self._free_to_target(plan, warm)
        for item in warm:
            item['reason'] = 'unused, %s (image_unused_for %s)%s' % (
                self._said(item['id']), format_duration(self.unused_for),
                '' if self.trust_ages else '; kept: the last-use record was saved after now (the clock went back)')
        plan.keep.extend(warm)

    @staticmethod
    def target_reason(before, low, said):
        return ('removed to bring the image filesystem from %d%% to %d%% (disk_low), least recently used first; %s'
                % (before, low, said))

    def _percent(self, used):
        return 100.0 * used / self.disk['size_bytes']

    ESTIMATE = ('an estimate: projected from the image sizes the runtime reports (compressed content, layers '
                'shared with kept images counted in full), not from what removing them frees on disk; a real '
                'run removes the candidates one at a time, least recently used first, and re-reads the '
                'filesystem after each until it is at or below disk_low')

    def _free_to_target(self, plan, warm):
        """Moves warm images into ``plan.remove``, least recently used first (ties: the larger
        first, then by id), while the projected usage is above ``low``; returns the rest.

        The projection is an estimate (``plan.disk['estimate']`` says from what); a check run
        reports it. ``plan.disk['candidates']`` lists every warm image the target may take, in
        the order it takes them (those the estimate moved are marked ``disk_target``): a real
        run (the images phase) removes them one at a time and measures the filesystem after each."""
        high, low = self.disk['high'], self.disk['low']
        used = self.disk['used_bytes']
        before = self._percent(used)
        plan.disk = {'used_percent': round(before, 1), 'high': high, 'low': low}
        if before <= high:
            plan.disk['projected_percent'] = round(self._percent(used - sum(i['size'] for i in plan.remove)), 1)
            return warm
        projected = used - sum(i['size'] for i in plan.remove)
        order = sorted(warm, key=lambda i: (-self.last(i['id'])[0], -i['size'], i['id']))
        plan.disk.update(estimate=self.ESTIMATE, candidates=[i['id'] for i in order],
                         used_bytes=used, size_bytes=self.disk['size_bytes'])
        plan.last_use = {i['id']: self._said(i['id']) for i in order}
        while order and self._percent(projected) > low:
            item = order.pop(0)
            item['reason'] = self.target_reason(round(before), low, self._said(item['id']))
            item['disk_target'] = True
            plan.remove.append(item)
            projected -= item['size']
        plan.disk['projected_percent'] = round(self._percent(projected), 1)
        if self._percent(projected) > low:
            plan.warnings.append('the image filesystem stays at %.0f%% after every unused image that may go is '
                                 'removed: disk_low %d%% is not reached' % (self._percent(projected), low))
        return order
