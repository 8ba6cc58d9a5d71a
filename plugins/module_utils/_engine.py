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

import os
import time

from ._common import CommandRunner, ImageGCError, parse_duration
from ._cri import Crictl, Ctr
from ._discovery import Discovery
from . import _plan

# One table of settings: name -> (kind, default). Modules and the runner's config use these names.
SETTINGS = {
    'crictl_path': ('str', None),
    'ctr_path': ('str', None),
    'runtime_endpoint': ('str', None),
    'image_endpoint': ('str', None),
    'containerd_address': ('str', None),
    'timeout': ('duration', '2m'),
    'batch_size': ('count', 100),
    'containers': ('bool', True),
    'created_min_age': ('duration', '1h'),
    'keep_last_per_pod': ('bool', False),
    'sandboxes': ('bool', True),
    'sandbox_min_age': ('duration', '10m'),
    'namespaces': ('list', []),
    'exclude_namespaces': ('list', []),
    'images': ('bool', True),
    'image_exclude': ('list', []),
    'image_min_age': ('duration', '0s'),
    'sandbox_image': ('str', None),
    'content': ('bool', True),
    'content_namespace': ('str', 'k8s.io'),
    'peer_mirror_action': (('warn', 'skip'), 'warn'),
}


def validate_settings(values, names=None, labels=None):
    """Checked and converted settings (durations in seconds); ImageGCError naming the bad key.

    ``labels`` maps a setting to the name the caller knows it by (a module option), for errors.
    """
    out = {}
    for key in names or SETTINGS:
        kind, default = SETTINGS[key]
        value = values.get(key)
        name = (labels or {}).get(key, key)
        if value is None:
            value = default
        if kind == 'duration':
            value = parse_duration(value, name)
        elif kind == 'bool':
            if not isinstance(value, bool):
                raise ImageGCError('%s: expected true or false, got %r' % (name, value))
        elif kind == 'count':
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ImageGCError('%s: expected a whole number of 1 or more, got %r' % (name, value))
        elif kind == 'list':
            if isinstance(value, str) or not isinstance(value, (list, tuple)) or \
                    not all(isinstance(v, str) and v for v in value):
                raise ImageGCError('%s: expected a list of non-empty strings, got %r' % (name, value))
            value = list(value)
        elif isinstance(kind, tuple):
            if value not in kind:
                raise ImageGCError('%s: expected one of %s, got %r' % (name, ', '.join(kind), value))
        elif value is not None and (not isinstance(value, str) or not value):
            raise ImageGCError('%s: expected a non-empty string, got %r' % (name, value))
        out[key] = value
    unknown = sorted(set(values) - set(SETTINGS))
    if names is None and unknown:
        raise ImageGCError('unknown setting(s): %s' % ', '.join(unknown))
    return out


PEER_MIRROR_CONFIGS = ('/etc/rancher/k3s/config.yaml', '/etc/rancher/rke2/config.yaml')


def detect_peer_mirror(root='/'):
    """A description of a peer-to-peer image mirror served from this node (Spegel, the k3s/RKE2
    embedded registry), or None."""
    proc = os.path.join(root, 'proc')
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        pids = []
    for pid in pids:
        try:
            with open(os.path.join(proc, pid, 'comm')) as handle:
                if handle.read().strip() == 'spegel':
                    return 'Spegel is running (pid %s)' % pid
        except OSError:
            continue
    for config in PEER_MIRROR_CONFIGS:
        candidates = [config]
        dropins = os.path.join(root, config.lstrip('/') + '.d')
        if os.path.isdir(dropins):
            candidates += [os.path.join(config + '.d', n) for n in sorted(os.listdir(dropins))]
        for path in candidates:
            try:
                with open(os.path.join(root, path.lstrip('/'))) as handle:
                    for line in handle:
                        key, dummy, value = line.split('#', 1)[0].partition(':')
                        if key.strip() == 'embedded-registry' and value.strip().strip('"\'').lower() == 'true':
                            return 'the embedded registry mirror is enabled in %s' % path
            except OSError:
                continue
    return None


PHASES = ('containers', 'sandboxes', 'images', 'content')


def _result(phase, check_mode):
    return {'phase': phase, 'check_mode': check_mode, 'changed': False, 'skipped': False,
            'removed': [], 'kept': [], 'failed': [], 'gone': [], 'bytes': 0, 'warnings': [],
            'commands': [], 'duration': 0.0}


class Engine(object):
    """Plans and runs phases for one node. ``runner``, ``discovery`` and ``clock`` are injectable."""

    def __init__(self, settings, phases=PHASES + ('disk',), runner=None, discovery=None, clock=None,
                 peer_mirror_root='/', labels=None):
        """``phases``: what this engine will be asked to run (``disk`` for disk_state); it decides
        which of crictl and ctr must be found. ``labels``: see validate_settings."""
        self.settings = validate_settings(settings, labels=labels)
        self.runner = runner or CommandRunner()
        self.clock = clock or time.time_ns
        self.peer_mirror_root = peer_mirror_root
        s = self.settings
        need_crictl = bool(set(phases) & set(('containers', 'sandboxes', 'images', 'disk')))
        need_ctr = 'content' in phases or ('images' in phases and s['image_min_age'] > 0)
        self.runtime = (discovery or Discovery()).resolve(
            crictl_path=s['crictl_path'], ctr_path=s['ctr_path'], runtime_endpoint=s['runtime_endpoint'],
            image_endpoint=s['image_endpoint'], containerd_address=s['containerd_address'],
            timeout=s['timeout'], need_crictl=need_crictl, need_ctr=need_ctr)
        self.crictl = Crictl(self.runtime, self.runner, s['batch_size'])
        self.ctr = Ctr(self.runtime, self.runner, s['content_namespace'])
        # What earlier phases of this run removed (in check mode: planned to remove), so that a
        # later phase plans as it would after them: containers by id, image ids.
        self.removed_containers = {}
        self.removed_images = set()
        self._sandbox_image = None
        # Listings disk_state just made, each reused once by the next phase that needs it.
        self._listed = {}

    def _listing(self, kind):
        """A listing of ``kind`` (containers, sandboxes, images): the one disk_state made moments
        ago if not used yet, else a fresh one. Safe for phases 1 and 2 (an exited container or a
        NotReady sandbox does not come back) and for the images of phase 3 (an image that appears
        later is simply not planned); phase 3 always lists containers afresh."""
        if kind in self._listed:
            return self._listed.pop(kind)
        return getattr(self.crictl, kind)()

    def sandbox_image(self):
        """The sandbox image: the ``sandbox_image`` setting, else what ``crictl info`` reports
        (asked once per engine: it does not change during a run)."""
        if self.settings['sandbox_image']:
            return self.settings['sandbox_image']
        if self._sandbox_image is None:
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

    # -- phase 1 ------------------------------------------------------------------------------
    def containers_phase(self, check_mode=False):
        started, first = time.monotonic(), len(self.runner.history)
        result = _result('containers', check_mode)
        containers = self._listing('containers')
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
        containers = self.crictl.containers()
        sandboxes = self._listing('sandboxes')
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
        self.removed_containers.update((c.id, c) for c in containers if c.pod_id in done)
        return self._finish(result, started, first)

    # -- phase 3 ------------------------------------------------------------------------------
    def images_phase(self, check_mode=False, assume_removed_containers=(), assume_removed_sandboxes=()):
        """``assume_removed_*``: ids that earlier tasks removed, or in check mode would remove."""
        started, first = time.monotonic(), len(self.runner.history)
        result = _result('images', check_mode)
        s = self.settings
        # A fresh listing: a container started since phase 1 protects its image.
        containers = self.crictl.containers()
        assumed_c, assumed_s = set(assume_removed_containers or ()), set(assume_removed_sandboxes or ())
        self.removed_containers.update((c.id, c) for c in containers if c.id in assumed_c or c.pod_id in assumed_s)
        listed = set(c.id for c in containers)
        containers += [c for i, c in self.removed_containers.items() if i not in listed]
        images = self._listing('images')
        sandbox_image = self.sandbox_image()
        ages = None
        if s['image_min_age']:
            ages = _plan.image_manifest_ages(self.ctr.content())
        plan = _plan.plan_images(images, containers, sandbox_image, s['image_exclude'], s['image_min_age'],
                                 ages, removed_containers=self.removed_containers)
        result['kept'] = plan.keep
        result['warnings'].extend(plan.warnings)
        result['sandbox_image'] = sandbox_image
        if check_mode:
            result['removed'] = plan.remove
            result['changed'] = bool(plan.remove)
        else:
            self._apply(result, plan, self.crictl.remove_images(plan.ids))
        self.removed_images.update(item['id'] for item in result['removed'] + result['gone'])
        result['bytes'] = sum(item['size'] for item in result['removed'])
        return self._finish(result, started, first)

    # -- phase 4 ------------------------------------------------------------------------------
    def content_phase(self, check_mode=False, assume_removed_images=(), settle=5.0):
        """``assume_removed_images``: image ids that earlier tasks removed, or in check mode would remove."""
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
            before = _plan.without_images(before, self.removed_images | set(assume_removed_images or ()))
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
    def disk_state(self, largest=5):
        """Read-only facts: image filesystem usage, object counts, reclaimable estimate."""
        info = self.crictl.imagefsinfo()
        filesystems = []
        for fs in ((info.get('status') or {}).get('imageFilesystems') or []):
            mount = (fs.get('fsId') or {}).get('mountpoint', '')
            entry = {'mountpoint': mount,
                     'used_bytes': int((fs.get('usedBytes') or {}).get('value') or 0),
                     'inodes_used': int((fs.get('inodesUsed') or {}).get('value') or 0)}
            entry.update(filesystem_usage(mount))
            filesystems.append(entry)
        containers = self._listed['containers'] = self.crictl.containers()
        sandboxes = self._listed['sandboxes'] = self.crictl.sandboxes()
        images = self._listed['images'] = self.crictl.images()
        exited = [c.id for c in containers if c.state == _plan.EXITED]
        sandbox_image = self.sandbox_image()
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


def filesystem_usage(path):
    """Size, free and used bytes of the filesystem holding ``path`` (its nearest existing parent)."""
    probe = path or '/'
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    try:
        st = os.statvfs(probe or '/')
    except OSError:
        return {}
    size = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    used = size - st.f_bfree * st.f_frsize
    return {'fs_path': probe, 'fs_size_bytes': size, 'fs_free_bytes': free, 'fs_used_bytes': used,
            'fs_used_percent': round(100.0 * used / size, 1) if size else 0.0}
