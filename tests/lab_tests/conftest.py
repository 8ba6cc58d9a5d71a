"""Fixtures for tests against a real, private containerd (the test lab, tests/lab).

- ``lab`` (session, parametrized over the lab's lines): containerd started in a fresh temp
  dir, always torn down. Lines (tests/lab/versions.py): 1.6 = Debian 12's 1.6.20 (on PATH),
  1.7 = Debian 13's 1.7.24, 2.1 = Debian sid's 2.1.9 (both unpacked into the cache),
  2.4 = 2.4.2 (go install into the cache); scripts/test.sh exports each directory. And ``crio``:
  CRI-O 1.34.0 instead of containerd (tests/lab/crio.py; built by the set-up, $NODEMAINT_CRIO).
  pytest runs all tests of one lab, tears it down, then starts the next: two never run at once.
- ``scenario`` (function): reset + the standard garbage state (tests.lab.scenario()).
- ``feas_scenario`` (function): reset + the recorded fixture scenario (feas-a/b/c).
- ``lab_env`` (function): environment for subprocesses (the real crictl on PATH, CRI
  endpoints, CONTAINERD_ADDRESS).

The version matrix (instead of running the whole suite once per line):
- The WHOLE integration suite runs on one line, FULL_LINE = 1.7: containerd 1.7 is the line most
  nodes run today (k3s and RKE2 releases, Ubuntu 24.04, Amazon Linux 2023, Debian 13), and it is
  the one in the middle: it pins the sandbox image like 2.x and reports it in ``crictl info``
  like 1.6, so both of the collection's ways of keeping the sandbox image are exercised there.
- On every other line only the tests marked ``@pytest.mark.matrix`` run: the checks where the
  lines differ (the live crictl contract, the prune scenario through the module, the sandbox
  image and pinning cases, the content phase, pod safety). The rest is DESELECTED there (pytest
  counts it as deselected), not passed.
- ``@pytest.mark.matrix(lines=("2.4",))``: beyond the whole-suite line, only on these lines (for a
  slow check whose line-specific part is small, e.g. the demo: its set-up branch per line).
- ``@pytest.mark.containerd_min("2.1", reason="image volumes")``: on an older line the test is
  SKIPPED with that reason.
- The CRI-O line (``crio``) runs the matrix-marked tests too: crictl speaks to CRI-O as to
  containerd, and these are the checks where runtimes differ. ``@pytest.mark.containerd_only(reason)``
  SKIPS a test there with that reason (what it checks does not exist on CRI-O: ctr, the content
  store, containerd's config). ``@pytest.mark.crio_only`` (with ``matrix``): a CRI-O check, run on
  the CRI-O line alone. Nothing else runs on CRI-O: the rest is deselected there.
- Switches (environment): NODEMAINT_LAB_VERSIONS=1.6,2.4 runs only these lines (default all four;
  the others are deselected; `none`: no lab test runs); NODEMAINT_LAB_FULL=2.1 runs the whole suite on that line instead,
  NODEMAINT_LAB_FULL=all on every selected line (the full matrix, as before this existed).

Every crictl call goes to the real upstream crictl (tests.lab.find_crictl: $NODEMAINT_CRICTL,
set by scripts/test.sh, or its cached go-install build, or crictl on PATH).

Tests using ``lab`` get the ``lab`` marker. They are skipped only when not running as
root; a missing containerd/runc/busybox/crictl, or a missing directory of another containerd
line, is a FAILURE with a message saying how to get it (scripts/test.sh provides all of them).
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
from tests.lab import versions  # noqa: E402
from tests.lab import crio as crio_lab  # noqa: E402

REQUIRED = {"containerd": "containerd", "ctr": "containerd", "runc": "runc",
            "containerd-shim-runc-v2": "containerd"}


CONTAINERD_VERSIONS = versions.CONTAINERD_LINES   # ("1.6", "1.7", "2.1", "2.4")
CRIO = versions.CRIO_LINE                         # "crio": the CRI-O lane
LAB_LINES = versions.LAB_LINES                    # the containerd lines, then "crio"
FULL_LINE = "1.7"        # the whole suite runs on it (see the docstring for why)
LINES_ENV, FULL_ENV = "NODEMAINT_LAB_VERSIONS", "NODEMAINT_LAB_FULL"
_LAB_TIMES = []  # (param, containerd version string, seconds from lab start to its teardown)
_RUNNING = []    # the session lab that is up (at most one: pytest tears one param down first)
_PER_LINE = {}   # line -> number of tests that run on it (after the matrix's deselection)


def _as_tuple(line):
    return tuple(int(x) for x in line.split("."))


def line_id(line):
    return "crio" if line == CRIO else "containerd-" + line


def selected_lines(environ=None):
    """The lab lines to run, from NODEMAINT_LAB_VERSIONS (a list of lines, crio included, or all; default: all)."""
    environ = os.environ if environ is None else environ
    return _lines(LINES_ENV, (environ.get(LINES_ENV) or "").replace(" ", "") or "all")


def full_lines(environ=None):
    """The lines that run the whole suite: NODEMAINT_LAB_FULL (a line, or 'all'), default FULL_LINE."""
    environ = os.environ if environ is None else environ
    raw = (environ.get(FULL_ENV) or FULL_LINE).replace(" ", "")
    # 'all': every containerd line; the CRI-O lane runs its matrix-marked checks only (the rest
    # assumes containerd: ctr, its config), unless named on its own (NODEMAINT_LAB_FULL=crio)
    return CONTAINERD_VERSIONS if raw == "all" else _lines(FULL_ENV, raw)


def _lines(name, raw):
    """The lines a variable's value names ('1.6,2.4', 'all', or 'none': scripts/test.sh's pytest step when
    every line runs in its other pytest process); a usage error naming the unknown ones."""
    if raw == "all":
        return LAB_LINES
    if raw == "none":
        return ()
    lines = tuple(x for x in raw.split(",") if x)
    bad = [x for x in lines if x not in LAB_LINES]
    if bad:
        raise pytest.UsageError("%s=%s: unknown lab line(s) %s (lines: %s, or all)"
                                % (name, raw, ", ".join(bad), ", ".join(LAB_LINES)))
    return lines


def pytest_configure(config):
    config.addinivalue_line("markers", "lab: needs root and a real containerd (tests/lab)")
    config.addinivalue_line("markers", "matrix(lines=None): a check where containerd lines differ: runs on every line "
                                       "of the lab (or on these lines), not only on the one that runs the whole suite "
                                       "(tests/lab_tests/conftest.py)")
    config.addinivalue_line("markers", "containerd_min(line, reason): needs containerd LINE or newer; skipped with "
                                       "REASON on older lines")
    config.addinivalue_line("markers", "crio_only: a check of CRI-O alone: runs on the CRI-O line only (deselected "
                                       "on the containerd lines, the whole-suite line included)")
    config.addinivalue_line("markers", "containerd_only(reason): a matrix check of something CRI-O does not have "
                                       "(ctr, the content store, containerd's config): skipped with REASON on the "
                                       "CRI-O line")


def lab_line(item):
    """The lab line ('1.7', 'crio') of a test parametrized over ``lab``, else None."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("lab") if callspec is not None else None


def pytest_collection_modifyitems(config, items):
    run, full = selected_lines(), full_lines()
    keep, deselected = [], []
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lab)
        line = lab_line(item)
        if line is None:
            keep.append(item)
            continue
        matrix = item.get_closest_marker("matrix")
        if item.get_closest_marker("crio_only") is not None and line != CRIO:
            deselected.append(item)
            continue
        if line not in run or (line not in full and (matrix is None or line not in matrix.kwargs.get("lines", (line,)))):
            deselected.append(item)
            continue
        only = item.get_closest_marker("containerd_only")
        if line == CRIO and only is not None:
            item.add_marker(pytest.mark.skip(reason="CRI-O: %s" % (
                only.kwargs.get("reason") or (only.args[0] if only.args else "a containerd-only check"))))
        need = item.get_closest_marker("containerd_min")
        if need is not None and line != CRIO and _as_tuple(line) < _as_tuple(need.args[0]):
            item.add_marker(pytest.mark.skip(reason="containerd %s lacks %s (needs %s or newer)" % (
                line, need.kwargs.get("reason") or "a feature this test needs", need.args[0])))
        keep.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = keep


def pytest_collection_finish(session):
    """How many tests each lab runs (after -k/-m and the matrix), for the terminal summary."""
    _PER_LINE.clear()
    for item in session.items:
        line = lab_line(item)
        if line is not None:
            _PER_LINE[line] = _PER_LINE.get(line, 0) + 1


def pytest_report_header(config):
    try:
        crictl = labpkg.find_crictl()
        line = "crictl: %s (cri-tools %s)" % (crictl, labpkg.crictl_version(crictl) or "unknown version")
    except FileNotFoundError as e:
        line = "crictl: %s" % e
    out = [line]
    for v in CONTAINERD_VERSIONS:
        var = versions.CONTAINERD_DIR_ENV[v]
        out.append("containerd %s: %s" % (v, "on PATH" if var is None else "%s=%s" % (
            var, versions.containerd_dir(v) or "not set")))
    out.append("CRI-O: %s=%s" % (crio_lab.CRIO_ENV, os.environ.get(crio_lab.CRIO_ENV) or "not set"))
    try:
        out.append("lab matrix: whole suite on %s; matrix-marked tests on %s (%s, %s)" % (
            ", ".join(full_lines()), ", ".join(selected_lines()), LINES_ENV, FULL_ENV))
    except pytest.UsageError as e:
        out.append(str(e))
    return out


def pytest_terminal_summary(terminalreporter):
    for param, version, seconds in _LAB_TIMES:
        terminalreporter.write_line("lab %s (%s %s): %d tests (%s), %.0f s from start to teardown"
                                    % (line_id(param), "CRI-O" if param == CRIO else "containerd", version,
                                       _PER_LINE.get(param, 0),
                                       "whole suite" if param in full_lines() else "matrix-marked only", seconds))


def _missing():
    miss = [b for b in REQUIRED if shutil.which(b) is None]
    try:
        labpkg.images.busybox_path()
    except FileNotFoundError:
        miss.append("busybox (busybox-static)")
    return miss


def _containerd_dir(version):
    """None for Debian's 1.6 (on PATH); the directory of another line's binaries."""
    if version == "1.6":
        return None
    var = versions.CONTAINERD_DIR_ENV[version]
    d = versions.containerd_dir(version)
    if not d:
        pytest.fail("containerd %s: %s is not set. ./scripts/test.sh sets it (its set-up puts containerd %s "
                    "into its cache); by hand: source scripts/lib/setup.sh and run setup_containerds %s, "
                    "or deselect the line with %s (e.g. %s=1.6)"
                    % (version, var, versions.CONTAINERD_RELEASE[version], version, LINES_ENV, LINES_ENV),
                    pytrace=False)
    miss = [b for b in ("containerd", "containerd-shim-runc-v2", "ctr")
            if not os.access(os.path.join(d, b), os.X_OK)]
    if miss:
        pytest.fail("%s=%s lacks %s" % (var, d, ", ".join(miss)), pytrace=False)
    return d


def _crio_lab():
    """A CRI-O lab (tests/lab/crio.py), or a failure saying how to get what it lacks."""
    try:
        binary = crio_lab.find_crio()
    except FileNotFoundError as e:
        pytest.fail("%s (or deselect the line: %s=1.6,1.7,2.1,2.4)" % (e, LINES_ENV), pytrace=False)
    miss = crio_lab.missing_tools()
    if miss:
        pytest.fail("the CRI-O lab needs %s: apt-get install conmon runc podman util-linux" % ", ".join(miss),
                    pytrace=False)
    return crio_lab.CrioLab(crio=binary)


@pytest.fixture(scope="session", params=LAB_LINES, ids=[line_id(v) for v in LAB_LINES])
def lab(request):
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    miss = _missing()
    if miss:
        pytest.fail("lab prerequisites missing: %s -- install with: apt-get install "
                    "containerd runc busybox-static" % ", ".join(miss), pytrace=False)
    try:
        labpkg.find_crictl()
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)
    if any(other.running() for other in _RUNNING):
        pytest.fail("two session labs at once: %s is still running" % _RUNNING, pytrace=False)
    del _RUNNING[:]
    started = time.monotonic()
    the_lab = _crio_lab() if request.param == CRIO else labpkg.Lab(containerd_dir=_containerd_dir(request.param))
    atexit.register(the_lab.stop)  # belt and braces (e.g. KeyboardInterrupt)
    try:
        the_lab.start()
    except Exception:
        the_lab.stop()
        raise
    _RUNNING.append(the_lab)
    want = crio_lab.crio_version(the_lab.crio_bin)[0][:2] if request.param == CRIO else _as_tuple(request.param)
    if the_lab.version[:2] != want:
        the_lab.stop()
        pytest.fail("lab=%s started %s %s" % (line_id(request.param), the_lab.runtime, the_lab.version_string),
                    pytrace=False)
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
