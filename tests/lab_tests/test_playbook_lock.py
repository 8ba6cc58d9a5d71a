"""The prune playbook and the run lock: it waits for a run that holds the lock (check mode too, and
then plans the node that run left), never removes anything while the lock is held, and fails naming
the holder when the lock stays held."""

import json
import os
import subprocess
import sys
import time

from tests.lab_tests.ansible_play import EXCLUDE, run_playbook, runtime_state
from tests.lab_tests.prune_playbook import BLUNT, PLAYBOOK, fleet, inventory_vars, recap


def state(lab):
    return runtime_state(lab, with_content=True)


HOLDER = r'''
import json, os, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.nodemaint.image_gc.plugins.module_utils._files import RunLock
lock = RunLock(sys.argv[2], 5)
assert lock.acquire()
print('held', flush=True)
time.sleep(float(sys.argv[3]))
# as a timer run would: remove containers (HOLDER_REMOVE, comma-separated ids) before the release
for cid in filter(None, os.environ.get('HOLDER_REMOVE', '').split(',')):
    subprocess.run(sys.argv[4:] + ['rm', cid], capture_output=True, text=True, check=True)
# what the runtime holds at the very end of the hold, right before the release
ps = subprocess.run(sys.argv[4:] + ['ps', '-a', '-q'], capture_output=True, text=True, check=True).stdout.split()
with open(sys.argv[2] + '.seen', 'w') as handle:
    json.dump({'containers': ps, 'released': time.time()}, handle)
lock.release()
'''


def _hold_lock(lab, seconds, remove=()):
    from tests.lab_tests.ansible_play import collections_path
    lock = os.path.join(lab.base, 'run.lock')
    crictl = [lab.crictl_bin, '--runtime-endpoint', lab.endpoint]
    holder = subprocess.Popen([sys.executable, '-c', HOLDER, collections_path(), lock, str(seconds)] + crictl,
                              stdout=subprocess.PIPE, text=True, env=dict(lab.env(), HOLDER_REMOVE=','.join(remove)))
    assert holder.stdout.readline().strip() == 'held'
    return holder, lock


def test_prune_waits_for_a_run_that_holds_the_lock_and_never_interleaves(lab, scenario):
    """A run holding the lock (as the timer's runner does, with the same RunLock) for 8 s: the
    playbook's prune task waits; at the moment the holder lets go every exited container is still
    there, so nothing was removed while it held the lock; then the prune removes them."""
    exited = scenario['expected']['exited_container_ids']
    holder, lock = _hold_lock(lab, 8)
    started = time.time()
    try:
        proc = run_playbook(lab, PLAYBOOK, inventory_vars(lab, image_gc_lock_wait='2m'),
                            extra_vars=dict(BLUNT, image_gc_image_exclude=EXCLUDE))
    finally:
        holder.wait(timeout=60)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    with open(lock + '.seen') as handle:
        seen = json.load(handle)
    assert set(exited) <= set(seen['containers']), 'the prune removed containers while the lock was held'
    assert seen['released'] - started >= 7
    assert fleet(proc.stdout)['containers'] == len(exited)
    assert not set(exited) & set(state(lab)['containers'])


def test_check_mode_waits_for_a_run_that_holds_the_lock_and_plans_the_node_it_leaves(lab, scenario):
    """The check-mode counterpart: a run holds the lock for 8 s and removes the exited containers
    right before it lets go (as the timer's run would). The check-mode prune waits for it, so its
    plan is of the node as that run left it: no exited container is planned for removal. (Without
    the lock the plan lists them: it was made while the other run was still going.)"""
    from tests.lab_tests.ansible_play import lock_args, run_tasks, runtime_args, state_args
    exited = scenario['expected']['exited_container_ids']
    holder, lock = _hold_lock(lab, 8, remove=exited)
    started = time.time()
    try:
        args = dict(runtime_args(lab), **state_args(lab))
        args.update(image_exclude=EXCLUDE, sandbox_min_age='0s', lock_wait='2m')
        res = run_tasks(lab, [('plan', 'nodemaint.image_gc.prune', args)], check=True)
    finally:
        holder.wait(timeout=60)
    plan = res['plan']
    assert not plan.get('failed'), plan
    with open(lock + '.seen') as handle:
        seen = json.load(handle)
    assert seen['released'] - started >= 7 and not set(exited) & set(seen['containers'])
    assert not set(exited) & set(c['id'] for c in plan['containers']), 'check mode planned while the lock was held'
    assert lock_args(lab)['lock_path'] == lock


def test_prune_fails_naming_the_holder_when_the_lock_stays_held(lab, scenario):
    before = state(lab)
    holder, lock = _hold_lock(lab, 20)
    try:
        proc = run_playbook(lab, PLAYBOOK, inventory_vars(lab, image_gc_lock_wait='2s'),
                            extra_vars=dict(BLUNT, image_gc_image_exclude=EXCLUDE))
        during = state(lab)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0 and recap(proc.stdout)['failed'] == 1, proc.stdout[-3000:]
    assert 'another image GC run holds %s (pid %d)' % (lock, holder.pid) in proc.stdout
    assert during == before
