"""Minimal CRI (runtime.v1) client over gRPC, for the test lab and the crictl stand-in.

Standalone module (no package-relative imports): the stand-in ``bin/crictl`` imports it
from ``tests/lab`` or from a vendored lab directory. Needs only ``grpcio`` and
``protobuf``; the message classes are built at import time from ``api.desc.b64``, a base64
FileDescriptorSet compiled from the hand-written ``api.proto`` next to it (so neither
protoc nor generated ``*_pb2.py`` code is needed at run time).
"""

import json
import os
import socket as _socket

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


# --------------------------------------------------------------------------- protojson

_INT64 = {
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT64,
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED64,
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED64,
}
_T = descriptor_pb2.FieldDescriptorProto


def _scalar(fd, v):
    if fd.type in _INT64:
        return str(v)
    if fd.type == _T.TYPE_ENUM:
        ev = fd.enum_type.values_by_number.get(v)
        return ev.name if ev is not None else v
    if fd.type == _T.TYPE_MESSAGE:
        return to_dict(v)
    if fd.type == _T.TYPE_BYTES:
        import base64
        return base64.b64encode(v).decode()
    return v


def _is_map(fd):
    return fd.type == _T.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry


def _is_repeated(fd):
    # protobuf >= 5 has is_repeated; older ones only label
    r = getattr(fd, "is_repeated", None)
    if r is not None:
        return r
    return fd.label == _T.LABEL_REPEATED


def to_dict(msg):
    """Go protojson with EmitDefaultValues: declaration order, lowerCamelCase names,
    int64 as decimal strings, enums by name, unset message fields omitted, map keys
    sorted."""
    out = {}
    for fd in msg.DESCRIPTOR.fields:
        v = getattr(msg, fd.name)
        if _is_map(fd):
            vfd = fd.message_type.fields_by_name["value"]
            out[fd.json_name] = {k: _scalar(vfd, v[k]) for k in sorted(v)}
        elif _is_repeated(fd):
            out[fd.json_name] = [_scalar(fd, x) for x in v]
        elif fd.type == _T.TYPE_MESSAGE:
            if msg.HasField(fd.name):
                out[fd.json_name] = to_dict(v)
        else:
            out[fd.json_name] = _scalar(fd, v)
    return out


def go_json(obj, indent=2):
    """json.MarshalIndent-like output (Go escapes <, > and & in strings)."""
    s = json.dumps(obj, indent=indent, ensure_ascii=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


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


def dial_error(path):
    """Try a raw connect like Go's dialer; return a Go-style dial error string or None."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(2)
        s.connect(path)
        return None
    except FileNotFoundError:
        reason = "no such file or directory"
    except ConnectionRefusedError:
        reason = "connection refused"
    except PermissionError:
        reason = "permission denied"
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
    finally:
        s.close()
    return ('connection error: desc = "transport: Error while dialing: dial unix %s: connect: %s"'
            % (path, reason))


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
        f = pb.PodSandboxFilter()
        if id:
            f.id = id
        if state is not None:
            f.state.state = state
        if labels:
            f.label_selector.update(labels)
        return list(self.call("ListPodSandbox", filter=f).items)

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
        f = pb.ContainerFilter()
        if id:
            f.id = id
        if pod_id:
            f.pod_sandbox_id = pod_id
        if state is not None:
            f.state.state = state
        if labels:
            f.label_selector.update(labels)
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

    def container_config(self, name, image, command, labels=None, annotations=None):
        return pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=0),
            image=pb.ImageSpec(image=image),
            command=list(command),
            labels=labels or {},
            annotations=annotations or {})
