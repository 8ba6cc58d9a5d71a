# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""The kubelet's root directory (--root-dir): the option ``kubelet_root``, else every running
kubelet's root (its ``--root-dir``, or k3s/RKE2's ``--kubelet-arg root-dir=``, read from
/proc/<pid>/cmdline) and the distribution defaults as candidates, of which _node.Node takes the
live one."""

import os

from ._common import ImageGCError


# The kubelet's root directory (--root-dir): kubeadm, k3s and RKE2 use the default; MicroK8s its
# snap's. A pod the kubelet still tracks has a directory <root>/pods/<uid>.
KUBELET_ROOTS = (
    '/var/lib/kubelet',
    '/var/snap/microk8s/common/var/lib/kubelet',    # MicroK8s
)

# The kubelet's processes: the kubelet itself (--root-dir; kubeadm, RKE2's own kubelet process, k0s,
# MicroK8s), and k3s / RKE2 server or agent processes, which run it in-process (k3s) or start it
# (RKE2) with --kubelet-arg root-dir=... . A kubelet without --root-dir uses KUBELET_ROOTS[0].
KUBELET_PROGRAMS = ('kubelet',)
KUBELET_ARG_PROGRAMS = ('k3s', 'rke2')


def _flag_values(args, flag):
    """Every value of ``flag`` in ``args``: ``--flag=v`` and ``--flag v``."""
    values = []
    for i, arg in enumerate(args):
        if arg.startswith(flag + '='):
            values.append(arg[len(flag) + 1:])
        elif arg == flag and i + 1 < len(args):
            values.append(args[i + 1])
    return values


def kubelet_root_of(argv):
    """(root, how) when ``argv`` is a process that runs the kubelet, else None: the kubelet's
    ``--root-dir`` (its default when not given); k3s/RKE2 ``server``/``agent``: the last
    ``--kubelet-arg root-dir=...`` (or ``--kubelet-arg=root-dir=...``), else the default."""
    if not argv:
        return None
    words = argv[0].split() + list(argv[1:])     # k3s rewrites its title: 'k3s server' as one word
    program = os.path.basename(words[0])
    if program in KUBELET_PROGRAMS:
        roots = _flag_values(words[1:], '--root-dir')
        if roots and roots[-1]:
            return roots[-1], '--root-dir'
        return KUBELET_ROOTS[0], 'no --root-dir: the default'
    if program in KUBELET_ARG_PROGRAMS or program.startswith(tuple(p + '-' for p in KUBELET_ARG_PROGRAMS)):
        if not any(w in ('server', 'agent') for w in words[1:3]) and not program.endswith(('-server', '-agent')):
            return None
        root = None
        for value in _flag_values(words[1:], '--kubelet-arg'):
            key, sep, val = value.lstrip('-').partition('=')
            if key == 'root-dir' and sep and val:
                root = val
        if root:
            return root, '--kubelet-arg root-dir'
        return KUBELET_ROOTS[0], 'no --kubelet-arg root-dir: the default'
    return None


def read_cmdlines(proc):
    """[(pid, argv)] of the processes under ``proc`` (a /proc), in pid order; unreadable ones skipped."""
    try:
        pids = sorted(int(p) for p in os.listdir(proc) if p.isdigit())
    except OSError:
        return []
    out = []
    for pid in pids:
        try:
            with open(os.path.join(proc, str(pid), 'cmdline'), 'rb') as handle:
                raw = handle.read()
        except OSError:
            continue
        argv = [a.decode('utf-8', 'replace') for a in raw.split(b'\0') if a]
        if argv:
            out.append((pid, argv))
    return out


def kubelet_root_candidates(explicit, tried, is_dir=os.path.isdir, proc='/proc'):
    """[(root, source)]: the option alone when set (it must be a directory, and it wins); else
    the root of every running kubelet (its ``--root-dir``, or k3s/RKE2's ``--kubelet-arg
    root-dir=``, from /proc/<pid>/cmdline), then the distribution defaults, each once. Which
    of them is the live root needs the sandboxes: _node.Node checks them in this order."""
    if explicit:
        tried.append('%s (option kubelet_root)' % explicit)
        if not is_dir(explicit):
            raise ImageGCError('kubelet_root=%r: no such directory. Set it to the kubelet\'s --root-dir '
                               '(default /var/lib/kubelet; MicroK8s: %s), or leave it unset to find it.'
                               % (explicit, KUBELET_ROOTS[1]))
        return [(explicit, 'option kubelet_root')]
    out = []
    for pid, argv in read_cmdlines(proc):
        found = kubelet_root_of(argv)
        if found and found[0] not in [candidate[0] for candidate in out]:
            program = os.path.basename(argv[0].split()[0])
            out.append((found[0], 'the running %s (pid %d, %s)' % (program, pid, found[1])))
    for root in KUBELET_ROOTS:
        if root not in [candidate[0] for candidate in out]:
            out.append((root, 'well-known kubelet root'))
    tried.extend('%s (%s)' % c for c in out)
    return out


def find_kubelet_root(explicit, tried, is_dir=os.path.isdir, proc='/proc'):
    """(root, source) of the first candidate that has a ``pods`` directory, or (None, None);
    without the sandboxes this cannot tell the live root (see kubelet_root_candidates)."""
    for root, source in kubelet_root_candidates(explicit, tried, is_dir, proc):
        if source == 'option kubelet_root' or is_dir(os.path.join(root, 'pods')):
            return root, source
    return None, None
