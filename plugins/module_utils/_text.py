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


# Words whose plural is not the word + s
_PLURALS = {'sandbox': 'sandboxes'}
# The removed objects of each phase, as the summary line names them
_ITEMS = (('containers', 'container'), ('sandboxes', 'sandbox'), ('images', 'image'), ('content', 'blob'))


def count(number, word, plural=None):
    """``1 container``, ``2 containers``, ``0 sandboxes``: a number and its noun, in the right number."""
    if number == 1:
        return '%d %s' % (number, word)
    return '%d %s' % (number, plural or _PLURALS.get(word, word + 's'))


def _figure_text(disk):
    fs = (disk or {}).get('filesystem')
    if not fs or fs.get('used_percent') is None:
        return 'unknown'
    return '%.1f%%' % fs['used_percent']


def projected_percent(fs, freed):
    """The used percent the filesystem ``fs`` (a disk report's ``filesystem``) would show once
    ``freed`` bytes are gone: an estimate from the sizes the runtime reports (shared layers
    count once per image, ctr rounds blob sizes), or None when the figure cannot be made -- the
    filesystem was not read, or the plan's sizes reach the bytes used (images sharing layers)."""
    if not fs or not fs.get('size_bytes') or fs.get('used_bytes') is None or freed >= fs['used_bytes']:
        return None
    return 100.0 * (fs['used_bytes'] - freed) / fs['size_bytes']


def summary_line(run):
    """The run in one line: ``freed 11.40 MB (5 images, 4 blobs); /var/lib/containerd 81.2% ->
    62.0%`` -- the sum of what the phases removed, and the image filesystem's figures read from
    the filesystem before and after (after containerd's garbage collection settled); ``unknown``
    where a figure could not be read. Check mode removes nothing: ``would free``, and the after
    figure is projected from the plan's sizes, marked ``~`` and ``estimate``."""
    counts = {}
    for result in run.get('phases', []):
        counts[result['phase']] = len(result.get('removed', []))
    parts = [count(counts[p], word) for p, word in _ITEMS if p in counts]
    freed = sum(r.get('bytes', 0) for r in run.get('phases', []))
    line = '%s %s (%s)' % ('would free' if run.get('check_mode') else 'freed', human_bytes(freed),
                           ', '.join(parts) or 'no phase ran')
    before, after = run.get('disk_before'), run.get('disk_after')
    if before is None and after is None:
        return line
    fs = (before or {}).get('filesystem') or (after or {}).get('filesystem') or {}
    if run.get('check_mode'):
        before_fs = (before or {}).get('filesystem')
        projected = projected_percent(before_fs, freed)
        if projected is None and before_fs and before_fs.get('used_bytes') is not None:
            return line + '; %s %s -> unknown (no estimate: the plan\'s sizes reach the %s used, layers shared ' \
                'by images counted once per image; check mode removes nothing)' % (
                    fs['path'], _figure_text(before), human_bytes(before_fs['used_bytes']))
        if projected is None:
            return line + '; %s %s -> unknown (check mode removes nothing)' % (
                fs.get('path', 'image filesystem'), _figure_text(before))
        return line + '; %s %s -> ~%.1f%% (estimate: check mode removes nothing)' % (
            fs['path'], _figure_text(before), projected)
    line += '; %s %s -> %s' % (fs.get('path', 'image filesystem'), _figure_text(before), _figure_text(after))
    if (after or {}).get('filesystem') and not after['filesystem'].get('settled', True):
        line += ' (still changing after %ss)' % after['filesystem'].get('waited')
    return line
