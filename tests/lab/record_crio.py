"""Record crictl's outputs against the lab's CRI-O: tests/fixtures/crictl-<V>_crio-<V>/ (its README says
what and how). Run as root from the repository root, with the set-up's binaries exported
(``scripts/test.sh`` exports NODEMAINT_CRICTL and NODEMAINT_CRIO; by hand: source scripts/lib/setup.sh
and run setup_crictl setup_crio):

    python -m tests.lab.record_crio DIR

The fixture scenario (tests.lab.feas: feas-a/b/c) is built on a fresh CRI-O lab, then the commands
of ``COMMANDS`` run one after the other, in that order, with the real crictl (and Debian's ctr once,
against CRI-O's socket); every file is sanitized (``sanitize``): the lab's private paths become a
CRI-O node's usual ones. Nothing else is changed.
"""

import os
import sys

from . import crio as crio_mod
from .scenario import feas
from .lab import crictl_version


def sanitize(text, lab):
    """The lab's private paths -> a CRI-O node's usual ones (longest first)."""
    base = lab.base
    for old, new in ((base + "/run/storage", "/run/containers/storage"),
                     (base + "/storage", "/var/lib/containers/storage"),
                     (base + "/crio.sock", "/var/run/crio/crio.sock"),
                     (base + "/pods-logs", "/var/log/pods"),
                     (base + "/run", "/var/run/crio"),
                     (base, "/var/lib/lab"),
                     (lab.bin_dir + "/crictl.yaml", "/usr/local/bin/crictl.yaml")):
        text = text.replace(old, new)
    return text


def record(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    lab = crio_mod.CrioLab()
    lab.start()
    try:
        d = feas(lab)
        ids = {"exit0": d["containers"]["exit0"]["id"], "exit1": d["containers"]["exit1"]["id"],
               "sleeper": d["containers"]["sleeper"]["id"], "feas-a": d["pods"]["feas-a"]["id"],
               "feas-b": d["pods"]["feas-b"]["id"], "busybox2": d["images"]["busybox2"]["id"]}
        steps = [
            ("version.txt", ["version"]),
            ("ps-a.json", ["ps", "-a", "-o", "json"]),
            ("pods.json", ["pods", "-o", "json"]),
            ("images.json", ["images", "-o", "json"]),
            ("imagefsinfo.json", ["imagefsinfo", "-o", "json"]),
            ("info.json", ["info", "-o", "json"]),
            ("ps-exited-q.txt", ["ps", "-a", "-q", "--state", "exited"]),
            ("pods-notready-q.txt", ["pods", "-q", "--state", "notready"]),
            ("ctr-nocontent", "ctr"),
            ("rm", ["rm", ids["exit1"], ids["exit0"]]),
            ("rmp", ["rmp", ids["feas-a"]]),
            ("rmi-prune", ["rmi", "--prune"]),
            ("images-after.json", ["images", "-o", "json"]),
            ("rmp-ready", ["rmp", ids["feas-b"]]),
            ("rm-running", ["rm", ids["sleeper"]]),
            ("rm-missing", ["rm", "deadbeef"]),
            ("crictl-nosocket", ["-r", "unix://%s/nope.sock" % lab.base, "--timeout", "2s", "ps", "-a", "-o", "json"]),
            ("rmi-inuse", ["rmi", ids["busybox2"]]),
        ]
        for name, args in steps:
            if args == "ctr":
                # Debian 12's ctr against CRI-O's socket: CRI-O has no containerd content service
                import subprocess
                r = subprocess.run(["ctr", "--address", lab.socket, "-n", "k8s.io", "content", "ls"],
                                   capture_output=True, text=True, check=False)
            else:
                r = lab.crictl(*args)
            if name.endswith((".txt", ".json")):
                if r.returncode != 0:
                    raise RuntimeError("crictl %s failed: %s" % (" ".join(args), r.stderr))
                files = {name: r.stdout}
            else:
                files = {name + ".out": r.stdout, name + ".err": r.stderr}
                if r.returncode != 0 or name in ("rmi-inuse",):
                    files[name + ".rc"] = "%d\n" % r.returncode
            for fname, text in files.items():
                with open(os.path.join(out_dir, fname), "w") as f:
                    f.write(sanitize(text, lab))
        return {"crictl": crictl_version(lab.crictl_bin), "crio": lab.version_string, "ids": ids,
                "images": {k: (v["id"], v["ref"], v["pinned"]) for k, v in d["images"].items()}}
    finally:
        lab.stop()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.lab.record_crio DIR")
    import json
    print(json.dumps(record(sys.argv[1]), indent=2))
