"""The test lab itself: teardown leaves nothing behind, scenarios hold what they promise,
images are deterministic, the CLI works, and the lab is driven by the real crictl."""

import json
import base64
import os
import subprocess
import sys
import time

import pytest

from tests import lab as labpkg
from tests.lab import images as img
from tests.lab import lab as labmod

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _alive(pid):
    return labmod._pid_alive(pid)


# --------------------------------------------------------------------------- no root needed

def test_images_deterministic():
    a, b = img.build("docker.io/feas/x:1"), img.build("docker.io/feas/x:1")
    assert (a.image_id, a.manifest_digest) == (b.image_id, b.manifest_digest)
    assert img.layout_tar([a]) == img.layout_tar([b])
    c = img.build("docker.io/feas/y:1")
    d = img.build("docker.io/feas/x:1", variant="retagged")
    assert len({a.image_id, c.image_id, d.image_id}) == 3
    assert a.digest_ref == "docker.io/feas/x@" + a.manifest_digest


def test_api_desc_matches_proto(tmp_path):
    grpc_tools = pytest.importorskip("grpc_tools")
    from google.protobuf import descriptor_pb2
    out = tmp_path / "api.desc"
    here = os.path.join(ROOT, "tests", "lab")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", here,
                    "--descriptor_set_out=" + str(out), os.path.join(here, "api.proto")],
                   check=True)
    fresh, committed = descriptor_pb2.FileDescriptorSet(), descriptor_pb2.FileDescriptorSet()
    fresh.ParseFromString(out.read_bytes())
    with open(os.path.join(here, "api.desc.b64"), "rb") as f:
        committed.ParseFromString(base64.b64decode(f.read()))
    assert fresh == committed, "api.desc.b64 is stale: run python -m tests.lab regen-proto"
    del grpc_tools


# --------------------------------------------------------------------------- real containerd

@pytest.mark.matrix  # sandbox image pinned or not, per line
@pytest.mark.containerd_only(reason="the scenario's digest-only image is made with ctr tags")
def test_scenario_has_promised_objects(lab, scenario):
    s = scenario
    c = lab.client
    pods = {p.id: p for p in c.list_pod_sandbox()}
    assert set(pods) == {p["id"] for p in s["pods"].values()}
    for name, p in s["pods"].items():
        want = 0 if p["role"].startswith("ready") else 1
        assert pods[p["id"]].state == want, name
        assert pods[p["id"]].metadata.name == name
    olds = [s["pods"][n]["created_at"] for n in ("feas-old-a", "feas-old-b")]
    youngs = [s["pods"][n]["created_at"] for n in ("feas-young-a", "feas-young-b")]
    assert max(olds) < s["cutoff_ns"] < min(youngs)
    assert (min(youngs) - max(olds)) / 1e9 >= s["gap"] * 0.9
    age = labpkg.min_age_between(s)
    now = time.time_ns()
    assert all((now - t) / 1e9 > age for t in olds)
    assert all((now - t) / 1e9 < age for t in youngs)

    ctrs = {x.id: x for x in c.list_containers()}
    assert set(ctrs) == {x["id"] for x in s["containers"].values()}
    sc = s["containers"]
    assert ctrs[sc["sleeper"]["id"]].state == 1
    for n, code in (("exit0", 0), ("exit1", 1)):
        st = c.container_status(sc[n]["id"]).status
        assert st.state == 2 and st.exit_code == code, n
    assert pods[sc["exit1"]["pod_id"]].state == 0  # exit 1 in a Ready pod
    assert pods[sc["exit0"]["pod_id"]].state == 1  # exit 0 in a NotReady pod

    ims = {i.id: i for i in c.list_images()}
    si = s["images"]
    assert set(ims) == {i["id"] for i in si.values()}
    old = ims[si["busybox1_old"]["id"]]
    assert list(old.repo_tags) == [] and list(old.repo_digests) == [si["busybox1_old"]["digest_ref"]]
    assert list(ims[si["busybox1"]["id"]].repo_tags) == ["docker.io/feas/busybox:1"]
    assert list(ims[si["keep"]["id"]].repo_tags) == [s["excluded_image"]]
    assert list(ims[si["pause"]["id"]].repo_tags) == ["docker.io/feas/pause:1"]
    # containerd 1.6 does not pin the sandbox image, 1.7 and 2.x do (lab-facts, fixture READMEs, Lab)
    assert ims[si["pause"]["id"]].pinned is lab.pins_sandbox_image
    assert s["expected"]["pinned_image_ids"] == ([si["pause"]["id"]] if lab.pins_sandbox_image else [])
    used = {x.image_ref for x in ctrs.values()}
    assert si["exitonly"]["id"] in used and si["notready"]["id"] in used
    assert si["unused3"]["id"] not in used and si["keep"]["id"] not in used
    prunable = ("busybox1_old", "busybox1", "unused3", "keep") + (() if lab.pins_sandbox_image else ("pause",))
    assert set(s["expected"]["prune_image_ids"]) == {si[k]["id"] for k in prunable}
    json.dumps(s)  # plain data


def test_reset_empties_everything(lab, scenario):
    labpkg.reset(lab)
    c = lab.client
    assert c.list_pod_sandbox() == [] and c.list_containers() == [] and c.list_images() == []


def test_lab_uses_the_real_crictl(lab):
    assert lab.crictl_bin == labpkg.find_crictl()
    assert labpkg.crictl_version(lab.crictl_bin), "not a cri-tools build: " + lab.crictl_bin
    with open(lab.crictl_bin, "rb") as f:
        assert f.read(4) == b"\x7fELF", "crictl is not a compiled binary: " + lab.crictl_bin


@pytest.mark.matrix
@pytest.mark.containerd_only(reason="the containerd binaries of the line; CRI-O's version: test_crio.py")
def test_lab_runs_the_requested_containerd(lab, feas_scenario):
    r = subprocess.run([lab.ctr_bin, "--address", lab.socket, "version"], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stderr
    server = r.stdout.split("Server:", 1)[1]
    assert "Version:  " + lab.version_string in server
    if lab.containerd_dir:
        assert lab.version[:2] >= (1, 7)  # not Debian 12's 1.6
        # the shim of the same build, found through containerd's PATH
        assert labmod.shim_pids(lab.socket)
        assert all(labmod._cmdline(p)[0].decode().startswith(lab.containerd_dir)
                   for p in labmod.shim_pids(lab.socket))


def test_env_for_subprocesses(lab):
    e = lab.env()
    assert e["PATH"].split(os.pathsep)[0] == lab.bin_dir
    assert e["CONTAINER_RUNTIME_ENDPOINT"] == e["IMAGE_SERVICE_ENDPOINT"] == lab.endpoint
    assert lab.endpoint == "unix://" + lab.socket and lab.ctr_argv[-1] == lab.socket
    r = subprocess.run(["crictl", "version"], env=e, capture_output=True, text=True, check=False)
    assert r.returncode == 0 and "RuntimeName:  containerd" in r.stdout, r.stderr
    r = subprocess.run(["ctr", "-n", "k8s.io", "content", "ls", "-q"], env=e,
                       capture_output=True, text=True, check=False)  # CONTAINERD_ADDRESS
    assert r.returncode == 0, r.stderr


def _private_lab(lab):
    """A second lab on the same containerd build as the session's (started after it)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    return labpkg.Lab(containerd_dir=lab.containerd_dir).start()


@pytest.mark.matrix  # shims differ per line
@pytest.mark.containerd_only(reason="shims; CRI-O's teardown (conmons, mounts, socket): test_crio.py")
def test_teardown_leaves_nothing(lab):
    # lab: only to get the prerequisite checks of the session fixture
    l2 = _private_lab(lab)
    try:
        labpkg.feas(l2)
        shims = labmod.shim_pids(l2.socket)
        assert shims, "a running container should have a shim"
        assert labmod.mounts_under(l2.base), "rootfs/netns mounts expected while running"
        pid = l2.pid
    finally:
        errs = l2.stop()
    assert errs == []
    assert not _alive(pid)
    assert not any(_alive(p) for p in shims)
    assert l2.leftovers() == {"containerd": [], "shims": [], "mounts": []}
    assert labmod.mounts_under(l2.base) == []
    assert not os.path.exists(l2.base)


def test_kill_restart_then_teardown(lab):
    l2 = _private_lab(lab)
    try:
        s = labpkg.feas(l2)
        shims = labmod.shim_pids(l2.socket)
        old = l2.pid
        l2.kill()
        assert not _alive(old)
        assert all(_alive(p) for p in shims), "shims outlive containerd"
        r = l2.crictl("ps", "-a")
        assert r.returncode == 1 and "validate service connection" in r.stderr
        l2.restart()
        assert l2.pid != old
        ids = {x.id for x in l2.client.list_containers()}
        assert ids == {x["id"] for x in s["containers"].values()}
    finally:
        errs = l2.stop()
    assert errs == []
    assert l2.leftovers() == {"containerd": [], "shims": [], "mounts": []}


def test_cli_up_status_down(lab, tmp_path):
    d = str(tmp_path / "clilab")
    py = sys.executable
    env = dict(os.environ, PYTHONPATH=ROOT)
    extra = ["--containerd-dir", lab.containerd_dir] if lab.containerd_dir else []
    up = subprocess.run([py, "-m", "tests.lab", "up", "--dir", d, "--scenario", "feas"] + extra,
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    try:
        assert up.returncode == 0, up.stderr
        with open(os.path.join(d, "lab.json")) as f:
            info = json.load(f)
        assert info["socket"] == os.path.join(d, "containerd.sock")
        assert info["endpoint"] == "unix://" + info["socket"]
        assert labmod._pid_alive(info["pid"])
        assert set(info["scenario"]["pods"]) == {"feas-a", "feas-b", "feas-c"}
        st = subprocess.run([py, "-m", "tests.lab", "status", "--dir", d], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=False)
        assert st.returncode == 0 and json.loads(st.stdout)["answers"] is True
        assert info["containerd_version"] == lab.version_string
        assert info["crictl"] == lab.crictl_bin
        # the real crictl, against the CLI's lab
        r = subprocess.run([lab.crictl_bin, "-r", info["endpoint"], "pods", "-q"],
                           capture_output=True, text=True, cwd="/", check=False)
        assert r.returncode == 0, r.stderr
        assert sorted(r.stdout.split()) == sorted(
            p["id"] for p in info["scenario"]["pods"].values())
        # status of an attached lab knows its binaries
        assert labmod.Lab.attach(d).containerd_bin == lab.containerd_bin
    finally:
        dn = subprocess.run([py, "-m", "tests.lab", "down", "--dir", d], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert dn.returncode == 0, dn.stdout + dn.stderr
    assert json.loads(dn.stdout)["leftovers"] == {"containerd": [], "shims": [], "mounts": []}
    assert not labmod._pid_alive(info["pid"])


def test_big_small(lab):
    labpkg.reset(lab)
    t = time.time()
    b = labpkg.big(lab, containers=12, sandboxes=5, images=7, per_pod=5)
    assert time.time() - t < 120
    c = lab.client
    exited = {x.id for x in c.list_containers(state=2)}
    assert set(b["container_ids"]) <= exited and len(b["container_ids"]) == 12
    nr = {p.id for p in c.list_pod_sandbox(state=1)}
    assert set(b["notready_pod_ids"]) == nr and len(nr) == 5
    ims = {i.id for i in c.list_images()}
    assert set(b["image_ids"]) <= ims and len(set(b["image_ids"])) == 7
    labpkg.reset(lab)
