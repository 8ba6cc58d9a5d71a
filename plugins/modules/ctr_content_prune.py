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
  - nodemaint.image_gc.runtime.attributes
options:
  namespace:
    description:
      - containerd namespace of the CRI plugin.
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
  description: The command lines that were run.
  returned: always
  type: list
  elements: list
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodemaint.image_gc.plugins.module_utils._adapter import (
    LOCK_ARGUMENT_SPEC, RUNTIME_ARGUMENT_SPEC, argument_spec, ids_diff, option, options, run_engine)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            RUNTIME_ARGUMENT_SPEC, LOCK_ARGUMENT_SPEC, options('peer_mirror_action'),
            namespace=option('content_namespace'),
        ),
        supports_check_mode=True,
    )
    run = run_engine(module, ('content',), {'namespace': 'content_namespace'})
    result = run['phases'][0]
    out = {'changed': result['changed'], 'blobs': result['removed'], 'content_space_reclaimed': result['bytes'],
           'labels_removed': result.get('labels_removed', 0), 'skipped': result['skipped'],
           'commands': result['commands']}
    if result['skipped']:
        out['skip_reason'] = result['skip_reason']
    if module._diff:
        out['diff'] = ids_diff('blobs', [result])
    module.exit_json(**out)


if __name__ == '__main__':
    main()
