"""CLI: python -m tests.lab {up,down,status,regen-proto} --dir DIR

  up      start containerd detached in DIR, optionally build a scenario, write DIR/lab.json
          (--containerd-dir D: containerd, shim and ctr from D, e.g. $NODEMAINT_CONTAINERD2_DIR)
  down    full teardown of the lab in DIR (sandboxes, containerd, shims, mounts)
  status  print DIR/lab.json plus whether containerd answers
  regen-proto  recompile api.desc.b64 from api.proto with grpc_tools.protoc
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _lab_mod():
    import importlib
    pkg = __package__ or "tests.lab"
    return importlib.import_module(pkg + ".lab"), importlib.import_module(pkg + ".scenario")


def cmd_up(a):
    lab_m, sc = _lab_mod()
    d = os.path.abspath(a.dir)
    os.makedirs(d, exist_ok=True)
    lab = lab_m.Lab(d, remove_base=False, containerd_dir=a.containerd_dir, root_tmpfs=a.root_tmpfs)
    if lab.running() or (os.path.exists(lab.pid_path) and lab_m.Lab.attach(d).running()):
        print("lab already running in %s" % d, file=sys.stderr)
        return 1
    lab.start()
    extra = {"scenario": None}
    try:
        if a.scenario:
            extra["scenario"] = (sc.scenario(lab, gap=a.gap) if a.scenario == "standard"
                                 else sc.feas(lab))
    except Exception:
        lab.stop(remove_base=False)
        raise
    lab._drop_client()
    lab.write_json(os.path.join(d, "lab.json"), extra)
    print(json.dumps({"pid": lab.pid, "socket": lab.socket, "endpoint": lab.endpoint,
                      "lab_json": os.path.join(d, "lab.json")}))
    return 0


def cmd_down(a):
    lab_m = _lab_mod()[0]
    d = os.path.abspath(a.dir)
    lab = lab_m.Lab.attach(d)
    errs = lab.stop(remove_base=a.remove)
    left = lab.leftovers()
    print(json.dumps({"errors": errs, "leftovers": left}))
    return 1 if errs or any(left.values()) else 0


def cmd_status(a):
    lab_m = _lab_mod()[0]
    d = os.path.abspath(a.dir)
    lab = lab_m.Lab.attach(d)
    info = {}
    p = os.path.join(d, "lab.json")
    if os.path.exists(p):
        with open(p) as f:
            info = json.load(f)
    info["running"] = lab.running()
    if lab.running():
        try:
            v = lab.client.version(timeout=5)
            info["answers"] = True
            info["runtime_version"] = v.runtime_version
        except Exception as e:
            info["answers"] = False
            info["error"] = str(e)
    if not a.full:
        info.pop("scenario", None)
    print(json.dumps(info, indent=2, sort_keys=True))
    return 0 if info["running"] else 3


def cmd_regen(a):
    import base64
    import tempfile
    import textwrap
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "api.desc")
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", HERE,
                        "--descriptor_set_out=" + out, os.path.join(HERE, "api.proto")], check=True)
        with open(out, "rb") as f:
            text = base64.b64encode(f.read()).decode()
    with open(os.path.join(HERE, "api.desc.b64"), "w") as f:
        f.write("\n".join(textwrap.wrap(text, 76)) + "\n")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tests.lab")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--dir", required=True)
    up.add_argument("--scenario", nargs="?", const="standard", choices=["standard", "feas"],
                    default=None)
    up.add_argument("--gap", type=float, default=3.0, metavar="SECONDS",
                    help="seconds between the old and the young NotReady sandboxes "
                         "(standard scenario)")
    up.add_argument("--containerd-dir", default=None, metavar="DIR",
                    help="take containerd, containerd-shim-runc-v2 and ctr from DIR "
                         "(default: Debian's, on PATH)")
    up.add_argument("--root-tmpfs", default=None, metavar="SIZE",
                    help="put containerd's root on a tmpfs of SIZE (e.g. 256m) of its own, so "
                         "that its filesystem figures are the lab's alone")
    dn = sub.add_parser("down")
    dn.add_argument("--dir", required=True)
    dn.add_argument("--remove", action="store_true", help="also delete DIR")
    st = sub.add_parser("status")
    st.add_argument("--dir", required=True)
    st.add_argument("--full", action="store_true", help="include the scenario dict")
    sub.add_parser("regen-proto")
    a = p.parse_args(argv)
    return {"up": cmd_up, "down": cmd_down, "status": cmd_status,
            "regen-proto": cmd_regen}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
