"""Measuring for the speed benchmark (bench/speed/run.py): one command's wall time, CPU and memory, the
crictl/ctr processes it started (counted by logging wrappers), and the runtime's state around it.
Nothing here knows the variants or writes the report.
"""

import os
import platform
import signal
import statistics
import subprocess
import tempfile
import textwrap
import threading
import time


def make_wrappers(bindir, log, crictl, ctr, timed=False):
    """crictl and ctr wrappers that log one line per process started (``name args``), then exec the real
    binary. ``timed``: the wrapper (bash, for its clock) runs the binary as its child instead, and once it
    ended adds ``start end rc name args`` (epoch seconds) to ``LOG.timeline`` (see ``timeline``); the
    wrapper's own shell is left out of the memory figures (``descendants``)."""
    os.makedirs(bindir, exist_ok=True)
    for name, real in (('crictl', crictl), ('ctr', ctr)):
        path = os.path.join(bindir, name)
        with open(path, 'w') as handle:
            if timed:
                handle.write(textwrap.dedent('''\
                    #!/bin/bash
                    s=$EPOCHREALTIME
                    printf '%%s %%s\\n' %s "$*" >> %s
                    %s "$@"
                    rc=$?
                    printf '%%s %%s %%s %%s %%s\\n' "$s" "$EPOCHREALTIME" "$rc" %s "$*" >> %s.timeline
                    exit $rc
                    ''') % (name, log, real, name, log))
            else:
                handle.write(textwrap.dedent('''\
                    #!/bin/sh
                    printf '%%s %%s\\n' %s "$*" >> %s
                    exec %s "$@"
                    ''') % (name, log, real))
        os.chmod(path, 0o755)


def timeline(log, t0):
    """The crictl/ctr processes of one run from the timed wrappers' ``LOG.timeline``, in the order they
    started: ``[start, end, 'name args']``, seconds from ``t0`` (the run's start, epoch seconds)."""
    rows = []
    if os.path.exists(log + '.timeline'):
        with open(log + '.timeline') as handle:
            for line in handle:
                parts = line.split(None, 4)
                if len(parts) >= 4:
                    rows.append([round(float(parts[0]) - t0, 3), round(float(parts[1]) - t0, 3),
                                 ' '.join(parts[3:]).strip()])
    return sorted(rows)


def _tree():
    """({parent pid: [child pids]}, {pid: (rss bytes, VmHWM bytes, short name)}) from /proc."""
    children, procs = {}, {}
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % pid) as handle:
                fields = handle.read().rsplit(')', 1)[1].split()
            with open('/proc/%s/status' % pid) as handle:
                status = dict(line.split(':', 1) for line in handle if ':' in line)
            with open('/proc/%s/cmdline' % pid, 'rb') as handle:
                argv = handle.read().split(b'\0')
        except (OSError, ValueError):
            continue
        children.setdefault(int(fields[1]), []).append(int(pid))
        hwm = int(status.get('VmHWM', '0 kB').split()[0]) * 1024
        procs[int(pid)] = (int(fields[21]) * os.sysconf('SC_PAGE_SIZE'), hwm, _name(argv))
    return children, procs


def _name(argv):
    """'crictl ps', 'python3 node-image-gc', 'ctr content': what a process is, in two words."""
    words = [a.decode('utf-8', 'replace') for a in argv if a]
    words[:1] = [os.path.basename(w) for w in words[:1]]
    if words and words[0] in ('python3', 'python', 'sh', 'bash') and len(words) > 1:
        return '%s %s' % (words[0], os.path.basename(words[1]))
    rest = [w for w in words[1:] if not w.startswith('-') and not w.startswith('unix:') and '/' not in w
            and w not in ('k8s.io', '2m', '120s', 'json')]
    return ' '.join(words[:1] + rest[:1])


# The timed wrappers' own shells (make_wrappers): not part of what a variant runs.
WRAPPER_SHELLS = ('bash crictl', 'bash ctr')


def descendants(root):
    """(sum of RSS, {pid: (VmHWM, name, RSS)}) of ``root`` and all its descendants, from /proc (the
    timed wrappers' shells left out, their children counted)."""
    children, procs = _tree()
    total, seen, todo = 0, {}, [root]
    while todo:
        pid = todo.pop()
        if pid in procs and procs[pid][2] not in WRAPPER_SHELLS:
            rss, hwm, name = procs[pid]
            total += rss
            seen[pid] = (hwm, name, rss)
        todo.extend(children.get(pid, []))
    return total, seen


def composition(seen):
    """[[name, RSS bytes], ...] of the processes alive at one sample, largest first: what makes a peak."""
    return [[name, rss] for rss, name in sorted(((rss, name) for hwm, name, rss in seen.values()), reverse=True)]


def descendants_rss(root):
    """Sum of RSS (bytes) of ``root`` and all its descendants, from /proc."""
    return descendants(root)[0]


def measure(argv, env, timeout, cwd=None, interval=0.02):
    """Wall time, CPU, peak tree RSS (the sum over the processes alive at one sample) and each
    process's own peak (VmHWM, sampled every ``interval`` s: a process shorter than that may be
    missed), and ``peak_sample``: the processes alive at the sample of the peak tree RSS and each one's
    RSS then (which overlap makes the peak). Not wait4's ru_maxrss: Linux counts in it the high-water mark of the memory the
    child had before its exec, a copy of this (large) bench process, so it measures the bench."""
    out = tempfile.TemporaryFile(mode='w+')
    epoch = time.time()                  # the run's start for its timeline (measure.timeline)
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
    peak = [0, []]
    per_process = {}
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            total, seen = descendants(proc.pid)
            if total > peak[0]:
                peak[:] = [total, composition(seen)]
            for pid, (hwm, name, dummy) in seen.items():
                if hwm >= per_process.get(pid, (0, ''))[0]:
                    per_process[pid] = (hwm, name)
            stop.wait(interval)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    try:
        status, usage = os.wait4(proc.pid, 0)[1:]
    finally:
        timer.cancel()
        stop.set()
        poller.join()
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    top = sorted(per_process.values(), reverse=True)
    by_name = {}
    for hwm, name in top:
        by_name[name] = max(hwm, by_name.get(name, 0))
    return {'wall': wall, 'rc': proc.returncode, 'started_epoch': epoch,
            'cpu': usage.ru_utime + usage.ru_stime, 'peak_tree_rss': peak[0], 'peak_sample': peak[1],
            'peak_by_process': dict(sorted(by_name.items(), key=lambda kv: -kv[1])[:6]),
            'processes_sampled': len(per_process), 'output': out.read()[-3000:]}


def count_calls(log):
    """crictl and ctr processes from the wrappers' log: totals and by verb."""
    calls = []
    if os.path.exists(log):
        with open(log) as handle:
            calls = [line.split() for line in handle if line.strip()]
    by = {}
    for argv in calls:
        words = [w for w in argv[1:] if not w.startswith('-') and not w.startswith('unix://')
                 and not w.startswith('/') and w not in ('k8s.io', 'json', '2m', '120s', '120')]
        key = argv[0] + ' ' + ' '.join(words[:3] if argv[0] == 'ctr' else words[:1])
        by[key] = by.get(key, 0) + 1
    return {'crictl': sum(1 for c in calls if c[0] == 'crictl'), 'ctr': sum(1 for c in calls if c[0] == 'ctr'),
            'by_argv': by}


def content_bytes(lab, parse_size):
    """(bytes, blobs) of the k8s.io content store, sizes read with the library's parser."""
    proc = lab.ctr('-n', 'k8s.io', 'content', 'ls', check=False)
    rows = proc.stdout.splitlines()[1:]
    total = 0
    for line in rows:
        fields = [f for f in line.split('\t') if f]
        if len(fields) >= 2:
            total += parse_size(fields[1])
    return total, len(rows)


def snapshot(lab, cri, parse_size):
    """Counts of what the runtime holds (through CRI), and the content store's size."""
    client = lab.client
    containers, pods, images = client.list_containers(), client.list_pod_sandbox(), client.list_images()
    cbytes, blobs = content_bytes(lab, parse_size)
    return {'containers': len(containers),
            'exited': sum(1 for x in containers if x.state == cri.CONTAINER_EXITED),
            'sandboxes': len(pods), 'notready': sum(1 for p in pods if p.state == cri.SANDBOX_NOTREADY),
            'images': len(images), 'image_bytes': sum(int(i.size) for i in images),
            'blobs': blobs, 'content_bytes': cbytes}


def process_cost(lab, crictl, ctr, n=5):
    """Median seconds of one ``crictl version`` and one ``ctr version`` (start, connect, one RPC)."""
    env, out = lab.env(), {}
    for name, argv in (('crictl', [crictl, '-r', lab.endpoint, 'version']),
                       ('ctr', [ctr, '--address', lab.socket, 'version'])):
        times = []
        for dummy in range(n):
            start = time.monotonic()
            subprocess.run(argv, env=env, capture_output=True, check=False)
            times.append(time.monotonic() - start)
        out[name] = statistics.median(times)
    return out


def machine(lab, crictl, crictl_version, cost):
    cpu = ''
    with open('/proc/cpuinfo') as handle:
        for line in handle:
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    with open('/proc/meminfo') as handle:
        mem_kb = int(handle.readline().split()[1])
    return {'nproc': os.cpu_count(), 'memory_gib': round(mem_kb / 1024 ** 2, 1), 'cpu': cpu,
            'kernel': platform.release(), 'containerd': lab.version_string, 'crictl': crictl,
            'crictl_version': crictl_version,
            'crictl_process_s': round(cost['crictl'], 3), 'ctr_process_s': round(cost['ctr'], 3),
            'loadavg_start': os.getloadavg()}
