# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible: the timer role installs these files on the node and runs them with
# the node's python3 (3.8 or newer) and nothing else.
"""The node-side runner: ``node-image-gc [--config FILE] run [--dry-run] | status``.

A thin adapter over the same Engine the modules use: the four phases in order, each failure-
tolerant, one bounded JSON object per line on stdout (journald keeps them), a last-run report
with every item, optional node_exporter textfile metrics, and the run lock shared with the modules
(dry runs take it too). A state file that cannot be written is reported, never a reason to stop.
"""

import argparse
import json
import os
import socket
import sys
import time

from . import _metrics
from ._common import ImageGCError
from ._engine import Engine
from ._files import RunLock, write_atomic
from ._settings import ENGINE_SETTINGS, PHASES, SETTINGS, names, validate
from ._text import describe

DEFAULT_CONFIG = '/etc/node-image-gc/config.json'
RUNNER_SETTINGS = names('lock', 'runner')

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def load_config(path):
    """(engine settings, runner settings) from the JSON config, both checked against the settings
    table and converted (durations in seconds); ImageGCError naming the bad key."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except OSError as exc:
        raise ImageGCError('cannot read config %s: %s' % (path, exc.strerror or exc))
    except ValueError as exc:
        raise ImageGCError('config %s is not valid JSON: %s' % (path, exc))
    if not isinstance(data, dict):
        raise ImageGCError('config %s must hold a JSON object' % path)
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise ImageGCError('config %s: unknown key(s) %s' % (path, ', '.join(unknown)))
    try:
        settings = validate({k: v for k, v in data.items() if k in ENGINE_SETTINGS}, ENGINE_SETTINGS)
        opts = validate({k: v for k, v in data.items() if k in RUNNER_SETTINGS}, RUNNER_SETTINGS)
    except ImageGCError as exc:
        raise ImageGCError('config %s: %s' % (path, exc))
    return settings, opts


# journald splits a line longer than LineMax (48 KiB by default) into several entries, which breaks
# the JSON: an event line stays well under it. Lists are cut to their first few items (the full
# lists are in the report file, or printed with --full).
LINE_MAX = 16 * 1024
SHOWN = 10
TEXT_MAX = 400


def _cut(text):
    text = str(text)
    return text if len(text) <= TEXT_MAX else text[:TEXT_MAX - 3] + '...'


def emit(stream, event, **fields):
    record = {'event': event, 'time': round(time.time(), 3)}
    record.update(fields)
    stream.write(json.dumps(record, sort_keys=True) + '\n')
    stream.flush()
    return record


def phase_event(result):
    """The phase's full event (the report keeps it): every id removed, kept and failed."""
    errors = [item.get('msg', '') for item in result.get('failed', [])]
    if result.get('error'):
        errors.insert(0, result['error'])
    event = {'phase': result['phase'], 'status': result['status'], 'removed': len(result.get('removed', [])),
             'bytes': result.get('bytes', 0), 'ids': [i['id'] for i in result.get('removed', [])],
             'errors': errors, 'warnings': result.get('warnings', []), 'duration': result.get('duration', 0.0),
             'kept': [{'id': i['id'], 'reason': i['reason']} for i in result.get('kept', [])],
             'dry_run': result.get('check_mode', False)}
    if result.get('skip_reason'):
        event['skip_reason'] = result['skip_reason']
    if result.get('disk_target'):
        # the figures; the candidates and steps as counts (each removed image's reason carries its step)
        target = dict(result['disk_target'])
        target['candidates'] = len(target.get('candidates', []))
        if target.get('measured'):
            target['measured'] = dict(target['measured'], steps=len(target['measured']['steps']))
        event['disk_target'] = target
    return event


def summary(event, shown=SHOWN):
    """A journal line's worth of ``event``: counts and sums whole, each list cut to its first
    ``shown`` items (``<key>_total`` says how many there were), each text to TEXT_MAX characters."""
    out = {}
    for key, value in event.items():
        if isinstance(value, list):
            if len(value) > shown:
                out[key + '_total'] = len(value)
            value = value[:shown]
            value = [{k: _cut(v) for k, v in item.items()} if isinstance(item, dict) else _cut(item)
                     for item in value]
        elif isinstance(value, str):
            value = _cut(value)
        out[key] = value
    if any(key.endswith('_total') for key in out):
        out['truncated'] = True
    if len(json.dumps(out)) > LINE_MAX - 200 and shown:
        return summary(event, 0)
    return out


def run(config_path, dry_run=False, stream=None, engine_factory=Engine, full=False):
    """One run; ``full``: print every item of each phase (not for the journal: see LINE_MAX)."""
    stream = stream or sys.stdout
    started = time.time()
    try:
        settings, opts = load_config(config_path)
    except ImageGCError as exc:
        emit(stream, 'end', status='failed', error=str(exc), exit_code=EXIT_USAGE)
        return EXIT_USAGE
    emit(stream, 'start', host=socket.gethostname(), dry_run=dry_run, config=config_path, pid=os.getpid())
    # A dry run waits for a running run too: its plan is of the node as that run leaves it.
    lock = RunLock(opts['lock_path'], opts['lock_wait'])
    if not lock.acquire():
        emit(stream, 'end', status='skipped', dry_run=dry_run,
             reason='another run (pid %s) held %s for longer than lock_wait' % (lock.holder(), opts['lock_path']))
        return EXIT_OK
    try:
        return _run_locked(settings, opts, dry_run, stream, started, engine_factory, full)
    finally:
        lock.release()


def _write(path, text, what, failures):
    """Writes one state file; an OSError (a full disk) is recorded in ``failures``, never raised:
    the previous file stays as it was."""
    try:
        write_atomic(path, text)
    except OSError as exc:
        failures.append({'file': what, 'path': path, 'error': exc.strerror or str(exc)})


def _run_locked(settings, opts, dry_run, stream, started, engine_factory, full=False):
    report = {'host': socket.gethostname(), 'started': round(started, 3), 'dry_run': dry_run, 'phases': []}
    failures = []

    def on_event(kind, data):
        if kind == 'disk':
            emit(stream, 'disk', **data)
            report['disk_' + data['when']] = {k: v for k, v in data.items() if k != 'when'}
        else:
            event = phase_event(data)
            emit(stream, 'phase', **(event if full else summary(event)))
            report['phases'].append(event)

    try:
        engine = engine_factory(settings, PHASES + ('disk',))
    except Exception as exc:  # pylint: disable=broad-except  # reported like a failed run
        report['error'] = describe(exc)
        emit(stream, 'error', error=report['error'])
        for phase in PHASES:
            on_event('phase', {'phase': phase, 'status': 'failed', 'error': 'not run: %s' % report['error'],
                               'check_mode': dry_run})
        status = 'failed'
    else:
        run = engine.run(check_mode=dry_run, on_event=on_event)
        status = run['status']
        if run['warnings']:
            report['warnings'] = list(run['warnings'])
        failures.extend(run.get('write_failures') or [])
        report['summary'] = run.get('summary')
    failed = status == 'failed'
    report['status'] = status
    report['finished'] = round(time.time(), 3)
    report['duration'] = round(report['finished'] - started, 3)
    report['removed'] = sum(p['removed'] for p in report['phases'])
    report['bytes'] = sum(p['bytes'] for p in report['phases'])
    if not dry_run:
        previous, counters, warning = _metrics.load_previous(opts['report_path'])
        if warning:
            sys.stderr.write('node-image-gc: warning: %s\n' % warning)
        report['last_success'] = report['finished'] if not failed else previous.get('last_success')
        report['counters'] = _metrics.accumulate(counters, report)
        _write(opts['report_path'], json.dumps(report, indent=2, sort_keys=True) + '\n', 'report', failures)
        if opts['textfile_path']:
            _write(opts['textfile_path'], _metrics.metrics_text(report, report['counters']), 'metrics', failures)
    for failure in failures:
        if failure['file'] != 'record':          # the engine warned of the record already
            report.setdefault('warnings', []).append('could not write the %s %s: %s' % (
                failure['file'], failure['path'], failure['error']))
    extra = {'warnings': report['warnings']} if 'warnings' in report else {}
    if failures:
        extra['write_failed'] = failures
    if report.get('summary'):
        extra['summary'] = report['summary']
    emit(stream, 'end', **summary(dict(extra, status=report['status'], removed=report['removed'],
                                       bytes=report['bytes'], duration=report['duration'], dry_run=dry_run)))
    # A state file that could not be written (a full disk) fails the run's exit code even when
    # every phase did its work: the report and metrics can no longer tell.
    return EXIT_FAILED if failed or failures else EXIT_OK


def read_report(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def status(config_path, stream=None):
    stream = stream or sys.stdout
    try:
        opts = load_config(config_path)[1]
    except ImageGCError as exc:
        sys.stderr.write('node-image-gc: %s\n' % exc)
        return EXIT_USAGE
    report = read_report(opts['report_path'])
    if report is None:
        sys.stderr.write('node-image-gc: no report at %s yet: the timer has not completed a run. '
                         'Run "node-image-gc run" or "systemctl start node-image-gc.service".\n'
                         % opts['report_path'])
        return EXIT_FAILED
    stream.write(json.dumps(report, indent=2, sort_keys=True) + '\n')
    return EXIT_OK


def main(argv=None):
    parser = argparse.ArgumentParser(prog='node-image-gc', description=(
        'Remove exited containers, stale NotReady pod sandboxes, unused images and unreferenced '
        'content from this node\'s containerd.'))
    parser.add_argument('--config', default=DEFAULT_CONFIG, help='JSON config (default %(default)s)')
    sub = parser.add_subparsers(dest='command')
    sub.required = True
    run_parser = sub.add_parser('run', help='run the four phases')
    run_parser.add_argument('--dry-run', action='store_true', help='plan only; remove nothing')
    run_parser.add_argument('--full', action='store_true', help=(
        'print every removed and kept item of each phase (by default each line lists the first %d: '
        'the journal splits long lines; a real run\'s report has them all)' % SHOWN))
    sub.add_parser('status', help='print the last run\'s report')
    args = parser.parse_args(argv)
    if args.command == 'run':
        return run(args.config, dry_run=args.dry_run, full=args.full)
    return status(args.config)
