# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible: the node-side runner (roles/timer) runs this very code with
# nothing but the Python 3.8+ standard library.
"""Errors, value parsing, the one place that runs commands, and the run lock."""

import errno
import fcntl
import os
import re
import subprocess
import time


class ImageGCError(Exception):
    """An error whose message names the cause and the fix."""


class CommandError(ImageGCError):
    """A command that failed as a whole (not one item of a batch)."""

    def __init__(self, message, result):
        super().__init__(message)
        self.result = result

    def to_dict(self):
        return {'msg': str(self), 'cmd': self.result.argv, 'rc': self.result.rc,
                'stdout': self.result.stdout, 'stderr': self.result.stderr}


# --------------------------------------------------------------------------------------------
# Durations, sizes, ages

_DURATION_RE = re.compile(r'^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$')


def parse_duration(value, name='duration'):
    """Seconds from ``600``, ``'600'``, ``'90s'``, ``'10m'``, ``'1h30m'``, ``'7d'``; ImageGCError otherwise."""
    hint = ("%s: invalid duration %r; use whole seconds (600) or days/hours/minutes/seconds "
            "such as 90s, 10m, 1h30m or 7d" % (name, value))
    if isinstance(value, bool):
        raise ImageGCError(hint)
    if isinstance(value, int):
        if value < 0:
            raise ImageGCError(hint)
        return value
    if not isinstance(value, str):
        raise ImageGCError(hint)
    text = value.strip()
    if text.isdigit():
        return int(text)
    match = _DURATION_RE.match(text)
    if not text or not match or not any(match.groups()):
        raise ImageGCError(hint)
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def format_duration(seconds):
    """``'1h30m'``-style text of a number of seconds (the inverse of parse_duration); whole days
    from two days on (``'3d'``, ``'2d4h'``), so ``'36h'`` stays ``'36h'``."""
    seconds = int(seconds)
    if seconds == 0:
        return '0s'
    out = ''
    units = (('d', 86400),) if seconds >= 2 * 86400 else ()
    for unit, size in units + (('h', 3600), ('m', 60), ('s', 1)):
        if seconds >= size:
            out += '%d%s' % (seconds // size, unit)
            seconds %= size
    return out


_SIZE_RE = re.compile(r'^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKMGTP]?i?B)\s*$')
_SIZE_UNITS = {'B': 1, 'kB': 1000, 'KB': 1000, 'MB': 1000 ** 2, 'GB': 1000 ** 3, 'TB': 1000 ** 4,
               'PB': 1000 ** 5, 'KiB': 1024, 'kiB': 1024, 'MiB': 1024 ** 2, 'GiB': 1024 ** 3,
               'TiB': 1024 ** 4, 'PiB': 1024 ** 5}


def parse_human_size(text):
    """Bytes from the human sizes ctr prints (``422B``, ``1.028MB``, ``1004.7 KiB``).

    ctr rounds to four significant digits, so the result is approximate for large blobs.
    """
    match = _SIZE_RE.match(text or '')
    if not match or match.group(2) not in _SIZE_UNITS:
        raise ValueError('not a size: %r' % (text,))
    return int(round(float(match.group(1)) * _SIZE_UNITS[match.group(2)]))


_AGE_UNITS = {'second': 1, 'minute': 60, 'hour': 3600, 'day': 86400, 'week': 7 * 86400,
              'month': 30 * 86400, 'year': 365 * 86400}
_AGE_RE = re.compile(r'^(\d+|an?|about an?)\s+(second|minute|hour|day|week|month|year)s?(?:\s+ago)?$')
# go-units' HumanDuration (what ctr prints) truncates seconds and minutes, and rounds hours, days,
# weeks, months and years to the nearest unit; each unit's form is only printed from a least
# duration on (hours from 60 minutes, days from 47.5 hours (48 rounded hours), weeks from 14
# days, months from 60 days, years from 730 days).
_ROUNDED_FROM = {'hour': 3600, 'day': 47 * 3600 + 1800, 'week': 14 * 86400, 'month': 60 * 86400,
                 'year': 730 * 86400}


def parse_human_age(text):
    """Seconds from the ages ctr prints (``10 seconds``, ``About an hour``, ``3 weeks``): the least
    the age can be. go-units rounds ``2 hours`` from 90 minutes on, so that reads as 5400 s, never
    as 7200 s (an age is a reason to remove: it must not be overstated)."""
    text = (text or '').strip().lower()
    if text in ('less than a second', 'less than a second ago'):
        return 0
    match = _AGE_RE.match(text)
    if not match:
        raise ValueError('not an age: %r' % (text,))
    count, unit = match.group(1), match.group(2)
    number = int(count) if count.isdigit() else 1
    size = _AGE_UNITS[unit]
    if unit not in _ROUNDED_FROM:
        return number * size                  # truncated: N minutes is at least N minutes
    return max(_ROUNDED_FROM[unit], (2 * number - 1) * size // 2)


# --------------------------------------------------------------------------------------------
# Running commands: one choke point, argv lists only, never a shell

class CommandResult:
    def __init__(self, argv, rc, stdout, stderr, duration=0.0):
        self.argv = list(argv)
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.duration = duration

    def __repr__(self):
        return 'CommandResult(%r, rc=%r)' % (self.argv, self.rc)


class CommandRunner:
    """Runs argv lists with LC_ALL=C and no stdin; records what it ran.

    Tests replace it with a stub that has the same ``run(argv, timeout=None)`` method.
    """

    def __init__(self, env=None, default_timeout=None):
        self.env = dict(os.environ if env is None else env)
        self.env['LC_ALL'] = 'C'
        self.env['LANG'] = 'C'
        self.default_timeout = default_timeout
        self.history = []

    def run(self, argv, timeout=None):
        if isinstance(argv, str) or not argv:
            raise TypeError('argv must be a non-empty list')
        argv = [str(a) for a in argv]
        started = time.monotonic()
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  env=self.env, check=False,
                                  timeout=timeout or self.default_timeout)
            result = CommandResult(argv, proc.returncode,
                                   proc.stdout.decode('utf-8', 'replace'),
                                   proc.stderr.decode('utf-8', 'replace'))
        except OSError as exc:
            result = CommandResult(argv, 127, '', '%s: %s' % (argv[0], exc.strerror or exc))
        except subprocess.TimeoutExpired as exc:
            result = CommandResult(argv, 124, '', 'timed out after %ss: %s' % (exc.timeout, ' '.join(argv)))
        result.duration = time.monotonic() - started
        self.history.append(result)
        return result


# --------------------------------------------------------------------------------------------
# The run lock shared by the timer's runner and the modules

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


# --------------------------------------------------------------------------------------------
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
