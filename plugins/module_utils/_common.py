# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible: the node-side runner (roles/timer) runs this very code with
# nothing but the Python 3.8+ standard library.
"""Errors whose message names the cause and the fix, and the one place that runs commands."""

import os
import subprocess
import tempfile
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
            proc = self._run(argv, timeout or self.default_timeout)
            result = CommandResult(argv, proc.returncode, proc.stdout.decode('utf-8', 'replace'),
                                   proc.stderr.decode('utf-8', 'replace'))
            del proc
        except OSError as exc:
            result = CommandResult(argv, 127, '', '%s: %s' % (argv[0], exc.strerror or exc))
        except subprocess.TimeoutExpired as exc:
            result = CommandResult(argv, 124, '', 'timed out after %ss: %s' % (exc.timeout, ' '.join(argv)))
        result.duration = time.monotonic() - started
        self.history.append(result)
        return result

    def _run(self, argv, timeout):
        """The finished process with its output (bytes). Its stdout goes to an unlinked temporary
        file, read once the command exited: a listing's text (7 MB for 10,000 containers) is not
        held here while the crictl that prints it is still resident (65-84 MiB then; issue 26).
        Without a usable temporary directory, through a pipe."""
        try:
            spool = tempfile.TemporaryFile()
        except OSError:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=self.env, check=False,
                                  timeout=timeout)
        with spool:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=spool, stderr=subprocess.PIPE,
                                  env=self.env, check=False, timeout=timeout)
            spool.seek(0)
            proc.stdout = spool.read()
        return proc
