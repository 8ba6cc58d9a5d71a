"""One measured runner run on a kept memory lab with every 20 ms sample of the tree kept (which processes
were alive and each one's RSS), to see what overlaps when (issue 26). Not a test; run.py's numbers are the
reference, this shows the run's course (run.py's ``timeline`` is another thing: when each crictl/ctr
process started and ended).

    python bench/speed/memory_samples.py OUT.json [--keep-lab /var/tmp/lab10k] [--memory 10000,400,300] [--memory-exited 6000]

As root with the tools venv's python, under the bench lock, on a lab that run.py built with --keep-lab.
"""

import argparse
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
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('out', help='the JSON file to write')
    parser.add_argument('--keep-lab', default='/var/tmp/lab10k')
    parser.add_argument('--memory', default='10000,400,300')
    parser.add_argument('--memory-exited', default='6000')
    opts = parser.parse_args(argv)
    size = R.parse_size(opts.memory)
    args = R.parse_args(['--sizes', 'memory', '--memory', ','.join(map(str, size)), '--memory-exited',
                         opts.memory_exited, '--keep-lab', opts.keep_lab,
                         '-n', '1', '--variants', 'runner', '--budget', '900'])
    samples, start = [], []
    plain = M.descendants

    def kept(root):
        total, seen = plain(root)
        start[:] = start or [time.monotonic()]
        samples.append((round(time.monotonic() - start[0], 3), total, M.composition(seen)))
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
    with open(opts.out, 'w') as handle:
        json.dump({'about': 'bench/speed/memory_samples.py: one runner run, every sample of the tree [s, summed RSS, '
                            '[[process, RSS]...]] (bytes)', 'commit': commit, 'peak_tree_rss': m['peak_tree_rss'],
                   'peak_sample': m['peak_sample'], 'wall': m['wall'], 'loadavg': m['loadavg'],
                   'calls': m['calls'], 'samples': samples}, handle)


if __name__ == '__main__':
    main(sys.argv[1:])
