"""The floor of the speed benchmark: the least a correct prune does, as one plain program.

    python3 bench/speed/floor.py --min-age SECONDS --timeout 2m --sandbox-image REF --batch-size N --kubelet-root DIR

It lists containers, sandboxes and images once each (crictl JSON, side by side as the runner
lists them); plans as the runner's pod-aware rules do with the kubelet root the runner is given (see
``plan``; bench/speed/variants.py passes the same root to both): exited
containers and NotReady sandboxes older than --min-age, then the images no remaining container
uses (not pinned, not the sandbox image); removes them --batch-size ids per crictl call as the
runner does (bench/speed/run.py passes the library's batch_size default); then runs ``ctr -n k8s.io
content prune references``. No report, no record, no image-volume inspect, no guard beyond those. Standard library only: it runs under the node's
python3, like the runner. crictl and ctr are taken from PATH (bench/speed/run.py puts its counting
wrappers first).
"""

import argparse
import concurrent.futures
import json
import os
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


def plan(containers, pods, images, cut_ns, sandbox_image, tracked=()):
    """(container ids, sandbox ids, image ids) to remove, by the runner's pod-aware rules (a pod is
    live when its newest sandbox is Ready or its uid is in ``tracked``, the kubelet root's
    ``pods/<uid>`` directories): in a live pod the newest exited
    instance of each container name stays, older ones go; in a pod that is not live (or not
    listed) every exited container goes. A NotReady sandbox older than the cut goes unless it is
    the newest of a live pod or holds a container that stays."""
    by_uid = {}
    for p in pods:
        by_uid.setdefault(p['metadata'].get('uid') or p['id'], []).append(p)
    live = {}                                       # sandbox id -> (pod key, live, newest sandbox id)
    for key, group in by_uid.items():
        newest = max(group, key=lambda p: (int(p['createdAt']), p['id']))
        for p in group:
            live[p['id']] = (key, newest['state'] == 'SANDBOX_READY' or key in tracked, newest['id'])
    newest_exited = {}
    for c in containers:
        if c['state'] == 'CONTAINER_EXITED' and c['podSandboxId'] in live:
            k = (live[c['podSandboxId']][0], c['metadata']['name'])
            rank = (int(c['createdAt']), int(c['metadata'].get('attempt') or 0), c['id'])
            if k not in newest_exited or rank > newest_exited[k][0]:
                newest_exited[k] = (rank, c['id'])
    exited = []
    for c in containers:
        if c['state'] != 'CONTAINER_EXITED' or int(c['createdAt']) >= cut_ns:
            continue
        pod = live.get(c['podSandboxId'])
        if pod is None or not pod[1] or newest_exited[(pod[0], c['metadata']['name'])][1] != c['id']:
            exited.append(c['id'])
    going = set(exited)
    staying = [c for c in containers if c['id'] not in going]
    holders = set(c['podSandboxId'] for c in staying)
    dead_pods = sorted(p['id'] for p in pods if p['state'] == 'SANDBOX_NOTREADY' and int(p['createdAt']) < cut_ns
                       and not (live[p['id']][1] and live[p['id']][2] == p['id']) and p['id'] not in holders)
    used = set(c['imageRef'] for c in staying) | set(c['image']['image'] for c in staying)
    unused = [i['id'] for i in images if not i.get('pinned') and i['id'] not in used
              and not set(i.get('repoTags') or []) & (used | {sandbox_image})]
    return exited, dead_pods, unused


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--min-age', type=int, required=True, help='seconds')
    parser.add_argument('--timeout', required=True, help="crictl's --timeout")
    parser.add_argument('--sandbox-image', required=True)
    parser.add_argument('--batch-size', type=int, required=True, help='ids per crictl rm/rmp/rmi call')
    parser.add_argument('--kubelet-root', required=True, help="the runner's kubelet_root: its pods/<uid> are live")
    args = parser.parse_args(argv)
    try:
        tracked = set(os.listdir(os.path.join(args.kubelet_root, 'pods')))
    except OSError:
        tracked = set()
    cut_ns = (time.time() - args.min_age) * 1e9
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        lists = [pool.submit(listing, args.timeout, *a) for a in (
            ('ps', 'containers', '--all'), ('pods', 'items'), ('images', 'images'))]
        removals = plan(*([f.result() for f in lists] + [cut_ns, args.sandbox_image, tracked]))
    rc = 0
    for verb, ids in zip(('rm', 'rmp', 'rmi'), removals):
        for start in range(0, len(ids), args.batch_size):
            rc |= crictl(args.timeout, verb, *ids[start:start + args.batch_size]).returncode
    rc |= subprocess.run(['ctr', '-n', 'k8s.io', 'content', 'prune', 'references'], check=False).returncode
    return rc


if __name__ == '__main__':
    sys.exit(main())
