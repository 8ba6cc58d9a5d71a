#!/usr/bin/python
# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
module: imagefs_info
short_description: Report the image filesystem and the container runtime's garbage, read-only
version_added: 0.1.0
description:
  - Read-only facts for before/after reporting around the image GC - image filesystem usage as the runtime
    reports it (C(crictl imagefsinfo)) and as the filesystem itself does, containers and sandboxes by state,
    images, an estimate of what C(crictl_prune) could free, and the largest images.
author:
  - nodemaint image_gc maintainers (@nodemaint)
extends_documentation_fragment:
  - nodemaint.image_gc.runtime
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - The module changes nothing; it runs the same in check mode.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: N/A
    details:
      - The module changes nothing.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
      - This assumes that the system controlled/queried by the module has not changed in a relevant way.
    support: full
    details:
      - The module changes nothing (it takes no lock either).
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
    details:
      - Linux nodes running containerd with its CRI plugin.
options:
  largest:
    description:
      - How many of the largest images to list in RV(imagefs.largest_images).
    type: int
    default: 5
  image_exclude:
    description:
      - Patterns of images that the reclaimable estimate treats as kept (as in C(crictl_prune)).
    type: list
    elements: str
    default: []
  sandbox_image:
    description:
      - The runtime's sandbox image, when C(crictl info) does not report it.
    type: str
notes:
  - The filesystem's figure (RV(imagefs.filesystem)) is a measurement (statvfs); RV(imagefs.reclaimable_bytes) is an
    estimate from the image sizes the runtime reports, which counts shared layers once per image.
  - Needs C(crictl) only, not C(ctr).
seealso:
  - module: nodemaint.image_gc.crictl_prune
'''

EXAMPLES = r'''
- name: Disk state before the cleanup
  nodemaint.image_gc.imagefs_info:
  register: before

- name: Show the image filesystem usage
  ansible.builtin.debug:
    msg: >-
      {{ before.imagefs.filesystem.path ~ ' ' ~ before.imagefs.filesystem.used_percent ~ '% used'
         if before.imagefs.filesystem else 'image filesystem usage unknown' }}
'''

RETURN = r'''
imagefs:
  description: The facts.
  returned: always
  type: dict
  contains:
    image_filesystems:
      description:
        - One entry per image filesystem the runtime reports - C(mountpoint), C(used_bytes) and
          C(inodes_used) as the runtime counts them, and, when the path is visible here, C(fs_path),
          C(fs_size_bytes), C(fs_free_bytes), C(fs_used_bytes) and C(fs_used_percent) of the filesystem
          holding it.
      type: list
      elements: dict
    filesystem:
      description:
        - The fullest image filesystem's figure read from the filesystem itself (statvfs of the
          filesystem holding the runtime's image filesystem mount point) - C(path) (its mount point),
          C(used_bytes), C(size_bytes), C(free_bytes), C(used_percent), C(source). V(null) when it
          cannot be read here (RV(imagefs.filesystem_unknown) says why).
      type: dict
      sample: {path: /var/lib/containerd, used_bytes: 8126464000, size_bytes: 10000000000, used_percent: 81.3}
    filesystem_unknown:
      description: Why RV(imagefs.filesystem) is V(null); V(null) otherwise.
      type: str
    image_fs_used_bytes:
      description:
        - Sum of C(used_bytes) over the image filesystems, as the runtime reports them (CRI imagefsinfo,
          refreshed on containerd's own schedule, snapshots only on containerd 1.6). Not a measurement
          of the disk, see RV(imagefs.filesystem).
      type: int
      sample: 10182656
    containers:
      description: Number of containers per state (C(running), C(exited), C(created), C(unknown)).
      type: dict
      sample: {running: 1, exited: 2}
    sandboxes:
      description: Number of pod sandboxes per state (C(ready), C(notready)).
      type: dict
      sample: {ready: 2, notready: 1}
    images:
      description: Number of images.
      type: int
      sample: 5
    images_bytes:
      description: Sum of the image sizes.
      type: int
    reclaimable_images:
      description: Images that C(crictl_prune) would remove if the exited containers went too.
      type: int
    reclaimable_bytes:
      description: Sum of their sizes.
      type: int
    largest_images:
      description: The O(largest) largest images (C(id), C(repo_tags), C(repo_digests), C(size), C(pinned)).
      type: list
      elements: dict
    sandbox_image:
      description: The sandbox (pause) image, when the runtime reports it.
      type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodemaint.image_gc.plugins.module_utils._adapter import (
    RUNTIME_ARGUMENT_SPEC, argument_spec, guarded, module_engine, options)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            RUNTIME_ARGUMENT_SPEC, options('image_exclude', 'sandbox_image'),
            largest={'type': 'int', 'default': 5},
        ),
        supports_check_mode=True,
    )
    if module.params['largest'] < 0:
        module.fail_json(msg='largest: expected 0 or more, got %d' % module.params['largest'])
    facts = guarded(module, lambda: module_engine(module, ('disk',)).disk_state(largest=module.params['largest']))
    module.exit_json(changed=False, imagefs=facts)


if __name__ == '__main__':
    main()
