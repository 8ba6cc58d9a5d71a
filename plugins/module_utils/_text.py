# Copyright (c) nodemaint.image_gc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the nodemaint.image_gc collection. It may change without notice.
# It must not import Ansible (the node-side runner uses it with the standard library only).
"""The text a user reads of a run: the one summary line every face prints, and the message of
an error a phase raised."""

from ._common import ImageGCError
from ._units import human_bytes


def describe(exc):
    """The message of an exception a phase raised: ImageGCError messages name cause and fix."""
    if isinstance(exc, ImageGCError):
        return str(exc)
    return 'unexpected %s: %s' % (type(exc).__name__, exc)


def _figure_text(disk):
    fs = (disk or {}).get('filesystem')
    if not fs or fs.get('used_percent') is None:
        return 'unknown'
    return '%.1f%%' % fs['used_percent']


def summary_line(run):
    """The run in one line: ``freed 11.40 MB (5 images, 4 blobs); /var/lib/containerd 81.2% ->
    62.0%`` -- the sum of what the phases removed, and the image filesystem's figures read from
    the filesystem before and after (after containerd's garbage collection settled); ``unknown``
    where a figure could not be read. Check mode: ``would free``, after = before, stated."""
    counts = {}
    for result in run.get('phases', []):
        counts[result['phase']] = len(result.get('removed', []))
    parts = ['%d %s' % (counts[p], label) for p, label in (
        ('containers', 'containers'), ('sandboxes', 'sandboxes'), ('images', 'images'), ('content', 'blobs'))
        if p in counts]
    freed = sum(r.get('bytes', 0) for r in run.get('phases', []))
    line = '%s %s (%s)' % ('would free' if run.get('check_mode') else 'freed', human_bytes(freed),
                           ', '.join(parts) or 'no phase ran')
    before, after = run.get('disk_before'), run.get('disk_after')
    if before is None and after is None:
        return line
    fs = (before or {}).get('filesystem') or (after or {}).get('filesystem') or {}
    line += '; %s %s -> %s' % (fs.get('path', 'image filesystem'), _figure_text(before), _figure_text(after))
    if run.get('check_mode') and fs:
        line += ' (check mode: nothing removed)'
    elif (after or {}).get('filesystem') and not after['filesystem'].get('settled', True):
        line += ' (still changing after %ss)' % after['filesystem'].get('waited')
    return line
