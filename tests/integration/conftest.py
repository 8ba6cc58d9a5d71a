"""Fixtures for tests against a real, private containerd (the test lab, tests/lab).

- ``lab`` (session): containerd started in a fresh temp dir, always torn down.
- ``scenario`` (function): reset + the standard garbage state (tests.lab.scenario()).
- ``feas_scenario`` (function): reset + the recorded fixture scenario (feas-a/b/c).
- ``lab_env`` (function): environment for subprocesses (crictl stand-in on PATH, CRI
  endpoints, CONTAINERD_ADDRESS).

Tests using ``lab`` get the ``lab`` marker. They are skipped only when not running as
root; a missing containerd/runc/busybox is a FAILURE (CI installs them).
"""

import atexit
import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests import lab as labpkg  # noqa: E402

REQUIRED = {"containerd": "containerd", "ctr": "containerd", "runc": "runc",
            "containerd-shim-runc-v2": "containerd"}


def pytest_configure(config):
    config.addinivalue_line("markers", "lab: needs root and a real containerd (tests/lab)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lab)


def _missing():
    miss = [b for b in REQUIRED if shutil.which(b) is None]
    try:
        labpkg.images.busybox_path()
    except FileNotFoundError:
        miss.append("busybox (busybox-static)")
    return miss


@pytest.fixture(scope="session")
def lab():
    if os.geteuid() != 0:
        pytest.skip("the containerd lab needs root")
    miss = _missing()
    if miss:
        pytest.fail("lab prerequisites missing: %s -- install with: apt-get install "
                    "containerd runc busybox-static" % ", ".join(miss), pytrace=False)
    the_lab = labpkg.Lab()
    atexit.register(the_lab.stop)  # belt and braces (e.g. KeyboardInterrupt)
    try:
        the_lab.start()
    except Exception:
        the_lab.stop()
        raise
    try:
        yield the_lab
    finally:
        errs = the_lab.stop()
        if errs:
            print("lab teardown problems: %s" % errs, file=sys.stderr)


@pytest.fixture
def scenario(lab):
    labpkg.reset(lab)
    return labpkg.scenario(lab)


@pytest.fixture
def feas_scenario(lab):
    labpkg.reset(lab)
    return labpkg.feas(lab)


@pytest.fixture
def lab_env(lab):
    return lab.env()
