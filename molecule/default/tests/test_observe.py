"""Verify the observation pass of nodemaint.image_gc.timer (issue 26): node-image-gc-observe.timer
runs node-image-gc-observe.service, which lists the lab's containers and images and writes the
last-use record, at idle priority, in the same sandbox as the run, without waiting for the run lock.

Runs after test_default.py (file order): the lab's garbage is gone, its running container stays.
"""

import json
import os
import re
import time

import pytest

INSTANCE = os.environ.get("NODEMAINT_MOLECULE_INSTANCE", "nodemaint-timer-default")
testinfra_hosts = ["podman://" + INSTANCE]

UNIT = "node-image-gc-observe"
LAB_DIR = os.environ.get("NODEMAINT_MOLECULE_LAB_DIR", "/var/lib/nodemaint-molecule/default")
CRICTL = "/usr/local/bin/crictl"
RECORD = "/var/lib/node-image-gc/images.json"
RUN_LOCK = "/run/node-image-gc/lock"


@pytest.fixture(scope="module")
def lab():
    with open(os.path.join(LAB_DIR, "lab.json")) as handle:
        return json.load(handle)


def show(host, unit, *props):
    out = host.check_output("systemctl show %s -p %s", unit, ",".join(props))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def crictl_json(host, lab, *args):
    return json.loads(host.check_output("%s -r %s %s -o json" % (CRICTL, lab["endpoint"], " ".join(args))))


def test_observe_units_installed(host):
    for path in ("/etc/systemd/system/%s.service" % UNIT, "/etc/systemd/system/%s.timer" % UNIT):
        f = host.file(path)
        assert f.is_file and f.user == "root" and f.mode == 0o644, path


def test_observe_timer_enabled_waiting_and_already_ran(host):
    props = show(host, UNIT + ".timer", "LoadState", "UnitFileState", "ActiveState", "SubState", "LastTriggerUSec",
                 "NextElapseUSecMonotonic")
    assert (props["LoadState"], props["UnitFileState"], props["ActiveState"], props["SubState"]) == (
        "loaded", "enabled", "active", "waiting"), props
    # OnBootSec= was in the past when the role started the timer: it ran a first pass at once
    assert props["LastTriggerUSec"] not in ("", "n/a", "0"), props
    unit = host.file("/etc/systemd/system/%s.timer" % UNIT).content_string
    assert "OnUnitActiveSec=5min" in unit and "WantedBy=timers.target" in unit


def test_observe_service_idle_priority_and_sandbox(host):
    props = show(host, UNIT + ".service", "Type", "UnitFileState", "Nice", "IOSchedulingClass", "CPUSchedulingPolicy",
                 "CapabilityBoundingSet", "NoNewPrivileges", "ProtectSystem", "PrivateNetwork",
                 "RestrictAddressFamilies", "ReadWritePaths", "ExecStart")
    assert props["Type"] == "oneshot"
    assert props["UnitFileState"] == "static"          # only the timer starts it
    assert props["Nice"] == "19"
    assert props["IOSchedulingClass"] in ("idle", "3")
    assert props["CPUSchedulingPolicy"] in ("idle", "5")
    assert props["CapabilityBoundingSet"] == ""
    assert props["NoNewPrivileges"] == "yes" and props["ProtectSystem"] == "strict"
    assert props["PrivateNetwork"] == "yes" and props["RestrictAddressFamilies"] == "AF_UNIX"
    rw = props["ReadWritePaths"].split()
    assert "/var/lib/node-image-gc" in rw and "/var/lib/node_exporter/textfile_collector" in rw, rw
    assert "/run/node-image-gc" not in rw, "the observation pass never takes the run lock: %s" % rw
    assert " observe " in props["ExecStart"] + " ", props["ExecStart"]


def test_observe_service_exposure_score(host):
    out = host.run("systemd-analyze security --offline=yes --no-pager /etc/systemd/system/%s.service", UNIT)
    text = out.stdout + out.stderr
    match = re.search(r"Overall exposure level for \S+: ([0-9]+\.[0-9]+) (\w+)", text)
    assert match, text
    assert float(match.group(1)) <= 3.0, text


@pytest.fixture(scope="module")
def observed(host, lab):
    """One pass started by hand, from no record, while another process holds the run lock (as a
    run does for minutes): the pass must not wait for it."""
    host.check_output("rm -f %s", RECORD)
    host.check_output("systemd-run --unit=node-image-gc-lock-holder-observe --collect flock %s sleep 300", RUN_LOCK)
    try:
        for _attempt in range(50):
            if host.run("flock --nonblock %s true", RUN_LOCK).rc == 1:
                break
            time.sleep(0.1)
        assert host.run("flock --nonblock %s true", RUN_LOCK).rc == 1, "the lock holder did not take the run lock"
        cursor = host.check_output("journalctl --show-cursor -n 0 -q --no-pager").split("cursor:", 1)[1].strip()
        began = time.monotonic()
        started = host.run("systemctl start %s.service", UNIT)
        took = time.monotonic() - began
    finally:
        host.run("systemctl stop node-image-gc-lock-holder-observe.service")
    journal = ""
    for _attempt in range(20):
        journal = host.run("journalctl -u %s.service -o cat --no-pager --after-cursor %s", UNIT, cursor).stdout
        if '"event": "observe"' in journal:
            break
        time.sleep(0.5)
    events = [json.loads(line) for line in journal.splitlines() if line.strip().startswith("{")]
    return {"started": started, "took": took, "journal": journal, "events": events,
            "props": show(host, UNIT + ".service", "Result", "ExecMainStatus")}


def test_observe_pass_succeeds_without_waiting_for_the_run_lock(observed):
    assert observed["started"].rc == 0, observed["started"].stderr + observed["journal"]
    assert observed["props"] == {"Result": "success", "ExecMainStatus": "0"}, observed["journal"]
    # lock_wait is 10 minutes: a pass that waited for the held run lock would take that long
    assert observed["took"] < 60, observed["took"]
    kinds = [e["event"] for e in observed["events"]]
    assert kinds == ["observe"], observed["journal"]
    event = observed["events"][0]
    assert event["status"] == "ok" and event["record"] == "written", event
    assert event["crictl_calls"] == 2, event                  # one `ps -a`, one `images`


def test_observe_pass_writes_the_record(host, lab, observed):
    record = json.loads(host.file(RECORD).content_string)
    assert record["version"] == 2, record
    now = int(host.check_output("date +%s"))
    images = {i["id"] for i in crictl_json(host, lab, "images")["images"]}
    assert images and images <= set(record["images"]), (images, sorted(record["images"]))
    # first seen by this pass (a minute ago at most), or earlier when a container created before
    # shows the image was there then (the earliest such creation)
    created = {}
    for c in crictl_json(host, lab, "ps", "-a")["containers"]:
        created[c["imageRef"]] = min(created.get(c["imageRef"], now), int(c["createdAt"]) // 10 ** 9)
    for image_id in images:
        first = record["images"][image_id]["first_seen"]
        assert now - 120 <= first <= now or first == created.get(image_id), (record["images"][image_id], created)
    running = [c for c in crictl_json(host, lab, "ps")["containers"] if c["state"] == "CONTAINER_RUNNING"]
    assert running, "the lab has no running container"
    for c in running:
        entry = record["images"][c["imageRef"]]
        assert entry["last_used"] is not None and now - 120 <= entry["last_used"] <= now, entry


def test_a_second_pass_with_nothing_new_leaves_the_record_alone(host, observed):
    before = host.check_output("stat -c %%Y.%%i %s", RECORD)
    cursor = host.check_output("journalctl --show-cursor -n 0 -q --no-pager").split("cursor:", 1)[1].strip()
    assert host.run("systemctl start %s.service", UNIT).rc == 0
    journal = ""
    for _attempt in range(20):
        journal = host.run("journalctl -u %s.service -o cat --no-pager --after-cursor %s", UNIT, cursor).stdout
        if '"event": "observe"' in journal:
            break
        time.sleep(0.5)
    event = [json.loads(line) for line in journal.splitlines() if line.strip().startswith("{")][-1]
    assert event["record"] == "unchanged", event
    assert host.check_output("stat -c %%Y.%%i %s", RECORD) == before
