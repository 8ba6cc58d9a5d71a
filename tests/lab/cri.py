"""Minimal CRI (runtime.v1) client over gRPC, for the test lab: it builds the scenarios
(pods, containers) that crictl cannot create. The tests observe and remove through the
real crictl. Needs only ``grpcio`` and ``protobuf``; the message classes are built at import time from ``api.desc.b64``, a base64
FileDescriptorSet compiled from the hand-written ``api.proto`` next to it (so neither
protoc nor generated ``*_pb2.py`` code is needed at run time).
"""

import os

import grpc
import base64

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf import message_factory

HERE = os.path.dirname(os.path.abspath(__file__))
DESC_NAME = "api.desc.b64"  # the FileDescriptorSet, base64 (a text file, as the sanity tests want)
PROTO_NAME = "api.proto"
PACKAGE = "runtime.v1"


def _find_desc():
    for d in (HERE, os.path.join(HERE, "..")):
        p = os.path.join(d, DESC_NAME)
        if os.path.exists(p):
            return p
    raise FileNotFoundError("%s not found next to %s" % (DESC_NAME, __file__))


def _load():
    fds = descriptor_pb2.FileDescriptorSet()
    with open(_find_desc(), "rb") as f:
        fds.ParseFromString(base64.b64decode(f.read()))
    pool = descriptor_pool.DescriptorPool()
    for fdp in fds.file:
        pool.Add(fdp)
    classes = {}
    fd = pool.FindFileByName(PROTO_NAME)
    for name, desc in fd.message_types_by_name.items():
        classes[name] = message_factory.GetMessageClass(desc)
    return pool, fd, classes


POOL, FILE, M = _load()


class _Msgs:
    def __getattr__(self, name):
        try:
            return M[name]
        except KeyError:
            raise AttributeError(name)


pb = _Msgs()

# enum values
SANDBOX_READY = 0
SANDBOX_NOTREADY = 1
CONTAINER_CREATED = 0
CONTAINER_RUNNING = 1
CONTAINER_EXITED = 2
CONTAINER_UNKNOWN = 3
NS_POD, NS_CONTAINER, NS_NODE, NS_TARGET = 0, 1, 2, 3


def enum_name(enum, value):
    return FILE.enum_types_by_name[enum].values_by_number[value].name


# --------------------------------------------------------------------------- errors

def go_code(code):
    """grpc.StatusCode -> Go codes.Code string (e.g. NOT_FOUND -> NotFound)."""
    name = code.name if hasattr(code, "name") else str(code)
    special = {"OK": "OK", "DEADLINE_EXCEEDED": "DeadlineExceeded"}
    if name in special:
        return special[name]
    return "".join(p.capitalize() for p in name.split("_"))


class CRIError(Exception):
    """An RPC failure rendered like Go's status error: 'rpc error: code = X desc = Y'."""

    def __init__(self, code, desc):
        self.code = code
        self.desc = desc
        super().__init__("rpc error: code = %s desc = %s" % (code, desc))


def _wrap(e):
    if isinstance(e, grpc.RpcError):
        code = go_code(e.code())
        desc = e.details() or ""
        if code == "DeadlineExceeded":
            desc = "context deadline exceeded"
        return CRIError(code, desc)
    return e


# --------------------------------------------------------------------------- endpoints

def socket_path(endpoint):
    if endpoint.startswith("unix://"):
        return endpoint[len("unix://"):]
    return endpoint


def endpoint_of(path_or_endpoint):
    if "://" in path_or_endpoint:
        return path_or_endpoint
    return "unix://" + path_or_endpoint


def _filter(message, state=None, labels=None, **ids):
    """A List* filter: the ids that are given, the state when there is one, the label selector."""
    for field, value in ids.items():
        if value:
            setattr(message, field, value)
    if state is not None:
        message.state.state = state
    if labels:
        message.label_selector.update(labels)
    return message


# --------------------------------------------------------------------------- client

RUNTIME = "/runtime.v1.RuntimeService/"
IMAGE = "/runtime.v1.ImageService/"

_METHODS = {
    "Version": (RUNTIME, "VersionRequest", "VersionResponse"),
    "RunPodSandbox": (RUNTIME, "RunPodSandboxRequest", "RunPodSandboxResponse"),
    "StopPodSandbox": (RUNTIME, "StopPodSandboxRequest", "StopPodSandboxResponse"),
    "RemovePodSandbox": (RUNTIME, "RemovePodSandboxRequest", "RemovePodSandboxResponse"),
    "PodSandboxStatus": (RUNTIME, "PodSandboxStatusRequest", "PodSandboxStatusResponse"),
    "ListPodSandbox": (RUNTIME, "ListPodSandboxRequest", "ListPodSandboxResponse"),
    "CreateContainer": (RUNTIME, "CreateContainerRequest", "CreateContainerResponse"),
    "StartContainer": (RUNTIME, "StartContainerRequest", "StartContainerResponse"),
    "StopContainer": (RUNTIME, "StopContainerRequest", "StopContainerResponse"),
    "RemoveContainer": (RUNTIME, "RemoveContainerRequest", "RemoveContainerResponse"),
    "ListContainers": (RUNTIME, "ListContainersRequest", "ListContainersResponse"),
    "ContainerStatus": (RUNTIME, "ContainerStatusRequest", "ContainerStatusResponse"),
    "Status": (RUNTIME, "StatusRequest", "StatusResponse"),
    "ListImages": (IMAGE, "ListImagesRequest", "ListImagesResponse"),
    "ImageStatus": (IMAGE, "ImageStatusRequest", "ImageStatusResponse"),
    "RemoveImage": (IMAGE, "RemoveImageRequest", "RemoveImageResponse"),
    "ImageFsInfo": (IMAGE, "ImageFsInfoRequest", "ImageFsInfoResponse"),
}


class CRIClient:
    """Thin synchronous CRI client. Every method returns the protobuf response message;
    failures raise CRIError (str() is Go-shaped: 'rpc error: code = NotFound desc = ...').

    ``timeout`` is the per-call deadline in seconds (None = no deadline)."""

    def __init__(self, endpoint, timeout=60.0):
        self.endpoint = endpoint_of(endpoint)
        self.path = socket_path(self.endpoint)
        self.timeout = timeout
        self.channel = grpc.insecure_channel(
            "unix://" + os.path.abspath(self.path),
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024),
                     ("grpc.enable_retries", 0)])
        self._stubs = {}
        for name, (svc, req, resp) in _METHODS.items():
            self._stubs[name] = (self.channel.unary_unary(
                svc + name,
                request_serializer=M[req].SerializeToString,
                response_deserializer=M[resp].FromString), M[req])

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def call(self, name, timeout=None, **fields):
        stub, req_cls = self._stubs[name]
        req = req_cls(**fields)
        try:
            return stub(req, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as e:
            raise _wrap(e) from None

    # ---- runtime
    def version(self, timeout=None):
        return self.call("Version", timeout=timeout, version="v1")

    def run_pod_sandbox(self, config, runtime_handler=""):
        return self.call("RunPodSandbox", config=config,
                         runtime_handler=runtime_handler).pod_sandbox_id

    def stop_pod_sandbox(self, pod_id):
        return self.call("StopPodSandbox", pod_sandbox_id=pod_id)

    def remove_pod_sandbox(self, pod_id):
        return self.call("RemovePodSandbox", pod_sandbox_id=pod_id)

    def pod_sandbox_status(self, pod_id, verbose=False):
        return self.call("PodSandboxStatus", pod_sandbox_id=pod_id, verbose=verbose)

    def list_pod_sandbox(self, state=None, id=None, labels=None):
        return list(self.call("ListPodSandbox", filter=_filter(pb.PodSandboxFilter(), state, labels, id=id)).items)

    def create_container(self, pod_id, config, sandbox_config=None):
        kw = {"pod_sandbox_id": pod_id, "config": config}
        if sandbox_config is not None:
            kw["sandbox_config"] = sandbox_config
        return self.call("CreateContainer", **kw).container_id

    def start_container(self, cid):
        return self.call("StartContainer", container_id=cid)

    def stop_container(self, cid, timeout=0):
        return self.call("StopContainer", container_id=cid, timeout=timeout)

    def remove_container(self, cid):
        return self.call("RemoveContainer", container_id=cid)

    def list_containers(self, state=None, pod_id=None, id=None, labels=None):
        f = _filter(pb.ContainerFilter(), state, labels, id=id, pod_sandbox_id=pod_id)
        return list(self.call("ListContainers", filter=f).containers)

    def container_status(self, cid, verbose=False):
        return self.call("ContainerStatus", container_id=cid, verbose=verbose)

    def status(self, verbose=False):
        return self.call("Status", verbose=verbose)

    # ---- images
    def list_images(self, ref=None):
        kw = {}
        if ref:
            kw["filter"] = pb.ImageFilter(image=pb.ImageSpec(image=ref))
        return list(self.call("ListImages", **kw).images)

    def image_status(self, ref, verbose=False):
        return self.call("ImageStatus", image=pb.ImageSpec(image=ref), verbose=verbose)

    def remove_image(self, ref):
        return self.call("RemoveImage", image=pb.ImageSpec(image=ref))

    def image_fs_info(self):
        return self.call("ImageFsInfo")

    # ---- conveniences
    def sandbox_config(self, name, namespace="feas", uid=None, labels=None, attempt=0,
                       annotations=None):
        """PodSandboxConfig for a host-network pod with an empty hostname (see lab-facts)."""
        import uuid
        ns = pb.NamespaceOption(network=NS_NODE, pid=NS_CONTAINER, ipc=NS_POD)
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, namespace=namespace,
                                           uid=uid or str(uuid.uuid4()), attempt=attempt),
            hostname="",
            labels=labels or {},
            annotations=annotations or {},
            linux=pb.LinuxPodSandboxConfig(
                security_context=pb.LinuxSandboxSecurityContext(namespace_options=ns)))

    def container_config(self, name, image, command, labels=None, annotations=None, tty=False):
        """ContainerConfig with the namespace options of the lab's pods (``sandbox_config``), as
        the kubelet gives each container its pod's. ``tty``: a terminal instead of stdout and
        stderr (containerd's CRI then keeps one stdio fifo open per created container, not two)."""
        ns = pb.NamespaceOption(network=NS_NODE, pid=NS_CONTAINER, ipc=NS_POD)
        return pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=0),
            image=pb.ImageSpec(image=image),
            command=list(command),
            labels=labels or {},
            annotations=annotations or {},
            tty=tty,
            linux=pb.LinuxContainerConfig(
                security_context=pb.LinuxContainerSecurityContext(namespace_options=ns)))
