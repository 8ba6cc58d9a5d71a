"""One measured runner run on a kept memory lab with every 20 ms sample of the tree kept (which processes
were alive and each one's RSS), to see what overlaps when (issue 26). Not a test; run.py's numbers are the
reference, this shows the run's course.

    python bench/speed/timeline.py OUT.json [--keep-lab /var/tmp/lab10k] [--memory 10000,400,300] [--memory-exited 6000]

As root with the tools venv's python, under the bench lock, on a lab that run.py built with --keep-lab.
"""

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p) != HERE]

from bench.speed import measure as M, run as R    # noqa: E402


def main(argv):
    out, rest = argv[0], argv[1:]
    opts = dict(zip(rest[::2], rest[1::2]))
    size = R.parse_size(opts.get('--memory', '10000,400,300'))
    args = R.parse_args(['--sizes', 'memory', '--memory', ','.join(map(str, size)), '--memory-exited',
                         opts.get('--memory-exited', '6000'), '--keep-lab', opts.get('--keep-lab', '/var/tmp/lab10k'),
                         '-n', '1', '--variants', 'runner', '--budget', '900'])
    timeline, start = [], []
    plain = M.descendants

    def kept(root):
        total, seen = plain(root)
        start[:] = start or [time.monotonic()]
        timeline.append((round(time.monotonic() - start[0], 3), total, M.composition(seen)))
        return total, seen
    M.descendants = kept
    bench = R.Bench(args)
    try:
        bench.start()
        m = bench.one('runner', 'memory', size, 30)
    finally:
        bench.stop()
    commit = subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                            check=False).stdout.strip()
    with open(out, 'w') as handle:
        json.dump({'about': 'bench/speed/timeline.py: one runner run, every sample of the tree [s, summed RSS, '
                            '[[process, RSS]...]] (bytes)', 'commit': commit, 'peak_tree_rss': m['peak_tree_rss'],
                   'peak_sample': m['peak_sample'], 'wall': m['wall'], 'loadavg': m['loadavg'],
                   'calls': m['calls'], 'timeline': timeline}, handle)


if __name__ == '__main__':
    main(sys.argv[1:])
