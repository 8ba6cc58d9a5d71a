# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible: the timer role installs these files on the node and runs them with
# the node's python3 (3.8 or newer) and nothing else.
"""The runner's node_exporter textfile metrics, and the counters behind them.

Gauges describe the last real run; counters (``*_total``) add up every real run since the state
began. The counters are kept in the runner's report (key ``counters``), so they survive restarts
and reboots: each run reads the previous report, adds its own numbers and writes both back.
A missing or unreadable previous report starts the counters from zero, with a warning; Prometheus
treats that as a counter reset. Dry runs write nothing and count nothing.
"""

import json

from ._settings import PHASES

# The collection's version. galaxy.yml's ``version`` is the source; a unit test fails when the two
# differ (the runner on a node has no galaxy.yml to read).
COLLECTION_VERSION = '0.1.0'

RUN_STATUSES = ('ok', 'failed', 'skipped')
# The counters, each a {label value: count} dict (runs by status, the others by phase).
COUNTER_KEYS = ('runs', 'removed_objects', 'reclaimed_bytes', 'phase_failures')


def empty_counters():
    counters = {key: dict.fromkeys(PHASES, 0) for key in COUNTER_KEYS[1:]}
    counters['runs'] = dict.fromkeys(RUN_STATUSES, 0)
    return counters


def _valid(counters):
    if not isinstance(counters, dict) or not set(COUNTER_KEYS) <= set(counters):
        return False
    for values in (counters[key] for key in COUNTER_KEYS):
        if not isinstance(values, dict):
            return False
        for name, value in values.items():
            if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return False
    return True


def load_previous(report_path):
    """(previous report or {}, its counters, a warning or None) from the report the last real run
    wrote. Never raises: a missing, unreadable or malformed report gives zero counters and a
    warning saying why."""
    try:
        with open(report_path) as handle:
            previous = json.load(handle)
    except FileNotFoundError:
        return {}, empty_counters(), 'no previous report at %s (first run?): counters start from zero' % report_path
    except (OSError, ValueError) as exc:
        return {}, empty_counters(), 'previous report %s is unreadable (%s): counters start from zero' % (
            report_path, exc)
    if not isinstance(previous, dict):
        return {}, empty_counters(), 'previous report %s is not a JSON object: counters start from zero' % report_path
    counters = previous.get('counters')
    if counters is None:
        return previous, empty_counters(), 'previous report %s has no counters: counters start from zero' % report_path
    if not _valid(counters):
        return previous, empty_counters(), 'previous report %s has malformed counters: counters start from zero' % (
            report_path)
    merged = empty_counters()
    for key in COUNTER_KEYS:            # keys a newer version may have added are left behind
        merged[key].update(counters[key])
    return previous, merged, None


def accumulate(previous, report):
    """The counters after ``report``: ``previous`` plus this run. A dry run adds nothing."""
    counters = {key: dict(values) for key, values in previous.items()}
    if report.get('dry_run'):
        return counters
    runs = counters['runs']
    runs[report['status']] = runs.get(report['status'], 0) + 1
    for phase in report.get('phases', []):
        name = phase['phase']
        for key, add in (('removed_objects', phase['removed']), ('reclaimed_bytes', phase['bytes']),
                         ('phase_failures', 1 if phase['status'] == 'failed' else 0)):
            counters[key][name] = counters[key].get(name, 0) + add
    return counters


def _label_value(value):
    return str(value).replace('\\', '\\\\').replace('\n', '\\n').replace('"', '\\"')


def _number(value):
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


class _Text:
    def __init__(self):
        self.lines = []

    def metric(self, name, help_text, kind, samples):
        self.lines.append('# HELP %s %s' % (name, help_text))
        self.lines.append('# TYPE %s %s' % (name, kind))
        for labels, value in samples:
            label_text = ','.join('%s="%s"' % (k, _label_value(v)) for k, v in labels)
            self.lines.append('%s%s %s' % (name, '{%s}' % label_text if label_text else '', _number(value)))

    def text(self):
        return '\n'.join(self.lines) + '\n'


def _by_label(label, values):
    return [(((label, name),), values[name]) for name in sorted(values)]


def _figure(disk):
    """The image filesystem's figure of a disk report (read from the filesystem), or {}."""
    return disk.get('filesystem') or {}


def _usage_ratio(disk):
    fs = _figure(disk)
    if not fs.get('size_bytes') or fs.get('used_bytes') is None:
        return None
    return round(float(fs['used_bytes']) / fs['size_bytes'], 4)


def metrics_text(report, counters, version=COLLECTION_VERSION):
    """The textfile collector file for a real run's ``report`` (with ``last_success``) and the
    counters after it (``accumulate``)."""
    out = _Text()
    phases = report.get('phases', [])
    out.metric('node_image_gc_info', 'Version of the nodemaint.image_gc collection whose runner wrote this file.',
               'gauge', [((('version', version),), 1)])
    out.metric('node_image_gc_last_run_timestamp_seconds', 'End of the last image GC run.', 'gauge',
               [((), report['finished'])])
    out.metric('node_image_gc_last_success_timestamp_seconds', 'End of the last image GC run in which no phase '
               'failed (0: none yet).', 'gauge', [((), report.get('last_success') or 0)])
    out.metric('node_image_gc_run_duration_seconds', 'Duration of the last image GC run.', 'gauge',
               [((), report['duration'])])
    out.metric('node_image_gc_run_success', '1 if no phase of the last run failed.', 'gauge',
               [((), 1 if report['status'] != 'failed' else 0)])
    out.metric('node_image_gc_last_run_removed_objects', 'Objects removed by the last run, per phase.', 'gauge',
               [((('phase', p['phase']),), p['removed']) for p in phases])
    out.metric('node_image_gc_last_run_reclaimed_bytes', 'Bytes reclaimed by the last run, per phase (images: image '
               'sizes; content: blob sizes).', 'gauge', [((('phase', p['phase']),), p['bytes']) for p in phases])
    out.metric('node_image_gc_phase_success', '1 if the phase succeeded (or was skipped) in the last run.', 'gauge',
               [((('phase', p['phase']),), 0 if p['status'] == 'failed' else 1) for p in phases])
    used = [(when, _figure(report.get('disk_' + when) or {}).get('used_bytes')) for when in ('before', 'after')]
    used = [((('when', when),), value) for when, value in used if value is not None]
    if used:
        out.metric('node_image_gc_image_fs_used_bytes', 'Bytes used on the filesystem holding the image store '
                   'before and after the last run (statvfs; after: once containerd\'s garbage collection '
                   'settled).', 'gauge', used)
    ratios = [(when, _usage_ratio(report.get('disk_' + when) or {})) for when in ('before', 'after')]
    ratios = [((('when', when),), value) for when, value in ratios if value is not None]
    if ratios:
        out.metric('node_image_gc_image_fs_usage_ratio', 'Fraction of the filesystem holding the image store '
                   'that was used before and after the last run (the fullest, if several; statvfs).', 'gauge', ratios)
    reclaimable = (report.get('disk_after') or {}).get('reclaimable_bytes')
    if reclaimable is not None:
        out.metric('node_image_gc_reclaimable_bytes', 'Bytes of images the last run left that the images phase '
                   'would still remove, as planned just after the run.', 'gauge',
                   [((), reclaimable)])
    out.metric('node_image_gc_runs_total', 'Real image GC runs that wrote a report, by outcome.', 'counter',
               _by_label('status', counters['runs']))
    out.metric('node_image_gc_removed_objects_total', 'Objects removed by image GC runs, per phase.', 'counter',
               _by_label('phase', counters['removed_objects']))
    out.metric('node_image_gc_reclaimed_bytes_total', 'Bytes reclaimed by image GC runs, per phase.', 'counter',
               _by_label('phase', counters['reclaimed_bytes']))
    out.metric('node_image_gc_phase_failures_total', 'Image GC runs in which the phase failed, per phase.',
               'counter', _by_label('phase', counters['phase_failures']))
    return out.text()
