"""Contract of the test-only crictl stand-in (tests/lab/bin/crictl) against the
recordings of upstream crictl 1.36.0 in tests/fixtures/crictl-1.36.0_containerd-*/.

The lab builds the recordings' scenario (feas-a/b/c, see the fixture READMEs); the
stand-in's output is compared with the recordings: JSON key order, value types, int64
string encoding, enum names, text line shapes, stderr lines, exit codes and fatal
messages (exactly, after normalising timestamps, pids, ids and lab paths)."""

import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures")
F16 = os.path.join(FIX, "crictl-1.36.0_containerd-1.6.20")
F21 = os.path.join(FIX, "crictl-1.36.0_containerd-2.1.9")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
DIGITS = re.compile(r"^\d+$")
MAPS = {"labels", "annotations"}  # map<string,string> fields: compare as maps, not keys
STR_LISTS = {"repoTags", "repoDigests"}  # repeated string (may be empty)


def rec(name, d=F16):
    with open(os.path.join(d, name)) as f:
        return f.read()


def recj(name, d=F16):
    return json.loads(rec(name, d))


def rec_for(lab):
    """Recording dir matching the lab's containerd major version."""
    return F21 if lab.version[0] >= 2 else F16


def run(lab, *args):
    r = lab.crictl(*args)
    return r


def shape(v, key=None):
    """Structural shape: dict -> ordered [(key, shape)], list -> [shape of items],
    scalars -> type name. int64 strings become 'int64'."""
    if key in MAPS:
        assert isinstance(v, dict) and all(isinstance(x, str) for x in v.values()), (key, v)
        return "map<string,string>"
    if key in STR_LISTS:
        assert isinstance(v, list) and all(isinstance(x, str) for x in v), (key, v)
        return "list<string>"
    if isinstance(v, dict):
        return [(k, shape(x, k)) for k, x in v.items()]
    if isinstance(v, list):
        shapes = {json.dumps(shape(x)) for x in v}
        assert len(shapes) <= 1, "heterogeneous list"
        return ["list", json.loads(shapes.pop()) if shapes else None]
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, str):
        return "int64" if key in ("createdAt", "size", "timestamp", "value") else "str"
    return type(v).__name__


def item_shape(items):
    s = {json.dumps(shape(x)) for x in items}
    assert len(s) == 1, s
    return json.loads(s.pop())


def normalize_err(text, lab, ids=None):
    """Make stand-in stderr comparable with a recording."""
    text = re.sub(r'time="[^"]*"', 'time="T"', text)
    text = re.sub(r"^E\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ ", "E<hdr> ", text, flags=re.M)
    text = text.replace(lab.bin_dir + "/crictl.yaml", "/usr/local/bin/crictl.yaml")
    text = text.replace(lab.socket, "/run/containerd/containerd.sock")
    text = text.replace(lab.base + "/", "/var/lib/lab/")
    for mine, theirs in (ids or {}).items():
        text = text.replace(mine, theirs)
    return text


def normalize_rec_err(text):
    text = re.sub(r'time="[^"]*"', 'time="T"', text)
    return re.sub(r"^E\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ ", "E<hdr> ", text, flags=re.M)


WARNING = re.compile(r'^time="[^"]+" level=warning msg="Config \\"/etc/crictl\.yaml\\" does '
                     r'not exist, trying next: \\"(/[^"\\]+)/crictl\.yaml\\""$')
FATAL = re.compile(r'^time="[^"]+" level=fatal msg="(.*)"$')


def no_etc_crictl():
    return not os.path.exists("/etc/crictl.yaml")


def check_stderr_ok(lab, stderr):
    """Successful commands print only the config-search warning (as recorded)."""
    lines = stderr.splitlines()
    assert WARNING.match(rec("rm.err").splitlines()[0])  # the regex fits the recording
    if no_etc_crictl():
        assert len(lines) == 1 and WARNING.match(lines[0]), stderr
        assert WARNING.match(lines[0]).group(1) == lab.bin_dir
    else:
        assert not any("level=fatal" in l for l in lines), stderr


def check_json_text(out):
    """2-space indent, one trailing newline, no other whitespace differences; the
    recordings have the same layout (checked too)."""
    assert out == json.dumps(json.loads(out), indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- read-only

@pytest.fixture(scope="module")
def feas_ro(lab):
    from tests import lab as labpkg
    labpkg.reset(lab)
    return labpkg.feas(lab)


def test_recordings_have_plain_json_layout():
    for d in (F16, F21):
        for n in ("ps-a.json", "pods.json", "images.json", "imagefsinfo.json",
                  "images-after.json", "info.json"):
            check_json_text(rec(n, d))


def test_version(lab, feas_ro):
    r = run(lab, "version")
    assert r.returncode == 0, r.stderr
    check_stderr_ok(lab, r.stderr)
    want = rec("version.txt").splitlines()
    got = r.stdout.splitlines()
    assert [l.split(":")[0] for l in got] == [l.split(":")[0] for l in want]
    assert got[0] == want[0] and got[1] == want[1] and got[3] == want[3]
    assert re.match(r"^RuntimeVersion:  \S+$", got[2])
    assert got[2] == "RuntimeVersion:  " + lab.version_string


def test_ps_a_json(lab, feas_ro):
    r = run(lab, "ps", "-a", "-o", "json")
    assert r.returncode == 0, r.stderr
    check_stderr_ok(lab, r.stderr)
    check_json_text(r.stdout)
    got = json.loads(r.stdout)
    for d in (F16, F21):
        want = recj("ps-a.json", d)
        assert list(got) == list(want) == ["containers"]
        assert item_shape(got["containers"]) == item_shape(want["containers"])
        # same containers, same order (newest first), same states and images

        def key(c):
            return (c["metadata"]["name"], c["state"], c["image"]["image"])
        assert [key(c) for c in got["containers"]] == [key(c) for c in want["containers"]]
    ids = {c["metadata"]["name"]: c["id"] for c in got["containers"]}
    s = feas_ro["containers"]
    assert ids == {n: s[n]["id"] for n in ("exit0", "exit1", "sleeper")}
    for c in got["containers"]:
        assert HEX64.match(c["id"]) and HEX64.match(c["podSandboxId"])
        assert DIGITS.match(c["createdAt"]) and int(c["createdAt"]) == s[
            c["metadata"]["name"]]["created_at"]
        assert c["imageRef"].startswith("sha256:")
        assert c["state"] in ("CONTAINER_CREATED", "CONTAINER_RUNNING", "CONTAINER_EXITED",
                              "CONTAINER_UNKNOWN")
    created = [int(c["createdAt"]) for c in got["containers"]]
    assert created == sorted(created, reverse=True)
    # exit0/exit1 run the first busybox:1, whose tag moved: imageRef is the old ID
    old = feas_ro["images"]["busybox1_old"]["id"]
    assert {c["imageRef"] for c in got["containers"] if c["metadata"]["name"] != "sleeper"} \
        == {old}


def test_pods_json(lab, feas_ro):
    r = run(lab, "pods", "-o", "json")
    assert r.returncode == 0, r.stderr
    check_stderr_ok(lab, r.stderr)
    check_json_text(r.stdout)
    got = json.loads(r.stdout)
    for d in (F16, F21):
        want = recj("pods.json", d)
        assert list(got) == list(want) == ["items"]
        assert item_shape(got["items"]) == item_shape(want["items"])

        def key(p):
            return (p["metadata"]["name"], p["metadata"]["namespace"], p["state"],
                    p["labels"], p["metadata"]["attempt"])
        assert [key(p) for p in got["items"]] == [key(p) for p in want["items"]]
    for p in got["items"]:
        assert DIGITS.match(p["createdAt"])
        assert isinstance(p["metadata"]["attempt"], int)  # uint32: a JSON number
        assert p["id"] == feas_ro["pods"][p["metadata"]["name"]]["id"]


def _norm_refs(refs):
    return sorted(re.sub(r"@sha256:[0-9a-f]{64}$", "@sha256:D", x) for x in refs)


def test_images_json(lab, feas_ro):
    r = run(lab, "images", "-o", "json")
    assert r.returncode == 0, r.stderr
    check_stderr_ok(lab, r.stderr)
    check_json_text(r.stdout)
    got = json.loads(r.stdout)
    want = recj("images.json", rec_for(lab))
    assert list(got) == list(want) == ["images"]
    assert item_shape(got["images"]) == item_shape(want["images"])
    assert item_shape(got["images"]) == item_shape(recj("images.json", F21)["images"])
    for field in ("repoTags", "repoDigests"):
        assert _norm_refs(x for i in got["images"] for x in i[field]) == \
            _norm_refs(x for i in want["images"] for x in i[field])
    assert sorted(i["pinned"] for i in got["images"]) == \
        sorted(i["pinned"] for i in want["images"])
    for i in got["images"]:
        assert re.match(r"^sha256:[0-9a-f]{64}$", i["id"]) and DIGITS.match(i["size"])
    digest_only = [i for i in got["images"] if not i["repoTags"]]
    assert [i["id"] for i in digest_only] == [feas_ro["images"]["busybox1_old"]["id"]]


def test_imagefsinfo(lab, feas_ro):
    for args in (("imagefsinfo",), ("imagefsinfo", "-o", "json")):
        r = run(lab, *args)
        assert r.returncode == 0, r.stderr
        check_stderr_ok(lab, r.stderr)
        check_json_text(r.stdout)
        got = json.loads(r.stdout)
        for d in (F16, F21):
            assert shape(got) == shape(recj("imagefsinfo.json", d))
        fs = got["status"]["imageFilesystems"][0]
        assert fs["fsId"]["mountpoint"] == os.path.join(
            lab.base, "root", "io.containerd.snapshotter.v1.overlayfs")
        assert DIGITS.match(fs["timestamp"]) and DIGITS.match(fs["usedBytes"]["value"])


def test_info(lab, feas_ro):
    r = run(lab, "info", "-o", "json")
    assert r.returncode == 0, r.stderr
    check_stderr_ok(lab, r.stderr)
    check_json_text(r.stdout)
    got = json.loads(r.stdout)
    want = recj("info.json", rec_for(lab))
    assert list(got) == list(want)  # same top-level keys, sorted like Go maps
    assert list(got["config"]) == sorted(got["config"])
    if lab.version[0] < 2:
        assert got["config"]["sandboxImage"] == "docker.io/feas/pause:1"
        assert set(got["config"]) == set(want["config"])
    assert shape(got["status"]) == shape(want["status"])
    assert got["status"] == want["status"]  # RuntimeReady true, NetworkReady false (no CNI)


def test_quiet_listings(lab, feas_ro):
    r = run(lab, "ps", "-a", "-q", "--state", "exited")
    assert r.returncode == 0, r.stderr
    check_stderr_ok(lab, r.stderr)
    want = rec("ps-exited-q.txt").splitlines()
    got = r.stdout.splitlines()
    assert len(got) == len(want) == 2 and all(HEX64.match(x) for x in got + want)
    c = feas_ro["containers"]
    assert got == [c["exit1"]["id"], c["exit0"]["id"]]  # newest first, as recorded
    r = run(lab, "pods", "-q", "--state", "notready")
    assert r.returncode == 0, r.stderr
    assert len(rec("pods-notready-q.txt").splitlines()) == 1
    assert r.stdout.splitlines() == [feas_ro["pods"]["feas-a"]["id"]]
    # combined short flags (UseShortOptionHandling) and the default running filter
    r = run(lab, "ps", "-aq")
    assert sorted(r.stdout.split()) == sorted(x["id"] for x in c.values())
    r = run(lab, "ps", "-q")
    assert r.stdout.split() == [c["sleeper"]["id"]]


def test_wrong_socket(lab, feas_ro):
    nope = os.path.join(lab.base, "nope.sock")
    env = lab.env()
    r = lab.crictl("-r", "unix://" + nope, "--timeout", "2s", "ps", "-a", "-o", "json", env=env)
    assert r.returncode == int(rec("crictl-nosocket.rc")) == 1
    assert r.stdout == rec("crictl-nosocket.out") == ""
    if no_etc_crictl():
        assert normalize_err(r.stderr, lab) == normalize_rec_err(rec("crictl-nosocket.err"))
    assert normalize_err(r.stderr, lab).splitlines()[-1] == \
        normalize_rec_err(rec("crictl-nosocket.err")).splitlines()[-1]


def test_rm_missing(lab, feas_ro):
    r = run(lab, "rm", "deadbeef")
    assert r.returncode == int(rec("rm-missing.rc")) == 1
    assert r.stdout == rec("rm-missing.out") == ""
    want = normalize_rec_err(rec("rm-missing.err"))
    assert normalize_rec_err(rec("rm-missing.err", F21)) == want
    if no_etc_crictl():
        assert normalize_err(r.stderr, lab) == want
    assert normalize_err(r.stderr, lab).splitlines()[-2:] == want.splitlines()[-2:]


def test_timeout_flag_forms(lab, feas_ro):
    for t in ("2s", "2m", "1m30s", "500ms"):
        r = lab.crictl("-t", t, "version")
        assert r.returncode == 0, (t, r.stderr)
    r = lab.crictl("--timeout", "bogus", "version")
    assert r.returncode == 1 and "level=fatal" in r.stderr


def test_endpoint_from_env_and_flags(lab, feas_ro):
    env = lab.env()
    del env["CONTAINER_RUNTIME_ENDPOINT"], env["IMAGE_SERVICE_ENDPOINT"]
    r = lab.crictl("-r", lab.endpoint, "-i", lab.endpoint, "images", "-q", env=env)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.split()) == 5
    # image endpoint defaults to the runtime endpoint
    r = lab.crictl("--runtime-endpoint", lab.endpoint, "images", "-q", env=env)
    assert r.returncode == 0 and len(r.stdout.split()) == 5, r.stderr


def test_config_file(lab, feas_ro, tmp_path):
    cfg = tmp_path / "crictl.yaml"
    cfg.write_text("runtime-endpoint: %s\nimage-endpoint: %s\ntimeout: 10\n"
                   % (lab.endpoint, lab.endpoint))
    env = lab.env()
    del env["CONTAINER_RUNTIME_ENDPOINT"], env["IMAGE_SERVICE_ENDPOINT"]
    r = lab.crictl("-c", str(cfg), "pods", "-q", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # config found: no warning
    assert len(r.stdout.split()) == 3
    env["CRI_CONFIG_FILE"] = str(cfg)
    r = lab.crictl("pods", "-q", env=env)
    assert r.returncode == 0 and r.stderr == "" and len(r.stdout.split()) == 3


# --------------------------------------------------------------------------- removals

def test_normal_sequence(lab, feas_scenario):
    """rm (exited), rmp (NotReady), rmi --prune, images: as in the recordings."""
    s = feas_scenario
    c, p = s["containers"], s["pods"]
    # rm: the ids of `ps -a -q --state exited` (exit1, exit0)
    r = run(lab, "rm", c["exit1"]["id"], c["exit0"]["id"])
    assert r.returncode == 0, r.stderr
    check_stderr_ok(lab, r.stderr)
    assert all(HEX64.match(x) for x in rec("rm.out").splitlines())
    assert len(r.stdout.splitlines()) == len(rec("rm.out").splitlines()) == 2
    assert sorted(r.stdout.splitlines()) == sorted([c["exit1"]["id"], c["exit0"]["id"]])
    # rmp feas-a
    r = run(lab, "rmp", p["feas-a"]["id"])
    assert r.returncode == 0, r.stderr
    check_stderr_ok(lab, r.stderr)
    shape_re = re.compile(r"^Removed sandbox [0-9a-f]{64}$")
    assert all(shape_re.match(x) for x in rec("rmp.out").splitlines())
    assert r.stdout.splitlines() == ["Removed sandbox " + p["feas-a"]["id"]]
    # rmi --prune
    r = run(lab, "rmi", "--prune")
    assert r.returncode == 0, r.stderr
    check_stderr_ok(lab, r.stderr)
    want = rec("rmi-prune.out", rec_for(lab)).splitlines()
    line = re.compile(r"^Deleted: \S+$")
    assert all(line.match(x) for x in want) and all(line.match(x) for x in
                                                    r.stdout.splitlines())
    assert _norm_refs(x.split(" ", 1)[1] for x in r.stdout.splitlines()) == \
        _norm_refs(x.split(" ", 1)[1] for x in want)
    # images afterwards
    r = run(lab, "images", "-o", "json")
    got, want = json.loads(r.stdout), recj("images-after.json", rec_for(lab))
    assert shape(got) == shape(want)
    assert [i["repoTags"] for i in got["images"]] == [i["repoTags"] for i in want["images"]]


def test_error_cases(lab, feas_scenario):
    """rmp-ready, rm-running, rmi-inuse as recorded (exit codes, messages)."""
    s = feas_scenario
    b = s["pods"]["feas-b"]["id"]
    sl = s["containers"]["sleeper"]["id"]
    ids = {b: "8801e609c88a05d8fc64e31573b3085cf8378ce213c74470c0d6622c3169ee2e",
           sl: "76e0cb7f55ba8cc754ba3588bf74e1f1a4bb78c5b01f25f20c4e339b9060349c"}
    for name, args in (("rmp-ready", ["rmp", b]), ("rm-running", ["rm", sl])):
        r = run(lab, *args)
        assert r.returncode == int(rec(name + ".rc")) == 1, name
        assert r.stdout == rec(name + ".out") == ""
        want = normalize_rec_err(rec(name + ".err"))
        got = normalize_err(r.stderr, lab, ids)
        if no_etc_crictl():
            assert got == want, name
        assert got.splitlines()[-1] == want.splitlines()[-1]
        assert FATAL.match(r.stderr.splitlines()[-1])
    # nothing was removed by the failures
    assert lab.client.pod_sandbox_status(b).status.id == b
    assert lab.client.container_status(sl).status.id == sl
    # rmi of the running container's image succeeds (containerd allows it)
    bb2 = s["images"]["busybox2"]["id"]
    r = run(lab, "rmi", bb2)
    assert r.returncode == int(rec("rmi-inuse.rc")) == 0, r.stderr
    assert r.stdout == rec("rmi-inuse.out") == "Deleted: docker.io/feas/busybox:2\n"


# --------------------------------------------------------------------------- semantics
# Not recorded: upstream cri-tools logic (cmd/crictl/container.go, sandbox.go, image.go).

def test_rm_multi_attempts_all_and_fails(lab, feas_scenario):
    c = feas_scenario["containers"]
    r = run(lab, "rm", c["sleeper"]["id"], c["exit0"]["id"], "deadbeef")
    assert r.returncode == 1
    # the removable one is removed and printed although others fail
    assert r.stdout.splitlines() == [c["exit0"]["id"]]
    m = FATAL.match(r.stderr.splitlines()[-1])
    msg = m.group(1)
    # aggregated errors: "[e1, e2]" in completion order
    assert msg.startswith("[") and msg.endswith("]")
    assert 'container \\"%s\\" is running, please stop it first' % c["sleeper"]["id"] in msg
    assert 'getting container status \\"deadbeef\\"' in msg
    ids = [x.id for x in lab.client.list_containers()]
    assert c["exit0"]["id"] not in ids and c["sleeper"]["id"] in ids


def test_rmp_multi(lab, feas_scenario):
    p = feas_scenario["pods"]
    r = run(lab, "rmp", p["feas-a"]["id"], p["feas-b"]["id"])
    assert r.returncode == 1
    assert r.stdout.splitlines() == ["Removed sandbox " + p["feas-a"]["id"]]
    assert FATAL.match(r.stderr.splitlines()[-1]).group(1) == \
        'pod sandbox \\"%s\\" is running, please stop it first' % p["feas-b"]["id"]


def test_rmi_prune_keeps_images_of_exited_containers(lab, scenario):
    s = scenario
    before = {i.id for i in lab.client.list_images()}
    r = run(lab, "rmi", "--prune")
    assert r.returncode == 0, r.stderr
    after = {i.id for i in lab.client.list_images()}
    im = s["images"]
    for k in ("busybox2", "exitonly", "notready"):  # running / exited containers
        assert im[k]["id"] in after, k
    assert before - after == set(s["expected"]["prune_image_ids"])
    deleted = [x.split(" ", 1)[1] for x in r.stdout.splitlines()]
    assert im["busybox1_old"]["digest_ref"] in deleted  # digest-only: printed by digest
    assert "docker.io/feas/keep:1" in deleted


def test_rmi_by_ref_and_missing(lab, scenario):
    r = run(lab, "rmi", "docker.io/feas/unused:3", "docker.io/feas/nosuch:9")
    assert r.returncode == 1
    assert r.stdout == "Deleted: docker.io/feas/unused:3\n"
    err = r.stderr.splitlines()
    assert re.search(r'level=error msg="no such image docker.io/feas/nosuch:9"', r.stderr)
    assert FATAL.match(err[-1]).group(1) == "unable to remove the image(s)"
