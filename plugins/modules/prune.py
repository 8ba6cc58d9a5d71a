#!/usr/bin/python
# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
module: prune
short_description: One whole image GC run - exited containers, stale sandboxes, unused images, content
version_added: 0.1.0
description:
  - Runs the four phases of the node image GC in one invocation, in order, under the run lock shared with
    the C(node-image-gc) timer - (1) exited containers (C(crictl rm)), (2) NotReady pod sandboxes older than
    O(sandbox_min_age) (C(crictl rmp)), both by the kubelet's rules (O(pod_aware)), (3) images no container
    uses, last used longer ago than O(image_unused_for) (C(crictl rmi); with V(0s) the semantics of
    C(crictl rmi --prune), plus guards), (4) the containerd content store (C(ctr content prune references)).
  - Each phase is failure-tolerant - a failing phase is reported in RV(phases) and RV(failed_phases) and the
    next one still runs. The task fails only with O(fail_on_phase_error=true).
  - Reads the disk state before and after (RV(disk_before), RV(disk_after)).
  - Plans first, then acts; check mode computes the very same plan and reports exactly what a real run
    removes, each item with its reason.
  - The same code as the timer's runner and the single-phase modules (M(nodemaint.image_gc.crictl_prune),
    M(nodemaint.image_gc.stale_sandbox), M(nodemaint.image_gc.ctr_content_prune)); the options have the names
    of the runner's configuration keys.
author:
  - nodemaint image_gc maintainers (@nodemaint)
extends_documentation_fragment:
  - nodemaint.image_gc.runtime
  - nodemaint.image_gc.runtime.lock
  - nodemaint.image_gc.runtime.record
  - nodemaint.image_gc.runtime.retention
  - nodemaint.image_gc.runtime.containers
  - nodemaint.image_gc.runtime.pods
  - nodemaint.image_gc.runtime.images
  - nodemaint.image_gc.runtime.commands
  - nodemaint.image_gc.runtime.attributes
options:
  containers:
    description:
      - Phase 1 - remove exited containers, and created-never-started ones older than O(created_min_age).
    type: bool
    default: true
  sandboxes:
    description:
      - Phase 2 - remove NotReady pod sandboxes older than O(sandbox_min_age) that hold no container that
        stays; the newest sandbox of a live pod stays (O(pod_aware)).
    type: bool
    default: true
  sandbox_min_age:
    description:
      - NotReady sandboxes younger than this (from their creation time) stay, so that a pod the kubelet is
        still setting up or tearing down is not raced. Seconds or a duration such as V(10m).
    type: str
    default: 10m
  images:
    description:
      - Phase 3 - remove images no container uses. An image used only by containers removed in the same run
        is removed too.
    type: bool
    default: true
  content:
    description:
      - Phase 4 - C(ctr content prune references), so containerd deletes the compressed layer blobs only
        layer labels refer to. Images then cannot be exported or served to peers until pulled again.
    type: bool
    default: true
  content_namespace:
    description:
      - containerd namespace of the CRI plugin.
    type: str
    default: k8s.io
  peer_mirror_action:
    description:
      - What to do on a node that serves images to its peers (Spegel, the k3s/RKE2 embedded registry mirror) -
        V(warn) prunes the content store and warns, V(skip) leaves the content store alone.
    type: str
    choices: [warn, skip]
    default: warn
  disk_usage_threshold:
    description:
      - When the image filesystem is less full than this percentage, the run only reports and removes
        nothing. V(0) always cleans.
    type: int
    default: 0
  fail_on_phase_error:
    description:
      - Fail the task when a phase failed (it is always reported in RV(failed_phases); the other phases run
        either way).
    type: bool
    default: false
seealso:
  - module: nodemaint.image_gc.crictl_prune
  - module: nodemaint.image_gc.stale_sandbox
  - module: nodemaint.image_gc.ctr_content_prune
  - module: nodemaint.image_gc.imagefs_info
'''

EXAMPLES = r'''
- name: Remove all container-runtime garbage
  nodemaint.image_gc.prune:

- name: See what would go, and why
  nodemaint.image_gc.prune:
  check_mode: true
  register: plan

- name: Show the images that would be removed
  ansible.builtin.debug:
    msg: "{{ plan.images | map(attribute='reason') }}"

- name: Keep the CNI images and the logs of the last crash, leave the content store alone
  nodemaint.image_gc.prune:
    image_exclude:
      - "docker.io/calico/*"
    exclude_namespaces: [kube-system]
    content: false
    fail_on_phase_error: true
'''

RETURN = r'''
containers:
  description:
    - Containers removed (in check mode, that would be removed), oldest first, each with its C(reason);
      the keys of RV(nodemaint.image_gc.crictl_prune#module:containers).
  returned: always
  type: list
  elements: dict
  sample: []
containers_kept:
  description: Exited or created containers deliberately kept, with the reason.
  returned: always
  type: list
  elements: dict
  sample: []
sandboxes:
  description:
    - Pod sandboxes removed (in check mode, that would be removed), with their C(reason); the keys of
      RV(nodemaint.image_gc.stale_sandbox#module:sandboxes).
  returned: always
  type: list
  elements: dict
  sample: []
sandboxes_kept:
  description: NotReady sandboxes deliberately kept (too young, excluded namespace, live container), with the reason.
  returned: always
  type: list
  elements: dict
  sample: []
images:
  description:
    - Images removed (in check mode, that would be removed), with their C(reason); the keys of
      RV(nodemaint.image_gc.crictl_prune#module:images).
  returned: always
  type: list
  elements: dict
  sample: []
images_kept:
  description: Images kept, each with the reason (in use, pinned, sandbox image, excluded, too young).
  returned: always
  type: list
  elements: dict
  sample: []
images_space_reclaimed:
  description: Sum of the sizes of RV(images), in bytes.
  returned: always
  type: int
  sample: 2057707
blobs:
  description: Content-store blobs deleted after the prune (in check mode, that would be), with their C(reason).
  returned: always
  type: list
  elements: dict
  sample: []
content_space_reclaimed:
  description: Sum of the sizes of RV(blobs), in bytes (ctr rounds sizes to four significant digits).
  returned: always
  type: int
  sample: 1048576
failures:
  description: Items whose removal failed (the others were still removed), each with its C(msg).
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: The item's ID.
      type: str
    phase:
      description: The phase that tried to remove it.
      type: str
      sample: images
    msg:
      description: Why the removal failed (it names the cause and the fix).
      type: str
  sample: []
phases:
  description:
    - One entry per phase, in the order they ran.
  returned: always
  type: list
  elements: dict
  contains:
    phase:
      description: V(containers), V(sandboxes), V(images) or V(content).
      type: str
      sample: images
    status:
      description: V(ok), V(failed) (the phase raised, or an item could not be removed) or V(skipped).
      type: str
      sample: ok
    changed:
      description: Whether the phase removed (in check mode, would remove) anything.
      type: bool
    removed:
      description: Number of objects removed (in check mode, that would be removed).
      type: int
      sample: 3
    bytes:
      description: Bytes reclaimed by the phase (images and content only).
      type: int
    error:
      description: Why the phase failed as a whole (it names the cause and the fix).
      type: str
      returned: when the phase failed as a whole
    skip_reason:
      description: Why the phase did not run.
      type: str
      returned: when the phase was skipped
    duration:
      description: Seconds the phase took.
      type: float
  sample:
    - {phase: containers, status: ok, changed: true, removed: 2, bytes: 0, duration: 0.05}
failed_phases:
  description: Names of the phases whose status is V(failed).
  returned: always
  type: list
  elements: str
  sample: []
skip_reason:
  description: Why no phase ran (the image filesystem is below O(disk_usage_threshold)).
  returned: when the run was skipped
  type: str
disk_before:
  description:
    - The disk state before the run, as RV(nodemaint.image_gc.imagefs_info#module:imagefs) returns it
      (C(error) instead when it could not be read). Its C(filesystem) is the figure read from the
      filesystem itself (statvfs), C(image_fs_used_bytes) the runtime's own (CRI imagefsinfo).
  returned: always
  type: dict
  contains:
    when:
      description: V(before) or V(after).
      type: str
      sample: before
    filesystem:
      description:
        - The figure read from the filesystem holding the image store (statvfs) - C(path), C(used_bytes),
          C(size_bytes), C(free_bytes), C(used_percent), C(source); after a real run also C(settled) and
          C(waited) (seconds); in check mode C(note). V(null) when it could not be read.
      type: dict
      sample: {path: /var/lib/containerd, used_bytes: 8126464000, size_bytes: 10000000000, free_bytes: 1873536000,
               used_percent: 81.3, source: statvfs}
    filesystem_unknown:
      description: Why C(filesystem) is V(null).
      type: str
      returned: when the filesystem could not be read
    image_filesystems:
      description: One entry per image filesystem the runtime reports (see RV(nodemaint.image_gc.imagefs_info#module:imagefs)).
      type: list
      elements: dict
    image_fs_used_bytes:
      description: The runtime's own figure (CRI imagefsinfo), not a measurement of the disk.
      type: int
      sample: 10182656
    containers:
      description: Number of containers per state.
      type: dict
      sample: {running: 1, exited: 2}
    sandboxes:
      description: Number of pod sandboxes per state.
      type: dict
      sample: {ready: 2, notready: 1}
    images:
      description: Number of images.
      type: int
      sample: 5
    images_bytes:
      description: Sum of the image sizes the runtime reports.
      type: int
      sample: 5144270
    error:
      description: Why the disk state could not be read (the other keys are then missing).
      type: str
      returned: when it could not be read
disk_after:
  description:
    - The disk state after the run. The filesystem is read again once containerd's garbage collection has
      settled (two readings agree, at most a few seconds; C(filesystem.settled) says whether they did); the
      object counts are those of the run's listings less what it removed. In check mode the same as
      RV(disk_before), its C(filesystem.note) saying so; the projected figure is in RV(summary), marked as an estimate.
  returned: always
  type: dict
  contains:
    when:
      description: V(after).
      type: str
      sample: after
    filesystem:
      description: As in RV(disk_before.filesystem).
      type: dict
      sample: {path: /var/lib/containerd, used_bytes: 6200000000, size_bytes: 10000000000, free_bytes: 3800000000,
               used_percent: 62.0, source: statvfs, settled: true, waited: 1.5}
summary:
  description:
    - The run in one line - what the phases removed and its sum, and the image filesystem's used percent
      before and after, read from the filesystem (V(unknown) where it could not be read).
  returned: always
  type: str
  sample: "freed 11.40 MB (3 containers, 2 sandboxes, 5 images, 4 blobs); /var/lib/containerd 81.2% -> 62.0%"
disk_target:
  description:
    - The disk target (O(disk_high)/O(disk_low)) - C(used_percent) before, C(high), C(low), C(projected_percent).
      Above O(disk_high) also C(candidates) (the warm images it may remove, least recently used first) and
      C(estimate) (what the projection is - an estimate from the image sizes the runtime reports); after a real
      run C(measured) - C(steps) (each image removed with the filesystem's C(used_percent) read after it, once
      containerd's garbage collection settled), C(used_percent), C(used_bytes) and C(reached).
  returned: when O(disk_high) is set and the image filesystem's usage is known
  type: dict
  sample: {used_percent: 91.0, high: 85, low: 80, projected_percent: 79.5, candidates: ['sha256:4f1e...'],
           measured: {steps: [{id: 'sha256:4f1e...', used_percent: 79.1}], used_percent: 79.1, reached: true}}
sandbox_image:
  description: The sandbox (pause) image that was protected, if known.
  returned: when O(images=true)
  type: str
  sample: registry.k8s.io/pause:3.9
commands:
  description:
    - The command lines that were run, the disk reports' included, each an argument list, in the order they ended
      (the disk report's listings run side by side before phase 1).
  returned: when O(return_commands=true), or at verbosity 2 (C(-vv)) or more
  type: list
  elements: list
  sample: [[/usr/local/bin/crictl, --timeout, 120s, imagefsinfo], [/usr/local/bin/crictl, --timeout, 120s, ps, --all, -o, json]]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodemaint.image_gc.plugins.module_utils._adapter import (
    COMMANDS_ARGUMENT_SPEC, LOCK_ARGUMENT_SPEC, argument_spec, finish, guarded, options, run_engine)
from ansible_collections.nodemaint.image_gc.plugins.module_utils._settings import ENGINE_SETTINGS
from ansible_collections.nodemaint.image_gc.plugins.module_utils._text import count

# What each phase's removed items are called in the return value.
ITEMS = (('containers', 'containers'), ('sandboxes', 'sandboxes'), ('images', 'images'), ('content', 'blobs'))


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            options(*ENGINE_SETTINGS), LOCK_ARGUMENT_SPEC, COMMANDS_ARGUMENT_SPEC,
            fail_on_phase_error={'type': 'bool', 'default': False},
        ),
        supports_check_mode=True,
    )
    guarded(module, lambda: report(module, run_engine(module, ('containers', 'sandboxes', 'images', 'content', 'disk'),
                                                      fail_on_error=module.params['fail_on_phase_error'])))


def report(module, run):
    by_phase = {r['phase']: r for r in run['phases']}
    out = {'changed': run['changed'], 'failures': [], 'commands': run['commands'], 'failed_phases': run['failed_phases'],
           'disk_before': run['disk_before'], 'disk_after': run['disk_after'], 'phases': [],
           'summary': run['summary']}
    for phase, name in ITEMS:
        result = by_phase[phase]
        out[name] = result['removed']
        if phase != 'content':
            out[name + '_kept'] = result['kept']
        out['failures'] += [dict(item, phase=phase) for item in result['failed']]
        summary = {k: result[k] for k in ('phase', 'status', 'changed', 'bytes', 'duration')}
        summary['removed'] = len(result['removed'])
        for key in ('error', 'skip_reason'):
            if result.get(key):
                summary[key] = result[key]
        out['phases'].append(summary)
    out['images_space_reclaimed'] = by_phase['images']['bytes']
    out['content_space_reclaimed'] = by_phase['content']['bytes']
    if by_phase['images'].get('disk_target'):
        out['disk_target'] = by_phase['images']['disk_target']
    if 'sandbox_image' in by_phase['images']:
        out['sandbox_image'] = by_phase['images']['sandbox_image']
    if run['skip_reason']:
        out['skip_reason'] = run['skip_reason']
    if run['failed_phases']:
        module.warn('phase(s) failed: %s' % '; '.join(
            '%s: %s' % (r['phase'], r.get('error') or '%s could not be removed' % count(len(r['failed']), 'item'))
            for r in run['phases'] if r['status'] == 'failed'))
    finish(module, out, [(name, by_phase[phase]) for phase, name in ITEMS])


if __name__ == '__main__':
    main()
