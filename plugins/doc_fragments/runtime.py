# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:

    # Options of RUNTIME_ARGUMENT_SPEC in plugins/module_utils/_adapter.py
    DOCUMENTATION = r'''
options:
  crictl_path:
    description:
      - Path of the C(crictl) binary.
      - When not set, C(crictl) is searched on E(PATH), in C(/usr/local/bin), C(/usr/bin),
        C(/var/lib/rancher/rke2/bin) and C(/snap/bin), then C(k3s crictl) is used if C(k3s) is found.
      - A path whose file name is C(k3s) runs C(k3s crictl).
    type: path
  ctr_path:
    description:
      - Path of containerd's C(ctr) binary.
      - When not set, C(ctr) is searched like O(crictl_path), then the MicroK8s snap's own
        C(/snap/microk8s/current/bin/ctr) (with the snap's socket
        C(/var/snap/microk8s/common/run/containerd.sock) unless O(containerd_address) is set),
        then C(k3s ctr) and, last, C(microk8s ctr), which goes through snap confinement and
        therefore fails inside the timer's sandboxed service.
      - A path whose file name is C(k3s) or C(microk8s) runs its C(ctr) subcommand.
    type: path
  runtime_endpoint:
    description:
      - CRI runtime endpoint, for example V(unix:///run/k3s/containerd/containerd.sock).
      - When not set, E(CONTAINER_RUNTIME_ENDPOINT) is used, then C(runtime-endpoint) of the crictl
        config (E(CRI_CONFIG_FILE), C(/etc/crictl.yaml), the k3s and RKE2 agent C(crictl.yaml)),
        then the first existing socket of C(/run/containerd/containerd.sock),
        C(/run/k3s/containerd/containerd.sock) and C(/var/snap/microk8s/common/run/containerd.sock).
      - An explicit value, or the environment variable, must name an existing socket.
    type: str
  image_endpoint:
    description:
      - CRI image endpoint. Defaults to E(IMAGE_SERVICE_ENDPOINT), the crictl config's
        C(image-endpoint), then O(runtime_endpoint).
    type: str
  containerd_address:
    description:
      - containerd socket for C(ctr --address).
      - Defaults to E(CONTAINERD_ADDRESS), then the path of the C(unix://) runtime endpoint.
    type: str
  timeout:
    description:
      - Timeout of each crictl request (crictl C(--timeout)), as seconds (V(600)) or a duration such as
        V(90s), V(10m) or V(1h30m).
      - crictl's own default of 2 seconds is too short for batched removals on a busy node.
    type: str
    default: 2m
  batch_size:
    description:
      - Most IDs passed to one C(crictl rm), C(crictl rmp) or C(crictl rmi) call.
      - crictl sends one request per ID at once; bounding the batch keeps containerd responsive.
    type: int
    default: 100
  kubelet_root:
    description:
      - The kubelet's root directory (its C(--root-dir)). A pod the kubelet still tracks has a directory
        C(<kubelet_root>/pods/<uid>); such a pod is live even when its sandbox is NotReady (a completed Job,
        a pod being restarted), so its newest sandbox and the newest exited instance of each of its
        containers stay (see the C(pod_aware) option).
      - When not set, it is found - the C(--root-dir) of the running kubelet (read from C(/proc/<pid>/cmdline);
        for k3s and RKE2 the C(--kubelet-arg root-dir=...) of the server or agent process), then
        C(/var/lib/kubelet) (kubeadm, k3s, RKE2) and C(/var/snap/microk8s/common/var/lib/kubelet) (MicroK8s) - and
        used only when it is the live root - a pod of the node has its C(pods/<uid>) directory there, and so does
        every pod whose sandbox is Ready. The plan's reasons name the pod directories asked; the node runner's report
        says which root was used and where it came from (C(kubelet_root) in its report).
      - When no live root is found (the kubelet is not running yet, or uses a root none of these name), every pod
        counts as live in phases 1 and 2 - its newest exited instance of each container and its newest sandbox
        stay, and the images they use - and the run says so in one warning. The leftovers of deleted pods are then
        left to the kubelet's own garbage collection; set this option to remove them.
      - An explicit value must name an existing directory; it is used as it is.
    type: path
notes:
  - Commands are run as argument lists, never through a shell, with E(LC_ALL=C).
  - crictl warnings on stderr (such as a missing C(/etc/crictl.yaml)) are not failures.
requirements:
  - Python 3.8 or later on the node (the standard library only).
  - C(crictl) (cri-tools) on the node, talking to containerd 1.6, 1.7 or 2.x over CRI v1.
  - Root on the node (C(become)), to reach the runtime's socket.
'''

    # Options of LOCK_ARGUMENT_SPEC in plugins/module_utils/_adapter.py
    LOCK = r'''
options:
  lock_path:
    description:
      - Lock file shared with the C(node-image-gc) timer runner and the other modules of this collection,
        so that removals never overlap. Taken in check mode too, so that a plan is never made while
        another run removes things.
    type: path
    default: /run/node-image-gc/lock
  lock_wait:
    description:
      - How long to wait for another run to release O(lock_path) before failing, as seconds or a
        duration such as V(10m).
    type: str
    default: 10m
'''

    # The last-use record (image_record_path of plugins/module_utils/_settings.py)
    RECORD = r'''
options:
  image_record_path:
    description:
      - The last-use record on the node - when each image was first seen and last seen in use (a container of
        it exists - running counts as now, any other state as its creation time). Every real run that lists
        containers updates it (written atomically), so it survives restarts of the node, of containerd and of
        the kubelet, which keeps this in memory only. It is shared with the C(node-image-gc) timer runner and its
        observation pass; each writer updates it under a short lock of its own (this path with C(.lock) appended),
        never the run lock.
      - It also remembers for 7 days which images a run removed, and counts those that come back (re-pulls).
      - A missing or corrupt record is a warning; every image it does not know counts as used now.
    type: path
    default: /var/lib/node-image-gc/images.json
'''

    # Retention of unused images (a warm cache), plugins/module_utils/_plan.py Retention
    RETENTION = r'''
options:
  image_unused_for:
    description:
      - Keep a warm cache - an unused image is removed only when it was last used (never used - first seen)
        longer ago than this, per O(image_record_path). Seconds or a duration such as V(12h) or V(7d).
      - V(0s) removes every unused image (the semantics of C(crictl rmi --prune)).
      - The default V(21d) was chosen by the policy replay (C(bench/policy/run.py), docs/performance.md) - in none of its
        replays does it re-pull more images or bytes, or spend more hours at 85% disk use, than the kubelet alone.
    type: str
    default: 21d
  disk_high:
    description:
      - While the image filesystem is fuller than this percentage (1-99), unused images are removed least
        recently used first until the projected usage is at or below O(disk_low), even if they were used within
        O(image_unused_for). What is in use, pinned, the sandbox image, excluded or younger than O(image_min_age)
        still stays. Set together with O(disk_low); unset, no disk target applies.
    type: int
  disk_low:
    description:
      - The usage percentage (1-99, below O(disk_high)) that removals for the disk target stop at.
    type: int
'''

    # Options of phase 1 beyond its switch (the containers settings of _settings.py)
    CONTAINERS = r'''
options:
  created_min_age:
    description:
      - Minimum age of a container that was created but never started before it is removed, as seconds or
        a duration such as V(90s), V(10m), V(1h30m).
    type: str
    default: 1h
'''

    # Which pods are live, and which namespaces phases 1 and 2 touch (the pods settings of _settings.py)
    PODS = r'''
options:
  pod_aware:
    description:
      - Apply the kubelet's own garbage-collection rules, so that nothing a pod still needs is removed. A pod
        (all sandboxes with the same uid) is live when its newest sandbox is Ready or the kubelet still tracks
        it (see O(kubelet_root)).
      - Phase 1 keeps, in a live pod, the newest exited instance of each container name (init containers
        included) and removes older ones; in a pod that is not live, every exited container goes.
      - Phase 2 keeps the newest sandbox of a live pod even when NotReady; older sandboxes of a live pod and
        NotReady sandboxes of pods that are not live go once older than the sandbox minimum age, and never a
        sandbox that still holds a container that stays.
      - V(false) is the blunt mode - every exited container and every NotReady sandbox older than the minimum
        age with no container that is not exited goes. It breaks what the kubelet relies on - the exited init
        container of a running pod goes and the kubelet runs it again (a second init container that is still
        running is then restarted from the first), a finished container of a C(restartPolicy=Never) or
        C(OnFailure) pod is run a second time, C(kubectl logs --previous) and the restart count of a
        crash-looping container are lost, and the images of those containers are pulled again after every run.
    type: bool
    default: true
  namespaces:
    description:
      - Only the containers and sandboxes of pods of these Kubernetes namespaces (shell-style patterns), in
        phases 1 and 2. Empty means all.
    type: list
    elements: str
    default: []
  exclude_namespaces:
    description:
      - Never the containers and sandboxes of pods of these Kubernetes namespaces (shell-style patterns), in
        phases 1 and 2, for example V(kube-system).
    type: list
    elements: str
    default: []
'''

    # Options of phase 3 beyond its switch
    IMAGES = r'''
options:
  image_exclude:
    description:
      - Shell-style patterns (C(fnmatch)) matched against each image's tags, digests and ID, both as
        listed and fully qualified. A matching image is kept.
      - A pattern without tag or digest matches every tag and digest of that repository (V(busybox) keeps
        every C(docker.io/library/busybox:*) and C(docker.io/library/busybox@sha256:*)); V(repo:*) also
        matches the digest-only form C(repo@sha256:...). A pattern that matches no image is a warning.
    type: list
    elements: str
    default: []
  image_min_age:
    description:
      - Keep images first seen less recently than this (seconds or a duration such as V(30m)), so that an
        image the kubelet has just pulled, and whose container it is about to create, is not removed. V(0s)
        disables the check.
      - An image is first seen when a run (or the timer role's observation pass) first lists it, as recorded
        in the last-use record O(image_record_path) (the kubelet's C(firstDetected)); an image the record does
        not know is first seen now, so the first run on a node removes no image for age. No C(ctr) is needed.
      - The default, 10 minutes, is above the kubelet's own guard (C(--minimum-image-ttl-duration), 2 minutes)
        and its longest back-off (5 minutes) between tries to create a container that failed to start.
    type: str
    default: 10m
  sandbox_image:
    description:
      - A sandbox (pause) image, which is never removed, in addition to the one the runtime reports.
      - The runtime's is read from C(crictl info) (C(config.sandboxImage), containerd 1.6 and 1.7), unless the
        runtime pins an image that looks like a sandbox image (containerd 2.x pins its own and does not report
        it). Another pinned image says nothing about the sandbox image. When no sandbox image is named, every
        image that looks like one (C(*/pause:*), C(*/mirrored-pause:*), C(*/*-pause:*)) is kept.
    type: str
'''

    # Option of COMMANDS_ARGUMENT_SPEC in plugins/module_utils/_adapter.py
    COMMANDS = r'''
options:
  return_commands:
    description:
      - Return RV(commands), every command line the run ran (every argument, every ID). Also returned,
        without this option, when the task runs at verbosity 2 (C(-vv)) or more.
      - Off by default - on a busy node the list holds thousands of IDs the other return values already name.
    type: bool
    default: false
'''

    # The attributes of the modules that remove things (imagefs_info states its own: it only reads)
    ATTRIBUTES = r'''
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - Check mode computes the same plan as a real run and reports what would be removed.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details:
      - The diff lists the object IDs present before and after.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
      - This assumes that the system controlled/queried by the module has not changed in a relevant way.
    support: partial
    details:
      - A second run right after the first removes nothing, unless in between a container exited, a sandbox
        became NotReady, an image fell out of use, or an object crossed an age threshold (C(created_min_age),
        C(sandbox_min_age), C(image_min_age), C(image_unused_for)) - time alone can make new garbage.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
    details:
      - Linux nodes running containerd with its CRI plugin.
'''
