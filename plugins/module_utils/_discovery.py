# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""Find crictl, ctr and the runtime endpoints the way kubeadm, k3s, RKE2, MicroK8s and CRI-O nodes need it.

The kubelet root's candidates: _kubelet_root (Discovery passes it its is_dir and /proc).
What was found, and the argv of every crictl and ctr command built from it: _runtime.Runtime.

Order for the CRI endpoint: explicit option, ``CONTAINER_RUNTIME_ENDPOINT`` (and
``IMAGE_SERVICE_ENDPOINT``), the file named by ``CRI_CONFIG_FILE``, the crictl config files of
kubeadm/k3s/RKE2, then the well-known containerd sockets, then CRI-O's. Which runtime answers
there (``crictl version``'s RuntimeName) is the engine's to ask (_engine.Engine.runtime_name).
Explicit choices are authoritative; the others are candidates that are skipped when their socket does not exist. Every place tried is
kept, so an error can list them all.
"""

import os
import stat

from ._common import ImageGCError
from ._kubelet_root import find_kubelet_root, kubelet_root_candidates
from ._runtime import Runtime

CRICTL_CONFIG_FILES = (
    '/etc/crictl.yaml',
    '/var/lib/rancher/k3s/agent/etc/crictl.yaml',
    '/var/lib/rancher/rke2/agent/etc/crictl.yaml',
)

WELL_KNOWN_SOCKETS = (
    '/run/containerd/containerd.sock',                  # kubeadm, most packaged containerd
    '/run/k3s/containerd/containerd.sock',              # k3s and RKE2
    '/var/snap/microk8s/common/run/containerd.sock',    # MicroK8s
    '/var/run/crio/crio.sock',                          # CRI-O (its default listen path)
    '/run/crio/crio.sock',                              # CRI-O where /var/run is not /run's link
)

BINARY_DIRS = ('/usr/local/bin', '/usr/bin', '/usr/local/sbin', '/usr/sbin',
               '/var/lib/rancher/rke2/bin', '/snap/bin')

# Multi-call binaries that carry crictl/ctr as subcommands.
WRAPPERS = {'crictl': ('k3s',), 'ctr': ('k3s', 'microk8s')}

# MicroK8s: the snap's own ctr and the socket of the snap's containerd. `microk8s ctr` runs that
# same binary, but through snap-confine, which needs privileges that node-image-gc.service takes
# away (NoNewPrivileges=, RestrictNamespaces=, no capabilities): called directly, the binary
# works there. It is tried after a ctr in the usual directories and before the wrappers.
MICROK8S_CTR = '/snap/microk8s/current/bin/ctr'
MICROK8S_SOCKET = '/var/snap/microk8s/common/run/containerd.sock'
SNAP_BINARIES = {'ctr': (MICROK8S_CTR,)}
# Why a wrapper found as a last resort may not work everywhere.
WRAPPER_NOTES = {
    'microk8s': 'through snap confinement, which fails inside node-image-gc.service (NoNewPrivileges=, '
                'RestrictNamespaces=); %s was not found' % MICROK8S_CTR,
}


def _unix_path(endpoint):
    """Filesystem path of a ``unix://`` endpoint (or of a bare absolute path), else None."""
    if endpoint.startswith('unix://'):
        return endpoint[len('unix://'):]
    if endpoint.startswith('/'):
        return endpoint
    return None


def _as_endpoint(value):
    return 'unix://' + value if value.startswith('/') else value


def read_crictl_config(path):
    """``{'runtime-endpoint': ..., 'image-endpoint': ..., 'timeout': ...}`` from a crictl.yaml.

    crictl.yaml is a flat ``key: value`` file; a tiny parser keeps the node free of PyYAML.
    """
    values = {}
    with open(path) as handle:
        for raw in handle:
            line = raw.split('#', 1)[0].strip()
            if ':' not in line:
                continue
            key, value = line.split(':', 1)
            value = value.strip().strip('"').strip("'")
            if value:
                values[key.strip()] = value
    return values


class Discovery:
    """Resolves a _runtime.Runtime. ``env``, ``exists``, ``is_socket``, ``root`` (the directory the
    well-known sockets are looked up under, ``/`` on a node) and ``proc`` (the /proc whose command
    lines name the running kubelet's root) are injectable for tests."""

    def __init__(self, env=None, exists=None, is_executable=None, is_socket=None, read_config=None, is_dir=None,
                 root='/', proc='/proc'):
        self.env = os.environ if env is None else env
        self.root = root
        self.proc = proc
        self.exists = exists or os.path.exists
        self.is_dir = is_dir or os.path.isdir
        self.is_executable = is_executable or (lambda p: os.path.isfile(p) and os.access(p, os.X_OK))
        self.is_socket = is_socket or _is_socket
        self.read_config = read_config or read_crictl_config

    # -- binaries -----------------------------------------------------------------------------
    def find_binary(self, name, explicit, option, tried):
        if explicit:
            path = explicit
            if os.sep not in path:
                found = self._search_path(path, tried)
                if not found:
                    raise ImageGCError('%s=%r: no executable of that name on PATH (%s). Give an '
                                       'absolute path.' % (option, explicit, self.env.get('PATH', '')))
                path = found
            elif not self.is_executable(path):
                raise ImageGCError('%s=%r: no such executable file. Set %s to the %s binary '
                                   'of this node.' % (option, explicit, option, name))
            if os.path.basename(path) in WRAPPERS.get(name, ()):
                return [path, name], 'option %s (%s subcommand)' % (option, os.path.basename(path))
            return [path], 'option %s' % option
        found = self._search_path(name, tried) or self._search_dirs(name, tried)
        if found:
            return [found], 'found at %s' % found
        for candidate in SNAP_BINARIES.get(name, ()):
            tried.append(candidate)
            if self.is_executable(candidate):
                return [candidate], 'the MicroK8s snap\'s own %s at %s' % (name, candidate)
        for wrapper in WRAPPERS.get(name, ()):
            found = self._search_path(wrapper, tried) or self._search_dirs(wrapper, tried)
            if found:
                source = '%s %s' % (found, name)
                if wrapper in WRAPPER_NOTES:
                    source += ' (%s)' % WRAPPER_NOTES[wrapper]
                return [found, name], source
        return None, None

    def _search_path(self, name, tried):
        for directory in self.env.get('PATH', '').split(os.pathsep):
            if not directory:
                continue
            candidate = os.path.join(directory, name)
            tried.append(candidate)
            if self.is_executable(candidate):
                return candidate
        return None

    def _search_dirs(self, name, tried):
        for directory in BINARY_DIRS:
            candidate = os.path.join(directory, name)
            if candidate in tried:
                continue
            tried.append(candidate)
            if self.is_executable(candidate):
                return candidate
        return None

    # -- endpoints ----------------------------------------------------------------------------
    def find_endpoint(self, runtime_endpoint, image_endpoint, tried):
        """(runtime endpoint, image endpoint, source) or (None, None, None)."""
        for value, source in ((runtime_endpoint, 'option runtime_endpoint'),
                              (self.env.get('CONTAINER_RUNTIME_ENDPOINT'), 'CONTAINER_RUNTIME_ENDPOINT')):
            if value:
                endpoint = _as_endpoint(value)
                path = _unix_path(endpoint)
                tried.append('%s (%s)' % (endpoint, source))
                if path and not self.is_socket(path):
                    raise ImageGCError(
                        'runtime endpoint %s (from %s) is not a socket: is the container runtime running, '
                        'and is this the right path? k3s/RKE2 use unix:///run/k3s/containerd/containerd.sock, '
                        'MicroK8s unix:///var/snap/microk8s/common/run/containerd.sock, CRI-O '
                        'unix:///var/run/crio/crio.sock.' % (endpoint, source))
                image = image_endpoint or self.env.get('IMAGE_SERVICE_ENDPOINT') or endpoint
                return endpoint, _as_endpoint(image), source
        configs = list(CRICTL_CONFIG_FILES)
        if self.env.get('CRI_CONFIG_FILE'):
            configs.insert(0, self.env['CRI_CONFIG_FILE'])
        for path in configs:
            tried.append('%s (crictl config)' % path)
            if not self.exists(path):
                continue
            try:
                values = self.read_config(path)
            except (OSError, UnicodeDecodeError) as exc:
                raise ImageGCError('cannot read crictl config %s: %s' % (path, exc))
            endpoint = values.get('runtime-endpoint')
            if not endpoint:
                continue
            endpoint = _as_endpoint(endpoint)
            sock = _unix_path(endpoint)
            tried.append('%s (runtime-endpoint in %s)' % (endpoint, path))
            if sock and not self.is_socket(sock):
                continue
            image = image_endpoint or self.env.get('IMAGE_SERVICE_ENDPOINT') or values.get('image-endpoint') or endpoint
            return endpoint, _as_endpoint(image), 'crictl config %s' % path
        for sock in WELL_KNOWN_SOCKETS:
            sock = os.path.join(self.root, sock.lstrip('/')) if self.root != '/' else sock
            tried.append('unix://%s (well-known socket)' % sock)
            if self.is_socket(sock):
                endpoint = 'unix://' + sock
                image = image_endpoint or self.env.get('IMAGE_SERVICE_ENDPOINT') or endpoint
                return endpoint, _as_endpoint(image), 'well-known socket'
        return None, None, None

    # -- the kubelet's root directory (_kubelet_root) --------------------------------------------
    def kubelet_root_candidates(self, explicit, tried):
        """[(root, source)]: _kubelet_root.kubelet_root_candidates over this discovery's is_dir and proc."""
        return kubelet_root_candidates(explicit, tried, self.is_dir, self.proc)

    def find_kubelet_root(self, explicit, tried):
        """(root, source) of the first candidate that has a ``pods`` directory, or (None, None)."""
        return find_kubelet_root(explicit, tried, self.is_dir, self.proc)

    # -- all together -------------------------------------------------------------------------
    def resolve(self, crictl_path=None, ctr_path=None, runtime_endpoint=None, image_endpoint=None,
                containerd_address=None, *, timeout, need_crictl=True, need_ctr=False, kubelet_root=None):
        runtime = Runtime()
        runtime.timeout = timeout
        crictl_tried, ctr_tried, endpoint_tried = [], [], []

        for name, explicit, option, tried, needed, missing in (
                ('crictl', crictl_path, 'crictl_path', crictl_tried, need_crictl,
                 'crictl not found. Tried: %s, and "k3s crictl". Install crictl (cri-tools) or set crictl_path '
                 'to its absolute path (for k3s: /usr/local/bin/k3s; MicroK8s ships no crictl).'),
                ('ctr', ctr_path, 'ctr_path', ctr_tried, need_ctr,
                 'ctr not found. Tried: %s, "k3s ctr" and "microk8s ctr". Install containerd\'s ctr or set '
                 'ctr_path to its absolute path (for MicroK8s: ' + MICROK8S_CTR + ').')):
            # A binary this run does not need may be missing (or wrongly set): its error is kept
            # and raised only if it is used.
            try:
                found, runtime.sources[name] = self.find_binary(name, explicit, option, tried)
                if not found:
                    raise ImageGCError(missing % ', '.join(tried))
                setattr(runtime, name, found)
            except ImageGCError as exc:
                if needed:
                    raise
                runtime.errors[name] = exc

        runtime.runtime_endpoint, runtime.image_endpoint, source = self.find_endpoint(
            runtime_endpoint, image_endpoint, endpoint_tried)
        if not runtime.runtime_endpoint:
            raise ImageGCError(
                'no container runtime socket found. Tried: %s. Start containerd (or CRI-O), or set '
                'runtime_endpoint (or CONTAINER_RUNTIME_ENDPOINT), e.g. '
                'unix:///run/k3s/containerd/containerd.sock.' % '; '.join(endpoint_tried))
        runtime.sources['runtime_endpoint'] = source

        if containerd_address:
            runtime.containerd_address, runtime.sources['containerd_address'] = containerd_address, 'option containerd_address'
        elif self.env.get('CONTAINERD_ADDRESS'):
            runtime.containerd_address, runtime.sources['containerd_address'] = self.env['CONTAINERD_ADDRESS'], 'CONTAINERD_ADDRESS'
        elif runtime.ctr == [MICROK8S_CTR] and self.is_socket(MICROK8S_SOCKET):
            # the snap's ctr defaults to /run/containerd/containerd.sock, not to its own containerd
            runtime.containerd_address = MICROK8S_SOCKET
            runtime.sources['containerd_address'] = 'the MicroK8s snap socket (for the snap\'s ctr)'
        elif _unix_path(runtime.runtime_endpoint):
            runtime.containerd_address = _unix_path(runtime.runtime_endpoint)
            runtime.sources['containerd_address'] = 'the runtime endpoint'
        kubelet_tried = []
        runtime.kubelet_candidates = self.kubelet_root_candidates(kubelet_root, kubelet_tried)
        if kubelet_root:
            runtime.kubelet_root, runtime.sources['kubelet_root'] = runtime.kubelet_candidates[0]
        runtime.tried = crictl_tried + ctr_tried + endpoint_tried + kubelet_tried
        return runtime


def _is_socket(path):
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False
