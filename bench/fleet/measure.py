"""Measuring one ansible-playbook run for bench/fleet/run.py: wall time, CPU of the process tree and of
its main process, peak RSS and PSS; per-task times from an Ansible log."""

import datetime
import os
import re
import resource
import signal
import subprocess
import tempfile
import threading
import time

from bench.fleet import sshd


def tree_memory(root):
    """(RSS, PSS) in bytes summed over ``root`` and its descendants. PSS shares each page among the
    processes mapping it, so the forked workers' shared pages count once: the real memory cost."""
    rss = pss = 0
    for pid in [root] + sorted(sshd.children_of([root])):
        try:
            with open('/proc/%d/smaps_rollup' % pid) as handle:
                for line in handle:
                    if line.startswith('Rss:'):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith('Pss:'):
                        pss += int(line.split()[1]) * 1024
        except (OSError, IndexError, ValueError):
            pass
    return rss, pss


def measure(argv, env, timeout):
    """Wall, CPU (user+sys of the reaped tree), peak tree RSS, rc and the output of one command."""
    out = tempfile.TemporaryFile(mode='w+')
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    peak, stop = [0, 0, 0.0], threading.Event()

    def poll():          # memory, and the CPU of ansible-playbook's own (main) process: it is serial
        while not stop.is_set():
            rss, pss = tree_memory(proc.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            peak[2] = max(peak[2], sshd.cpu_seconds(proc.pid))
            stop.wait(0.1)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        stop.set()
        poller.join()
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out.seek(0)
    return {'wall': wall, 'rc': proc.returncode, 'peak_rss': peak[0], 'peak_pss': peak[1], 'main_cpu': peak[2],
            'cpu': (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            'load': os.getloadavg()[0], 'output': out.read()}


def task_times(log):
    """Seconds from each TASK line of an ansible log to the next (the per-task cost)."""
    marks = []
    stamp = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) .*?\| (TASK|PLAY RECAP|PLAY) ?\[?([^\]*]*)')
    with open(log) as handle:
        for line in handle:
            m = stamp.match(line)
            if m:
                when = datetime.datetime.strptime(m.group(1), '%Y-%m-%d %H:%M:%S,%f').timestamp()
                marks.append((m.group(3).strip() or m.group(2), when))
    return [(name, round(nxt - when, 2)) for (name, when), (dummy, nxt) in zip(marks, marks[1:])
            if not name.startswith('Prune') and name != 'Summarize the fleet']
