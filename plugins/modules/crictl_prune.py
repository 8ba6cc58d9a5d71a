#!/usr/bin/python
# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
module: crictl_prune
short_description: Remove exited containers and unused images through crictl
version_added: 0.1.0
description:
  - Phase 1 and 3 of the node image GC. Removes exited containers (C(crictl rm)) by the kubelet's rules
    (O(pod_aware)) - in a live pod the newest exited instance of each container stays - and
    created-never-started containers older than O(created_min_age).
  - Then removes images that no container uses (C(crictl rmi)) and that were last used (never used - first
    seen) longer ago than O(image_unused_for), 21 days by default; with V(0s), the semantics of C(crictl rmi --prune);
    an image used by any container that stays, exited ones included, or mounted by one as an image volume,
    is in use, and pinned images are kept. An empty container listing while sandboxes are Ready removes no
    image.
  - Beyond C(crictl rmi --prune), it never removes the runtime's sandbox (pause) image (containerd 1.6 does
    not pin it), images matching O(image_exclude), or images younger than O(image_min_age).
  - An image used only by containers removed in the same run is removed too.
  - Plans first, then acts; check mode reports exactly the plan a real run executes.
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
      - Remove exited containers (and created-never-started ones older than O(created_min_age)).
    type: bool
    default: true
  images:
    description:
      - Remove images no container uses.
    type: bool
    default: true
  content_namespace:
    description:
      - containerd namespace of the CRI plugin, used to read image ages when O(image_min_age) is set.
      - The alias O(namespace) (its name before 0.1.0, too close to O(namespaces), the Kubernetes namespaces)
        is deprecated and will be removed in 1.0.0.
    aliases: [namespace]
    type: str
    default: k8s.io
notes:
  - Takes the run lock (O(lock_path)) for the whole run, in check mode too, so it never overlaps the timer's runner.
  - A real run that lists containers updates the last-use record (O(image_record_path)); check mode writes nothing.
requirements:
  - C(ctr) on the node when O(image_min_age) is not V(0s) (the image ages come from the content store).
seealso:
  - module: nodemaint.image_gc.stale_sandbox
  - module: nodemaint.image_gc.ctr_content_prune
  - module: nodemaint.image_gc.imagefs_info
'''

EXAMPLES = r'''
- name: Remove exited containers and unused images
  nodemaint.image_gc.crictl_prune:

- name: Only images, never the CNI and monitoring images, none pulled in the last hour
  nodemaint.image_gc.crictl_prune:
    containers: false
    image_exclude:
      - "docker.io/calico/*"
      - "quay.io/prometheus/*"
    image_min_age: 1h

- name: See what would go, on a k3s node
  nodemaint.image_gc.crictl_prune:
    crictl_path: /usr/local/bin/k3s
    exclude_namespaces: [kube-system]
  check_mode: true
  register: plan

- name: Show why images were kept
  ansible.builtin.debug:
    msg: "{{ plan.images_kept | map(attribute='reason') }}"
'''

RETURN = r'''
containers:
  description: Containers removed (in check mode, that would be removed), oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Container ID.
      type: str
      sample: 13f0c812c8370f32440a3427a39a8bff92def7777cff7b566352ab9b8d5c07c0
    name:
      description: Container name.
      type: str
      sample: exit1
    attempt:
      description: The container's attempt (restart count) in its pod.
      type: int
    pod:
      description: The pod, as C(namespace/name) of its sandbox, when O(pod_aware=true); empty otherwise.
      type: str
    pod_sandbox_id:
      description: ID of the container's pod sandbox.
      type: str
    pod_name:
      description: Kubernetes pod name (from the kubelet's labels), empty without them.
      type: str
    pod_namespace:
      description: Kubernetes namespace (from the kubelet's labels), empty without them.
      type: str
    state:
      description: CRI state.
      type: str
      sample: CONTAINER_EXITED
    image:
      description: Image the container was created from.
      type: str
    image_ref:
      description: Image reference (ID) the runtime resolved.
      type: str
    created_at:
      description: Creation time, seconds since the epoch.
      type: int
    age:
      description: Age in seconds.
      type: int
    reason:
      description: Why it is removed.
      type: str
      sample: exited, and pod feas/feas-a is not live
  sample: []
containers_kept:
  description: Exited or created containers deliberately kept, with the reason (same keys as RV(containers)).
  returned: always
  type: list
  elements: dict
  sample: []
images:
  description: Images removed (in check mode, that would be removed), by ID.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Image ID.
      type: str
      sample: sha256:3eec21629e5d91c14b0b65cf4976f0b1f6a1bec43c9945e85f995918adee253e
    repo_tags:
      description: Tags.
      type: list
      elements: str
      sample: [docker.io/feas/unused:3]
    repo_digests:
      description: Repo digests.
      type: list
      elements: str
    size:
      description: Size in bytes, as the runtime reports it.
      type: int
      sample: 1028854
    pinned:
      description: Whether the runtime pins the image.
      type: bool
    reason:
      description: Why it is removed.
      type: str
      sample: unused
  sample: []
images_kept:
  description: Images kept, each with the reason (in use by a container, pinned, sandbox image, excluded, too young).
  returned: always
  type: list
  elements: dict
  sample:
    - id: sha256:24d594dff834ff76c19a30248c9cb360ee8cb5080c2114cf12716b255381c9b2
      repo_tags: [docker.io/feas/pause:1]
      repo_digests: []
      size: 1028899
      pinned: false
      reason: sandbox (pause) image of the runtime (docker.io/feas/pause:1)
images_space_reclaimed:
  description: Sum of the sizes of RV(images), in bytes.
  returned: always
  type: int
  sample: 2057707
failures:
  description: Containers and images whose removal failed (the others were still removed), with C(msg).
  returned: always
  type: list
  elements: dict
  sample: []
sandbox_image:
  description: The sandbox (pause) image that was protected, if known.
  returned: when O(images=true)
  type: str
  sample: registry.k8s.io/pause:3.9
commands:
  description: The command lines that were run, each an argument list.
  returned: when O(return_commands=true), or at verbosity 2 (C(-vv)) or more
  type: list
  elements: list
  sample: [[/usr/local/bin/crictl, --timeout, 120s, rm, 13f0c812c8370f32440a3427a39a8bff92def7777cff7b566352ab9b8d5c07c0]]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodemaint.image_gc.plugins.module_utils._adapter import (
    COMMANDS_ARGUMENT_SPEC, LOCK_ARGUMENT_SPEC, RUNTIME_ARGUMENT_SPEC, argument_spec, finish, guarded, option, options,
    run_engine)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            RUNTIME_ARGUMENT_SPEC, LOCK_ARGUMENT_SPEC, COMMANDS_ARGUMENT_SPEC,
            options('containers', 'created_min_age', 'pod_aware', 'namespaces', 'exclude_namespaces', 'images', 'image_exclude', 'image_min_age',
                    'sandbox_image', 'image_unused_for', 'disk_high', 'disk_low', 'image_record_path'),
            content_namespace=option('content_namespace', old_names=True),
        ),
        supports_check_mode=True,
    )
    guarded(module, lambda: report(module, run_engine(module, ('containers', 'images'))))


def report(module, run):
    by_phase = {r['phase']: r for r in run['phases']}
    containers, images = by_phase['containers'], by_phase['images']
    out = {
        'changed': run['changed'],
        'containers': containers['removed'],
        'containers_kept': containers['kept'],
        'images': images['removed'],
        'images_kept': images['kept'],
        'images_space_reclaimed': images['bytes'],
        'failures': containers['failed'] + images['failed'],
        'commands': containers['commands'] + images['commands'],
    }
    if not images['skipped']:
        out['sandbox_image'] = images.get('sandbox_image')
    finish(module, out, [('containers', containers), ('images', images)])


if __name__ == '__main__':
    main()
