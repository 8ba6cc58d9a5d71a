"""Deterministic OCI images built with the standard library from a static busybox.

Each image has two uncompressed layers: a shared base layer (``/bin/busybox`` plus a
``/bin/sh`` symlink) and a tiny marker layer holding ``/etc/feas-image`` whose text is
the image name plus an optional ``variant`` string, so that different names (or
variants of one name) give different image IDs. Everything (mtimes, owners, order,
JSON key order) is fixed, so the same name/variant always gives the same IDs.
"""

import hashlib
import io
import json
import os
import platform
import subprocess
import tarfile

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
# default command of every image: it also serves as the sandbox (pause) image, whose
# process must stay alive
PAUSE_CMD = ("/bin/busybox", "sleep", "2147483647")


def arch():
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(m, m)


def busybox_path():
    for p in BUSYBOX_CANDIDATES:
        if os.path.exists(p):
            return p
    raise FileNotFoundError("static busybox not found (apt install busybox-static)")


def _sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def _jdump(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _tar(entries):
    """entries: list of (name, kind, data/target, mode). Deterministic ustar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, kind, data, mode in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 0
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            ti.mode = mode
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
                t.addfile(ti)
            elif kind == "sym":
                ti.type = tarfile.SYMTYPE
                ti.linkname = data
                t.addfile(ti)
            else:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


_BASE = None


def base_layer():
    global _BASE
    if _BASE is None:
        with open(busybox_path(), "rb") as f:
            bb = f.read()
        _BASE = _tar([
            ("bin", "dir", None, 0o755),
            ("bin/busybox", "file", bb, 0o755),
            ("bin/sh", "sym", "busybox", 0o777),
            ("etc", "dir", None, 0o755),
            ("tmp", "dir", None, 0o1777),
        ])
    return _BASE


def marker_layer(name, variant=""):
    text = ("%s\n%s" % (name, variant)).encode() if variant else (name + "\n").encode()
    return _tar([("etc", "dir", None, 0o755), ("etc/feas-image", "file", text, 0o644)])


class ImageBlobs:
    """One built image: its blobs and digests."""

    def __init__(self, name, variant=""):
        self.name = name
        self.variant = variant
        layers = [base_layer(), marker_layer(name, variant)]
        self.layers = layers
        config = {
            "architecture": arch(),
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {"Env": ["PATH=/bin"], "Cmd": list(PAUSE_CMD)},
            "rootfs": {"type": "layers", "diff_ids": [_sha(l) for l in layers]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "feas lab"}],
        }
        self.config = _jdump(config)
        self.image_id = _sha(self.config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": self.image_id,
                       "size": len(self.config)},
            "layers": [{"mediaType": MT_LAYER, "digest": _sha(l), "size": len(l)}
                       for l in layers],
        }
        self.manifest = _jdump(manifest)
        self.manifest_digest = _sha(self.manifest)

    @property
    def repo(self):
        return self.name.rsplit(":", 1)[0] if ":" in self.name.rsplit("/", 1)[-1] else self.name

    @property
    def digest_ref(self):
        """NAME@sha256:<manifest digest>, like a pulled image's repo digest."""
        return "%s@%s" % (self.repo, self.manifest_digest)

    def blobs(self):
        yield self.manifest_digest, self.manifest
        yield self.image_id, self.config
        for l in self.layers:
            yield _sha(l), l

    def index_entry(self):
        tag = self.name.rsplit(":", 1)[1] if ":" in self.name.rsplit("/", 1)[-1] else "latest"
        return {
            "mediaType": MT_MANIFEST,
            "digest": self.manifest_digest,
            "size": len(self.manifest),
            "annotations": {"io.containerd.image.name": self.name,
                            "org.opencontainers.image.ref.name": tag},
            "platform": {"architecture": arch(), "os": "linux"},
        }


def layout_tar(images):
    """OCI image-layout tar (bytes) holding one or more ImageBlobs."""
    entries = [("blobs", "dir", None, 0o755), ("blobs/sha256", "dir", None, 0o755)]
    seen = set()
    for im in images:
        for dg, data in im.blobs():
            if dg in seen:
                continue
            seen.add(dg)
            entries.append(("blobs/sha256/" + dg.split(":", 1)[1], "file", data, 0o644))
    index = {"schemaVersion": 2, "mediaType": MT_INDEX,
             "manifests": [im.index_entry() for im in images]}
    entries.append(("index.json", "file", _jdump(index), 0o644))
    entries.append(("oci-layout", "file", _jdump({"imageLayoutVersion": "1.0.0"}), 0o644))
    return _tar(entries)


def build(name, variant=""):
    return ImageBlobs(name, variant)


def import_images(ctr_argv, images, workdir, env=None):
    """Import ImageBlobs into the k8s.io namespace with ``ctr images import``."""
    images = list(images)
    if not images:
        return []
    os.makedirs(workdir, exist_ok=True)
    h = hashlib.sha256("|".join(i.manifest_digest + i.name for i in images).encode()).hexdigest()
    path = os.path.join(workdir, "import-%s.tar" % h[:16])
    with open(path, "wb") as f:
        f.write(layout_tar(images))
    try:
        subprocess.run(list(ctr_argv) + ["-n", "k8s.io", "images", "import", path],
                       check=True, capture_output=True, text=True, env=env)
    except subprocess.CalledProcessError as e:
        raise RuntimeError("ctr images import failed: %s\n%s" % (e.stderr, e.stdout)) from None
    finally:
        os.unlink(path)
    return images


def tag(ctr_argv, src, dst, env=None):
    r = subprocess.run(list(ctr_argv) + ["-n", "k8s.io", "images", "tag", src, dst],
                       capture_output=True, text=True, env=env, check=False)
    if r.returncode != 0:
        raise RuntimeError("ctr images tag %s %s failed: %s" % (src, dst, r.stderr))


def add_repo_digest(ctr_argv, image, env=None):
    """Give an imported image a repo digest: tag it NAME@sha256:<manifest digest>."""
    tag(ctr_argv, image.name, image.digest_ref, env=env)
    return image.digest_ref
