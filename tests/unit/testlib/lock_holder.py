# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Another process holding the run lock, as a second run on the node would."""

import contextlib
import subprocess
import sys

_HOLD = ('import fcntl,os,sys,time\nfd=os.open(sys.argv[1],os.O_RDWR|os.O_CREAT)\n'
         'fcntl.flock(fd,fcntl.LOCK_EX)\nos.write(fd,b"%d\\n"%os.getpid())\nprint("held",flush=True)\ntime.sleep(30)')


@contextlib.contextmanager
def lock_held_elsewhere(path):
    """A child process takes ``path``'s flock, writes its pid into it, and holds it until the block
    ends (30 s at most). Yields the holder's pid."""
    holder = subprocess.Popen([sys.executable, '-c', _HOLD, str(path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b'held'
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
