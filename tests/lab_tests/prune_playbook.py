"""The prune playbook in the integration tests: its name, the inventory vars that point it at the
lab, and its output read back (a debug task's JSON, the fleet table, the play recap)."""

import json
import os
import re

from tests.lab_tests import fleet_synthetic
from tests.lab_tests.ansible_play import lab_kubelet_root

PLAYBOOK = 'nodemaint.image_gc.prune'

# image_gc_pod_aware: false - the standard scenario's exit1 (exited in the Ready pod feas-exit) is garbage only
# in the blunt mode; the kubelet's rules (the default) keep it: tests/lab_tests/test_pod_safety.py
BLUNT = {'image_gc_pod_aware': False}


def task_output(stdout, task):
    """The JSON a debug task printed (``ok: [host] => {...}``) after ``TASK [task]``."""
    start = stdout.index('TASK [%s]' % task)
    brace = stdout.index('=> {', start) + 3
    value = json.JSONDecoder().raw_decode(stdout[brace:])[0]
    return value


def fleet(stdout):
    """The printed fleet table ('Report the fleet') read back: the TOTAL row's counts and freed,
    the hosts with a result, the hosts without one, the hosts with failed phases, and the rows."""
    title, rows, total = fleet_synthetic.parse_table(stdout)
    out = dict((k, int(total[k])) for k in ('containers', 'sandboxes', 'images', 'blobs'))
    failed = sorted(h for h, r in rows.items() if 'HOST FAILED' in r['failed'])
    out.update(freed=total['freed'], title=title, rows=rows, hosts=len(rows) - len(failed), hosts_failed=failed,
               hosts_with_failed_phases=dict((h, r['failed'].split(',')) for h, r in rows.items()
                                             if r['failed'] != '-' and h not in failed))
    return out


def recap(stdout, host='localhost'):
    match = re.search(r'^%s\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)' % re.escape(host),
                      stdout, re.M)
    assert match, stdout[-2000:]
    return dict(zip(('ok', 'changed', 'unreachable', 'failed'), (int(g) for g in match.groups())))


def inventory_vars(lab, **extra):
    values = {
        'image_gc_crictl_path': lab.crictl_bin,
        'image_gc_ctr_path': lab.ctr_bin,
        'image_gc_runtime_endpoint': lab.endpoint,
        'image_gc_kubelet_root': lab_kubelet_root(lab),
        'image_gc_lock_path': os.path.join(lab.base, 'run.lock'),
        'image_gc_image_record_path': os.path.join(lab.base, 'images.json'),
        'image_gc_image_min_age': '0s',          # the lab's images are seconds old
        'image_gc_image_unused_for': '0s',       # every unused image goes (the default keeps 21 days of use)
        'image_gc_lock_wait': '30s',
    }
    values.update(extra)
    return values
