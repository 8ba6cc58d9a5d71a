# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible: the timer role installs these files on the node and runs them with
# the node's python3 (3.8 or newer) and nothing else.
"""The observation pass (``node-image-gc observe``, every 5 minutes from its own timer): lists the
containers and the images, once each, and updates the last-use record. It removes nothing, and
never takes the run lock (a run holds it for minutes): the record has its own short lock
(``_record.update``). docs/architecture.md, "The observation pass", has the design.

When it finds a re-pull (an image a run removed, listed again within 7 days) and metrics are on,
it rewrites the textfile with the new counters, from the last run's report, still under the
record's lock: the runner writes the same file under it too, so the counters never go back.
"""

import json
import time

from . import _metrics, _record, _record_merge
from ._common import CommandRunner, ImageGCError
from ._cri import Crictl
from ._listings import CONTAINER_RUNNING
from ._discovery import Discovery
from ._files import write_atomic
from ._refs import image_users
from ._units import seconds


def observe(settings, opts, runner=None, discovery=None, clock=None):
    """One pass over the node; returns its event: ``status`` (ok, failed), ``containers``,
    ``running``, ``images``, ``record`` (written, unchanged, not written), ``repulled`` (re-pulls
    found, each ``{id, refs, bytes, removed_at, seen_at}``), ``crictl_calls``, ``warnings`` and,
    when it failed, ``error``. Never raises for the runtime or the files: they are the event's."""
    runner = runner or CommandRunner()
    clock = clock or time.time_ns
    s = settings
    event = {'status': 'ok', 'containers': 0, 'running': 0, 'images': 0, 'record': 'not written',
             'repulled': [], 'crictl_calls': 0, 'warnings': []}
    first = len(runner.history)
    try:
        runtime = (discovery or Discovery()).resolve(
            crictl_path=s['crictl_path'], ctr_path=s['ctr_path'], runtime_endpoint=s['runtime_endpoint'],
            image_endpoint=s['image_endpoint'], containerd_address=s['containerd_address'],
            timeout=s['timeout'], need_crictl=True, need_ctr=False, kubelet_root=s['kubelet_root'])
        crictl = Crictl(runtime, runner, s['batch_size'])
        # Containers first: the kubelet pulls before it creates, so the image listing taken after
        # holds the image of every container listed (unless removed in between).
        containers = crictl.containers()
        containers_at = seconds(clock())
        images = crictl.images()
        images_at = seconds(clock())
    except Exception as exc:  # pylint: disable=broad-except  # reported in the event, like a failed phase
        event.update(status='failed', error=str(exc) if isinstance(exc, ImageGCError) else 'unexpected %s: %s' % (
            type(exc).__name__, exc))
        event['crictl_calls'] = len(runner.history) - first
        return event
    event['crictl_calls'] = len(runner.history) - first
    users = image_users(images, containers)
    image_of = {c.id: image_id for image_id, cs in users.items() for c in cs}
    seen = _record_merge.Observation(images_at, images, _record.uses(containers, containers_at, image_of))
    event.update(containers=len(containers), running=sum(1 for c in containers if c.state == CONTAINER_RUNNING),
                 images=len(images))
    failures = []

    def metrics(update):
        if update.repulled and opts.get('textfile_path'):
            rewrite_metrics(opts, update.state['repulls'], failures)
    update = _record.update(s['image_record_path'], seen, seconds(clock()), after=metrics)
    event['record'] = 'written' if update.written else (
        'not written' if update.error or update.skipped or update.loaded.keep_file else 'unchanged')
    event['repulled'] = update.repulled
    event['repulled_bytes'] = sum(r['bytes'] for r in update.repulled)
    event['repulls_total'] = {'images': update.state['repulls']['images'], 'bytes': update.state['repulls']['bytes']}
    if update.warning:
        event['warnings'].append(update.warning)
    for failure in failures:
        event['warnings'].append('could not write the %s %s: %s' % (failure['file'], failure['path'], failure['error']))
    if update.error or failures:
        event['status'] = 'failed'       # a file could not be written (a full disk): the exit code says so
    return event


def regret(repulls, found=()):
    """The report's ``regret``: the counters (all re-pulls seen so far), the latest ones, and those
    ``found`` by this writer."""
    return {'window_seconds': _record_merge.REGRET_WINDOW, 'images': repulls['images'], 'bytes': repulls['bytes'],
            'recent': list(repulls['recent']), 'found_now': list(found)}


def rewrite_metrics(opts, repulls, failures):
    """The textfile again, from the last real run's report with the re-pull counters ``repulls``
    (call it under the record's lock). No report yet: nothing to write (the first run writes it)."""
    try:
        with open(opts['report_path']) as handle:
            report = json.load(handle)
    except (OSError, ValueError):
        return
    if not isinstance(report, dict) or 'finished' not in report:
        return
    counters = _metrics.load_previous(opts['report_path'])[1]
    report['regret'] = regret(repulls)
    try:
        write_atomic(opts['textfile_path'], _metrics.metrics_text(report, counters))
    except OSError as exc:
        failures.append({'file': 'metrics', 'path': opts['textfile_path'], 'error': exc.strerror or str(exc)})
