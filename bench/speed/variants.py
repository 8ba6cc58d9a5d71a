"""The four variants of the speed benchmark and how each is started (bench/speed/run.py measures them):

- floor: ``bench/speed/floor.py`` -- the least a correct prune does, in bounded batches like the runner,
  by the runner's plan with the same kubelet root;
- shell: ``bench/speed/shell.sh`` -- the crictl/jq pipeline of a typical cron job;
- runner: the node package installed by the timer role's own tasks, started as its service starts
  it (``node-image-gc --config FILE run``);
- playbook: ``ansible-playbook nodemaint.image_gc.prune`` on localhost;
- disk: the runner with the disk target (``image_unused_for: 7d``, every image used an hour ago
  by the last-use record, ``disk_high``/``disk_low`` set by bench/speed/run.py so that the target
  needs most of the state's images to go), on the ``disk`` state only.

Every variant runs under the node's python3 (or sh) with crictl and ctr wrappers first on PATH, so
the processes it starts are counted. The crictl timeout and batch size are the library's defaults
(``_settings``), read from the installed node package.
"""

import json
import os
import shutil
import subprocess
import sys

from tests.lab_tests import ansible_play, node_package

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ('floor', 'shell', 'runner', 'playbook', 'disk')
SANDBOX_MIN_AGE = 1           # s; the big() sandboxes are older than this when a run starts


class Variants:
    def __init__(self, tmp, lab, wrap_dir, sandbox_image, package):
        self.tmp, self.lab, self.wrap, self.sandbox_image, self.package = tmp, lab, wrap_dir, sandbox_image, package
        sys.path.insert(0, package.lib)
        from nodemaint_image_gc import _settings  # pylint: disable=import-error,import-outside-toplevel
        self.timeout = _settings.default('timeout')
        self.batch_size = _settings.default('batch_size')
        self.kubelet_root = None

    def root(self):
        """The kubelet root the runner, the playbook and the floor are given (the lab's empty one, or
        the memory state's own where its Ready pods are tracked)."""
        return self.kubelet_root or ansible_play.lab_kubelet_root(self.lab)

    def env(self):
        env = self.lab.env()
        env['PATH'] = self.wrap + os.pathsep + env['PATH']
        env['CONTAINERD_ADDRESS'] = self.lab.socket
        return env

    def argv(self, variant):
        """(argv, env) that starts VARIANT."""
        if variant == 'floor':
            return [node_package.NODE_PYTHON, os.path.join(HERE, 'floor.py'), '--min-age', str(SANDBOX_MIN_AGE),
                    '--timeout', self.timeout, '--sandbox-image', self.sandbox_image,
                    '--batch-size', str(self.batch_size), '--kubelet-root', self.root()], self.env()
        if variant == 'shell':
            return ['sh', os.path.join(HERE, 'shell.sh'), str(SANDBOX_MIN_AGE), self.timeout], self.env()
        if variant == 'runner':
            return [self.package.launcher, '--config', self.runner_config(wrapped=True), 'run'], self.env()
        if variant == 'disk':
            return [self.package.launcher, '--config', self.runner_config(wrapped=True, disk=self.disk), 'run'], \
                self.env()
        if variant == 'playbook':
            return self.playbook()
        raise ValueError(variant)

    def playbook(self):
        inventory = os.path.join(self.tmp, 'inventory.json')
        hostvars = {'ansible_connection': 'local', 'ansible_python_interpreter': node_package.NODE_PYTHON,
                    'image_gc_crictl_path': os.path.join(self.wrap, 'crictl'),
                    'image_gc_ctr_path': os.path.join(self.wrap, 'ctr'),
                    'image_gc_runtime_endpoint': self.lab.endpoint,
                    'image_gc_lock_path': os.path.join(self.tmp, 'run.lock'),
                    'image_gc_image_record_path': os.path.join(self.tmp, 'images.json'),
                    'image_gc_image_min_age': '0s',
                    'image_gc_sandbox_min_age': '%ds' % SANDBOX_MIN_AGE,
                    'image_gc_created_min_age': '0s',
                    'image_gc_image_unused_for': '0s',
                    'image_gc_kubelet_root': self.root()}
        if not shutil.which('sudo'):
            hostvars['ansible_become'] = False     # root already; no sudo on these machines
        with open(inventory, 'w') as handle:
            json.dump({'all': {'hosts': {'localhost': hostvars}}}, handle)
        env = ansible_play.ansible_env(self.lab)
        env['PATH'] = self.wrap + os.pathsep + env['PATH']
        os.makedirs(env['ANSIBLE_LOCAL_TEMP'], exist_ok=True)
        return [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', inventory,
                'nodemaint.image_gc.prune'], env

    disk = None          # (disk_high, disk_low) for the disk variant: set by bench/speed/run.py per state
    created_min_age = '0s'   # the memory state's created containers stay: bench/speed/run.py sets '1h'

    def runner_config(self, wrapped, disk=None):
        name = ('wrapped' if wrapped else 'plain') + ('-disk' if disk else '')
        path = os.path.join(self.tmp, 'config-%s.json' % name)
        cfg = {'crictl_path': os.path.join(self.wrap, 'crictl') if wrapped else self.lab.crictl_bin,
               'ctr_path': os.path.join(self.wrap, 'ctr') if wrapped else self.lab.ctr_bin,
               'runtime_endpoint': self.lab.endpoint, 'created_min_age': self.created_min_age,
               'sandbox_min_age': '%ds' % SANDBOX_MIN_AGE,
               'report_path': os.path.join(self.tmp, 'last-run-%s.json' % name),
               'lock_path': os.path.join(self.tmp, 'run.lock'), 'lock_wait': '30s',
               'image_record_path': os.path.join(self.tmp, 'images.json'), 'image_min_age': '0s',
               # the lab runs no kubelet: its (empty) root is named, as the lab tests do, so that pods that
               # are gone count as gone (with no live root found every pod counts as live and stays); the memory
               # state names its own root, where its Ready pods are tracked
               'kubelet_root': self.root(),
               # every image unused now goes, as the floor's does (the default keeps them 21 days)
               'image_unused_for': '0s'}
        if disk:
            cfg.update(image_unused_for='7d', disk_high=disk[0], disk_low=disk[1])
        with open(path, 'w') as handle:
            json.dump(cfg, handle)
        return path

    def reclaimable(self):
        """What the library's planner would still remove: a dry run of the runner (not counted)."""
        proc = subprocess.run([self.package.launcher, '--config', self.runner_config(wrapped=False), 'run', '--dry-run'],
                              env=self.lab.env(), timeout=600, capture_output=True, text=True, check=False)
        objects, nbytes, phases = 0, 0, {}
        for line in proc.stdout.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get('event') == 'phase':
                objects += event['removed']
                nbytes += event['bytes']
                phases[event['phase']] = event['removed']
        return {'objects': objects, 'bytes': nbytes, 'by_phase': phases, 'rc': proc.returncode}
