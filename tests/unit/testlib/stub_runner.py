# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A table-driven stub of CommandRunner: ``run(argv, timeout)`` answered from replies keyed by
the command's words, with the history the Engine reads."""

import os

from ansible_collections.nodemaint.image_gc.plugins.module_utils._common import CommandResult

CRICTL_GLOBAL_WITH_VALUE = ('--runtime-endpoint', '-r', '--image-endpoint', '-i', '--timeout', '-t', '--config', '-c')
CTR_GLOBAL_WITH_VALUE = ('--address', '-a', '--namespace', '-n')


def command_key(argv):
    """``('crictl', 'ps', '--all', ...)``: the tool and its subcommand words, global options dropped."""
    args = list(argv)
    prog = os.path.basename(args.pop(0))
    if prog in ('k3s', 'microk8s') and args:
        prog = args.pop(0)
    tool = 'ctr' if prog == 'ctr' else 'crictl' if prog == 'crictl' else prog
    with_value = CRICTL_GLOBAL_WITH_VALUE if tool == 'crictl' else CTR_GLOBAL_WITH_VALUE
    rest, index = [], 0
    while index < len(args):
        if args[index] in with_value:
            index += 2
            continue
        rest.append(args[index])
        index += 1
    return (tool,) + tuple(rest)


class UnexpectedCommand(AssertionError):
    pass


class StubRunner:
    """``run(argv, timeout=None)`` -> CommandResult, answered from a table.

    The table maps a command key prefix (``'crictl ps --all --output json'``, ``'crictl rm'``) to
    replies: a Reply, or a callable ``(argv, runner) -> Reply``. Several replies are used in turn,
    the last one repeating. The longest matching prefix wins; an unknown command raises.
    """

    def __init__(self, table=None):
        self.table = {}
        self.history = []
        self.timeouts = []
        for key, replies in (table or {}).items():
            self.on(key, *(replies if isinstance(replies, list) else [replies]))

    def on(self, key, *replies):
        key = tuple(key.split()) if isinstance(key, str) else tuple(key)
        self.table[key] = list(replies)
        return self

    def run(self, argv, timeout=None):
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), argv
        key = command_key(argv)
        for size in range(len(key), 0, -1):
            if key[:size] in self.table:
                replies = self.table[key[:size]]
                break
        else:
            raise UnexpectedCommand('unexpected command %r (key %r)' % (argv, key))
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if callable(reply):
            reply = reply(argv, self)
        result = CommandResult(argv, reply.rc, reply.out, reply.err)
        self.history.append(result)
        self.timeouts.append(timeout)
        return result

    # -- what was run -------------------------------------------------------------------------
    @property
    def calls(self):
        return [r.argv for r in self.history]

    @property
    def keys(self):
        return [command_key(r.argv) for r in self.history]

    def ran(self, *prefix):
        return [r.argv for r in self.history if command_key(r.argv)[:len(prefix)] == prefix]

    def removals(self):
        """Every command that removes or changes something."""
        out = []
        for argv in self.calls:
            key = command_key(argv)
            if key[:2] in (('crictl', 'rm'), ('crictl', 'rmp'), ('crictl', 'rmi'), ('crictl', 'stopp')):
                out.append(argv)
            elif key[:4] == ('ctr', 'content', 'prune', 'references') and '--dry' not in key:
                out.append(argv)
        return out
