# Over 300 lines: many cases of one subject, the live crictl's output shapes, one test per command.
"""Contract of the LIVE upstream crictl: its output still has the shapes that the collection's parser
(plugins/module_utils/_cri.py) relies on, on every containerd version of the lab.

The lab builds the recordings' scenario (feas-a/b/c, see tests/fixtures/*/README.md); the live
crictl's output is compared with the recording of upstream crictl 1.36.0 on the same containerd
version: JSON keys, value types, int64-as-quoted-string encodings, enum names, the ``Deleted:`` lines
of ``rmi``, the ``Removed sandbox`` lines of ``rmp``, the id lines of ``rm``, and the exit codes and
messages of failures. Shapes are compared, not ids, digests or times (the lab's images are built
from this machine's busybox, so their digests differ from the recordings').

Known upstream change since the recordings: crictl 1.37 logs the final failure message at
``level=error``, where 1.36 logged ``level=fatal`` (exit code 1 in both). The parser accepts both
(``_cri.error_lines``); ``failure_level`` below says which one the live crictl must print. A difference is reported
by its JSON path (``ps -a -o json: containers[].createdAt: recorded int64 string, live int``), so that
when upstream changes a shape, the failure names it.
"""

import json
import os
import re
import sys

import pytest

from tests.lab_tests.ansible_play import collections_path

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures")
F16 = os.path.join(FIX, "crictl-1.36.0_containerd-1.6.20")
F21 = os.path.join(FIX, "crictl-1.36.0_containerd-2.1.9")
FCRIO = os.path.join(FIX, "crictl-1.37.0_crio-1.34.0")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
DIGITS = re.compile(r"^\d+$")
FAILURE = re.compile(r'^time="[^"]+" level=(fatal|error) msg="(.*)"$')
MAPS = {"labels", "annotations", "config", "extraInfo"}  # free-form maps: only their type is compared
# int64/uint64 fields that the parser reads (protojson: quoted decimal strings)
INT64 = {"createdAt", "size", "timestamp", "value"}
CONTAINER_STATES = {"CONTAINER_CREATED", "CONTAINER_RUNNING", "CONTAINER_EXITED", "CONTAINER_UNKNOWN"}
SANDBOX_STATES = {"SANDBOX_READY", "SANDBOX_NOTREADY"}

pytestmark = pytest.mark.matrix  # the live contract: on every containerd line of the lab


def _cri():
    if collections_path() not in sys.path:
        sys.path.insert(0, collections_path())
    from ansible_collections.nodemaint.image_gc.plugins.module_utils import _cri as module
    return module


def failure_level(lab):
    """The level of crictl's final failure line: fatal up to 1.36 (the recordings), error from 1.37."""
    from tests import lab as labpkg
    version = labpkg.crictl_version(lab.crictl_bin)
    assert version, "cannot tell the version of " + lab.crictl_bin
    return "error" if tuple(int(x) for x in version.split(".")[:2]) >= (1, 37) else "fatal"


def rec_dir(lab):
    """The recording whose containerd treats the sandbox image like the lab's: 1.6.20 (not pinned,
    deleted by ``rmi --prune``) for 1.6, 2.1.9 (pinned, kept) for 1.7 and 2.x. There is no 1.7.24
    recording: 1.7 differs from 2.1.9 in what ``crictl info`` says, which test_info_json checks.
    CRI-O: its own recording (crictl 1.37.0 against CRI-O 1.34.0)."""
    if lab.runtime == "cri-o":
        return FCRIO
    return F21 if lab.pins_sandbox_image else F16


def rec(lab, name):
    with open(os.path.join(rec_dir(lab), name)) as f:
        return f.read()


def scalar(v, key):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, str):
        return "int64 string" if key in INT64 and DIGITS.match(v) else "string"
    if v is None:
        return "null"
    return type(v).__name__


def shape_diff(want, got, path="", key=None):
    """Differences between the shapes of a recorded and a live JSON value, as readable lines."""
    if key in MAPS:
        if isinstance(want, dict) and isinstance(got, dict):
            return []
        return ["%s: recorded %s, live %s" % (path, type(want).__name__, type(got).__name__)]
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for k in want:
            if k not in got:
                out.append("%s.%s: recorded, missing from the live output" % (path, k))
            else:
                out += shape_diff(want[k], got[k], "%s.%s" % (path, k), k)
        out += ["%s.%s: new in the live output" % (path, k) for k in got if k not in want]
        return out
    if isinstance(want, list) and isinstance(got, list):
        if not want or not got:
            return []
        out = []
        for item in got:  # every live item against the recording's first (the shapes are uniform)
            for line in shape_diff(want[0], item, path + "[]", key):
                if line not in out:
                    out.append(line)
        return out
    if isinstance(want, (dict, list)) or isinstance(got, (dict, list)):
        return ["%s: recorded %s, live %s" % (path, type(want).__name__, type(got).__name__)]
    a, b = scalar(want, key), scalar(got, key)
    return [] if a == b else ["%s: recorded %s, live %s" % (path, a, b)]


def crictl(lab, *args, **kw):
    return lab.crictl(*args, **kw)


def ok(lab, *args):
    """Run a crictl command that must succeed: exit 0 and no error on stderr (warnings are fine)."""
    r = crictl(lab, *args)
    assert r.returncode == 0, (args, r.stderr)
    assert _cri().error_lines(r.stderr) == [], (args, r.stderr)
    return r


def live_json(lab, *args):
    out = ok(lab, *args).stdout
    try:
        return json.loads(out)
    except ValueError as e:
        raise AssertionError("crictl %s: not JSON any more (%s): %r" % (" ".join(args), e, out[:300]))


def assert_same_shape(lab, args, fixture, got):
    diffs = shape_diff(json.loads(rec(lab, fixture)), got, "")
    assert not diffs, "crictl %s changed shape against %s/%s:\n  %s" % (
        " ".join(args), os.path.basename(rec_dir(lab)), fixture, "\n  ".join(diffs))


# --------------------------------------------------------------------------- the shape checker

def test_shape_diff_names_changes():
    rec_ = {"containers": [{"id": "a", "createdAt": "5", "metadata": {"attempt": 0}, "labels": {}}]}
    assert shape_diff(rec_, rec_) == []
    live = {"containers": [{"id": "a", "createdAt": 5, "metadata": {}, "labels": {"x": "y"}, "new": 1}]}
    assert shape_diff(rec_, live) == [
        ".containers[].createdAt: recorded int64 string, live int",
        ".containers[].metadata.attempt: recorded, missing from the live output",
        ".containers[].new: new in the live output"]


# --------------------------------------------------------------------------- read-only listings

@pytest.fixture(scope="module")
def feas_ro(lab):
    from tests import lab as labpkg
    labpkg.reset(lab)
    return labpkg.feas(lab)


def test_version(lab, feas_ro):
    got = ok(lab, "version").stdout.splitlines()
    want = rec(lab, "version.txt").splitlines()
    assert [line.split(":")[0] for line in got] == [line.split(":")[0] for line in want]
    assert got[1] == want[1] == "RuntimeName:  %s" % lab.runtime
    assert got[2] == "RuntimeVersion:  " + lab.version_string
    assert got[3] == want[3] == "RuntimeApiVersion:  v1"


@pytest.mark.containerd_only(reason="imageRef is a repo digest there (imageId the id: test__crio.py, test_crio.py), and "
                                    "ListContainers' createdAt differs from ContainerStatus' by microseconds")
def test_ps_json(lab, feas_ro):
    args = ("ps", "--all", "--output", "json")  # the parser's exact arguments
    got = live_json(lab, *args)
    assert_same_shape(lab, args, "ps-a.json", got)
    s = feas_ro["containers"]
    parsed = {c.name: c for c in (_cri().Container(x) for x in got["containers"])}
    assert set(parsed) == {"exit0", "exit1", "sleeper"}
    for name, c in parsed.items():
        assert c.id == s[name]["id"] and HEX64.match(c.id)
        assert c.created_ns == s[name]["created_at"]  # int64 nanoseconds, from a quoted string
        assert c.pod_id == s[name]["pod_id"]
        assert c.state in CONTAINER_STATES
    assert parsed["sleeper"].state == "CONTAINER_RUNNING"
    assert parsed["exit0"].state == parsed["exit1"].state == "CONTAINER_EXITED"
    # exit0/exit1 run the first busybox:1, whose tag moved: imageRef is the old image's ID
    old = feas_ro["images"]["busybox1_old"]["id"]
    assert parsed["exit0"].image_ref == parsed["exit1"].image_ref == old
    assert parsed["sleeper"].image_ref == feas_ro["images"]["busybox2"]["id"]


def test_pods_json(lab, feas_ro):
    args = ("pods", "--output", "json")
    got = live_json(lab, *args)
    assert_same_shape(lab, args, "pods.json", got)
    parsed = {p.name: p for p in (_cri().Sandbox(x) for x in got["items"])}
    assert set(parsed) == {"feas-a", "feas-b", "feas-c"}
    for name, p in parsed.items():
        assert p.id == feas_ro["pods"][name]["id"] and p.namespace == "feas"
        assert p.created_ns == feas_ro["pods"][name]["created_at"]
        assert p.state in SANDBOX_STATES
    assert parsed["feas-a"].state == "SANDBOX_NOTREADY"
    assert parsed["feas-b"].state == parsed["feas-c"].state == "SANDBOX_READY"
    for item in got["items"]:
        assert isinstance(item["metadata"]["attempt"], int)  # uint32: a JSON number


def test_images_json(lab, feas_ro):
    args = ("images", "--output", "json")
    got = live_json(lab, *args)
    assert_same_shape(lab, args, "images.json", got)
    parsed = {i.id: i for i in (_cri().Image(x) for x in got["images"])}
    im = feas_ro["images"]
    assert set(parsed) == {x["id"] for x in im.values()}
    for i in parsed.values():
        assert i.size > 0
    want = {tuple(x["repoTags"]): x["pinned"] for x in json.loads(rec(lab, "images.json"))["images"]}
    assert {tuple(v.tags): v.pinned for v in parsed.values()} == want  # 1.7 and 2.x pin the sandbox image, 1.6 not
    assert parsed[im["pause"]["id"]].pinned is lab.pins_sandbox_image
    old = parsed[im["busybox1_old"]["id"]]
    assert old.tags == [] and old.digests == [im["busybox1_old"]["digest_ref"]]


def test_imagefsinfo_json(lab, feas_ro):
    args = ("imagefsinfo", "--output", "json")
    got = live_json(lab, *args)
    assert_same_shape(lab, args, "imagefsinfo.json", got)
    fs = got["status"]["imageFilesystems"][0]
    if lab.runtime == "cri-o":   # the storage driver's images directory
        assert fs["fsId"]["mountpoint"] == os.path.join(lab.storage_root, "vfs-images")
    else:
        assert fs["fsId"]["mountpoint"] == os.path.join(lab.base, "root", "io.containerd.snapshotter.v1.overlayfs")
    assert DIGITS.match(fs["usedBytes"]["value"])  # containerd updates usage asynchronously: may be 0


def test_info_json(lab, feas_ro):
    args = ("info", "--output", "json")
    got = live_json(lab, *args)
    want = json.loads(rec(lab, "info.json"))
    assert isinstance(got.get("config"), dict), sorted(got)
    diffs = shape_diff(want["status"], got["status"], ".status")
    assert not diffs, "crictl info changed shape:\n  " + "\n  ".join(diffs)
    conds = {c["type"]: c["status"] for c in got["status"]["conditions"]}
    assert conds["RuntimeReady"] is True
    if lab.reports_sandbox_image:
        # 1.6 and 1.7 report their sandbox image here (as the 1.6.20 recording does); the collection
        # protects it by this name where the runtime does not pin it
        with open(os.path.join(F16, "info.json")) as f:
            recorded = json.load(f)["config"]["sandboxImage"]
        assert got["config"]["sandboxImage"] == recorded == "docker.io/feas/pause:1"
    else:
        # 2.x pins it instead and does not report it (the 2.1.9 recording agrees)
        with open(os.path.join(F21, "info.json")) as f:
            recorded = json.load(f)["config"]
        assert "sandboxImage" not in got["config"] and "sandboxImage" not in recorded


def test_quiet_listings(lab, feas_ro):
    c, p = feas_ro["containers"], feas_ro["pods"]
    got = ok(lab, "ps", "-a", "-q", "--state", "exited").stdout.splitlines()
    assert all(HEX64.match(x) for x in rec(lab, "ps-exited-q.txt").splitlines())
    assert sorted(got) == sorted([c["exit1"]["id"], c["exit0"]["id"]])
    got = ok(lab, "pods", "-q", "--state", "notready").stdout.splitlines()
    assert got == [p["feas-a"]["id"]]


# --------------------------------------------------------------------------- removals

@pytest.mark.containerd_only(reason="CRI-O refuses rmi of an image in use and prints no Deleted: line for a digest-only "
                                    "image (recorded: rmi-inuse.*, rmi-prune.out of the CRI-O recording)")
def test_removal_output_lines(lab, feas_scenario):
    """rm prints the ids, rmp ``Removed sandbox <id>``, rmi ``Deleted: <ref>``, as recorded."""
    c, p = feas_scenario["containers"], feas_scenario["pods"]
    ids = [c["exit1"]["id"], c["exit0"]["id"]]
    r = ok(lab, "rm", *ids)
    assert all(HEX64.match(x) for x in rec(lab, "rm.out").splitlines())
    assert sorted(r.stdout.splitlines()) == sorted(ids)
    r = ok(lab, "rmp", p["feas-a"]["id"])
    line = re.compile(r"^Removed sandbox [0-9a-f]{64}$")
    assert all(line.match(x) for x in rec(lab, "rmp.out").splitlines())
    assert r.stdout.splitlines() == ["Removed sandbox " + p["feas-a"]["id"]]
    r = ok(lab, "rmi", "--prune")
    want = rec(lab, "rmi-prune.out").splitlines()
    line = re.compile(r"^Deleted: \S+$")
    assert all(line.match(x) for x in want)
    assert all(line.match(x) for x in r.stdout.splitlines()), r.stdout
    # the same refs as recorded, digests aside (1.6 also deletes pause:1, 1.7 and 2.x keep it: pinned)
    assert _norm_refs(r.stdout.splitlines()) == _norm_refs(want)
    got = live_json(lab, "images", "--output", "json")
    assert_same_shape(lab, ("images",), "images-after.json", got)
    assert sorted(i["repoTags"] for i in got["images"]) == \
        sorted(i["repoTags"] for i in json.loads(rec(lab, "images-after.json"))["images"])
    # rmi by ID of the running container's image succeeds (containerd allows it), as recorded
    bb2 = feas_scenario["images"]["busybox2"]["id"]
    r = crictl(lab, "rmi", bb2)
    assert r.returncode == int(rec(lab, "rmi-inuse.rc")) == 0, r.stderr
    assert r.stdout == rec(lab, "rmi-inuse.out") == "Deleted: docker.io/feas/busybox:2\n"


def _norm_refs(lines):
    return sorted(re.sub(r"@sha256:[0-9a-f]{64}$", "@sha256:D", x) for x in lines)


def fatal(r, lab):
    """The message of the last stderr line, which must be a failure line at ``failure_level``."""
    lines = r.stderr.splitlines()
    assert lines, "no stderr"
    m = FAILURE.match(lines[-1])
    assert m, "last stderr line is not a level=fatal/error line: %r" % lines[-1]
    assert m.group(1) == failure_level(lab), "crictl's failure line changed level: %r" % lines[-1]
    return m.group(2)


def recorded_fatal(lab, name, mapping):
    m = FAILURE.match(rec(lab, name + ".err").splitlines()[-1])
    assert m and m.group(1) == ("error" if rec_dir(lab) == FCRIO else "fatal"), name  # crictl 1.37.0 / 1.36.0
    msg = m.group(2)
    for theirs, mine in mapping.items():
        msg = msg.replace(theirs, mine)
    return msg


@pytest.mark.containerd_only(reason="CRI-O's messages differ in wording (recorded: rm-missing.err, ...); the parser's "
                                    "reading of them is not runtime-specific")
def test_failure_exit_codes_and_messages(lab, feas_scenario):
    """rm of a running container, rmp of a Ready pod, rm of a missing id: exit 1 and the recorded
    ``level=fatal`` message naming the id (the parser attributes failures to items by their id)."""
    cri = _cri()
    s = feas_scenario
    ready, sleeper = s["pods"]["feas-b"]["id"], s["containers"]["sleeper"]["id"]
    for name, args, theirs, mine in (
            ("rmp-ready", ("rmp", ready), r"[0-9a-f]{64}", ready),
            ("rm-running", ("rm", sleeper), r"[0-9a-f]{64}", sleeper),
            ("rm-missing", ("rm", "deadbeef"), None, None)):
        r = crictl(lab, *args)
        assert r.returncode == int(rec(lab, name + ".rc")) == 1, (name, r.stderr)
        assert r.stdout == rec(lab, name + ".out") == "", name
        want = recorded_fatal(lab, name, {})
        if theirs:
            want = re.sub(theirs, mine, want)
        assert fatal(r, lab) == want, name
        assert any(args[1] in e for e in cri.error_lines(r.stderr)), (name, r.stderr)
    # nothing was removed by the failures
    assert lab.client.pod_sandbox_status(ready).status.id == ready
    assert lab.client.container_status(sleeper).status.id == sleeper


def test_rmp_of_a_missing_id(lab, feas_scenario):
    """Not recorded: rmp of an id that is not there exits 1 with a ``not found`` message naming it
    (the parser counts such an item as already gone, not as failed)."""
    missing = "0" * 64
    r = crictl(lab, "rmp", missing)
    assert r.returncode == 1, r.stderr
    assert r.stdout == ""
    msg = fatal(r, lab)
    assert missing in msg, msg
    assert cri_not_found(msg), msg


def cri_not_found(msg):
    return _cri()._not_found(msg.replace('\\"', '"'))


def test_rm_multi_attempts_all(lab, feas_scenario):
    """Not recorded: one rm with a removable and a running id removes the first, prints it, exits 1
    with a message naming the other (what the batched removals of the collection rely on)."""
    c = feas_scenario["containers"]
    r = crictl(lab, "rm", c["sleeper"]["id"], c["exit0"]["id"])
    assert r.returncode == 1
    assert r.stdout.splitlines() == [c["exit0"]["id"]]
    assert c["sleeper"]["id"] in fatal(r, lab)
    ids = [x.id for x in lab.client.list_containers()]
    assert c["exit0"]["id"] not in ids and c["sleeper"]["id"] in ids


def test_rmi_of_a_missing_image(lab, feas_scenario):
    """Not recorded: rmi of a present and a missing image removes the first, prints its ``Deleted:``
    line, exits 1, and its failure line names the missing one (crictl 1.37 prints no summary line
    after it)."""
    r = crictl(lab, "rmi", "docker.io/feas/unused:3", "docker.io/feas/nosuch:9")
    assert r.returncode == 1
    assert r.stdout == "Deleted: docker.io/feas/unused:3\n"
    assert any("docker.io/feas/nosuch:9" in e for e in _cri().error_lines(r.stderr)), r.stderr
    assert fatal(r, lab) == "no such image docker.io/feas/nosuch:9"


def test_no_socket(lab, feas_ro):
    nope = os.path.join(lab.base, "nope.sock")
    r = crictl(lab, "-r", "unix://" + nope, "--timeout", "2s", "ps", "-a", "-o", "json")
    assert r.returncode == int(rec(lab, "crictl-nosocket.rc")) == 1
    assert r.stdout == rec(lab, "crictl-nosocket.out") == ""
    want = recorded_fatal(lab, "crictl-nosocket", {"/var/lib/lab/nope.sock": nope})
    assert fatal(r, lab) == want
    # ... which the collection recognises as "containerd does not answer"
    result = type("R", (), {"stderr": r.stderr, "rc": r.returncode})()
    assert "The runtime socket does not answer" in _cri().describe_failure(result, "crictl ps")
