#!/usr/bin/python
# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
module: ctr_content_prune
short_description: Prune layer references from containerd's content store
version_added: 0.1.0
description:
  - Phase 4 of the node image GC. Runs C(ctr -n NAMESPACE content prune references), which drops the
    layer reference labels of image manifests; containerd's garbage collector then deletes the compressed
    layer blobs nothing else refers to. Unpacked snapshots stay, so running containers are unaffected.
  - Side effect, by design of the prune, when it removes anything - images can no longer be exported
    (C(ctr images export)), and the node can no longer serve their layers to peers (Spegel, the k3s and
    RKE2 embedded registry mirror) until they are pulled again. When such a mirror is detected, the module
    warns, or skips with O(peer_mirror_action=skip).
  - After the prune an image cannot be unpacked again. So the prune runs only when the CRI uses exactly one
    snapshotter, as C(crictl info) and C(crictl imagefsinfo) report them; a RuntimeClass whose runtime handler
    names a snapshotter of its own, or snapshotters that cannot be read (crictl not found - set O(crictl_path)),
    skip it and say why in RV(skip_reason). Otherwise a pod of such a class would fail with
    C(CreateContainerError) for as long as its image is listed.
  - Check mode runs the prune with C(--dry) and reports the blobs a real run would free, computed from the
    content store listing. A real run reports the blobs that really disappeared.
author:
  - nodemaint image_gc maintainers (@nodemaint)
extends_documentation_fragment:
  - nodemaint.image_gc.runtime
  - nodemaint.image_gc.runtime.lock
  - nodemaint.image_gc.runtime.commands
  - nodemaint.image_gc.runtime.attributes
options:
  content_namespace:
    description:
      - containerd namespace of the CRI plugin (C(ctr -n)).
      - The alias O(namespace) (its name before 0.1.0) is deprecated and will be removed in 1.0.0.
    aliases: [namespace]
    type: str
    default: k8s.io
  peer_mirror_action:
    description:
      - What to do when this node serves images to its peers (a running C(spegel) process, or
        the C(embedded-registry) option set to true in C(/etc/rancher/k3s/config.yaml) or
        C(/etc/rancher/rke2/config.yaml)).
      - V(warn) prunes and warns; V(skip) leaves the content store alone and reports the phase as skipped.
    type: str
    choices: [warn, skip]
    default: warn
notes:
  - Takes the run lock (O(lock_path)) for the whole run, in check mode too, so it never overlaps the timer's runner.
  - Blob sizes are those C(ctr content ls) prints, rounded to four significant digits.
requirements:
  - containerd's C(ctr) on the node (see O(ctr_path)); CRI-O has no content store, and the module fails there.
seealso:
  - module: nodemaint.image_gc.crictl_prune
'''

EXAMPLES = r'''
- name: Prune the k8s.io content store
  nodemaint.image_gc.ctr_content_prune:

- name: Never on nodes that serve images to their peers
  nodemaint.image_gc.ctr_content_prune:
    peer_mirror_action: skip

- name: On a MicroK8s node
  nodemaint.image_gc.ctr_content_prune:
    ctr_path: /snap/bin/microk8s
    containerd_address: /var/snap/microk8s/common/run/containerd.sock
'''

RETURN = r'''
blobs:
  description: Content blobs removed (in check mode, that would be removed).
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Blob digest.
      type: str
      sample: sha256:5f4de468a2d94fad44b1fe435d8816e6a09e28f9f271edf57ce788021fd9fd55
    digest:
      description: Blob digest (same as C(id)).
      type: str
    size:
      description: Size in bytes, as C(ctr content ls) prints it (rounded to four significant digits).
      type: int
      sample: 1028000
    reason:
      description: Why it goes.
      type: str
  sample: []
content_space_reclaimed:
  description: Sum of the sizes of RV(blobs), in bytes (approximate, see RV(blobs[].size)).
  returned: always
  type: int
  sample: 1028000
labels_removed:
  description: Number of layer reference labels the prune drops (or, in check mode, would drop).
  returned: always
  type: int
  sample: 5
skipped:
  description: Whether the prune was skipped - this node serves images to peers, or the CRI uses more than one
    snapshotter, or its snapshotters could not be read.
  returned: always
  type: bool
skip_reason:
  description: Why it was skipped.
  returned: when RV(skipped=true)
  type: str
commands:
  description: The command lines that were run, each an argument list.
  returned: when O(return_commands=true), or at verbosity 2 (C(-vv)) or more
  type: list
  elements: list
  sample: [[/usr/bin/ctr, --address, /run/containerd/containerd.sock, -n, k8s.io, content, prune, references]]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodemaint.image_gc.plugins.module_utils._adapter import (
    COMMANDS_ARGUMENT_SPEC, LOCK_ARGUMENT_SPEC, RUNTIME_ARGUMENT_SPEC, argument_spec, finish, guarded, option, options,
    run_engine)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            RUNTIME_ARGUMENT_SPEC, LOCK_ARGUMENT_SPEC, COMMANDS_ARGUMENT_SPEC, options('peer_mirror_action'),
            content_namespace=option('content_namespace', old_names=True),
        ),
        supports_check_mode=True,
    )
    guarded(module, lambda: report(module, run_engine(module, ('content',))))


def report(module, run):
    result = run['phases'][0]
    out = {'changed': result['changed'], 'blobs': result['removed'], 'content_space_reclaimed': result['bytes'],
           'labels_removed': result.get('labels_removed', 0), 'skipped': result['skipped'],
           'commands': result['commands']}
    if result['skipped']:
        out['skip_reason'] = result['skip_reason']
    finish(module, out, [('blobs', result)])


if __name__ == '__main__':
    main()
