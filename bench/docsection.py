"""One generated section of a document (docs/performance.md), between two marker lines.

Each benchmark writes only its own section; the text around it, hand-written or another
benchmark's, stays as it is. The file is replaced whole (temp file, then rename).
"""

import os


def replace_section(path, begin, end, text):
    """Put ``text`` between the lines ``begin`` and ``end`` of ``path``; SystemExit if either is missing."""
    with open(path) as handle:
        doc = handle.read()
    if begin not in doc or end not in doc:
        raise SystemExit('%s has no section %s ... %s to replace: add the two marker lines where it goes'
                         % (path, begin, end))
    head, rest = doc.split(begin, 1)
    tail = rest.split(end, 1)[1]
    tmp = path + '.tmp'
    with open(tmp, 'w') as handle:
        handle.write(head + begin + '\n' + text.rstrip('\n') + '\n' + end + tail)
    os.replace(tmp, path)
