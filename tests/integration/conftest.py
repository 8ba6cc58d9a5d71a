"""Fixtures for tests against a real, private containerd (the test lab, tests/lab).

- ``lab`` (session, parametrized): containerd started in a fresh temp dir, always torn down;
  once with Debian 12's containerd 1.6.20 (``lab=containerd-1.6``) and once with Debian sid's
  2.1.9 (``lab=containerd-2.1``, binaries from $NODEMAINT_CONTAINERD2_DIR, which
  scripts/test.sh sets). pytest runs all tests of the first lab, tears it down, then starts
  the second: two labs never run at once.
- ``scenario`` (function): reset + the standard garbage state (tests.lab.scenario()).
- ``feas_scenario`` (function): reset + the recorded fixture scenario (feas-a/b/c).
- ``lab_env`` (function): environment for subprocesses (the real crictl on PATH, CRI
  endpoints, CONTAINERD_ADDRESS).

Every crictl call goes to the real upstream crictl (tests.lab.find_crictl: $NODEMAINT_CRICTL,
set by scripts/test.sh, or its cached go-install build, or crictl on PATH).

Tests using ``lab`` get the ``lab`` marker. They are skipped only when not running as
root; a missing containerd/runc/busybox/crictl, or a missing containerd 2.x directory, is a
FAILURE with a message saying how to get it (scripts/test.sh provides all of them).
"""

import atexit
import os
import shutil
import sys
import time

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


CONTAINERD_VERSIONS = ("1.6", "2.1")
_LAB_TIMES = []  # (param, containerd version string, seconds from lab start to its teardown)
_RUNNING = []    # the session lab that is up (at most one: pytest tears one param down first)


def pytest_report_header(config):
    try:
        crictl = labpkg.find_crictl()
        line = "crictl: %s (cri-tools %s)" % (crictl, labpkg.crictl_version(crictl) or "unknown version")
    except FileNotFoundError as e:
        line = "crictl: %s" % e
    return [line, "containerd 2.x dir (%s): %s" % (
        labpkg.CONTAINERD2_ENV, os.environ.get(labpkg.CONTAINERD2_ENV) or "not set")]


def pytest_terminal_summary(terminalreporter):
    for param, version, seconds in _LAB_TIMES:
        terminalreporter.write_line("lab containerd-%s (containerd %s): %.0f s from start to teardown"
                                    % (param, version, seconds))


def _missing():
    miss = [b for b in REQUIRED if shutil.which(b) is None]
    try:
        labpkg.images.busybox_path()
    except FileNotFoundError:
        miss.append("busybox (busybox-static)")
    return miss


def _containerd_dir(version):
    """None for Debian's 1.6 (on PATH); the 2.x directory for '2.1'."""
    if version == "1.6":
        return None
    d = os.environ.get(labpkg.CONTAINERD2_ENV)
    if not d:
        pytest.fail("containerd %s: %s is not set. ./scripts/test.sh sets it (it downloads Debian "
                    "sid's containerd 2.1.9 .deb into its cache and unpacks it); by hand: "
                    "source scripts/lib/setup.sh's setup_containerd2, or "
                    "export %s=/var/cache/nodemaint-image-gc/containerd-2.1.9+ds1-5/root/usr/bin, "
                    "or deselect with -k 'not containerd-2.1'"
                    % (version, labpkg.CONTAINERD2_ENV, labpkg.CONTAINERD2_ENV), pytrace=False)
    miss = [b for b in ("containerd", "containerd-shim-runc-v2", "ctr")
            if not os.access(os.path.join(d, b), os.X_OK)]
    if miss:
        pytest.fail("%s=%s lacks %s" % (labpkg.CONTAINERD2_ENV, d, ", ".join(miss)), pytrace=False)
    return d


@pytest.fixture(scope="session", params=CONTAINERD_VERSIONS,
                ids=["containerd-" + v for v in CONTAINERD_VERSIONS])
def lab(request):
    if os.geteuid() != 0:
        pytest.skip("the containerd lab needs root")
    miss = _missing()
    if miss:
        pytest.fail("lab prerequisites missing: %s -- install with: apt-get install "
                    "containerd runc busybox-static" % ", ".join(miss), pytrace=False)
    try:
        labpkg.find_crictl()
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)
    cdir = _containerd_dir(request.param)
    if any(other.running() for other in _RUNNING):
        pytest.fail("two session labs at once: %s is still running" % _RUNNING, pytrace=False)
    del _RUNNING[:]
    started = time.monotonic()
    the_lab = labpkg.Lab(containerd_dir=cdir)
    atexit.register(the_lab.stop)  # belt and braces (e.g. KeyboardInterrupt)
    try:
        the_lab.start()
    except Exception:
        the_lab.stop()
        raise
    _RUNNING.append(the_lab)
    want = tuple(int(x) for x in request.param.split("."))
    if the_lab.version[:2] != want:
        the_lab.stop()
        pytest.fail("lab=containerd-%s started containerd %s (%s)"
                    % (request.param, the_lab.version_string, the_lab.containerd_bin), pytrace=False)
    try:
        yield the_lab
    finally:
        errs = the_lab.stop()
        _LAB_TIMES.append((request.param, the_lab.version_string, time.monotonic() - started))
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
