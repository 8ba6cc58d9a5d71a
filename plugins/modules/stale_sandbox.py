#!/usr/bin/python
# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
module: stale_sandbox
short_description: Remove NotReady pod sandboxes older than a minimum age through crictl
version_added: 0.1.0
description:
  - Phase 2 of the node image GC. Removes pod sandboxes in state C(SANDBOX_NOTREADY) created more than
    O(min_age) ago (C(crictl rmp)), which the kubelet's garbage collection leaves behind.
  - By the kubelet's rules (O(pod_aware)) - the newest sandbox of a live pod stays even when NotReady, and a
    sandbox that still holds a container that stays (one that is not exited, or the newest exited instance
    of a container of a live pod) is kept.
  - Removing a sandbox removes its exited containers too.
  - Plans first, then acts; check mode reports exactly the plan a real run executes.
author:
  - nodemaint image_gc maintainers (@nodemaint)
extends_documentation_fragment:
  - nodemaint.image_gc.runtime
  - nodemaint.image_gc.runtime.lock
  - nodemaint.image_gc.runtime.record
  - nodemaint.image_gc.runtime.pods
  - nodemaint.image_gc.runtime.attributes
options:
  min_age:
    description:
      - Minimum age, from the sandbox's creation time, as seconds (V(600)) or a duration such as
        V(90s), V(10m), V(1h30m).
    type: str
    default: 10m
seealso:
  - module: nodemaint.image_gc.crictl_prune
'''

EXAMPLES = r'''
- name: Remove NotReady sandboxes older than 10 minutes
  nodemaint.image_gc.stale_sandbox:

- name: Older than an hour, never in kube-system
  nodemaint.image_gc.stale_sandbox:
    min_age: 1h
    exclude_namespaces:
      - kube-system
'''

RETURN = r'''
sandboxes:
  description: Sandboxes removed (in check mode, that would be removed), oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Sandbox ID.
      type: str
      sample: 84a5f9a622d31f8350162bb680a4f6f85233240760b95bc74199fa3ab14aa044
    name:
      description: Pod name.
      type: str
      sample: feas-a
    namespace:
      description: Pod namespace.
      type: str
      sample: default
    uid:
      description: The pod's uid (sandbox metadata); sandboxes with the same uid are one pod.
      type: str
    attempt:
      description: The sandbox's attempt (the kubelet creates a new sandbox, attempt + 1, when it recreates one).
      type: int
    state:
      description: CRI state.
      type: str
      sample: SANDBOX_NOTREADY
    created_at:
      description: Creation time, seconds since the epoch.
      type: int
    age:
      description: Age in seconds.
      type: int
      sample: 3600
    reason:
      description: Why it is removed.
      type: str
      sample: NotReady, pod default/web-1 is not live (its newest sandbox 84a5f9a622d31 is NotReady, ...), created 1h ago (min_age 10m)
  sample: []
sandboxes_kept:
  description: NotReady sandboxes kept, with the reason (newest sandbox of a live pod, too young, namespace filters, holds a container that stays).
  returned: always
  type: list
  elements: dict
  sample: []
failures:
  description: Sandboxes whose removal failed (the others were still removed), with C(msg).
  returned: always
  type: list
  elements: dict
  sample: []
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
            RUNTIME_ARGUMENT_SPEC, LOCK_ARGUMENT_SPEC, options('pod_aware', 'namespaces', 'exclude_namespaces', 'image_record_path'),
            min_age=option('sandbox_min_age'),
        ),
        supports_check_mode=True,
    )
    run = run_engine(module, ('sandboxes',), {'min_age': 'sandbox_min_age'})
    result = run['phases'][0]
    out = {'changed': result['changed'], 'sandboxes': result['removed'], 'sandboxes_kept': result['kept'],
           'failures': result['failed'], 'commands': result['commands']}
    if module._diff:
        out['diff'] = ids_diff('sandboxes', [result])
    module.exit_json(**out)


if __name__ == '__main__':
    main()
