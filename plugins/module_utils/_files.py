# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible: the node-side runner (roles/timer) runs this very code with
# nothing but the Python 3.8+ standard library.
"""What a run keeps on the node's disk: the run lock shared by the runner and the modules, and
files written whole or not at all."""

import errno
import fcntl
import os
import time

from ._common import ImageGCError
from ._units import format_duration


DEFAULT_LOCK_PATH = '/run/node-image-gc/lock'


class RunLock:
    """An exclusive flock on ``path``; ``acquire`` waits at most ``wait`` seconds."""

    def __init__(self, path=DEFAULT_LOCK_PATH, wait=600, poll=0.2):
        self.path = path
        self.wait = wait
        self.poll = poll
        self._fd = None

    def acquire(self):
        """True when the lock is held; False when another run still held it after ``wait`` seconds."""
        directory = os.path.dirname(self.path)
        if directory and not os.path.isdir(directory):
            os.makedirs(directory, 0o755)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(self.poll)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, ('%d\n' % os.getpid()).encode())
            self._fd = fd
            return True

    def holder(self):
        """PID written by the current holder, or None."""
        try:
            with open(self.path) as handle:
                return int(handle.read().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def release(self):
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        if not self.acquire():
            raise ImageGCError('another image GC run holds %s (pid %s) and did not finish within %s; '
                               'this run was skipped. Wait for it, or raise lock_wait.'
                               % (self.path, self.holder(), format_duration(self.wait)))
        return self

    def __exit__(self, *exc):
        self.release()


# Files the runs keep: written whole or not at all

# A temp file is named ``.<name>.<pid>.node-image-gc-tmp`` next to the file it replaces: the next
# write removes those whose writer is gone (a run killed mid-write), and never one of a live run.
TEMP_SUFFIX = '.node-image-gc-tmp'


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True                    # exists, owned by someone else
    return True


def _remove_stale_temps(directory, name):
    prefix = '.%s.' % name
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for entry in names:
        if not (entry.startswith(prefix) and entry.endswith(TEMP_SUFFIX)):
            continue
        pid = entry[len(prefix):-len(TEMP_SUFFIX)]
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            try:
                os.unlink(os.path.join(directory, entry))
            except OSError:
                pass


def _fsync_directory(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path, text, mode=0o644):
    """Replaces ``path`` with ``text``, whole or not at all, and durably: a temp file in the same
    directory, fsync'ed, renamed over the file, then the directory fsync'ed. A ``path`` that is a
    symlink is written through (its target is replaced, the link stays). On any error (a full
    disk: ENOSPC) the previous file is left as it was, the temp file is removed and the OSError
    raised. Temp files that a killed run left next to the file are removed first."""
    target = os.path.realpath(path) if os.path.islink(path) else path
    directory = os.path.dirname(target) or '.'
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    name = os.path.basename(target)
    _remove_stale_temps(directory, name)
    tmp = os.path.join(directory, '.%s.%d%s' % (name, os.getpid(), TEMP_SUFFIX))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, 'O_CLOEXEC', 0), mode)
        with os.fdopen(fd, 'w') as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        _fsync_directory(directory)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
