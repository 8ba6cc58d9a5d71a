"""A synthetic fleet for the prune playbook's summary play, and the checks of what it prints.

``inventory(n)`` gives an inventory of ``n`` hosts that carry a fake ``image_gc_report`` (the
fact the prune play records per host) as a host var, with every 97th host left without one (a
host that was unreachable or whose task failed) and every 13th with a failed content phase.
Run the summary alone with ``--tags image_gc_summary``. ``parse_table`` reads the printed fleet
table back; ``check`` compares the table and the report files with what the data says.
Used by tests/lab_tests/test_playbooks.py and bench/fleet/run.py (10,000 hosts).
"""

import json
import os
import re

MB = 1024 * 1024


def report(i, host):
    containers, sandboxes, images, blobs = i % 7, i % 3, i % 5, (i % 5) * 2
    images_bytes, content_bytes = images * 3 * MB + i, blobs * MB
    failed = ['content'] if i % 13 == 0 else []
    phases = [{'phase': name, 'status': 'ok', 'removed': n, 'bytes': b}
              for name, n, b in (('containers', containers, 0), ('sandboxes', sandboxes, 0),
                                 ('images', images, images_bytes), ('content', blobs, content_bytes))]
    if failed:
        phases[3].update(status='failed', removed=0, bytes=0, error='ctr: connection refused')
        blobs, content_bytes = 0, 0
    used_before = 40 * 1024 * MB + i * MB
    return {'host': host, 'dry_run': False, 'containers': containers, 'sandboxes': sandboxes, 'images': images,
            'blobs': blobs, 'images_bytes': images_bytes, 'content_bytes': content_bytes,
            'bytes_reclaimed': images_bytes + content_bytes, 'used_before': used_before,
            'used_after': used_before - images_bytes - content_bytes, 'images_before': 40, 'images_after': 40 - images,
            'percent_before': round(50.0 + i % 40, 1), 'percent_after': None if i % 11 == 0 else round(40.0 + i % 40, 1),
            'fs_path': '/var/lib/containerd', 'line': 'freed',
            'images_bytes_before': 0, 'images_bytes_after': 0, 'failed_phases': failed,
            'phase_errors': {'content': 'ctr: connection refused'} if failed else {}, 'failures': 0,
            'phases': phases, 'skip_reason': ''}


def inventory(n):
    """(inventory dict, {host: report or None})."""
    hosts, data = {}, {}
    for i in range(1, n + 1):
        name = 'node%05d.example' % i
        data[name] = None if i % 97 == 0 else report(i, name)
        hosts[name] = {} if data[name] is None else {'image_gc_report': data[name]}
    return {'all': {'hosts': hosts, 'vars': {'ansible_connection': 'local'}}}, data


def write_inventory(path, n):
    inv, data = inventory(n)
    with open(path, 'w') as handle:
        json.dump(inv, handle)
    return data


def task_msg(stdout, task):
    start = stdout.index('TASK [%s]' % task)
    brace = stdout.index('=> {', start) + 3
    return json.JSONDecoder().raw_decode(stdout[brace:])[0]['msg']


SIZE = r'(-|[\d.]+ \w+)'
DISK = r'(-|unknown|[\d.]+%)'        # the used percent of the image filesystem
ROW = re.compile(r'^(\S+)\s+(-|\d+)\s+(-|\d+)\s+(-|\d+)\s+(-|\d+)\s+%s\s+%s?\s*%s?\s+(.*)$' % (SIZE, DISK, DISK))


def parse_table(stdout):
    """The fleet table printed by 'Report the fleet': (title line, {host: row}, total row)."""
    lines = task_msg(stdout, 'Report the fleet')
    assert lines[1].split()[:5] == ['host', 'containers', 'sandboxes', 'images', 'blobs'], lines[:2]
    rows = {}
    for line in lines[2:]:
        m = ROW.match(line)
        assert m, line
        g = m.groups()
        rows[g[0]] = {'containers': g[1], 'sandboxes': g[2], 'images': g[3], 'blobs': g[4], 'freed': g[5],
                      'disk_before': g[6], 'disk_after': g[7], 'failed': g[8].strip()}
    total = rows.pop('TOTAL')
    return lines[0], rows, total


def human(n):
    """Ansible's human_readable for the sizes used here."""
    for unit, size in (('TB', 1024 ** 4), ('GB', 1024 ** 3), ('MB', MB), ('KB', 1024)):
        if n >= size:
            return '%.2f %s' % (n / size, unit)
    return '%.2f Bytes' % n


def percent(value):
    """A disk cell of the fleet table: the used percent, or unknown."""
    return 'unknown' if value is None else '%.1f%%' % value


def check(stdout, data, report_dir=None):
    """The printed table and the report files say what ``data`` ({host: report or None}) says."""
    title, rows, total = parse_table(stdout)
    done = dict((h, r) for h, r in data.items() if r is not None)
    failed = sorted(h for h, r in data.items() if r is None)
    assert set(rows) == set(data), (len(rows), len(data))
    for host, r in done.items():
        row = rows[host]
        assert [int(row[k]) for k in ('containers', 'sandboxes', 'images', 'blobs')] == [
            r['containers'], r['sandboxes'], r['images'], r['blobs']], (host, row)
        assert row['freed'] == human(r['bytes_reclaimed']), (host, row)
        assert (row['disk_before'], row['disk_after']) == (percent(r['percent_before']), percent(r['percent_after'])), row
        assert row['failed'] == (','.join(r['failed_phases']) or '-'), (host, row)
    for host in failed:
        assert rows[host]['containers'] == '-' and 'HOST FAILED' in rows[host]['failed'], rows[host]
    keys = ('containers', 'sandboxes', 'images', 'blobs', 'bytes_reclaimed')
    sums = dict((k, sum(r[k] for r in done.values())) for k in keys)
    assert [int(total[k]) for k in ('containers', 'sandboxes', 'images', 'blobs')] == [
        sums['containers'], sums['sandboxes'], sums['images'], sums['blobs']], total
    assert total['freed'] == human(sums['bytes_reclaimed']), total
    with_failed = sum(1 for r in done.values() if r['failed_phases'])
    hosts = '%d host%s' % (len(data), '' if len(data) == 1 else 's')
    assert ': %s, %d failed, %d with failed phases;' % (hosts, len(failed), with_failed) in title, title
    if report_dir:
        with open(os.path.join(report_dir, 'report.json')) as handle:
            doc = json.load(handle)
        fleet = doc['fleet']
        assert fleet['hosts'] == len(done) and sorted(fleet['hosts_failed']) == failed
        assert fleet['bytes_reclaimed'] == sums['bytes_reclaimed'] and fleet['containers'] == sums['containers']
        assert sorted(fleet['hosts_with_failed_phases']) == sorted(h for h, r in done.items() if r['failed_phases'])
        assert set(doc['hosts']) == set(done) and doc['hosts'][min(done)] == done[min(done)]
        with open(os.path.join(report_dir, 'report.md')) as handle:
            md = handle.read()
        assert md.count('\n### ') == len(done)
    return {'hosts': len(data), 'failed': len(failed), 'with_failed_phases': with_failed, 'sums': sums}
