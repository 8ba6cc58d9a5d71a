# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""_runtime: the argv of the crictl and ctr commands, built from what discovery found."""

import pytest

from ansible_collections.nodemaint.image_gc.plugins.module_utils._common import ImageGCError
from ansible_collections.nodemaint.image_gc.plugins.module_utils._runtime import Runtime

K8S_SOCK = '/run/containerd/containerd.sock'


@pytest.fixture
def runtime():
    """A Runtime as discovery leaves it on a kubeadm node: crictl found, both endpoints the socket."""
    found = Runtime()
    found.crictl = ['/usr/local/bin/crictl']
    found.runtime_endpoint = found.image_endpoint = 'unix://' + K8S_SOCK
    found.timeout = 120
    return found


def test_crictl_argv_has_endpoints_and_timeout(runtime):
    assert runtime.crictl_argv('rmi', 'sha256:a') == [
        '/usr/local/bin/crictl', '--runtime-endpoint', 'unix://' + K8S_SOCK, '--image-endpoint', 'unix://' + K8S_SOCK,
        '--timeout', '120s', 'rmi', 'sha256:a']


def test_crictl_argv_without_crictl_says_it_is_needed(runtime):
    runtime.crictl = None
    with pytest.raises(ImageGCError, match='crictl is needed'):
        runtime.crictl_argv('ps')
