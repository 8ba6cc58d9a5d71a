# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible: the node-side runner (roles/timer) runs this very code with
# nothing but the Python 3.8+ standard library.
"""Units a run reads and writes: durations, byte sizes, ages, whole seconds and short ids."""

import re

from ._common import ImageGCError


_DURATION_RE = re.compile(r'^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$')


def parse_duration(value, name='duration'):
    """Seconds from ``600``, ``'600'``, ``'90s'``, ``'10m'``, ``'1h30m'``, ``'7d'``; ImageGCError otherwise."""
    hint = ("%s: invalid duration %r; use whole seconds (600) or days/hours/minutes/seconds "
            "such as 90s, 10m, 1h30m or 7d" % (name, value))
    if isinstance(value, bool):
        raise ImageGCError(hint)
    if isinstance(value, int):
        if value < 0:
            raise ImageGCError(hint)
        return value
    if not isinstance(value, str):
        raise ImageGCError(hint)
    text = value.strip()
    if text.isdigit():
        return int(text)
    match = _DURATION_RE.match(text)
    if not text or not match or not any(match.groups()):
        raise ImageGCError(hint)
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def format_duration(seconds):
    """``'1h30m'``-style text of a number of seconds (the inverse of parse_duration); whole days
    from two days on (``'3d'``, ``'2d4h'``), so ``'36h'`` stays ``'36h'``."""
    seconds = int(seconds)
    if seconds == 0:
        return '0s'
    out = ''
    units = (('d', 86400),) if seconds >= 2 * 86400 else ()
    for unit, size in units + (('h', 3600), ('m', 60), ('s', 1)):
        if seconds >= size:
            out += '%d%s' % (seconds // size, unit)
            seconds %= size
    return out


_SIZE_RE = re.compile(r'^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKMGTP]?i?B)\s*$')
_SIZE_UNITS = {'B': 1, 'kB': 1000, 'KB': 1000, 'MB': 1000 ** 2, 'GB': 1000 ** 3, 'TB': 1000 ** 4,
               'PB': 1000 ** 5, 'KiB': 1024, 'kiB': 1024, 'MiB': 1024 ** 2, 'GiB': 1024 ** 3,
               'TiB': 1024 ** 4, 'PiB': 1024 ** 5}


def parse_human_size(text):
    """Bytes from the human sizes ctr prints (``422B``, ``1.028MB``, ``1004.7 KiB``).

    ctr rounds to four significant digits, so the result is approximate for large blobs.
    """
    match = _SIZE_RE.match(text or '')
    if not match or match.group(2) not in _SIZE_UNITS:
        raise ValueError('not a size: %r' % (text,))
    return int(round(float(match.group(1)) * _SIZE_UNITS[match.group(2)]))


_AGE_UNITS = {'second': 1, 'minute': 60, 'hour': 3600, 'day': 86400, 'week': 7 * 86400,
              'month': 30 * 86400, 'year': 365 * 86400}
_AGE_RE = re.compile(r'^(\d+|an?|about an?)\s+(second|minute|hour|day|week|month|year)s?(?:\s+ago)?$')
# go-units' HumanDuration (what ctr prints) truncates seconds and minutes, and rounds hours, days,
# weeks, months and years to the nearest unit; each unit's form is only printed from a least
# duration on (hours from 60 minutes, days from 47.5 hours (48 rounded hours), weeks from 14
# days, months from 60 days, years from 730 days).
_ROUNDED_FROM = {'hour': 3600, 'day': 47 * 3600 + 1800, 'week': 14 * 86400, 'month': 60 * 86400,
                 'year': 730 * 86400}


def parse_human_age(text):
    """Seconds from the ages ctr prints (``10 seconds``, ``About an hour``, ``3 weeks``): the least
    the age can be. go-units rounds ``2 hours`` from 90 minutes on, so that reads as 5400 s, never
    as 7200 s (an age is a reason to remove: it must not be overstated)."""
    text = (text or '').strip().lower()
    if text in ('less than a second', 'less than a second ago'):
        return 0
    match = _AGE_RE.match(text)
    if not match:
        raise ValueError('not an age: %r' % (text,))
    count, unit = match.group(1), match.group(2)
    number = int(count) if count.isdigit() else 1
    size = _AGE_UNITS[unit]
    if unit not in _ROUNDED_FROM:
        return number * size                  # truncated: N minutes is at least N minutes
    return max(_ROUNDED_FROM[unit], (2 * number - 1) * size // 2)


def human_bytes(n):
    """``11.40 MB`` (powers of 1024, as Ansible's human_readable writes them)."""
    n, unit = float(n), 'Bytes'
    for bigger in ('KB', 'MB', 'GB', 'TB'):
        if abs(n) < 1024:
            break
        n, unit = n / 1024.0, bigger
    return '%.2f %s' % (n, unit)


def seconds(ns):
    """Whole seconds of a time in nanoseconds (a clock() reading, a CRI createdAt)."""
    return ns // 10 ** 9


def short_id(identifier):
    """The first 13 characters of an id (``sha256:`` or another algorithm prefix dropped), as
    reasons and messages name containers, sandboxes and images."""
    return identifier.split(':', 1)[-1][:13]
