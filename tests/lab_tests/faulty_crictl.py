"""TEST-ONLY fault-injection wrapper around the real crictl (the lab's, named by the environment
variable ``NODEMAINT_CRICTL``, which ``Lab.env()`` sets).

Passed to the modules as ``crictl_path``. Without a fault it just executes the real crictl with
the same arguments. The fault is selected by a small JSON control file named by the
environment variable ``FAULTY_CRICTL_CONTROL`` (set through the task's ``environment:``):

    {"fault": "kill-on-remove" | "drop-first-id" | "import-on-rmi" | "garbage-ps",
     "containerd_pid": 1234,                    # kill-on-remove: the lab's containerd
     "ctr_argv": ["/usr/bin/ctr", "--address", SOCK], "work": DIR, "image": "docker.io/x:1",
     "log": "/path/faults.log"}                 # every injected fault is appended here

- ``kill-on-remove``: on the first ``rm``/``rmi``/``rmp``, SIGKILL containerd, then delegate.
- ``drop-first-id``: on every ``rm``/``rmi``/``rmp``, leave the first id out, delegate the
  rest, then fail that id the way crictl does (``level=fatal msg="removing container ..."``).
- ``import-on-rmi``: on ``rmi``, first import a new image (tests.lab.images), then delegate.
- ``garbage-ps``: ``ps`` prints non-JSON and exits 0.
- ``pause-on-remove``: on the first ``rm``/``rmi``/``rmp``, create the file ``control["fired"]`` and
  wait (up to ``control["timeout"]`` s, default 60) until the file ``control["go"]`` exists, then
  delegate: the test changes the node while the run is in progress, between its listing and its
  first removal.
  ``control["verbs"]`` (a list, default all three): pause on the first of these only (``["rmi"]``:
  between phase 3's plan and its first removal).

"First" is tracked by a marker file next to the control file.
"""

import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CONTROL_ENV = 'FAULTY_CRICTL_CONTROL'
CRICTL_ENV = 'NODEMAINT_CRICTL'

# crictl global options that take a value (the verb is the first other argument)
_VALUE_FLAGS = {'-r', '--runtime-endpoint', '-i', '--image-endpoint', '-t', '--timeout', '-c', '--config'}
REMOVALS = ('rm', 'rmi', 'rmp')


def split_argv(argv):
    """(global options, verb, verb arguments)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _VALUE_FLAGS:
            i += 2
            continue
        if arg.startswith('-'):
            i += 1
            continue
        return argv[:i], arg, argv[i + 1:]
    return argv, None, []


def _log(control, line):
    path = control.get('log')
    if path:
        with open(path, 'a') as handle:
            handle.write(line + '\n')


def _first(control_path, key):
    """True the first time ``key`` is seen for this control file."""
    marker = '%s.%s.done' % (control_path, key)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _ts():
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime()) + '.000000000Z'


def real_crictl():
    path = os.environ.get(CRICTL_ENV)
    if not path or not os.access(path, os.X_OK):
        sys.stderr.write('faulty-crictl: %s does not name the real crictl (%r)\n' % (CRICTL_ENV, path))
        sys.exit(127)
    return path


def delegate(argv):
    return subprocess.run([real_crictl()] + argv, check=False).returncode


def _images_module():
    """tests/lab/images.py (standard library only), without importing the tests.lab package (grpc)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('lab_images', os.path.join(ROOT, 'tests', 'lab', 'images.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv):
    control_path = os.environ.get(CONTROL_ENV)
    if not control_path:
        crictl = real_crictl()
        os.execv(crictl, [crictl] + argv)
    with open(control_path) as handle:
        control = json.load(handle)
    fault = control.get('fault')
    opts, verb, args = split_argv(argv)

    if fault == 'garbage-ps' and verb == 'ps':
        _log(control, 'garbage-ps')
        sys.stdout.write('FATA[0000] <html>502 Bad Gateway</html>\n{"containers": [\n')
        return 0

    if fault == 'kill-on-remove' and verb in REMOVALS and _first(control_path, 'kill'):
        pid = int(control['containerd_pid'])
        _log(control, 'kill-on-remove %s pid %d' % (verb, pid))
        os.kill(pid, signal.SIGKILL)
        for dummy in range(200):            # wait until it is really gone (not a zombie of the lab)
            try:
                with open('/proc/%d/stat' % pid) as handle:
                    if handle.read().rsplit(')', 1)[1].split()[0] == 'Z':
                        break
            except OSError:
                break
            time.sleep(0.05)
        return delegate(argv)

    if fault == 'drop-first-id' and verb in REMOVALS:
        ids = [a for a in args if not a.startswith('-')]
        if ids:
            dropped = ids[0]
            rest = list(args)
            rest.remove(dropped)
            _log(control, 'drop-first-id %s %s' % (verb, dropped))
            rc = 0
            if [a for a in rest if not a.startswith('-')]:
                rc = delegate(opts + [verb] + rest)
            sys.stdout.flush()
            what = {'rm': 'removing container', 'rmp': 'removing the pod sandbox',
                    'rmi': 'error of removing image'}[verb]
            msg = '%s \\"%s\\": rpc error: code = Unknown desc = injected failure' % (what, dropped)
            if verb == 'rmi':
                sys.stderr.write('time="%s" level=error msg="%s"\n' % (_ts(), msg))
                sys.stderr.write('time="%s" level=fatal msg="unable to remove the image(s)"\n' % _ts())
            else:
                sys.stderr.write('time="%s" level=fatal msg="%s"\n' % (_ts(), msg))
            return 1 if rc == 0 else rc

    if fault == 'pause-on-remove' and verb in control.get('verbs', REMOVALS) and _first(control_path, 'pause'):
        _log(control, 'pause-on-remove %s' % verb)
        open(control['fired'], 'w').close()
        end = time.monotonic() + float(control.get('timeout', 60))
        while not os.path.exists(control['go']) and time.monotonic() < end:
            time.sleep(0.1)
        return delegate(argv)

    if fault == 'import-on-rmi' and verb == 'rmi' and _first(control_path, 'import'):
        img = _images_module()
        image = img.build(control['image'])
        img.import_images(control['ctr_argv'], [image], control['work'])
        _log(control, 'import-on-rmi %s %s' % (control['image'], image.image_id))
        return delegate(argv)

    return delegate(argv)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
