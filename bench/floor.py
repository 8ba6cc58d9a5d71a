"""The floor of the speed benchmark: the least a correct prune does, as one plain program.

    python3 bench/floor.py --min-age SECONDS --timeout 2m --sandbox-image REF --batch-size N

It lists containers, sandboxes and images once each (crictl JSON); removes the exited containers
and the NotReady sandboxes older than --min-age, and the images no remaining container uses (not
pinned, not the sandbox image), --batch-size ids per crictl call as the runner does (bench/run.py
passes the library's batch_size default); then runs ``ctr -n k8s.io content prune references``.
No report, no record, no guard beyond those. Standard library only: it runs under the node's
python3, like the runner. crictl and ctr are taken from PATH (bench/run.py puts its counting
wrappers first).
"""

import argparse
import json
import subprocess
import sys
import time


def crictl(timeout, *args):
    proc = subprocess.run(['crictl', '--timeout', timeout] + list(args), capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.stderr.write(proc.stderr)
    return proc


def listing(timeout, verb, key, *args):
    return json.loads(crictl(timeout, verb, *(args + ('--output', 'json'))).stdout)[key]


def plan(containers, pods, images, cut_ns, sandbox_image):
    """(container ids, sandbox ids, image ids) to remove."""
    dead_pods = sorted(p['id'] for p in pods if p['state'] == 'SANDBOX_NOTREADY' and int(p['createdAt']) < cut_ns)
    exited = [c['id'] for c in containers if c['state'] == 'CONTAINER_EXITED' and int(c['createdAt']) < cut_ns]
    left = [c for c in containers if c['state'] != 'CONTAINER_EXITED' and c['podSandboxId'] not in dead_pods]
    used = set(c['imageRef'] for c in left) | set(c['image']['image'] for c in left)
    unused = [i['id'] for i in images if not i.get('pinned') and i['id'] not in used
              and not set(i.get('repoTags') or []) & (used | {sandbox_image})]
    return exited, dead_pods, unused


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--min-age', type=int, required=True, help='seconds')
    parser.add_argument('--timeout', required=True, help="crictl's --timeout")
    parser.add_argument('--sandbox-image', required=True)
    parser.add_argument('--batch-size', type=int, required=True, help='ids per crictl rm/rmp/rmi call')
    args = parser.parse_args(argv)
    cut_ns = (time.time() - args.min_age) * 1e9
    removals = plan(listing(args.timeout, 'ps', 'containers', '--all'), listing(args.timeout, 'pods', 'items'),
                    listing(args.timeout, 'images', 'images'), cut_ns, args.sandbox_image)
    rc = 0
    for verb, ids in zip(('rm', 'rmp', 'rmi'), removals):
        for start in range(0, len(ids), args.batch_size):
            rc |= crictl(args.timeout, verb, *ids[start:start + args.batch_size]).returncode
    rc |= subprocess.run(['ctr', '-n', 'k8s.io', 'content', 'prune', 'references'], check=False).returncode
    return rc


if __name__ == '__main__':
    sys.exit(main())
