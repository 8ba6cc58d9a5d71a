# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""The disk report as one run takes it: the runtime's image filesystems listed side by side with
the containers, sandboxes and images, the filesystem's own figure (statvfs, settled: _disk), the
fullest image filesystem for the disk target, and the report before and after the run."""

import concurrent.futures

from ._phase import plan_containers
from ._text import describe
from . import _disk, _plan_images


# crictl/ctr processes the disk report runs at once. Each crictl is 20-30 MiB resident whatever it
# lists, and the container listing's grows with the node (65-78 MiB at 10,000 containers): six at
# once summed 155 MiB at the start of a run at 10,000 (issue 26). Two keep the side by side's gain
# on the machines measured (2 cores) at about the container listing plus one other.
SIDE_BY_SIDE = 2


class DiskView:
    """The disk figures of one run over its engine (``run``, an _engine.Engine: its ``settings``,
    ``node``, ``crictl``, ``facts`` (a _cri_facts.CriFacts), ``clock()``, ``sandbox_images()``)."""

    def __init__(self, run):
        self.run = run
        self._disk_before = None         # the image filesystems of the disk report before the run
        self._fs_path = None             # the path statvfs reads for the image filesystem's figure

    # -- the disk report (_disk) ----------------------------------------------------------------
    def report(self, when, emit):
        """The disk report ``before`` or ``after`` the run, emitted as a ``disk`` event; a failure to read it is
        a report too."""
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
        sandbox image (``crictl info``, when needed) is asked once the images are known. When the
        run will plan phase 3 or 4, which ask them anyway on containerd (the runtime's name, and
        the snapshotters from ``crictl info``), ``crictl version`` and ``crictl info`` are asked
        side by side too; their failures are left to the phases that need them (asked again
        there). A listing's failure raises as it would one after the other, imagefsinfo's first. At most SIDE_BY_SIDE processes run at once:
        the container listing (the one that grows with the node) beside the others one at a time."""
        run = self.run

        def images_then_sandbox_image():
            run.sandbox_images(run.node.list('images'))

        def cri_info():
            try:
                run.cri_info()
            except Exception:  # pylint: disable=broad-except  # the phase that needs it asks again and says why
                pass
        with concurrent.futures.ThreadPoolExecutor(SIDE_BY_SIDE) as pool:
            listings = [pool.submit(run.node.list, 'containers')]     # first: the longest, on a thread of its own
            info = pool.submit(run.crictl.imagefsinfo)
            listings += [pool.submit(run.node.list, 'sandboxes'), pool.submit(images_then_sandbox_image)]
            if any(p in run.phases and run.settings[p] for p in ('images', 'content')):
                # the runtime's name never raises ('' when crictl cannot tell)
                listings += [pool.submit(run.runtime_name), pool.submit(cri_info)]
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
        settled = None
        if fresh:
            self.run.facts.fsinfo = self._list_side_by_side()
        elif settle and self._fs_path:
            # the report after: the runtime's figure asked while the filesystem's settles (the
            # settle waits at least SETTLE_INTERVAL); both are read after every removal
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                answer = pool.submit(self.run.crictl.imagefsinfo)
                settled = (self._fs_path, _disk.settled_figure(self._fs_path))
                self.run.facts.fsinfo = answer.result()
        else:
            self.run.facts.fsinfo = self.run.crictl.imagefsinfo()
        filesystems = _disk.image_filesystems(self.run.facts.fsinfo)
        path, figure, unknown = _disk.read_figure(filesystems, settle, settled)
        if path:
            self._fs_path = path
        if fresh:
            self._disk_before = {'image_filesystems': filesystems}
        # fresh: listed just now, side by side with imagefsinfo
        containers = self.run.node.current('containers')
        sandboxes = self.run.node.current('sandboxes')
        images = self.run.node.current('images')
        # reclaimable: what phase 3 would remove once phase 1's rules removed their containers
        leaving = plan_containers(self.run, containers, sandboxes).ids
        sandbox_images = self.run.sandbox_images(images)
        reclaimable = _plan_images.plan_images(images, containers, sandbox_images, self.run.settings['image_exclude'],
                                               removed_containers=leaving, image_volumes=self.run.node.known_image_volumes())
        return _disk.report(filesystems, figure, unknown, containers, sandboxes, images, reclaimable, sandbox_images,
                            largest)
