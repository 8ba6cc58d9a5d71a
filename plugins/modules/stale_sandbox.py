#!/usr/bin/python
# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
module: stale_sandbox
short_description: Remove NotReady pod sandboxes older than a minimum age through crictl
version_added: 0.1.0
description:
  - Phase 2 of the node image GC. Removes pod sandboxes in state C(SANDBOX_NOTREADY) created more than
    O(sandbox_min_age) ago (C(crictl rmp)), which the kubelet's garbage collection leaves behind.
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
  - nodemaint.image_gc.runtime.commands
  - nodemaint.image_gc.runtime.attributes
options:
  sandbox_min_age:
    description:
      - Minimum age, from the sandbox's creation time, as seconds (V(600)) or a duration such as
        V(90s), V(10m), V(1h30m).
      - The alias O(min_age) (its name before 0.1.0; M(nodemaint.image_gc.prune) and the timer role call it
        C(sandbox_min_age)) is deprecated and will be removed in 1.0.0.
    aliases: [min_age]
    type: str
    default: 10m
notes:
  - Takes the run lock (O(lock_path)) for the whole run, in check mode too, so it never overlaps the timer's runner.
  - C(crictl rmp) also removes the log files of the sandbox's containers (crictl 1.30 and later).
seealso:
  - module: nodemaint.image_gc.crictl_prune
'''

EXAMPLES = r'''
- name: Remove NotReady sandboxes older than 10 minutes
  nodemaint.image_gc.stale_sandbox:

- name: Older than an hour, never in kube-system
  nodemaint.image_gc.stale_sandbox:
    sandbox_min_age: 1h
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
      sample: NotReady, pod default/web-1 is not live (its newest sandbox 84a5f9a622d31 is NotReady, ...), created 1h ago (sandbox_min_age 10m)
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
  description: The command lines that were run, each an argument list.
  returned: when O(return_commands=true), or at verbosity 2 (C(-vv)) or more
  type: list
  elements: list
  sample: [[/usr/local/bin/crictl, --timeout, 120s, rmp, 84a5f9a622d31f8350162bb680a4f6f85233240760b95bc74199fa3ab14aa044]]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodemaint.image_gc.plugins.module_utils._adapter import (
    COMMANDS_ARGUMENT_SPEC, LOCK_ARGUMENT_SPEC, RUNTIME_ARGUMENT_SPEC, argument_spec, finish, guarded, option, options,
    run_engine)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            RUNTIME_ARGUMENT_SPEC, LOCK_ARGUMENT_SPEC, COMMANDS_ARGUMENT_SPEC,
            options('pod_aware', 'namespaces', 'exclude_namespaces', 'image_record_path'),
            sandbox_min_age=option('sandbox_min_age', old_names=True),
        ),
        supports_check_mode=True,
    )
    guarded(module, lambda: report(module, run_engine(module, ('sandboxes',))))


def report(module, run):
    result = run['phases'][0]
    out = {'changed': result['changed'], 'sandboxes': result['removed'], 'sandboxes_kept': result['kept'],
           'failures': result['failed'], 'commands': result['commands']}
    finish(module, out, [('sandboxes', result)])


if __name__ == '__main__':
    main()
