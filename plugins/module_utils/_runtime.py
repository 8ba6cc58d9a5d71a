# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""What discovery found (_discovery.Discovery.resolve): the crictl and ctr command prefixes, the
endpoints, the kubelet root's candidates and where each came from; the argv of every crictl and
ctr command is built here."""

from ._common import ImageGCError


class Runtime:
    """What was found: command prefixes, endpoints and where each came from."""

    def __init__(self):
        self.crictl = None              # argv prefix, e.g. ['/usr/local/bin/crictl'] or ['/usr/local/bin/k3s', 'crictl']
        self.ctr = None
        self.runtime_endpoint = None
        self.image_endpoint = None
        self.containerd_address = None
        self.kubelet_root = None        # the option kubelet_root; else the live one of kubelet_candidates, chosen
        #                                 by _node.Node once it has the sandboxes (None: none is live)
        self.kubelet_candidates = []    # [(root, source)] to check, the running kubelet's first
        self.timeout = None             # seconds, set by resolve()
        self.sources = {}
        self.tried = []
        self.errors = {}                # binary -> ImageGCError, raised only when it is used

    def crictl_argv(self, *args):
        if not self.crictl:
            raise self.errors.get('crictl') or ImageGCError('crictl is needed for this phase but was not found')
        argv = list(self.crictl)
        if self.runtime_endpoint:
            argv += ['--runtime-endpoint', self.runtime_endpoint]
        if self.image_endpoint:
            argv += ['--image-endpoint', self.image_endpoint]
        argv += ['--timeout', '%ds' % self.timeout]
        return argv + list(args)

    def ctr_argv(self, namespace, *args):
        if not self.ctr:
            raise self.errors.get('ctr') or ImageGCError('ctr is needed for this phase but was not found')
        argv = list(self.ctr)
        if self.containerd_address:
            argv += ['--address', self.containerd_address]
        return argv + ['--namespace', namespace] + list(args)

    def to_dict(self):
        return {'crictl': self.crictl, 'ctr': self.ctr, 'runtime_endpoint': self.runtime_endpoint,
                'image_endpoint': self.image_endpoint, 'containerd_address': self.containerd_address,
                'kubelet_root': self.kubelet_root, 'kubelet_candidates': [list(c) for c in self.kubelet_candidates],
                'sources': dict(self.sources)}
