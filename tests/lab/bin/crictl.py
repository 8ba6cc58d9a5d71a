"""TEST-ONLY stand-in for upstream crictl 1.36.0, answering over CRI gRPC.

Implements the subset the collection uses: version, ps, pods, images, imagefsinfo,
info, rm, rmp, rmi (incl. --prune), with output, messages and exit codes shaped like
the recordings in tests/fixtures/crictl-1.36.0_*/ and the upstream cri-tools logic
(cmd/crictl/{main,container,sandbox,image,util}.go). Never reference this from plugins/.

Runs from tests/lab/bin (imports ../cri.py) or from a vendored lab dir DIR/bin
(imports ./cri.py, and DIR/pydeps is put on sys.path when present).
"""

import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cmp_to_key

HERE = os.path.dirname(os.path.realpath(__file__))
_PYDEPS = os.path.join(os.path.dirname(HERE), "pydeps")
if os.path.isdir(_PYDEPS):
    sys.path.insert(0, _PYDEPS)
for _d in (HERE, os.path.dirname(HERE)):
    if os.path.exists(os.path.join(_d, "cri.py")):
        sys.path.insert(0, _d)
        break

try:
    import cri  # noqa: E402
except ImportError:
    # this python3 lacks grpcio/protobuf: re-exec with the lab's interpreter if known
    _py = os.environ.get("FEAS_LAB_PYTHON")
    if _py and os.path.abspath(_py) != os.path.abspath(sys.executable) \
            and not os.environ.get("FEAS_LAB_REEXEC"):
        os.environ["FEAS_LAB_REEXEC"] = "1"
        os.execv(_py, [_py, os.path.realpath(__file__)] + sys.argv[1:])
    raise

DEFAULT_CONFIG = "/etc/crictl.yaml"
DEFAULT_ENDPOINTS = ["unix:///run/containerd/containerd.sock", "unix:///run/crio/crio.sock",
                     "unix:///var/run/cri-dockerd.sock"]
DEFAULT_TIMEOUT = 2.0

_out_lock = threading.Lock()


# ----------------------------------------------------------------------------- logging

def go_quote(s):
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif o < 0x20 or o == 0x7f:
            out.append("\\x%02x" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_PLAIN = re.compile(r"^[A-Za-z0-9\-._/@^+]+$")


def _logrus_val(s):
    return s if _PLAIN.match(s) else go_quote(s)


def _ts():
    t = time.localtime()
    off = -time.timezone if not t.tm_isdst else -time.altzone
    sign = "+" if off > 0 else "-"
    z = "Z" if off == 0 else "%s%02d:%02d" % (sign, abs(off) // 3600, abs(off) % 3600 // 60)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + z


def log(level, msg):
    with _out_lock:
        sys.stdout.flush()
        sys.stderr.write('time="%s" level=%s msg=%s\n' % (_ts(), level, _logrus_val(msg)))
        sys.stderr.flush()


def fatal(msg):
    log("fatal", str(msg))
    sys.exit(1)


def klog_error(where, msg, **kv):
    now = time.time()
    lt = time.localtime(now)
    head = "E%s %s.%06d %7d %s] " % (
        time.strftime("%m%d", lt), time.strftime("%H:%M:%S", lt), int((now % 1) * 1e6), os.getpid(), where)
    parts = [go_quote(msg)] + ["%s=%s" % (k, go_quote(str(v))) for k, v in kv.items()]
    with _out_lock:
        sys.stderr.write(head + " ".join(parts) + "\n")
        sys.stderr.flush()


def say(line):
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Fail(Exception):
    pass


# ----------------------------------------------------------------------------- parsing

_DUR = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def parse_duration(s):
    s0 = s
    if s in ("0", "+0", "-0"):
        return 0.0
    neg = s.startswith("-")
    s = s.lstrip("+-")
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DUR.match(s, pos)
        if not m:
            raise ValueError('time: invalid duration "%s"' % s0)
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s:
        raise ValueError('time: invalid duration "%s"' % s0)
    return -total if neg else total


class Flags:
    """urfave/cli-like flag parsing: flags stop at the first positional argument."""

    def __init__(self, spec):
        # spec: {canonical: (kind, [names], default)} kind in bool|str|multi|int
        self.spec = spec
        self.by_name = {}
        for canon, (kind, names, default) in spec.items():
            for n in names:
                self.by_name[n] = canon
        self.values = {c: (list(v[2]) if v[0] == "multi" else v[2]) for c, v in spec.items()}
        self.set = set()

    def parse(self, args, short_combo=True):
        rest = []
        i = 0
        while i < len(args):
            a = args[i]
            if a == "--":
                rest.extend(args[i + 1:])
                break
            if not a.startswith("-") or a == "-":
                rest.extend(args[i:])
                break
            name, eq, val = a.lstrip("-").partition("=")
            if name not in self.by_name and short_combo and not a.startswith("--") \
                    and len(name) > 1 and not eq:
                # -aq style
                if all(c in self.by_name and self.spec[self.by_name[c]][0] == "bool"
                       for c in name):
                    for c in name:
                        self._assign(self.by_name[c], "true")
                    i += 1
                    continue
            if name not in self.by_name:
                raise Fail("flag provided but not defined: -%s" % name)
            canon = self.by_name[name]
            kind = self.spec[canon][0]
            if kind == "bool":
                self._assign(canon, val if eq else "true")
            else:
                if not eq:
                    i += 1
                    if i >= len(args):
                        raise Fail("flag needs an argument: -%s" % name)
                    val = args[i]
                self._assign(canon, val)
            i += 1
        return rest

    def _assign(self, canon, val):
        kind = self.spec[canon][0]
        self.set.add(canon)
        if kind == "bool":
            self.values[canon] = val.lower() in ("1", "t", "true")
        elif kind == "multi":
            self.values[canon].append(val)
        elif kind == "int":
            self.values[canon] = int(val)
        elif kind == "duration":
            try:
                self.values[canon] = parse_duration(val)
            except ValueError:
                raise Fail('invalid value "%s" for flag -%s: parse error' % (val, canon))
        else:
            self.values[canon] = val

    def __getitem__(self, k):
        return self.values[k]


# ----------------------------------------------------------------------------- config

class Ctx:
    runtime_endpoint = ""
    runtime_set = False
    image_endpoint = ""
    image_set = False
    timeout = DEFAULT_TIMEOUT
    debug = False


def read_config_file(path):
    cfg = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line or ":" not in line:
                continue
            k, v = line.split(":", 1)
            cfg[k.strip()] = v.strip().strip("'\"")
    return cfg


def load_server_config(path, explicit):
    """common.GetServerConfigFromFile: the given file, then <bindir>/crictl.yaml."""
    if os.path.exists(path):
        return read_config_file(path)
    nxt = os.path.join(HERE, "crictl.yaml")
    log("warning", 'Config "%s" does not exist, trying next: "%s"' % (path, nxt))
    if os.path.exists(nxt):
        return read_config_file(nxt)
    if explicit:
        fatal("load config file: stat %s: no such file or directory" % nxt)
    return None


def setup_globals(gf, env):
    ctx = Ctx()
    cfg_path = gf["config"]
    explicit = "config" in gf.set
    if not explicit and env.get("CRI_CONFIG_FILE"):
        cfg_path, explicit = env["CRI_CONFIG_FILE"], True
    cfg = load_server_config(cfg_path, explicit)
    rt, rt_set = gf["runtime-endpoint"], "runtime-endpoint" in gf.set
    if not rt_set and env.get("CONTAINER_RUNTIME_ENDPOINT"):
        rt, rt_set = env["CONTAINER_RUNTIME_ENDPOINT"], True
    im, im_set = gf["image-endpoint"], "image-endpoint" in gf.set
    if not im_set and env.get("IMAGE_SERVICE_ENDPOINT"):
        im, im_set = env["IMAGE_SERVICE_ENDPOINT"], True
    to_set = "timeout" in gf.set
    to = gf["timeout"] if to_set and gf["timeout"] > 0 else DEFAULT_TIMEOUT
    if cfg is None:
        ctx.runtime_endpoint, ctx.runtime_set = rt, rt_set
        ctx.image_endpoint, ctx.image_set = im, im_set
        ctx.timeout = to
    else:
        if rt_set:
            ctx.runtime_endpoint, ctx.runtime_set = rt, True
        elif cfg.get("runtime-endpoint"):
            ctx.runtime_endpoint, ctx.runtime_set = cfg["runtime-endpoint"], True
        if im_set:
            ctx.image_endpoint, ctx.image_set = im, True
        elif cfg.get("image-endpoint"):
            ctx.image_endpoint, ctx.image_set = cfg["image-endpoint"], True
        if to_set:
            ctx.timeout = to
        else:
            try:
                t = int(cfg.get("timeout", "0") or 0)
            except ValueError:
                t = 0
            ctx.timeout = float(t) if t > 0 else DEFAULT_TIMEOUT
    return ctx


# ----------------------------------------------------------------------------- connect

def _connect(endpoint, timeout, kind):
    """remote.NewRemote{Runtime,Image}Service + validateServiceConnection."""
    what = "runtime" if kind == "runtime" else "image"
    path = cri.socket_path(endpoint)
    dial = cri.dial_error(path)
    prefix = "validate service connection: validate CRI v1 %s API for endpoint %s: " % (
        what, go_quote(endpoint))
    if dial:
        raise Fail(prefix + "rpc error: code = Unavailable desc = " + dial)
    client = cri.CRIClient(endpoint, timeout=timeout)
    try:
        if kind == "runtime":
            client.version(timeout=timeout)
        else:
            client.call("ImageFsInfo", timeout=timeout)
    except cri.CRIError as e:
        client.close()
        raise Fail(prefix + str(e))
    return client


def _connect_default(ctx, kind, timeout):
    name = "runtime" if kind == "runtime" else "Image"
    log("warning", "%s connect using default endpoints: [%s]. As the default settings are "
        "now deprecated, you should set the endpoint instead." % (name, " ".join(DEFAULT_ENDPOINTS)))
    err = None
    for ep in DEFAULT_ENDPOINTS:
        try:
            return _connect(ep, timeout, kind)
        except Fail as e:
            log("error", str(e))
            err = e
    raise err


def runtime_service(ctx):
    if ctx.runtime_set and ctx.runtime_endpoint == "":
        raise Fail("--runtime-endpoint is not set")
    if not ctx.runtime_set:
        return _connect_default(ctx, "runtime", ctx.timeout)
    return _connect(ctx.runtime_endpoint, ctx.timeout, "runtime")


def image_service(ctx):
    if ctx.image_endpoint == "":
        if ctx.runtime_set and ctx.runtime_endpoint == "":
            raise Fail("--image-endpoint is not set")
        ctx.image_endpoint, ctx.image_set = ctx.runtime_endpoint, ctx.runtime_set
    if not ctx.image_set:
        return _connect_default(ctx, "image", ctx.timeout)
    return _connect(ctx.image_endpoint, ctx.timeout, "image")


# ----------------------------------------------------------------------------- output

def print_json(obj):
    say(cri.go_json(obj))


def sort_keys_deep(o):
    if isinstance(o, dict):
        return {k: sort_keys_deep(o[k]) for k in sorted(o)}
    if isinstance(o, list):
        return [sort_keys_deep(x) for x in o]
    return o


def human_duration(seconds):
    """github.com/docker/go-units HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return "%d seconds" % s
    m = int(seconds / 60)
    if m == 1:
        return "About a minute"
    if m < 60:
        return "%d minutes" % m
    h = int(round(seconds / 3600))
    if h == 1:
        return "About an hour"
    if h < 48:
        return "%d hours" % h
    if h < 24 * 7 * 2:
        return "%d days" % (h // 24)
    if h < 24 * 30 * 2:
        return "%d weeks" % (h // 24 // 7)
    if h < 24 * 365 * 2:
        return "%d months" % (h // 24 // 30)
    return "%d years" % (h // 24 // 365)


def human_size(size, precision=3):
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    i = 0
    size = float(size)
    while size >= 1000 and i < len(units) - 1:
        size /= 1000.0
        i += 1
    return "%.*g%s" % (precision, size, units[i])


class Table:
    """text/tabwriter with minwidth 20, padding 3, padchar ' ' (crictl's table)."""

    def __init__(self):
        self.rows = []

    def add(self, row):
        self.rows.append([str(c) for c in row])

    def flush(self):
        if not self.rows:
            return
        ncol = max(len(r) for r in self.rows)
        widths = [0] * ncol
        for r in self.rows:
            for i, c in enumerate(r[:-1]):
                widths[i] = max(widths[i], len(c) + 3, 20)
        for r in self.rows:
            line = "".join(c.ljust(widths[i]) for i, c in enumerate(r[:-1])) + r[-1]
            say(line)


def trunc(id_, prefix=""):
    if prefix and id_.startswith(prefix):
        id_ = id_[len(prefix):]
    return id_[:13]


def ago(ns):
    return human_duration(time.time() - ns / 1e9) + " ago"


def rpc_fail(e):
    return Fail(str(e))


# ----------------------------------------------------------------------------- commands

def cmd_version(ctx, args):
    f = Flags({"output": ("str", ["o", "output"], "")})
    f.parse(args)
    c = runtime_service(ctx)
    try:
        v = c.version(timeout=ctx.timeout)
    except cri.CRIError as e:
        raise Fail("get the runtime version: %s" % e)
    if f["output"] == "json":
        print_json(cri.to_dict(v))
        return
    say("Version:  %s" % v.version)
    say("RuntimeName:  %s" % v.runtime_name)
    say("RuntimeVersion:  %s" % v.runtime_version)
    say("RuntimeApiVersion:  %s" % v.runtime_api_version)


def _labels(vals):
    out = {}
    for s in vals:
        pair = s.split("=")
        if len(pair) != 2:
            raise Fail("incorrectly specified label: %s" % s)
        out[pair[0]] = pair[1]
    return out


def _regex_ok(pat, s):
    if not pat:
        return True
    try:
        return re.search(pat, s) is not None
    except re.error:
        return False


def cmd_ps(ctx, args):
    f = Flags({
        "all": ("bool", ["a", "all"], False), "quiet": ("bool", ["q", "quiet"], False),
        "state": ("str", ["s", "state"], ""), "output": ("str", ["o", "output"], "table"),
        "pod": ("str", ["p", "pod"], ""), "id": ("str", ["id"], ""),
        "name": ("str", ["name"], ""), "label": ("multi", ["label"], []),
        "verbose": ("bool", ["v", "verbose"], False), "no-trunc": ("bool", ["no-trunc"], False),
        "image": ("str", ["image"], ""), "latest": ("bool", ["l", "latest"], False),
        "last": ("int", ["n", "last"], 0), "namespace": ("str", ["namespace"], ""),
        "resolve-image-path": ("bool", ["r", "resolve-image-path"], False)})
    rest = f.parse(args)
    if rest:
        raise Fail("ps takes no arguments")
    rc = runtime_service(ctx)
    ic = image_service(ctx)
    state = None
    if not f["all"] and not f["state"]:
        state = cri.CONTAINER_RUNNING
    if f["state"]:
        m = {"created": 0, "running": 1, "exited": 2, "unknown": 3}
        st = f["state"].lower()
        if st not in m:
            raise Fail("listing containers: list containers: --state should be one of "
                       "created, running, exited or unknown")
        state = m[st]
    if f["latest"] or f["last"] > 0:
        state = None
    labels = _labels(f["label"])
    try:
        items = rc.list_containers(state=state, pod_id=f["pod"] or None, id=f["id"] or None,
                                   labels=labels or None)
    except cri.CRIError as e:
        raise Fail("listing containers: list containers: call list containers RPC: %s" % e)
    out = []
    img_id = None
    if f["image"]:
        r = ic.image_status(f["image"]).image
        img_id = r.id if r.id else None
    for c in items:
        if f["image"]:
            r = ic.image_status(c.image.image).image
            if not img_id or r.id != img_id:
                continue
        ns = c.labels.get("io.kubernetes.pod.namespace", "unknown")
        if _regex_ok(f["name"], c.metadata.name) and _regex_ok(f["namespace"], ns):
            out.append(c)
    out.sort(key=lambda c: -c.created_at)
    n = 1 if f["latest"] else f["last"]
    if n > 0:
        out = out[:n]
    if f["output"] == "json":
        print_json(cri.to_dict(cri.pb.ListContainersResponse(containers=out)))
        return
    if f["output"] not in ("table",):
        raise Fail("listing containers: list containers: unsupported output format %s"
                   % go_quote(f["output"]))
    t = Table()
    if not f["quiet"] and not f["verbose"]:
        t.add(["CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD ID", "POD",
               "NAMESPACE"])
    for c in out:
        if f["quiet"]:
            say(c.id)
            continue
        image = c.image.image
        cid, pid = c.id, c.pod_sandbox_id
        if not f["no-trunc"]:
            cid, pid = trunc(cid), trunc(pid)
            if re.match(r"^sha256:[0-9a-f]{64}$", image):
                image = trunc(image, "sha256:")
        t.add([cid, image, ago(c.created_at),
               {0: "Created", 1: "Running", 2: "Exited", 3: "Unknown"}[c.state],
               c.metadata.name, c.metadata.attempt, pid,
               c.labels.get("io.kubernetes.pod.name", "unknown"),
               c.labels.get("io.kubernetes.pod.namespace", "unknown")])
    t.flush()


def cmd_pods(ctx, args):
    f = Flags({
        "id": ("str", ["id"], ""), "name": ("str", ["name"], ""),
        "namespace": ("str", ["namespace"], ""), "state": ("str", ["s", "state"], ""),
        "label": ("multi", ["label"], []), "verbose": ("bool", ["v", "verbose"], False),
        "quiet": ("bool", ["q", "quiet"], False), "output": ("str", ["o", "output"], "table"),
        "latest": ("bool", ["l", "latest"], False), "last": ("int", ["n", "last"], 0),
        "no-trunc": ("bool", ["no-trunc"], False)})
    f.parse(args)
    rc = runtime_service(ctx)
    state = None
    if f["state"]:
        st = f["state"].lower()
        if st not in ("ready", "notready"):
            # log.Fatalf in upstream
            sys.stderr.write("%s --state should be ready or notready\n"
                             % time.strftime("%Y/%m/%d %H:%M:%S"))
            sys.exit(1)
        state = cri.SANDBOX_READY if st == "ready" else cri.SANDBOX_NOTREADY
    labels = _labels(f["label"])
    try:
        items = rc.list_pod_sandbox(state=state, id=f["id"] or None, labels=labels or None)
    except cri.CRIError as e:
        raise Fail("listing pod sandboxes: list pod sandboxes: %s" % e)
    items = [p for p in items if _regex_ok(f["name"], p.metadata.name)
             and _regex_ok(f["namespace"], p.metadata.namespace)]
    items.sort(key=lambda p: -p.created_at)
    n = 1 if f["latest"] else f["last"]
    if n > 0:
        items = items[:n]
    if f["output"] == "json":
        print_json(cri.to_dict(cri.pb.ListPodSandboxResponse(items=items)))
        return
    t = Table()
    if not f["quiet"] and not f["verbose"]:
        t.add(["POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT", "RUNTIME"])
    for p in items:
        if f["quiet"]:
            say(p.id)
            continue
        pid = p.id if f["no-trunc"] else trunc(p.id)
        t.add([pid, ago(p.created_at), "Ready" if p.state == 0 else "NotReady",
               p.metadata.name, p.metadata.namespace, p.metadata.attempt,
               p.runtime_handler or "(default)"])
    t.flush()


def _image_less(a, b):
    if a.repo_tags and b.repo_tags:
        return a.repo_tags[0] < b.repo_tags[0]
    if a.repo_digests and b.repo_digests:
        return a.repo_digests[0] < b.repo_digests[0]
    return a.id < b.id


def _image_cmp(a, b):
    if _image_less(a, b):
        return -1
    if _image_less(b, a):  # pylint: disable=arguments-out-of-order  # the reverse comparison
        return 1
    return 0


def cmd_images(ctx, args):
    f = Flags({
        "verbose": ("bool", ["v", "verbose"], False), "quiet": ("bool", ["q", "quiet"], False),
        "filter": ("multi", ["f", "filter"], []), "output": ("str", ["o", "output"], ""),
        "digests": ("bool", ["digests"], False), "no-trunc": ("bool", ["no-trunc"], False),
        "pinned": ("bool", ["pinned"], False)})
    rest = f.parse(args)
    ic = image_service(ctx)
    try:
        imgs = ic.list_images(rest[0] if rest else None)
    except cri.CRIError as e:
        raise Fail("listing images: %s" % e)
    imgs.sort(key=cmp_to_key(_image_cmp))
    if f["output"] == "json":
        print_json(cri.to_dict(cri.pb.ListImagesResponse(images=imgs)))
        return
    t = Table()
    if not f["verbose"] and not f["quiet"]:
        row = ["IMAGE", "TAG"] + (["DIGEST"] if f["digests"] else []) + ["IMAGE ID", "SIZE"]
        if f["pinned"]:
            row.append("PINNED")
        t.add(row)
    for im in imgs:
        if f["quiet"]:
            say(im.id)
            continue
        if f["verbose"]:
            say("ID: %s" % im.id)
            for x in im.repo_tags:
                say("RepoTags: %s" % x)
            for x in im.repo_digests:
                say("RepoDigests: %s" % x)
            if im.size:
                say("Size: %d" % im.size)
            if im.pinned:
                say("Pinned: true")
            say("")
            continue
        if im.repo_digests:
            parts = im.repo_digests[0].split("@")
            name, digest = (parts[0], parts[1]) if len(parts) == 2 else ("errorName",
                                                                         "errorRepoDigest")
        else:
            name, digest = "<none>", "<none>"
        pairs = []
        if not im.repo_tags:
            pairs.append([name, "<none>"])
        for rt in im.repo_tags:
            i = rt.rfind(":")
            if i < 0:
                pairs.append(["errorRepoTag", "errorRepoTag"])
                continue
            pairs.append([rt[:i] if rt[:i] != "<none>" else name, rt[i + 1:]])
        iid = im.id if f["no-trunc"] else trunc(im.id, "sha256:")
        if not f["no-trunc"]:
            digest = trunc(digest, "sha256:")
        for p in pairs:
            row = p + ([digest] if f["digests"] else []) + [iid, human_size(im.size)]
            if f["pinned"]:
                row.append("true" if im.pinned else "false")
            t.add(row)
    t.flush()


def cmd_imagefsinfo(ctx, args):
    f = Flags({"output": ("str", ["o", "output"], ""), "template": ("str", ["template"], "")})
    f.parse(args)
    ic = image_service(ctx)
    try:
        r = ic.call("ImageFsInfo", timeout=ctx.timeout)
    except cri.CRIError as e:
        raise Fail("image filesystem info request: %s" % e)
    out = f["output"] or "json"
    if out == "table":
        for label, fss in (("Container", r.container_filesystems), ("Image", r.image_filesystems)):
            say("%s Filesystem " % label)
            for i, v in enumerate(fss):
                say("TimeStamp[%d]: %d" % (i, v.timestamp))
                say("Disk[%d]: %s" % (i, human_size(v.used_bytes.value, 4)))
                say("Inodes[%d]: %d" % (i, v.inodes_used.value))
                say("Mountpoint[%d]: %s" % (i, v.fs_id.mountpoint))
        return
    if out != "json":
        raise Fail("unsupported format: %s" % go_quote(out))
    print_json(sort_keys_deep({"status": cri.to_dict(r)}))


def cmd_info(ctx, args):
    f = Flags({"output": ("str", ["o", "output"], "json"), "quiet": ("bool", ["q", "quiet"], False),
               "template": ("str", ["template"], "")})
    f.parse(args)
    rc = runtime_service(ctx)
    try:
        r = rc.call("Status", timeout=ctx.timeout, verbose=not f["quiet"])
    except cri.CRIError as e:
        raise Fail("getting status of runtime: %s" % e)
    import json
    res = {"status": cri.to_dict(r.status)}
    if len(r.runtime_handlers):
        hs = []
        for h in r.runtime_handlers:
            d = {}
            if h.name:
                d["name"] = h.name
            if h.HasField("features"):
                feat = {}
                if h.features.recursive_read_only_mounts:
                    feat["recursive_read_only_mounts"] = True
                if h.features.user_namespaces:
                    feat["user_namespaces"] = True
                d["features"] = feat
            hs.append(d)
        res["runtimeHandlers"] = hs
    if r.HasField("features"):
        res["features"] = ({"supplemental_groups_policy": True}
                           if r.features.supplemental_groups_policy else {})
    for k in sorted(r.info):
        v = r.info[k]
        if v.startswith("{"):
            res[k] = json.loads(v)
        else:
            res[k] = v.strip('"')
    if f["output"] != "json":
        raise Fail("unsupported format: %s" % go_quote(f["output"]))
    print_json(sort_keys_deep(res))


def _aggregate(errors):
    msgs = []
    for e in errors:
        if str(e) not in msgs:
            msgs.append(str(e))
    if len(msgs) == 1:
        return msgs[0]
    return "[" + ", ".join(msgs) + "]"


def _run_parallel(funcs):
    errors = []
    lock = threading.Lock()

    def wrap(fn):
        try:
            fn()
        except (Fail, cri.CRIError) as e:
            with lock:
                errors.append(e)

    with ThreadPoolExecutor(max(1, min(len(funcs), 64))) as ex:
        list(ex.map(wrap, funcs))
    if errors:
        raise Fail(_aggregate(errors))


def cmd_rm(ctx, args):
    f = Flags({"force": ("bool", ["f", "force"], False),
               "keep-logs": ("bool", ["k", "keep-logs"], False),
               "all": ("bool", ["a", "all"], False)})
    ids = f.parse(args)
    rc = runtime_service(ctx)
    if f["all"]:
        try:
            ids = [c.id for c in rc.list_containers()]
        except cri.CRIError as e:
            raise Fail(str(e))
        if not ids:
            log("info", "No containers to remove")
            return
    if not ids:
        raise Fail("ID cannot be empty")

    def one(cid):
        def fn():
            try:
                st = rc.container_status(cid)
            except cri.CRIError as e:
                klog_error("remote_runtime.go:569", "ContainerStatus from runtime service failed",
                           err=str(e), containerID=cid)
                raise Fail("getting container status %s: %s" % (go_quote(cid), e))
            if st.status.state == cri.CONTAINER_RUNNING:
                if f["force"]:
                    try:
                        rc.stop_container(cid, 0)
                    except cri.CRIError as e:
                        raise Fail("stopping the container %s: %s" % (go_quote(cid), e))
                    say(cid)
                else:
                    raise Fail("container %s is running, please stop it first" % go_quote(cid))
            try:
                rc.remove_container(cid)
            except cri.CRIError as e:
                klog_error("remote_runtime.go:483", "RemoveContainer from runtime service failed",
                           err=str(e), containerID=cid)
                raise Fail("removing container %s: %s" % (go_quote(cid), e))
            say(cid)
            lp = st.status.log_path
            if lp and not f["keep-logs"]:
                import glob
                for p in glob.glob(lp + ".*") + [lp]:
                    try:
                        os.remove(p)
                    except OSError as e:
                        log("error", "removing log file %s for container %s failed: %s"
                            % (p, go_quote(cid), e))
        return fn

    _run_parallel([one(i) for i in ids])


def cmd_rmp(ctx, args):
    f = Flags({"force": ("bool", ["f", "force"], False), "all": ("bool", ["a", "all"], False)})
    ids = f.parse(args)
    rc = runtime_service(ctx)
    if f["all"]:
        try:
            ids = [p.id for p in rc.list_pod_sandbox()]
        except cri.CRIError as e:
            raise Fail(str(e))
    if not ids:
        if f["all"]:
            log("info", "No pods to remove")
            return
        raise Fail("ID cannot be empty")

    def one(pid):
        def fn():
            try:
                st = rc.pod_sandbox_status(pid)
            except cri.CRIError as e:
                klog_error("remote_runtime.go:289", "PodSandboxStatus from runtime service failed",
                           err=str(e), podSandboxID=pid)
                raise Fail("getting sandbox status of pod %s: %s" % (go_quote(pid), e))
            if st.status.state == cri.SANDBOX_READY:
                if f["force"]:
                    try:
                        rc.stop_pod_sandbox(pid)
                    except cri.CRIError as e:
                        raise Fail("stopping the pod sandbox %s failed: %s" % (go_quote(pid), e))
                    say("Stopped sandbox %s" % pid)
                else:
                    raise Fail("pod sandbox %s is running, please stop it first" % go_quote(pid))
            try:
                rc.remove_pod_sandbox(pid)
            except cri.CRIError as e:
                klog_error("remote_runtime.go:266", "RemovePodSandbox from runtime service failed",
                           err=str(e), podSandboxID=pid)
                raise Fail("removing the pod sandbox %s: %s" % (go_quote(pid), e))
            say("Removed sandbox %s" % pid)
        return fn

    _run_parallel([one(i) for i in ids])


def cmd_rmi(ctx, args):
    f = Flags({"all": ("bool", ["a", "all"], False), "prune": ("bool", ["q", "prune"], False)})
    rest = f.parse(args)
    ic = image_service(ctx)
    ids = {}
    for i in rest:
        ids[i] = True
    all_, prune = f["all"], f["prune"]
    if all_ or prune:
        try:
            imgs = ic.list_images()
        except cri.CRIError as e:
            raise Fail(str(e))
        for im in imgs:
            if prune and im.pinned:
                continue
            ids[im.id] = True
    if prune:
        rc = runtime_service(ctx)
        try:
            ctrs = rc.list_containers()
        except cri.CRIError as e:
            raise Fail(str(e))
        for c in ctrs:
            ref = c.image.image
            try:
                st = ic.image_status(ref)
            except cri.CRIError as e:
                log("error", "image status request for %s failed: %s" % (go_quote(ref), e))
                continue
            ids[st.image.id] = False
    if not ids:
        if all_ or prune:
            log("info", "No images to remove")
            return
        raise Fail("IMAGE-ID cannot be empty")
    errored = False
    for iid, remove in ids.items():
        if not remove:
            continue
        try:
            st = ic.image_status(iid)
        except cri.CRIError as e:
            log("error", "image status request for %s failed: %s" % (go_quote(iid), e))
            errored = True
            continue
        if not st.HasField("image"):
            log("error", "no such image %s" % iid)
            errored = True
            continue
        try:
            ic.remove_image(iid)
        except cri.CRIError as e:
            if not prune:
                log("error", "error of removing image %s: %s" % (go_quote(iid), e))
                errored = True
            continue
        if not st.image.repo_tags:
            for d in st.image.repo_digests:
                say("Deleted: %s" % d)
            continue
        for t in st.image.repo_tags:
            say("Deleted: %s" % t)
    if errored:
        raise Fail("unable to remove the image(s)")


COMMANDS = {"version": cmd_version, "ps": cmd_ps, "pods": cmd_pods, "images": cmd_images,
            "image": cmd_images, "img": cmd_images, "imagefsinfo": cmd_imagefsinfo,
            "info": cmd_info, "rm": cmd_rm, "rmp": cmd_rmp, "rmi": cmd_rmi}

USAGE = """NAME:
   crictl - client for CRI (TEST-ONLY stand-in, tests/lab/bin/crictl)

USAGE:
   crictl [global options] command [command options]

COMMANDS:
   images, image, img  List images
   imagefsinfo         Return image filesystem info
   info                Display information of the container runtime
   pods                List pods
   ps                  List containers
   rm                  Remove one or more containers
   rmi                 Remove one or more images
   rmp                 Remove one or more pods
   version             Display runtime version information

GLOBAL OPTIONS:
   --config value, -c value            Location of the client config file [$CRI_CONFIG_FILE]
   --debug, -D                         Enable debug mode
   --image-endpoint value, -i value    Endpoint of CRI image manager service [$IMAGE_SERVICE_ENDPOINT]
   --runtime-endpoint value, -r value  Endpoint of CRI container runtime service [$CONTAINER_RUNTIME_ENDPOINT]
   --timeout value, -t value           Timeout of connecting to the server (default: 2s)
"""


def main(argv):
    gf = Flags({"config": ("str", ["c", "config"], DEFAULT_CONFIG),
                "runtime-endpoint": ("str", ["r", "runtime-endpoint"], ""),
                "image-endpoint": ("str", ["i", "image-endpoint"], ""),
                "timeout": ("duration", ["t", "timeout"], DEFAULT_TIMEOUT),
                "debug": ("bool", ["D", "debug"], False),
                "help": ("bool", ["h", "help"], False),
                "version": ("bool", ["v", "version"], False)})
    try:
        rest = gf.parse(argv, short_combo=False)
    except Fail as e:
        sys.stderr.write("Incorrect Usage: %s\n\n" % e)
        sys.stderr.write(USAGE)
        fatal(str(e))
    if gf["help"] or not rest or rest[0] in ("help", "h"):
        sys.stdout.write(USAGE)
        return 0
    if gf["version"]:
        say("crictl version v1.36.0 (test stand-in)")
        return 0
    cmd = rest[0]
    fn = COMMANDS.get(cmd)
    ctx = setup_globals(gf, os.environ)
    ctx.debug = gf["debug"]
    if fn is None:
        sys.stderr.write("No help topic for '%s'\n" % cmd)
        return 3
    try:
        fn(ctx, rest[1:])
    except Fail as e:
        fatal(str(e))
    except cri.CRIError as e:
        fatal(str(e))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(1)
