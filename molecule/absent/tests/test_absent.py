"""Verify that timer_state=absent removed everything nodemaint.image_gc.timer installed."""

import os

import pytest

testinfra_hosts = ["podman://" + os.environ.get("NODEMAINT_MOLECULE_INSTANCE", "nodemaint-timer-absent")]

UNIT = "node-image-gc"


@pytest.mark.parametrize("path", [
    "/etc/systemd/system/node-image-gc.service",
    "/etc/systemd/system/node-image-gc.timer",
    "/etc/systemd/system/timers.target.wants/node-image-gc.timer",
    "/etc/systemd/system/node-image-gc-observe.service",
    "/etc/systemd/system/node-image-gc-observe.timer",
    "/etc/systemd/system/timers.target.wants/node-image-gc-observe.timer",
    "/usr/local/sbin/node-image-gc",
    "/usr/local/lib/node-image-gc",
    "/etc/node-image-gc",
    "/var/lib/node-image-gc",
    "/var/lib/node_exporter/textfile_collector/node_image_gc.prom",
])
def test_nothing_left(host, path):
    assert not host.file(path).exists


def test_held_lock_is_left_in_place(host):
    """prepare started a holder of /run/node-image-gc/lock before the uninstall: the file the holder
    has locked must still be the one at that path (else the next run would lock a new file while
    the holder still runs: two runs at once)."""
    holder = "node-image-gc-lock-holder.service"
    pid = host.check_output("systemctl show -p MainPID --value %s", holder).strip()
    assert pid not in ("", "0"), host.run("systemctl status %s", holder).stdout
    fds = host.check_output("ls /proc/%s/fd", pid).split()
    targets = [host.run("readlink /proc/%s/fd/%s", pid, fd).stdout.strip() for fd in fds]
    assert "/run/node-image-gc/lock" in targets, targets       # "... (deleted)" if it had been removed
    # the same inode: a second locker conflicts with the holder (a new file would lock at once)
    assert host.run("flock --nonblock /run/node-image-gc/lock true").rc == 1


def test_units_unknown_to_systemd(host):
    for unit in (UNIT + ".timer", UNIT + ".service", UNIT + "-observe.timer", UNIT + "-observe.service"):
        out = host.check_output("systemctl show -p LoadState,ActiveState %s", unit)
        assert "LoadState=not-found" in out, out
        assert "ActiveState=inactive" in out, out
    assert UNIT not in host.check_output("systemctl list-timers --all --no-pager")


def test_systemd_has_no_pending_reload(host):
    out = host.check_output("systemctl show -p NeedDaemonReload %s.timer", UNIT)
    assert out.strip() == "NeedDaemonReload=no"
