"""The pinned test-tool versions, read from scripts/lib/versions.env (the one place they are
written; scripts/lib/setup.sh sources the same file) and the containerd lines of the lab."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VERSIONS_FILE = os.path.join(ROOT, "scripts", "lib", "versions.env")


def read(path=VERSIONS_FILE):
    """{KEY: VALUE} of the KEY=VALUE lines of ``path`` (comments and blank lines skipped)."""
    out = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep or not key.isidentifier() or not value or any(c in value for c in " '\"$`"):
                raise ValueError("%s:%d: not a plain KEY=VALUE line: %r" % (path, n, line))
            out[key] = value
    return out


PINNED = read()
CRICTL_VERSION = PINNED["CRICTL_VERSION"]                  # 'v1.37.0'
CRICTL_MIN = tuple(int(x) for x in PINNED["CRICTL_MIN_VERSION"].split(".")[:2])

# The containerd lines the lab runs, oldest first, and where each one's binaries are: None for
# Debian 12's own 1.6 (on PATH), else the environment variable scripts/lib/setup.sh's
# setup_containerds exports with the directory holding containerd, containerd-shim-runc-v2, ctr.
CONTAINERD_LINES = ("1.6", "1.7", "2.1", "2.4")
CONTAINERD_DIR_ENV = {"1.6": None,
                      "1.7": "NODEMAINT_CONTAINERD17_DIR",
                      "2.1": "NODEMAINT_CONTAINERD21_DIR",
                      "2.4": "NODEMAINT_CONTAINERD24_DIR"}
CONTAINERD_RELEASE = {"1.6": "1.6.20 (Debian 12's package, on PATH)",
                      "1.7": "%s (Debian %s's package)" % (PINNED["CONTAINERD_1_7_DEB"], PINNED["CONTAINERD_1_7_SUITE"]),
                      "2.1": "%s (Debian %s's package)" % (PINNED["CONTAINERD_2_1_DEB"], PINNED["CONTAINERD_2_1_SUITE"]),
                      "2.4": "%s (go install)" % PINNED["CONTAINERD_2_4_GO"]}


# The lab's CRI-O lane (tests/lab/crio.py): one line, CRI-O CRIO_GO built by the set-up into the
# cache and exported as NODEMAINT_CRIO. ``LAB_LINES``: every line the lab runs, CRI-O last.
CRIO_LINE = "crio"
CRIO_RELEASE = "%s (built from the Go module proxy)" % PINNED["CRIO_GO"]
LAB_LINES = CONTAINERD_LINES + (CRIO_LINE,)


def containerd_dir(line, environ=None):
    """The directory of containerd ``line``'s binaries from the environment; None for 1.6
    (Debian's, on PATH) and when the variable is not set. 2.1 also accepts the older
    NODEMAINT_CONTAINERD2_DIR."""
    environ = os.environ if environ is None else environ
    var = CONTAINERD_DIR_ENV[line]
    if var is None:
        return None
    d = environ.get(var)
    if not d and line == "2.1":
        d = environ.get("NODEMAINT_CONTAINERD2_DIR")
    return d or None
