"""Verify that timer_state=absent removed everything nodemaint.image_gc.timer installed."""

import os

import pytest

testinfra_hosts = ["podman://" + os.environ.get("NODEMAINT_MOLECULE_INSTANCE", "nodemaint-timer-absent")]

UNIT = "node-image-gc"


@pytest.mark.parametrize("path", [
    "/etc/systemd/system/node-image-gc.service",
    "/etc/systemd/system/node-image-gc.timer",
    "/etc/systemd/system/timers.target.wants/node-image-gc.timer",
    "/usr/local/sbin/node-image-gc",
    "/usr/local/lib/node-image-gc",
    "/etc/node-image-gc",
    "/var/lib/node-image-gc",
    "/var/lib/node_exporter/textfile_collector/node_image_gc.prom",
    "/run/node-image-gc/lock",
    "/run/node-image-gc",
])
def test_nothing_left(host, path):
    assert not host.file(path).exists


def test_units_unknown_to_systemd(host):
    for unit in (UNIT + ".timer", UNIT + ".service"):
        out = host.check_output("systemctl show -p LoadState,ActiveState %s", unit)
        assert "LoadState=not-found" in out, out
        assert "ActiveState=inactive" in out, out
    assert UNIT not in host.check_output("systemctl list-timers --all --no-pager")


def test_systemd_has_no_pending_reload(host):
    out = host.check_output("systemctl show -p NeedDaemonReload %s.timer", UNIT)
    assert out.strip() == "NeedDaemonReload=no"
