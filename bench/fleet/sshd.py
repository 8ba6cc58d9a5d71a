"""A private sshd on 127.0.0.1 for bench/fleet/run.py, and the processes to measure and clean up.

- ``prerequisites()`` installs what the fleet bench needs and is missing (``openssh-server`` for
  ``/usr/sbin/sshd``, ``sudo`` for the playbook's ``become``) with apt-get, or says what is missing.
- ``Sshd(dir)``: its own host key, client key, ``authorized_keys`` and config in ``dir``, key-only,
  root by key (``PermitRootLogin prohibit-password``), listening on 127.0.0.1 and a free port only;
  ``start()`` runs ``/usr/sbin/sshd -D`` (never the system service); ``stop()`` ends it and the
  per-connection processes it forked, by pid.
- ``close_masters(dir)``: ends the ControlPersist ssh masters Ansible left behind for one run (by
  their control sockets, then by pid), after adding up their CPU time.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

SSHD = '/usr/sbin/sshd'


def sh(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kw)


def prerequisites():
    """None when sshd, ssh, ssh-keygen and sudo are there (installing what is missing), else a message."""
    need = {'openssh-server': SSHD, 'openssh-client': '/usr/bin/ssh', 'sudo': '/usr/bin/sudo'}
    missing = [pkg for pkg, path in need.items() if not os.access(path, os.X_OK)]
    if not missing:
        return None
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    install = ['apt-get', '-o', 'DPkg::Lock::Timeout=600', '-q', '-y', 'install', '--no-install-recommends'] + missing
    if sh(install, env=env).returncode != 0:
        sh(['apt-get', '-q', 'update'], env=env)
        proc = sh(install, env=env)
        if proc.returncode != 0:
            return 'missing %s (apt-get install %s failed: %s)' % (
                ', '.join(missing), ' '.join(missing), proc.stderr.strip()[-300:])
    return None


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def children_of(pids):
    """Every descendant of ``pids`` (from /proc)."""
    parent = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open('/proc/%s/stat' % entry) as handle:
                    parent[int(entry)] = int(handle.read().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        for child, ppid in parent.items():
            if ppid == pid and child not in found:
                found.add(child)
                todo.append(child)
    return found


def cpu_seconds(pid):
    try:
        with open('/proc/%d/stat' % pid) as handle:
            fields = handle.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
    except (OSError, IndexError, ValueError):
        return 0.0


def pids_with(needle):
    out = []
    for entry in os.listdir('/proc'):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                    if needle.encode() in handle.read():
                        out.append(int(entry))
            except OSError:
                pass
    return out


def kill_pids(pids, timeout=5.0):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(os.path.exists('/proc/%d' % p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def close_masters(control_dir):
    """CPU seconds of the ssh masters using sockets in ``control_dir``; ends them."""
    pids = pids_with(control_dir.rstrip('/') + '/')
    cpu = sum(cpu_seconds(p) for p in pids)
    if os.path.isdir(control_dir):
        for name in os.listdir(control_dir):
            sh(['ssh', '-o', 'ControlPath=' + os.path.join(control_dir, name), '-O', 'exit', 'x'], timeout=10)
    kill_pids([p for p in pids if os.path.exists('/proc/%d' % p)])
    return cpu


class Sshd(object):
    def __init__(self, base):
        self.base = base
        self.port = None
        self.proc = None
        self.key = os.path.join(base, 'id_ed25519')
        self.config = os.path.join(base, 'sshd_config')
        self.log = os.path.join(base, 'sshd.log')
        self.pidfile = os.path.join(base, 'sshd.pid')

    def prepare(self):
        os.makedirs(self.base, exist_ok=True)
        os.chmod(self.base, 0o700)
        for path in (self.key, os.path.join(self.base, 'host_ed25519')):
            if not os.path.exists(path):
                proc = sh(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'image-gc-fleet-bench', '-f', path])
                if proc.returncode:
                    raise RuntimeError('ssh-keygen: %s' % proc.stderr)
        shutil.copy(self.key + '.pub', os.path.join(self.base, 'authorized_keys'))
        os.makedirs('/run/sshd', mode=0o755, exist_ok=True)       # sshd's privilege separation directory
        self.port = free_port()
        with open(self.config, 'w') as handle:
            handle.write('\n'.join([
                'ListenAddress 127.0.0.1', 'Port %d' % self.port,
                'HostKey %s' % os.path.join(self.base, 'host_ed25519'),
                'PidFile %s' % self.pidfile,
                'AuthorizedKeysFile %s' % os.path.join(self.base, 'authorized_keys'),
                'PermitRootLogin prohibit-password', 'PubkeyAuthentication yes',
                'PasswordAuthentication no', 'KbdInteractiveAuthentication no', 'UsePAM no',
                'StrictModes no',              # the key files live under /tmp (world-writable, sticky)
                'MaxStartups 300:30:600',      # 64 hosts connect at once (default 10:30:100 drops some)
                'MaxSessions 50', 'LogLevel ERROR', 'PrintMotd no', 'Subsystem sftp internal-sftp', '']))

    def start(self, timeout=20):
        self.prepare()
        with open(self.log, 'a') as log:
            self.proc = subprocess.Popen([SSHD, '-D', '-e', '-f', self.config, '-p', str(self.port)],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            proc = sh(self.ssh_argv() + ['true'], timeout=15)
            if proc.returncode == 0:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError('sshd did not answer on 127.0.0.1:%s: %s %s' % (
                    self.port, proc.stderr.strip(), self.tail()))
            time.sleep(0.3)

    def ssh_argv(self):
        return ['ssh', '-p', str(self.port), '-i', self.key, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes',
                '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR',
                'root@127.0.0.1']

    def tail(self):
        try:
            with open(self.log) as handle:
                return handle.read()[-1000:]
        except OSError:
            return ''

    def stop(self):
        """Ends sshd and every process it forked (sessions); returns the pids still alive (none expected)."""
        if self.proc is None:
            return []
        pid, self.proc = self.proc.pid, self.proc
        sessions = children_of([pid])
        kill_pids([pid] + sorted(sessions))
        self.proc.wait(timeout=10)
        self.proc = None
        return [p for p in sessions | {pid} if os.path.exists('/proc/%d' % p)]
