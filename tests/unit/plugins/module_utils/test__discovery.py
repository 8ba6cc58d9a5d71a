# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Over 300 lines: many cases of one subject, where discovery looks for crictl, ctr and the endpoints, and in which order.
"""_discovery: where crictl, ctr and the CRI endpoint are found, in which order, and the errors."""

import pytest

from ansible_collections.nodemaint.image_gc.plugins.module_utils._common import ImageGCError
from ansible_collections.nodemaint.image_gc.plugins.module_utils._discovery import (
    CRICTL_CONFIG_FILES, MICROK8S_CTR, WELL_KNOWN_SOCKETS, read_crictl_config)

from tests.unit.image_gc_testlib import fake_discovery

K8S_SOCK = '/run/containerd/containerd.sock'
K3S_SOCK = '/run/k3s/containerd/containerd.sock'
MICROK8S_SOCK = '/var/snap/microk8s/common/run/containerd.sock'
BINS = {'/usr/local/bin/crictl', '/usr/bin/ctr'}


def resolve(discovery, **kwargs):
    kwargs.setdefault('need_ctr', False)
    kwargs.setdefault('timeout', 120)
    return discovery.resolve(**kwargs)


# -- endpoints -------------------------------------------------------------------------------

def test_explicit_options_win_over_environment():
    discovery = fake_discovery(
        env={'PATH': '/usr/local/bin', 'CONTAINER_RUNTIME_ENDPOINT': 'unix://' + K8S_SOCK,
             'IMAGE_SERVICE_ENDPOINT': 'unix://' + K8S_SOCK, 'CONTAINERD_ADDRESS': K8S_SOCK},
        executables=BINS | {'/opt/bin/crictl'}, sockets={K8S_SOCK, K3S_SOCK})
    runtime = resolve(discovery, crictl_path='/opt/bin/crictl', runtime_endpoint='unix://' + K3S_SOCK,
                      image_endpoint='unix://' + K3S_SOCK, containerd_address=K3S_SOCK)
    assert runtime.crictl == ['/opt/bin/crictl']
    assert runtime.runtime_endpoint == 'unix://' + K3S_SOCK
    assert runtime.image_endpoint == 'unix://' + K3S_SOCK
    assert runtime.containerd_address == K3S_SOCK
    assert runtime.sources['runtime_endpoint'] == 'option runtime_endpoint'
    assert runtime.sources['containerd_address'] == 'option containerd_address'
    assert runtime.sources['crictl'] == 'option crictl_path'


def test_explicit_bare_path_is_turned_into_unix_endpoint():
    discovery = fake_discovery(executables=BINS, sockets={K3S_SOCK})
    runtime = resolve(discovery, crictl_path='/usr/local/bin/crictl', runtime_endpoint=K3S_SOCK)
    assert runtime.runtime_endpoint == 'unix://' + K3S_SOCK
    assert runtime.image_endpoint == 'unix://' + K3S_SOCK
    assert runtime.containerd_address == K3S_SOCK


def test_container_runtime_endpoint_and_image_service_endpoint_env():
    discovery = fake_discovery(
        env={'PATH': '/usr/local/bin', 'CONTAINER_RUNTIME_ENDPOINT': 'unix://' + K3S_SOCK,
             'IMAGE_SERVICE_ENDPOINT': 'unix://' + MICROK8S_SOCK},
        configs={'/etc/crictl.yaml': {'runtime-endpoint': 'unix://' + K8S_SOCK}},
        executables=BINS, sockets={K8S_SOCK, K3S_SOCK, MICROK8S_SOCK})
    runtime = resolve(discovery)
    assert runtime.runtime_endpoint == 'unix://' + K3S_SOCK
    assert runtime.image_endpoint == 'unix://' + MICROK8S_SOCK
    assert runtime.sources['runtime_endpoint'] == 'CONTAINER_RUNTIME_ENDPOINT'
    assert discovery.seen['read_config'] == []          # env wins: no config file read


def test_image_service_endpoint_env_applies_to_a_configured_runtime_endpoint():
    discovery = fake_discovery(env={'PATH': '/usr/local/bin', 'IMAGE_SERVICE_ENDPOINT': 'unix://' + K3S_SOCK},
                               executables=BINS, sockets={K8S_SOCK, K3S_SOCK})
    runtime = resolve(discovery)
    assert runtime.runtime_endpoint == 'unix://' + K8S_SOCK
    assert runtime.image_endpoint == 'unix://' + K3S_SOCK


def test_cri_config_file_env_is_read_before_etc_crictl_yaml():
    discovery = fake_discovery(
        env={'PATH': '/usr/local/bin', 'CRI_CONFIG_FILE': '/home/ops/crictl.yaml'},
        configs={'/home/ops/crictl.yaml': {'runtime-endpoint': 'unix://' + K3S_SOCK},
                 '/etc/crictl.yaml': {'runtime-endpoint': 'unix://' + K8S_SOCK}},
        executables=BINS, sockets={K8S_SOCK, K3S_SOCK})
    runtime = resolve(discovery)
    assert runtime.runtime_endpoint == 'unix://' + K3S_SOCK
    assert runtime.sources['runtime_endpoint'] == 'crictl config /home/ops/crictl.yaml'
    assert discovery.seen['read_config'] == ['/home/ops/crictl.yaml']


@pytest.mark.parametrize('config', CRICTL_CONFIG_FILES)
def test_crictl_yaml_files(config):
    assert config in ('/etc/crictl.yaml', '/var/lib/rancher/k3s/agent/etc/crictl.yaml',
                      '/var/lib/rancher/rke2/agent/etc/crictl.yaml')
    # The socket is one that is NOT well-known, so only the config can have named it.
    sock = '/srv/cri/cri.sock'
    discovery = fake_discovery(configs={config: {'runtime-endpoint': 'unix://' + sock,
                                                 'image-endpoint': 'unix:///srv/cri/img.sock'}},
                               executables=BINS, sockets={sock, K8S_SOCK})
    runtime = resolve(discovery)
    assert runtime.runtime_endpoint == 'unix://' + sock
    assert runtime.image_endpoint == 'unix:///srv/cri/img.sock'
    assert runtime.sources['runtime_endpoint'] == 'crictl config %s' % config
    assert runtime.containerd_address == sock


def test_all_three_crictl_config_locations_are_known():
    assert set(CRICTL_CONFIG_FILES) == {'/etc/crictl.yaml', '/var/lib/rancher/k3s/agent/etc/crictl.yaml',
                                        '/var/lib/rancher/rke2/agent/etc/crictl.yaml'}


def test_crictl_yaml_naming_a_missing_socket_is_skipped():
    discovery = fake_discovery(
        configs={'/etc/crictl.yaml': {'runtime-endpoint': 'unix:///gone/containerd.sock'},
                 '/var/lib/rancher/k3s/agent/etc/crictl.yaml': {'runtime-endpoint': 'unix://' + K3S_SOCK}},
        executables=BINS, sockets={K3S_SOCK})
    runtime = resolve(discovery)
    assert runtime.runtime_endpoint == 'unix://' + K3S_SOCK
    assert runtime.sources['runtime_endpoint'] == 'crictl config /var/lib/rancher/k3s/agent/etc/crictl.yaml'


def test_crictl_yaml_without_runtime_endpoint_falls_through_to_sockets():
    discovery = fake_discovery(configs={'/etc/crictl.yaml': {'timeout': '10'}}, executables=BINS,
                               sockets={K3S_SOCK})
    runtime = resolve(discovery)
    assert runtime.runtime_endpoint == 'unix://' + K3S_SOCK
    assert runtime.sources['runtime_endpoint'] == 'well-known socket'


@pytest.mark.parametrize('sock', [K8S_SOCK, K3S_SOCK, MICROK8S_SOCK])
def test_well_known_sockets(sock):
    assert sock in WELL_KNOWN_SOCKETS
    discovery = fake_discovery(executables=BINS, sockets={sock})
    runtime = resolve(discovery)
    assert runtime.runtime_endpoint == 'unix://' + sock
    assert runtime.image_endpoint == 'unix://' + sock
    assert runtime.containerd_address == sock
    assert runtime.sources['runtime_endpoint'] == 'well-known socket'


def test_well_known_socket_order_kubeadm_first():
    discovery = fake_discovery(executables=BINS, sockets={K8S_SOCK, K3S_SOCK, MICROK8S_SOCK})
    assert resolve(discovery).runtime_endpoint == 'unix://' + K8S_SOCK


def test_no_endpoint_error_lists_every_place_tried_and_how_to_set_it():
    discovery = fake_discovery(env={'PATH': '/usr/local/bin', 'CRI_CONFIG_FILE': '/home/ops/crictl.yaml'},
                               executables=BINS)
    with pytest.raises(ImageGCError) as exc:
        resolve(discovery)
    message = str(exc.value)
    assert message.startswith('no container runtime socket found')
    for place in ('/home/ops/crictl.yaml',) + CRICTL_CONFIG_FILES + WELL_KNOWN_SOCKETS:
        assert place in message
    assert 'runtime_endpoint' in message and 'CONTAINER_RUNTIME_ENDPOINT' in message


def test_explicit_socket_missing_names_the_socket():
    discovery = fake_discovery(executables=BINS, sockets={K8S_SOCK})
    with pytest.raises(ImageGCError) as exc:
        resolve(discovery, runtime_endpoint='unix:///run/k3s/containerd/containerd.sock')
    message = str(exc.value)
    assert 'unix:///run/k3s/containerd/containerd.sock' in message
    assert 'option runtime_endpoint' in message
    assert 'not a socket' in message
    # it must not silently fall back to the socket that does exist
    assert discovery.seen['is_socket'] == [K3S_SOCK]


def test_env_socket_missing_names_the_variable():
    discovery = fake_discovery(env={'PATH': '', 'CONTAINER_RUNTIME_ENDPOINT': 'unix:///nope.sock'},
                               executables=BINS, sockets={K8S_SOCK})
    with pytest.raises(ImageGCError) as exc:
        resolve(discovery, crictl_path='/usr/local/bin/crictl')
    assert 'unix:///nope.sock' in str(exc.value)
    assert 'CONTAINER_RUNTIME_ENDPOINT' in str(exc.value)


def test_containerd_address_from_env_then_endpoint():
    discovery = fake_discovery(env={'PATH': '/usr/local/bin', 'CONTAINERD_ADDRESS': '/x/containerd.sock'},
                               executables=BINS, sockets={K8S_SOCK})
    runtime = resolve(discovery)
    assert runtime.containerd_address == '/x/containerd.sock'
    assert runtime.sources['containerd_address'] == 'CONTAINERD_ADDRESS'


def test_tcp_endpoint_gives_no_containerd_address():
    discovery = fake_discovery(executables=BINS)
    runtime = resolve(discovery, runtime_endpoint='tcp://10.0.0.1:3735')
    assert runtime.runtime_endpoint == 'tcp://10.0.0.1:3735'
    assert runtime.containerd_address is None


# -- binaries --------------------------------------------------------------------------------

def test_crictl_and_ctr_on_path_win_over_well_known_dirs():
    discovery = fake_discovery(env={'PATH': '/opt/cri/bin:/usr/bin'},
                               executables={'/opt/cri/bin/crictl', '/usr/local/bin/crictl', '/opt/cri/bin/ctr',
                                            '/usr/bin/ctr'},
                               sockets={K8S_SOCK})
    runtime = resolve(discovery, need_ctr=True)
    assert runtime.crictl == ['/opt/cri/bin/crictl']
    assert runtime.ctr == ['/opt/cri/bin/ctr']
    assert runtime.sources['crictl'] == 'found at /opt/cri/bin/crictl'


@pytest.mark.parametrize('directory', ['/usr/local/bin', '/var/lib/rancher/rke2/bin'])
def test_binaries_in_well_known_dirs_off_path(directory):
    discovery = fake_discovery(env={'PATH': '/bin'},
                               executables={directory + '/crictl', directory + '/ctr'}, sockets={K3S_SOCK})
    runtime = resolve(discovery, need_ctr=True)
    assert runtime.crictl == [directory + '/crictl']
    assert runtime.ctr == [directory + '/ctr']


def test_k3s_crictl_and_k3s_ctr():
    discovery = fake_discovery(env={'PATH': '/usr/bin'}, executables={'/usr/local/bin/k3s'}, sockets={K3S_SOCK})
    runtime = resolve(discovery, need_ctr=True)
    assert runtime.crictl == ['/usr/local/bin/k3s', 'crictl']
    assert runtime.ctr == ['/usr/local/bin/k3s', 'ctr']
    assert runtime.crictl_argv('ps')[:2] == ['/usr/local/bin/k3s', 'crictl']
    assert runtime.ctr_argv('k8s.io', 'content', 'ls') == [
        '/usr/local/bin/k3s', 'ctr', '--address', K3S_SOCK, '--namespace', 'k8s.io', 'content', 'ls']


def microk8s_wrapper_node():
    """What discovery finds on a MicroK8s node whose only ctr is the snap's wrapper command."""
    discovery = fake_discovery(env={'PATH': '/usr/bin:/snap/bin'},
                               executables={'/usr/local/bin/crictl', '/snap/bin/microk8s'}, sockets={MICROK8S_SOCK})
    return resolve(discovery, need_ctr=True)


def test_microk8s_ctr():
    runtime = microk8s_wrapper_node()
    assert runtime.ctr == ['/snap/bin/microk8s', 'ctr']
    assert runtime.containerd_address == MICROK8S_SOCK
    assert runtime.ctr_argv('k8s.io', 'content', 'ls') == [
        '/snap/bin/microk8s', 'ctr', '--address', MICROK8S_SOCK, '--namespace', 'k8s.io', 'content', 'ls']


def test_microk8s_ctr_wrapper_is_a_last_resort_and_says_why():
    runtime = microk8s_wrapper_node()
    assert runtime.ctr == ['/snap/bin/microk8s', 'ctr']
    source = runtime.sources['ctr']
    assert 'snap confinement' in source and 'NoNewPrivileges=' in source and MICROK8S_CTR in source


def test_microk8s_snap_ctr_is_preferred_over_microk8s_ctr():
    assert MICROK8S_CTR == '/snap/microk8s/current/bin/ctr'
    discovery = fake_discovery(env={'PATH': '/usr/bin:/snap/bin'},
                               executables={'/usr/local/bin/crictl', '/snap/bin/microk8s', MICROK8S_CTR},
                               sockets={MICROK8S_SOCK})
    runtime = resolve(discovery, need_ctr=True)
    assert runtime.ctr == [MICROK8S_CTR]
    assert runtime.sources['ctr'] == "the MicroK8s snap's own ctr at %s" % MICROK8S_CTR
    assert runtime.ctr_argv('k8s.io', 'content', 'prune', 'references') == [
        MICROK8S_CTR, '--address', MICROK8S_SOCK, '--namespace', 'k8s.io', 'content', 'prune', 'references']
    # the wrapper was never looked at
    assert '/snap/bin/microk8s' not in discovery.seen['is_executable']


def test_microk8s_snap_ctr_gets_the_snap_socket_whatever_the_cri_endpoint():
    # crictl through another endpoint (e.g. a crictl.yaml of the node's own) must not send the
    # snap's ctr, whose built-in default is /run/containerd/containerd.sock, elsewhere.
    discovery = fake_discovery(env={'PATH': '/usr/bin'},
                               configs={'/etc/crictl.yaml': {'runtime-endpoint': 'unix:///srv/cri/cri.sock'}},
                               executables={'/usr/local/bin/crictl', MICROK8S_CTR},
                               sockets={'/srv/cri/cri.sock', MICROK8S_SOCK})
    runtime = resolve(discovery, need_ctr=True)
    assert runtime.runtime_endpoint == 'unix:///srv/cri/cri.sock'
    assert runtime.containerd_address == MICROK8S_SOCK
    assert runtime.sources['containerd_address'] == "the MicroK8s snap socket (for the snap's ctr)"


def test_explicit_containerd_address_wins_over_the_snap_socket():
    discovery = fake_discovery(executables={'/usr/local/bin/crictl', MICROK8S_CTR}, sockets={MICROK8S_SOCK})
    runtime = resolve(discovery, need_ctr=True, containerd_address='/srv/containerd.sock')
    assert runtime.ctr == [MICROK8S_CTR]
    assert runtime.containerd_address == '/srv/containerd.sock'


def test_a_ctr_in_the_usual_directories_wins_over_the_snap_ctr():
    discovery = fake_discovery(env={'PATH': '/bin'},
                               executables={'/usr/local/bin/crictl', '/usr/bin/ctr', MICROK8S_CTR},
                               sockets={K8S_SOCK, MICROK8S_SOCK})
    runtime = resolve(discovery, need_ctr=True)
    assert runtime.ctr == ['/usr/bin/ctr']
    assert runtime.containerd_address == K8S_SOCK


def test_snap_ctr_without_the_snap_socket_falls_back_to_the_runtime_endpoint():
    discovery = fake_discovery(executables={'/usr/local/bin/crictl', MICROK8S_CTR}, sockets={K8S_SOCK})
    runtime = resolve(discovery, need_ctr=True)
    assert runtime.ctr == [MICROK8S_CTR]
    assert runtime.containerd_address == K8S_SOCK
    assert runtime.sources['containerd_address'] == 'the runtime endpoint'


def test_crictl_path_with_basename_k3s_runs_k3s_crictl():
    discovery = fake_discovery(executables={'/opt/k3s/k3s', '/usr/bin/ctr'}, sockets={K3S_SOCK})
    runtime = resolve(discovery, crictl_path='/opt/k3s/k3s', ctr_path='/opt/k3s/k3s')
    assert runtime.crictl == ['/opt/k3s/k3s', 'crictl']
    assert runtime.ctr == ['/opt/k3s/k3s', 'ctr']
    assert 'k3s subcommand' in runtime.sources['crictl']


def test_ctr_path_with_basename_microk8s():
    discovery = fake_discovery(executables={'/usr/local/bin/crictl', '/snap/bin/microk8s'}, sockets={MICROK8S_SOCK})
    runtime = resolve(discovery, ctr_path='/snap/bin/microk8s')
    assert runtime.ctr == ['/snap/bin/microk8s', 'ctr']


def test_crictl_path_microk8s_is_not_a_crictl_wrapper():
    # MicroK8s ships no crictl: microk8s is only a ctr wrapper.
    discovery = fake_discovery(executables={'/snap/bin/microk8s'}, sockets={MICROK8S_SOCK})
    runtime = resolve(discovery, crictl_path='/snap/bin/microk8s')
    assert runtime.crictl == ['/snap/bin/microk8s']


def test_explicit_crictl_bare_name_is_searched_on_path():
    discovery = fake_discovery(env={'PATH': '/opt/x:/opt/y'}, executables={'/opt/y/crictl'}, sockets={K8S_SOCK})
    assert resolve(discovery, crictl_path='crictl').crictl == ['/opt/y/crictl']
    with pytest.raises(ImageGCError) as exc:
        resolve(discovery, crictl_path='nocrictl')
    assert "crictl_path='nocrictl'" in str(exc.value)


def test_explicit_crictl_path_not_executable_names_the_option():
    discovery = fake_discovery(executables={'/usr/local/bin/crictl'}, sockets={K8S_SOCK})
    with pytest.raises(ImageGCError) as exc:
        resolve(discovery, crictl_path='/opt/missing/crictl')
    assert "crictl_path='/opt/missing/crictl'" in str(exc.value)
    assert 'no such executable' in str(exc.value)


def test_crictl_not_found_lists_every_place_tried_and_how_to_set_it():
    discovery = fake_discovery(env={'PATH': '/opt/a:/opt/b'}, sockets={K8S_SOCK})
    with pytest.raises(ImageGCError) as exc:
        resolve(discovery)
    message = str(exc.value)
    assert message.startswith('crictl not found')
    for place in ('/opt/a/crictl', '/opt/b/crictl', '/usr/local/bin/crictl', '/usr/bin/crictl',
                  '/var/lib/rancher/rke2/bin/crictl', '/snap/bin/crictl', '/usr/local/bin/k3s', 'k3s crictl'):
        assert place in message
    assert 'set crictl_path' in message


def test_ctr_not_found_lists_places_and_wrappers():
    discovery = fake_discovery(env={'PATH': '/opt/a'}, executables={'/usr/local/bin/crictl'}, sockets={K8S_SOCK})
    with pytest.raises(ImageGCError) as exc:
        resolve(discovery, need_ctr=True)
    message = str(exc.value)
    assert message.startswith('ctr not found')
    for place in ('/opt/a/ctr', '/usr/local/bin/ctr', '/var/lib/rancher/rke2/bin/ctr', '/snap/bin/microk8s',
                  MICROK8S_CTR, 'k3s ctr', 'microk8s ctr'):
        assert place in message
    assert 'set ctr_path' in message


def test_ctr_not_needed_and_missing_is_fine_but_unusable():
    discovery = fake_discovery(executables={'/usr/local/bin/crictl'}, sockets={K8S_SOCK})
    runtime = resolve(discovery)
    assert runtime.ctr is None
    with pytest.raises(ImageGCError, match=r'ctr not found\. Tried: .*/usr/local/bin/ctr.*set ctr_path'):
        runtime.ctr_argv('k8s.io', 'content', 'ls')


def test_explicit_ctr_path_not_needed_and_missing_fails_only_when_used():
    discovery = fake_discovery(executables={'/usr/local/bin/crictl'}, sockets={K8S_SOCK})
    runtime = discovery.resolve(ctr_path='/opt/nowhere/ctr', timeout=120, need_crictl=True, need_ctr=False)
    assert runtime.crictl == ['/usr/local/bin/crictl'] and runtime.ctr is None
    with pytest.raises(ImageGCError, match="ctr_path='/opt/nowhere/ctr': no such executable file"):
        runtime.ctr_argv('k8s.io', 'content', 'ls')
    with pytest.raises(ImageGCError, match="ctr_path='/opt/nowhere/ctr'"):
        discovery.resolve(ctr_path='/opt/nowhere/ctr', timeout=120, need_ctr=True)


def test_tried_is_kept_for_reporting():
    discovery = fake_discovery(env={'PATH': '/opt/a'}, executables={'/usr/bin/crictl', '/usr/bin/ctr'},
                               sockets={K3S_SOCK})
    runtime = resolve(discovery)
    assert '/opt/a/crictl' in runtime.tried
    assert 'unix://%s (well-known socket)' % K8S_SOCK in runtime.tried
    assert runtime.to_dict()['runtime_endpoint'] == 'unix://' + K3S_SOCK


# -- crictl.yaml -----------------------------------------------------------------------------

def test_read_crictl_config(tmp_path):
    path = tmp_path / 'crictl.yaml'
    path.write_text('# written by k3s\n'
                    'runtime-endpoint: unix:///run/k3s/containerd/containerd.sock  # the socket\n'
                    'image-endpoint: "unix:///run/k3s/containerd/containerd.sock"\n'
                    "timeout: '10'\n"
                    'debug: false\n'
                    'pull-image-on-create:\n')
    assert read_crictl_config(str(path)) == {
        'runtime-endpoint': 'unix:///run/k3s/containerd/containerd.sock',
        'image-endpoint': 'unix:///run/k3s/containerd/containerd.sock',
        'timeout': '10', 'debug': 'false'}


def test_real_discovery_reads_a_real_crictl_yaml(tmp_path):
    """Default read_config over a real file named by CRI_CONFIG_FILE."""
    config = tmp_path / 'crictl.yaml'
    config.write_text('runtime-endpoint: tcp://127.0.0.1:1\n')
    from ansible_collections.nodemaint.image_gc.plugins.module_utils._discovery import Discovery
    discovery = Discovery(env={'PATH': '', 'CRI_CONFIG_FILE': str(config)},
                          is_executable=lambda p: p == '/usr/local/bin/crictl')
    runtime = discovery.resolve(timeout=120)
    assert runtime.runtime_endpoint == 'tcp://127.0.0.1:1'
    assert runtime.sources['runtime_endpoint'] == 'crictl config %s' % config


def test_unreadable_crictl_config_is_a_clear_error():
    def broken(path):
        raise OSError(13, 'Permission denied')
    discovery = fake_discovery(configs={'/etc/crictl.yaml': {}}, executables=BINS, sockets={K8S_SOCK})
    discovery.read_config = broken
    with pytest.raises(ImageGCError, match='cannot read crictl config /etc/crictl.yaml'):
        resolve(discovery)
