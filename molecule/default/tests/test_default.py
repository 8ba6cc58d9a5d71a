"""Verify nodemaint.image_gc.timer on a Debian 12 instance with systemd as PID 1.

The instance is reached directly with testinfra's podman backend (a few seconds, instead of
about a minute through Ansible). The containerd lab on the Molecule host (tests/lab) is
described by DIR/lab.json; the instance bind-mounts DIR at the same path, so its socket works
from inside the instance too, and the real crictl at /usr/local/bin/crictl (molecule.yml).
"""

import base64
import json
import os
import re
import time

import pytest

INSTANCE = os.environ.get("NODEMAINT_MOLECULE_INSTANCE", "nodemaint-timer-default")
testinfra_hosts = ["podman://" + INSTANCE]

UNIT = "node-image-gc"
LAB_DIR = os.environ.get("NODEMAINT_MOLECULE_LAB_DIR", "/var/lib/nodemaint-molecule/default")
PHASES = ("containers", "sandboxes", "images", "content")
CRICTL = "/usr/local/bin/crictl"


@pytest.fixture(scope="module")
def lab():
    with open(os.path.join(LAB_DIR, "lab.json")) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def scenario(lab):
    return lab["scenario"]


def show(host, unit, *props):
    out = host.check_output("systemctl show %s -p %s", unit, ",".join(props))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def crictl_json(host, lab, *args):
    cmd = "%s -r %s " % (CRICTL, lab["endpoint"]) + " ".join(args) + " -o json"
    return json.loads(host.check_output(cmd))


# --------------------------------------------------------------------------- installation

def test_files(host):
    for path, mode in (
        ("/usr/local/sbin/node-image-gc", 0o755),
        ("/etc/node-image-gc/config.json", 0o644),
        ("/etc/systemd/system/node-image-gc.service", 0o644),
        ("/etc/systemd/system/node-image-gc.timer", 0o644),
        ("/usr/local/lib/node-image-gc/nodemaint_image_gc/_runner.py", 0o644),
    ):
        f = host.file(path)
        assert f.is_file, path
        assert f.user == "root" and f.mode == mode, path
    assert host.file("/usr/local/sbin/node-image-gc").content_string.startswith("#!/usr/bin/python3\n")
    assert host.file("/var/lib/node-image-gc").is_directory


def test_config(host, lab):
    config = json.loads(host.file("/etc/node-image-gc/config.json").content_string)
    assert config["crictl_path"] == CRICTL
    assert config["runtime_endpoint"] == lab["endpoint"]
    assert config["containerd_address"] == lab["socket"]
    assert config["textfile_path"] == "/var/lib/node_exporter/textfile_collector/node_image_gc.prom"
    assert config["report_path"] == "/var/lib/node-image-gc/last-run.json"
    assert None not in config.values()


def test_status_without_run_is_usage_clean(host):
    # `status` exits 0 (a report exists) or 1 (none yet), never 2 (bad config/usage).
    assert host.run("/usr/local/sbin/node-image-gc status").rc in (0, 1)


# --------------------------------------------------------------------------- timer

def test_timer_enabled_and_waiting(host):
    props = show(host, UNIT + ".timer", "LoadState", "UnitFileState", "ActiveState", "SubState")
    assert props == {"LoadState": "loaded", "UnitFileState": "enabled",
                     "ActiveState": "active", "SubState": "waiting"}
    assert host.service(UNIT + ".timer").is_enabled


def test_timer_next_elapse(host):
    unit = host.file("/etc/systemd/system/node-image-gc.timer").content_string
    assert "OnCalendar=*-*-* 00/6:00:00" in unit
    assert "RandomizedDelaySec=30m" in unit and "Persistent=true" in unit
    assert "WantedBy=timers.target" in unit
    nxt = show(host, UNIT + ".timer", "NextElapseUSecRealtime")["NextElapseUSecRealtime"]
    assert nxt, "no next elapse"
    elapse = int(host.check_output("date -d %s +%%s", nxt))
    now = int(host.check_output("date +%s"))
    assert now < elapse <= now + 6 * 3600 + 30 * 60, nxt


# --------------------------------------------------------------------------- service unit

def test_service_hardening(host):
    props = show(host, UNIT + ".service", "Type", "NoNewPrivileges", "ProtectSystem", "ProtectHome",
                 "PrivateTmp", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                 "ProtectControlGroups", "RestrictSUIDSGID", "LockPersonality", "RestrictRealtime",
                 "SystemCallArchitectures", "Nice", "IOSchedulingClass", "CPUSchedulingPolicy",
                 "ReadWritePaths", "TimeoutStartUSec", "UnitFileState", "RuntimeDirectory",
                 "RuntimeDirectoryPreserve")
    assert props["Type"] == "oneshot"
    assert props["UnitFileState"] == "static"  # no [Install]: only the timer starts it
    for name in ("NoNewPrivileges", "PrivateTmp", "ProtectKernelTunables", "ProtectKernelModules",
                 "ProtectKernelLogs", "ProtectControlGroups", "RestrictSUIDSGID", "LockPersonality",
                 "RestrictRealtime"):
        assert props[name] == "yes", name
    assert props["ProtectSystem"] == "strict"
    assert props["ProtectHome"] == "yes"
    assert props["SystemCallArchitectures"] == "native"
    assert props["Nice"] == "19"
    assert props["IOSchedulingClass"] in ("idle", "3")
    assert props["CPUSchedulingPolicy"] in ("batch", "3")
    rw = props["ReadWritePaths"].split()
    for path in ("/var/lib/node-image-gc", "/run/node-image-gc", "/var/lib/node_exporter/textfile_collector"):
        assert path in rw, props["ReadWritePaths"]
    assert "/run" not in rw, "all of /run is writable: " + props["ReadWritePaths"]
    # the lock's directory exists before the sandbox is set up, and outlives the run
    assert props["RuntimeDirectory"] == "node-image-gc"
    assert props["RuntimeDirectoryPreserve"] == "yes"
    assert props["TimeoutStartUSec"] == "1h"


def test_service_sandbox_is_tight(host):
    """What the runner needs is only unix sockets and its own files: no capability, no network,
    no devices, the system-service system calls (the real run below shows it works)."""
    props = show(host, UNIT + ".service", "CapabilityBoundingSet", "PrivateNetwork", "RestrictAddressFamilies",
                 "PrivateDevices", "DevicePolicy", "MemoryDenyWriteExecute", "SystemCallFilter",
                 "SystemCallErrorNumber", "IPAddressDeny", "ProtectClock", "ProtectHostname", "PrivateMounts",
                 "RestrictNamespaces", "RemoveIPC", "UMask", "ReadWritePaths", "CPUQuotaPerSecUSec",
                 "MemoryMax", "ProtectProc")
    assert props["CapabilityBoundingSet"] == "", props["CapabilityBoundingSet"]
    for name in ("PrivateNetwork", "PrivateDevices", "MemoryDenyWriteExecute", "ProtectClock", "ProtectHostname",
                 "PrivateMounts", "RemoveIPC"):
        assert props[name] == "yes", (name, props[name])
    assert props["RestrictAddressFamilies"] == "AF_UNIX"
    assert props["DevicePolicy"] == "closed"
    assert props["IPAddressDeny"]  # any: "0.0.0.0/0 ::/0"
    assert props["RestrictNamespaces"] == "yes"
    assert props["UMask"] == "0077"
    # an allow list (no leading "~"), without the privileged calls
    assert props["SystemCallFilter"] and not props["SystemCallFilter"].startswith("~")
    for call in ("reboot", "mount", "init_module", "settimeofday", "setuid"):
        assert call not in props["SystemCallFilter"].split(), call
    # /proc stays visible: the content phase looks for a running Spegel there
    assert props["ProtectProc"] == "default"
    # k3s crictl/ctr unpack k3s's tools under /var/lib/rancher/k3s/data after an upgrade
    assert "-/var/lib/rancher/k3s/data" in props["ReadWritePaths"].split(), props["ReadWritePaths"]
    assert "/var/lib/rancher" not in props["ReadWritePaths"].split()
    # no resource limits unless timer_cpu_quota / timer_memory_max are set
    assert props["CPUQuotaPerSecUSec"] == "infinity"
    assert props["MemoryMax"] == "infinity"


def test_service_exposure_score(host):
    """systemd's own rating of the rendered unit: 3.0 or lower (the first release rated 6.3)."""
    out = host.run("systemd-analyze security --offline=yes --no-pager /etc/systemd/system/%s.service", UNIT)
    text = out.stdout + out.stderr
    match = re.search(r"Overall exposure level for \S+: ([0-9]+\.[0-9]+) (\w+)", text)
    assert match, text
    assert float(match.group(1)) <= 3.0, text


# --------------------------------------------------------------------------- a real run

def garbage_present(host, lab, scenario):
    """The scenario's garbage that the lab still lists: {phase: set of ids}. exit1 (exited in the
    Ready pod feas-exit) is no garbage: the newest exited instance of a container of a live pod
    stays (pod_aware, the kubelet's rules), and its image exitonly with it."""
    expected = scenario["expected"]
    containers = {c["id"] for c in crictl_json(host, lab, "ps", "-a")["containers"]}
    pods = {p["id"] for p in crictl_json(host, lab, "pods")["items"]}
    images = {i["id"] for i in crictl_json(host, lab, "images")["images"]}
    keep = {scenario["images"][k]["id"] for k in ("busybox2", "pause", "keep", "exitonly")}
    return {
        "containers": containers & (set(expected["exited_container_ids"]) - {scenario["containers"]["exit1"]["id"]}),
        "sandboxes": pods & set(expected["notready_old_pod_ids"]),
        "images": images & (set(expected["unused_after_gc_image_ids"]) - keep),
    }


@pytest.fixture(scope="module")
def run(host, lab, scenario):
    """Start node-image-gc.service once (systemctl waits for a oneshot) and collect its journal.

    On a fresh lab all the garbage is there; a repeated `molecule verify` finds less."""
    before = garbage_present(host, lab, scenario)
    # A journal cursor from before the run: the journal of exactly this run follows it.
    cursor = host.check_output("journalctl --show-cursor -n 0 -q --no-pager").split("cursor:", 1)[1].strip()
    started = host.run("systemctl start %s.service", UNIT)
    props = show(host, UNIT + ".service", "Result", "ExecMainStatus", "ActiveState")
    journal = ""
    for _attempt in range(20):  # journald may need a moment to store the last lines
        journal = host.run("journalctl -u %s.service -o cat --no-pager --after-cursor %s",
                           UNIT, cursor).stdout
        if '"event": "end"' in journal:
            break
        time.sleep(0.5)
    events = []
    for line in journal.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
    return {"started": started, "props": props, "journal": journal, "events": events, "before": before}


def test_service_run_succeeds(run):
    assert run["started"].rc == 0, run["started"].stderr + run["journal"]
    assert run["props"]["Result"] == "success", run["journal"]
    assert run["props"]["ExecMainStatus"] == "0", run["journal"]
    assert run["props"]["ActiveState"] == "inactive"


def test_journal_has_json_events(run):
    kinds = [(e["event"], e.get("when") or e.get("phase")) for e in run["events"]]
    assert kinds[0] == ("start", None), run["journal"]
    assert ("disk", "before") in kinds and ("disk", "after") in kinds, run["journal"]
    phases = {e["phase"]: e for e in run["events"] if e["event"] == "phase"}
    assert set(phases) == set(PHASES), run["journal"]
    for name, event in phases.items():
        assert event["status"] == "ok", (name, event)
    end = [e for e in run["events"] if e["event"] == "end"]
    assert end and end[-1]["status"] == "ok", run["journal"]
    for name, ids in run["before"].items():
        assert ids <= set(phases[name]["ids"]), (name, ids, phases[name])
        assert phases[name]["removed"] == len(phases[name]["ids"])


def test_report_and_metrics(host, run):
    report = host.file("/var/lib/node-image-gc/last-run.json")
    assert report.is_file
    json.loads(report.content_string)
    status = host.run("/usr/local/sbin/node-image-gc status")
    assert status.rc == 0, status.stdout + status.stderr
    prom = host.file("/var/lib/node_exporter/textfile_collector/node_image_gc.prom")
    assert prom.is_file
    assert "node_image_gc" in prom.content_string


def test_garbage_was_there(run):
    # Only meaningful on a fresh lab (as in `molecule test`); `molecule verify` again skips it.
    if not any(run["before"].values()):
        pytest.skip("the lab's garbage was already removed by an earlier verify")
    assert len(run["before"]["containers"]) == 1       # exit0; exit1 of the Ready pod is kept
    assert len(run["before"]["sandboxes"]) == 2
    assert len(run["before"]["images"]) >= 4


def test_garbage_is_gone(host, lab, scenario, run):
    left = garbage_present(host, lab, scenario)
    assert left == {"containers": set(), "sandboxes": set(), "images": set()}


def test_running_workload_is_kept(host, lab, scenario, run):
    expected = scenario["expected"]
    containers = {c["id"]: c for c in crictl_json(host, lab, "ps", "-a")["containers"]}
    pods = {p["id"]: p for p in crictl_json(host, lab, "pods")["items"]}
    images = {i["id"] for i in crictl_json(host, lab, "images")["images"]}
    for cid in expected["running_container_ids"]:
        assert containers[cid]["state"] == "CONTAINER_RUNNING"
    for pid in expected["ready_pod_ids"]:
        assert pods[pid]["state"] == "SANDBOX_READY"
    assert scenario["images"]["busybox2"]["id"] in images  # the running container's image
    assert scenario["images"]["pause"]["id"] in images  # the sandbox image
    assert scenario["images"]["keep"]["id"] in images  # timer_image_exclude
    # the newest exited instance of a container of a live pod, and its image (pod_aware)
    assert containers[scenario["containers"]["exit1"]["id"]]["state"] == "CONTAINER_EXITED"
    assert scenario["images"]["exitonly"]["id"] in images


# --------------------------------------------------------------------------- the kubelet root

KUBELET_POD_UID = "5d0c6a9e-molecule-kubelet-root"
PROBE = r"""
import sys
sys.path.insert(0, '/usr/local/lib/node-image-gc')
from nodemaint_image_gc._discovery import Discovery
from nodemaint_image_gc._node import Node
root, source = Discovery().find_kubelet_root(None, [])
print('kubelet-root-probe', root, source, Node(None, None, root).tracked(sys.argv[1]))
"""


def test_the_hardened_service_reads_the_kubelet_root(host):
    """The service's sandbox (ProtectSystem=strict, ProtectHome=, no capabilities) must still let
    the runner find the kubelet root and see a pod directory in it, as the kubelet creates them
    (root-owned, 0750). The runner's own discovery and node code run as the unit's ExecStart,
    through a drop-in that keeps every other setting of the unit."""
    dropin = "/run/systemd/system/%s.service.d/50-kubelet-root-probe.conf" % UNIT
    script = "/run/node-image-gc-kubelet-root-probe.py"     # not /tmp: PrivateTmp= hides it
    host.check_output("install -d -m 0700 /var/lib/kubelet && install -d -m 0750 /var/lib/kubelet/pods/%s",
                      KUBELET_POD_UID)
    host.check_output("install -d %s", os.path.dirname(dropin))
    for path, text in ((script, PROBE.lstrip()),
                       (dropin, "[Service]\nExecStart=\nExecStart=/usr/bin/python3 %s %s\n" % (script, KUBELET_POD_UID))):
        host.check_output("echo %s | base64 -d > %s", base64.b64encode(text.encode()).decode(), path)
    try:
        host.check_output("systemctl daemon-reload")
        cursor = host.check_output("journalctl --show-cursor -n 0 -q --no-pager").split("cursor:", 1)[1].strip()
        started = host.run("systemctl start %s.service", UNIT)
        journal = ""
        for _attempt in range(20):
            journal = host.run("journalctl -u %s.service -o cat --no-pager --after-cursor %s", UNIT, cursor).stdout
            if "kubelet-root-probe" in journal:
                break
            time.sleep(0.5)
        assert started.rc == 0, started.stderr + journal
        assert ("kubelet-root-probe /var/lib/kubelet well-known kubelet root (True, '/var/lib/kubelet/pods/%s')"
                % KUBELET_POD_UID) in journal, journal
    finally:
        host.run("rm -f %s %s", dropin, script)
        host.run("systemctl daemon-reload")
        host.run("rm -rf /var/lib/kubelet")
